//! `status`: one table of exe.dev VMs, bootstrap states, Kubernetes Nodes
//! and proxy probes; exit 2 when something differs from the fleet.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::args::{FleetArg, KubeArgs};
use super::{ApiArgs, CliResult, write_stdout};
use crate::api::command::FleetOp;
use crate::engine::{self, Notes, Session, StatusRequest};

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
    let loaded = Session::load(&a.fleet.file)?;
    let client = a
        .api
        .client(&engine::cmds(FleetOp::Plan), a.api.options(None))?;
    let kube = a.kube.settings(a.api.ssh_key.clone());
    super::warn_user_kubeconfig(&kube);
    let s = Session::new(loaded, &a.fleet.file, client, kube);
    let notes: Notes = if a.json {
        Arc::new(|_: &str| {})
    } else {
        Arc::new(|n: &str| eprintln!("{n}"))
    };
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
    if a.json {
        write_stdout(
            crate::text::json_safe(&serde_json::to_string_pretty(&st)?).into_owned() + "\n",
        )?;
    } else {
        if let Some(c) = converged {
            write_stdout(format!("{c}\n"))?;
        }
        write_stdout(crate::status::render(&st))?;
    }
    Ok(if st.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::CHANGES)
    })
}
