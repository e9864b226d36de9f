//! The operations — plan, apply, destroy, status — as calls the CLI, the
//! benchmarks and the tests all make the same way.
//!
//! The engine checks its own preconditions, as Terraform's `Context.Apply`
//! does: a secret that does not resolve, a setup script over exe.dev's
//! 10 KiB, a deletion whose node cannot be drained, the teardown of a
//! protected fleet, a saved plan gone stale — each stops the operation
//! before the first change. It never touches the terminal: progress goes to
//! a [`apply::Reporter`], notes to a [`Notes`] callback, and the question
//! "go ahead?" stays with the caller, between [`prepare_apply`] and
//! [`execute`].

mod check;
mod error;
mod hooks;
mod kube;
mod restore;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use check::{CheckRequest, Checker};
pub use error::EngineError;
pub use kube::{Converged, KubeSettings, user_kubeconfig_plugins};
pub use restore::{
    DrillReport, PreparedRestore, RestoreReport, RestoreRequest, drill, execute_restore,
    prepare_restore,
};
pub use status::{StatusRequest, status};

use crate::apply::{self, ApplyOptions, ApplyReport};
use crate::core::api::command::FleetOp;
use crate::core::fleet::{self, Fleet, Role};
use crate::core::plan::{self, Mode, Observed, Plan, PlanOptions, ReleaseChoice};
use crate::edges::client::Client;
use crate::edges::cluster_secrets::{self, SecretCheck};
use crate::edges::kubeaccess::LazyClient;
use crate::edges::observe::observe;

/// Human notes an operation makes along the way (progress of a wait, a
/// correction made); the caller decides where they go.
pub type Notes = Arc<dyn Fn(&str) + Send + Sync>;

/// Commands a fleet operation's token must grant, from the catalogue.
pub fn cmds(op: FleetOp) -> Vec<&'static str> {
    crate::core::api::command::commands_for(op)
}

/// A fleet, loaded, with how to reach exe.dev and its cluster.
pub struct Session {
    pub fleet: Fleet,
    /// Fingerprint of the fleet file's bytes (saved plans record it).
    pub fingerprint: String,
    /// The fleet file as given.
    pub path: PathBuf,
    /// The directory its relative paths and local state hang off.
    pub dir: PathBuf,
    pub client: Client,
    pub kube: KubeSettings,
    /// k3s's channel server, asked which release `k3s.channel` points at
    /// when planning (as install.sh's `INSTALL_K3S_CHANNEL_URL`).
    pub channel_server: String,
    /// The objects of the fleet's `manifests:`, applied once every node is
    /// Ready (`--wait`).
    pub manifests: Vec<serde_json::Value>,
}

