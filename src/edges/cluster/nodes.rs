//! Which expected nodes are Ready, which drifted from the fleet's labels and
//! taints, and the calls that observe and correct that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

use super::error::{ClusterError, describe, status_code};
use super::verdict::{Drift, NodeReadiness, NodeState, WrongLabel};
use crate::core::fleet::{DesiredVm, FLEET_LABEL_KEY};

/// Field manager of every server-side apply the tool makes, so its fields
/// can be told apart from (and never clobber) other managers' fields.
pub const FIELD_MANAGER: &str = "exedev-k8s";

/// What the tool needs to know about one Node, flattened from the API object
/// so that the decision logic can be tested with plain values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node name; equals the VM name (k3s `--node-name`).
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Reason of the `Ready` condition (e.g. `KubeletNotReady`).
    pub ready_reason: Option<String>,
    /// Message of the `Ready` condition: the kubelet's own diagnosis.
    pub ready_message: Option<String>,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// All taints, `key[=value]:Effect`.
    pub taints: Vec<String>,
    /// `status.nodeInfo.kubeletVersion`, e.g. `v1.33.1+k3s1`.
    pub kubelet_version: Option<String>,
    /// Cordoned.
    pub unschedulable: bool,
    /// When the `Ready` condition last changed status (its
    /// `lastTransitionTime`, Unix seconds): how long a node has not been
    /// Ready, for a plan judging a server lost ([`crate::core::plan::LOST_AFTER_SECS`]).
    pub ready_since: Option<i64>,
}

impl From<&Node> for NodeView {
    fn from(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let spec = node.spec.as_ref();
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready: ready.is_some_and(|c| c.status == "True"),
            ready_reason: ready.and_then(|c| c.reason.clone()),
            ready_message: ready.and_then(|c| c.message.clone()),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .map(|ts| ts.iter().map(taint_string).collect())
                .unwrap_or_default(),
            kubelet_version: status
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone()),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready_since: ready
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.as_second()),
        }
    }
}

/// A taint as the fleet file writes it: `key=value:Effect`, or `key:Effect`
/// when the value is empty.
pub fn taint_string(t: &Taint) -> String {
    match t.value.as_deref() {
        Some(v) if !v.is_empty() => format!("{}={}:{}", t.key, v, t.effect),
        _ => format!("{}:{}", t.key, t.effect),
    }
}

/// The Kubernetes form of a fleet taint.
fn kube_taint(t: &crate::core::fleet::Taint) -> Taint {
    Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: t.effect.as_str().to_string(),
        time_added: None,
    }
}

/// Canonical form of a taint a Node carries (`a=:X` and `a:X` are one
/// taint), as the fleet writes it.
fn canonical_taint(s: &str) -> String {
    crate::core::fleet::Taint::canonical(s)
}

pub use crate::base::node_labels::is_system_taint;

/// A node the cluster has and the fleet does not ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedNode {
    /// Node name.
    pub name: String,
    /// Its `exedev-k8s.io/fleet` label, if any: a node of a VM this fleet
    /// used to have, or of another fleet, or joined by hand.
    pub fleet: Option<String>,
}

/// Readiness of every expected node, and the nodes nobody expected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// One entry per expected VM, in fleet order.
    pub nodes: Vec<NodeReadiness>,
    /// Nodes on the cluster that are not in the fleet, by name.
    pub unexpected: Vec<UnexpectedNode>,
}

impl Readiness {
    /// Every expected node is Ready (drift allowed: it is fixed separately).
    pub fn all_ready(&self) -> bool {
        self.nodes.iter().all(|n| n.state.is_ready())
    }

    /// Expected nodes that are not Ready.
    pub fn stragglers(&self) -> Vec<&NodeReadiness> {
        self.nodes.iter().filter(|n| !n.state.is_ready()).collect()
    }

    /// Ready nodes whose labels or taints differ from the fleet.
    pub fn drifted(&self) -> Vec<&NodeReadiness> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.state, NodeState::Drift(_)))
            .collect()
    }

    /// How many expected nodes are Ready.
    pub fn ready_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.state.is_ready()).count()
    }
}

