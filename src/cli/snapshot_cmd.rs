//! `snapshot save|list|delete`: k3s's etcd snapshots of the fleet's
//! servers, over SSH (`crate::edges::snapshot` does the work; this prints it).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::args::FleetArg;
use super::{CliError, CliResult, write_stdout};
use crate::base::hint::Hint;
use crate::edges::snapshot::{self, SnapshotError};
use crate::edges::ssh::SshOptions;

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Take an etcd snapshot now, on the first server SSH reaches
    /// (`k3s etcd-snapshot save`; uploaded too when etcd.snapshots.s3 is set).
    Save(SaveArgs),
    /// List the snapshots: each server's own and the S3 bucket's.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Delete snapshots by name, on every server that holds them and in S3.
    Delete(DeleteArgs),
}

/// How every snapshot command reaches the servers.
#[derive(Args, Debug)]
pub struct Reach {
    #[command(flatten)]
    pub fleet: FleetArg,
    /// Accepted as apply takes it: snapshot commands use SSH only, which
    /// goes through exe.dev's proxy and needs no tailnet either way.
    #[arg(long)]
    pub via_ssh_tunnel: bool,
    /// SSH private key registered with exe.dev (default: ssh's own choice).
    #[arg(
        long,
        env = "EXE_DEV_SSH_KEY",
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub ssh_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    #[command(flatten)]
    pub reach: Reach,
    /// The snapshot's name prefix (k3s names it `<N>-<server>-<unix time>`;
    /// default `on-demand`).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub reach: Reach,
    /// Print JSON: `[{name, created, size, where, node, location}]`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub reach: Reach,
    /// The snapshots' names, as `snapshot list` shows them.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

fn setup(r: &Reach) -> CliResult<(crate::core::fleet::Fleet, SshOptions)> {
    let fleet = crate::engine::Session::load(&r.fleet.file)?.fleet;
    Ok((fleet, SshOptions::new(r.ssh_key.clone())))
}

fn cli_error(e: SnapshotError) -> CliError {
    CliError {
        message: e.to_string(),
        hint: e.hint(),
        code: super::exit::FAILURE,
    }
}

pub async fn run(cmd: SnapshotCmd) -> CliResult {
    match cmd {
        SnapshotCmd::Save(a) => {
            let (fleet, ssh) = setup(&a.reach)?;
            let saved = snapshot::save(&fleet, &ssh, a.name.as_deref())
                .await
                .map_err(cli_error)?;
            let mut out = format!("snapshot taken on {}:\n", saved.server);
            if saved.made.is_empty() {
                out.push_str(
                    "  (k3s listed no new snapshot afterwards: see `exedev-k8s snapshot list`)\n",
                );
            }
            for s in &saved.made {
                out.push_str(&format!(
                    "  {}  {}  {} bytes\n",
                    s.name,
                    s.place().shown(),
                    s.size
                ));
            }
            write_stdout(out)?;
        }
        SnapshotCmd::List(a) => {
            let (fleet, ssh) = setup(&a.reach)?;
            let listing = snapshot::list(&fleet, &ssh).await.map_err(cli_error)?;
            for (vm, why) in &listing.unreached {
                eprintln!(
                    "note: {vm} not listed (its local snapshots are missing here): {}",
                    crate::base::text::one_line(why)
                );
            }
            if a.json {
                write_stdout(crate::core::snapshot::render_json(&listing.snapshots))?;
            } else if listing.snapshots.is_empty() {
                write_stdout(format!("no snapshots of fleet {:?}\n", fleet.name))?;
            } else {
                write_stdout(crate::core::snapshot::render_table(&listing.snapshots))?;
            }
        }
        SnapshotCmd::Delete(a) => {
            let (fleet, ssh) = setup(&a.reach)?;
            let done = snapshot::delete(&fleet, &ssh, &a.names)
                .await
                .map_err(cli_error)?;
            let mut out = String::new();
            for d in &done {
                out.push_str(&format!(
                    "deleted on {} (and from S3 where it was there): {}\n",
                    d.server,
                    d.names.join(", ")
                ));
            }
            write_stdout(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
