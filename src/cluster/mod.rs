//! The Kubernetes side of a fleet: a thin edge over the k3s API server.
//!
//! Decisions are pure functions tested without a cluster ([`readiness`],
//! [`pods_to_evict`], [`check_server_removal`], [`kubeconfig_rewrite`],
//! [`merge_kubeconfig`]); the async functions only fetch, send and poll.
//! Named `cluster` because `kube` is the client crate's name.

mod drain;
mod error;
mod kubeconfig;
mod nodes;
mod quorum;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use drain::{
    DrainOptions, DrainReport, PodRef, RemoveOutcome, SkipReason, StuckPod, cordon, delete_node,
    drain, pods_to_evict, remove_node, skip_reason,
};
pub use error::ClusterError;
pub use kubeconfig::{kubeconfig_rewrite, merge_kubeconfig};
pub use nodes::{
    Drift, FIELD_MANAGER, NodeReadiness, NodeState, NodeView, Readiness, UnexpectedNode,
    WrongLabel, apply_labels_taints, is_system_taint, list_nodes, pending_labels, readiness,
    taint_string, wait_ready,
};
pub use quorum::{check_server_removal, quorum, servers_removable};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Builds a client from a kubeconfig file (the one the tool wrote, or any
/// other), optionally for a named context. Nothing is sent yet: the first
/// call reveals whether the server is reachable.
pub async fn connect(
    kubeconfig: &Path,
    context: Option<&str>,
) -> Result<kube::Client, ClusterError> {
    let fail = |reason: String, hint: &str| ClusterError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        reason,
        hint: hint.to_string(),
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| {
        fail(
            e.to_string(),
            "check the path; the tool writes the cluster's kubeconfig after bootstrap, or copy /etc/rancher/k3s/k3s.yaml from the first server",
        )
    })?;
    if let Some(ctx) = context
        && !kc.contexts.iter().any(|c| c.name == ctx)
    {
        let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(fail(
            format!("it has no context {ctx:?} (it has: {})", known.join(", ")),
            "pass one of the listed contexts, or omit the context to use current-context",
        ));
    }
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|e| {
            fail(
                e.to_string(),
                "the file is incomplete: it needs a current-context (or --context), its cluster and its user",
            )
        })?;
    kube::Client::try_from(config).map_err(|e| {
        fail(
            e.to_string(),
            "check the certificate and key data in the file; re-fetch it from the first server if in doubt",
        )
    })
}
