//! `apply` and `destroy`: carry out a plan (fresh and confirmed, or saved
//! and reviewed), with progress on the terminal or as JSON lines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

use super::args::{KubeArgs, ReleaseArgs};
use super::{ApiArgs, CliResult, fail, write_stdout};
use crate::core::api::command::FleetOp;
use crate::core::plan::render;
use crate::engine::{self, ApplySettings, EngineError, Hooks, Prepared, Session};
use crate::ui;

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The fleet file (default: the one a PLANFILE records, else fleet.yaml).
    #[arg(short = 'f', long = "file", value_name = "FLEET")]
    pub file: Option<PathBuf>,
    /// A plan saved with `plan --out`: carried out exactly, or refused if stale.
    pub planfile: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Only apply for this VM or pool (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// How many agents change at once (1 or more).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallelism: u32,
    /// Never send more than this many requests per second.
    #[arg(long, value_parser = positive_rate)]
    pub max_rate: Option<f64>,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// After applying, wait until every VM is a Ready Node with the fleet's
    /// labels and taints (and correct drifted ones).
    #[arg(long)]
    pub wait: bool,
    /// The most the whole apply may take, --wait included: every readiness
    /// wait and in-place change ends by then, none starts after it, and a
    /// node that never answered is named.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Delete or replace VMs without draining their nodes first (when the
    /// Kubernetes API cannot be reached).
    #[arg(long)]
    pub skip_drain: bool,
    /// Delete pods whose eviction a PodDisruptionBudget refuses.
    #[arg(long)]
    pub force_drain: bool,
    /// How long a drain may take before it fails (or, with --force-drain,
    /// deletes what is left).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// How long to wait for another apply of the fleet to finish (it holds
    /// the fleet's lease) before giving up.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Break the fleet's lease held under this ID (another run's, which
    /// is gone) before taking it.
    #[arg(long, value_name = "ID")]
    pub force_unlock: Option<String>,
}

#[derive(Args, Debug)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The fleet file (optional with a PLANFILE, which records it).
    #[arg(short = 'f', long = "file", value_name = "FLEET")]
    pub file: Option<PathBuf>,
    /// A teardown plan saved with `plan --destroy --out`: carried out
    /// exactly, or refused if stale. Never an apply plan.
    pub planfile: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Also delete .exedev-k8s/<fleet>/ beside the fleet file: the stored
    /// k3s server and agent tokens and the kubeconfig.
    #[arg(long)]
    pub purge_secrets: bool,
    /// How many VMs are removed at once (1 or more).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallelism: u32,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for an apply of the fleet to finish (it holds the
    /// fleet's lease) before giving up.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Break the fleet's lease held under this ID (another run's, which
    /// is gone) before taking it.
    #[arg(long, value_name = "ID")]
    pub force_unlock: Option<String>,
}

/// `--max-rate`: a positive number of requests per second (0 would mean no
/// cap, the opposite of what was asked).
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("write a positive number of requests per second, e.g. 5 or 0.5".into()),
    }
}