impl Session {
    /// Reads and validates the fleet file; no call is made.
    pub fn load(path: &Path) -> Result<crate::edges::workspace::LoadedFleet, EngineError> {
        // A missing file is a wrong path, not an invalid fleet: said plainly.
        if std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            return Err(EngineError::FleetMissing {
                path: path.to_path_buf(),
            });
        }
        crate::edges::workspace::load_fleet(path).map_err(|errors| EngineError::Fleet {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// A session on a loaded fleet.
    pub fn new(
        loaded: crate::edges::workspace::LoadedFleet,
        path: &Path,
        client: Client,
        kube: KubeSettings,
    ) -> Session {
        Session {
            fleet: loaded.fleet,
            fingerprint: loaded.fingerprint,
            path: path.to_path_buf(),
            dir: crate::edges::workspace::fleet_dir(path),
            client,
            kube,
            channel_server: crate::base::release::DEFAULT_CHANNEL_SERVER.to_string(),
            manifests: loaded.manifests,
        }
    }

    /// The same session, looking channels up on `url` instead of k3s's own
    /// channel server (tests and the emulator's VM world serve one).
    pub fn with_channel_server(mut self, url: impl Into<String>) -> Session {
        self.channel_server = url.into();
        self
    }

    /// The release a new plan installs when the fleet follows a channel:
    /// looked up now, once (`None`: the fleet pins `k3s.version`). A lookup
    /// that fails is the plan's to judge ([`ReleaseChoice::Channel`]).
    async fn release_choice(&self) -> Option<ReleaseChoice> {
        let name = self.fleet.k3s.release.channel()?.to_string();
        let resolved = crate::edges::channel::resolve(&self.channel_server, &name).await;
        Some(ReleaseChoice::Channel { name, resolved })
    }

    fn diff(&self, opts: &PlanOptions, observed: &Observed) -> Result<Plan, EngineError> {
        let mut p = plan::diff(&self.fleet, &self.fingerprint, observed, opts)?;
        p.fleet_file = self.path.display().to_string();
        Ok(p)
    }

    fn owns_any(&self, observed: &Observed) -> bool {
        observed
            .vms
            .iter()
            .any(|v| plan::owned(&self.fleet.name, v))
    }

    /// The fleet's servers that exist and run: the join targets at the
    /// start of an apply.
    fn running_servers(&self, observed: &Observed) -> Vec<String> {
        let tag = fleet::role_tag(Role::Server);
        observed
            .vms
            .iter()
            .filter(|v| plan::owned(&self.fleet.name, v) && v.tags.contains(&tag) && v.is_running())
            .map(|v| v.vm_name.clone())
            .collect()
    }

    /// The server to reach the API through when the first one is not
    /// running (`None`: the first, [`crate::edges::kubeaccess::first_server`]):
    /// the lowest-named running server, so a lost first server does not
    /// hide the cluster, and with it the lost server's Node, from a plan.
    fn api_via(&self, observed: &Observed) -> Option<String> {
        let running = self.running_servers(observed);
        let first = crate::edges::kubeaccess::first_server(&self.fleet);
        if running.is_empty() || running.contains(&first) {
            return None;
        }
        running.into_iter().min()
    }

    /// Checks every secret the plan's new VMs need; all failures at once.
    fn check_secrets(
        &self,
        observed: &Observed,
        skip: &[String],
    ) -> Result<SecretCheck, EngineError> {
        cluster_secrets::check(
            &self.fleet,
            &self.path.display().to_string(),
            &self.dir,
            self.owns_any(observed),
            skip,
        )
        .map_err(|errors| EngineError::MissingSecrets { errors })
    }
}

/// What `plan` is asked.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// Only these VMs or pools.
    pub targets: Vec<String>,
    /// Plan the teardown of every VM the fleet owns.
    pub destroy: bool,
    /// Secret references the plan may leave unchecked (`--skip-secret-check`).
    pub skip_secret_check: Vec<String>,
}

/// A plan and what it was made from.
#[derive(Debug)]
pub struct Planned {
    pub plan: Plan,
    pub observed: Observed,
    /// What the secret check looked at (only when the plan creates VMs).
    pub secrets: Option<SecretCheck>,
}

/// Reads exe.dev (and, when a kubeconfig is at hand, the cluster) and
/// computes the plan. Fails where apply would: every secret the plan's new
/// VMs need must resolve, unless named in `skip_secret_check`.
pub async fn plan(s: &Session, req: PlanRequest) -> Result<Planned, EngineError> {
    let release = if req.destroy {
        None
    } else {
        s.release_choice().await
    };
    let mut observed = observe(&s.client, &s.fleet, !req.destroy).await?;
    // Kept alive while the plan is made: it may hold the SSH tunnel.
    let lazy = (!req.destroy).then(|| kube::lazy(s, s.api_via(&observed).as_deref()));
    let kube = match &lazy {
        Some(l) => kube::now(s, l, false).await,
        None => Err(kube::Unreachable::Teardown),
    };
    observed.nodes = kube::observe_nodes(&kube).await;
    let mut p = s.diff(
        &PlanOptions {
            targets: req.targets,
            destroy: req.destroy,
            members_removed: kube.is_ok(),
            release,
        },
        &observed,
    )?;
    if needs_drain(&p)
        && let Err(why) = &kube
    {
        p.warnings.push(drain_warning(why));
    }
    // New VMs carry secrets in their setup scripts, in-place k3s changes
    // the secret flags' values. A refused plan will not be carried out.
    let secrets = if p.needs_secrets() && !p.is_refused() {
        Some(s.check_secrets(&observed, &req.skip_secret_check)?)
    } else {
        None
    };
    Ok(Planned {
        plan: p,
        observed,
        secrets,
    })
}

/// A refused plan ([`Plan::refusals`]) as an error, once it has been shown.
pub fn refused(p: &Plan) -> EngineError {
    EngineError::PlanRefused {
        refusals: p.refusals.clone(),
    }
}

/// Refuses to save a plan apply would refuse: a refused plan, the teardown
/// of a protected fleet.
pub fn check_savable(s: &Session, p: &Plan, out: &Path) -> Result<(), EngineError> {
    if p.is_refused() {
        return Err(refused(p));
    }
    if protects(&s.fleet, p.mode) {
        return Err(EngineError::refused(
            format!(
                "not saving {}: fleet {:?} is protected (metadata.protect: true), so apply would refuse this teardown plan",
                out.display(),
                s.fleet.name
            ),
            "set protect: false in the fleet file first if you mean it",
        ));
    }
    Ok(())
}

/// How apply and destroy carry out their changes.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Agents changed at once.
    pub parallelism: usize,
    /// Delete or replace VMs without draining their nodes.
    pub skip_drain: bool,
    /// Delete pods whose eviction a PodDisruptionBudget refuses.
    pub force_drain: bool,
    /// How long one drain may take.
    pub drain_timeout: Duration,
    /// The most the whole apply may take (`--timeout`), counted from
    /// `deadline`'s start: every readiness wait and change ends by then,
    /// and no change starts after it.
    pub timeout: Duration,
    /// When the apply must be over; `None`: `timeout` after [`execute`]
    /// starts. The CLI sets it when the command starts, so preparing counts.
    pub deadline: Option<tokio::time::Instant>,
    /// Fetch the kubeconfig over SSH when none is at hand (`--wait`).
    pub fetch_kubeconfig: bool,
    /// Take the fleet's lease before planning ([`crate::edges::lease`]); `None`:
    /// none (benches, tests that drive one apply).
    pub lock: Option<crate::edges::lease::LockRequest>,
    /// A new server's after-boot settings (etcd snapshots) written without
    /// restarting k3s ([`ApplyOptions::settle_restart`]): restore's first
    /// server only.
    pub settle_without_restart: bool,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            parallelism: 16,
            skip_drain: false,
            force_drain: false,
            drain_timeout: Duration::from_secs(300),
            timeout: Duration::from_secs(900),
            deadline: None,
            fetch_kubeconfig: false,
            lock: None,
            settle_without_restart: false,
        }
    }
}

