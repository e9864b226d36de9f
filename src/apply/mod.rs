//! Carries a plan out against exe.dev and the cluster: servers one at a
//! time (each a ready member before the next: etcd joins one learner at a
//! time), then agents, each pool's disruptive changes (drains, restarts,
//! replacements, removals) within its `maxUnavailable` ([`crate::rollout`])
//! and the rest in parallel (bounded); every `new` whose outcome is unknown
//! settled by re-reading `ls` instead of re-sending blindly.
//!
//! An in-place change rolls node by node: cordon and drain (PDBs
//! respected), change (k3s over SSH: [`crate::upgrade`]; a resize), Ready
//! again at the plan's release, uncordon, comment updated. An agent
//! replacement creates its successor (a new index) and waits for it to be
//! Ready before draining and removing the old VM. A failed disruptive change
//! stops the roll: nothing disruptive starts after it, the node stays
//! cordoned, and re-running apply resumes (nodes already at the target are
//! not planned again).
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
use crate::fleet::{DesiredVm, Fleet};
use crate::plan::spec::{self, ClusterSecrets};
use crate::plan::{Action, Change, Op, Plan, placement};
use crate::rollout::{Budgets, Rollout};
use crate::secret::Secret;

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

/// A boxed future, the shape of every hook below.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Why a hook (drain, readiness wait, change over SSH, device logout)
/// failed: the error of the edge that ran it (SSH, the Kubernetes API),
/// kept whole so its source chain and hint reach the user.
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

/// Something apply does to a node by name, through the Kubernetes API or
/// SSH; Ok says what was done.
pub type NodeHook = Arc<dyn Fn(String) -> BoxFuture<Result<String, HookError>> + Send + Sync>;

/// Takes a node out of the cluster before its VM is removed (cordon, drain,
/// delete the Node and so its etcd member); supplied by the CLI when the
/// Kubernetes API is reachable.
pub type NodeRemover = NodeHook;

/// Receives progress lines of a long wait (shown as steps of the VM).
pub type StepSink = Arc<dyn Fn(String) + Send + Sync>;

/// Waits until a node just created, restarted or changed is Ready: its
/// bootstrap done for this boot, then (when the API is reachable) its Node
/// Ready, at the given k3s release when one is given, with the fleet's
/// labels. Servers change strictly one at a time on it (etcd joins one
/// learner at a time; a restart must not overlap another).
pub type NodeReady = Arc<
    dyn Fn(String, Option<String>, StepSink) -> BoxFuture<Result<String, HookError>> + Send + Sync,
>;

/// Runs an in-place change script ([`crate::plan::spec::change_script`])
/// on a node over SSH, bounded ([`crate::upgrade::change_node`]).
pub type NodeChanger =
    Arc<dyn Fn(String, Secret) -> BoxFuture<Result<String, HookError>> + Send + Sync>;

/// Logs a VM's Tailscale device out before the VM is deleted, so its
/// MagicDNS name is free for a replacement (otherwise the replacement
/// becomes `<name>-1` and the old name points at a dead device). Must be
/// bounded in time; its failure is reported, never fatal.
pub type DeviceLogout = NodeRemover;

/// How apply runs.
#[derive(Clone)]
pub struct ApplyOptions {
    /// Waits for a node to be Ready (servers after every change; agents
    /// after an in-place change and before the VM they replace goes).
    pub node_ready: Option<NodeReady>,
    /// Drains and deletes a node before its VM is deleted or replaced (not
    /// used by destroy: nothing would be left to move pods to).
    pub remover: Option<NodeRemover>,
    /// Cordons and drains a node before it restarts in place.
    pub drainer: Option<NodeHook>,
    /// Uncordons a node once it is Ready again after an in-place change.
    pub uncordoner: Option<NodeHook>,
    /// Sets the fleet's labels and taints on a node through the API.
    pub labeler: Option<NodeHook>,
    /// Changes k3s on a node over SSH (needed for in-place k3s changes).
    pub changer: Option<NodeChanger>,
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
            node_ready: None,
            remover: None,
            drainer: None,
            uncordoner: None,
            labeler: None,
            changer: None,
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
    #[error("{vm}: could not drain the node, so nothing on it was changed: {source}")]
    NotDrained { vm: String, source: HookError },
    #[error("{vm}: in-place k3s changes need SSH to the VM")]
    NeedsSsh { vm: String },
    #[error("{source}")]
    Change { vm: String, source: HookError },
    #[error("{source}; {vm} is left cordoned")]
    LeftCordoned { vm: String, source: Box<StepError> },
    #[error("{vm} is Ready again but still cordoned: {source}")]
    StillCordoned { vm: String, source: HookError },
    #[error("{vm}: labels and taints not set through the API: {source}")]
    NotLabelled { vm: String, source: HookError },
}

