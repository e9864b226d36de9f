//! `kubeconfig`: fetch the cluster's admin kubeconfig from the first server
//! SSH reaches (cp1, else the next), make it usable off the VM, and store
//! it 0600 (or merge it into an existing file). Prints where it went, never
//! what it holds: it carries the cluster's admin client key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::{CliResult, fail};
use crate::edges::cluster::merge_kubeconfig;
use crate::edges::cluster_secrets::write_private;
use crate::edges::kubeaccess::{fetch_kubeconfig, kubeconfig_path, server_url_of};
use crate::edges::ssh::SshOptions;

#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    /// The fleet file.
    #[arg(short = 'f', long = "file", value_name = "FLEET", default_value = super::args::DEFAULT_FLEET)]
    pub file: PathBuf,
    /// Write here instead of .exedev-k8s/<fleet>/kubeconfig beside the fleet.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Merge into FILE (e.g. ~/.kube/config), keeping its other clusters,
    /// instead of overwriting it.
    #[arg(long, requires = "out")]
    pub merge: bool,
    /// Replace FILE even though it holds contexts of other clusters
    /// (without it, --out refuses to drop them).
    #[arg(long, requires = "out", conflicts_with = "merge")]
    pub overwrite: bool,
    /// This machine is not on the tailnet: print how kubectl can reach the
    /// API through an SSH tunnel. (This tool's own commands take a tunnel on
    /// their own when the tailnet name does not answer.) The file still
    /// names the tailnet URL, for kubectl on tailnet machines.
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

/// What `--out FILE` found already there: nothing, or its contexts and
/// current context (read before anything is fetched, so a refusal costs
/// no SSH session).
fn existing_contexts(path: &Path) -> CliResult<Option<(Vec<String>, Option<String>)>> {
    match std::fs::read_to_string(path) {
        Ok(raw) => Ok(Some(crate::edges::cluster::contexts_of(&raw).map_err(
            |e| {
                fail(format!(
                    "{} exists and cannot be read as a kubeconfig: {e}",
                    path.display()
                ))
            },
        )?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(format!("cannot read {}: {e}", path.display()))),
    }
}

/// `--out FILE` without `--merge` replaces FILE: refused when FILE holds
/// contexts of other clusters (they would be dropped silently), unless
/// `--overwrite` asks for it.
fn check_overwrite(path: &Path, cluster: &str, contexts: &[String]) -> CliResult<()> {
    let others: Vec<&str> = contexts
        .iter()
        .map(String::as_str)
        .filter(|c| *c != cluster)
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let path = crate::base::text::one_line(&path.display().to_string()).into_owned();
    let names = others
        .iter()
        .map(|c| format!("{:?}", crate::base::text::one_line(c)))
        .collect::<Vec<_>>()
        .join(", ");
    Err(super::CliError {
        message: format!(
            "{path} holds other contexts ({names}): writing fleet {cluster:?}'s kubeconfig over it would drop them. Nothing was written"
        ),
        hint: Some(format!(
            "add it beside them with --merge, write another file, or replace {path} with --overwrite"
        )),
        code: super::exit::FAILURE,
    })
}

/// Says when `--merge` changed the file's `current-context` (kubectl then
/// talks to another cluster), and how to switch back.
fn current_context_note(before: Option<&str>, cluster: &str) -> Option<String> {
    match before {
        Some(b) if b == cluster => None,
        Some(b) => Some(format!(
            "current-context changed from {:?} to {cluster:?}: kubectl now talks to this cluster (switch back: kubectl config use-context {})",
            crate::base::text::one_line(b),
            crate::base::shellwords::quote(&crate::base::text::one_line(b)).unwrap_or_default()
        )),
        None => Some(format!("current-context set to {cluster:?}")),
    }
}

/// Runs `exedev-k8s kubeconfig`.
pub async fn run(a: KubeconfigArgs) -> CliResult {
    let fleet = crate::engine::Session::load(&a.file)?.fleet;
    let cluster = fleet.name.clone();
    let before = match &a.out {
        Some(out) => existing_contexts(out)?,
        None => None,
    };
    if let (Some((contexts, _)), Some(out), false, false) = (&before, &a.out, a.merge, a.overwrite)
    {
        check_overwrite(out, &cluster, contexts)?;
    }
    let ssh = SshOptions {
        retries: a.ssh_retries,
        retry_delay: a.ssh_retry_delay,
        ..SshOptions::new(a.ssh_key.clone())
    };
    let (yaml, from) = fetch_kubeconfig(&fleet, &ssh).await?;
    let target = a
        .out
        .clone()
        .unwrap_or_else(|| kubeconfig_path(&crate::edges::workspace::fleet_dir(&a.file), &cluster));
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
    if a.merge
        && let Some(note) = current_context_note(
            before.as_ref().and_then(|(_, current)| current.as_deref()),
            &cluster,
        )
    {
        println!("{note}");
    }
    if a.via_ssh_tunnel {
        println!("{}", tunnel_hint(&from, &target, &cluster, &ssh));
    } else {
        println!(
            "kubectl needs this machine on tailnet {} (or use --via-ssh-tunnel); exedev-k8s itself goes through an SSH tunnel when it is not",
            fleet.tailscale.tailnet
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How kubectl reaches the API from a machine off the tailnet: an SSH
/// forward to the server's loopback API (k3s's serving certificate names
/// 127.0.0.1), then kubectl with this file, this fleet's context and the
/// forwarded address. Both lines paste as they are.
fn tunnel_hint(from: &str, target: &Path, cluster: &str, opts: &SshOptions) -> String {
    use crate::base::shellwords::{quote, single_quote};
    let q = |w: &str| quote(w).unwrap_or_else(|_| single_quote(w));
    format!(
        "without Tailscale on this machine, reach the API with:\n  {}\nthen, in another terminal:\n  kubectl --kubeconfig {} --context {} --server https://127.0.0.1:6443 get nodes",
        crate::edges::ssh::forward_command_line(from, 6443, "127.0.0.1:6443", opts),
        q(&target.display().to_string()),
        q(cluster),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwriting_other_contexts_is_refused_with_the_ways_out() {
        let p = Path::new("kube/config");
        assert!(check_overwrite(p, "demo", &[]).is_ok());
        assert!(check_overwrite(p, "demo", &["demo".into()]).is_ok());
        let e = check_overwrite(p, "demo", &["prod".into(), "demo".into(), "lab".into()])
            .expect_err("refused");
        insta::assert_snapshot!(
            format!("{}\nhint: {}", e.message, e.hint.unwrap_or_default()),
            @r#"
        kube/config holds other contexts ("prod", "lab"): writing fleet "demo"'s kubeconfig over it would drop them. Nothing was written
        hint: add it beside them with --merge, write another file, or replace kube/config with --overwrite
        "#
        );
    }

    #[test]
    fn a_changed_current_context_is_said() {
        assert_eq!(current_context_note(Some("demo"), "demo"), None);
        insta::assert_snapshot!(
            current_context_note(Some("prod"), "demo").unwrap(),
            @r#"current-context changed from "prod" to "demo": kubectl now talks to this cluster (switch back: kubectl config use-context prod)"#
        );
        insta::assert_snapshot!(
            current_context_note(None, "demo").unwrap(),
            @r#"current-context set to "demo""#
        );
    }
}
