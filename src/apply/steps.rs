//! The steps of one VM's change that talk to exe.dev or wait on a node:
//! create (settling a `new` whose outcome is unknown by re-reading `ls`),
//! wait until running, wait until Ready, take a node out, log its device
//! out, delete; and the one table of in-place ops ([`phase`]).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::core::api::retry::outcome_unknown;
use crate::core::fleet::{DesiredVm, Fleet};
use crate::core::plan::spec::{self, ClusterSecrets};
use crate::core::plan::{Op, placement};
use crate::edges::client::{Client, RmOutcome};

use super::ApplyOptions;
use super::error::{NotInFleet, StepError};
use super::events::{Event, Reporter};
use super::ops::{HookError, Pending, StepSink};

/// What every step of one apply shares. Owned, so each agent's change can
/// run as its own task.
pub(super) struct Ctx {
    pub client: Client,
    pub fleet: Fleet,
    pub secrets: ClusterSecrets,
    /// The plan's k3s release: what new nodes install and in-place changes
    /// upgrade to.
    pub version: String,
    pub opts: ApplyOptions,
    pub report: Reporter,
    /// Set when a disruptive change failed: the roll stops there.
    pub halted: AtomicBool,
    /// Owned servers that are up right now (join targets): starts as the
    /// observed running servers, loses each one deleted, gains each one
    /// created once it is ready.
    pub alive_servers: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    /// The server a new node joins: the lowest-named server that is up,
    /// other than the node itself.
    fn join_target(&self, vm: &str) -> Option<String> {
        let alive = self.alive_servers.lock().unwrap_or_else(|p| p.into_inner());
        alive.iter().filter(|s| *s != vm).min().cloned()
    }

    pub fn desired(&self, vm: &str) -> Result<DesiredVm, StepError> {
        placement::desired_named(&self.fleet, vm)
            .ok_or_else(|| NotInFleet { vm: vm.to_string() }.into())
    }

