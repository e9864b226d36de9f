//! Etcd snapshots and cluster reset/restore in the k3s model, each rule
//! from k3s's source (`docs/facts/disaster-recovery.md`, k3s @1feb5ae):
//!
//! - a snapshot is taken only by a Ready server running embedded etcd (a
//!   voting member: `pkg/etcd/snapshot.go:238-241`) and holds the datastore
//!   at that moment: the cluster's objects and its bootstrap data, readable
//!   only with the server token ([`SnapshotData`]);
//! - scheduled snapshots follow `etcd-snapshot-schedule-cron` (default
//!   `0 */12 * * *`, `pkg/cli/cmds/server.go:403-407`) on every server,
//!   unless `etcd-disable-snapshots` (`pkg/etcd/etcd.go:465-467`); an
//!   expression cron refuses gives no schedule and no error (k3s discards
//!   `AddJob`'s error, `snapshot.go:890`); k3s's 0-5 s jitter
//!   (`snapshot.go:894`) is left out: the world's timers fire on time;
//! - `k3s server --cluster-reset [--cluster-reset-restore-path]`
//!   ([`Model::cluster_reset`]) refuses what k3s refuses and otherwise
//!   makes the node's etcd a one-member cluster, from its own data or the
//!   snapshot, and k3s exits (`pkg/etcd/etcd.go:341-452,1597-1632`);
//! - the other servers' data still holds the old membership: restarted on
//!   it they wait for a quorum of that membership (the reset server no
//!   longer answers for it) until `server/db` is removed and they join
//!   anew; what etcd logs meanwhile is not in k3s's source (the world says
//!   "request cluster ID mismatch", etcd's wording, marked as the world's);
//! - an agent keeps running; once its server URL reaches a Ready server of
//!   a cluster restored with its own cluster's CA, it reports there (its
//!   certificates are still valid: the CA is bootstrap data). The facts
//!   say agents reconnect; that it needs no restart is the world's reading.

use std::net::Ipv4Addr;

use super::{
    Cluster, DB_DIR, Datastore, K3sProc, Member, SnapshotData, SnapshotTimer, TOKEN_PATH,
    parse_token,
};
use crate::world::cron::{Schedule, rfc3339};
use crate::world::k3s_config::Role;
use crate::world::kube::objects;
use crate::world::model::{Effect, Model};

/// The default snapshot directory (`${data-dir}/server/db/snapshots`,
/// `pkg/etcd/snapshot.go:72-101`): under `server/db`, so removing that
/// directory removes the local snapshots too.
pub const SNAPSHOT_DIR: &str = "/var/lib/rancher/k3s/server/db/snapshots";
/// Written by a reset, cleared by the next normal start
/// (`pkg/etcd/etcd.go:294,320,447`).
pub const RESET_FLAG: &str = "/var/lib/rancher/k3s/server/db/reset-flag";
/// k3s's default schedule (`pkg/cli/cmds/server.go:406`).
pub const DEFAULT_SCHEDULE: &str = "0 */12 * * *";
/// k3s's default retention, local and S3 (`pkg/cli/cmds/server.go:13`).
pub const DEFAULT_RETENTION: i64 = 5;
/// The first line of a world snapshot file.
const MAGIC: &str = "exedev-world etcd snapshot";

/// k3s's message when a reset has made this node a one-member cluster and
/// the process exits (`pkg/etcd/etcd.go:381`).
pub const RESET_DONE: &str = "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes";

/// A reset while this node's k3s runs: the running k3s holds etcd's
/// ports. k3s does not check this itself and its docs say to stop k3s
/// first; which listener fails first is not in the source (the world
/// names etcd's peer port on loopback, where a reset listens,
/// `pkg/etcd/etcd.go:983-1015`; the wrapping is k3s's:
/// `pkg/server/server.go:75`, `pkg/daemons/control/server.go:73`,
/// `pkg/cluster/cluster.go:63`).
pub const PORTS_HELD: &str = "Error: starting kubernetes: failed to start cluster: start managed database: listen tcp 127.0.0.1:2380: bind: address already in use";

/// The bootstrap data in the datastore is encrypted with another token
/// (`pkg/cluster/storage.go:336`).
pub const WRONG_TOKEN: &str = "bootstrap data already found and encrypted with different token";

