//! `check`: the cluster's connectivity test (see `crate::core::check` for what
//! it proves and how probes are bounded); exit 0 only when every path
//! passed. The namespace it creates is deleted on every way out: success,
//! failure, Ctrl-C or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::args::{FleetArg, KubeArgs, TableFormat};
use super::{ApiArgs, CliResult, write_stdout};
use crate::engine::{CheckRequest, Checker};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub fleet: FleetArg,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Print the report as JSON (progress is then not shown).
    #[arg(long)]
    pub json: bool,
    /// Output format: `-o json` is --json.
    #[arg(
        short = 'o',
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "human"
    )]
    pub output: TableFormat,
    /// How long to wait for a check pod on every Ready node.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Probes in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Do not probe the shared pools through exe.dev's HTTPS proxy.
    #[arg(long)]
    pub no_probe: bool,
}

pub async fn run(a: CheckArgs) -> CliResult {
    let json = a.json || a.output == TableFormat::Json;
    let s = super::read_only_session(&a.fleet, &a.api, &a.kube)?;
    let notes = super::notes(json);
    let checker = Checker::connect(&s).await?;
    let req = CheckRequest {
        timeout: a.timeout,
        concurrency: usize::from(a.concurrency),
        shares: !a.no_probe,
        endpoint: a.api.endpoint.clone(),
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let outcome = tokio::select! {
        r = checker.run(&s, &req, &notes) => Some(r),
        why = super::apply::interrupted(&mut term) => {
            eprintln!("{why}: stopping; deleting namespace {}", checker.namespace());
            None
        }
    };
    let cleaned = checker.cleanup(&notes).await;
    let Some(result) = outcome else {
        crate::edges::ssh::kill_all();
        std::process::exit(super::exit::INTERRUPTED);
    };
    let mut report = result?;
    report.cleaned_up = cleaned;
    if json {
        write_stdout(
            crate::base::text::json_safe(&serde_json::to_string_pretty(&report)?).into_owned()
                + "\n",
        )?;
    } else {
        write_stdout(crate::core::check::render(&report))?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::FAILURE)
    })
}