/// The fleet labels of `vm` that only the API can set and that `node`
/// (absent: not registered yet) does not carry yet. Pure.
pub fn pending_labels(vm: &DesiredVm, node: Option<&NodeView>) -> BTreeMap<String, String> {
    vm.labels
        .iter()
        .filter(|(k, _)| !crate::base::node_labels::kubelet_may_set(k))
        .filter(|(k, _)| node.is_none_or(|n| !n.labels.contains_key(*k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn drift(vm: &DesiredVm, node: &NodeView) -> Drift {
    let mut d = Drift {
        pending_labels: pending_labels(vm, Some(node)),
        ..Drift::default()
    };
    for (k, want) in &vm.labels {
        match node.labels.get(k) {
            None if d.pending_labels.contains_key(k) => {}
            None => {
                d.missing_labels.insert(k.clone(), want.clone());
            }
            Some(got) if got != want => d.wrong_labels.push(WrongLabel {
                key: k.clone(),
                want: want.clone(),
                got: got.clone(),
            }),
            Some(_) => {}
        }
    }
    let want: BTreeSet<String> = vm.taints.iter().map(|t| t.to_string()).collect();
    let have: BTreeSet<String> = node.taints.iter().map(|t| canonical_taint(t)).collect();
    d.missing_taints = want.difference(&have).cloned().collect();
    d.extra_taints = have
        .difference(&want)
        .filter(|t| !is_system_taint(t))
        .cloned()
        .collect();
    d
}

/// Compares the nodes the cluster reports with the VMs the fleet expects.
/// Pure: the node name is the VM name.
pub fn readiness(expected: &[DesiredVm], nodes: &[NodeView]) -> Readiness {
    let by_name: BTreeMap<&str, &NodeView> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let verdicts = expected
        .iter()
        .map(|vm| {
            let state = match by_name.get(vm.name.as_str()) {
                None => NodeState::NotRegistered,
                Some(n) if !n.ready => NodeState::NotReady {
                    reason: n.ready_reason.clone(),
                    message: n.ready_message.clone(),
                },
                Some(n) => {
                    let d = drift(vm, n);
                    if d.is_empty() {
                        NodeState::Ready
                    } else {
                        NodeState::Drift(d)
                    }
                }
            };
            NodeReadiness {
                name: vm.name.clone(),
                role: vm.role,
                state,
            }
        })
        .collect();
    let names: BTreeSet<&str> = expected.iter().map(|v| v.name.as_str()).collect();
    let mut unexpected: Vec<UnexpectedNode> = nodes
        .iter()
        .filter(|n| !names.contains(n.name.as_str()))
        .map(|n| UnexpectedNode {
            name: n.name.clone(),
            fleet: n.labels.get(FLEET_LABEL_KEY).cloned(),
        })
        .collect();
    unexpected.sort_by(|a, b| a.name.cmp(&b.name));
    Readiness {
        nodes: verdicts,
        unexpected,
    }
}

/// Every Node on the cluster, flattened.
pub async fn list_nodes(client: &kube::Client) -> Result<Vec<NodeView>, ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| ClusterError::api("listing nodes", e))?;
    Ok(list.items.iter().map(NodeView::from).collect())
}

/// Errors that polling cannot outwait: the credentials are wrong.
fn is_permanent(e: &kube::Error) -> bool {
    matches!(status_code(e), Some(401 | 403))
}

/// Polls the node list until every expected node is Ready, calling
/// `on_progress` after each successful poll. Failed polls (API server not up
/// yet, connection refused) are retried until `timeout`, except refused
/// credentials. On timeout the error names each straggler and its likely
/// cause.
pub async fn wait_ready(
    client: &kube::Client,
    expected: &[DesiredVm],
    timeout: Duration,
    poll: Duration,
    on_progress: impl Fn(&Readiness),
) -> Result<Readiness, ClusterError> {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut last = readiness(expected, &[]);
    // Quick first looks, then every `poll`.
    let mut delay = poll.min(Duration::from_millis(250));
    loop {
        let last_error = match list_nodes(client).await {
            Ok(nodes) => {
                last = readiness(expected, &nodes);
                on_progress(&last);
                if last.all_ready() {
                    return Ok(last);
                }
                None
            }
            Err(ClusterError::Api { source, .. }) if is_permanent(&source) => {
                return Err(ClusterError::api("listing nodes", source));
            }
            Err(ClusterError::Api { source, .. }) => Some(describe(&source)),
            Err(other) => return Err(other),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ClusterError::NotReady {
                waited: now - start,
                stragglers: last.stragglers().into_iter().cloned().collect(),
                last_error,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = delay.mul_f64(1.5).min(poll);
    }
}

/// Server-side applies the fleet's labels and taints to the VM's node under
/// field manager [`FIELD_MANAGER`] (forced: the fleet is the authority for
/// these keys).
///
/// Labels are a map, so only the fleet's keys are sent and other managers'
/// labels stay; a label the fleet stops listing is removed by the apply
/// itself, because this manager owned it. Node taints are an *atomic* list
/// for server-side apply, so the whole list is sent: the fleet's taints plus
/// the node's current Kubernetes-managed ones ([`is_system_taint`]). Other
/// taints are drift ([`Drift::extra_taints`]) and are removed; they are
/// returned so the caller can say so.
pub async fn apply_labels_taints(
    client: &kube::Client,
    vm: &DesiredVm,
) -> Result<Vec<String>, ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api
        .get(&vm.name)
        .await
        .map_err(|e| ClusterError::api(format!("reading node {}", vm.name), e))?;
    let current: Vec<Taint> = node.spec.and_then(|s| s.taints).unwrap_or_default();
    let (body, removed) = labels_taints_patch(vm, &current);
    api.patch(
        &vm.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| ClusterError::api(format!("applying labels and taints to node {}", vm.name), e))?;
    Ok(removed)
}

/// The apply configuration for [`apply_labels_taints`], and the taints it
/// removes. Pure.
fn labels_taints_patch(vm: &DesiredVm, current: &[Taint]) -> (serde_json::Value, Vec<String>) {
    let mut taints: Vec<Taint> = Vec::new();
    for t in &vm.taints {
        let parsed = kube_taint(t);
        if !taints
            .iter()
            .any(|x| x.key == parsed.key && x.effect == parsed.effect)
        {
            taints.push(parsed);
        }
    }
    let mut removed = Vec::new();
    for t in current {
        let ours = taints
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect);
        if ours {
            continue;
        }
        if is_system_taint(&t.key) {
            taints.push(t.clone());
        } else {
            removed.push(taint_string(t));
        }
    }
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": vm.name, "labels": vm.labels },
        "spec": { "taints": taints },
    });
    (body, removed)
}