/// What `k3s server --cluster-reset` brings to the model, read by the edge.
#[derive(Debug, Clone, Default)]
pub struct ResetRequest {
    pub node_name: String,
    /// The server token in effect (`--token`, config.yaml, or
    /// `server/token`).
    pub token: Option<String>,
    /// The snapshot file's text when restoring.
    pub snapshot: Option<String>,
    /// `server/db` exists.
    pub has_data_dir: bool,
    /// `server/db/reset-flag` exists.
    pub reset_flag: bool,
}

/// A snapshot just taken.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The unit of the server that took it (whose journal logs it).
    pub unit: String,
    pub node_name: String,
    /// The file's text.
    pub content: String,
}

/// k3s's wrapping of an error starting its embedded etcd
/// (`pkg/server/server.go:75`, `pkg/daemons/control/server.go:73`,
/// `pkg/cluster/cluster.go:63`, as in [`PORTS_HELD`]): one place for the
/// prefix both the model's and the command's reset failures carry.
pub fn managed_db_error(e: &str) -> String {
    format!("Error: starting kubernetes: failed to start cluster: start managed database: {e}")
}

/// The files a reset leaves on `vm`: `server/db`, the [`RESET_FLAG`] the
/// next normal start clears, and the server token file with the token in
/// its secure form. Apart from [`Model::cluster_reset`] because files are
/// the edge's part, carried out as [`Effect`]s.
fn reset_files(vm: &str, secure_token: &str) -> Vec<Effect> {
    vec![
        Effect::MakeDir {
            vm: vm.to_string(),
            path: DB_DIR.to_string(),
        },
        Effect::WriteFile {
            vm: vm.to_string(),
            path: RESET_FLAG.to_string(),
            mode: 0o600,
            content: String::new(),
        },
        Effect::WriteFile {
            vm: vm.to_string(),
            path: TOKEN_PATH.to_string(),
            mode: 0o600,
            content: format!("{secure_token}\n"),
        },
    ]
}

impl Model {
    /// A server's process is alive on `vm` (not exited): it holds etcd's
    /// ports, so a second k3s cannot reset or restore there.
    pub fn k3s_server_running(&self, vm: &str) -> bool {
        self.vms.get(vm).is_some_and(|v| {
            v.units.values().any(|u| {
                u.k3s.as_ref().is_some_and(|p| {
                    p.role == Role::Server && !matches!(p.phase, super::Phase::Failed { .. })
                })
            })
        })
    }

    /// Starts the snapshot schedule of a server that became Ready.
    pub(super) fn start_snapshot_timer(&self, p: &mut K3sProc, etcd: bool, now: u64) {
        p.snapshot_timer = None;
        if !etcd || p.role != Role::Server || p.cfg.bool("etcd-disable-snapshots") {
            return;
        }
        let spec = p
            .cfg
            .get("etcd-snapshot-schedule-cron")
            .unwrap_or(DEFAULT_SCHEDULE);
        if let Ok(schedule) = Schedule::parse(spec) {
            let next_ms = schedule.next(now, now);
            p.snapshot_timer = Some(SnapshotTimer {
                schedule,
                started_ms: now,
                next_ms,
            });
        }
    }

    /// The scheduled snapshots due now, one effect each (the files and S3
    /// are the edge's); their timers move on.
    pub(super) fn snapshot_timers(&mut self, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        for (name, v) in self.vms.iter_mut() {
            for (unit, u) in v.units.iter_mut() {
                let Some(p) = u.k3s.as_mut().filter(|p| p.is_ready()) else {
                    continue;
                };
                let Some(t) = p.snapshot_timer.as_mut() else {
                    continue;
                };
                if t.next_ms.is_some_and(|n| n <= now) {
                    t.next_ms = t.schedule.next(t.started_ms, now);
                    fx.push(Effect::ScheduledSnapshot {
                        vm: name.clone(),
                        unit: unit.clone(),
                    });
                }
            }
        }
        fx
    }

