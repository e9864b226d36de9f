//! `restore`: roll the fleet's cluster back to an etcd snapshot, the
//! plan/apply way: the plan is shown, the question asked (never off a
//! terminal: `--yes` there), then the engine carries it out.

use std::process::ExitCode;

use clap::Args;

use super::args::{FleetArg, KubeArgs};
use super::{ApiArgs, CliResult, fail, write_stdout};
use crate::core::api::command::FleetOp;
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
    /// Restore the snapshot into a throw-away fleet `<name>-drill` (one
    /// server of its own; the live fleet is not touched), check it comes up
    /// with the snapshot's objects, report, destroy it. The snapshot must
    /// be in S3.
    #[arg(long, conflicts_with = "force")]
    pub drill: bool,
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
    // Restore creates server VMs when every one is gone (and removes the
    // first again when the snapshot does not fit), a drill creates and
    // removes its own: apply's grants.
    let client = a.api.client_with_ttl(
        &engine::cmds(FleetOp::Apply),
        a.api.options(None),
        crate::edges::credentials::LONG_OPERATION_TTL,
    )?;
    let s = super::session(
        loaded,
        &a.fleet.file,
        client,
        a.kube.settings(a.api.ssh_key()),
    );
    let notes = super::notes(a.json);
    if a.drill {
        return drill(&s, &a, &notes).await;
    }
    let req = RestoreRequest {
        snapshot: a.snapshot.clone(),
        force: a.force,
        lock: Some(crate::edges::lease::LockRequest {
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
        print!("{}", crate::core::restore::render(&prepared.plan));
    }
    if !a.yes
        && !ui::confirm(
            &format!(
                "Restore fleet {} from {}?",
                s.fleet.name,
                crate::base::text::one_line(&prepared.plan.snapshot.name)
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
        write_stdout(format!("{}\n", crate::base::text::json_safe(&text)))?;
    } else {
        let mut out = format!(
            "Restored fleet {} from snapshot {}: {} node(s) Ready.\n",
            s.fleet.name,
            crate::base::text::one_line(&prepared.plan.snapshot.name),
            report.ready_nodes
        );
        if !prepared.plan.missing.is_empty() {
            out.push_str(&format!(
                "Not running, left as they were (their VMs are stopped; `exedev-k8s plan -f {}` says what apply would do): {}.\n",
                a.fleet.file.display(),
                prepared.plan.missing.join(", ")
            ));
        }
        write_stdout(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--drill`: says what it will do, asks, runs the drill, reports.
async fn drill(s: &engine::Session, a: &RestoreArgs, notes: &engine::Notes) -> CliResult {
    let name = format!("{}-drill", s.fleet.name);
    if !a.json {
        print!(
            "Drill of snapshot {} for fleet {}:\n  1. create fleet {name}: one server ({name}-cp1), its own VM and ownership tag, the fleet's k3s settings and server token\n  2. on it: stop k3s, reset etcd from the S3 snapshot, start k3s, wait until ready\n  3. read its Nodes and namespaces (the snapshot's objects)\n  4. destroy fleet {name}\nThe live fleet is not read or changed.\n",
            crate::base::text::one_line(&a.snapshot),
            s.fleet.name
        );
    }
    if !a.yes && !ui::confirm("Run the drill?", "--yes").map_err(fail)? {
        return Err(fail("drill cancelled: nothing was changed"));
    }
    let report = engine::drill(s, &a.snapshot, a.timeout, notes).await?;
    if a.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        write_stdout(format!("{}\n", crate::base::text::json_safe(&text)))?;
    } else {
        write_stdout(format!(
            "Drill passed: snapshot {} restored onto {}-cp1 in {:.0}s; its datastore holds {} node(s) ({}) and {} namespace(s) ({}); fleet {} destroyed.\n",
            crate::base::text::one_line(&report.snapshot),
            report.fleet,
            report.restore_seconds,
            report.nodes.len(),
            report.nodes.join(", "),
            report.namespaces.len(),
            report.namespaces.join(", "),
            report.fleet,
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
