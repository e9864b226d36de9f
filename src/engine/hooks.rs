//! The node operations [`crate::apply`] does while it carries a plan out
//! ([`EngineOps`], its [`NodeOps`]),
//! built on the Kubernetes API ([`LazyClient`], [`crate::edges::cluster`]) and
//! SSH ([`crate::edges::remote`], [`crate::edges::upgrade`]): wait until a node is Ready
//! (bootstrap done for this boot, Node Ready, at an expected k3s release,
//! with the fleet's labels), cordon and drain before a restart, uncordon
//! after, set labels and taints, change k3s in place, drain and remove a
//! node before its VM goes, log a device out of the tailnet.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{HookError, NodeOps, NotInFleet, Pending, StepSink};
use crate::base::secret::Secret;
use crate::core::fleet::Fleet;
use crate::edges::cluster::DrainOptions;
use crate::edges::kubeaccess::LazyClient;

/// What a hook itself finds wrong (the edges' own errors pass through
/// [`HookError`] as they are).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The kubelet did not report the release in time.
    #[error("its node was not Ready at k3s {version} within {secs}s (last seen: {seen})")]
    NotAtRelease {
        version: String,
        secs: u64,
        seen: String,
    },
    /// The apply's `--timeout` ran out while waiting on the node.
    #[error("the apply's --timeout ran out while waiting for it to be a ready node")]
    OutOfTime,
    /// A lost server's Node, deleted, was still there when the wait ended:
    /// k3s had not removed its etcd member (it holds the Node until then).
    #[error(
        "its node was deleted but was still there after {secs}s: k3s removes a deleted server's etcd member before the node goes, and had not yet"
    )]
    MemberKept { secs: u64 },
    /// A device on the tailnet still holds a gone lost server's name.
    #[error(
        "a Tailscale device named {vm} is still on the tailnet (in {from}'s tailnet map); the gone VM's device cannot be logged out, and a new VM would become {vm}-1"
    )]
    NameHeld { vm: String, from: String },
}

impl crate::base::hint::Hint for NodeError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            NodeError::NotAtRelease { .. } => {
                "check `journalctl -u k3s` (servers) or `journalctl -u k3s-agent` on the VM".into()
            }
            NodeError::OutOfTime => {
                "`exedev-k8s status` shows what it is doing; re-run apply (with a longer --timeout) to converge".into()
            }
            NodeError::NameHeld { vm, .. } => format!(
                "remove device {vm} in the Tailscale admin console (or through the Tailscale API: see README, \"Removing a VM takes its device off the tailnet first\"), then re-run apply"
            ),
            NodeError::MemberKept { .. } => {
                "look for \"Removing etcd member\" in `journalctl -u k3s` on a healthy server (k3s's etcd member controller runs on the leader); etcd refuses a removal without quorum".into()
            }
        })
    }
}

/// Which node operations a run does; the others are "nothing to do".
#[derive(Debug, Clone, Copy, Default)]
pub struct Does {
    /// Wait for each new, restarted or changed node to be Ready.
    pub wait_ready: bool,
    /// Drain and delete a node before its VM goes.
    pub remove: bool,
    /// Delete a lost server's Node (no drain) and wait until it is gone.
    pub forget: bool,
    /// Cordon and drain a node before it restarts in place.
    pub drain: bool,
    /// Uncordon a node Ready again.
    pub uncordon: bool,
    /// Set labels and taints through the API.
    pub label: bool,
    /// Change k3s over SSH.
    pub change: bool,
    /// Log the Tailscale device out before `rm`.
    pub logout: bool,
}

/// The engine's node operations: the Kubernetes API through a lazily
/// connected client, SSH with the run's key; every wait ends by the
/// apply's deadline.
pub struct EngineOps {
    kube: Arc<LazyClient>,
    fleet: Fleet,
    ssh: crate::edges::ssh::SshOptions,
    drain: DrainOptions,
    deadline: tokio::time::Instant,
    /// At most this long for one change over SSH.
    change_timeout: Duration,
    does: Does,
}

impl EngineOps {
    pub fn new(
        kube: Arc<LazyClient>,
        fleet: &Fleet,
        ssh_key: Option<&Path>,
        drain: DrainOptions,
        deadline: tokio::time::Instant,
        change_timeout: Duration,
        does: Does,
    ) -> EngineOps {
        EngineOps {
            kube,
            fleet: fleet.clone(),
            ssh: ssh(ssh_key),
            drain,
            deadline,
            change_timeout,
            does,
        }
    }
}