    /// Takes a snapshot on `vm`: its Ready etcd server's cluster, now.
    /// The error is what the `etcd-snapshot` command gets back.
    pub fn take_snapshot(&mut self, vm: &str, now: u64) -> Result<Taken, String> {
        let (unit, p) = self
            .vms
            .get(vm)
            .and_then(|v| {
                v.units.iter().find_map(|(u, s)| {
                    s.k3s
                        .as_ref()
                        .filter(|p| p.role == Role::Server && p.is_ready())
                        .map(|p| (u.clone(), p.clone()))
                })
            })
            .ok_or_else(|| {
                "Post \"https://127.0.0.1:6443/db/snapshot\": dial tcp 127.0.0.1:6443: connect: connection refused".to_string()
            })?;
        let cid = p.cluster.clone().unwrap_or_default();
        let c = self.clusters.get(&cid).ok_or("the cluster is gone")?;
        if c.datastore != Datastore::Etcd {
            // Facts silent: the snapshot route exists only with embedded
            // etcd; the wording is the HTTP status k3s's client reports.
            return Err("https://127.0.0.1:6443/db/snapshot: 404 Not Found (this server runs SQLite, not embedded etcd)".into());
        }
        let data = SnapshotData {
            cluster: cid.clone(),
            token: c.token.clone(),
            agent_token: c.agent_token.clone(),
            pki: c.pki.clone(),
            critical: c.critical.clone(),
            version: c.version.clone(),
            api: c.api.clone(),
            taken_ms: now,
        };
        let objects: Vec<&serde_json::Value> = data.api.all().collect();
        let body = serde_json::to_string_pretty(&objects).unwrap_or_default();
        let id = self.new_secret("snap-");
        let content = format!(
            "{MAGIC}\nid: {id}\ncluster: {cid}\ntaken: {}\nobjects: {}\n\n{body}\n",
            rfc3339(now),
            objects.len()
        );
        self.snapshots.insert(id, data);
        Ok(Taken {
            unit,
            node_name: p.node_name.clone(),
            content,
        })
    }

