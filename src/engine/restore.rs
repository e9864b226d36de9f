//! `restore`: prepare (read exe.dev, each running server's snapshot list and
//! settings, the Nodes, the stored token; take the fleet's lease; make the
//! [`crate::core::restore`] plan or refuse) and execute (its steps over SSH, one
//! at a time, each server Ready before the next; then every node Ready).
//!
//! Nothing is deleted before the new control plane is proven: the only
//! destructive step on the other servers (removing `server/db`) comes after
//! the reset server answers `/readyz` and its Node is Ready, and the reset
//! server's own etcd is moved aside by k3s, not deleted ("Pre-restore etcd
//! database moved to …", `pkg/etcd/etcd.go:1597-1632` @1feb5ae).

use std::sync::Arc;
use std::time::Duration;

use super::{EngineError, Notes, Session, kube, lease_error};
use crate::core::fleet::Role;
use crate::core::restore::{self, RestorePlan, ServerFacts, Step};
use crate::edges::kubeaccess::LazyClient;
use crate::edges::observe::observe;

/// What `restore` is asked.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The snapshot's name, as `snapshot list` shows it.
    pub snapshot: String,
    /// Restore even though every server is Ready.
    pub force: bool,
    /// Take the fleet's lease first ([`crate::edges::lease`]).
    pub lock: Option<crate::edges::lease::LockRequest>,
    /// The most the restore may take, every wait included.
    pub timeout: Duration,
}

/// A restore plan ready to be carried out, and the lease it holds.
pub struct PreparedRestore {
    pub plan: RestorePlan,
    lease: Option<(crate::edges::lease::LeaseGuard, Arc<LazyClient>)>,
}

impl PreparedRestore {
    /// Gives the fleet's lease back (after the restore, or when the user
    /// says no). The Lease object itself is rolled back with the datastore:
    /// releasing one the snapshot does not hold is harmless.
    pub async fn release(&mut self) {
        if let Some((lease, _client)) = self.lease.take() {
            lease.release().await;
        }
    }
}

/// How often a restore looks again at what it waits for (the API after a
/// restart, the Nodes' Ready): every wait is on its critical path (one
/// server at a time, then the agents), so each poll interval it overshoots
/// is the whole restore's; with 3 s that was up to 3 s per step (`cargo
/// bench --bench world -- "every server VM gone"`). As apply's own server
/// poll (`engine::hooks`), one look a second costs a node list.
const POLL: Duration = Duration::from_secs(1);

/// Agents restarted at once (SSH sessions in flight).
const AGENT_FANOUT: usize = 16;

fn ssh(s: &Session) -> crate::edges::ssh::SshOptions {
    crate::edges::ssh::SshOptions::new(s.kube.ssh_key.clone())
}