pub async fn apply(a: ApplyArgs) -> CliResult {
    let deadline = tokio::time::Instant::now() + a.timeout;
    // A saved plan is exactly what was reviewed: narrowing it here would
    // carry out something nobody saw.
    if let (Some(planfile), false) = (&a.planfile, a.targets.is_empty()) {
        return Err(fail(format!(
            "--target cannot be combined with a saved plan ({}): a saved plan is carried out exactly as reviewed. Save a narrowed plan with `exedev-k8s plan -f FLEET --target {} --out FILE` and apply that, or drop --target",
            planfile.display(),
            a.targets.join(" --target ")
        )));
    }
    let saved = load_saved("apply", a.planfile.as_deref())?;
    if let Some(p) = &saved {
        engine::check_saved_mode(p, a.planfile.as_deref(), crate::core::plan::Mode::Apply)?;
    }
    let fleet_path = fleet_path(
        "apply",
        a.file.as_ref(),
        saved.as_ref(),
        a.planfile.as_deref(),
    )?;
    let loaded = Session::load(&fleet_path)?;
    let client = a.api.client_with_ttl(
        &engine::cmds(FleetOp::Apply),
        a.api.options(a.max_rate),
        crate::edges::credentials::LONG_OPERATION_TTL,
    )?;
    let kube = a.kube.settings(a.api.ssh_key());
    let s = super::session(loaded, &fleet_path, client, kube)
        .with_channel_server(a.release.channel_server.clone());
    let settings = ApplySettings {
        parallelism: a.parallelism as usize,
        skip_drain: a.skip_drain,
        force_drain: a.force_drain,
        drain_timeout: a.drain_timeout,
        timeout: a.timeout,
        deadline: Some(deadline),
        fetch_kubeconfig: a.wait,
        lock: Some(crate::edges::lease::LockRequest {
            wait: a.lock_timeout,
            force_unlock: a.force_unlock.clone(),
            note: super::notes(a.json),
        }),
        settle_without_restart: false,
    };
    let mut prepared = engine::prepare_apply(
        &s,
        saved.map(|p| (p, a.planfile.clone())),
        a.targets.clone(),
        &settings,
    )
    .await?;
    // The lease is given up however the apply ends (but a second Ctrl-C,
    // which leaves at once: the lease then expires on its own).
    let result = confirm_and_execute(&s, &prepared, &settings, &a, deadline).await;
    engine::release(&mut prepared).await;
    result
}

/// The part of apply that runs under the fleet's lease.
async fn confirm_and_execute(
    s: &Session,
    prepared: &Prepared,
    settings: &ApplySettings,
    a: &ApplyArgs,
    deadline: tokio::time::Instant,
) -> CliResult {
    if !prepared.reviewed {
        if !a.json {
            print!("{}", render::human(&prepared.plan, ui::colour_enabled()));
        }
        engine::preflight(prepared, settings)?;
        if prepared.plan.has_changes()
            && !a.yes
            && !ui::confirm("Apply these changes?", "--yes").map_err(fail)?
        {
            return Err(fail("apply cancelled"));
        }
    }
    let code = execute(s, prepared, settings, "apply", a.json).await?;
    if a.wait {
        let notes = super::notes(a.json);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let converged = engine::converge(s, prepared, left, &notes).await?;
        if !a.json {
            write_stdout(format!("{converged}\n"))?;
        }
    }
    Ok(code)
}

/// The fleet to apply: `-f`, else the one a saved plan records (see
/// `plan::FleetFileBase`), which must be there.
fn fleet_path(
    verb: &str,
    file: Option<&PathBuf>,
    saved: Option<&crate::core::plan::Plan>,
    planfile: Option<&std::path::Path>,
) -> Result<PathBuf, super::CliError> {
    match (file, saved, planfile) {
        (Some(f), _, _) => Ok(f.clone()),
        (None, Some(p), Some(planfile)) if !p.fleet_file.is_empty() => {
            let path = PathBuf::from(&p.fleet_file);
            if path.is_file() {
                return Ok(path);
            }
            let from = match p.fleet_file_base {
                crate::core::plan::FleetFileBase::Repository => {
                    "its path is kept relative to the root of the git repository it was made in; run from a checkout of that repository"
                }
                crate::core::plan::FleetFileBase::PlanFile => {
                    "its path is kept relative to the plan file's directory; keep the plan where it was saved"
                }
            };
            Err(super::CliError {
                message: format!(
                    "{} was made from a fleet file that is not at {} ({from})",
                    planfile.display(),
                    path.display()
                ),
                hint: Some(format!(
                    "or name the fleet file: exedev-k8s {verb} -f FLEET {}",
                    planfile.display()
                )),
                code: super::exit::FAILURE,
            })
        }
        (None, Some(_), _) => Err(fail(
            "which fleet? the saved plan records no fleet file: pass -f FLEET",
        )),
        (None, None, _) => Ok(PathBuf::from(super::args::DEFAULT_FLEET)),
    }
}

