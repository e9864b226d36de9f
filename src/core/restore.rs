//! The restore plan, pure: from the fleet, the VMs exe.dev lists, what each
//! server's k3s reports and the snapshots k3s lists, what `restore` will do
//! (which server is reset from the snapshot, which rejoin, which agents
//! restart) or why it refuses, before any change. Rendered for a terminal
//! and as JSON; the engine (`engine::restore`) carries it out over SSH.
//!
//! Every step rests on k3s's source (hilmoo/k3s, a mirror of k3s-io/k3s at
//! 1feb5ae; `docs/facts/disaster-recovery.md`, section "Restore"):
//! - `k3s server --cluster-reset --cluster-reset-restore-path=PATH` restores
//!   the snapshot into a one-member etcd and exits ("Managed etcd cluster
//!   membership has been reset, restart without --cluster-reset flag now.
//!   Backup and delete ${datadir}/server/db on each peer etcd server and
//!   rejoin the nodes", `pkg/etcd/etcd.go:341-451`); with S3 settings it
//!   downloads the snapshot by name first (`etcd.go:409-428`), and S3
//!   settings must come from the command line or config.yaml, never the
//!   `k3s-etcd-snapshot-s3-config` Secret (`etcd.go:414-416`).
//! - k3s refuses the reset on a server whose configuration sets `server`
//!   (`pkg/cli/server/server.go:500-504`): only a server that initialised
//!   its cluster (no `server:` in its config.yaml) can be reset.
//! - A snapshot records the hash of the server token it was taken with
//!   (`util.GetTokenHash`, `pkg/util/token.go:58-72`, kept as annotation
//!   `etcd.k3s.cattle.io/snapshot-token-hash`,
//!   `pkg/etcd/snapshot/types.go:40,234-236`); restored with another token,
//!   the bootstrap data cannot be read ("bootstrap data already found and
//!   encrypted with different token", `pkg/cluster/storage.go:336`). So the
//!   token is compared here, before anything stops.
//!
//! When every server VM is gone ([`plan_fresh`]) the servers are created
//! anew under their own names: the first by apply's create path, restored
//! from the S3 snapshot (a local one went with its VM), the others joined
//! by apply, the agents pointed at the new first server. The snapshot list
//! and its token hash can only be read once that first server runs (`k3s
//! etcd-snapshot ls` asks a running k3s): the engine checks them there
//! and removes that VM again when they do not fit.

use serde::Serialize;

use crate::core::api::types::VmInfo;
use crate::core::fleet::{Fleet, Role};
// k3s's snapshot list is read in one place (`core::snapshot`); restore and
// its engine use it through these names.
pub use crate::core::snapshot::{
    LOCAL_SNAPSHOT_DIR, Snapshot, is_snapshot_name, parse_listing, token_hash,
};

/// A server's etcd data, moved aside on the servers that rejoin after a
/// reset (the reset's own message: "Backup and delete ${datadir}/server/db
/// on each peer"): kept, not deleted, with the local snapshots under it.
pub const SERVER_DB_DIR: &str = "/var/lib/rancher/k3s/server/db";

/// What the engine read about one server before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    pub vm: String,
    /// Its config.yaml sets `server:` (it joined another server): k3s
    /// refuses `--cluster-reset` on it.
    pub joined: bool,
    /// Its Node is Ready.
    pub ready: bool,
}

/// Everything a restore plan is made from.
pub struct Inputs<'a> {
    pub fleet: &'a Fleet,
    /// What exe.dev lists (only the fleet's own VMs are looked at).
    pub vms: &'a [VmInfo],
    /// The snapshot asked for.
    pub snapshot: &'a str,
    /// What k3s lists on the servers that run.
    pub listing: &'a [Snapshot],
    /// One entry per running server, read over SSH.
    pub servers: &'a [ServerFacts],
    /// The hash of the fleet's server token ([`token_hash`]); `None` when
    /// it is neither referenced nor stored.
    pub token_hash: Option<String>,
    /// Where the token is looked for, for the refusal.
    pub token_source: String,
    /// `--force`: restore even though every server is Ready.
    pub force: bool,
}

/// One thing restore does, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// `systemctl stop k3s`: no server may run etcd while one is reset.
    Stop { vm: String },
    /// `k3s server --cluster-reset --cluster-reset-restore-path=…`, then
    /// start k3s and wait until the node is Ready.
    Reset {
        vm: String,
        restore_path: String,
        from_s3: bool,
    },
    /// Move the server's etcd data aside (k3s's "Backup and delete
    /// ${datadir}/server/db on each peer": the backup, with the node's local
    /// snapshots, is kept as `server/db-before-restore-<time>`), start k3s,
    /// wait Ready: it joins the restored cluster as a new member.
    Rejoin { vm: String },
    /// `systemctl restart k3s-agent`: the agent reconnects.
    RestartAgent { vm: String },
    /// The agent's `server:` (the join server's Tailscale IPv4, written
    /// once by its setup script) rewritten to `join`'s address now, then
    /// `systemctl restart k3s-agent`: a new server VM is a new tailnet
    /// device with another address, so the old one reaches nobody.
    RepointAgent { vm: String, join: String },
}

impl Step {
    pub fn vm(&self) -> &str {
        match self {
            Step::Stop { vm }
            | Step::Reset { vm, .. }
            | Step::Rejoin { vm }
            | Step::RestartAgent { vm }
            | Step::RepointAgent { vm, .. } => vm,
        }
    }

    /// One line saying what the step does.
    pub fn describe(&self) -> String {
        match self {
            Step::Stop { vm } => format!("stop k3s on {vm}"),
            Step::Reset {
                vm,
                restore_path,
                from_s3,
            } => format!(
                "reset etcd on {vm} from {} {restore_path}, start k3s, wait until Ready",
                if *from_s3 {
                    "S3 snapshot"
                } else {
                    "local file"
                }
            ),
            Step::Rejoin { vm } => format!(
                "move {SERVER_DB_DIR} aside on {vm} (kept as db-before-restore-<time>), start k3s, wait until it has rejoined (Ready)"
            ),
            Step::RestartAgent { vm } => format!("restart k3s-agent on {vm}"),
            Step::RepointAgent { vm, join } => format!(
                "point k3s-agent on {vm} at {join}'s new Tailscale address (its config.yaml `server:`), restart it"
            ),
        }
    }
}

