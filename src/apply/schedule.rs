//! The scheduler: servers one at a time (each a ready member before the
//! next), agents in parallel (bounded, each its own task on a
//! [`tokio::task::JoinSet`]) with each pool's disruptive changes within its
//! `maxUnavailable`; a failed disruptive change halts the roll. Each change
//! is carried out by [`run_one`], by its [`Job`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::core::fleet::Fleet;
use crate::core::plan::spec::ClusterSecrets;
use crate::core::plan::{Action, Change, Lost, Plan, Replacement};
use crate::core::rollout::{Budgets, Rollout};
use crate::edges::client::Client;

use super::ApplyOptions;
use super::error::StepError;
use super::events::{ApplyReport, Done, Event, Failed, Reporter, Skipped};
use super::in_place::in_place;
use super::steps::{
    Ctx, create, delete, forget_node, name_free, node_ready, remove_node, wait_running,
};

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
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        fleet: fleet.clone(),
        secrets: secrets.clone(),
        version: plan
            .release
            .as_ref()
            .map(|r| r.version.clone())
            .unwrap_or_default(),
        opts: opts.clone(),
        report,
        halted: AtomicBool::new(false),
        alive_servers: std::sync::Mutex::new(observed_servers.to_vec()),
    });
    let Rollout { servers, agents } = Rollout::of(plan);
    let budgets = Budgets::of(fleet);
    // A new cluster has no server up yet: its agents can start once the
    // first server is ready, while the other servers join one by one.
    // Otherwise agents wait for every server change (a roll must not move
    // their join target under them; servers are upgraded before agents).
    let new_cluster = !ctx.has_alive_server();
    let (gate_tx, mut gate_rx) = tokio::sync::watch::channel(false);
    let servers_done = roll_servers(&ctx, &servers, new_cluster, gate_tx);
    let agents_done = async {
        let _ = gate_rx.wait_for(|open| *open).await;
        roll_agents(&ctx, &agents, &budgets).await
    };
    let (mut out, outcomes) = tokio::join!(servers_done, agents_done);
    for (c, outcome) in agents.iter().zip(outcomes) {
        out.record(c, outcome);
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

/// How one change ended.
enum Outcome {
    Done,
    Failed(String),
    Skipped(String),
}

impl ApplyReport {
    fn record(&mut self, c: &Change, outcome: Outcome) {
        let (vm, action) = (c.vm.clone(), c.action);
        match outcome {
            Outcome::Done => self.done.push(Done { vm, action }),
            Outcome::Failed(error) => self.failed.push(Failed { vm, action, error }),
            Outcome::Skipped(reason) => self.skipped.push(Skipped { vm, action, reason }),
        }
    }
}

/// Servers, one at a time in plan order; opens the agents' gate once a
/// new cluster has a server up, and in any case when done.
async fn roll_servers(
    ctx: &Arc<Ctx>,
    servers: &[&Change],
    new_cluster: bool,
    gate: tokio::sync::watch::Sender<bool>,
) -> ApplyReport {
    let mut out = ApplyReport::default();
    for c in servers {
        let halted = ctx.halted.load(Ordering::Relaxed);
        let outcome = if ctx.opts.cancel.load(Ordering::Relaxed) || halted {
            let reason = if halted {
                "an earlier server change failed: the roll stopped there (re-run apply to resume)"
            } else {
                "interrupted"
            };
            skip(ctx, c, reason)
        } else {
            match run_one(ctx, c, true).await {
                Ok(()) => Outcome::Done,
                Err(e) => {
                    ctx.halted.store(true, Ordering::Relaxed);
                    Outcome::Failed(crate::base::hint::describe(&e))
                }
            }
        };
        out.record(c, outcome);
        if new_cluster && ctx.has_alive_server() {
            let _ = gate.send(true);
        }
    }
    let _ = gate.send(true);
    out
}

/// Agents, each its own task (at most `parallelism` at work), each pool's
/// disruptive changes within its budget; outcomes in plan order. Tasks
/// start in plan order, so the budgets (fair semaphores) are taken in plan
/// order on the CLI's single-threaded runtime.
async fn roll_agents(ctx: &Arc<Ctx>, agents: &[&Change], budgets: &Budgets) -> Vec<Outcome> {
    let sem = Arc::new(Semaphore::new(ctx.opts.parallelism.max(1)));
    let mut pools: std::collections::BTreeMap<&str, Arc<Semaphore>> = Default::default();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in agents.iter().enumerate() {
        let pool = pools
            .entry(c.pool.as_str())
            .or_insert_with(|| Arc::new(Semaphore::new(budgets.of_pool(&c.pool))))
            .clone();
        let (ctx, sem, c) = (ctx.clone(), sem.clone(), (*c).clone());
        tasks.spawn(async move {
            // The pool's budget first: a waiting change holds no
            // parallelism slot.
            let _out_of_service = match c.disrupts() {
                true => pool.acquire_owned().await.ok(),
                false => None,
            };
            let _permit = sem.acquire_owned().await;
            (i, agent(&ctx, &c).await)
        });
    }
    let mut outcomes: Vec<Option<Outcome>> = agents.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, outcome)) => outcomes[i] = Some(outcome),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only an abort cancels a task, and none is aborted here.
            Err(_) => {}
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Skipped("interrupted".into())))
        .collect()
}