    /// The snapshot a file holds. The wording for a file that is not one
    /// is the world's (etcd's restore fails on it; k3s does not check).
    pub fn snapshot_in(&self, content: &str) -> Result<&SnapshotData, String> {
        let bad = || "snapshot file integrity check failed: not an etcd snapshot".to_string();
        let mut lines = content.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad());
        }
        let id = lines
            .next()
            .and_then(|l| l.strip_prefix("id: "))
            .ok_or_else(bad)?;
        self.snapshots.get(id).ok_or_else(bad)
    }

    /// `k3s server --cluster-reset`, the edge having checked the flags and
    /// files: this node's etcd becomes a new one-member cluster, from the
    /// snapshot or from its own data. Returns k3s's log lines (before its
    /// exit message, [`RESET_DONE`]) and the effects; the error is the
    /// `msg` of k3s's fatal line.
    pub fn cluster_reset(
        &mut self,
        vm: &str,
        req: &ResetRequest,
        now: u64,
    ) -> Result<(Vec<String>, Vec<Effect>), String> {
        if self.k3s_server_running(vm) {
            return Err(PORTS_HELD.into());
        }
        let old = self
            .vms
            .get(vm)
            .and_then(|v| v.server_data.clone())
            .filter(|c| req.has_data_dir && self.clusters.contains_key(c));
        let source = self.reset_source(req, old.as_deref(), now)?;
        let mut log = Vec::new();
        if req.snapshot.is_some() && req.has_data_dir {
            log.push(format!(
                "Pre-restore etcd database moved to {DB_DIR}/etcd-old-{}",
                now / 1000
            ));
        }
        log.push("Starting etcd for new cluster, cluster-reset=true".to_string());
        let token = source.token.clone();
        let id = self.reset_cluster(vm, req, source, old.as_deref(), now);
        let secure = self.clusters[&id].secure_token("server", &token);
        Ok((log, reset_files(vm, &secure)))
    }

    /// The datastore a reset starts the new cluster from: the snapshot
    /// being restored, or this node's own cluster `old` (its data in
    /// `server/db`). Its own function because each source has its own
    /// refusals, all before the model changes; the error is the `msg` of
    /// k3s's fatal line.
    fn reset_source(
        &self,
        req: &ResetRequest,
        old: Option<&str>,
        now: u64,
    ) -> Result<SnapshotData, String> {
        if let Some(text) = &req.snapshot {
            let data = self
                .snapshot_in(text)
                .map_err(|e| managed_db_error(&e))?
                .clone();
            let given = req
                .token
                .as_deref()
                .map(|t| parse_token(t).secret.to_string());
            if given.as_deref() != Some(data.token.as_str()) {
                // Fatal in the reset's rebootstrap (`etcd.go:368-372`).
                return Err(WRONG_TOKEN.into());
            }
            return Ok(data);
        }
        if req.reset_flag {
            return Err(managed_db_error(&format!(
                "Managed etcd cluster membership was previously reset, please remove the cluster-reset flag and start k3s normally. If you need to perform another cluster reset, you must first manually delete the file at {RESET_FLAG}"
            )));
        }
        let Some(cid) = old else {
            // Facts silent: k3s would start a new cluster; the world
            // refuses a reset with nothing to reset.
            return Err(managed_db_error(
                "no etcd data in /var/lib/rancher/k3s/server/db to reset",
            ));
        };
        let c = &self.clusters[cid];
        if let Some(t) = &req.token
            && parse_token(t).secret != c.token
        {
            return Err(WRONG_TOKEN.into());
        }
        Ok(SnapshotData {
            cluster: cid.to_string(),
            token: c.token.clone(),
            agent_token: c.agent_token.clone(),
            pki: c.pki.clone(),
            critical: c.critical.clone(),
            version: c.version.clone(),
            api: c.api.clone(),
            taken_ms: now,
        })
    }

    /// Makes `source` a new one-member etcd cluster of `vm` and returns its
    /// id: the model's change once every refusal has passed, kept apart
    /// from them. The cluster `old` this node's data held is superseded
    /// (its other servers learn why they wait, [`Model::superseded_note`]).
    fn reset_cluster(
        &mut self,
        vm: &str,
        req: &ResetRequest,
        source: SnapshotData,
        old: Option<&str>,
        now: u64,
    ) -> String {
        let id = self.new_cluster_id();
        let mut api = source.api;
        // The restored Nodes carry the status of snapshot time; no kubelet
        // reports to the new datastore yet (each does once it connects).
        for n in api.list(&objects::NODES, None, None, None) {
            let name = n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            api.node_not_ready(&name, now);
        }
        self.clusters.insert(
            id.clone(),
            Cluster {
                id: id.clone(),
                token: source.token,
                agent_token: source.agent_token,
                pki: source.pki,
                critical: source.critical,
                datastore: Datastore::Etcd,
                // A reset listens on loopback only; the member's peer
                // address is updated at the next start.
                members: vec![Member {
                    vm: vm.to_string(),
                    node_name: req.node_name.clone(),
                    peer_ip: Ipv4Addr::LOCALHOST,
                    learner_since: None,
                }],
                version: source.version,
                api,
                superseded_by: None,
            },
        );
        if let Some(o) = old
            && let Some(c) = self.clusters.get_mut(o)
        {
            c.superseded_by = Some(id.clone());
        }
        if let Some(v) = self.vms.get_mut(vm) {
            v.server_data = Some(id.clone());
        }
        id
    }

    /// A server starting on its data after a reset elsewhere: why it waits
    /// (its old membership lost the reset member). `None` when its cluster
    /// was not superseded.
    pub(super) fn superseded_note(&self, cid: &str) -> Option<String> {
        let c = self.clusters.get(cid)?;
        c.superseded_by.as_ref()?;
        let reset_on: Vec<&str> = c
            .members
            .iter()
            .filter(|m| {
                self.vms
                    .get(&m.vm)
                    .is_some_and(|v| v.server_data.as_deref() != Some(cid))
            })
            .map(|m| m.vm.as_str())
            .collect();
        Some(format!(
            "etcd: request cluster ID mismatch from {} (its membership was reset): back up and delete /var/lib/rancher/k3s/server/db on this server and start k3s to rejoin",
            reset_on.join(", ")
        ))
    }

    /// Agents whose server URL now reaches a Ready server of a cluster
    /// restored with their cluster's CA report there.
    pub(super) fn reconnect_agents(&mut self, now: u64) {
        let mut moves: Vec<(String, String, String)> = Vec::new();
        for (vm, v) in &self.vms {
            for (unit, u) in &v.units {
                let Some(p) = u
                    .k3s
                    .as_ref()
                    .filter(|p| p.role == Role::Agent && p.is_ready())
                else {
                    continue;
                };
                let Some(cur) = p.cluster.as_deref().and_then(|c| self.clusters.get(c)) else {
                    continue;
                };
                let Some(target) = self.agent_target(vm, p) else {
                    continue;
                };
                let Some((_, cid)) = self.ready_server(&target) else {
                    continue;
                };
                let Some(new) = self.clusters.get(cid) else {
                    continue;
                };
                let secret = p
                    .cfg
                    .get("token")
                    .map(|t| parse_token(t).secret.to_string());
                let admitted = secret
                    .as_deref()
                    .is_some_and(|s| s == new.token || new.agent_token.as_deref() == Some(s));
                if new.id != cur.id && std::sync::Arc::ptr_eq(&new.pki, &cur.pki) && admitted {
                    moves.push((vm.clone(), unit.clone(), new.id.clone()));
                }
            }
        }
        for (vm, unit, cid) in moves {
            let Some(p) = self
                .vms
                .get_mut(&vm)
                .and_then(|v| v.units.get_mut(&unit))
                .and_then(|u| u.k3s.as_mut())
            else {
                continue;
            };
            p.cluster = Some(cid.clone());
            let (name, version, ip) = (
                p.node_name.clone(),
                p.version.clone(),
                p.node_ip.unwrap_or(Ipv4Addr::LOCALHOST),
            );
            let (labels, taints) = (p.cfg.list("node-label"), p.cfg.list("node-taint"));
            if let Some(c) = self.clusters.get_mut(&cid) {
                c.api
                    .register_node(&name, false, false, &labels, &taints, &version, ip, now);
            }
            if let Some(v) = self.vms.get_mut(&vm) {
                v.log(
                    now,
                    &unit,
                    "k3s",
                    "level=info msg=\"Connected to proxy\" (the restored server answers: the agent reports to it)",
                );
            }
        }
    }

    /// The VM an agent's server URL reaches on the API port, if any.
    fn agent_target(&self, vm: &str, p: &K3sProc) -> Option<String> {
        let url = p.cfg.get("server")?;
        let (host, port) = super::parse::url_host_port(url)?;
        let ip = self.resolve(vm, &host)?;
        self.route_port(vm, ip, crate::world::tailnet::Proto::Tcp, port)
    }
}

