//! Arguments more than one command takes.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::engine::KubeSettings;

/// The fleet file a command reads when `-f` is not given: `fleet.yaml` in
/// the working directory (as `terraform` reads its directory and
/// `docker compose` its `compose.yaml`).
pub const DEFAULT_FLEET: &str = "fleet.yaml";

#[derive(Args, Debug)]
pub struct FleetArg {
    /// The fleet file.
    #[arg(short = 'f', long = "file", value_name = "FLEET", default_value = DEFAULT_FLEET)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

/// Output of a command that prints a table or JSON (`status -o json`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TableFormat {
    Human,
    Json,
}

/// How to reach the cluster's Kubernetes API.
#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// Kubeconfig to use (default: the one `exedev-k8s kubeconfig` stored
    /// under .exedev-k8s/<fleet>/).
    #[arg(long, env = "EXEDEV_K8S_KUBECONFIG", hide_env_values = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Always reach the API through an SSH tunnel to a server. Without it,
    /// the tunnel is taken on its own (and said) when the server's tailnet
    /// name does not answer from this machine.
    #[arg(long, conflicts_with = "no_ssh_tunnel")]
    pub via_ssh_tunnel: bool,
    /// Never reach the API through an SSH tunnel: only over the tailnet.
    #[arg(long)]
    pub no_ssh_tunnel: bool,
}

impl KubeArgs {
    /// These flags as given, for a next-step command the tool prints (so
    /// it reaches the API the same way when run as printed): empty, or
    /// ` --via-ssh-tunnel`, ` --no-ssh-tunnel`, ` --kubeconfig 'PATH'`.
    pub fn as_flags(&self) -> String {
        let mut out = String::new();
        if self.via_ssh_tunnel {
            out.push_str(" --via-ssh-tunnel");
        }
        if self.no_ssh_tunnel {
            out.push_str(" --no-ssh-tunnel");
        }
        if let Some(k) = &self.kubeconfig {
            let shown = k.display().to_string();
            out.push_str(" --kubeconfig ");
            out.push_str(&crate::base::shellwords::quote(&shown).unwrap_or(shown));
        }
        out
    }

    /// The engine's view, with the SSH key for VMs.
    pub fn settings(&self, ssh_key: Option<PathBuf>) -> KubeSettings {
        KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            via_ssh_tunnel: self.via_ssh_tunnel,
            no_ssh_tunnel: self.no_ssh_tunnel,
            ssh_key,
        }
    }
}

/// Where a fleet that follows a k3s channel looks it up.
#[derive(Args, Debug, Clone)]
pub struct ReleaseArgs {
    /// k3s's channel server, asked which release `k3s.channel` points at
    /// when planning (as install.sh's INSTALL_K3S_CHANNEL_URL).
    #[arg(
        long,
        env = crate::edges::channel::ENV,
        hide_env_values = true,
        value_name = "URL",
        default_value = crate::base::release::DEFAULT_CHANNEL_SERVER
    )]
    pub channel_server: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A printed next step reaches the API the way this run did.
    #[test]
    fn next_step_flags_repeat_how_the_api_was_reached() {
        let args = |via, no, kc: Option<&str>| KubeArgs {
            kubeconfig: kc.map(PathBuf::from),
            via_ssh_tunnel: via,
            no_ssh_tunnel: no,
        };
        assert_eq!(args(false, false, None).as_flags(), "");
        assert_eq!(args(true, false, None).as_flags(), " --via-ssh-tunnel");
        assert_eq!(args(false, true, None).as_flags(), " --no-ssh-tunnel");
        assert_eq!(
            args(false, false, Some("my dir/kc")).as_flags(),
            " --kubeconfig 'my dir/kc'"
        );
    }
}
