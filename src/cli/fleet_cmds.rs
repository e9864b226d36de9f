//! `validate`, `schema`, `plan`, `apply` and `destroy`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, ValueEnum};

use super::{ApiArgs, CliError, CliResult, fail};
use crate::apply::{self, ApplyOptions};
use crate::client::{Client, ClientOptions};
use crate::cluster_secrets;
use crate::fleet::{self, Fleet, Role};
use crate::observe::observe;
use crate::plan::{self, Observed, Plan, PlanOptions, render};
use crate::ui;

/// Commands `plan` needs.
pub const PLAN_CMDS: &[&str] = &["ls", "share show"];
/// Commands `apply` needs.
pub const APPLY_CMDS: &[&str] = &[
    "ls",
    "new",
    "rm",
    "resize",
    "tag",
    "comment",
    "share show",
    "share port",
    "share set-public",
    "share set-private",
];
/// Commands `destroy` needs.
pub const DESTROY_CMDS: &[&str] = &["ls", "rm"];

#[derive(Args, Debug)]
pub struct FleetArg {
    /// The fleet file.
    #[arg(short = 'f', long = "file", value_name = "FLEET")]
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct SchemaArgs {}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub fleet: FleetArg,
    /// Only plan for this VM or pool (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Plan the teardown of every VM the fleet owns.
    #[arg(long)]
    pub destroy: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
    /// Save the plan for `apply PLANFILE`.
    #[arg(long, value_name = "PLANFILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

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
    /// How many agents change at once.
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
    /// Never send more than this many requests per second.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
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
    /// Also delete the stored k3s token under .exedev-k8s/<fleet>/.
    #[arg(long)]
    pub purge_secrets: bool,
    /// How many VMs are removed at once.
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Loads and validates a fleet file; on failure prints every error.
pub fn load_fleet(path: &Path) -> CliResult<(Fleet, String)> {
    let fleet = fleet::load(path)
        .map_err(|e| fail(format!("{} is not a valid fleet:\n{e}", path.display())))?;
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    Ok((fleet, plan::hex12(&bytes)))
}

fn fleet_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn validate(a: FleetArg) -> CliResult {
    let (fleet, _) = load_fleet(&a.file)?;
    let vms = fleet::desired_vms(&fleet);
    plan::spec::check_scripts(&fleet, &vms)?;
    let servers = vms.iter().filter(|v| v.role == Role::Server).count();
    println!(
        "{} is valid: fleet {:?}, {} VMs ({} servers, {} agents)",
        a.file.display(),
        fleet.metadata.name.value,
        vms.len(),
        servers,
        vms.len() - servers
    );
    Ok(ExitCode::SUCCESS)
}

pub fn schema(_: SchemaArgs) -> CliResult {
    println!("{}", serde_json::to_string_pretty(&fleet::json_schema())?);
    Ok(ExitCode::SUCCESS)
}

fn options(max_rate: Option<f64>) -> ClientOptions {
    ClientOptions {
        max_rate,
        ..ClientOptions::default()
    }
}

async fn make_plan(
    client: &Client,
    fleet: &Fleet,
    fp: &str,
    file: &Path,
    opts: &PlanOptions,
) -> CliResult<(Plan, Observed)> {
    let observed = observe(client, fleet, !opts.destroy).await?;
    let mut p = plan::diff(fleet, fp, &observed, opts)?;
    p.fleet_file = file.display().to_string();
    Ok((p, observed))
}

pub async fn plan_cmd(a: PlanArgs) -> CliResult {
    let (fleet, fp) = load_fleet(&a.fleet.file)?;
    let client = a.api.client(PLAN_CMDS, options(None))?;
    let opts = PlanOptions {
        targets: a.targets,
        destroy: a.destroy,
        members_removed: false,
    };
    let (p, _) = make_plan(&client, &fleet, &fp, &a.fleet.file, &opts).await?;
    let format = if a.json { Format::Json } else { a.format };
    match format {
        Format::Human => print!("{}", render::human(&p, ui::colour_enabled())),
        Format::Json => println!("{}", render::json(&p)),
        Format::Markdown => print!("{}", render::markdown(&p)),
    }
    if let Some(out) = &a.out {
        plan::file::save(&p, out)?;
        if format == Format::Human {
            println!(
                "\nSaved the plan to {}: run `exedev-k8s apply {}` to carry it out.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if a.detailed_exitcode && p.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            f.store(true, Ordering::Relaxed);
            eprintln!(
                "\ninterrupted: finishing changes in flight, starting no new ones; re-run apply to converge"
            );
        }
    });
    flag
}

fn owned_servers(fleet: &Fleet, observed: &Observed) -> Vec<String> {
    let cluster = &fleet.metadata.name.value;
    let tag = fleet::role_tag(Role::Server);
    observed
        .vms
        .iter()
        .filter(|v| fleet::owns(cluster, &v.tags) && v.tags.contains(&tag))
        .map(|v| v.vm_name.clone())
        .collect()
}

async fn execute(
    client: &Client,
    fleet: &Fleet,
    fleet_path: &Path,
    p: &Plan,
    observed: &Observed,
    parallelism: usize,
    json: bool,
) -> CliResult {
    if !p.has_changes() {
        if !json {
            println!("Nothing to do.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Only new VMs carry secrets; deleting and updating needs none.
    let creates = p
        .changes
        .iter()
        .any(|c| matches!(c.action, plan::Action::Create | plan::Action::Replace));
    let secrets = if creates {
        cluster_secrets::resolve(fleet, &fleet_dir(fleet_path), true)?
    } else {
        plan::spec::ClusterSecrets::placeholders()
    };
    let opts = ApplyOptions {
        parallelism,
        cancel: interrupt_flag(),
        ..ApplyOptions::default()
    };
    let reporter = ui::reporter(ui::ProgressMode::pick(json), p.changes.len());
    let report = apply::apply(
        client,
        fleet,
        p,
        &secrets,
        &owned_servers(fleet, observed),
        &opts,
        reporter,
    )
    .await;
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({"event": "summary", "report": report}))?
        );
    } else {
        println!(
            "\n{}: {} done, {} failed, {} skipped in {:.1}s.",
            if report.ok() {
                "Apply complete"
            } else {
                "Apply incomplete"
            },
            report.done.len(),
            report.failed.len(),
            report.skipped.len(),
            report.seconds
        );
        for (vm, action, err) in &report.failed {
            println!("  ✗ {vm} ({action:?}): {err}");
        }
        for vm in &report.skipped {
            println!("  - {vm}: skipped");
        }
    }
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError {
            message: format!(
                "{} change(s) failed and {} were skipped; re-run apply to converge (it re-reads exe.dev first)",
                report.failed.len(),
                report.skipped.len()
            ),
            code: 1,
        })
    }
}

