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
    /// How long to wait for the Kubernetes API's first answer (a server
    /// that answers 503 is asked again until then) before going on without
    /// it (plan, status) or refusing what needs it (apply).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub api_timeout: std::time::Duration,
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
            api_timeout: Some(self.api_timeout),
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

    /// `KubeArgs` as a command line parses them.
    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        kube: KubeArgs,
    }

    /// Without --api-timeout the engine waits the library's own default
    /// (one fact: the flag's default is that constant); with it, as long
    /// as asked.
    #[test]
    fn api_timeout_defaults_to_the_connect_timeout_and_reaches_the_engine() {
        use clap::Parser;
        let none = Cmd::try_parse_from(["x"]).unwrap().kube;
        assert_eq!(
            none.settings(None).api_timeout,
            Some(crate::edges::kubeaccess::CONNECT_TIMEOUT)
        );
        let five = Cmd::try_parse_from(["x", "--api-timeout", "5s"])
            .unwrap()
            .kube;
        assert_eq!(
            five.settings(None).api_timeout,
            Some(std::time::Duration::from_secs(5))
        );
        assert!(Cmd::try_parse_from(["x", "--api-timeout", "soon"]).is_err());
    }

    /// A printed next step reaches the API the way this run did.
    #[test]
    fn next_step_flags_repeat_how_the_api_was_reached() {
        let args = |via, no, kc: Option<&str>| KubeArgs {
            kubeconfig: kc.map(PathBuf::from),
            via_ssh_tunnel: via,
            no_ssh_tunnel: no,
            api_timeout: crate::edges::kubeaccess::CONNECT_TIMEOUT,
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