/// Reads the PLANFILE given to `verb`. A YAML file there is a fleet file
/// given without -f (`destroy fleet.yaml`): said as for every command that
/// takes a fleet file, before trying to read it as a plan.
fn load_saved(
    verb: &str,
    planfile: Option<&std::path::Path>,
) -> Result<Option<crate::core::plan::Plan>, super::CliError> {
    let Some(path) = planfile else {
        return Ok(None);
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
    {
        return Err(super::CliError {
            message: format!(
                "{} is a fleet file, not a saved plan (a plan file comes from `plan --out`)",
                path.display()
            ),
            hint: Some(format!(
                "did you mean `exedev-k8s {verb} -f {}`? (without -f, it reads fleet.yaml in the working directory)",
                path.display()
            )),
            code: super::exit::FAILURE,
        });
    }
    Ok(Some(crate::edges::workspace::load_plan(path)?))
}

pub async fn destroy(a: DestroyArgs) -> CliResult {
    let saved = load_saved("destroy", a.planfile.as_deref())?;
    if let Some(p) = &saved {
        engine::check_saved_mode(p, a.planfile.as_deref(), crate::core::plan::Mode::Destroy)?;
    }
    let fleet_path = fleet_path(
        "destroy",
        a.file.as_ref(),
        saved.as_ref(),
        a.planfile.as_deref(),
    )?;
    let loaded = Session::load(&fleet_path)?;
    // Refused before any credential is needed or call made.
    engine::check_destroyable(&loaded.fleet)?;
    let client = a.api.client_with_ttl(
        &engine::cmds(FleetOp::Destroy),
        a.api.options(None),
        crate::edges::credentials::LONG_OPERATION_TTL,
    )?;
    let s = Session::new(
        loaded,
        &fleet_path,
        client,
        engine::KubeSettings {
            ssh_key: a.api.ssh_key(),
            ..Default::default()
        },
    );
    let lock = crate::edges::lease::LockRequest {
        wait: a.lock_timeout,
        force_unlock: a.force_unlock.clone(),
        note: super::notes(a.json),
    };
    let mut prepared =
        engine::prepare_destroy(&s, saved.map(|p| (p, a.planfile.clone())), Some(&lock)).await?;
    let result = confirm_and_destroy(&s, &prepared, &a).await;
    engine::release(&mut prepared).await;
    result
}

/// The part of destroy that runs under the fleet's lease (when it had one
/// to take).
async fn confirm_and_destroy(s: &Session, prepared: &Prepared, a: &DestroyArgs) -> CliResult {
    if !a.json && !prepared.reviewed {
        print!("{}", render::human(&prepared.plan, ui::colour_enabled()));
    }
    if prepared.plan.has_changes()
        && !prepared.reviewed
        && !a.yes
        && !ui::confirm("Destroy these VMs? Their disks are deleted too.", "--yes").map_err(fail)?
    {
        return Err(fail("destroy cancelled"));
    }
    let settings = ApplySettings {
        parallelism: a.parallelism as usize,
        ..ApplySettings::default()
    };
    let code = execute(s, prepared, &settings, "destroy", a.json).await?;
    if a.purge_secrets
        && let Some((dir, held)) = crate::edges::cluster_secrets::purge(&s.dir, &s.fleet.name)?
        && !a.json
    {
        println!(
            "{}",
            crate::edges::cluster_secrets::purged_note(&s.fleet.name, &dir, &held)
        );
    }
    Ok(code)
}

/// Carries out a prepared plan with progress on the terminal (or JSON
/// lines), then the summary.
async fn execute(
    s: &Session,
    prepared: &Prepared,
    settings: &ApplySettings,
    verb: &'static str,
    json: bool,
) -> CliResult {
    if !prepared.plan.has_changes() {
        if !json {
            println!("Nothing to do.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let progress = ui::Progress::new(ui::ProgressMode::pick(json), prepared.plan.changes.len());
    let in_flight = InFlight::default();
    let hooks = Hooks {
        reporter: in_flight.tracking(progress.reporter()),
        cancel: interrupt_flag(
            progress.notifier(),
            verb,
            in_flight,
            s.path.clone(),
            prepared.lease_id().map(str::to_string),
        ),
    };
    let done = engine::execute(s, prepared, settings, hooks).await?;
    if let Some(note) =
        crate::edges::cluster_secrets::generated_note(&s.fleet.name, &done.generated)
    {
        eprintln!("{note}");
    }
    let report = done.report;
    if json {
        println!(
            "{}",
            ui::json_event(&serde_json::json!({
                "event": "summary",
                "operation": verb,
                "ok": report.ok(),
                "seconds": report.seconds,
                "done": report.done,
                "failed": report.failed,
                "skipped": report.skipped,
            }))
        );
    } else {
        let mut title = verb.to_string();
        title[..1].make_ascii_uppercase();
        print!("\n{}", ui::summary(&title, &report));
    }
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(EngineError::Incomplete {
            failed: report.failed.len(),
            skipped: report.skipped.len(),
            verb,
        }
        .into())
    }
}

/// The changes running now and the last step each reported: what a second
/// Ctrl-C leaves behind, said by name.
#[derive(Clone, Default)]
struct InFlight(Arc<std::sync::Mutex<std::collections::BTreeMap<String, (String, String)>>>);

impl InFlight {
    /// `reporter`, noting each change's start, steps and end here first.
    fn tracking(&self, reporter: crate::apply::Reporter) -> crate::apply::Reporter {
        use crate::apply::Event;
        let map = self.0.clone();
        Arc::new(move |e: Event| {
            if let Ok(mut m) = map.lock() {
                match &e {
                    Event::Start { vm, action } => {
                        m.insert(vm.clone(), (action.as_str().to_string(), "started".into()));
                    }
                    Event::Step { vm, step } => {
                        if let Some(entry) = m.get_mut(vm) {
                            entry.1 = step.clone();
                        }
                    }
                    Event::Done { vm, .. }
                    | Event::Failed { vm, .. }
                    | Event::Skipped { vm, .. } => {
                        m.remove(vm);
                    }
                }
            }
            reporter(e)
        })
    }

    /// One line per change in flight: `vm (action): last step ...`.
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(vm, (action, step))| {
                        format!(
                            "{} ({action}): stopped after {:?}",
                            crate::base::text::one_line(vm),
                            crate::base::text::one_line(step)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Resolves on the next Ctrl-C (SIGINT) or SIGTERM (a CI runner cancelling
/// the job), with its name; never when neither can be watched.
pub(super) async fn interrupted(term: &mut Option<tokio::signal::unix::Signal>) -> &'static str {
    let sigterm = async {
        match term {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        },
        () = sigterm => "SIGTERM",
    }
}

/// First Ctrl-C or SIGTERM: stop starting work, let the changes in flight
/// finish (their ssh sessions and tunnel are in their own process group,
/// so a terminal's Ctrl-C does not reach them: `ssh::ssh_command`).
/// Second: exit at once (130), naming each change left in flight and its
/// last step, and how to resume. Each says so through `notify`, which draws
/// above progress bars instead of under them.
fn interrupt_flag(
    notify: ui::Notifier,
    verb: &'static str,
    in_flight: InFlight,
    fleet: PathBuf,
    lease: Option<String>,
) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let fleet = crate::base::text::one_line(&fleet.display().to_string()).into_owned();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let first = interrupted(&mut term).await;
        f.store(true, Ordering::Relaxed);
        notify(&format!(
            "{first}: finishing the changes in flight (each node brought back Ready and uncordoned), starting no new ones; re-run {verb} to converge (Ctrl-C again to quit now)"
        ));
        let second = interrupted(&mut term).await;
        let left = in_flight.lines();
        let mut msg = format!("{second} again: quitting now");
        if left.is_empty() {
            msg.push_str(", no change was in flight.");
        } else {
            msg.push_str(&format!(
                ". Left in flight ({}), possibly cordoned or restarting:",
                left.len()
            ));
            for l in &left {
                msg.push_str(&format!("\n  {l}"));
            }
        }
        let unlock = match &lease {
            Some(id) => format!(
                " --force-unlock {id}` (or without it once this run's lease expires, within {}s)",
                crate::edges::lease::DURATION.as_secs()
            ),
            None => "`".to_string(),
        };
        msg.push_str(&format!(
            "\nTo resume: `exedev-k8s status -f {fleet}` names each node that is cordoned, NotReady or on another release; `kubectl uncordon NODE` once one is Ready, then `exedev-k8s {verb} -f {fleet}{unlock}"
        ));
        notify(&msg);
        // Out of the terminal's process group, the ssh sessions and the
        // tunnel would outlive this process.
        crate::edges::ssh::kill_all();
        std::process::exit(super::exit::INTERRUPTED);
    });
    flag
}
