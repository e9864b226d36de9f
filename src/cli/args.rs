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
    /// Reach the API through an SSH tunnel to the first server (when this
    /// machine is not on the tailnet).
    #[arg(long)]
    pub via_ssh_tunnel: bool,
}

impl KubeArgs {
    /// The engine's view, with the SSH key for VMs.
    pub fn settings(&self, ssh_key: Option<PathBuf>) -> KubeSettings {
        KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            via_ssh_tunnel: self.via_ssh_tunnel,
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
        hide_env_values = true,
        value_name = "URL",
        default_value = crate::release::DEFAULT_CHANNEL_SERVER
    )]
    pub channel_server: String,
}