impl crate::hint::Hint for StepError {
    fn hint(&self) -> Option<String> {
        let resume = |vm: &str| {
            format!(
                "re-run apply: it resumes here (nodes already changed are not changed again); or `kubectl uncordon {vm}` to put it back as it is"
            )
        };
        match self {
            StepError::Api(e) => e.hint(),
            StepError::Script(_) => None,
            StepError::NodeRemoval { source, .. }
            | StepError::NotReady { source, .. }
            | StepError::Change { source, .. } => source.hint(),
            StepError::NotInFleet { .. } => Some("re-run plan".into()),
            StepError::UnknownOutcome { .. } => Some("re-run apply to converge".into()),
            StepError::NotOwned { vm, .. } => Some(format!(
                "rename or remove {vm} by hand if it is not needed; the fleet never adopts a VM it cannot prove it owns"
            )),
            StepError::NotRunning { vm, .. } => Some(format!(
                "check it with `exedev-k8s exec -- ls {vm}` and re-run apply"
            )),
            StepError::NotDrained { vm, source } => Some(format!(
                "{vm} may be left cordoned. Re-run apply once it can be drained: it resumes here (nodes already changed are not changed again); or `kubectl uncordon {vm}` to put it back as it is{}",
                source.hint().map(|h| format!(" ({h})")).unwrap_or_default()
            )),
            StepError::NeedsSsh { .. } => Some("pass --ssh-key (the key exe.dev knows)".into()),
            StepError::LeftCordoned { vm, source } => Some(match source.hint() {
                Some(h) => format!("{h}; then {}", resume(vm)),
                None => format!("fix the cause, then {}", resume(vm)),
            }),
            StepError::StillCordoned { vm, .. } => Some(format!("run `kubectl uncordon {vm}`")),
            StepError::NotLabelled { .. } => Some(
                "re-run apply (or `exedev-k8s status --wait`) once the Kubernetes API is reachable"
                    .into(),
            ),
        }
    }
}

