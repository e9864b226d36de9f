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

mod error;
mod kube;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use error::EngineError;
pub use kube::{Converged, KubeSettings, user_kubeconfig_plugins};
pub use status::{StatusRequest, status};

use crate::api::command::FleetOp;
use crate::apply::{self, ApplyOptions, ApplyReport};
use crate::client::Client;
use crate::cluster_secrets::{self, SecretCheck};
use crate::fleet::{self, Fleet, Role};
use crate::kubeaccess::LazyClient;
use crate::observe::observe;
use crate::plan::{self, Mode, Observed, Plan, PlanOptions};

/// Human notes an operation makes along the way (progress of a wait, a
/// correction made); the caller decides where they go.
pub type Notes = Arc<dyn Fn(&str) + Send + Sync>;

/// Commands a fleet operation's token must grant, from the catalogue.
pub fn cmds(op: FleetOp) -> Vec<&'static str> {
    crate::api::command::commands_for(op)
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
}

impl Session {
    /// Reads and validates the fleet file; no call is made.
    pub fn load(path: &Path) -> Result<crate::workspace::LoadedFleet, EngineError> {
        crate::workspace::load_fleet(path).map_err(|errors| EngineError::Fleet {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// A session on a loaded fleet.
    pub fn new(
        loaded: crate::workspace::LoadedFleet,
        path: &Path,
        client: Client,
        kube: KubeSettings,
    ) -> Session {
        Session {
            fleet: loaded.fleet,
            fingerprint: loaded.fingerprint,
            path: path.to_path_buf(),
            dir: crate::workspace::fleet_dir(path),
            client,
            kube,
        }
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
    let kube = if req.destroy {
        Err(kube::Unreachable::Teardown)
    } else {
        kube::now(s, &kube::lazy(s, None), false).await.map(|_| ())
    };
    let observed = observe(&s.client, &s.fleet, !req.destroy).await?;
    let mut p = s.diff(
        &PlanOptions {
            targets: req.targets,
            destroy: req.destroy,
            members_removed: kube.is_ok(),
        },
        &observed,
    )?;
    if needs_drain(&p)
        && let Err(why) = &kube
    {
        p.warnings.push(drain_warning(why));
    }
    let secrets = if p.creates_vms() {
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

/// Refuses to save a plan apply would refuse: the teardown of a protected
/// fleet.
pub fn check_savable(s: &Session, p: &Plan, out: &Path) -> Result<(), EngineError> {
    if p.mode == Mode::Destroy && s.fleet.protect {
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
    /// How long a server (or `--wait`) may take to become ready.
    pub timeout: Duration,
    /// Fetch the kubeconfig over SSH when none is at hand (`--wait`).
    pub fetch_kubeconfig: bool,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            parallelism: 16,
            skip_drain: false,
            force_drain: false,
            drain_timeout: Duration::from_secs(300),
            timeout: Duration::from_secs(900),
            fetch_kubeconfig: false,
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
}

impl Prepared {
    /// Why the Kubernetes API could not be reached, when it could not.
    pub fn kube_unreachable(&self) -> Option<&kube::Unreachable> {
        self.reachable.as_ref().err()
    }
}

/// Reads exe.dev and the cluster, and makes the plan to apply: `saved` (a
/// reviewed plan, refused when stale) or a fresh one for `targets`.
pub async fn prepare_apply(
    s: &Session,
    saved: Option<(Plan, Option<PathBuf>)>,
    targets: Vec<String>,
    settings: &ApplySettings,
) -> Result<Prepared, EngineError> {
    let destroy = saved.as_ref().is_some_and(|(p, _)| p.mode == Mode::Destroy);
    let observed = observe(&s.client, &s.fleet, !destroy).await?;
    // Only an existing cluster can have a kubeconfig to fetch; a new one
    // has none until its first server is up (apply connects then).
    let lazy = kube::lazy(s, None);
    let reachable = kube::now(s, &lazy, settings.fetch_kubeconfig && s.owns_any(&observed))
        .await
        .map(|_| ());
    let members_removed = reachable.is_ok() && !settings.skip_drain;
    let (plan, reviewed) = match saved {
        Some((saved, planfile)) => {
            if saved.mode == Mode::Destroy && s.fleet.protect {
                return Err(protected(&s.fleet));
            }
            let fresh = s.diff(
                &PlanOptions {
                    targets: saved.targets.clone(),
                    destroy,
                    members_removed,
                },
                &observed,
            )?;
            if let Err(e) = plan::file::check_fresh(&saved, &fresh) {
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
            (saved, true)
        }
        None => {
            let mut p = s.diff(
                &PlanOptions {
                    targets,
                    destroy: false,
                    members_removed,
                },
                &observed,
            )?;
            if needs_drain(&p)
                && let Err(why) = &reachable
            {
                p.warnings.push(drain_warning(why));
            }
            (p, false)
        }
    };
    // Rolling server changes talk to a server they leave alone.
    let kube = Arc::new(match plan.api_server(&s.running_servers(&observed)) {
        Some(via) if via != lazy.via() => kube::lazy(s, Some(&via)),
        _ => lazy,
    });
    Ok(Prepared {
        plan,
        observed,
        kube,
        reachable,
        reviewed,
    })
}

/// Reads exe.dev and makes the teardown plan. A protected fleet is refused
/// before any call.
pub async fn prepare_destroy(s: &Session) -> Result<Prepared, EngineError> {
    if s.fleet.protect {
        return Err(protected(&s.fleet));
    }
    let observed = observe(&s.client, &s.fleet, false).await?;
    let plan = s.diff(
        &PlanOptions {
            targets: Vec::new(),
            destroy: true,
            members_removed: false,
        },
        &observed,
    )?;
    Ok(Prepared {
        plan,
        observed,
        kube: Arc::new(kube::lazy(s, None)),
        reachable: Err(kube::Unreachable::Teardown),
        reviewed: false,
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

/// Carries out a prepared plan: checks its preconditions (drainability,
/// every secret, every setup script within exe.dev's limit) before the
/// first change, then applies, servers one at a time (each a ready member
/// before the next), agents in parallel. Destroy plans run the same way,
/// without drains. Incomplete runs are [`EngineError::Incomplete`], with the
/// report in `Executed` lost: callers that show progress have seen it.
pub async fn execute(
    s: &Session,
    prepared: &Prepared,
    settings: &ApplySettings,
    hooks: Hooks,
) -> Result<Executed, EngineError> {
    preflight(prepared, settings)?;
    let p = &prepared.plan;
    let observed = &prepared.observed;
    let drains = p.mode == Mode::Apply && needs_drain(p) && !settings.skip_drain;
    if !p.has_changes() {
        return Ok(Executed {
            report: ApplyReport::default(),
            generated: Vec::new(),
        });
    }
    // Only new VMs carry secrets; deleting and updating needs none. A k3s
    // token is generated only for a brand-new cluster: a fresh token for an
    // existing one would keep every new node out of it.
    let (secrets, generated) = if p.creates_vms() {
        s.check_secrets(observed, &[])?;
        cluster_secrets::resolve_noting_generated(&s.fleet, &s.dir, !s.owns_any(observed))?
    } else {
        (plan::spec::ClusterSecrets::placeholders(), Vec::new())
    };
    check_scripts(s, p, &secrets)?;
    let opts = ApplyOptions {
        parallelism: settings.parallelism,
        cancel: hooks.cancel,
        remover: drains.then(|| {
            kube::remover(
                prepared.kube.clone(),
                crate::cluster::DrainOptions {
                    timeout: settings.drain_timeout,
                    force: settings.force_drain,
                    ..Default::default()
                },
            )
        }),
        // Each new or restarted server must be a ready member (bootstrap
        // done, Node Ready when the API is reachable) before the next.
        server_ready: (p.mode == Mode::Apply).then(|| {
            kube::server_waiter(
                prepared.kube.clone(),
                &s.fleet,
                s.kube.ssh_key.as_deref(),
                settings.timeout,
            )
        }),
        logout: Some(kube::device_logout(s.kube.ssh_key.as_deref())),
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
    Ok(Executed { report, generated })
}

/// What must hold before a prepared plan may start, checked by [`execute`]
/// and by a caller before it asks "go ahead?": a VM whose node cannot be
/// drained is not deleted or replaced (unless `skip_drain`).
pub fn preflight(prepared: &Prepared, settings: &ApplySettings) -> Result<(), EngineError> {
    let p = &prepared.plan;
    if p.mode == Mode::Apply
        && needs_drain(p)
        && !settings.skip_drain
        && let Err(why) = &prepared.reachable
    {
        return Err(EngineError::refused(
            format!(
                "refusing to delete or replace VMs whose nodes cannot be drained: {}",
                drain_warning(why)
            ),
            "pass --skip-drain to go ahead anyway, or make the Kubernetes API reachable (--kubeconfig, --via-ssh-tunnel)",
        ));
    }
    Ok(())
}

/// Renders every script the plan creates with the real secrets (and the
/// first server in both its forms) before the first call: a script over
/// 10 KiB must stop the apply before any VM exists, not halfway.
fn check_scripts(
    s: &Session,
    p: &Plan,
    secrets: &plan::spec::ClusterSecrets,
) -> Result<(), EngineError> {
    let desired = fleet::desired_vms(&s.fleet);
    let second = crate::names::fleet_vm_name(&s.fleet.name, fleet::CONTROL_PLANE_POOL, 2);
    for c in p
        .changes
        .iter()
        .filter(|c| matches!(c.action, plan::Action::Create | plan::Action::Replace))
    {
        if let Some(d) = desired.iter().find(|d| d.name == c.vm) {
            plan::spec::new_vm(&s.fleet, d, secrets, None)?;
            if d.is_first_server() {
                plan::spec::new_vm(&s.fleet, d, secrets, Some(&second))?;
            }
        }
    }
    Ok(())
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
    kube::converge(&client, &s.fleet, timeout, notes).await
}

/// A protected fleet (`metadata.protect: true`) is never torn down: checked
/// by [`prepare_destroy`] and [`prepare_apply`] of a teardown plan, and by a
/// caller that wants to refuse before it needs any credential.
pub fn check_destroyable(fleet: &Fleet) -> Result<(), EngineError> {
    if fleet.protect {
        return Err(protected(fleet));
    }
    Ok(())
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

fn needs_drain(p: &Plan) -> bool {
    p.mode == Mode::Apply
        && p.changes
            .iter()
            .any(|c| matches!(c.action, plan::Action::Delete | plan::Action::Replace))
}

fn drain_warning(why: &kube::Unreachable) -> String {
    format!(
        "Kubernetes API not reachable ({why}): nodes cannot be drained before their VMs are deleted or replaced; apply needs --skip-drain to go ahead"
    )
}