impl NodeOps for EngineOps {
    fn wait_ready<'a>(
        &'a self,
        vm: &'a str,
        version: Option<&'a str>,
        steps: StepSink,
    ) -> Option<Pending<'a>> {
        self.does
            .wait_ready
            .then(|| Box::pin(self.node_ready(vm, version, steps)) as Pending)
    }

    /// Drains and deletes a node before its VM is deleted or replaced.
    fn remove<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        self.does.remove.then(|| {
            Box::pin(async move {
                let client = self.kube.get().await.map_err(HookError::new)?;
                match crate::edges::cluster::remove_node(&client, vm, self.drain).await {
                    Ok(crate::edges::cluster::RemoveOutcome::Removed(r)) => Ok(format!(
                        "node removed ({} pods evicted, {} deleted)",
                        r.evicted.len(),
                        r.deleted.len()
                    )),
                    Ok(crate::edges::cluster::RemoveOutcome::AlreadyGone) => {
                        Ok("no node to remove".into())
                    }
                    Err(e) => Err(HookError::new(e)),
                }
            }) as Pending
        })
    }

    /// Deletes a lost server's Node and waits, by the apply's deadline,
    /// until k3s has removed its etcd member and let the Node go.
    fn forget<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        self.does.forget.then(|| {
            Box::pin(async move {
                let client = self.kube.get().await.map_err(HookError::new)?;
                let left = self
                    .deadline
                    .saturating_duration_since(tokio::time::Instant::now());
                let gone = crate::edges::cluster::forget_node(&client, vm, left)
                    .await
                    .map_err(HookError::new)?;
                if !gone {
                    return Err(HookError::hinted(NodeError::MemberKept {
                        secs: left.as_secs(),
                    }));
                }
                Ok("node deleted and gone: its etcd member is removed".to_string())
            }) as Pending
        })
    }

    /// Reads the tailnet map of the server the API goes through (over SSH,
    /// `tailscale status --json`, whose `Peer` lists offline devices too):
    /// a device still named `vm` stops the replacement. A map that cannot
    /// be read is said and not fatal: the new VM's setup script checks its
    /// own name and stops with the same advice.
    fn name_free<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        self.does.forget.then(|| {
            Box::pin(async move {
                let from = self.kube.via().to_string();
                let read = crate::edges::remote::read_tailnet_identities(
                    std::slice::from_ref(&from),
                    &self.ssh,
                    1,
                    Duration::from_secs(30),
                )
                .await;
                match read.into_iter().next().map(|(_, r)| r) {
                    Some(Ok(id)) if id.peers.contains_key(vm) => {
                        Err(HookError::hinted(NodeError::NameHeld {
                            vm: vm.to_string(),
                            from,
                        }))
                    }
                    Some(Ok(_)) => Ok(format!("no device holds the name (seen from {from})")),
                    Some(Err(why)) => Ok(format!(
                        "could not read the tailnet map on {from} ({}): the new VM's setup script checks its own name",
                        crate::base::text::one_line(&why)
                    )),
                    None => Ok(format!("could not read the tailnet map on {from}")),
                }
            }) as Pending
        })
    }

    /// Cordons and drains a node (PodDisruptionBudgets respected, bounded
    /// by the drain timeout) before it restarts in place. A node that is
    /// not registered has nothing to drain.
    fn drain<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        self.does.drain.then(|| {
            Box::pin(async move {
                let client = self.kube.get().await.map_err(HookError::new)?;
                let Some(r) = crate::edges::cluster::cordon_and_drain(&client, vm, self.drain)
                    .await
                    .map_err(HookError::new)?
                else {
                    return Ok("no node to drain".to_string());
                };
                Ok(format!(
                    "cordoned and drained ({} pods evicted, {} deleted)",
                    r.evicted.len(),
                    r.deleted.len()
                ))
            }) as Pending
        })
    }

    /// Uncordons a node once it is Ready again.
    fn uncordon<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        self.does.uncordon.then(|| {
            Box::pin(async move {
                let client = self.kube.get().await.map_err(HookError::new)?;
                crate::edges::cluster::uncordon(&client, vm)
                    .await
                    .map_err(HookError::new)?;
                Ok("uncordoned".to_string())
            }) as Pending
        })
    }

    /// Sets the fleet's labels and taints on a node by server-side apply.
    fn label<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        self.does.label.then(|| {
            Box::pin(async move {
                let d = crate::core::plan::placement::desired_named(&self.fleet, vm)
                    .ok_or_else(|| HookError::hinted(NotInFleet { vm: vm.to_string() }))?;
                let client = self.kube.get().await.map_err(HookError::new)?;
                let removed = crate::edges::cluster::apply_labels_taints(&client, &d)
                    .await
                    .map_err(HookError::new)?;
                Ok(if removed.is_empty() {
                    "labels and taints set".to_string()
                } else {
                    format!(
                        "labels and taints set (removed taints: {})",
                        crate::base::text::one_line(&removed.join(", "))
                    )
                })
            }) as Pending
        })
    }

    /// Runs an in-place change script on a node over SSH, at most the
    /// change timeout and never past the apply's deadline. A connection
    /// that fails is retried once: the script is idempotent.
    fn change<'a>(&'a self, vm: &'a str, script: Secret) -> Option<Pending<'a>> {
        self.does.change.then(|| {
            let left = self
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            let timeout = self.change_timeout.min(left);
            Box::pin(async move {
                crate::edges::upgrade::change_node(vm, &script, &self.ssh, timeout)
                    .await
                    .map_err(HookError::hinted)
            }) as Pending
        })
    }

    /// Logs the VM's Tailscale device out over SSH before its `rm`:
    /// bounded, and its failure only reported.
    fn logout<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        self.does.logout.then(|| {
            Box::pin(async move {
                crate::edges::remote::tailscale_logout(vm, &self.ssh, Duration::from_secs(30))
                    .await
                    .map_err(HookError::new)
            }) as Pending
        })
    }
}