    pub fn has_alive_server(&self) -> bool {
        !self
            .alive_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Counts `vm` as a join target (a server Ready again or new).
    pub fn server_up(&self, vm: &str) {
        let mut alive = self.alive_servers.lock().unwrap_or_else(|p| p.into_inner());
        if !alive.iter().any(|s| s == vm) {
            alive.push(vm.to_string());
        }
    }
}

/// Where an in-place op belongs in a change: the one table of the ops
/// (a new op is placed here, and the compiler asks for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase<'a> {
    /// An exe.dev call that restarts nothing (tags, sharing): made first,
    /// and after a create.
    Before(Call<'a>),
    /// An exe.dev call that restarts the VM (a resize): made with the node
    /// drained, after any k3s change, then waited on until running.
    Restart(Call<'a>),
    /// A k3s change, one script over SSH (restarts k3s; drained around it).
    K3s,
    /// Labels and taints through the API, once the node is back.
    Labels,
    /// The VM's new comment, written last.
    Comment(&'a str),
}

/// One exe.dev call of an in-place op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call<'a> {
    Resize {
        cpu: Option<u32>,
        memory: &'a Option<String>,
        disk: &'a Option<String>,
    },
    Tag(&'a [String]),
    Untag(&'a [String]),
    SharePort(u16),
    Visibility(bool),
}

/// Where `op` belongs ([`Phase`]). [`Op::changes_k3s`], which the plan
/// uses, agrees with [`Phase::K3s`] (tested below).
pub(super) fn phase(op: &Op) -> Phase<'_> {
    match op {
        Op::Resize { cpu, memory, disk } => Phase::Restart(Call::Resize {
            cpu: *cpu,
            memory,
            disk,
        }),
        Op::AddTags { tags } => Phase::Before(Call::Tag(tags)),
        Op::RemoveTags { tags } => Phase::Before(Call::Untag(tags)),
        Op::SharePort { port } => Phase::Before(Call::SharePort(*port)),
        Op::ShareVisibility { public } => Phase::Before(Call::Visibility(*public)),
        Op::Upgrade { .. } | Op::Reconfigure { .. } => Phase::K3s,
        Op::NodeLabels => Phase::Labels,
        Op::Comment { comment } => Phase::Comment(comment),
    }
}

/// Makes one exe.dev call, said as a step.
pub(super) async fn call(ctx: &Ctx, vm: &str, call: Call<'_>) -> Result<(), StepError> {
    match call {
        Call::Resize { cpu, memory, disk } => {
            step(ctx, vm, "resize");
            ctx.client
                .resize(vm, cpu, memory.clone(), disk.clone())
                .await?;
        }
        Call::Tag(tags) => {
            step(ctx, vm, "tag");
            ctx.client.tag(vm, tags.to_vec()).await?;
        }
        Call::Untag(tags) => {
            step(ctx, vm, "tag -d");
            ctx.client.untag(vm, tags.to_vec()).await?;
        }
        Call::SharePort(port) => {
            step(ctx, vm, format!("share port {port}"));
            ctx.client.share_port(vm, port).await?;
        }
        Call::Visibility(public) => {
            step(
                ctx,
                vm,
                if public {
                    "share set-public"
                } else {
                    "share set-private"
                },
            );
            ctx.client.share_visibility(vm, public).await?;
        }
    }
    Ok(())
}

pub(super) fn step(ctx: &Ctx, vm: &str, s: impl Into<String>) {
    (ctx.report)(Event::Step {
        vm: vm.into(),
        step: s.into(),
    });
}

/// Runs a node operation when this run has one, said as steps; its
/// absence is said once as a step (`without`).
pub(super) async fn node_op(
    ctx: &Ctx,
    vm: &str,
    op: Option<Pending<'_>>,
    doing: &str,
    without: &str,
) -> Result<(), HookError> {
    match op {
        Some(pending) => {
            step(ctx, vm, doing);
            let outcome = pending.await?;
            step(ctx, vm, outcome);
        }
        None => step(ctx, vm, without),
    }
    Ok(())
}

/// Cordons, drains and deletes the VM's Node when this run can; a failure
/// stops the change before any VM is touched.
pub(super) async fn remove_node(ctx: &Ctx, vm: &str) -> Result<(), StepError> {
    let Some(remove) = ctx.opts.ops.remove(vm) else {
        return Ok(());
    };
    step(ctx, vm, "cordon + drain + delete node");
    let outcome = remove.await.map_err(|source| StepError::NodeRemoval {
        vm: vm.to_string(),
        source,
    })?;
    step(ctx, vm, outcome);
    Ok(())
}

/// Removes a lost server's dead etcd member, or a lost agent's stale Node
/// (whose node-password Secret would make k3s refuse the new VM,
/// `docs/facts/node-password.md`): its Node deleted (no drain) and waited
/// on until gone. Required: without the API nothing else removes either,
/// and a new VM beside a dead member would make one member more than the
/// fleet declares.
pub(super) async fn forget_node(ctx: &Ctx, vm: &str, is_server: bool) -> Result<(), StepError> {
    let Some(forget) = ctx.opts.ops.forget(vm) else {
        return Err(StepError::LostNeedsApi { vm: vm.to_string() });
    };
    step(
        ctx,
        vm,
        if is_server {
            "delete node (removes its etcd member), wait until gone"
        } else {
            "delete its stale node (its node password goes with it), wait until gone"
        },
    );
    let outcome = forget.await.map_err(|source| StepError::MemberNotRemoved {
        vm: vm.to_string(),
        source,
    })?;
    // The hook's own words are a server's (its etcd member).
    step(
        ctx,
        vm,
        if is_server {
            outcome
        } else {
            "node deleted and gone".into()
        },
    );
    Ok(())
}

/// Checks that no tailnet device holds a gone lost server's name, when this
/// run can; a device that does stops the replacement before any change.
pub(super) async fn name_free(ctx: &Ctx, vm: &str) -> Result<(), StepError> {
    let Some(check) = ctx.opts.ops.name_free(vm) else {
        return Ok(());
    };
    step(ctx, vm, "is its name free on the tailnet?");
    let outcome = check.await.map_err(|source| StepError::NameHeld {
        vm: vm.to_string(),
        source,
    })?;
    step(ctx, vm, outcome);
    Ok(())
}

/// Waits for the node to be Ready (at `version` when given), when this run
/// can; the wait's own progress lines are steps of the VM.
pub(super) async fn node_ready(
    ctx: &Ctx,
    vm: &str,
    version: Option<&str>,
) -> Result<(), StepError> {
    let report = ctx.report.clone();
    let name = vm.to_string();
    let sink: StepSink = Arc::new(move |s: String| {
        report(Event::Step {
            vm: name.clone(),
            step: s,
        })
    });
    let Some(wait) = ctx.opts.ops.wait_ready(vm, version, sink) else {
        return Ok(());
    };
    step(
        ctx,
        vm,
        match version {
            Some(v) => format!("waiting for its node to be Ready at k3s {v}"),
            None => "waiting for its bootstrap, then for the node to be Ready".to_string(),
        },
    );
    let outcome = wait.await.map_err(|source| StepError::NotReady {
        vm: vm.to_string(),
        source,
    })?;
    step(ctx, vm, outcome);
    Ok(())
}

/// `adopt_existing`: a "name not available" answer counts as done when the
/// VM carries our ownership tag (an interrupted earlier run created it);
/// never for a replacement, whose old VM was just deleted.
pub(super) async fn create(
    ctx: &Ctx,
    name: &str,
    ops: &[Op],
    is_server: bool,
    adopt_existing: bool,
) -> Result<(), StepError> {
    let d = ctx.desired(name)?;
    // Every joiner contacts a server that is up now. A (re)created first
    // server joins one that still holds the cluster, if any, instead of
    // initialising a second, empty cluster.
    let join_via = ctx.join_target(&d.name);
    let spec = spec::new_vm(
        &ctx.fleet,
        &d,
        &ctx.secrets,
        join_via.as_deref(),
        &ctx.version,
    )?;
    step(ctx, name, "new");
    match ctx.client.new_vm(spec.clone()).await {
        Ok(_) => {}
        Err(e) if outcome_unknown(&e) => {
            step(
                ctx,
                name,
                format!("outcome unknown ({}): re-reading ls", e.kind_name()),
            );
            settle_new(ctx, name, spec).await?;
        }
        Err(e)
            if adopt_existing
                && e.message.contains("not available")
                && owned_exists(ctx, name).await? =>
        {
            // A previous, interrupted run created it: converge, don't duplicate.
            step(ctx, name, "already created by an earlier run");
        }
        Err(e) => return Err(e.into()),
    }
    if is_server {
        wait_running(ctx, name).await?;
        let settles = spec::settles_after_boot(&ctx.fleet, d.role);
        let early = settles && push_before_start(ctx, &d).await?;
        node_ready(ctx, name, Some(&ctx.version)).await?;
        if early {
            step(ctx, name, "comment");
            let comment = spec::comment_for(&ctx.fleet, &d, Some(&ctx.version));
            ctx.client.comment(name, &comment).await?;
        } else if settles {
            settle_after_boot(ctx, &d).await?;
        }
        ctx.alive_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
    }
    // The exe.dev settings a new VM takes after `new` (sharing, tags).
    for op in ops {
        if let Phase::Before(c) | Phase::Restart(c) = phase(op) {
            call(ctx, name, c).await?;
        }
    }
    Ok(())
}

/// How long apply tries to write a new server's settings before k3s first
/// starts (SSH's own connection retries included): well under the setup
/// script's 3-minute wait for them (`templates/common.sh.tera`), so a
/// write that lands is one the script still waits for.
const BEFORE_START_BOUND: Duration = Duration::from_secs(60);

/// Writes a new server's etcd snapshot settings over SSH while its setup
/// script waits for them before k3s first starts, so k3s starts once with
/// them (no restart after Ready). `false` (said as a step) when that could
/// not be done: no SSH on this run, SSH not answering within
/// [`BEFORE_START_BOUND`], or the script already past its wait; the
/// caller then gives them with a restart ([`settle_after_boot`]). If
/// apply dies here, the setup script's own bound lets k3s start without
/// them and the next plan shows them.
async fn push_before_start(ctx: &Ctx, d: &DesiredVm) -> Result<bool, StepError> {
    let vm = d.name.as_str();
    let script = spec::before_start_script(&ctx.fleet, d, &ctx.secrets, &ctx.version)?;
    let Some(change) = ctx.opts.ops.change(vm, script) else {
        return Ok(false);
    };
    step(
        ctx,
        vm,
        "etcd snapshot settings over SSH before k3s first starts",
    );
    let why = match tokio::time::timeout(BEFORE_START_BOUND, change).await {
        Ok(Ok(_)) => {
            step(
                ctx,
                vm,
                "etcd snapshot settings in place: k3s starts once, with them",
            );
            return Ok(true);
        }
        Ok(Err(e)) => crate::base::text::one_line(&e.to_string()).into_owned(),
        Err(_) => format!("no answer within {} s", BEFORE_START_BOUND.as_secs()),
    };
    step(
        ctx,
        vm,
        format!(
            "settings not written before k3s started ({why}): given after Ready with a restart"
        ),
    );
    Ok(false)
}

/// The settings a new server's setup script leaves out (the etcd
/// snapshot settings: no room under 10 KiB), when they could not be
/// written before k3s first started ([`push_before_start`]), given now, as any k3s change
/// in place: the change script over SSH, Ready again, then the comment
/// that records them (until then it records what the VM booted with, so
/// a failure here shows in the next plan as a k3s change). Without
/// [`ApplyOptions::settle_restart`](super::ApplyOptions::settle_restart)
/// the settings are only written, for the restart the caller makes right
/// after (restore's reset); the comment then records them already, and
/// the drop-in holding them is on disk for any later start.
async fn settle_after_boot(ctx: &Ctx, d: &DesiredVm) -> Result<(), StepError> {
    let vm = d.name.as_str();
    let restart = ctx.opts.settle_restart;
    let script = if restart {
        spec::change_script(&ctx.fleet, d, &ctx.secrets, &ctx.version)?
    } else {
        spec::settings_script(&ctx.fleet, d, &ctx.secrets, &ctx.version)?
    };
    let change = ctx
        .opts
        .ops
        .change(vm, script)
        .ok_or_else(|| StepError::NeedsSsh { vm: vm.to_string() })?;
    step(
        ctx,
        vm,
        if restart {
            "etcd snapshot settings over SSH (restarts k3s)"
        } else {
            "etcd snapshot settings over SSH (for k3s's next start: the caller restarts it)"
        },
    );
    let outcome = change.await.map_err(|source| StepError::Change {
        vm: vm.to_string(),
        source,
    })?;
    step(ctx, vm, outcome);
    if restart {
        node_ready(ctx, vm, Some(&ctx.version)).await?;
    }
    step(ctx, vm, "comment");
    let comment = spec::comment_for(&ctx.fleet, d, Some(&ctx.version));
    ctx.client.comment(vm, &comment).await?;
    Ok(())
}

/// After a `new` with unknown outcome: look before re-sending.
async fn settle_new(ctx: &Ctx, vm: &str, spec: crate::core::api::NewVm) -> Result<(), StepError> {
    for _ in 0..ctx.opts.settle_reads.max(1) {
        if owned_exists(ctx, vm).await? {
            step(ctx, vm, "settled: the VM exists");
            return Ok(());
        }
        tokio::time::sleep(ctx.opts.settle_delay).await;
    }
    step(ctx, vm, "settled: the VM does not exist; sending new again");
    match ctx.client.new_vm(spec.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if e.message.contains("not available") && owned_exists(ctx, vm).await? => Ok(()),
        Err(e) if outcome_unknown(&e) => {
            if owned_exists(ctx, vm).await? {
                Ok(())
            } else {
                Err(StepError::UnknownOutcome {
                    vm: vm.to_string(),
                    source: e,
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `vm` exists and is owned by this fleet (tag, name and spec
/// comment). A VM of that name without them is an error: never adopted.
async fn owned_exists(ctx: &Ctx, vm: &str) -> Result<bool, StepError> {
    let vms = ctx.client.ls(Some(vm)).await?;
    let cluster = &ctx.fleet.name;
    match vms.iter().find(|v| v.vm_name == vm) {
        None => Ok(false),
        Some(v) if crate::core::plan::owned(cluster, v) => Ok(true),
        Some(_) => Err(StepError::NotOwned {
            vm: vm.to_string(),
            cluster: cluster.clone(),
        }),
    }
}

pub(super) async fn wait_running(ctx: &Ctx, vm: &str) -> Result<(), StepError> {
    step(ctx, vm, "waiting for running");
    let deadline = Instant::now() + ctx.opts.server_boot_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let vms = ctx.client.ls(Some(vm)).await?;
        if vms.iter().any(|v| v.vm_name == vm && v.is_running()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StepError::NotRunning {
                vm: vm.to_string(),
                after: ctx.opts.server_boot_timeout,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}

/// Logs the VM's Tailscale device out, when this run can. Never fails the
/// change: a VM that cannot be reached (stopped, never joined) is deleted
/// anyway, and the report says what to clean up by hand.
async fn logout(ctx: &Ctx, vm: &str) {
    let Some(logout) = ctx.opts.ops.logout(vm) else {
        return;
    };
    step(ctx, vm, "tailscale logout");
    let outcome = match logout.await {
        Ok(done) => done,
        Err(e) => format!(
            "could not log the Tailscale device out ({e}); if it joined the tailnet, remove device {vm} in the Tailscale admin console or through its API"
        ),
    };
    step(ctx, vm, outcome);
}

pub(super) async fn delete(ctx: &Ctx, vm: &str) -> Result<(), StepError> {
    // No longer a join target from here on.
    ctx.alive_servers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|s| s != vm);
    logout(ctx, vm).await;
    step(ctx, vm, "rm");
    match ctx.client.rm(vm).await {
        Ok(RmOutcome::Deleted | RmOutcome::NotFound) => {}
        Err(e) if outcome_unknown(&e) => {
            step(ctx, vm, "outcome unknown: re-reading ls");
            if owned_exists(ctx, vm).await? {
                ctx.client.rm(vm).await?;
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan's `Op::changes_k3s` (which decides restarts and secrets)
    /// and apply's table agree on every op.
    #[test]
    fn the_table_and_the_plan_agree_on_k3s_changes() {
        let ops = [
            Op::Resize {
                cpu: Some(2),
                memory: None,
                disk: None,
            },
            Op::AddTags { tags: vec![] },
            Op::RemoveTags { tags: vec![] },
            Op::SharePort { port: 80 },
            Op::ShareVisibility { public: true },
            Op::Upgrade {
                from: "a".into(),
                to: "b".into(),
            },
            Op::Reconfigure {
                before: None,
                after: "x".into(),
            },
            Op::NodeLabels,
            Op::Comment {
                comment: "c".into(),
            },
        ];
        for op in &ops {
            assert_eq!(phase(op) == Phase::K3s, op.changes_k3s(), "{op:?}");
        }
    }
}
