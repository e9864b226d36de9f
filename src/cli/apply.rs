//! `apply` and `destroy`: carry out a plan (fresh and confirmed, or saved
//! and reviewed), with progress on the terminal or as JSON lines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

use super::args::{FleetArg, KubeArgs, ReleaseArgs};
use super::{ApiArgs, CliResult, fail, write_stdout};
use crate::api::command::FleetOp;
use crate::engine::{self, ApplySettings, EngineError, Hooks, Prepared, Session};
use crate::plan::render;
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
    #[command(flatten)]
    pub fleet: FleetArg,
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
    let fleet_path = match (&a.file, &saved) {
        (Some(f), _) => f.clone(),
        (None, Some(p)) if !p.fleet_file.is_empty() => PathBuf::from(&p.fleet_file),
        (None, Some(_)) => {
            return Err(fail(
                "which fleet? the saved plan records no fleet file: pass -f FLEET",
            ));
        }
        (None, None) => PathBuf::from(super::args::DEFAULT_FLEET),
    };
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

pub async fn destroy(a: DestroyArgs) -> CliResult {
    let loaded = Session::load(&a.fleet.file)?;
    // Refused before any credential is needed or call made.
    engine::check_destroyable(&loaded.fleet)?;
    let client = a.api.client_with_ttl(
        &engine::cmds(FleetOp::Destroy),
        a.api.options(None),
        crate::credentials::LONG_OPERATION_TTL,
    )?;
    let s = Session::new(
        loaded,
        &a.fleet.file,
        client,
        engine::KubeSettings {
            ssh_key: a.api.ssh_key.clone(),
            ..Default::default()
        },
    );
    let prepared = engine::prepare_destroy(&s).await?;
    if !a.json {
        print!("{}", render::human(&prepared.plan, ui::colour_enabled()));
    }
    if prepared.plan.has_changes()
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
    if a.purge_secrets
        && let Some((dir, held)) = crate::cluster_secrets::purge(&s.dir, &s.fleet.name)?
        && !a.json
    {
        println!(
            "{}",
            crate::cluster_secrets::purged_note(&s.fleet.name, &dir, &held)
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
    let hooks = Hooks {
        reporter: progress.reporter(),
        cancel: interrupt_flag(progress.notifier(), verb),
    };
    let done = engine::execute(s, prepared, settings, hooks).await?;
    if let Some(note) = crate::cluster_secrets::generated_note(&s.fleet.name, &done.generated) {
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