/// A plan ready to be carried out, with what carrying it out needs.
pub struct Prepared {
    pub plan: Plan,
    pub observed: Observed,
    /// The API as this operation reaches it (through a server a roll leaves
    /// alone), and whether it answered when prepared.
    kube: Arc<LazyClient>,
    reachable: Result<(), kube::Unreachable>,
    /// True when the plan is a reviewed, saved one (no question to ask).
    pub reviewed: bool,
    /// The fleet's lease, held from before planning until [`release`],
    /// with the client it is renewed through (kept: its tunnel must live).
    lease: Option<(crate::edges::lease::LeaseGuard, Arc<LazyClient>)>,
}

/// Gives up the fleet's lease, if this apply holds it: the next apply of
/// the fleet may start at once instead of waiting for it to expire.
pub async fn release(prepared: &mut Prepared) {
    if let Some((lease, _client)) = prepared.lease.take() {
        lease.release().await;
    }
}

impl Prepared {
    /// The ID of the fleet's lease this apply holds (what `--force-unlock`
    /// would name), if it holds one.
    pub fn lease_id(&self) -> Option<&str> {
        self.lease.as_ref().map(|(l, _)| l.id())
    }

    /// Why the Kubernetes API could not be reached, when it could not.
    pub fn kube_unreachable(&self) -> Option<&kube::Unreachable> {
        self.reachable.as_ref().err()
    }
}

