//! `kubeconfig`: fetch the cluster's admin kubeconfig from the first server
//! SSH reaches (cp1, else the next), make it usable off the VM, and store
//! it 0600 (or merge it into an existing file). Prints where it went, never
//! what it holds: it carries the cluster's admin client key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::{CliResult, fail};
use crate::cluster::merge_kubeconfig;
use crate::cluster_secrets::write_private;
use crate::kubeaccess::{fetch_kubeconfig, kubeconfig_path, server_url_of};
use crate::ssh::SshOptions;

#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    /// The fleet file.
    #[arg(short = 'f', long = "file", value_name = "FLEET")]
    pub file: PathBuf,
    /// Write here instead of .exedev-k8s/<fleet>/kubeconfig beside the fleet.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Merge into FILE (e.g. ~/.kube/config), keeping its other clusters,
    /// instead of overwriting it.
    #[arg(long, requires = "out")]
    pub merge: bool,
    /// This machine is not on the tailnet: print how kubectl can reach the
    /// API through an SSH tunnel. (This tool's own commands take a tunnel on
    /// their own when the tailnet name does not answer.) The file still
    /// names the tailnet URL, for kubectl on tailnet machines.
    #[arg(long)]
    pub via_ssh_tunnel: bool,
    /// SSH private key registered with exe.dev (default: ssh's own choice).
    #[arg(long, env = "EXE_DEV_SSH_KEY", value_name = "PATH")]
    pub ssh_key: Option<PathBuf>,
    /// Extra SSH attempts after a connection failure (exe.dev drops bursts).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub ssh_retries: u32,
    /// Pause before the first SSH retry, doubled for each further one.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ssh_retry_delay: std::time::Duration,
}

/// Writes a file the user named, mode 0600, atomically, without changing
/// the permissions of its directory (which `write_private` tightens: right
/// for our state directory, not for `~` or `~/.kube`).
fn write_user_file(path: &Path, content: &str) -> CliResult<()> {
    use std::io::Write;
    let err =
        |what: &str, e: std::io::Error| fail(format!("cannot {what} {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err("create the directory of", e))?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".exedev-k8s-tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| err("write", e))?;
    #[cfg(unix)]
    {
        // A leftover temp file keeps its old mode: tighten it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err("restrict", e))?;
    }
    f.write_all(content.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("replace", e))
}

/// Runs `exedev-k8s kubeconfig`.
pub async fn run(a: KubeconfigArgs) -> CliResult {
    let fleet = crate::engine::Session::load(&a.file)?.fleet;
    let cluster = fleet.name.clone();
    let ssh = SshOptions {
        retries: a.ssh_retries,
        retry_delay: a.ssh_retry_delay,
        ..SshOptions::new(a.ssh_key.clone())
    };
    let (yaml, from) = fetch_kubeconfig(&fleet, &ssh).await?;
    let target = a
        .out
        .clone()
        .unwrap_or_else(|| kubeconfig_path(&crate::workspace::fleet_dir(&a.file), &cluster));
    let content = if a.merge {
        let existing = match std::fs::read_to_string(&target) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(fail(format!("cannot read {}: {e}", target.display()))),
        };
        merge_kubeconfig(&existing, &yaml)
            .map_err(|e| fail(format!("cannot merge into {}: {e}", target.display())))?
    } else {
        yaml
    };
    if a.out.is_some() {
        write_user_file(&target, &content)?;
    } else {
        write_private(&target, &content)?;
    }
    let how = if a.merge { "merged into" } else { "written to" };
    println!(
        "kubeconfig of fleet {cluster:?} (from {from}) {how} {} (mode 0600; context {cluster:?}, server {})",
        target.display(),
        server_url_of(&fleet, &from)
    );
    if a.via_ssh_tunnel {
        println!(
            "without Tailscale on this machine, reach the API with: ssh -N -L 6443:127.0.0.1:6443 -o HostKeyAlias=exe.dev {from}.exe.xyz, then kubectl --server https://127.0.0.1:6443"
        );
    } else {
        println!(
            "kubectl needs this machine on tailnet {} (or use --via-ssh-tunnel); exedev-k8s itself goes through an SSH tunnel when it is not",
            fleet.tailscale.tailnet
        );
    }
    Ok(ExitCode::SUCCESS)
}