/// How long after the apply's deadline [`node_ready`]'s outer bound
/// fires: its own steps end by the deadline and say why; this one is for
/// an API call between them that hangs.
const OUTER_GRACE: Duration = Duration::from_secs(5);

/// How often readiness is polled once the first quick looks are over.
const POLL: Duration = Duration::from_secs(3);

/// How often a server's readiness is polled: servers change one at a time,
/// so each poll interval is spent on the critical path of the whole apply
/// (with 3 s, up to 3 s per server; `cargo bench --bench world`), while a
/// one-per-second look at the one server in flight costs little. Agents,
/// waited on many at once and off that path, keep [`POLL`].
const SERVER_POLL: Duration = Duration::from_secs(1);

fn poll_for(expected: &[crate::core::fleet::DesiredVm]) -> Duration {
    if expected
        .iter()
        .any(|d| d.role == crate::core::fleet::Role::Server)
    {
        SERVER_POLL
    } else {
        POLL
    }
}

fn ssh(ssh_key: Option<&Path>) -> crate::edges::ssh::SshOptions {
    crate::edges::remote::quick(crate::edges::ssh::SshOptions::new(
        ssh_key.map(Path::to_path_buf),
    ))
}

impl EngineOps {
    /// Waits until a node is a ready member: first its setup script's state
    /// over SSH (works before any API exists: the first server of a new
    /// cluster), `done` for this boot meaning k3s active (and `/readyz` ok
    /// on servers); then, when the API is reachable, its Node Ready, at
    /// `version` when given (an in-place upgrade is not done until the
    /// kubelet reports it), with the fleet's labels the kubelet could not
    /// set applied through the API.
    async fn node_ready(
        &self,
        vm: &str,
        version: Option<&str>,
        steps: StepSink,
    ) -> Result<String, HookError> {
        let expected: Vec<_> = crate::core::plan::placement::desired_named(&self.fleet, vm)
            .into_iter()
            .collect();
        let poll = poll_for(&expected);
        let deadline = self.deadline;
        let left = move || deadline.saturating_duration_since(tokio::time::Instant::now());
        // Every step below is bounded by what is left; this outer bound
        // also covers the API calls between them.
        let wait = async {
            crate::edges::remote::wait_bootstrapped(vm, &self.ssh, left(), poll, |s| {
                steps(s.to_string())
            })
            .await
            .map_err(HookError::new)?;
            steps("bootstrap done (k3s active)".to_string());
            let client = match self.kube.get().await {
                Ok(c) => c,
                Err(why) => {
                    return Ok(format!(
                        "bootstrap done; the Kubernetes API is not reachable from here ({why}): relying on the VM's own readiness checks"
                    ));
                }
            };
            let r = crate::edges::cluster::wait_ready(&client, &expected, left(), poll, |_| {})
                .await
                .map_err(HookError::new)?;
            let mut outcome = "node Ready".to_string();
            if let Some(want) = version {
                wait_version(&client, vm, want, left())
                    .await
                    .map_err(HookError::hinted)?;
                outcome = format!("node Ready at k3s {want}");
            }
            for n in r.drifted() {
                if let Some(d) = expected.iter().find(|d| d.name == n.name) {
                    crate::edges::cluster::apply_labels_taints(&client, d)
                        .await
                        .map_err(HookError::new)?;
                    outcome.push_str("; labels and taints applied through the API");
                }
            }
            Ok(outcome)
        };
        // The steps end by the deadline themselves, each naming what it
        // waited for; this bound, a moment later, only catches a call
        // between them that would not end.
        match tokio::time::timeout_at(deadline + OUTER_GRACE, wait).await {
            Ok(r) => r,
            Err(_) => Err(HookError::hinted(NodeError::OutOfTime)),
        }
    }
}

/// Polls until `vm`'s Node is Ready and its kubelet reports `version`.
async fn wait_version(
    client: &kube::Client,
    vm: &str,
    version: &str,
    timeout: Duration,
) -> Result<(), NodeError> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let seen = match crate::edges::cluster::list_nodes(client).await {
            Ok(nodes) => match nodes.iter().find(|n| n.name == vm) {
                Some(n) if n.ready && n.kubelet_version.as_deref() == Some(version) => {
                    return Ok(());
                }
                Some(n) => format!(
                    "Ready={} at {}",
                    n.ready,
                    n.kubelet_version.as_deref().unwrap_or("an unknown release")
                ),
                None => "not registered".to_string(),
            },
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(NodeError::NotAtRelease {
                version: version.to_string(),
                secs: timeout.as_secs(),
                seen,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(POLL);
    }
}