/// Reads exe.dev and the cluster, and makes the plan to apply: `saved` (a
/// reviewed plan, refused when it disagrees with the fleet and exe.dev now:
/// [`check_saved`]) or a fresh one for `targets`.
pub async fn prepare_apply(
    s: &Session,
    saved: Option<(Plan, Option<PathBuf>)>,
    targets: Vec<String>,
    settings: &ApplySettings,
) -> Result<Prepared, EngineError> {
    if let Some((p, planfile)) = &saved {
        saved_before_calls(s, p, planfile.as_deref(), Mode::Apply)?;
    }
    let mut observed = observe(&s.client, &s.fleet, true).await?;
    // Only an existing cluster can have a kubeconfig to fetch; a new one
    // has none until its first server is up (apply connects then).
    let lazy = Arc::new(kube::lazy(s, s.api_via(&observed).as_deref()));
    let client = kube::now_served(
        s,
        &lazy,
        settings.fetch_kubeconfig && s.owns_any(&observed),
        !s.running_servers(&observed).is_empty(),
    )
    .await;
    // One writer per fleet: the lease is taken before planning, so a plan
    // made after waiting for another run sees what that run changed.
    let lease = match (&settings.lock, &client) {
        (Some(req), Ok(c)) => {
            let (guard, waited) = crate::edges::lease::acquire(
                c,
                &s.fleet.name,
                crate::edges::lease::Holder::me(),
                req,
            )
            .await
            .map_err(lease_error)?;
            if waited {
                observed = observe(&s.client, &s.fleet, true).await?;
            }
            Some(guard)
        }
        (Some(req), Err(why)) if s.owns_any(&observed) => {
            (req.note)(&format!(
                "note: no lease taken ({why}): another apply of this fleet is not kept out while this one runs"
            ));
            None
        }
        _ => None,
    };
    let planned = plan_apply(s, saved, targets, settings, observed, lazy.clone(), client).await;
    match planned {
        // The lease's client (and its tunnel) lives as long as the lease.
        Ok(p) => Ok(Prepared {
            lease: lease.map(|l| (l, lazy)),
            ..p
        }),
        Err(e) => {
            // A refused or stale plan changes nothing: the lease goes at once.
            if let Some(l) = lease {
                l.release().await;
            }
            Err(e)
        }
    }
}

/// A lease not taken: refused, with its advice.
fn lease_error(e: crate::edges::lease::LeaseError) -> EngineError {
    let hint = crate::base::hint::Hint::hint(&e).unwrap_or_default();
    EngineError::refused(e.to_string(), hint)
}

/// [`prepare_apply`]'s plan, once the lease is held.
async fn plan_apply(
    s: &Session,
    saved: Option<(Plan, Option<PathBuf>)>,
    targets: Vec<String>,
    settings: &ApplySettings,
    mut observed: Observed,
    lazy: Arc<LazyClient>,
    client: Result<::kube::Client, kube::Unreachable>,
) -> Result<Prepared, EngineError> {
    observed.nodes = kube::observe_nodes(&client).await;
    let reachable = client.map(|_| ());
    let members_removed = reachable.is_ok() && !settings.skip_drain;
    let opts = PlanOptions {
        targets: saved.as_ref().map_or(targets, |(p, _)| p.targets.clone()),
        destroy: false,
        members_removed,
        // Always the release the fleet calls for now, never the saved
        // plan's: a saved one that differs is refused (check_saved).
        release: s.release_choice().await,
    };
    let (plan, reviewed) = match saved {
        Some((saved, planfile)) => (check_saved(s, &saved, planfile, &opts, &observed)?, true),
        None => {
            let mut p = s.diff(&opts, &observed)?;
            if needs_drain(&p)
                && let Err(why) = &reachable
            {
                p.warnings.push(drain_warning(why));
            }
            (p, false)
        }
    };
    // Rolling server changes talk to a server they leave alone.
    let kube = match plan.api_server(&s.running_servers(&observed)) {
        Some(via) if via != lazy.via() => Arc::new(kube::lazy(s, Some(&via))),
        _ => lazy,
    };
    Ok(Prepared {
        plan,
        observed,
        kube,
        reachable,
        reviewed,
        lease: None,
    })
}

/// What a saved plan must be before any call is made: of the operation
/// carrying it out (`apply PLANFILE` never tears a fleet down; `destroy
/// PLANFILE` never applies), of this fleet, not refused, and not the
/// teardown of a protected fleet.
fn saved_before_calls(
    s: &Session,
    saved: &Plan,
    planfile: Option<&Path>,
    carrying_out: Mode,
) -> Result<(), EngineError> {
    check_saved_mode(saved, planfile, carrying_out)?;
    if saved.fleet != s.fleet.name {
        return Err(EngineError::Stale {
            source: plan::file::PlanFileError::WrongFleet {
                planned: crate::base::text::one_line(&saved.fleet).into_owned(),
                now: s.fleet.name.clone(),
            },
            fleet: s.path.clone(),
            planfile: planfile.map(Path::to_path_buf),
        });
    }
    if let (Some(planned), Some(now)) =
        (&saved.repository, crate::edges::workspace::ci_repository())
        && *planned != now
    {
        return Err(EngineError::Stale {
            source: plan::file::PlanFileError::WrongRepository {
                planned: crate::base::text::one_line(planned).into_owned(),
                now,
            },
            fleet: s.path.clone(),
            planfile: planfile.map(Path::to_path_buf),
        });
    }
    if protects(&s.fleet, saved.mode) {
        return Err(protected(&s.fleet));
    }
    if saved.is_refused() {
        return Err(refused(saved));
    }
    Ok(())
}

