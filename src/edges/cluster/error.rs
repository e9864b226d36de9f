//! Every failure of the cluster edge, worded for the operator: what was being
//! done, to which node or pod, what the API server said, and what to try.

use std::time::Duration;

use super::verdict::{NodeReadiness, StuckPod};

/// A failure talking to (or about) the k3s cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An API call failed.
    #[error("{action}: {}", describe(.source))]
    Api {
        /// What was being done, e.g. `listing nodes`.
        action: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// Some expected nodes did not become Ready in time.
    #[error("{}", render_not_ready(.waited, .stragglers, .last_error))]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// Every expected node that is not Ready, with the likely cause.
        stragglers: Vec<NodeReadiness>,
        /// The last API error seen while polling, if the last poll failed.
        last_error: Option<String>,
    },
    /// Draining a node did not finish in time.
    #[error("{}", render_drain_timeout(.node, .waited, .pods))]
    DrainTimeout {
        /// The node being drained.
        node: String,
        /// How long we waited.
        waited: Duration,
        /// The pods still on the node and why.
        pods: Vec<StuckPod>,
    },
    /// A kubeconfig text could not be parsed or rewritten.
    #[error("kubeconfig: {0}")]
    InvalidKubeconfig(String),
    /// Removing servers would break etcd quorum.
    #[error("{0}")]
    Quorum(String),
}

impl ClusterError {
    /// Wraps a kube error with what was being done.
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        ClusterError::Api {
            action: action.into(),
            source,
        }
    }
}

/// HTTP status of an API error response, if the server answered.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A short, readable form of kube's error (its own `Display` dumps the whole
/// `Status` struct).
pub(crate) fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let mut out = format!("HTTP {}", s.code);
            if !s.reason.is_empty() {
                out.push_str(&format!(" {}", s.reason));
            }
            if !s.message.is_empty() {
                out.push_str(&format!(": {}", s.message));
            }
            match s.code {
                401 => out.push_str(
                    " (the kubeconfig's credentials were refused: fetch a fresh kubeconfig)",
                ),
                403 => out.push_str(" (the kubeconfig's user lacks this permission)"),
                _ => {}
            }
            out
        }
        kube::Error::Service(inner) => format!(
            "cannot reach the API server ({inner}); is the cluster up and the server address in the kubeconfig reachable (Tailscale)?"
        ),
        kube::Error::HyperError(inner) => format!("connection to the API server failed: {inner}"),
        other => other.to_string(),
    }
}

fn render_not_ready(
    waited: &Duration,
    stragglers: &[NodeReadiness],
    last_error: &Option<String>,
) -> String {
    let mut out = format!(
        "{} node(s) not Ready after {}:",
        stragglers.len(),
        humantime::format_duration(*waited)
    );
    for s in stragglers {
        out.push_str(&format!("\n  - {}", s.explain()));
    }
    if let Some(e) = last_error {
        out.push_str(&format!("\n  (last poll failed: {e})"));
    }
    out
}

fn render_drain_timeout(node: &str, waited: &Duration, pods: &[StuckPod]) -> String {
    let mut out = format!(
        "draining node {node}: {} pod(s) still there after {}:",
        pods.len(),
        humantime::format_duration(*waited)
    );
    for p in pods {
        out.push_str(&format!("\n  - {}: {}", p.pod, p.why));
    }
    out.push_str(
        "\n  Fix the PodDisruptionBudget or wait, or rerun with --force-drain to delete the pods that cannot be evicted.",
    );
    out
}
