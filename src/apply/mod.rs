//! Carries a plan out against exe.dev: servers one at a time (each a ready
//! member before the next: etcd joins one learner at a time), agents in
//! parallel (bounded), every `new` whose outcome is unknown settled by
//! re-reading `ls` instead of re-sending blindly.
//!
//! On a new cluster, agents start as soon as the first server is ready, in
//! parallel with the remaining server joins; otherwise after every server
//! change. Every joiner is pointed at a server that is up at that moment.
//! Before a VM is deleted its Tailscale device is logged out (bounded, never
//! blocking), so a replacement gets the same MagicDNS name.
//!
//! The executor reports through [`Event`]s; the terminal edge turns them into
//! progress bars, plain lines or JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::ApiError;
use crate::api::retry::outcome_unknown;
use crate::client::{Client, RmOutcome};
use crate::fleet::{self, DesiredVm, Fleet, Role};
use crate::plan::spec::{self, ClusterSecrets};
use crate::plan::{Action, Change, Op, Plan};

/// What happened to one VM, as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        vm: String,
        action: Action,
    },
    Step {
        vm: String,
        step: String,
    },
    Done {
        vm: String,
        action: Action,
        seconds: f64,
    },
    Failed {
        vm: String,
        action: Action,
        error: String,
    },
    Skipped {
        vm: String,
        action: Action,
        reason: String,
    },
}

/// Receives events; must be cheap and thread-safe.
pub type Reporter = Arc<dyn Fn(Event) + Send + Sync>;

/// Why a hook (drain, readiness wait, device logout) failed: the error of
/// the edge that ran it (SSH, the Kubernetes API), kept whole so its source
/// chain and hint reach the user.
#[derive(Debug)]
pub struct HookError {
    inner: Box<dyn std::error::Error + Send + Sync>,
    hint: Option<String>,
}

impl HookError {
    /// Wraps an edge's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> HookError {
        HookError {
            inner: Box::new(e),
            hint: None,
        }
    }

    /// Wraps an error that says what to do.
    pub fn hinted(
        e: impl std::error::Error + crate::hint::Hint + Send + Sync + 'static,
    ) -> HookError {
        let hint = e.hint();
        HookError {
            inner: Box::new(e),
            hint,
        }
    }
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl crate::hint::Hint for HookError {
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// What a hook returns: the outcome to show as a step, or why it failed.
pub type HookFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, HookError>> + Send>>;

/// Takes a node out of the cluster before its VM is removed (cordon, drain,
/// delete the Node and so its etcd member); supplied by the engine when the
/// Kubernetes API is reachable.
pub type NodeRemover = Arc<dyn Fn(String) -> HookFuture + Send + Sync>;

/// Receives progress lines of a long wait (shown as steps of the VM).
pub type StepSink = Arc<dyn Fn(String) + Send + Sync>;

/// Waits until a server just created or resized is a ready member of the
/// cluster (its bootstrap done, then its Node Ready when the API is
/// reachable), so that servers change strictly one at a time (etcd joins one
/// learner at a time; a restart must not overlap another).
pub type ServerReady = Arc<dyn Fn(String, StepSink) -> HookFuture + Send + Sync>;

/// Logs a VM's Tailscale device out before the VM is deleted, so its
/// MagicDNS name is free for a replacement (otherwise the replacement
/// becomes `<name>-1` and the old name points at a dead device). Must be
/// bounded in time; its failure is reported, never fatal.
pub type DeviceLogout = NodeRemover;

/// How apply runs.
#[derive(Clone)]
pub struct ApplyOptions {
    /// Waits for a server's Node to be Ready before the next server change.
    pub server_ready: Option<ServerReady>,
    /// Drains and deletes a node before its VM is deleted or replaced (not
    /// used by destroy: nothing would be left to move pods to).
    pub remover: Option<NodeRemover>,
    /// Logs the VM's Tailscale device out before `rm` (apply and destroy).
    pub logout: Option<DeviceLogout>,
    /// Agents changed at once.
    pub parallelism: usize,
    /// How long to wait for a server to be `running` before the next.
    pub server_boot_timeout: Duration,
    /// Reads of `ls` before concluding an unknown `new` did not happen.
    pub settle_reads: u32,
    pub settle_delay: Duration,
    /// Set to stop starting new work (Ctrl-C).
    pub cancel: Arc<AtomicBool>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            server_ready: None,
            remover: None,
            logout: None,
            parallelism: 16,
            server_boot_timeout: Duration::from_secs(300),
            settle_reads: 3,
            settle_delay: Duration::from_millis(700),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A change carried out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Done {
    pub vm: String,
    pub action: Action,
}

/// A change that failed, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failed {
    pub vm: String,
    pub action: Action,
    pub error: String,
}

/// A change not started, and why (interrupted, or an earlier server failed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub vm: String,
    pub action: Action,
    pub reason: String,
}