/// `apply PLANFILE` carries out apply plans only, `destroy PLANFILE`
/// teardown plans only: checked before the fleet is even read.
pub fn check_saved_mode(
    saved: &Plan,
    planfile: Option<&Path>,
    carrying_out: Mode,
) -> Result<(), EngineError> {
    let file = planfile.map_or_else(|| "the saved plan".to_string(), |p| p.display().to_string());
    if saved.mode == carrying_out {
        return Ok(());
    }
    Err(match saved.mode {
        Mode::Destroy => EngineError::refused(
            format!(
                "{file} is a teardown plan (plan --destroy): it deletes {} VM(s) of fleet {:?}, and apply never carries out a teardown. Nothing was changed",
                saved.changes.len(),
                crate::base::text::one_line(&saved.fleet)
            ),
            format!(
                "to tear the fleet down, review the plan (exedev-k8s show {file}) and run `exedev-k8s destroy {file}`; to converge on the fleet, make a plan without --destroy"
            ),
        ),
        Mode::Apply => EngineError::refused(
            format!(
                "{file} is an apply plan, not a teardown plan: destroy carries out only plans made with `plan --destroy`. Nothing was changed"
            ),
            format!(
                "carry it out with `exedev-k8s apply {file}`, or make a teardown plan: exedev-k8s plan -f FLEET --destroy --out destroy.json"
            ),
        ),
    })
}

/// Re-derives the plan from the fleet file and what exe.dev (and the
/// cluster) hold now, and refuses `saved` when it disagrees in anything
/// apply would act on: the fleet file, the mode, the k3s release (a
/// pinned one must be the fleet's; a channel's what the channel resolves
/// to now), the VMs, the changes; or when the re-derived plan is refused
/// (a saved plan cannot drop a refusal). Returns the re-derived plan,
/// which is what is carried out: nothing but the review decision comes
/// from the file.
///
/// A plan made without the Kubernetes API (a pull request's) is compared
/// with one made with the same knowledge: without the Nodes, labels and
/// taints are judged by what the VMs' comments record, in both.
fn check_saved(
    s: &Session,
    saved: &Plan,
    planfile: Option<PathBuf>,
    opts: &PlanOptions,
    observed: &Observed,
) -> Result<Plan, EngineError> {
    let as_seen;
    let compared = if saved.nodes_observed {
        observed
    } else {
        as_seen = Observed {
            nodes: None,
            ..observed.clone()
        };
        &as_seen
    };
    let fresh = s.diff(opts, compared)?;
    if let Err(e) = plan::file::check_fresh(saved, &fresh) {
        return Err(if e.is_stale() {
            EngineError::Stale {
                source: e,
                fleet: s.path.clone(),
                planfile,
            }
        } else {
            e.into()
        });
    }
    if fresh.is_refused() {
        return Err(refused(&fresh));
    }
    Ok(fresh)
}