/// Reads what the restore plan needs and makes it; every refusal comes
/// here, before any change ([`restore::plan`]'s order).
pub async fn prepare_restore(
    s: &Session,
    req: &RestoreRequest,
    notes: &Notes,
) -> Result<PreparedRestore, EngineError> {
    if !restore::is_snapshot_name(&req.snapshot) {
        return Err(EngineError::refused(
            format!(
                "{:?} is not a snapshot name k3s makes (letters, digits, '.', '_', '-'). Nothing was changed",
                crate::base::text::one_line(&req.snapshot)
            ),
            "list the snapshots with `exedev-k8s snapshot list -f FLEET`",
        ));
    }
    let observed = observe(&s.client, &s.fleet, false).await?;
    let server_tag = crate::core::fleet::role_tag(Role::Server);
    let mut running: Vec<String> = observed
        .vms
        .iter()
        .filter(|v| {
            crate::core::plan::owned(&s.fleet.name, v)
                && v.tags.contains(&server_tag)
                && v.is_running()
        })
        .map(|v| v.vm_name.clone())
        .collect();
    running.sort();
    // The token the snapshot must have been taken with: not found is a
    // refusal of its own (the plan's), not an error here.
    let token = crate::edges::cluster_secrets::server_token(&s.fleet, &s.dir);
    let token_source = match &s.fleet.k3s.token {
        Some(r) => format!("k3s.token: {}", r.value.describe()),
        None => crate::edges::cluster_secrets::token_path(&s.dir, &s.fleet.name)
            .display()
            .to_string(),
    };
    if running.is_empty() {
        // Every server VM gone: nothing answers (no API, no lease to take,
        // no k3s to list snapshots); the plan's checks come before any VM
        // is created, the snapshot's own on the first new server.
        return restore::plan_fresh(&restore::FreshInputs {
            fleet: &s.fleet,
            vms: &observed.vms,
            snapshot: &req.snapshot,
            has_token: token.is_ok(),
            token_source,
        })
        .map(|plan| PreparedRestore { plan, lease: None })
        .map_err(|r| {
            let hint = crate::base::hint::Hint::hint(&r).unwrap_or_default();
            EngineError::refused(format!("{r}. Nothing was changed"), hint)
        });
    }
    // The API through a running server, for the Nodes and the lease.
    let lazy = Arc::new(kube::lazy(s, running.first().map(String::as_str)));
    let client = if running.is_empty() {
        Err(kube::Unreachable::Teardown)
    } else {
        kube::now(s, &lazy, true).await
    };
    let lease = match (&req.lock, &client) {
        (Some(lock), Ok(c)) => {
            let (guard, _waited) = crate::edges::lease::acquire(
                c,
                &s.fleet.name,
                crate::edges::lease::Holder::me(),
                lock,
            )
            .await
            .map_err(lease_error)?;
            Some((guard, lazy.clone()))
        }
        (Some(_), Err(why)) if !running.is_empty() => {
            notes(&format!(
                "note: no lease taken ({why}): another apply of this fleet is not kept out while this restore runs"
            ));
            None
        }
        _ => None,
    };
    let ready: Vec<String> = match &client {
        Ok(c) => crate::edges::cluster::list_nodes(c)
            .await
            .map(|nodes| {
                nodes
                    .into_iter()
                    .filter(|n| n.ready)
                    .map(|n| n.name)
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let result = read_and_plan(s, req, &observed, &running, &ready, token, token_source).await;
    match result {
        Ok(plan) => Ok(PreparedRestore { plan, lease }),
        Err(e) => {
            if let Some((l, _)) = lease {
                l.release().await;
            }
            Err(e)
        }
    }
}

/// Each running server's snapshot list and settings, then the plan.
async fn read_and_plan(
    s: &Session,
    req: &RestoreRequest,
    observed: &crate::core::plan::Observed,
    running: &[String],
    ready: &[String],
    token: Result<crate::base::secret::Secret, crate::edges::cluster_secrets::SecretsError>,
    token_source: String,
) -> Result<RestorePlan, EngineError> {
    let opts = crate::edges::remote::quick(ssh(s));
    let reads =
        crate::edges::remote::bounded(running.to_vec(), 8, Duration::from_secs(180), move |vm| {
            let opts = opts.clone();
            async move {
                crate::edges::remote::read_restore_facts(&vm, &opts)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
    let mut listing: Vec<restore::Snapshot> = Vec::new();
    let mut servers = Vec::new();
    for (vm, read) in running.iter().zip(reads) {
        let (json, joined) = read.map_err(|why| {
            EngineError::refused(
                format!(
                    "cannot read the etcd snapshots on {vm}: {}. Nothing was changed",
                    crate::base::text::one_line(&why)
                ),
                "k3s lists snapshots through the running server, and S3 with the fleet's etcd.snapshots.s3 settings: check that k3s runs on it, that the S3 endpoint answers from the VMs and that the keys are right (`exedev-k8s snapshot list -f FLEET` shows the same error)",
            )
        })?;
        let found = restore::parse_listing(&json).map_err(|e| {
            EngineError::refused(
                format!("{vm}: {e}. Nothing was changed"),
                format!("look at what `sudo k3s etcd-snapshot ls -o json` prints on {vm}"),
            )
        })?;
        // S3 snapshots appear in every server's list: kept once.
        for snap in found {
            if !listing
                .iter()
                .any(|l| l.name == snap.name && l.node == snap.node)
            {
                listing.push(snap);
            }
        }
        servers.push(ServerFacts {
            vm: vm.clone(),
            joined,
            ready: ready.contains(vm),
        });
    }
    let hash = token.ok().map(|t| restore::token_hash(t.expose()));
    restore::plan(&restore::Inputs {
        fleet: &s.fleet,
        vms: &observed.vms,
        snapshot: &req.snapshot,
        listing: &listing,
        servers: &servers,
        token_hash: hash,
        token_source,
        force: req.force,
    })
    .map_err(|r| {
        let hint = crate::base::hint::Hint::hint(&r).unwrap_or_default();
        EngineError::refused(format!("{r}. Nothing was changed"), hint)
    })
}

/// What [`execute_restore`] did, step by step.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    /// `(step, outcome, seconds)` in order.
    pub done: Vec<(String, String, f64)>,
    /// Nodes Ready at the end.
    pub ready_nodes: usize,
}

/// Carries the plan out: each step over SSH in order, each server step
/// followed by its Node Ready (through the API via the reset server),
/// then every running VM's Node Ready. Stops at the first failure, naming
/// the step; what was done before stays done (re-running `restore` with
/// `--force` starts over from the stop).
pub async fn execute_restore(
    s: &Session,
    prepared: &PreparedRestore,
    timeout: Duration,
    notes: &Notes,
) -> Result<RestoreReport, EngineError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let plan = &prepared.plan;
    let mut opts = ssh(s);
    let mut report = RestoreReport::default();
    // The servers' creations (first; the others) count as one step each.
    let total =
        plan.steps.len() + plan.create.len().min(2) + usize::from(!plan.recreate.is_empty());
    if !plan.create.is_empty() {
        create_first(s, plan, deadline, total, notes, &mut report).await?;
    }
    // After the reset the API is the reset server's: reach it through it.
    let api = kube::lazy(s, Some(&plan.reset));
    // Servers one at a time; the agents' restarts at once (each reconnects
    // on its own), after every server.
    let (agents, servers): (Vec<&Step>, Vec<&Step>) = plan
        .steps
        .iter()
        .partition(|st| matches!(st, Step::RestartAgent { .. } | Step::RepointAgent { .. }));
    for step in servers {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(incomplete(step, "the restore's --timeout ran out", &report));
        }
        opts.deadline = left;
        let started = tokio::time::Instant::now();
        notes(&format!(
            "[{}/{total}] {}",
            report.done.len() + 1,
            step.describe()
        ));
        let script = restore::step_script(step);
        let outcome = match run_step(step.vm(), &script, &opts).await {
            Ok(outcome) => outcome,
            // k3s refused the reset onto the new first server (a snapshot
            // that records no token hash, taken with another token: k3s's
            // "bootstrap data already found and encrypted with different
            // token"): it holds nothing yet, so it goes again.
            Err(e) if !plan.create.is_empty() => {
                return Err(undo_first(s, plan, step, &e.to_string(), notes).await);
            }
            Err(e) => return Err(incomplete(step, &e.to_string(), &report)),
        };
        let outcome = match step {
            Step::Reset { vm, .. } | Step::Rejoin { vm } => {
                wait_nodes(s, &api, std::slice::from_ref(vm), deadline)
                    .await
                    .map_err(|e| incomplete(step, &e, &report))?;
                format!("{outcome}; node Ready")
            }
            _ => outcome,
        };
        let secs = started.elapsed().as_secs_f64();
        notes(&format!(
            "      {} ({secs:.0}s)",
            crate::base::text::one_line(&outcome)
        ));
        report.done.push((step.describe(), outcome, secs));
    }
    if plan.create.len() > 1 || !plan.recreate.is_empty() {
        create_others(s, plan, &api, deadline, total, notes, &mut report).await?;
    }
    if !agents.is_empty() {
        opts.deadline = deadline.saturating_duration_since(tokio::time::Instant::now());
        forget_newer_agents(plan, &agents, &api, &opts, deadline, notes).await?;
        agents_at_once(plan, &agents, &opts, total, notes, &mut report).await?;
    }
    // Every VM that runs: servers rejoined or created, agents reconnected.
    let mut all: Vec<String> = plan
        .steps
        .iter()
        .filter(|st| !matches!(st, Step::Stop { .. }))
        .map(|st| st.vm().to_string())
        .chain(plan.create.iter().cloned())
        .chain(plan.recreate.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    report.ready_nodes = wait_nodes(s, &api, &all, deadline)
        .await
        .map_err(|e| EngineError::RestoreStopped {
            message: format!("the restore ran every step, but not every node is Ready: {e}"),
            hint: "look at the nodes with `exedev-k8s status -f FLEET`; an agent that cannot reconnect is replaced by `exedev-k8s apply` once its VM is removed".to_string(),
        })?;
    Ok(report)
}

/// The agents' steps (restart, or point anew and restart) on every agent
/// at once: each reconnects on its own.
async fn agents_at_once(
    plan: &RestorePlan,
    agents: &[&Step],
    opts: &crate::edges::ssh::SshOptions,
    total: usize,
    notes: &Notes,
    report: &mut RestoreReport,
) -> Result<(), EngineError> {
    let started = tokio::time::Instant::now();
    let what = if plan.create.is_empty() {
        "restart k3s-agent".to_string()
    } else {
        format!(
            "point k3s-agent at {}'s new Tailscale address and restart it",
            plan.reset
        )
    };
    notes(&format!(
        "[{}/{total}] {what} on {} agent(s) at once",
        report.done.len() + 1,
        agents.len()
    ));
    let work: Vec<(Step, String)> = agents
        .iter()
        .map(|st| ((*st).clone(), restore::step_script(st)))
        .collect();
    let results = crate::edges::remote::bounded(work.clone(), AGENT_FANOUT, opts.deadline, {
        let opts = opts.clone();
        move |(step, script): (Step, String)| {
            let opts = opts.clone();
            async move {
                run_step(step.vm(), &script, &opts)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    })
    .await;
    for ((step, _), r) in work.iter().zip(results) {
        let outcome = r.map_err(|e| incomplete(step, &e, report))?;
        report
            .done
            .push((step.describe(), outcome, started.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// What stops a restore before its reset, and what to do: the new first
/// server is removed again before it is said.
type Why = (String, String);

/// Every server VM was gone: the first server created by apply's own path
/// (the fleet's tags, comment, setup script and stored token; targeted at
/// it alone, so nothing else is touched), then the snapshot checked on it:
/// in S3 under that name, not failed, taken with the fleet's server token
/// (k3s's token hash, [`restore::token_hash`]). When it is not, or the VM
/// did not come up, that VM alone is removed again and nothing else was
/// changed.
async fn create_first(
    s: &Session,
    plan: &RestorePlan,
    deadline: tokio::time::Instant,
    total: usize,
    notes: &Notes,
    report: &mut RestoreReport,
) -> Result<(), EngineError> {
    let first = &plan.reset;
    let started = tokio::time::Instant::now();
    notes(&format!(
        "[{}/{total}] create server VM {first}, then look for snapshot {} on it",
        report.done.len() + 1,
        plan.snapshot.name
    ));
    // Its snapshot settings (the drop-in) are written without a restart of
    // their own: the listing below reads them as the command's own config
    // (`k3s etcd-snapshot ls` reads config.yaml and its drop-ins and sends
    // its S3 settings with the request, which the server uses:
    // `pkg/etcd/snapshot_handler.go` `withRequest`, "overridden with etcd
    // snapshot config from the snapshot request"; facts section 3), and
    // the reset right after is a new k3s start that reads them, as is the
    // start after it (facts section 4). A restart here would only add a
    // `server_ready` to the restore's critical path.
    let mut checked = apply_only(s, std::slice::from_ref(first), false, deadline).await;
    if checked.is_ok() {
        checked = check_snapshot(s, first, &plan.snapshot.name).await;
    }
    if let Err((why, hint)) = checked {
        return Err(remove_first_again(s, first, &why, hint, notes).await);
    }
    let secs = started.elapsed().as_secs_f64();
    let outcome = format!(
        "{first} created; snapshot {} found in S3",
        plan.snapshot.name
    );
    notes(&format!("      {outcome} ({secs:.0}s)"));
    report
        .done
        .push((format!("create server VM {first}"), outcome, secs));
    Ok(())
}

/// A stop or reset on the new first server failed: before the reset
/// succeeded it holds no data but a fresh cluster's, so it is removed
/// again, as when the snapshot did not fit.
async fn undo_first(
    s: &Session,
    plan: &RestorePlan,
    step: &Step,
    why: &str,
    notes: &Notes,
) -> EngineError {
    let first = &plan.reset;
    let why = format!(
        "restore stopped at `{}`: {}",
        step.describe(),
        crate::base::text::one_line(why)
    );
    let hint = "k3s's own error is above: a snapshot taken with another server token cannot be restored with the fleet's; pick another (`exedev-k8s snapshot list -f FLEET` once a server runs)".to_string();
    remove_first_again(s, first, &why, hint, notes).await
}

/// The new first server removed again (it holds nothing yet), and the
/// error that says why the restore stopped and what became of that VM.
async fn remove_first_again(
    s: &Session,
    first: &str,
    why: &str,
    hint: String,
    notes: &Notes,
) -> EngineError {
    notes(&format!("removing {first} again"));
    match remove_only(s, first).await {
        Ok(false) => EngineError::refused(format!("{why}. Nothing was changed"), hint),
        Ok(true) => EngineError::refused(
            format!(
                "{why}. The server VM {first} made for the restore was removed again; nothing else was changed"
            ),
            hint,
        ),
        Err(e) => EngineError::RestoreStopped {
            message: format!(
                "{why}; and the server VM {first} made for the restore could not be removed again: {e}"
            ),
            hint: format!("remove {first} yourself (`ssh exe.dev rm {first}`), then: {hint}"),
        },
    }
}

/// The fleet's apply narrowed to `vms` (`--target`), every change carried
/// out and waited for as apply does; a new server's after-boot settings
/// (etcd snapshots) restart k3s only with `settle_restart` (without, the
/// caller restarts it: [`create_first`]).
async fn apply_only(
    s: &Session,
    vms: &[String],
    settle_restart: bool,
    deadline: tokio::time::Instant,
) -> Result<(), Why> {
    let settings = super::ApplySettings {
        timeout: deadline.saturating_duration_since(tokio::time::Instant::now()),
        deadline: Some(deadline),
        settle_without_restart: !settle_restart,
        ..Default::default()
    };
    let hint = |e: &EngineError| {
        crate::base::hint::Hint::hint(e)
            .unwrap_or_else(|| "see the message; then run the same restore again".to_string())
    };
    let prepared = super::prepare_apply(s, None, vms.to_vec(), &settings)
        .await
        .map_err(|e| (e.to_string(), hint(&e)))?;
    let done = super::execute(s, &prepared, &settings, quiet_hooks())
        .await
        .map_err(|e| (e.to_string(), hint(&e)))?;
    match done.report.failed.first() {
        None => Ok(()),
        Some(f) => Err((
            format!(
                "{} did not come up: {}",
                f.vm,
                crate::base::text::one_line(&f.error)
            ),
            format!(
                "look at {}'s bootstrap log (`exedev-k8s status -f FLEET`), then run the same restore again",
                f.vm
            ),
        )),
    }
}

/// The snapshot as k3s on the new first server lists it from S3.
async fn check_snapshot(s: &Session, vm: &str, name: &str) -> Result<(), Why> {
    let opts = crate::edges::remote::quick(ssh(s));
    let (json, _) = crate::edges::remote::read_restore_facts(vm, &opts)
        .await
        .map_err(|e| (
            format!("cannot read the etcd snapshots on {vm}: {}", crate::base::text::one_line(&e.to_string())),
            "check the fleet's etcd.snapshots.s3 settings (endpoint, bucket, keys): `exedev-k8s snapshot list -f FLEET` shows the same error once a server runs".to_string(),
        ))?;
    let listing: Vec<restore::Snapshot> = restore::parse_listing(&json)
        .map_err(|e| {
            (
                format!("{vm}: {e}"),
                format!("look at what `sudo k3s etcd-snapshot ls -o json` prints on {vm}"),
            )
        })?
        .into_iter()
        .filter(restore::Snapshot::in_s3)
        .collect();
    let refusal = |r: restore::Refusal| {
        let hint = crate::base::hint::Hint::hint(&r).unwrap_or_default();
        (r.to_string(), hint)
    };
    let Some(snap) = listing.iter().find(|l| l.name == name) else {
        return Err(refusal(restore::Refusal::NotFound {
            name: name.to_string(),
            count: listing.len(),
            nearest: restore::nearest(name, &listing),
        }));
    };
    if !snap.ready {
        return Err(refusal(restore::Refusal::Failed {
            name: name.to_string(),
        }));
    }
    let token = crate::edges::cluster_secrets::server_token(&s.fleet, &s.dir)
        .map_err(|e| (format!("no server token for fleet {:?}: {e}", s.fleet.name), "put the server token back where the fleet's k3s.token names it, or into .exedev-k8s/<fleet>/k3s-token beside the fleet file".to_string()))?;
    let ours = restore::token_hash(token.expose());
    if let Some(h) = snap.token_hash.as_ref().filter(|h| **h != ours) {
        return Err(refusal(restore::Refusal::TokenMismatch {
            name: name.to_string(),
            snapshot_hash: h.clone(),
            fleet_hash: ours,
        }));
    }
    Ok(())
}

/// The one VM `vm` removed by destroy's own path, narrowed to it (the
/// fleet's other VMs, the agents, stay): whether there was one to remove.
async fn remove_only(s: &Session, vm: &str) -> Result<bool, EngineError> {
    let observed = observe(&s.client, &s.fleet, false).await?;
    if !observed
        .vms
        .iter()
        .any(|v| v.vm_name == vm && crate::core::plan::owned(&s.fleet.name, v))
    {
        return Ok(false);
    }
    let opts = crate::core::plan::PlanOptions {
        targets: vec![vm.to_string()],
        destroy: true,
        members_removed: false,
        release: None,
    };
    let plan = s.diff(&opts, &observed)?;
    let prepared = super::Prepared {
        plan,
        observed,
        kube: Arc::new(kube::lazy(s, None)),
        reachable: Err(kube::Unreachable::Teardown),
        reviewed: false,
        lease: None,
    };
    let done = super::execute(
        s,
        &prepared,
        &super::ApplySettings::default(),
        quiet_hooks(),
    )
    .await?;
    match done.report.failed.first() {
        None => Ok(true),
        Some(f) => Err(EngineError::RestoreStopped {
            message: format!("{}: {}", f.vm, crate::base::text::one_line(&f.error)),
            hint: String::new(),
        }),
    }
}

/// After the reset: the Nodes the snapshot brought back for the other,
/// gone servers (every one but the first, or the running plan's
/// `recreate`) deleted (after the reset etcd has the first server as its
/// only member, so no member is behind them: k3s's `RemovePeer` counts a
/// member not found as done, `pkg/etcd/etcd.go:1157-1206`; left, apply
/// would plan them as lost servers below quorum and refuse), then those
/// servers created by apply's own path: they join the restored cluster.
async fn create_others(
    s: &Session,
    plan: &RestorePlan,
    api: &LazyClient,
    deadline: tokio::time::Instant,
    total: usize,
    notes: &Notes,
    report: &mut RestoreReport,
) -> Result<(), EngineError> {
    // Every server gone: the created ones after the first; else the gone
    // ones the servers-running plan recreates (`RestorePlan::recreate`).
    let others = match plan.create.get(1..) {
        Some(o) if !o.is_empty() => o,
        _ => &plan.recreate[..],
    };
    let started = tokio::time::Instant::now();
    let stopped = |why: String| {
        EngineError::RestoreStopped {
        message: format!(
            "restore stopped after {} was restored, creating {}: {why}",
            plan.reset,
            others.join(", ")
        ),
        hint: "the restored cluster runs on its first server: run the same `exedev-k8s restore` again; it resets that server again, deletes the gone servers' restored Nodes and creates them".to_string(),
    }
    };
    notes(&format!(
        "[{}/{total}] delete the restored Nodes of {}, then create them anew",
        report.done.len() + 1,
        others.join(", ")
    ));
    let client = api.get().await.map_err(|e| stopped(e.to_string()))?;
    for vm in others {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let gone = crate::edges::cluster::forget_node(&client, vm, left)
            .await
            .map_err(|e| stopped(e.to_string()))?;
        if !gone {
            return Err(stopped(format!("its Node {vm} is still there")));
        }
    }
    apply_only(s, others, true, deadline)
        .await
        .map_err(|(why, _)| stopped(why))?;
    let secs = started.elapsed().as_secs_f64();
    let outcome = format!("{} created, joined", others.join(", "));
    notes(&format!("      {outcome} ({secs:.0}s)"));
    report.done.push((
        format!("create server VM(s) {}", others.join(", ")),
        outcome,
        secs,
    ));
    Ok(())
}

/// Agents whose VM made its node password after the snapshot was taken (a
/// VM recreated under the name since): the restored datastore can hold
/// only an earlier VM's password for that name, in its Node's
/// node-password Secret, and k3s would refuse the agent until that Node
/// goes (`docs/facts/node-password.md`). Their restored Node, if any, is
/// deleted first (the Secret is collected with it). The password file's
/// time (`stat`, no secret read) against the snapshot's: an agent whose
/// file cannot be read or whose times do not parse is left as it is.
async fn forget_newer_agents(
    plan: &RestorePlan,
    agents: &[&Step],
    api: &LazyClient,
    opts: &crate::edges::ssh::SshOptions,
    deadline: tokio::time::Instant,
    notes: &Notes,
) -> Result<(), EngineError> {
    let Some(taken) = humantime::parse_rfc3339_weak(&plan.snapshot.created)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    else {
        return Ok(());
    };
    let vms: Vec<String> = agents.iter().map(|st| st.vm().to_string()).collect();
    let made = crate::edges::remote::bounded(vms.clone(), AGENT_FANOUT, opts.deadline, {
        let opts = opts.clone();
        move |vm: String| {
            let opts = opts.clone();
            async move {
                let cmd = ["stat", "-c", "%Y", crate::base::names::NODE_PASSWORD_FILE];
                let out = crate::edges::ssh::run(&vm, &cmd, &opts).await;
                out.map_err(|e| e.to_string())
            }
        }
    })
    .await;
    let newer: Vec<&String> = vms
        .iter()
        .zip(made)
        .filter_map(|(vm, r)| {
            let secs: u64 = r.ok()?.trim().parse().ok()?;
            (secs > taken.as_secs()).then_some(vm)
        })
        .collect();
    if newer.is_empty() {
        return Ok(());
    }
    let stopped = |why: String| {
        EngineError::RestoreStopped {
        message: format!("restore stopped before the agents reconnected: {why}"),
        hint: "delete the named agents' Nodes (`kubectl delete node NAME`), then restart k3s-agent on them".to_string(),
    }
    };
    let client = api.get().await.map_err(|e| stopped(e.to_string()))?;
    for vm in newer {
        notes(&format!(
            "      {vm} made its node password after the snapshot: a restored node of its name (an earlier VM's) is deleted first"
        ));
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let gone = crate::edges::cluster::forget_node(&client, vm, left)
            .await
            .map_err(|e| stopped(e.to_string()))?;
        if !gone {
            return Err(stopped(format!("the restored Node {vm} is still there")));
        }
    }
    Ok(())
}

/// Runs one step's script on `vm` as the in-place change script runs
/// ([`crate::edges::upgrade::RUNNER`]: read whole from stdin, then run with stdin
/// from /dev/null, so `sudo` cannot eat the rest of it): the last line it
/// printed, or why it failed.
async fn run_step(
    vm: &str,
    script: &str,
    opts: &crate::edges::ssh::SshOptions,
) -> Result<String, crate::edges::ssh::SshError> {
    let script = crate::base::secret::Secret::new(script);
    let out = crate::edges::ssh::run_with_input(
        vm,
        &["bash", "-c", crate::edges::upgrade::RUNNER],
        Some(&script),
        opts,
    )
    .await?;
    Ok(out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("done")
        .to_string())
}

/// Waits until each of `vms` is a Ready Node, through `api`.
async fn wait_nodes(
    s: &Session,
    api: &LazyClient,
    vms: &[String],
    deadline: tokio::time::Instant,
) -> Result<usize, String> {
    // The server was just (re)started: its API may refuse connections for
    // a moment after /readyz said ok through the VM's own loopback.
    let client = loop {
        match api.get().await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() + POLL < deadline => {
                let _ = e;
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let expected: Vec<crate::core::fleet::DesiredVm> = vms
        .iter()
        .filter_map(|vm| crate::core::plan::placement::desired_named(&s.fleet, vm))
        .collect();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    crate::edges::cluster::wait_ready(&client, &expected, left, POLL, |_| {})
        .await
        .map(|r| r.ready_count())
        .map_err(|e| e.to_string())
}

fn incomplete(step: &Step, why: &str, report: &RestoreReport) -> EngineError {
    let done = report.done.len();
    EngineError::RestoreStopped {
        message: format!(
            "restore stopped at `{}`: {}. The {done} step(s) before it were done",
            step.describe(),
            crate::base::text::one_line(why)
        ),
        hint: "fix what the message names and run the same restore again with --force: it stops every server and starts over from the reset".to_string(),
    }
}

/// What `restore --drill` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DrillReport {
    /// The throw-away fleet.
    pub fleet: String,
    pub snapshot: String,
    /// Node objects of the restored datastore (the live fleet's, from the
    /// snapshot, beside the drill's own server).
    pub nodes: Vec<String>,
    /// Namespaces of the restored datastore.
    pub namespaces: Vec<String>,
    /// Seconds from the first change to the restored server's `/readyz`.
    pub restore_seconds: f64,
    /// Whether the throw-away fleet was destroyed (its VMs removed).
    pub destroyed: bool,
}

/// `restore --drill`: the snapshot restored into the throw-away fleet
/// `<name>-drill` ([`restore::drill_fleet`]: its own VM, its own ownership
/// tag), checked (its datastore holds the live fleet's Nodes: the
/// snapshot's objects), reported, destroyed. The live fleet is not read
/// or changed: no VM of it, no SSH to it, not its API or lease. The
/// snapshot must be in S3 (a local one is on a live server's disk only);
/// the drill's server gets the fleet's S3 settings and its token.
pub async fn drill(
    s: &Session,
    snapshot: &str,
    timeout: Duration,
    notes: &Notes,
) -> Result<DrillReport, EngineError> {
    if !restore::is_snapshot_name(snapshot) {
        return Err(EngineError::refused(
            format!(
                "{:?} is not a snapshot name k3s makes (letters, digits, '.', '_', '-'). Nothing was changed",
                crate::base::text::one_line(snapshot)
            ),
            "list the snapshots with `exedev-k8s snapshot list -f FLEET`",
        ));
    }
    if s.fleet
        .k3s
        .snapshots
        .as_ref()
        .and_then(|sn| sn.s3.as_ref())
        .is_none()
    {
        return Err(EngineError::refused(
            format!(
                "fleet {:?} keeps its snapshots on its servers' disks only (no etcd.snapshots.s3): a drill restores onto a throw-away VM, which can fetch a snapshot from S3 only. Nothing was changed",
                s.fleet.name
            ),
            "add etcd.snapshots.s3 to the fleet and apply it, take a snapshot (`exedev-k8s snapshot save`), then drill that one",
        ));
    }
    let Some(fleet) = restore::drill_fleet(&s.fleet) else {
        return Err(EngineError::refused(
            format!(
                "{:?}-drill is too long for exe.dev's VM names. Nothing was changed",
                s.fleet.name
            ),
            "drill a fleet with a shorter metadata.name",
        ));
    };
    let token = crate::edges::cluster_secrets::server_token(&s.fleet, &s.dir).map_err(|e| {
        EngineError::refused(
            format!(
                "no server token for fleet {:?} ({e}): a snapshot is encrypted to the server token it was taken with. Nothing was changed",
                s.fleet.name
            ),
            "put the server token back where the fleet's k3s.token names it, or into .exedev-k8s/<fleet>/k3s-token beside the fleet file",
        )
    })?;
    let d = Session {
        fleet,
        fingerprint: s.fingerprint.clone(),
        path: s.path.clone(),
        dir: s.dir.clone(),
        client: s.client.clone(),
        // Never the live fleet's kubeconfig: the drill has its own.
        kube: super::KubeSettings {
            kubeconfig: None,
            ..s.kube.clone()
        },
        channel_server: s.channel_server.clone(),
        // The drill's objects are the snapshot's; the live fleet's
        // `manifests:` are not applied to it.
        manifests: Vec::new(),
    };
    // The drill is a new fleet: its own stored token would be generated;
    // the snapshot needs the live one.
    if d.fleet.k3s.token.is_none() {
        let path = crate::edges::cluster_secrets::token_path(&d.dir, &d.fleet.name);
        crate::edges::cluster_secrets::write_private(&path, token.expose())?;
    }
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let result = drill_in(&d, snapshot, &token, deadline, notes).await;
    // Whatever happened, the throw-away fleet goes.
    notes(&format!("destroying the drill fleet {}", d.fleet.name));
    let destroyed = destroy_drill(&d).await;
    let _ = crate::edges::cluster_secrets::purge(&d.dir, &d.fleet.name);
    match (result, destroyed) {
        (Ok(mut report), Ok(())) => {
            report.destroyed = true;
            Ok(report)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(e)) | (Err(_), Err(e)) => Err(EngineError::RestoreStopped {
            message: format!(
                "the drill fleet {} could not be destroyed: {e}",
                d.fleet.name
            ),
            hint: format!(
                "remove its VMs by hand (`ssh exe.dev ls`, names {}-*), or run the drill again: it starts by creating them anew",
                d.fleet.name
            ),
        }),
    }
}

/// The drill's fleet created, restored from the snapshot and read.
async fn drill_in(
    d: &Session,
    snapshot: &str,
    token: &crate::base::secret::Secret,
    deadline: tokio::time::Instant,
    notes: &Notes,
) -> Result<DrillReport, EngineError> {
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let settings = super::ApplySettings {
        timeout: left(),
        deadline: Some(deadline),
        ..Default::default()
    };
    notes(&format!("creating the drill fleet {}", d.fleet.name));
    let started = tokio::time::Instant::now();
    let prepared = super::prepare_apply(d, None, Vec::new(), &settings).await?;
    let done = super::execute(d, &prepared, &settings, quiet_hooks()).await?;
    if let Some(f) = done.report.failed.first() {
        return Err(EngineError::RestoreStopped {
            message: format!(
                "the drill's server {} did not come up: {}",
                f.vm,
                crate::base::text::one_line(&f.error)
            ),
            hint: "look at its bootstrap log before it is destroyed, or run the drill again"
                .to_string(),
        });
    }
    let vm =
        crate::base::names::fleet_vm_name(&d.fleet.name, crate::core::fleet::CONTROL_PLANE_POOL, 1);
    let mut opts = crate::edges::remote::quick(ssh(d));
    let snap = drill_snapshot(&vm, snapshot, token, &opts).await?;
    let steps = [
        Step::Stop { vm: vm.clone() },
        Step::Reset {
            vm: vm.clone(),
            restore_path: snap.restore_path(),
            from_s3: true,
        },
    ];
    for step in &steps {
        notes(&step.describe());
        opts.deadline = left();
        run_step(&vm, &restore::step_script(step), &opts)
            .await
            .map_err(|e| EngineError::RestoreStopped {
                message: format!("the drill stopped at `{}`: {e}", step.describe()),
                hint: "the snapshot could not be restored onto a fresh server: do not count on it; try another".to_string(),
            })?;
    }
    let restore_seconds = started.elapsed().as_secs_f64();
    let nodes = drill_names(&vm, "nodes", &opts).await?;
    let namespaces = drill_names(&vm, "namespaces", &opts).await?;
    // The snapshot's objects: the nodes of the fleet it was taken from.
    let live_nodes: Vec<&String> = nodes.iter().filter(|n| **n != vm).collect();
    if live_nodes.is_empty() {
        return Err(EngineError::RestoreStopped {
            message: format!(
                "the drill's server {vm} came up, but its datastore holds no Node but its own: snapshot {snapshot:?} was not restored"
            ),
            hint: "do not count on this snapshot; try another".to_string(),
        });
    }
    Ok(DrillReport {
        fleet: d.fleet.name.clone(),
        snapshot: snapshot.to_string(),
        nodes,
        namespaces,
        restore_seconds,
        destroyed: false,
    })
}

/// The S3 snapshot to drill as the drill's own server lists it (k3s lists
/// the bucket), checked against the live fleet's token before any reset.
async fn drill_snapshot(
    vm: &str,
    snapshot: &str,
    token: &crate::base::secret::Secret,
    opts: &crate::edges::ssh::SshOptions,
) -> Result<restore::Snapshot, EngineError> {
    let (json, _) = crate::edges::remote::read_restore_facts(vm, opts)
        .await
        .map_err(|e| EngineError::refused(
            format!("cannot read the etcd snapshots on the drill's server {vm}: {e}"),
            "check the fleet's etcd.snapshots.s3 settings (endpoint, bucket, keys): `exedev-k8s snapshot list -f FLEET` shows the same error",
        ))?;
    let listing = restore::parse_listing(&json).map_err(|e| {
        EngineError::refused(
            format!("{vm}: {e}"),
            format!("look at what `sudo k3s etcd-snapshot ls -o json` prints on {vm}"),
        )
    })?;
    let s3: Vec<restore::Snapshot> = listing.into_iter().filter(|l| l.in_s3()).collect();
    let Some(snap) = s3.iter().find(|l| l.name == snapshot) else {
        let nearest = restore::Refusal::NotFound {
            name: snapshot.to_string(),
            count: s3.len(),
            nearest: s3.iter().map(|l| l.name.clone()).rev().take(3).collect(),
        };
        return Err(EngineError::refused(
            format!("{nearest} in S3"),
            "list the snapshots with `exedev-k8s snapshot list -f FLEET` and drill one whose place is s3",
        ));
    };
    if let Some(h) = snap
        .token_hash
        .as_ref()
        .filter(|h| **h != restore::token_hash(token.expose()))
    {
        return Err(EngineError::refused(
            format!(
                "snapshot {snapshot:?} was taken with another server token (its token hash {h})"
            ),
            "drill a snapshot taken since the token last changed",
        ));
    }
    Ok(snap.clone())
}

/// The names of one kind of object in the drill server's restored
/// datastore, read with k3s's own kubectl (escaped: they came from the
/// snapshot).
async fn drill_names(
    vm: &str,
    what: &'static str,
    opts: &crate::edges::ssh::SshOptions,
) -> Result<Vec<String>, EngineError> {
    crate::edges::ssh::run(
        vm,
        &["sudo", "-n", "k3s", "kubectl", "get", what, "-o", "name"],
        opts,
    )
    .await
    .map(|out| {
        out.lines()
            .filter_map(|l| {
                l.split_once('/')
                    .map(|(_, n)| crate::base::text::one_line(n).into_owned())
            })
            .collect()
    })
    .map_err(|e| EngineError::RestoreStopped {
        message: format!("the drill cannot read the restored {what} on {vm}: {e}"),
        hint: "run the drill again".to_string(),
    })
}

/// Hooks for an apply or destroy the drill runs: no progress shown.
fn quiet_hooks() -> super::Hooks {
    super::Hooks {
        reporter: Arc::new(|_| {}),
        cancel: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    }
}

/// Every VM of the drill's fleet removed.
async fn destroy_drill(d: &Session) -> Result<(), EngineError> {
    let prepared = super::prepare_destroy(d, None, None).await?;
    let settings = super::ApplySettings::default();
    let done = super::execute(d, &prepared, &settings, quiet_hooks()).await?;
    match done.report.failed.first() {
        None => Ok(()),
        Some(f) => Err(EngineError::RestoreStopped {
            message: format!("{}: {}", f.vm, crate::base::text::one_line(&f.error)),
            hint: String::new(),
        }),
    }
}