#[cfg(test)]
mod pure_tests {
    use super::*;
    use crate::base::sizes::ByteSize;
    use crate::core::fleet::Role;

    pub(crate) fn vm(
        name: &str,
        role: Role,
        labels: &[(&str, &str)],
        taints: &[&str],
    ) -> DesiredVm {
        DesiredVm {
            name: name.to_string(),
            role,
            pool: "p".to_string(),
            index: 1,
            image: "exeuntu".to_string(),
            cpu: 2,
            memory: ByteSize(0),
            disk: ByteSize(0),
            tags: vec![],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: taints.iter().map(|t| t.parse().unwrap()).collect(),
            share: None,
        }
    }

    fn node(name: &str, ready: bool, labels: &[(&str, &str)], taints: &[&str]) -> NodeView {
        NodeView {
            name: name.to_string(),
            ready,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: taints.iter().map(|t| t.parse().unwrap()).collect(),
            ..NodeView::default()
        }
    }

    #[test]
    fn taint_strings_round_trip() {
        for s in [
            "a=b:NoSchedule",
            "x.io/k:NoExecute",
            "k=v=w:PreferNoSchedule",
        ] {
            let t = crate::core::fleet::Taint::parse(s).map(|t| taint_string(&kube_taint(&t)));
            assert_eq!(t.as_deref(), Some(s));
        }
        assert_eq!(canonical_taint("a=:NoSchedule"), "a:NoSchedule");
    }