/// Reads exe.dev and makes the teardown plan: `saved` (a reviewed teardown
/// plan, `destroy PLANFILE`, refused when it disagrees with exe.dev now)
/// or a fresh one. A protected fleet is refused before any call.
///
/// With `lock`, the fleet's lease is taken first when a kubeconfig is at
/// hand (destroy needs no API otherwise), so a teardown does not run under
/// an apply.
pub async fn prepare_destroy(
    s: &Session,
    saved: Option<(Plan, Option<PathBuf>)>,
    lock: Option<&crate::edges::lease::LockRequest>,
) -> Result<Prepared, EngineError> {
    check_destroyable(&s.fleet)?;
    if let Some((p, planfile)) = &saved {
        saved_before_calls(s, p, planfile.as_deref(), Mode::Destroy)?;
    }
    let mut observed = observe(&s.client, &s.fleet, false).await?;
    let mut lease = None;
    if let Some(req) = lock.filter(|_| s.owns_any(&observed)) {
        let lazy = Arc::new(kube::lazy(s, None));
        if let Ok(c) = kube::now(s, &lazy, false).await {
            let (guard, waited) = crate::edges::lease::acquire(
                &c,
                &s.fleet.name,
                crate::edges::lease::Holder::me(),
                req,
            )
            .await
            .map_err(lease_error)?;
            if waited {
                observed = observe(&s.client, &s.fleet, false).await?;
            }
            lease = Some((guard, lazy));
        }
    }
    let opts = PlanOptions {
        targets: Vec::new(),
        destroy: true,
        members_removed: false,
        release: None,
    };
    let (plan, reviewed) = match saved {
        Some((saved, planfile)) => (check_saved(s, &saved, planfile, &opts, &observed)?, true),
        None => (s.diff(&opts, &observed)?, false),
    };
    Ok(Prepared {
        plan,
        observed,
        kube: Arc::new(kube::lazy(s, None)),
        reachable: Err(kube::Unreachable::Teardown),
        reviewed,
        lease,
    })
}

/// How [`execute`] reports and is interrupted.
pub struct Hooks {
    /// Each change's progress.
    pub reporter: apply::Reporter,
    /// Set to stop starting new changes (Ctrl-C).
    pub cancel: Arc<AtomicBool>,
}

/// What [`execute`] did.
#[derive(Debug)]
pub struct Executed {
    pub report: ApplyReport,
    /// Token files generated and stored for a new cluster: the user must be
    /// told (once) to keep them.
    pub generated: Vec<PathBuf>,
}