pub async fn apply_cmd(a: ApplyArgs) -> CliResult {
    let saved = a.planfile.as_deref().map(plan::file::load).transpose()?;
    let fleet_path = match (&a.file, &saved) {
        (Some(f), _) => f.clone(),
        (None, Some(p)) if !p.fleet_file.is_empty() => PathBuf::from(&p.fleet_file),
        _ => {
            return Err(fail(
                "which fleet? pass -f FLEET (or a PLANFILE saved by `plan --out`)",
            ));
        }
    };
    let (fleet, fp) = load_fleet(&fleet_path)?;
    let client = a.api.client(APPLY_CMDS, options(a.max_rate))?;
    match saved {
        Some(saved) => {
            if saved.mode != "apply" && saved.mode != "destroy" {
                return Err(fail("unknown plan mode"));
            }
            if saved.mode == "destroy" && fleet.metadata.protect {
                return Err(fail(protect_message(&fleet)));
            }
            let opts = PlanOptions {
                targets: saved.targets.clone(),
                destroy: saved.mode == "destroy",
                members_removed: false,
            };
            let (fresh, observed) = make_plan(&client, &fleet, &fp, &fleet_path, &opts).await?;
            plan::file::check_fresh(&saved, &fresh)?;
            execute(
                &client,
                &fleet,
                &fleet_path,
                &saved,
                &observed,
                a.parallelism,
                a.json,
            )
            .await
        }
        None => {
            let opts = PlanOptions {
                targets: a.targets,
                destroy: false,
                members_removed: false,
            };
            let (p, observed) = make_plan(&client, &fleet, &fp, &fleet_path, &opts).await?;
            if !a.json {
                print!("{}", render::human(&p, ui::colour_enabled()));
            }
            if p.has_changes()
                && !a.yes
                && !ui::confirm("Apply these changes?", "--yes").map_err(fail)?
            {
                return Err(fail("apply cancelled"));
            }
            execute(
                &client,
                &fleet,
                &fleet_path,
                &p,
                &observed,
                a.parallelism,
                a.json,
            )
            .await
        }
    }
}

fn protect_message(fleet: &Fleet) -> String {
    format!(
        "fleet {:?} is protected (metadata.protect: true): destroy refused. Set protect: false in the fleet file first if you really mean it",
        fleet.metadata.name.value
    )
}

pub async fn destroy_cmd(a: DestroyArgs) -> CliResult {
    let (fleet, fp) = load_fleet(&a.fleet.file)?;
    if fleet.metadata.protect {
        return Err(fail(protect_message(&fleet)));
    }
    let client = a.api.client(DESTROY_CMDS, options(None))?;
    let opts = PlanOptions {
        targets: Vec::new(),
        destroy: true,
        members_removed: false,
    };
    let (p, observed) = make_plan(&client, &fleet, &fp, &a.fleet.file, &opts).await?;
    if !a.json {
        print!("{}", render::human(&p, ui::colour_enabled()));
    }
    if p.has_changes()
        && !a.yes
        && !ui::confirm("Destroy these VMs? Their disks are deleted too.", "--yes").map_err(fail)?
    {
        return Err(fail("destroy cancelled"));
    }
    let code = execute(
        &client,
        &fleet,
        &a.fleet.file,
        &p,
        &observed,
        a.parallelism,
        a.json,
    )
    .await?;
    if a.purge_secrets
        && cluster_secrets::purge(&fleet_dir(&a.fleet.file), &fleet.metadata.name.value)?
        && !a.json
    {
        println!(
            "Removed the stored k3s token for {:?}.",
            fleet.metadata.name.value
        );
    }
    Ok(code)
}