/// What restore will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub fleet: String,
    pub snapshot: Snapshot,
    /// The server reset from the snapshot.
    pub reset: String,
    pub steps: Vec<Step>,
    /// Servers the fleet declares whose VM exists but does not run: the
    /// restore leaves them as they are.
    pub missing: Vec<String>,
    /// Servers the fleet declares whose VM is gone from exe.dev while
    /// others run (a server lost, or a restore of every-server-gone
    /// stopped after its reset and run again): created after the reset,
    /// as [`RestorePlan::create`]'s others are. Their Nodes, restored from
    /// the snapshot, are deleted first: after a reset etcd has the reset
    /// server as its only member (`pkg/etcd/etcd.go:1597-1632`), so no
    /// member is behind them, and left there they would count as etcd
    /// members for apply's quorum check. Empty when every VM exists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recreate: Vec<String>,
    /// Every server VM was gone: the servers created, in index order. The
    /// first ([`RestorePlan::reset`]) before the reset, which restores the
    /// snapshot on it; the others after it (apply's create path: they
    /// join). Empty when servers run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub create: Vec<String>,
}

/// Why restore will not start; each says what to do ([`crate::base::hint::Hint`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "fleet {fleet:?} has no running server VM: the snapshot list (and the token each snapshot was taken with) is read from a running server's k3s, so nothing was changed"
    )]
    NoServer { fleet: String },
    #[error("snapshot {name:?} not found among the fleet's {count} snapshot(s){}", nearest_text(.nearest))]
    NotFound {
        name: String,
        count: usize,
        nearest: Vec<String>,
    },
    #[error("snapshot {name:?} is one k3s recorded as failed: it cannot be restored")]
    Failed { name: String },
    #[error(
        "fleet {fleet:?} has no running server VM and keeps its snapshots on its servers' disks only (no etcd.snapshots.s3): snapshot {name:?} was on a server VM's disk and went with it"
    )]
    NoS3 { fleet: String, name: String },
    #[error(
        "snapshot {name:?} is local to {node}, which is not a running server of fleet {fleet:?}: its file is on that VM's disk only"
    )]
    LocalOnElsewhere {
        name: String,
        node: String,
        fleet: String,
    },
    #[error(
        "no server token for fleet {fleet:?} ({source_}): snapshot {name:?} is encrypted to the server token it was taken with, and k3s cannot read it without that token"
    )]
    TokenMissing {
        fleet: String,
        name: String,
        source_: String,
    },
    #[error(
        "snapshot {name:?} was taken with another server token (its token hash {snapshot_hash}, the fleet's {fleet_hash}): k3s would refuse it (\"bootstrap data already found and encrypted with different token\")"
    )]
    TokenMismatch {
        name: String,
        snapshot_hash: String,
        fleet_hash: String,
    },
    #[error(
        "{vm} joined its cluster through another server (its config.yaml sets `server:`), and k3s refuses --cluster-reset on such a server; snapshot {name:?} is local to it"
    )]
    JoinedHoldsLocal { vm: String, name: String },
    #[error(
        "none of fleet {fleet:?}'s running servers initialised the cluster (each config.yaml sets `server:`), and k3s refuses --cluster-reset while `server` is set"
    )]
    NoResettable { fleet: String },
    #[error(
        "every server of fleet {fleet:?} is Ready: restoring snapshot {name:?} would roll the cluster back to it, losing every change made since {created}"
    )]
    Healthy {
        fleet: String,
        name: String,
        created: String,
    },
}

fn nearest_text(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        format!("; nearest: {}", nearest.join(", "))
    }
}

impl crate::base::hint::Hint for Refusal {
    fn hint(&self) -> Option<String> {
        Some(match self {
            Refusal::NoServer { .. } => "start a stopped server VM again (`ssh exe.dev ls` lists them): restore reads the snapshots, and resets etcd, on a running server".to_string(),
            Refusal::NotFound { .. } => "list the snapshots with `exedev-k8s snapshot list -f FLEET` and pass one of their names to --snapshot".to_string(),
            Refusal::Failed { .. } => "pick another snapshot (`exedev-k8s snapshot list -f FLEET`)".to_string(),
            Refusal::NoS3 { .. } => "start a stopped server VM again if one is only stopped (`ssh exe.dev ls`); otherwise nothing holds a snapshot: `exedev-k8s apply` makes a new, empty cluster, and etcd.snapshots.s3 in the fleet keeps the next snapshots off the VMs".to_string(),
            Refusal::LocalOnElsewhere { node, .. } => format!("start {node} again if it is stopped, or restore a snapshot in S3 (fleet etcd.snapshots.s3)"),
            Refusal::TokenMissing { .. } => "put the server token back where the fleet's k3s.token names it, or into .exedev-k8s/<fleet>/k3s-token beside the fleet file (the token the cluster was created with)".to_string(),
            Refusal::TokenMismatch { .. } => "restore with the token the snapshot was taken with (k3s.token in the fleet), or pick a snapshot taken since the token last changed".to_string(),
            Refusal::JoinedHoldsLocal { vm, .. } => format!("restore a snapshot in S3, or one local to a server that initialised the cluster; or remove the `server:` line from {vm}'s /etc/rancher/k3s/config.yaml yourself first"),
            Refusal::NoResettable { .. } => "remove the `server:` line from the first server's /etc/rancher/k3s/config.yaml, then restore again".to_string(),
            Refusal::Healthy { .. } => "pass --force to restore a healthy cluster, or --drill to try the snapshot on throw-away VMs".to_string(),
        })
    }
}

