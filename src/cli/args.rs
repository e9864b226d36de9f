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
