//! `status`: one table of exe.dev VMs, bootstrap states, Kubernetes Nodes
//! and proxy probes; exit 2 when something differs from the fleet.

use std::process::ExitCode;

use clap::Args;

use super::args::{FleetArg, KubeArgs};
use super::{ApiArgs, CliResult, write_stdout};
use crate::engine::{self, StatusRequest};

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub fleet: FleetArg,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Output format: `-o json` (kubectl's habit) is --json.
    #[arg(
        short = 'o',
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "human"
    )]
    pub output: super::args::TableFormat,
    /// Wait until every VM is a Ready Node with the fleet's labels and taints.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Do not probe the VMs' HTTPS proxies.
    #[arg(long)]
    pub no_probe: bool,
    /// Do not read the VMs' bootstrap state over SSH.
    #[arg(long)]
    pub no_ssh: bool,
}

pub async fn run(a: StatusArgs) -> CliResult {
    let json = a.json || a.output == super::args::TableFormat::Json;
    let s = super::read_only_session(&a.fleet, &a.api, &a.kube)?;
    let notes = super::notes(json);
    let (st, converged) = engine::status(
        &s,
        &StatusRequest {
            probe: !a.no_probe,
            ssh: !a.no_ssh,
            wait: a.wait.then_some(a.timeout),
            endpoint: a.api.endpoint.clone(),
        },
        &notes,
    )
    .await?;
    if json {
        write_stdout(
            crate::base::text::json_safe(&serde_json::to_string_pretty(&st)?).into_owned() + "\n",
        )?;
    } else {
        if let Some(c) = converged {
            write_stdout(format!("{c}\n"))?;
        }
        write_stdout(crate::core::status::render(&st))?;
    }
    Ok(if st.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::CHANGES)
    })
}