/// The outcome of an apply.
#[derive(Debug, Default, Serialize)]
pub struct ApplyReport {
    pub done: Vec<Done>,
    pub failed: Vec<Failed>,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// Why one VM's change failed. Reported with its hint
/// ([`crate::hint::describe`]).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Script(#[from] crate::bootstrap::BootstrapError),
    #[error("{vm}: could not take the node out of the cluster, so its VM was left alone: {source}")]
    NodeRemoval { vm: String, source: HookError },
    #[error("{vm} did not become a Ready node: {source}")]
    NotReady { vm: String, source: HookError },
    #[error("{vm} is not in the fleet any more")]
    NotInFleet { vm: String },
    #[error(
        "`new --name={vm}` failed twice with an unknown outcome and the VM is not listed: {source}"
    )]
    UnknownOutcome { vm: String, source: ApiError },
    #[error(
        "{vm} exists but is not owned by fleet {cluster:?} (it lacks the ownership tag or the spec comment): refusing to touch it"
    )]
    NotOwned { vm: String, cluster: String },
    #[error("{vm} was not running after {after:?}")]
    NotRunning { vm: String, after: Duration },
}

impl crate::hint::Hint for StepError {
    fn hint(&self) -> Option<String> {
        match self {
            StepError::Api(e) => e.hint(),
            StepError::Script(_) => None,
            StepError::NodeRemoval { source, .. } | StepError::NotReady { source, .. } => {
                source.hint()
            }
            StepError::NotInFleet { .. } => Some("re-run plan".into()),
            StepError::UnknownOutcome { .. } => Some("re-run apply to converge".into()),
            StepError::NotOwned { vm, .. } => Some(format!(
                "rename or remove {vm} by hand if it is not needed; the fleet never adopts a VM it cannot prove it owns"
            )),
            StepError::NotRunning { vm, .. } => Some(format!(
                "check it with `exedev-k8s exec -- ls {vm}` and re-run apply"
            )),
        }
    }
}

struct Ctx<'a> {
    client: &'a Client,
    fleet: &'a Fleet,
    secrets: &'a ClusterSecrets,
    desired: BTreeMap<String, DesiredVm>,
    opts: &'a ApplyOptions,
    report: &'a Reporter,
    /// Owned servers that are up right now (join targets): starts as the
    /// observed running servers, loses each one deleted, gains each one
    /// created once it is ready.
    alive_servers: std::sync::Mutex<Vec<String>>,
}

