//! Clusters: their secrets, CA, critical settings, etcd membership and
//! quorum, API version, token rotation and node deletion.

use std::net::Ipv4Addr;

use super::{Cluster, DB_DIR, Datastore, K3sProc, Member, TOKEN_PATH, minor_version, parse_token};
use crate::world::k3s_config::{Role, critical};
use crate::world::kube::{ApiStore, Pki};
use crate::world::model::{Effect, Model};

impl Model {
    pub(super) fn create_cluster(
        &mut self,
        vm: &str,
        p: &mut K3sProc,
        datastore: Datastore,
        token: Option<String>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), String> {
        let id = self.new_cluster_id();
        let secret = match &token {
            Some(t) => parse_token(t).secret.to_string(),
            None => self.new_secret(""),
        };
        let agent_token = p
            .cfg
            .get("agent-token")
            .map(|t| parse_token(t).secret.to_string());
        let pki = std::sync::Arc::new(Pki::new(&id)?);
        let members = match datastore {
            Datastore::Etcd => vec![Member {
                vm: vm.to_string(),
                node_name: p.node_name.clone(),
                peer_ip: p.etcd_peer_ip.unwrap_or(Ipv4Addr::LOCALHOST),
                learner_since: None,
            }],
            Datastore::Sqlite => Vec::new(),
        };
        let mut api = ApiStore::new(now);
        api.set_pod_start_ms(self.timings.pod_start_ms);
        api.seed_system(&p.cfg.list("disable"), now);
        self.clusters.insert(
            id.clone(),
            Cluster {
                id: id.clone(),
                token: secret,
                agent_token,
                pki,
                critical: critical(&p.cfg),
                datastore,
                members,
                version: p.version.clone(),
                api,
                superseded_by: None,
            },
        );
        p.cluster = Some(id.clone());
        if let Some(v) = self.vms.get_mut(vm) {
            v.server_data = Some(id);
        }
        fx.push(Effect::MakeDir {
            vm: vm.to_string(),
            path: DB_DIR.to_string(),
        });
        Ok(())
    }

    /// Voting members whose k3s runs, and all voting members; `me` (a VM
    /// whose process is being advanced, so not in its slot) counts as alive.
    pub(super) fn alive_voters(&self, cid: &str, me: Option<&str>) -> (usize, usize) {
        let Some(c) = self.clusters.get(cid) else {
            return (0, 0);
        };
        let voters: Vec<&Member> = c.voters().collect();
        let alive = voters
            .iter()
            .filter(|m| {
                Some(m.vm.as_str()) == me
                    || self.vms.get(&m.vm).is_some_and(|v| {
                        v.units
                            .values()
                            .any(|u| u.k3s.as_ref().is_some_and(|p| p.holds_etcd(cid)))
                    })
            })
            .count();
        (alive, voters.len())
    }

    /// Whether etcd in `cid` has quorum (SQLite clusters always do).
    pub fn has_quorum(&self, cid: &str) -> bool {
        if self
            .clusters
            .get(cid)
            .is_some_and(|c| c.datastore == Datastore::Sqlite)
        {
            return true;
        }
        let (alive, voters) = self.alive_voters(cid, None);
        voters > 0 && alive > voters / 2
    }

    /// The API server version of a cluster: the oldest Ready server's.
    pub fn api_version(&self, cid: &str) -> String {
        let mut versions: Vec<&str> = self
            .vms
            .values()
            .flat_map(|v| v.units.values())
            .filter_map(|u| u.k3s.as_ref())
            .filter(|p| p.role == Role::Server && p.is_ready() && p.cluster.as_deref() == Some(cid))
            .map(|p| p.version.as_str())
            .collect();
        versions.sort_by_key(|v| minor_version(v));
        versions
            .first()
            .map(|v| v.to_string())
            .or_else(|| self.clusters.get(cid).map(|c| c.version.clone()))
            .unwrap_or_default()
    }

    /// `k3s token rotate`: the cluster's server token becomes `new`; servers
    /// keep running, and a server restarted with the old token in its
    /// config is refused ([docs: k3s "token" page], facts "Tokens, again").
    pub fn rotate_token(
        &mut self,
        vm: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<Vec<Effect>, String> {
        let cid = self
            .ready_server(vm)
            .map(|(_, c)| c.to_string())
            .ok_or("k3s is not running as a server on this node")?;
        let c = self.clusters.get_mut(&cid).ok_or("no cluster")?;
        if let Some(o) = old
            && parse_token(o).secret != c.token
        {
            return Err(
                "token rotation failed: the existing token does not match (--token)".into(),
            );
        }
        let secret = parse_token(new).secret.to_string();
        if secret.is_empty() {
            return Err("--new-token is required".into());
        }
        c.token = secret;
        let token = c.secure_token("server", &c.token);
        let servers: Vec<String> = c.members.iter().map(|m| m.vm.clone()).collect();
        Ok(servers
            .into_iter()
            .flat_map(|s| {
                [TOKEN_PATH, "/var/lib/rancher/k3s/server/node-token"].map(|p| Effect::WriteFile {
                    vm: s.clone(),
                    path: p.to_string(),
                    mode: 0o600,
                    content: format!("{token}\n"),
                })
            })
            .collect())
    }

    /// A Node was deleted through the API: a server's etcd member goes with
    /// it ([docs], facts "Kubeconfig, manifests, removal"), and that
    /// server's etcd stops. In k3s the member controller's `OnRemove`
    /// removes it (`pkg/etcd/member_controller.go:111-134` @1feb5ae) while
    /// wrangler's finalizer holds the Node until it has; here the Node goes
    /// and the member with it at once. The same to an observer: the API
    /// answers only with quorum ([`Self::has_quorum`]), and without it k3s's
    /// removal would fail and the Node stay (docs/facts/disaster-recovery.md,
    /// "Lost server"). A member whose VM is gone (removed behind the tool's
    /// back) is removed the same way.
    pub fn node_deleted(&mut self, cid: &str, node: &str, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(c) = self.clusters.get_mut(cid) else {
            return fx;
        };
        let removed: Vec<Member> = c
            .members
            .iter()
            .filter(|m| m.node_name == node)
            .cloned()
            .collect();
        c.members.retain(|m| m.node_name != node);
        for m in removed {
            let units: Vec<String> = self
                .vms
                .get(&m.vm)
                .map(|v| v.units.keys().cloned().collect())
                .unwrap_or_default();
            for u in units {
                let cluster_matches = self
                    .proc(&m.vm, &u)
                    .is_some_and(|p| p.cluster.as_deref() == Some(cid) && p.role == Role::Server);
                if cluster_matches && let Some(mut p) = self.proc_mut(&m.vm, &u).cloned() {
                    self.fail(
                        &m.vm,
                        &u,
                        &mut p,
                        now,
                        "etcd: this member has been removed from the cluster".into(),
                    );
                    if let Some(slot) = self.proc_mut(&m.vm, &u) {
                        *slot = p;
                    }
                    fx.push(Effect::ApiDown { vm: m.vm.clone() });
                }
            }
        }
        fx
    }
}
