//! What the cluster edge finds about a node or a pod, as plain values: the
//! operations (`nodes`, `drain`) return them and `ClusterError` carries
//! them, so they live apart from both (no API calls here).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use crate::core::fleet::Role;

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PodRef {
    pub(super) fn of(pod: &Pod) -> Self {
        PodRef {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// A pod a drain could not get rid of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckPod {
    /// The pod.
    pub pod: PodRef,
    /// Why it is still there (the eviction refusal, or "terminating").
    pub why: String,
}

/// A label whose value differs from the fleet's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongLabel {
    /// Label key.
    pub key: String,
    /// The fleet's value.
    pub want: String,
    /// The node's value.
    pub got: String,
}

/// How a Ready node differs from the fleet's labels and taints. Labels the
/// fleet does not mention are not drift (k3s and others add their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Fleet labels absent from the node that its kubelet could have set.
    pub missing_labels: BTreeMap<String, String>,
    /// Fleet labels absent from the node that no kubelet may set on itself
    /// (`node-role.kubernetes.io/*`, ...: [`crate::base::node_labels`]): never in
    /// the registration flags, they wait to be applied through the API.
    pub pending_labels: BTreeMap<String, String>,
    /// Fleet labels with another value on the node.
    pub wrong_labels: Vec<WrongLabel>,
    /// Fleet taints absent from the node.
    pub missing_taints: Vec<String>,
    /// Node taints that are neither the fleet's nor Kubernetes' own
    /// ([`super::is_system_taint`]).
    pub extra_taints: Vec<String>,
}

impl Drift {
    /// No difference at all.
    pub fn is_empty(&self) -> bool {
        self.missing_labels.is_empty()
            && self.pending_labels.is_empty()
            && self.wrong_labels.is_empty()
            && self.missing_taints.is_empty()
            && self.extra_taints.is_empty()
    }
}

/// The state of one expected node, most urgent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Registered, `Ready=True`, labels and taints as the fleet says.
    Ready,
    /// No Node object with the VM's name: k3s never registered.
    NotRegistered,
    /// Registered but `Ready` is not `True`.
    NotReady {
        /// The condition's reason.
        reason: Option<String>,
        /// The condition's message.
        message: Option<String>,
    },
    /// `Ready=True`, but labels or taints differ from the fleet
    /// (fix with [`super::apply_labels_taints`]).
    Drift(Drift),
}

impl NodeState {
    /// The node is Ready (drifted or not): it can run pods.
    pub fn is_ready(&self) -> bool {
        matches!(self, NodeState::Ready | NodeState::Drift(_))
    }
}

/// One expected node's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReadiness {
    /// Node (= VM) name.
    pub name: String,
    /// Server or agent: decides which k3s unit to look at.
    pub role: Role,
    /// The verdict.
    pub state: NodeState,
}

impl NodeReadiness {
    /// One line: the node, its state and the likely cause with where to look.
    pub fn explain(&self) -> String {
        format!("{}: {}", self.name, self.state_and_cause())
    }

    /// [`NodeReadiness::explain`] without the node's name, for a place
    /// that names the node already (a `status` row's problems).
    pub fn state_and_cause(&self) -> String {
        let unit = match self.role {
            Role::Server => "k3s",
            Role::Agent => "k3s-agent",
        };
        match &self.state {
            NodeState::Ready => "Ready".to_string(),
            NodeState::NotRegistered => format!(
                "not registered; the setup script or the Tailscale join likely failed: `exedev-k8s status` shows its step; on the VM see /var/log/exedev-k8s-bootstrap.log and /var/lib/exedev-k8s/bootstrap-state, then `journalctl -u {unit}`"
            ),
            NodeState::NotReady { reason, message } => {
                let why = match (reason, message) {
                    (Some(r), Some(m)) => format!("{r}: {m}"),
                    (Some(r), None) => r.clone(),
                    (None, Some(m)) => m.clone(),
                    (None, None) => "no Ready condition yet".to_string(),
                };
                format!(
                    "registered but not Ready ({why}); usually the kubelet or the CNI (flannel over Tailscale): check `journalctl -u {unit}` on the VM"
                )
            }
            NodeState::Drift(d) => {
                let mut parts = Vec::new();
                if !d.pending_labels.is_empty() {
                    let l: Vec<String> = d
                        .pending_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    parts.push(format!(
                        "labels pending (only the API may set them) {}",
                        l.join(", ")
                    ));
                }
                if !d.missing_labels.is_empty() {
                    let l: Vec<String> = d
                        .missing_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    parts.push(format!("missing labels {}", l.join(", ")));
                }
                for w in &d.wrong_labels {
                    parts.push(format!("label {}={} (want {})", w.key, w.got, w.want));
                }
                if !d.missing_taints.is_empty() {
                    parts.push(format!("missing taints {}", d.missing_taints.join(", ")));
                }
                if !d.extra_taints.is_empty() {
                    parts.push(format!("extra taints {}", d.extra_taints.join(", ")));
                }
                format!("Ready, but {}", parts.join("; "))
            }
        }
    }
}
