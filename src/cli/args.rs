//! Arguments more than one command takes.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::engine::KubeSettings;

#[derive(Args, Debug)]
pub struct FleetArg {
    /// The fleet file.
    #[arg(short = 'f', long = "file", value_name = "FLEET")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

/// How to reach the cluster's Kubernetes API.
#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// Kubeconfig to use (default: the one `exedev-k8s kubeconfig` stored
    /// under .exedev-k8s/<fleet>/).
    #[arg(long, env = "EXEDEV_K8S_KUBECONFIG")]
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
        env = crate::channel::ENV,
        value_name = "URL",
        default_value = crate::release::DEFAULT_CHANNEL_SERVER
    )]
    pub channel_server: String,
}
