//! `apply` and `destroy`: carry out a plan (fresh and confirmed, or saved
//! and reviewed), with progress on the terminal or as JSON lines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

use super::args::{KubeArgs, ReleaseArgs};
use super::{ApiArgs, CliResult, fail, write_stdout};
use crate::api::command::FleetOp;
use crate::engine::{self, ApplySettings, EngineError, Hooks, Prepared, Session};
use crate::plan::render;
use crate::ui;

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The fleet file (optional with a PLANFILE, which records it).
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
    /// How long --wait waits.
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
    /// Also delete the stored k3s token under .exedev-k8s/<fleet>/.
    #[arg(long)]
    pub purge_secrets: bool,
    /// How many VMs are removed at once (1 or more).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallelism: u32,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
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
    // A saved plan is exactly what was reviewed: narrowing it here would
    // carry out something nobody saw.
    if let (Some(planfile), false) = (&a.planfile, a.targets.is_empty()) {
        return Err(fail(format!(
            "--target cannot be combined with a saved plan ({}): a saved plan is carried out exactly as reviewed. Save a narrowed plan with `exedev-k8s plan -f FLEET --target {} --out FILE` and apply that, or drop --target",
            planfile.display(),
            a.targets.join(" --target ")
        )));
    }
    let saved = a
        .planfile
        .as_deref()
        .map(crate::workspace::load_plan)
        .transpose()?;
    if let Some(p) = &saved {
        engine::check_saved_mode(p, a.planfile.as_deref(), crate::plan::Mode::Apply)?;
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
        crate::credentials::LONG_OPERATION_TTL,
    )?;
    let kube = a.kube.settings(a.api.ssh_key.clone());
    let s = super::session(loaded, &fleet_path, client, kube)
        .with_channel_server(a.release.channel_server.clone());
    let settings = ApplySettings {
        parallelism: a.parallelism as usize,
        skip_drain: a.skip_drain,
        force_drain: a.force_drain,
        drain_timeout: a.drain_timeout,
        timeout: a.timeout,
        fetch_kubeconfig: a.wait,
    };
    let prepared = engine::prepare_apply(
        &s,
        saved.map(|p| (p, a.planfile.clone())),
        a.targets,
        &settings,
    )
    .await?;
    if !prepared.reviewed {
        if !a.json {
            print!("{}", render::human(&prepared.plan, ui::colour_enabled()));
        }
        engine::preflight(&prepared, &settings)?;
        if prepared.plan.has_changes()
            && !a.yes
            && !ui::confirm("Apply these changes?", "--yes").map_err(fail)?
        {
            return Err(fail("apply cancelled"));
        }
    }
    let code = execute(&s, &prepared, &settings, "apply", a.json).await?;
    if a.wait {
        let notes = super::notes(a.json);
        let converged = engine::converge(&s, &prepared, a.timeout, &notes).await?;
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
    saved: Option<&crate::plan::Plan>,
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
                crate::plan::FleetFileBase::Repository => {
                    "its path is kept relative to the root of the git repository it was made in; run from a checkout of that repository"
                }
                crate::plan::FleetFileBase::PlanFile => {
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
        _ => Err(fail(
            "which fleet? pass -f FLEET (or a PLANFILE saved by `plan --out`)",
        )),
    }
}

pub async fn destroy(a: DestroyArgs) -> CliResult {
    let saved = a
        .planfile
        .as_deref()
        .map(crate::workspace::load_plan)
        .transpose()?;
    if let Some(p) = &saved {
        engine::check_saved_mode(p, a.planfile.as_deref(), crate::plan::Mode::Destroy)?;
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
        crate::credentials::LONG_OPERATION_TTL,
    )?;
    let s = Session::new(
        loaded,
        &fleet_path,
        client,
        engine::KubeSettings {
            ssh_key: a.api.ssh_key.clone(),
            ..Default::default()
        },
    );
    let prepared = engine::prepare_destroy(&s, saved.map(|p| (p, a.planfile.clone()))).await?;
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
    let code = execute(&s, &prepared, &settings, "destroy", a.json).await?;
    if a.purge_secrets && crate::cluster_secrets::purge(&s.dir, &s.fleet.name)? && !a.json {
        println!("Removed the stored k3s token for {:?}.", s.fleet.name);
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
    let hooks = Hooks {
        reporter: progress.reporter(),
        cancel: interrupt_flag(progress.notifier(), verb),
    };
    let done = engine::execute(s, prepared, settings, hooks).await?;
    if !done.generated.is_empty() {
        let files: Vec<String> = done
            .generated
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        eprintln!(
            "Generated the k3s tokens of fleet {:?} and stored them in {} (mode 0600, ignored by git). Keep a copy somewhere safe: restoring etcd snapshots and adding nodes later need them. In CI, store them as secrets and write k3s.token: {{env: K3S_TOKEN}} and k3s.agentToken: {{env: K3S_AGENT_TOKEN}}.",
            s.fleet.name,
            files.join(" and ")
        );
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

/// First Ctrl-C: stop starting work, let changes in flight finish. Second:
/// exit at once (130), as a shell user expects. Each says so through
/// `notify`, which draws above progress bars instead of under them.
fn interrupt_flag(notify: ui::Notifier, verb: &'static str) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            f.store(true, Ordering::Relaxed);
            notify(&format!(
                "interrupted: finishing the changes in flight, starting no new ones; re-run {verb} to converge (Ctrl-C again to quit now)"
            ));
            if tokio::signal::ctrl_c().await.is_ok() {
                notify(&format!(
                    "interrupted twice: quitting now; re-run {verb} to converge"
                ));
                std::process::exit(super::exit::INTERRUPTED);
            }
        }
    });
    flag
}