/// The local snapshots to remove under k3s's retention
/// (`snapshotRetention`, `pkg/etcd/snapshot.go:903-953`): of the file
/// names starting with `prefix`, newest first by the Unix time that ends
/// the name, all past `retention`; `retention < 1` removes none. Names
/// without a time sort as oldest (k3s uses the file's mtime; the world's
/// files are all named by k3s).
pub fn local_retention(names: &[String], prefix: &str, retention: i64) -> Vec<String> {
    if retention < 1 {
        return Vec::new();
    }
    let mut mine: Vec<(i64, &String)> = names
        .iter()
        .filter(|n| n.starts_with(prefix))
        .map(|n| (created_secs(n).unwrap_or(0), n))
        .collect();
    mine.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(a.1)));
    mine.into_iter()
        .skip(retention as usize)
        .map(|(_, n)| n.clone())
        .collect()
}

/// The Unix seconds that end a snapshot's name (`-<ts>`, before `.zip`),
/// as k3s reads them (`snapshot.go:412-417,913-920`).
pub fn created_secs(name: &str) -> Option<i64> {
    let base = name.strip_suffix(".zip").unwrap_or(name);
    base.rsplit_once('-')?.1.parse().ok()
}

/// The token hash k3s records with a snapshot (`util.GetTokenHash`,
/// `pkg/util/token.go:58-77`): the first 12 hex digits of the SHA-256 of
/// the token's secret part. k3s puts it in S3's object metadata at upload
/// (`pkg/etcd/s3/s3.go:291,305-309`) and `ls` shows it as the annotation
/// `etcd.k3s.cattle.io/snapshot-token-hash` of S3 entries only: local files
/// are listed from disk, without it (`snapshot.go:401-450`).
pub fn token_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A snapshot's name (`snapshot.go:260`): `<prefix>-<node>-<unix secs>`.
pub fn snapshot_name(prefix: &str, node: &str, now_ms: u64) -> String {
    // `time.Now().Round(time.Second)`.
    format!("{prefix}-{node}-{}", (now_ms + 500) / 1000)
}
