//! k3s's state as the model holds it: a unit's process ([`K3sProc`], its
//! [`Phase`]) and each cluster ([`Cluster`]: secrets, etcd members, API
//! objects). Plain data with no reference to the model, so that
//! `world::model` can hold it while the k3s behaviour (`impl Model` in
//! `k3s` and `k3s::cluster`) uses the model: one direction, no circle.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::world::k3s_config::{K3sConfig, Role};
use crate::world::kube::{ApiStore, Pki};

/// Where a unit's process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Starting,
    /// Retrying: the join target does not resolve or answer, or etcd has
    /// no quorum yet.
    Waiting(String),
    Learner,
    Booting {
        ready_at: u64,
    },
    Ready,
    /// The process exited; systemd restarts it at `retry_at` when the unit
    /// says `Restart=always`.
    Failed {
        error: String,
        retry_at: Option<u64>,
    },
}

/// A k3s process under a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sProc {
    pub role: Role,
    pub version: String,
    pub cfg: K3sConfig,
    pub notify: bool,
    pub restart_always: bool,
    pub has_data_dir: bool,
    pub node_name: String,
    pub phase: Phase,
    pub node_ip: Option<Ipv4Addr>,
    pub etcd_peer_ip: Option<Ipv4Addr>,
    pub cluster: Option<String>,
    /// The last waiting reason logged, so a retry loop logs once.
    pub(super) logged: Option<String>,
}

impl K3sProc {
    /// `systemctl is-active`'s word for this process.
    pub fn active_state(&self) -> &'static str {
        match &self.phase {
            Phase::Ready => "active",
            Phase::Failed { retry_at: None, .. } => "failed",
            _ => "activating",
        }
    }

    /// READY=1 sent.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Alive with etcd data: counts towards quorum.
    pub(super) fn holds_etcd(&self, cluster: &str) -> bool {
        self.role == Role::Server
            && self.cluster.as_deref() == Some(cluster)
            && matches!(
                self.phase,
                Phase::Waiting(_) | Phase::Booting { .. } | Phase::Ready | Phase::Learner
            )
    }
}

/// How a cluster stores its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datastore {
    /// Embedded etcd (`--cluster-init` on the first server).
    Etcd,
    /// A single server without `--cluster-init`: SQLite through kine.
    Sqlite,
}

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub vm: String,
    pub node_name: String,
    pub peer_ip: Ipv4Addr,
    /// `None` once promoted to a voting member.
    pub learner_since: Option<u64>,
}

/// One k3s cluster: its secrets, etcd membership and API objects.
#[derive(Debug)]
pub struct Cluster {
    pub id: String,
    /// The server token's secret part (what `K10...::server:` carries).
    pub token: String,
    pub agent_token: Option<String>,
    pub pki: Pki,
    pub critical: BTreeMap<&'static str, String>,
    pub datastore: Datastore,
    pub members: Vec<Member>,
    /// The API server version when no server is up (the first server's).
    pub version: String,
    pub api: ApiStore,
}

impl Cluster {
    pub(super) fn secure_token(&self, user: &str, secret: &str) -> String {
        format!("K10{}::{user}:{secret}", self.pki.ca_hash)
    }

    pub(super) fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.learner_since.is_none())
    }
}
