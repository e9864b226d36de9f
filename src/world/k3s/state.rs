//! k3s's state as the model holds it: a unit's process ([`K3sProc`], its
//! [`Phase`]) and each cluster ([`Cluster`]: secrets, etcd members, API
//! objects). Plain data with no reference to the model, so that
//! `world::model` can hold it while the k3s behaviour (`impl Model` in
//! `k3s` and `k3s::cluster`) uses the model: one direction, no circle.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::world::cron::Schedule;
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
    /// The node's password (`/etc/rancher/node/password`; `None` until
    /// made, `k3s::node_password`).
    pub node_password: Option<String>,
    /// Started on a cluster reset's flag (the node's own password Secret
    /// is deleted once its API is up).
    pub after_reset: bool,
    /// An agent whose password was refused asks again at this time.
    pub(super) password_retry_at: Option<u64>,
    pub node_name: String,
    pub phase: Phase,
    pub node_ip: Option<Ipv4Addr>,
    pub etcd_peer_ip: Option<Ipv4Addr>,
    pub cluster: Option<String>,
    /// The last waiting reason logged, so a retry loop logs once.
    pub(super) logged: Option<String>,
    /// Scheduled etcd snapshots, from the Ready server's
    /// `etcd-snapshot-schedule-cron` (`None`: not a Ready etcd server, or
    /// snapshots disabled, or an expression cron refused).
    pub snapshot_timer: Option<SnapshotTimer>,
}

/// When a server takes its next scheduled snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTimer {
    pub schedule: Schedule,
    /// When the scheduler started (what `@every` counts from).
    pub started_ms: u64,
    pub next_ms: Option<u64>,
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

    /// The names and addresses a server's certificate holds. With
    /// `tls-san-security` (default true, k3s `pkg/cli/cmds/server.go:228`)
    /// a name a client uses must be one of them: `tls-san`, and the node's
    /// addresses, which k3s adds on its own (`server.go:293-296,344-346`,
    /// facts "Read from source"); plus the API server's in-cluster names and
    /// loopback. That the host name (the VM's name, the node name) is there
    /// too is the model's own: the facts file does not say; its tailnet
    /// name is not, unless `tls-san` names it.
    pub fn server_sans(&self, vm: &str) -> Vec<String> {
        let mut sans: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.43.0.1",
            vm,
            &self.node_name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sans.extend(self.node_ip.map(|i| i.to_string()));
        sans.extend(self.cfg.get("advertise-address").map(str::to_string));
        sans.extend(self.cfg.list("tls-san"));
        sans.sort();
        sans.dedup();
        sans
    }

    /// Whether a client that asked for `host` accepts this server's
    /// certificate by name (an address in the URL is checked the same way;
    /// letter case is ignored, as in TLS).
    pub fn serves_name(&self, vm: &str, host: &str) -> bool {
        self.server_sans(vm)
            .iter()
            .any(|s| s.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }

    /// The supervisor (port 6443's `/ping`, `/cacerts`) answers: `/ping`
    /// answers `pong` from the supervisor router before the server is Ready
    /// (k3s `pkg/server/handlers/router.go:71`, facts "Read from source").
    /// From which phase exactly is the model's own: once the process has
    /// its cluster and is past the etcd learner (`Booting`).
    pub fn supervisor_up(&self) -> bool {
        self.role == Role::Server
            && self.cluster.is_some()
            && matches!(self.phase, Phase::Booting { .. } | Phase::Ready)
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
    /// Shared with the snapshots taken of it (the CA is bootstrap data, so
    /// a restored cluster keeps it).
    pub pki: Arc<Pki>,
    pub critical: BTreeMap<&'static str, String>,
    pub datastore: Datastore,
    pub members: Vec<Member>,
    /// The API server version when no server is up (the first server's).
    pub version: String,
    pub api: ApiStore,
    /// A cluster reset on one of its servers made this cluster: the
    /// servers still holding this one's data are peers of a membership that
    /// no longer exists.
    pub superseded_by: Option<String>,
}

/// What an etcd snapshot holds: the datastore at that moment, i.e. the
/// cluster's Kubernetes objects and its bootstrap data (CA, tokens,
/// critical settings), which k3s keeps encrypted with the server token
/// (`pkg/cluster/encrypt.go:19-66`, `docs/facts/disaster-recovery.md` §4):
/// `token` is the one it can be restored with.
#[derive(Debug, Clone)]
pub struct SnapshotData {
    /// The cluster it was taken from.
    pub cluster: String,
    pub token: String,
    pub agent_token: Option<String>,
    pub pki: Arc<Pki>,
    pub critical: BTreeMap<&'static str, String>,
    pub version: String,
    pub api: ApiStore,
    pub taken_ms: u64,
}

impl Cluster {
    pub(super) fn secure_token(&self, user: &str, secret: &str) -> String {
        format!("K10{}::{user}:{secret}", self.pki.ca_hash)
    }

    pub(super) fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.learner_since.is_none())
    }
}