    #[test]
    fn readiness_states_in_order_of_urgency() {
        let expected = [
            vm("c-cp1", Role::Server, &[("exedev-k8s.io/fleet", "c")], &[]),
            vm(
                "c-web1",
                Role::Agent,
                &[("tier", "web")],
                &["dedicated=web:NoSchedule"],
            ),
            vm("c-web2", Role::Agent, &[], &[]),
            vm(
                "c-db1",
                Role::Agent,
                &[("tier", "db"), ("disk", "ssd")],
                &["db:NoSchedule"],
            ),
        ];
        let mut not_ready = node("c-web1", false, &[], &[]);
        not_ready.ready_reason = Some("KubeletNotReady".into());
        not_ready.ready_message = Some("cni plugin not initialized".into());
        let nodes = [
            node(
                "c-cp1",
                true,
                &[
                    ("exedev-k8s.io/fleet", "c"),
                    ("node-role.kubernetes.io/master", "true"),
                ],
                &["node.kubernetes.io/unschedulable:NoSchedule"],
            ),
            not_ready,
            node(
                "c-db1",
                true,
                &[("tier", "web")],
                &[
                    "manual=x:NoExecute",
                    "node.kubernetes.io/not-ready:NoExecute",
                ],
            ),
            node("stray", true, &[("exedev-k8s.io/fleet", "old")], &[]),
            node("a-hand-joined", true, &[], &[]),
        ];
        let r = readiness(&expected, &nodes);
        let states: Vec<(&str, &NodeState)> = r
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), &n.state))
            .collect();
        assert_eq!(
            states,
            [
                ("c-cp1", &NodeState::Ready),
                (
                    "c-web1",
                    &NodeState::NotReady {
                        reason: Some("KubeletNotReady".into()),
                        message: Some("cni plugin not initialized".into())
                    }
                ),
                ("c-web2", &NodeState::NotRegistered),
                (
                    "c-db1",
                    &NodeState::Drift(Drift {
                        missing_labels: BTreeMap::from([("disk".into(), "ssd".into())]),
                        pending_labels: BTreeMap::new(),
                        wrong_labels: vec![WrongLabel {
                            key: "tier".into(),
                            want: "db".into(),
                            got: "web".into()
                        }],
                        missing_taints: vec!["db:NoSchedule".into()],
                        extra_taints: vec!["manual=x:NoExecute".into()],
                    })
                ),
            ]
        );
        assert_eq!(
            r.unexpected,
            [
                UnexpectedNode {
                    name: "a-hand-joined".into(),
                    fleet: None
                },
                UnexpectedNode {
                    name: "stray".into(),
                    fleet: Some("old".into())
                },
            ]
        );
        assert!(!r.all_ready());
        assert_eq!(r.ready_count(), 2);
        let stragglers: Vec<&str> = r.stragglers().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(stragglers, ["c-web1", "c-web2"]);
        assert_eq!(r.drifted().len(), 1);
    }

    #[test]
    fn explanations_point_at_the_likely_cause() {
        let nr = NodeReadiness {
            name: "c-web2".into(),
            role: Role::Agent,
            state: NodeState::NotRegistered,
        };
        let e = nr.explain();
        assert!(e.contains("/var/lib/exedev-k8s/bootstrap-state"), "{e}");
        assert!(e.contains("/var/log/exedev-k8s-bootstrap.log"), "{e}");
        assert!(e.contains("k3s-agent"), "{e}");
        let nr = NodeReadiness {
            name: "c-cp1".into(),
            role: Role::Server,
            state: NodeState::NotReady {
                reason: Some("KubeletNotReady".into()),
                message: Some("cni plugin not initialized".into()),
            },
        };
        let e = nr.explain();
        assert!(
            e.contains("KubeletNotReady: cni plugin not initialized"),
            "{e}"
        );
        assert!(e.contains("journalctl -u k3s`"), "{e}");
    }

    #[test]
    fn labels_only_the_api_may_set_are_pending_not_missing() {
        let v = vm(
            "c-web1",
            Role::Agent,
            &[
                ("tier", "web"),
                ("node-role.kubernetes.io/worker", "true"),
                ("node.kubernetes.io/role", "web"),
            ],
            &[],
        );
        let fresh = node(
            "c-web1",
            true,
            &[("tier", "web"), ("node.kubernetes.io/role", "web")],
            &[],
        );
        let r = readiness(std::slice::from_ref(&v), std::slice::from_ref(&fresh));
        let NodeState::Drift(d) = &r.nodes[0].state else {
            panic!("{:?}", r.nodes[0].state);
        };
        assert!(d.missing_labels.is_empty());
        assert_eq!(
            d.pending_labels,
            BTreeMap::from([("node-role.kubernetes.io/worker".into(), "true".into())])
        );
        assert!(
            r.nodes[0].explain().contains("labels pending"),
            "{}",
            r.nodes[0].explain()
        );
        // Not registered yet: every API-only label is pending.
        assert_eq!(pending_labels(&v, None).len(), 1);
        // Applied: nothing pending, no drift.
        let mut applied = fresh.clone();
        applied
            .labels
            .insert("node-role.kubernetes.io/worker".into(), "true".into());
        assert!(pending_labels(&v, Some(&applied)).is_empty());
        assert_eq!(readiness(&[v], &[applied]).nodes[0].state, NodeState::Ready);
    }

    #[test]
    fn empty_fleet_and_cluster_is_ready() {
        let r = readiness(&[], &[]);
        assert!(r.all_ready());
        assert!(r.unexpected.is_empty());
    }

    #[test]
    fn patch_keeps_system_taints_and_drops_foreign_ones() {
        let v = vm(
            "n1",
            Role::Agent,
            &[("exedev-k8s.io/fleet", "c"), ("tier", "web")],
            &["dedicated=web:NoSchedule"],
        );
        let current = [
            "node.kubernetes.io/unschedulable:NoSchedule",
            "manual=x:NoExecute",
            "dedicated=old:NoSchedule",
        ]
        .into_iter()
        .filter_map(crate::core::fleet::Taint::parse)
        .map(|t| kube_taint(&t))
        .collect::<Vec<_>>();
        let (body, removed) = labels_taints_patch(&v, &current);
        assert_eq!(removed, ["manual=x:NoExecute"]);
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "n1", "labels": {"exedev-k8s.io/fleet": "c", "tier": "web"}},
                "spec": {"taints": [
                    {"key": "dedicated", "value": "web", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                ]},
            })
        );
    }
}