/// One agent's change, once it holds its permits: skipped when
/// interrupted, when the roll halted (disruptive changes), or when no
/// server is up to join.
async fn agent(ctx: &Ctx, c: &Change) -> Outcome {
    if ctx.opts.cancel.load(Ordering::Relaxed) {
        return skip(ctx, c, "interrupted");
    }
    if c.disrupts() && ctx.halted.load(Ordering::Relaxed) {
        return skip(
            ctx,
            c,
            "an earlier change failed: the roll stopped there (re-run apply to resume)",
        );
    }
    if Job::of(c).joins() && !ctx.has_alive_server() {
        return skip(ctx, c, "no server is up for it to join");
    }
    match run_one(ctx, c, false).await {
        Ok(()) => Outcome::Done,
        Err(e) => {
            if c.disrupts() {
                ctx.halted.store(true, Ordering::Relaxed);
            }
            Outcome::Failed(crate::base::hint::describe(&e))
        }
    }
}

/// Reports a skipped change.
fn skip(ctx: &Ctx, c: &Change, reason: &str) -> Outcome {
    (ctx.report)(Event::Skipped {
        vm: c.vm.clone(),
        action: c.action,
        reason: reason.into(),
    });
    Outcome::Skipped(reason.to_string())
}

/// What carrying a change out means, from the plan's action and, for a
/// replacement, its order (`plan::Replacement`, in the change itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job<'a> {
    Create,
    InPlace,
    Delete,
    Replace(&'a Replacement),
    /// A lost server: its dead etcd member removed (its Node deleted and
    /// gone), its VM deleted when it still exists, then a new VM created
    /// under the same name and joined. etcd never holds more members than
    /// the fleet declares: the new one is added after the dead one went.
    ReplaceLost(Lost),
}

/// A replacement whose order nobody set (a change built by hand, not by
/// the diff or from a plan file) keeps its name: the safe order, which
/// never leaves two VMs claiming one node.
const KEEPS_NAME: Replacement = Replacement::DestroyBeforeCreate;