struct Ctx<'a> {
    client: &'a Client,
    fleet: &'a Fleet,
    secrets: &'a ClusterSecrets,
    /// The plan's k3s release: what new nodes install and in-place changes
    /// upgrade to.
    version: String,
    opts: &'a ApplyOptions,
    report: &'a Reporter,
    /// Set when a disruptive change failed: the roll stops there.
    halted: AtomicBool,
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

    fn desired(&self, vm: &str) -> Result<DesiredVm, StepError> {
        placement::desired_named(self.fleet, vm)
            .ok_or_else(|| StepError::NotInFleet { vm: vm.to_string() })
    }

    fn has_alive_server(&self) -> bool {
        !self
            .alive_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// Runs `plan`. Never touches a VM the plan does not name (nor the new
/// VM of a replacement it names).
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
        version: plan
            .release
            .as_ref()
            .map(|r| r.version.clone())
            .unwrap_or_default(),
        opts,
        report: &report,
        halted: AtomicBool::new(false),
        alive_servers: std::sync::Mutex::new(observed_servers.to_vec()),
    };
    let Rollout { servers, agents } = Rollout::of(plan);
    let budgets = Budgets::of(fleet);
    // A new cluster has no server up yet: its agents can start once the
    // first server is ready, while the other servers join one by one.
    // Otherwise agents wait for every server change (a roll must not move
    // their join target under them; servers are upgraded before agents).
    let new_cluster = !ctx.has_alive_server();
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);

    let servers_done = async {
        let mut out = ApplyReport::default();
        for c in servers {
            let halted = ctx.halted.load(Ordering::Relaxed);
            if opts.cancel.load(Ordering::Relaxed) || halted {
                let reason = if halted {
                    "an earlier server change failed: the roll stopped there (re-run apply to resume)"
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
                    ctx.halted.store(true, Ordering::Relaxed);
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

    // Agents: in parallel (bounded), each pool's disruptive changes within
    // its budget, once the gate opens.
    let agents_done = async {
        let mut gate = gate_rx.clone();
        let _ = gate.wait_for(|open| *open).await;
        let sem = Arc::new(tokio::sync::Semaphore::new(opts.parallelism.max(1)));
        let pools: BTreeMap<String, Arc<tokio::sync::Semaphore>> = agents
            .iter()
            .map(|c| {
                (
                    c.pool.clone(),
                    Arc::new(tokio::sync::Semaphore::new(budgets.of_pool(&c.pool))),
                )
            })
            .collect();
        futures_join(agents.iter().map(|c| {
            let sem = sem.clone();
            let pool = pools.get(&c.pool).cloned();
            let ctx = &ctx;
            async move {
                // The pool's budget first: a waiting change holds no
                // parallelism slot.
                let _out_of_service = match (c.disrupts(), pool) {
                    (true, Some(p)) => p.acquire_owned().await.ok(),
                    _ => None,
                };
                let _permit = sem.acquire().await;
                if ctx.opts.cancel.load(Ordering::Relaxed) {
                    (Err(report_skip(ctx, c, "interrupted")), c)
                } else if c.disrupts() && ctx.halted.load(Ordering::Relaxed) {
                    (
                        Err(report_skip(
                            ctx,
                            c,
                            "an earlier change failed: the roll stopped there (re-run apply to resume)",
                        )),
                        c,
                    )
                } else if joins(c) && !ctx.has_alive_server() {
                    (
                        Err(report_skip(ctx, c, "no server is up for it to join")),
                        c,
                    )
                } else {
                    let r = run_one(ctx, c, false).await;
                    if r.is_err() && c.disrupts() {
                        ctx.halted.store(true, Ordering::Relaxed);
                    }
                    (Ok(r), c)
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
        match (c.action, &c.replaced_by) {
            (Action::Create, _) => create(ctx, &c.vm, &c.ops, is_server, true).await,
            (Action::Update | Action::Upgrade, _) => in_place(ctx, c, is_server).await,
            (Action::Delete, _) => {
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await
            }
            (Action::Replace, Some(new)) => {
                // Create before destroy: the successor is Ready before the
                // old node is drained and its VM removed.
                create(ctx, new, &c.ops, is_server, true).await?;
                wait_running(ctx, new).await?;
                node_ready(ctx, new, Some(ctx.version.clone())).await?;
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await
            }
            (Action::Replace, None) => {
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await?;
                // Just deleted: a "name not available" now is not ours.
                create(ctx, &c.vm, &c.ops, is_server, false).await
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

async fn node_ready(ctx: &Ctx<'_>, vm: &str, version: Option<String>) -> Result<(), StepError> {
    let Some(wait) = &ctx.opts.node_ready else {
        return Ok(());
    };
    step(
        ctx,
        vm,
        match &version {
            Some(v) => format!("waiting for its node to be Ready at k3s {v}"),
            None => "waiting for its bootstrap, then for the node to be Ready".to_string(),
        },
    );
    let report = ctx.report.clone();
    let name = vm.to_string();
    let sink: StepSink = Arc::new(move |s: String| {
        report(Event::Step {
            vm: name.clone(),
            step: s,
        })
    });
    let outcome = wait(vm.to_string(), version, sink)
        .await
        .map_err(|source| StepError::NotReady {
            vm: vm.to_string(),
            source,
        })?;
    step(ctx, vm, outcome);
    Ok(())
}

/// Runs an optional hook on a node; its absence is said once as a step.
async fn hook(
    ctx: &Ctx<'_>,
    vm: &str,
    hook: &Option<NodeHook>,
    doing: &str,
    without: &str,
) -> Result<(), HookError> {
    match hook {
        Some(h) => {
            step(ctx, vm, doing);
            let outcome = h(vm.to_string()).await?;
            step(ctx, vm, outcome);
        }
        None => step(ctx, vm, without),
    }
    Ok(())
}

/// An in-place change, node by node: the proxy and tags first (harmless),
/// then, when the node restarts, cordon and drain, the k3s change over SSH
/// and/or the resize, Ready again (at the plan's release after a k3s
/// change), uncordon; labels through the API; the comment last. A failure
/// after the drain leaves the node cordoned, and says so.
async fn in_place(ctx: &Ctx<'_>, c: &Change, is_server: bool) -> Result<(), StepError> {
    let d = ctx.desired(&c.vm)?;
    let vm = c.vm.as_str();
    let cheap: Vec<Op> = c
        .ops
        .iter()
        .filter(|o| {
            matches!(
                o,
                Op::AddTags { .. }
                    | Op::RemoveTags { .. }
                    | Op::SharePort { .. }
                    | Op::ShareVisibility { .. }
            )
        })
        .cloned()
        .collect();
    run_ops(ctx, vm, &cheap).await?;
    let k3s = c.ops.iter().any(Op::changes_k3s);
    let resize = c.ops.iter().find(|o| matches!(o, Op::Resize { .. }));
    if c.restart.is_some() {
        hook(
            ctx,
            vm,
            &ctx.opts.drainer,
            "cordon + drain",
            "not drained: the Kubernetes API is not reachable",
        )
        .await
        .map_err(|source| StepError::NotDrained {
            vm: vm.to_string(),
            source,
        })?;
        let changed = async {
            if k3s {
                let script = spec::change_script(ctx.fleet, &d, ctx.secrets, &ctx.version)?;
                let changer = ctx
                    .opts
                    .changer
                    .as_ref()
                    .ok_or_else(|| StepError::NeedsSsh { vm: vm.to_string() })?;
                step(ctx, vm, format!("k3s {} over SSH", ctx.version));
                let outcome =
                    changer(vm.to_string(), script)
                        .await
                        .map_err(|source| StepError::Change {
                            vm: vm.to_string(),
                            source,
                        })?;
                step(ctx, vm, outcome);
            }
            if let Some(op) = resize {
                run_ops(ctx, vm, std::slice::from_ref(op)).await?;
                wait_running(ctx, vm).await?;
            }
            node_ready(ctx, vm, k3s.then(|| ctx.version.clone())).await
        }
        .await;
        if let Err(e) = changed {
            return Err(StepError::LeftCordoned {
                vm: vm.to_string(),
                source: Box::new(e),
            });
        }
        if is_server {
            let mut alive = ctx.alive_servers.lock().unwrap_or_else(|p| p.into_inner());
            if !alive.iter().any(|s| s == vm) {
                alive.push(vm.to_string());
            }
        }
        hook(
            ctx,
            vm,
            &ctx.opts.uncordoner,
            "uncordon",
            "not uncordoned: the Kubernetes API is not reachable",
        )
        .await
        .map_err(|source| StepError::StillCordoned {
            vm: vm.to_string(),
            source,
        })?;
    }
    if c.ops.iter().any(|o| matches!(o, Op::NodeLabels)) {
        hook(
            ctx,
            vm,
            &ctx.opts.labeler,
            "labels and taints through the API",
            "labels and taints not set: the Kubernetes API is not reachable",
        )
        .await
        .map_err(|source| StepError::NotLabelled {
            vm: vm.to_string(),
            source,
        })?;
    }
    // The comment records what the plan brought up to date (the node's
    // new release after a k3s change, its labels once known).
    let comment = c
        .ops
        .iter()
        .find_map(|o| match o {
            Op::Comment { comment } => Some(comment.clone()),
            _ => None,
        })
        .or_else(|| k3s.then(|| spec::comment_for(ctx.fleet, &d, Some(&ctx.version))));
    if let Some(text) = comment {
        step(ctx, vm, "comment");
        ctx.client.comment(vm, &text).await?;
    }
    Ok(())
}

/// `adopt_existing`: a "name not available" answer counts as done when the
/// VM carries our ownership tag (an interrupted earlier run created it);
/// never for a replacement, whose old VM was just deleted.
async fn create(
    ctx: &Ctx<'_>,
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
        ctx.fleet,
        &d,
        ctx.secrets,
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
        node_ready(ctx, name, Some(ctx.version.clone())).await?;
        ctx.alive_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
    }
    run_ops(ctx, name, ops).await
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
            // Carried out by `in_place`, in their order around a restart.
            Op::Upgrade { .. } | Op::Reconfigure { .. } | Op::NodeLabels | Op::Comment { .. } => {}
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
