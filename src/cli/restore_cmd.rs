//! `restore`: roll the fleet's cluster back to an etcd snapshot, the
//! plan/apply way: the plan is shown, the question asked (never off a
//! terminal: `--yes` there), then the engine carries it out.

use std::process::ExitCode;

use clap::Args;

use super::args::{FleetArg, KubeArgs};
use super::{ApiArgs, CliResult, fail, write_stdout};
use crate::api::command::FleetOp;
use crate::engine::{self, RestoreRequest};
use crate::ui;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub fleet: FleetArg,
    /// The snapshot to restore, by name (`exedev-k8s snapshot list`).
    #[arg(long, value_name = "NAME")]
    pub snapshot: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Restore even though every server is Ready (the cluster loses every
    /// change made since the snapshot).
    #[arg(long)]
    pub force: bool,
    /// Print the plan and what was done as one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The most the restore may take, every wait included.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// How long to wait for an apply of the fleet to finish (it holds the
    /// fleet's lease) before giving up.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Break the fleet's lease held under this ID (another run's, which
    /// is gone) before taking it.
    #[arg(long, value_name = "ID")]
    pub force_unlock: Option<String>,
}

pub async fn run(a: RestoreArgs) -> CliResult {
    let loaded = engine::Session::load(&a.fleet.file)?;
    // Restore reads exe.dev (`ls`) and works on the VMs over SSH: the
    // plan's grants are all it needs from the API.
    let client = a.api.client_with_ttl(
        &engine::cmds(FleetOp::Plan),
        a.api.options(None),
        crate::credentials::LONG_OPERATION_TTL,
    )?;
    let s = super::session(
        loaded,
        &a.fleet.file,
        client,
        a.kube.settings(a.api.ssh_key()),
    );
    let notes = super::notes(a.json);
    let req = RestoreRequest {
        snapshot: a.snapshot.clone(),
        force: a.force,
        lock: Some(crate::lease::LockRequest {
            wait: a.lock_timeout,
            force_unlock: a.force_unlock.clone(),
            note: notes.clone(),
        }),
        timeout: a.timeout,
    };
    let mut prepared = engine::prepare_restore(&s, &req, &notes).await?;
    let result = confirm_and_restore(&s, &prepared, &a, &notes).await;
    prepared.release().await;
    result
}

async fn confirm_and_restore(
    s: &engine::Session,
    prepared: &engine::PreparedRestore,
    a: &RestoreArgs,
    notes: &engine::Notes,
) -> CliResult {
    if !a.json {
        print!("{}", crate::restore::render(&prepared.plan));
    }
    if !a.yes
        && !ui::confirm(
            &format!(
                "Restore fleet {} from {}?",
                s.fleet.name,
                crate::text::one_line(&prepared.plan.snapshot.name)
            ),
            "--yes",
        )
        .map_err(fail)?
    {
        return Err(fail("restore cancelled: nothing was changed"));
    }
    let report = engine::execute_restore(s, prepared, a.timeout, notes).await?;
    if a.json {
        let doc = serde_json::json!({"plan": &prepared.plan, "report": report});
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        write_stdout(format!("{}\n", crate::text::json_safe(&text)))?;
    } else {
        let mut out = format!(
            "Restored fleet {} from snapshot {}: {} node(s) Ready.\n",
            s.fleet.name,
            crate::text::one_line(&prepared.plan.snapshot.name),
            report.ready_nodes
        );
        if !prepared.plan.missing.is_empty() {
            out.push_str(&format!(
                "Next: `exedev-k8s apply -f {}` recreates {} (they join the restored cluster).\n",
                a.fleet.file.display(),
                prepared.plan.missing.join(", ")
            ));
        }
        write_stdout(out)?;
    }
    Ok(ExitCode::SUCCESS)
}