impl<'a> Job<'a> {
    fn of(c: &'a Change) -> Job<'a> {
        match (c.action, c.lost) {
            (Action::Replace, Some(lost)) => Job::ReplaceLost(lost),
            (Action::Create, _) => Job::Create,
            (Action::Update | Action::Upgrade, _) => Job::InPlace,
            (Action::Delete, _) => Job::Delete,
            (Action::Replace, None) => Job::Replace(c.replacement.as_ref().unwrap_or(&KEEPS_NAME)),
        }
    }

    /// Whether it starts a k3s node that must join a server.
    fn joins(self) -> bool {
        matches!(self, Job::Create | Job::Replace(_) | Job::ReplaceLost(_))
    }
}

/// Carries one change out, reporting its start and its end.
async fn run_one(ctx: &Ctx, c: &Change, is_server: bool) -> Result<(), StepError> {
    let t = Instant::now();
    (ctx.report)(Event::Start {
        vm: c.vm.clone(),
        action: c.action,
    });
    let result = match Job::of(c) {
        Job::Create => create(ctx, &c.vm, &c.ops, is_server, true).await,
        Job::InPlace => in_place(ctx, c, is_server).await,
        Job::Delete => {
            async {
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await
            }
            .await
        }
        Job::Replace(Replacement::CreateBeforeDestroy { successor }) => {
            async {
                create(ctx, successor, &c.ops, is_server, true).await?;
                wait_running(ctx, successor).await?;
                node_ready(ctx, successor, Some(&ctx.version)).await?;
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await
            }
            .await
        }
        Job::ReplaceLost(lost) => {
            async {
                // A gone VM's device cannot be logged out (a VM that still
                // exists is logged out before its `rm`, as any other).
                if lost == Lost::VmGone {
                    name_free(ctx, &c.vm).await?;
                }
                forget_node(ctx, &c.vm, is_server).await?;
                if let Lost::NotReady { .. } = lost {
                    delete(ctx, &c.vm).await?;
                }
                // The old VM is gone: a "name not available" now is not ours.
                create(ctx, &c.vm, &c.ops, is_server, false).await
            }
            .await
        }
        Job::Replace(Replacement::DestroyBeforeCreate) => {
            async {
                remove_node(ctx, &c.vm).await?;
                delete(ctx, &c.vm).await?;
                // Just deleted: a "name not available" now is not ours.
                create(ctx, &c.vm, &c.ops, is_server, false).await
            }
            .await
        }
    };
    match &result {
        Ok(()) => (ctx.report)(Event::Done {
            vm: c.vm.clone(),
            action: c.action,
            seconds: t.elapsed().as_secs_f64(),
        }),
        Err(e) => (ctx.report)(Event::Failed {
            vm: c.vm.clone(),
            action: c.action,
            error: crate::base::hint::describe(e),
        }),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::Role;

    fn change(action: Action, replacement: Option<Replacement>) -> Change {
        Change {
            action,
            vm: "acme-web1".into(),
            pool: "web".into(),
            role: Role::Agent,
            reasons: vec![],
            attributes: vec![],
            ops: vec![],
            restart: None,
            replacement,
            lost: None,
        }
    }

    /// The job carries the change's own replacement order; a replacement
    /// whose order nobody set keeps its name. Only creates and
    /// replacements join a server.
    #[test]
    fn a_replacements_order_comes_from_the_change() {
        let first = Replacement::CreateBeforeDestroy {
            successor: "acme-web4".into(),
        };
        let agent = change(Action::Replace, Some(first.clone()));
        assert_eq!(Job::of(&agent), Job::Replace(&first));
        let server = change(Action::Replace, Some(Replacement::DestroyBeforeCreate));
        assert_eq!(
            Job::of(&server),
            Job::Replace(&Replacement::DestroyBeforeCreate)
        );
        let unset = change(Action::Replace, None);
        assert_eq!(Job::of(&unset), Job::Replace(&KEEPS_NAME));
        let joins: Vec<bool> = [
            Action::Create,
            Action::Update,
            Action::Upgrade,
            Action::Delete,
            Action::Replace,
        ]
        .into_iter()
        .map(|a| Job::of(&change(a, None)).joins())
        .collect();
        assert_eq!(joins, [true, false, false, false, true]);
    }

    /// A lost server's replacement is its own job (member first), however
    /// the rest of the change reads, and it joins a server.
    #[test]
    fn a_lost_server_is_its_own_job() {
        let mut c = change(Action::Replace, None);
        c.lost = Some(Lost::NotReady { secs: 400 });
        assert_eq!(Job::of(&c), Job::ReplaceLost(Lost::NotReady { secs: 400 }));
        assert!(Job::of(&c).joins());
        c.lost = Some(Lost::VmGone);
        assert_eq!(Job::of(&c), Job::ReplaceLost(Lost::VmGone));
    }
}