/// Carries out a prepared plan: checks its preconditions (not refused,
/// drainability, every secret, every script within exe.dev's limit)
/// before the first change, then rolls: servers one at a time (each Ready
/// before the next, at the plan's release after an in-place k3s change),
/// then agents, each pool's disruptive changes within its `maxUnavailable`
/// ([`crate::core::rollout`]); a failed disruptive change stops the roll.
/// Destroy plans run the same way, without drains. Incomplete runs are
/// [`EngineError::Incomplete`], with the report in `Executed` lost: callers
/// that show progress have seen it.
pub async fn execute(
    s: &Session,
    prepared: &Prepared,
    settings: &ApplySettings,
    hooks: Hooks,
) -> Result<Executed, EngineError> {
    preflight(prepared, settings)?;
    let p = &prepared.plan;
    let observed = &prepared.observed;
    let applying = p.mode == Mode::Apply;
    let drains = applying && needs_drain(p) && !settings.skip_drain;
    let api = prepared.reachable.is_ok();
    if !p.has_changes() {
        return Ok(Executed {
            report: ApplyReport::default(),
            generated: Vec::new(),
        });
    }
    // New VMs carry secrets, in-place k3s changes the secret flags' values;
    // deleting and other updates need none. A k3s token is generated only
    // for a brand-new cluster: a fresh token for an existing one would keep
    // every new node out of it.
    let (secrets, generated) = if p.needs_secrets() {
        s.check_secrets(observed, &[])?;
        cluster_secrets::resolve_noting_generated(&s.fleet, &s.dir, !s.owns_any(observed))?
    } else {
        (plan::spec::ClusterSecrets::placeholders(), Vec::new())
    };
    check_plan_scripts(s, p, &secrets)?;
    let deadline = settings
        .deadline
        .unwrap_or_else(|| tokio::time::Instant::now() + settings.timeout);
    // Past the deadline no change starts (as after a first Ctrl-C); the
    // hooks in flight end by it on their own.
    let timed_out = Arc::new(AtomicBool::new(false));
    let out_of_time = {
        let (cancel, timed_out) = (hooks.cancel.clone(), timed_out.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let interrupted = cancel.swap(true, std::sync::atomic::Ordering::Relaxed);
            timed_out.store(!interrupted, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let ssh_key = s.kube.ssh_key.as_deref();
    let drain_opts = crate::edges::cluster::DrainOptions {
        timeout: settings.drain_timeout,
        force: settings.force_drain,
        ..Default::default()
    };
    let does = hooks::Does {
        // Each new, restarted or changed node must be Ready (bootstrap done;
        // its Node Ready, at the plan's release after a k3s change, when the
        // API is reachable) before the next one of its kind.
        wait_ready: applying,
        remove: drains,
        // Not a drain: a lost server's member is removed whenever the API
        // answers, --skip-drain or not.
        forget: applying && api,
        drain: applying && api && !settings.skip_drain,
        uncordon: applying && api,
        label: applying && api,
        change: applying,
        logout: true,
    };
    let opts = ApplyOptions {
        parallelism: settings.parallelism,
        cancel: hooks.cancel,
        ops: Arc::new(hooks::EngineOps::new(
            prepared.kube.clone(),
            &s.fleet,
            ssh_key,
            drain_opts,
            deadline,
            settings.timeout,
            does,
        )),
        settle_restart: !settings.settle_without_restart,
        ..ApplyOptions::default()
    };
    let report = apply::apply(
        &s.client,
        &s.fleet,
        p,
        &secrets,
        &s.running_servers(observed),
        &opts,
        hooks.reporter,
    )
    .await;
    out_of_time.abort();
    let mut report = report;
    if timed_out.load(std::sync::atomic::Ordering::Relaxed) {
        // Skipped because the deadline passed, not because someone
        // interrupted: the summary says which.
        for sk in report
            .skipped
            .iter_mut()
            .filter(|s| s.reason == "interrupted")
        {
            sk.reason = format!(
                "not started: the apply's --timeout ({}) ran out",
                humantime::format_duration(settings.timeout)
            );
        }
    }
    Ok(Executed { report, generated })
}

/// What must hold before a prepared plan may start, checked by [`execute`]
/// and by a caller before it asks "go ahead?": the plan is not refused,
/// and a VM whose node cannot be drained is not deleted, replaced or
/// restarted (unless `skip_drain`).
pub fn preflight(prepared: &Prepared, settings: &ApplySettings) -> Result<(), EngineError> {
    let p = &prepared.plan;
    if p.is_refused() {
        return Err(refused(p));
    }
    if p.mode == Mode::Apply
        && needs_drain(p)
        && !settings.skip_drain
        && let Err(why) = &prepared.reachable
    {
        return Err(EngineError::refused(
            format!(
                "refusing to delete, replace or restart VMs whose nodes cannot be drained: {}",
                drain_warning(why)
            ),
            "pass --skip-drain to go ahead anyway, or make the Kubernetes API reachable (--kubeconfig, --via-ssh-tunnel)",
        ));
    }
    // Servers joining a cluster whose missing servers may be lost members
    // (the API did not say): a join cannot repair a cluster without quorum.
    if p.mode == Mode::Apply
        && let Err(why) = &prepared.reachable
        && let Some(what) = plan::unchecked_server_joins(p, &prepared.observed)
    {
        return Err(EngineError::refused(
            format!("refusing to apply: {what} (the API: {why}). Nothing was changed"),
            "exedev-k8s restore -f FLEET --snapshot NAME restores a cluster that lost quorum; if the servers are only unreachable from here, use --via-ssh-tunnel or --kubeconfig",
        ));
    }
    // Labels and taints are set through the API only; carried out without
    // it, the VM's comment would record labels its node does not have.
    let labelled: Vec<&str> = p
        .changes
        .iter()
        .filter(|c| c.ops.contains(&plan::Op::NodeLabels))
        .map(|c| c.vm.as_str())
        .collect();
    if p.mode == Mode::Apply
        && !labelled.is_empty()
        && let Err(why) = &prepared.reachable
    {
        return Err(EngineError::refused(
            format!(
                "refusing to apply: the labels or taints of {} change, which only the Kubernetes API can set, and it is not reachable ({why}). Nothing was changed",
                labelled.join(", ")
            ),
            "make the Kubernetes API reachable (--via-ssh-tunnel, --kubeconfig, or join the tailnet), or leave those nodes out with --target",
        ));
    }
    Ok(())
}

/// Renders every script the plan runs with the real secrets, at the plan's
/// release, before the first call: each new VM's setup script (the first
/// server in both its forms; a replaced agent's under its new name) and
/// each in-place k3s change script. One over exe.dev's 10 KiB, or one that
/// does not render, must stop the apply before any VM exists, not halfway.
/// (Not [`plan::spec::check_scripts`], which checks a whole fleet's scripts
/// at plan time with placeholder secrets: this one checks this plan's, with
/// the real ones.)
fn check_plan_scripts(
    s: &Session,
    p: &Plan,
    secrets: &plan::spec::ClusterSecrets,
) -> Result<(), EngineError> {
    let version = p
        .release
        .as_ref()
        .map(|r| r.version.clone())
        .unwrap_or_default();
    let second = crate::base::names::fleet_vm_name(&s.fleet.name, fleet::CONTROL_PLANE_POOL, 2);
    for c in &p.changes {
        let new_vm = match c.action {
            plan::Action::Create | plan::Action::Replace => Some(c.successor().unwrap_or(&c.vm)),
            _ => None,
        };
        if let Some(d) = new_vm.and_then(|n| plan::placement::desired_named(&s.fleet, n)) {
            plan::spec::new_vm(&s.fleet, &d, secrets, None, &version)?;
            if d.is_first_server() {
                plan::spec::new_vm(&s.fleet, &d, secrets, Some(&second), &version)?;
            }
            // A new server's settings given after its boot (etcd
            // snapshots) come in a change script: it must fit too.
            if plan::spec::settles_after_boot(&s.fleet, d.role) {
                plan::spec::change_script(&s.fleet, &d, secrets, &version)?;
            }
        }
        if c.ops.iter().any(plan::Op::changes_k3s)
            && let Some(d) = plan::placement::desired_named(&s.fleet, &c.vm)
        {
            plan::spec::change_script(&s.fleet, &d, secrets, &version)?;
        }
    }
    Ok(())
}

/// The fleet's desired VMs placed on what exe.dev holds
/// ([`plan::placement`]): a replaced agent's new index, not `1..=count`.
fn placed(fleet: &Fleet, observed: &Observed) -> Vec<fleet::DesiredVm> {
    let owned: Vec<&crate::core::api::types::VmInfo> = observed
        .vms
        .iter()
        .filter(|v| plan::owned(&fleet.name, v))
        .collect();
    plan::placement::place(fleet, &owned, |_, _| false)
}

/// `--wait`: every VM a Ready node with the fleet's labels and taints, the
/// bundled manifests present.
pub async fn converge(
    s: &Session,
    prepared: &Prepared,
    timeout: Duration,
    notes: &Notes,
) -> Result<kube::Converged, EngineError> {
    let client = prepared.kube.get().await.map_err(|why| {
        EngineError::refused(
            format!("cannot --wait: {why}"),
            "make the Kubernetes API reachable (join the tailnet, or pass --via-ssh-tunnel or --kubeconfig)",
        )
    })?;
    // Replacements moved agents to new indices: place again.
    let now = observe(&s.client, &s.fleet, false).await?;
    let desired = placed(&s.fleet, &now);
    kube::converge(&client, &s.fleet, &desired, &s.manifests, timeout, notes).await
}

/// A protected fleet (`metadata.protect: true`) is never torn down: checked
/// by [`prepare_destroy`] and [`prepare_apply`] of a teardown plan, and by a
/// caller that wants to refuse before it needs any credential.
pub fn check_destroyable(fleet: &Fleet) -> Result<(), EngineError> {
    if protects(fleet, Mode::Destroy) {
        return Err(protected(fleet));
    }
    Ok(())
}

/// The protect rule, in one place: a plan of `mode` may not run on `fleet`
/// because it would tear a protected fleet down.
fn protects(fleet: &Fleet, mode: Mode) -> bool {
    mode == Mode::Destroy && fleet.protect
}

fn protected(fleet: &Fleet) -> EngineError {
    EngineError::refused(
        format!(
            "fleet {:?} is protected (metadata.protect: true): destroy refused",
            fleet.name
        ),
        "set protect: false in the fleet file first if you really mean it",
    )
}

/// Whether the plan takes a node out of service (deletes, replaces or
/// restarts it: [`plan::Change::disrupts`]), which must be drained first.
fn needs_drain(p: &Plan) -> bool {
    p.mode == Mode::Apply && p.changes.iter().any(plan::Change::disrupts)
}

/// Said by a plan made without the API (a pull request's, say) and by
/// apply's refusal: apply drains where it runs, so what it needs is the API
/// there, or --skip-drain.
fn drain_warning(why: &kube::Unreachable) -> String {
    format!(
        "Kubernetes API not reachable here ({why}): apply drains nodes before their VMs are deleted, replaced or restarted, so it needs the API where it runs (--via-ssh-tunnel, --kubeconfig), or --skip-drain to go ahead without draining"
    )
}