impl Ctx<'_> {
    /// The server a new node joins: the lowest-named server that is up,
    /// other than the node itself.
    fn join_target(&self, vm: &str) -> Option<String> {
        let alive = self.alive_servers.lock().unwrap_or_else(|p| p.into_inner());
        alive.iter().filter(|s| *s != vm).min().cloned()
    }

    fn has_alive_server(&self) -> bool {
        !self
            .alive_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// Runs `plan`. Never touches a VM the plan does not name.
pub async fn apply(
    client: &Client,
    fleet: &Fleet,
    plan: &Plan,
    secrets: &ClusterSecrets,
    observed_servers: &[String],
    opts: &ApplyOptions,
    report: Reporter,
) -> ApplyReport {
    let started = Instant::now();
    let ctx = Ctx {
        client,
        fleet,
        secrets,
        desired: fleet::desired_vms(fleet)
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect(),
        opts,
        report: &report,
        alive_servers: std::sync::Mutex::new(observed_servers.to_vec()),
    };
    let (servers, agents): (Vec<&Change>, Vec<&Change>) =
        plan.changes.iter().partition(|c| c.role == Role::Server);
    // A new cluster has no server up yet: its agents can start once the
    // first server is ready, while the other servers join one by one.
    // Otherwise agents wait for every server change (a roll must not move
    // their join target under them).
    let new_cluster = !ctx.has_alive_server();
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);

    let servers_done = async {
        let mut out = ApplyReport::default();
        let mut server_failed = false;
        for c in servers {
            if opts.cancel.load(Ordering::Relaxed) || server_failed {
                let reason = if server_failed {
                    "an earlier server change failed"
                } else {
                    "interrupted"
                };
                report(Event::Skipped {
                    vm: c.vm.clone(),
                    action: c.action,
                    reason: reason.into(),
                });
                out.skipped.push(Skipped {
                    vm: c.vm.clone(),
                    action: c.action,
                    reason: reason.into(),
                });
                continue;
            }
            match run_one(&ctx, c, true).await {
                Ok(()) => out.done.push(Done {
                    vm: c.vm.clone(),
                    action: c.action,
                }),
                Err(e) => {
                    server_failed = true;
                    out.failed.push(Failed {
                        vm: c.vm.clone(),
                        action: c.action,
                        error: crate::hint::describe(&e),
                    });
                }
            }
            if new_cluster && ctx.has_alive_server() {
                let _ = gate_tx.send(true);
            }
        }
        let _ = gate_tx.send(true);
        out
    };

    // Agents: in parallel, bounded, once the gate opens.
    let agents_done = async {
        let mut gate = gate_rx.clone();
        let _ = gate.wait_for(|open| *open).await;
        let sem = Arc::new(tokio::sync::Semaphore::new(opts.parallelism.max(1)));
        futures_join(agents.iter().map(|c| {
            let sem = sem.clone();
            let ctx = &ctx;
            async move {
                let _permit = sem.acquire().await;
                if ctx.opts.cancel.load(Ordering::Relaxed) {
                    (Err(report_skip(ctx, c, "interrupted")), c)
                } else if joins(c) && !ctx.has_alive_server() {
                    (
                        Err(report_skip(ctx, c, "no server is up for it to join")),
                        c,
                    )
                } else {
                    (Ok(run_one(ctx, c, false).await), c)
                }
            }
        }))
        .await
    };
    let (mut out, results) = tokio::join!(servers_done, agents_done);
    for (r, c) in results {
        match r {
            Ok(Ok(())) => out.done.push(Done {
                vm: c.vm.clone(),
                action: c.action,
            }),
            Ok(Err(e)) => out.failed.push(Failed {
                vm: c.vm.clone(),
                action: c.action,
                error: crate::hint::describe(&e),
            }),
            Err(reason) => out.skipped.push(Skipped {
                vm: c.vm.clone(),
                action: c.action,
                reason,
            }),
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

/// Whether carrying out `c` starts a k3s node that must join a server.
fn joins(c: &Change) -> bool {
    matches!(c.action, Action::Create | Action::Replace)
}

/// Reports a skipped change; returns the reason for the summary.
fn report_skip(ctx: &Ctx<'_>, c: &Change, reason: &str) -> String {
    (ctx.report)(Event::Skipped {
        vm: c.vm.clone(),
        action: c.action,
        reason: reason.into(),
    });
    reason.to_string()
}

/// Joins futures concurrently on this task (no 'static bound needed).
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

async fn run_one(ctx: &Ctx<'_>, c: &Change, is_server: bool) -> Result<(), StepError> {
    let t = Instant::now();
    (ctx.report)(Event::Start {
        vm: c.vm.clone(),
        action: c.action,
    });
    let result = async {
        match c.action {
            Action::Create => create(ctx, c, is_server, true).await,
            Action::Update => {
                run_ops(ctx, &c.vm, &c.ops).await?;
                // A resize restarts the VM: a server must be back before the
                // next server changes.
                if is_server && c.ops.iter().any(|o| matches!(o, Op::Resize { .. })) {
                    wait_running(ctx, &c.vm).await?;
                    server_ready(ctx, &c.vm).await?;
                }
                Ok(())
            }
            Action::Delete => {
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await
            }
            Action::Replace => {
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await?;
                // Just deleted: a "name not available" now is not ours.
                create(ctx, c, is_server, false).await
            }
        }
    }
    .await;
    match &result {
        Ok(()) => (ctx.report)(Event::Done {
            vm: c.vm.clone(),
            action: c.action,
            seconds: t.elapsed().as_secs_f64(),
        }),
        Err(e) => (ctx.report)(Event::Failed {
            vm: c.vm.clone(),
            action: c.action,
            error: crate::hint::describe(e),
        }),
    }
    result
}

/// Cordons, drains and deletes the VM's Node when a remover is configured;
/// a failure stops the change before any VM is touched.
async fn remove_node(ctx: &Ctx<'_>, vm: &str) -> Result<(), StepError> {
    let Some(remover) = &ctx.opts.remover else {
        return Ok(());
    };
    step(ctx, vm, "cordon + drain + delete node");
    let outcome = remover(vm.to_string())
        .await
        .map_err(|source| StepError::NodeRemoval {
            vm: vm.to_string(),
            source,
        })?;
    step(ctx, vm, outcome);
    Ok(())
}

fn step(ctx: &Ctx<'_>, vm: &str, s: impl Into<String>) {
    (ctx.report)(Event::Step {
        vm: vm.into(),
        step: s.into(),
    });
}

async fn server_ready(ctx: &Ctx<'_>, vm: &str) -> Result<(), StepError> {
    let Some(wait) = &ctx.opts.server_ready else {
        return Ok(());
    };
    step(
        ctx,
        vm,
        "waiting for its bootstrap, then for the node to be Ready",
    );
    let report = ctx.report.clone();
    let name = vm.to_string();
    let sink: StepSink = Arc::new(move |s: String| {
        report(Event::Step {
            vm: name.clone(),
            step: s,
        })
    });
    let outcome = wait(vm.to_string(), sink)
        .await
        .map_err(|source| StepError::NotReady {
            vm: vm.to_string(),
            source,
        })?;
    step(ctx, vm, outcome);
    Ok(())
}

/// `adopt_existing`: a "name not available" answer counts as done when the
/// VM carries our ownership tag (an interrupted earlier run created it);
/// never for a replacement, whose old VM was just deleted.
async fn create(
    ctx: &Ctx<'_>,
    c: &Change,
    is_server: bool,
    adopt_existing: bool,
) -> Result<(), StepError> {
    let d = ctx
        .desired
        .get(&c.vm)
        .ok_or_else(|| StepError::NotInFleet { vm: c.vm.clone() })?;
    // Every joiner contacts a server that is up now. A (re)created first
    // server joins one that still holds the cluster, if any, instead of
    // initialising a second, empty cluster.
    let join_via = ctx.join_target(&d.name);
    let spec = spec::new_vm(ctx.fleet, d, ctx.secrets, join_via.as_deref())?;
    step(ctx, &c.vm, "new");
    match ctx.client.new_vm(spec.clone()).await {
        Ok(_) => {}
        Err(e) if outcome_unknown(&e) => {
            step(
                ctx,
                &c.vm,
                format!("outcome unknown ({}): re-reading ls", e.kind_name()),
            );
            settle_new(ctx, &c.vm, spec).await?;
        }
        Err(e)
            if adopt_existing
                && e.message.contains("not available")
                && owned_exists(ctx, &c.vm).await? =>
        {
            // A previous, interrupted run created it: converge, don't duplicate.
            step(ctx, &c.vm, "already created by an earlier run");
        }
        Err(e) => return Err(e.into()),
    }
    if is_server {
        wait_running(ctx, &c.vm).await?;
        server_ready(ctx, &c.vm).await?;
        ctx.alive_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.vm.clone());
    }
    run_ops(ctx, &c.vm, &c.ops).await
}

/// After a `new` with unknown outcome: look before re-sending.
async fn settle_new(ctx: &Ctx<'_>, vm: &str, spec: crate::api::NewVm) -> Result<(), StepError> {
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
async fn owned_exists(ctx: &Ctx<'_>, vm: &str) -> Result<bool, StepError> {
    let vms = ctx.client.ls(Some(vm)).await?;
    let cluster = &ctx.fleet.name;
    match vms.iter().find(|v| v.vm_name == vm) {
        None => Ok(false),
        Some(v) if crate::plan::owned(cluster, v) => Ok(true),
        Some(_) => Err(StepError::NotOwned {
            vm: vm.to_string(),
            cluster: cluster.clone(),
        }),
    }
}

async fn wait_running(ctx: &Ctx<'_>, vm: &str) -> Result<(), StepError> {
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

/// Logs the VM's Tailscale device out, when configured. Never fails the
/// change: a VM that cannot be reached (stopped, never joined) is deleted
/// anyway, and the report says what to clean up by hand.
async fn logout(ctx: &Ctx<'_>, vm: &str) {
    let Some(logout) = &ctx.opts.logout else {
        return;
    };
    step(ctx, vm, "tailscale logout");
    let outcome = match logout(vm.to_string()).await {
        Ok(done) => done,
        Err(e) => format!(
            "could not log the Tailscale device out ({e}); if it joined the tailnet, remove device {vm} in the Tailscale admin console or through its API"
        ),
    };
    step(ctx, vm, outcome);
}

async fn delete(ctx: &Ctx<'_>, vm: &str) -> Result<(), StepError> {
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

async fn run_ops(ctx: &Ctx<'_>, vm: &str, ops: &[Op]) -> Result<(), StepError> {
    for op in ops {
        match op {
            Op::Resize { cpu, memory, disk } => {
                step(ctx, vm, "resize");
                ctx.client
                    .resize(vm, *cpu, memory.clone(), disk.clone())
                    .await?;
            }
            Op::AddTags { tags } => {
                step(ctx, vm, "tag");
                ctx.client.tag(vm, tags.clone()).await?;
            }
            Op::RemoveTags { tags } => {
                step(ctx, vm, "tag -d");
                ctx.client.untag(vm, tags.clone()).await?;
            }
            Op::SharePort { port } => {
                step(ctx, vm, format!("share port {port}"));
                ctx.client.share_port(vm, *port).await?;
            }
            Op::ShareVisibility { public } => {
                step(
                    ctx,
                    vm,
                    if *public {
                        "share set-public"
                    } else {
                        "share set-private"
                    },
                );
                ctx.client.share_visibility(vm, *public).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::{Hint, describe};

    #[derive(Debug, thiserror::Error)]
    #[error("the API refused")]
    struct Refused(#[source] std::io::Error);

    impl Hint for Refused {
        fn hint(&self) -> Option<String> {
            Some("try --via-ssh-tunnel".into())
        }
    }

    /// A hook's error keeps its source chain and its hint through the
    /// step that failed, so the user sees what went wrong and what to do.
    #[test]
    fn a_hooks_error_keeps_its_chain_and_hint_through_the_step() {
        let e = StepError::NotReady {
            vm: "prod-cp2".into(),
            source: HookError::hinted(Refused(std::io::Error::other("connection reset"))),
        };
        let shown = describe(&e);
        assert!(
            shown.starts_with("prod-cp2 did not become a Ready node: the API refused"),
            "{shown}"
        );
        assert!(shown.ends_with("hint: try --via-ssh-tunnel"), "{shown}");
        let mut chain = Vec::new();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert_eq!(chain, ["the API refused", "connection reset"]);
    }

    /// Every step failure the user can act on says what to do.
    #[test]
    fn step_failures_say_what_to_do() {
        let cases = [
            StepError::NotInFleet { vm: "a-cp1".into() },
            StepError::NotOwned {
                vm: "a-cp1".into(),
                cluster: "a".into(),
            },
            StepError::NotRunning {
                vm: "a-cp1".into(),
                after: Duration::from_secs(60),
            },
        ];
        for e in cases {
            assert!(e.to_string().contains("a-cp1"), "{e}");
            assert!(e.hint().is_some(), "{e} has no hint");
        }
    }
}
