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
mod objects;
mod quorum;
#[cfg(test)]
mod tests;
mod verdict;

pub use drain::{
    DrainOptions, DrainReport, RemoveOutcome, SkipReason, cordon, cordon_and_drain, delete_node,
    drain, forget_node, pods_to_evict, remove_node, skip_reason, uncordon,
};
pub use error::ClusterError;
pub use kubeconfig::{
    ClientAuth, SafeKubeconfig, contexts_of, credential_plugins, kubeconfig_rewrite,
    merge_kubeconfig, yaml_error_without_content,
};
pub use nodes::{
    FIELD_MANAGER, NodeView, Readiness, UnexpectedNode, apply_labels_taints, is_system_taint,
    list_nodes, pending_labels, readiness, taint_string, wait_ready,
};
pub use objects::apply_objects;
pub use quorum::{check_server_removal, quorum, servers_removable};
pub use verdict::{Drift, NodeReadiness, NodeState, PodRef, StuckPod, WrongLabel};