/// The fleet's running VMs of a role, in name order (servers: index order).
fn running(fleet: &Fleet, vms: &[VmInfo], role: Role) -> Vec<String> {
    let tag = crate::core::fleet::role_tag(role);
    let mut names: Vec<(u32, String)> = vms
        .iter()
        .filter(|v| {
            crate::core::plan::owned(&fleet.name, v) && v.tags.contains(&tag) && v.is_running()
        })
        .map(|v| {
            let index = crate::base::names::split_fleet_vm_name(&v.vm_name).map_or(0, |n| n.index);
            (index, v.vm_name.clone())
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

/// The snapshots nearest to `name` (edit distance within a third of its
/// length, at most 3), else the 3 newest: what the refusal offers.
pub fn nearest(name: &str, listing: &[Snapshot]) -> Vec<String> {
    let limit = (name.len() / 3).max(2);
    let mut close: Vec<(usize, &str)> = listing
        .iter()
        .map(|s| {
            (
                crate::base::k3s_flags::distance(name, &s.name),
                s.name.as_str(),
            )
        })
        .filter(|(d, _)| *d <= limit)
        .collect();
    close.sort();
    if close.is_empty() {
        let mut newest: Vec<&Snapshot> = listing.iter().collect();
        newest.sort_by(|a, b| b.created.cmp(&a.created));
        return newest.iter().take(3).map(|s| s.name.clone()).collect();
    }
    close
        .into_iter()
        .take(3)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Makes the restore plan, or the first reason not to restore. Checked in
/// this order, each before any change: a running server, the snapshot
/// (exists, not failed, reachable), the token, a server k3s will reset, a
/// healthy fleet without `--force`.
pub fn plan(i: &Inputs) -> Result<RestorePlan, Refusal> {
    let fleet = &i.fleet.name;
    let servers = running(i.fleet, i.vms, Role::Server);
    if servers.is_empty() {
        return Err(Refusal::NoServer {
            fleet: fleet.clone(),
        });
    }
    // S3 holds one object per name; a local name is on one node: the S3
    // copy is preferred (any server can fetch it).
    let mut found: Vec<&Snapshot> = i.listing.iter().filter(|s| s.name == i.snapshot).collect();
    found.sort_by_key(|s| !s.in_s3());
    let Some(snap) = found.first().copied() else {
        return Err(Refusal::NotFound {
            name: i.snapshot.to_string(),
            count: i.listing.len(),
            nearest: nearest(i.snapshot, i.listing),
        });
    };
    if !snap.ready {
        return Err(Refusal::Failed {
            name: snap.name.clone(),
        });
    }
    if !snap.in_s3() && !servers.contains(&snap.node) {
        return Err(Refusal::LocalOnElsewhere {
            name: snap.name.clone(),
            node: snap.node.clone(),
            fleet: fleet.clone(),
        });
    }
    let Some(fleet_hash) = &i.token_hash else {
        return Err(Refusal::TokenMissing {
            fleet: fleet.clone(),
            name: snap.name.clone(),
            source_: i.token_source.clone(),
        });
    };
    // A snapshot without a recorded hash (older releases) is not judged
    // here: k3s itself refuses a wrong token when the server starts.
    if let Some(h) = snap.token_hash.as_ref().filter(|h| *h != fleet_hash) {
        return Err(Refusal::TokenMismatch {
            name: snap.name.clone(),
            snapshot_hash: h.clone(),
            fleet_hash: fleet_hash.clone(),
        });
    }
    let joined = |vm: &str| i.servers.iter().any(|f| f.vm == vm && f.joined);
    let reset = if snap.in_s3() {
        servers
            .iter()
            .find(|vm| !joined(vm))
            .cloned()
            .ok_or_else(|| Refusal::NoResettable {
                fleet: fleet.clone(),
            })?
    } else if joined(&snap.node) {
        return Err(Refusal::JoinedHoldsLocal {
            vm: snap.node.clone(),
            name: snap.name.clone(),
        });
    } else {
        snap.node.clone()
    };
    let all_ready = servers.len() == i.fleet.control_plane.count as usize
        && servers
            .iter()
            .all(|vm| i.servers.iter().any(|f| &f.vm == vm && f.ready));
    if all_ready && !i.force {
        return Err(Refusal::Healthy {
            fleet: fleet.clone(),
            name: snap.name.clone(),
            created: snap.created.clone(),
        });
    }
    let mut steps: Vec<Step> = servers
        .iter()
        .map(|vm| Step::Stop { vm: vm.clone() })
        .collect();
    steps.push(Step::Reset {
        vm: reset.clone(),
        restore_path: snap.restore_path(),
        from_s3: snap.in_s3(),
    });
    steps.extend(
        servers
            .iter()
            .filter(|vm| **vm != reset)
            .map(|vm| Step::Rejoin { vm: vm.clone() }),
    );
    let (missing, recreate) = not_running_servers(i, &servers);
    // With a server VM gone an agent may name a server address that reaches
    // nobody (its `server:` is its join server's Tailscale IPv4, resolved
    // once at setup; a VM made anew under that name is a new device with
    // another address): pointed at the reset server, which runs. Where the
    // address is still right the rewrite changes nothing and the restart
    // is RestartAgent's.
    steps.extend(running(i.fleet, i.vms, Role::Agent).into_iter().map(
        |vm| match recreate.is_empty() {
            true => Step::RestartAgent { vm },
            false => Step::RepointAgent {
                vm,
                join: reset.clone(),
            },
        },
    ));
    Ok(RestorePlan {
        fleet: fleet.clone(),
        snapshot: snap.clone(),
        reset,
        missing,
        recreate,
        steps,
        create: Vec::new(),
    })
}

/// The declared servers that do not run, apart: those whose VM exists
/// (stopped: left as they are) and those whose VM is gone
/// from exe.dev (created by the restore after its reset).
fn not_running_servers(i: &Inputs, running: &[String]) -> (Vec<String>, Vec<String>) {
    crate::core::fleet::desired_vms(i.fleet)
        .into_iter()
        .filter(|d| d.role == Role::Server && !running.contains(&d.name))
        .map(|d| d.name)
        .partition(|name| {
            i.vms
                .iter()
                .any(|v| &v.vm_name == name && crate::core::plan::owned(&i.fleet.name, v))
        })
}

/// What a restore onto new server VMs is planned from: every server VM is
/// gone, so nothing can be read from k3s before the first one exists.
pub struct FreshInputs<'a> {
    pub fleet: &'a Fleet,
    /// What exe.dev lists (only the fleet's own VMs are looked at).
    pub vms: &'a [VmInfo],
    /// The snapshot asked for (a name [`is_snapshot_name`] accepts).
    pub snapshot: &'a str,
    /// Whether the fleet's server token was found.
    pub has_token: bool,
    /// Where the token is looked for, for the refusal.
    pub token_source: String,
}

/// The plan when every server VM is gone, or why not, before anything is
/// created: the snapshot must be in S3 (a local one was on a gone VM's
/// disk) and the server token must be at hand (the snapshot's bootstrap
/// data is encrypted to it, `pkg/cluster/encrypt.go`, and a fresh server
/// has no `server/token` to fall back on, `pkg/cli/server/server.go:514-524`).
/// The first server is created, stopped and reset from S3; the other
/// servers are created after it (they join); running agents are pointed at
/// the new first server ([`Step::RepointAgent`]). Whether the snapshot
/// exists and was taken with this token is known only on the new server
/// (the engine checks there, before the reset).
pub fn plan_fresh(i: &FreshInputs) -> Result<RestorePlan, Refusal> {
    let fleet = &i.fleet.name;
    // A server VM that exists but does not run (stopped) holds the
    // cluster's data: it is started again, never replaced (and the new
    // first server, removed again on a refusal, must be one restore made).
    let tag = crate::core::fleet::role_tag(Role::Server);
    if i.vms
        .iter()
        .any(|v| crate::core::plan::owned(fleet, v) && v.tags.contains(&tag))
    {
        return Err(Refusal::NoServer {
            fleet: fleet.clone(),
        });
    }
    let Some(s3) = i.fleet.k3s.snapshots.as_ref().and_then(|s| s.s3.as_ref()) else {
        return Err(Refusal::NoS3 {
            fleet: fleet.clone(),
            name: i.snapshot.to_string(),
        });
    };
    if !i.has_token {
        return Err(Refusal::TokenMissing {
            fleet: fleet.clone(),
            name: i.snapshot.to_string(),
            source_: i.token_source.clone(),
        });
    }
    let create: Vec<String> = crate::core::fleet::desired_vms(i.fleet)
        .into_iter()
        .filter(|d| d.role == Role::Server)
        .map(|d| d.name)
        .collect();
    let Some(first) = create.first().cloned() else {
        return Err(Refusal::NoServer {
            fleet: fleet.clone(),
        });
    };
    let folder = s3
        .folder
        .as_ref()
        .map(|f| format!("{f}/"))
        .unwrap_or_default();
    let snapshot = Snapshot {
        name: i.snapshot.to_string(),
        node: "s3".to_string(),
        location: format!("s3://{}/{folder}{}", s3.bucket, i.snapshot),
        size: 0,
        created: String::new(),
        token_hash: None,
        ready: true,
    };
    let mut steps = vec![
        Step::Stop { vm: first.clone() },
        Step::Reset {
            vm: first.clone(),
            restore_path: snapshot.restore_path(),
            from_s3: true,
        },
    ];
    steps.extend(
        running(i.fleet, i.vms, Role::Agent)
            .into_iter()
            .map(|vm| Step::RepointAgent {
                vm,
                join: first.clone(),
            }),
    );
    Ok(RestorePlan {
        fleet: fleet.clone(),
        snapshot,
        reset: first,
        steps,
        missing: Vec::new(),
        recreate: Vec::new(),
        create,
    })
}

/// What k3s prints when a reset (with or without a restore) is done
/// (`pkg/etcd/etcd.go:379-382`): the only proof the reset script accepts.
pub const RESET_DONE: &str = "Managed etcd cluster membership has been reset";

/// The unit each role runs (install.sh: `k3s`, `k3s-agent`).
fn unit(step: &Step) -> &'static str {
    match step {
        Step::RestartAgent { .. } | Step::RepointAgent { .. } => "k3s-agent",
        _ => "k3s",
    }
}

/// The bash script one step runs on its VM as the SSH user (on stdin of
/// `bash -s`; root through `sudo -n`), bounded by its own waits, its last
/// stderr line saying what failed. Every value in it is a fleet VM name or
/// a checked snapshot path, quoted.
pub fn step_script(step: &Step) -> String {
    let q = |s: &str| crate::base::shellwords::quote(s).unwrap_or_else(|_| "''".to_string());
    let unit = unit(step);
    let mut out = format!(
        r#"#!/usr/bin/env bash
# exedev-k8s restore: {what}
set -Eeuo pipefail
UNIT={unit}
wait_for() {{
  local n="$1" d="$2" i
  shift 2
  for ((i = 1; i <= n; i++)); do
    if "$@"; then return 0; fi
    sleep "$d"
  done
  return 1
}}
fail() {{
  echo "$*" >&2
  exit 1
}}
readyz() {{ [ "$(sudo -n k3s kubectl get --raw /readyz 2>/dev/null)" = ok ]; }}
inactive() {{ ! systemctl is-active --quiet "$UNIT"; }}
started() {{
  sudo -n systemctl start --no-block "$UNIT"
  wait_for 120 5 systemctl is-active --quiet "$UNIT" ||
    fail "$UNIT is not active after 10 minutes; see: journalctl -u $UNIT"
}}
"#,
        what = crate::base::text::one_line(&step.describe()).replace('\n', " "),
    );
    let body = match step {
        Step::Stop { .. } => r#"sudo -n systemctl stop "$UNIT"
wait_for 60 2 inactive || fail "$UNIT still active 2 minutes after systemctl stop"
echo "k3s stopped"
"#
        .to_string(),
        Step::Reset {
            restore_path,
            from_s3,
            ..
        } => {
            // A local file is restored as a file even when the server has
            // S3 settings (k3s docs, "etcd-snapshot": `--etcd-s3=false`).
            let local = if *from_s3 { "" } else { " --etcd-s3=false" };
            format!(
                r#"RESTORE_PATH={path}
OUT="$(mktemp)"
trap 'rm -f -- "$OUT"' EXIT
inactive || fail "$UNIT is still active: every server must be stopped before the reset"
{{ sudo -n timeout 1200 k3s server --cluster-reset --cluster-reset-restore-path="$RESTORE_PATH"{local} 2>&1 || true; }} >"$OUT"
if ! grep -qF {done} "$OUT"; then
  tail -n 12 "$OUT" >&2
  fail "k3s did not restore $RESTORE_PATH: $(grep -E 'level=(fatal|error)' "$OUT" | tail -n 1)"
fi
started
wait_for 60 5 readyz || fail "the API server is not ready 5 minutes after the reset; see: journalctl -u $UNIT"
echo "etcd reset from $RESTORE_PATH; k3s active, /readyz ok"
"#,
                path = q(restore_path),
                done = q(RESET_DONE),
            )
        }
        Step::Rejoin { .. } => format!(
            r#"R="${{EXEDEV_K8S_ROOT:-}}"
inactive || fail "$UNIT is still active: it must be stopped before its etcd data is removed"
sudo -n mv -- "$R"{db} "$R"{db}-before-restore-"$(date -u +%Y%m%dT%H%M%SZ)"
started
wait_for 60 5 readyz || fail "the API server is not ready 5 minutes after rejoining; see: journalctl -u $UNIT"
echo "etcd data moved aside; k3s active, /readyz ok"
"#,
            db = q(SERVER_DB_DIR),
        ),
        Step::RestartAgent { .. } => r#"sudo -n systemctl restart --no-block "$UNIT"
wait_for 120 5 systemctl is-active --quiet "$UNIT" ||
  fail "$UNIT is not active after 10 minutes; see: journalctl -u $UNIT"
echo "k3s-agent restarted"
"#
        .to_string(),
        // As the setup script finds its join server (`join_ip`,
        // templates/common.sh.tera): by its tailnet name, IPv4 only.
        Step::RepointAgent { join, .. } => format!(
            r#"JOIN={join}
CFG="${{EXEDEV_K8S_ROOT:-}}/etc/rancher/k3s/config.yaml"
JIP=''
join_ip() {{ JIP="$(sudo -n tailscale ip -4 "$JOIN" 2>/dev/null | head -n 1)" && [[ $JIP =~ ^[0-9.]+$ ]]; }}
wait_for 60 5 join_ip || fail "tailscale ip -4 $JOIN: no such peer"
sudo -n grep -q '^server:' "$CFG" || fail "$CFG has no server: line"
sudo -n sed -i -E "s|^server:.*$|server: \"https://$JIP:6443\"|" "$CFG"
sudo -n systemctl restart --no-block "$UNIT"
wait_for 120 5 systemctl is-active --quiet "$UNIT" ||
  fail "$UNIT is not active after 10 minutes; see: journalctl -u $UNIT"
echo "k3s-agent pointed at $JOIN ($JIP) and restarted"
"#,
            join = q(join),
        ),
    };
    out.push_str(&body);
    out
}

/// The throw-away fleet `restore --drill` restores into: the live fleet
/// renamed `<name>-drill` (its own VM names and ownership tag, so nothing
/// of the live fleet is its business: `fleet::concerns`), one server, no
/// agents, the same k3s settings (release, S3, the token reference), never
/// protected. `None` when the name would not make valid VM names.
pub fn drill_fleet(live: &Fleet) -> Option<Fleet> {
    let name = format!("{}-drill", live.name);
    let first = crate::base::names::fleet_vm_name(&name, crate::core::fleet::CONTROL_PLANE_POOL, 1);
    if !crate::base::names::is_name_segment(&name)
        || crate::base::names::check_node_name(&first).is_err()
    {
        return None;
    }
    let mut f = live.clone();
    f.name = name;
    f.protect = false;
    f.control_plane.count = 1;
    f.pools.clear();
    Some(f)
}

/// Where the snapshot is, for people: `s3` or `local on NODE`.
fn place_said(s: &Snapshot) -> String {
    match s.place() {
        crate::core::snapshot::Place::S3 => "s3".to_string(),
        crate::core::snapshot::Place::Local(node) => format!("local on {node}"),
    }
}

/// The plan for a terminal: what is reset, what rejoins, what restarts,
/// what stays for `apply`. Outside text (names from k3s and exe.dev) is
/// escaped.
pub fn render(p: &RestorePlan) -> String {
    if !p.create.is_empty() {
        return render_fresh(p);
    }
    let s = &p.snapshot;
    let mut out = format!(
        "Restore of fleet {} from snapshot {} ({}, {} bytes, taken {}):\n",
        crate::base::text::one_line(&p.fleet),
        crate::base::text::one_line(&s.name),
        crate::base::text::one_line(&place_said(s)),
        s.size,
        crate::base::text::one_line(&s.created),
    );
    for (n, step) in p.steps.iter().enumerate() {
        out.push_str(&format!(
            "  {:>2}. {}\n",
            n + 1,
            crate::base::text::one_line(&step.describe())
        ));
    }
    if !p.recreate.is_empty() {
        out.push_str(&format!(
            "Gone from exe.dev, created after the reset (their restored Nodes deleted first: after the reset etcd has {} as its only member; they join): {}\n",
            p.reset,
            p.recreate.join(", ")
        ));
    }
    if !p.missing.is_empty() {
        out.push_str(&format!(
            "Not running, their VMs stopped (this restore leaves them as they are; `exedev-k8s plan` says what apply would do): {}\n",
            p.missing.join(", ")
        ));
    }
    if s.token_hash.is_none() {
        out.push_str("k3s recorded no token hash with this snapshot: whether it was taken with the fleet's server token is known only when the reset runs.\n");
    }
    out.push_str(
        "Everything written to the cluster after the snapshot was taken is lost. No etcd data is deleted: k3s moves the reset server's aside, the others' are moved aside only after it is Ready.\n",
    );
    out
}

/// The plan when every server VM is gone: what is created, when the
/// snapshot is checked, what is reset, which agents are pointed anew.
fn render_fresh(p: &RestorePlan) -> String {
    let name = crate::base::text::one_line(&p.snapshot.name);
    let first = &p.reset;
    let others = p.create.get(1..).unwrap_or_default();
    let mut lines = vec![
        format!("create server VM {first} (apply's create path), wait until it runs k3s"),
        format!(
            "on {first}, find S3 snapshot {name} and its token hash (`k3s etcd-snapshot ls`); not there, or taken with another token: {first} is removed again and nothing else was changed"
        ),
    ];
    lines.extend(
        p.steps
            .iter()
            .filter(|st| !matches!(st, Step::RepointAgent { .. }))
            .map(Step::describe),
    );
    if !others.is_empty() {
        lines.push(format!(
            "delete the Nodes of {} that the snapshot brings back (their VMs are gone; after the reset etcd has {first} as its only member)",
            others.join(", ")
        ));
        lines.push(format!(
            "create server VM(s) {} (apply's create path): they join {first}",
            others.join(", ")
        ));
    }
    lines.extend(
        p.steps
            .iter()
            .filter(|st| matches!(st, Step::RepointAgent { .. }))
            .map(Step::describe),
    );
    let mut out = format!(
        "Restore of fleet {} from S3 snapshot {name} onto new server VMs (no server VM of the fleet exists):\n",
        crate::base::text::one_line(&p.fleet),
    );
    for (n, line) in lines.iter().enumerate() {
        out.push_str(&format!(
            "  {:>2}. {}\n",
            n + 1,
            crate::base::text::one_line(line)
        ));
    }
    out.push_str(
        "The snapshot is encrypted to the server token it was taken with: the fleet's stored token is used. The gone servers' Tailscale devices must have left the tailnet (an ephemeral auth key, or removed in the admin console), or a new VM gets another name and its setup stops. Everything written to the cluster after the snapshot was taken is lost.\n",
    );
    out
}

/// The plan as one JSON document (`restore --json`).
pub fn to_json(p: &RestorePlan) -> String {
    let text = serde_json::to_string_pretty(p).unwrap_or_else(|_| "{}".to_string());
    crate::base::text::json_safe(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::fixtures;

    const TOKEN: &str = "s3cr3t-token";

    fn fleet() -> Fleet {
        fixtures::fleet_with(
            "controlPlane:
  count: 3
pools:
  - name: web
    count: 2
",
        )
    }

    /// What exe.dev lists for the fleet's VMs, all running, except `gone`.
    fn vms(f: &Fleet, gone: &[&str]) -> Vec<VmInfo> {
        crate::core::fleet::desired_vms(f)
            .iter()
            .filter(|d| !gone.contains(&d.name.as_str()))
            .map(|d| VmInfo {
                vm_name: d.name.clone(),
                status: "running".into(),
                comment: crate::core::plan::spec::comment_for(f, d, Some("v1.31.4+k3s1")),
                tags: d.tags.clone(),
                ..Default::default()
            })
            .collect()
    }

    fn snap(name: &str, node: &str) -> Snapshot {
        Snapshot {
            name: name.into(),
            node: node.into(),
            location: if node == "s3" {
                format!("s3://bucket/prod/{name}")
            } else {
                format!("file://{LOCAL_SNAPSHOT_DIR}/{name}")
            },
            size: 4096,
            created: "2026-12-07T12:00:00Z".into(),
            token_hash: Some(token_hash(TOKEN)),
            ready: true,
        }
    }

    fn facts(vm: &str, joined: bool, ready: bool) -> ServerFacts {
        ServerFacts {
            vm: vm.into(),
            joined,
            ready,
        }
    }

    /// Servers 2 and 3 joined server 1; server 2 is not Ready.
    fn usual() -> Vec<ServerFacts> {
        vec![
            facts("demo-cp1", false, true),
            facts("demo-cp2", true, false),
            facts("demo-cp3", true, true),
        ]
    }

    fn inputs<'a>(
        f: &'a Fleet,
        vms: &'a [VmInfo],
        name: &'a str,
        listing: &'a [Snapshot],
        servers: &'a [ServerFacts],
    ) -> Inputs<'a> {
        Inputs {
            fleet: f,
            vms,
            snapshot: name,
            listing,
            servers,
            token_hash: Some(token_hash(TOKEN)),
            token_source: ".exedev-k8s/demo/k3s-token".into(),
            force: false,
        }
    }

    #[test]
    fn servers_running_reset_the_first_the_others_rejoin_agents_restart() {
        let f = fleet();
        let v = vms(&f, &[]);
        let listing = [snap("etcd-snapshot-demo-cp1-1765108800", "s3")];
        let servers = usual();
        let p = plan(&inputs(
            &f,
            &v,
            "etcd-snapshot-demo-cp1-1765108800",
            &listing,
            &servers,
        ))
        .unwrap();
        assert_eq!(p.reset, "demo-cp1");
        let steps: Vec<String> = p.steps.iter().map(Step::describe).collect();
        insta::assert_snapshot!(render(&p));
        assert_eq!(steps.len(), 3 + 1 + 2 + 2, "{steps:#?}");
        // Every server stops before the reset; rejoins come after it.
        let reset_at = p
            .steps
            .iter()
            .position(|s| matches!(s, Step::Reset { .. }))
            .unwrap();
        assert!(
            p.steps[..reset_at]
                .iter()
                .all(|s| matches!(s, Step::Stop { .. }))
        );
        assert_eq!(
            p.steps[reset_at],
            Step::Reset {
                vm: "demo-cp1".into(),
                restore_path: "etcd-snapshot-demo-cp1-1765108800".into(),
                from_s3: true
            }
        );
    }

    #[test]
    fn a_local_snapshot_is_restored_on_its_own_node_from_its_path() {
        let f = fleet();
        let v = vms(&f, &[]);
        let listing = [snap("on-demand-demo-cp1-1765108800", "demo-cp1")];
        let servers = usual();
        let p = plan(&inputs(
            &f,
            &v,
            "on-demand-demo-cp1-1765108800",
            &listing,
            &servers,
        ))
        .unwrap();
        assert_eq!(
            p.steps[3],
            Step::Reset {
                vm: "demo-cp1".into(),
                restore_path: format!("{LOCAL_SNAPSHOT_DIR}/on-demand-demo-cp1-1765108800"),
                from_s3: false
            }
        );
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_nearest_names() {
        let f = fleet();
        let v = vms(&f, &[]);
        let listing = [
            snap("etcd-snapshot-demo-cp1-1765108800", "s3"),
            snap("etcd-snapshot-demo-cp1-1765130400", "s3"),
            snap("nightly", "demo-cp1"),
        ];
        let servers = usual();
        let e = plan(&inputs(
            &f,
            &v,
            "etcd-snapshot-demo-cp1-176510880",
            &listing,
            &servers,
        ))
        .unwrap_err();
        assert_eq!(
            e,
            Refusal::NotFound {
                name: "etcd-snapshot-demo-cp1-176510880".into(),
                count: 3,
                nearest: vec![
                    "etcd-snapshot-demo-cp1-1765108800".into(),
                    "etcd-snapshot-demo-cp1-1765130400".into()
                ],
            }
        );
        assert!(
            e.to_string()
                .contains("nearest: etcd-snapshot-demo-cp1-1765108800")
        );
        assert!(
            crate::base::hint::Hint::hint(&e)
                .unwrap()
                .contains("snapshot list")
        );
    }

    #[test]
    fn a_healthy_fleet_is_refused_without_force() {
        let f = fleet();
        let v = vms(&f, &[]);
        let listing = [snap("s", "s3")];
        let servers = vec![
            facts("demo-cp1", false, true),
            facts("demo-cp2", true, true),
            facts("demo-cp3", true, true),
        ];
        let mut i = inputs(&f, &v, "s", &listing, &servers);
        assert!(matches!(plan(&i), Err(Refusal::Healthy { .. })));
        i.force = true;
        assert!(plan(&i).is_ok());
    }

    #[test]
    fn the_token_is_checked_before_anything() {
        let f = fleet();
        let v = vms(&f, &[]);
        let listing = [snap("s", "s3")];
        let servers = usual();
        let mut i = inputs(&f, &v, "s", &listing, &servers);
        i.token_hash = Some(token_hash("another"));
        assert!(matches!(plan(&i), Err(Refusal::TokenMismatch { .. })));
        i.token_hash = None;
        let e = plan(&i).unwrap_err();
        assert!(matches!(e, Refusal::TokenMissing { .. }));
        assert!(
            e.to_string().contains("encrypted to the server token"),
            "{e}"
        );
    }

    #[test]
    fn a_local_snapshot_on_a_gone_server_is_refused() {
        let f = fleet();
        let v = vms(&f, &["demo-cp2"]);
        let listing = [snap("s", "demo-cp2")];
        let servers = usual();
        let e = plan(&inputs(&f, &v, "s", &listing, &servers)).unwrap_err();
        assert!(matches!(e, Refusal::LocalOnElsewhere { ref node, .. } if node == "demo-cp2"));
    }

    #[test]
    fn a_gone_server_is_recreated_after_the_reset_and_a_joined_first_server_is_not_reset() {
        let f = fleet();
        let v = vms(&f, &["demo-cp1"]);
        let listing = [snap("s", "s3")];
        // cp2 initialised the cluster after cp1 was replaced once.
        let servers = vec![
            facts("demo-cp2", false, true),
            facts("demo-cp3", true, true),
        ];
        let p = plan(&inputs(&f, &v, "s", &listing, &servers)).unwrap();
        assert_eq!(p.reset, "demo-cp2");
        assert_eq!(p.recreate, vec!["demo-cp1".to_string()]);
        assert!(p.missing.is_empty());
        // Its agent may name the gone server's address: pointed anew.
        assert!(p.steps.contains(&Step::RepointAgent {
            vm: "demo-web1".into(),
            join: "demo-cp2".into()
        }));
        let only_joined = vec![facts("demo-cp2", true, true), facts("demo-cp3", true, true)];
        assert!(matches!(
            plan(&inputs(&f, &v, "s", &listing, &only_joined)),
            Err(Refusal::NoResettable { .. })
        ));
    }

    /// A restore of every-server-gone stopped right after its reset, run
    /// again: the new first server runs, the others' VMs are gone. The
    /// plan resets it again, creates the others after (their restored
    /// Nodes deleted first) and points the agents at it; a stopped server
    /// VM is neither recreated nor counted as gone.
    #[test]
    fn a_rerun_after_the_reset_recreates_the_gone_servers_and_repoints_agents() {
        let f = fleet();
        let v = vms(&f, &["demo-cp2", "demo-cp3"]);
        let listing = [snap("s", "s3")];
        let servers = vec![facts("demo-cp1", false, true)];
        let p = plan(&inputs(&f, &v, "s", &listing, &servers)).unwrap();
        assert_eq!(p.reset, "demo-cp1");
        assert_eq!(p.recreate, ["demo-cp2", "demo-cp3"]);
        assert!(p.create.is_empty() && p.missing.is_empty());
        assert_eq!(
            p.steps.iter().map(Step::describe).collect::<Vec<_>>()[..2],
            ["stop k3s on demo-cp1".to_string(), p.steps[1].describe()]
        );
        assert!(
            matches!(p.steps[1], Step::Reset { ref vm, from_s3: true, .. } if vm == "demo-cp1")
        );
        assert_eq!(
            p.steps[2],
            Step::RepointAgent {
                vm: "demo-web1".into(),
                join: "demo-cp1".into()
            }
        );
        assert!(render(&p).contains("Gone from exe.dev, created after the reset"));
        let j: serde_json::Value = serde_json::from_str(&to_json(&p)).unwrap();
        assert_eq!(j["recreate"], serde_json::json!(["demo-cp2", "demo-cp3"]));

        let mut stopped = vms(&f, &["demo-cp2"]);
        for vm in stopped.iter_mut().filter(|v| v.vm_name == "demo-cp3") {
            vm.status = "stopped".into();
        }
        let p = plan(&inputs(&f, &stopped, "s", &listing, &servers)).unwrap();
        assert_eq!(
            (p.recreate.clone(), p.missing.clone()),
            (vec!["demo-cp2".to_string()], vec!["demo-cp3".to_string()])
        );
        // Every VM there: agents restart as before, nothing recreated.
        let all = vms(&f, &[]);
        let p = plan(&inputs(&f, &all, "s", &listing, &usual())).unwrap();
        assert!(p.recreate.is_empty());
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::RestartAgent { .. }))
        );
        assert!(to_json(&p).find("recreate").is_none());
    }

    #[test]
    fn no_running_server_and_failed_snapshots_are_refused() {
        let f = fleet();
        let none = vms(&f, &["demo-cp1", "demo-cp2", "demo-cp3"]);
        let listing = [snap("s", "s3")];
        assert!(matches!(
            plan(&inputs(&f, &none, "s", &listing, &[])),
            Err(Refusal::NoServer { .. })
        ));
        let v = vms(&f, &[]);
        let mut failed = snap("s", "s3");
        failed.ready = false;
        assert!(matches!(
            plan(&inputs(&f, &v, "s", &[failed], &usual())),
            Err(Refusal::Failed { .. })
        ));
    }

    #[test]
    fn json_names_each_step() {
        let f = fleet();
        let v = vms(&f, &[]);
        let listing = [snap("s", "s3")];
        let p = plan(&inputs(&f, &v, "s", &listing, &usual())).unwrap();
        let j: serde_json::Value = serde_json::from_str(&to_json(&p)).unwrap();
        assert_eq!(j["reset"], "demo-cp1");
        assert_eq!(j["steps"][3]["step"], "reset");
        assert_eq!(j["steps"][4]["step"], "rejoin");
        assert!(j["snapshot"].get("token_hash").is_none());
    }

    /// Each step's script passes `bash -n` and shellcheck.
    #[test]
    fn step_scripts_lint() {
        let steps = [
            Step::Stop {
                vm: "demo-cp1".into(),
            },
            Step::Reset {
                vm: "demo-cp1".into(),
                restore_path: "etcd-snapshot-demo-cp1-1765108800".into(),
                from_s3: true,
            },
            Step::Reset {
                vm: "demo-cp1".into(),
                restore_path: format!("{LOCAL_SNAPSHOT_DIR}/on-demand-demo-cp1-1"),
                from_s3: false,
            },
            Step::Rejoin {
                vm: "demo-cp2".into(),
            },
            Step::RestartAgent {
                vm: "demo-web1".into(),
            },
            Step::RepointAgent {
                vm: "demo-web1".into(),
                join: "demo-cp1".into(),
            },
        ];
        for step in &steps {
            let script = step_script(step);
            let check = |program: &str, args: &[&str]| {
                use std::io::Write;
                let mut child = match std::process::Command::new(program)
                    .args(args)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                {
                    Ok(c) => c,
                    Err(_) if program == "shellcheck" && std::env::var_os("CI").is_none() => return,
                    Err(e) => panic!("cannot run {program}: {e}"),
                };
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(script.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{program} on {step:?}:\n{}\n{script}",
                    String::from_utf8_lossy(&out.stdout)
                );
            };
            check("bash", &["-n"]);
            check("shellcheck", &["-s", "bash", "-S", "style", "-"]);
        }
        let local = step_script(&steps[2]);
        assert!(local.contains("--etcd-s3=false"));
        assert!(!step_script(&steps[1]).contains("--etcd-s3=false"));
        assert!(step_script(&steps[3]).contains("sudo -n mv -- \"$R\"/var/lib/rancher/k3s/server/db \"$R\"/var/lib/rancher/k3s/server/db-before-restore-"));
    }

    /// [`fleet`] with its snapshots in S3.
    fn s3_fleet() -> Fleet {
        fixtures::fleet_with(
            "controlPlane:
  count: 3
pools:
  - name: web
    count: 2
etcd:
  snapshots:
    schedule: \"0 */6 * * *\"
    retention: 5
    s3:
      endpoint: s3.emulator.internal
      bucket: prod-k3s-snapshots
      folder: demo
      accessKey: {env: S3_ACCESS_KEY}
      secretKey: {env: S3_SECRET_KEY}
",
        )
    }

    fn fresh<'a>(f: &'a Fleet, vms: &'a [VmInfo], has_token: bool) -> FreshInputs<'a> {
        FreshInputs {
            fleet: f,
            vms,
            snapshot: "etcd-snapshot-demo-cp1-1765108800",
            has_token,
            token_source: ".exedev-k8s/demo/k3s-token".into(),
        }
    }

    /// Every server VM gone: all three created, the first before its
    /// reset from S3, the agents that run pointed at it.
    #[test]
    fn every_server_gone_creates_them_and_resets_the_first_from_s3() {
        let f = s3_fleet();
        let v = vms(&f, &["demo-cp1", "demo-cp2", "demo-cp3", "demo-web2"]);
        let p = plan_fresh(&fresh(&f, &v, true)).unwrap();
        assert_eq!(p.create, ["demo-cp1", "demo-cp2", "demo-cp3"]);
        assert_eq!(p.reset, "demo-cp1");
        assert_eq!(
            p.steps,
            vec![
                Step::Stop {
                    vm: "demo-cp1".into()
                },
                Step::Reset {
                    vm: "demo-cp1".into(),
                    restore_path: "etcd-snapshot-demo-cp1-1765108800".into(),
                    from_s3: true
                },
                Step::RepointAgent {
                    vm: "demo-web1".into(),
                    join: "demo-cp1".into()
                },
            ]
        );
        assert_eq!(
            p.snapshot.location,
            "s3://prod-k3s-snapshots/demo/etcd-snapshot-demo-cp1-1765108800"
        );
        insta::assert_snapshot!(render(&p));
        let j: serde_json::Value = serde_json::from_str(&to_json(&p)).unwrap();
        assert_eq!(j["create"][2], "demo-cp3");
        assert_eq!(j["steps"][2]["step"], "repoint_agent");
    }

    /// Refused before anything is created: a local snapshot went with its
    /// VM; a stopped server VM is started again, not replaced; without the
    /// token the snapshot cannot be read.
    #[test]
    fn every_server_gone_needs_s3_and_the_token() {
        let local = fleet();
        let v = vms(&local, &["demo-cp1", "demo-cp2", "demo-cp3"]);
        let e = plan_fresh(&fresh(&local, &v, true)).unwrap_err();
        assert!(matches!(e, Refusal::NoS3 { .. }), "{e}");
        assert!(e.to_string().contains("went with it"), "{e}");
        let f = s3_fleet();
        let mut stopped = vms(&f, &["demo-cp2", "demo-cp3"]);
        stopped[0].status = "stopped".into();
        let e = plan_fresh(&fresh(&f, &stopped, true)).unwrap_err();
        assert!(
            matches!(e, Refusal::NoServer { .. }),
            "a stopped server is started, not replaced: {e}"
        );
        let e = plan_fresh(&fresh(&f, &v, false)).unwrap_err();
        assert!(matches!(e, Refusal::TokenMissing { .. }), "{e}");
        assert!(
            e.to_string().contains("encrypted to the server token"),
            "{e}"
        );
    }

    /// The drill's fleet is its own: another name, one server, no agents.
    #[test]
    fn a_drill_fleet_is_a_one_server_fleet_of_its_own() {
        let live = fleet();
        let d = drill_fleet(&live).unwrap();
        assert_eq!(d.name, "demo-drill");
        let names: Vec<String> = crate::core::fleet::desired_vms(&d)
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, vec!["demo-drill-cp1".to_string()]);
        for v in vms(&live, &[]) {
            assert!(
                !crate::core::fleet::concerns(&d.name, &v.vm_name, &v.tags),
                "{}",
                v.vm_name
            );
        }
    }
}
