//! Safe removal of a node: cordon, drain (evictions that respect
//! PodDisruptionBudgets), delete the Node object. For a k3s server, deleting
//! the Node also removes its etcd member, so servers go one at a time (see
//! [`super::check_server_removal`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::error::{ClusterError, describe, status_code};
use super::verdict::{PodRef, StuckPod};

/// Annotation the kubelet puts on mirror pods of static pods: the API cannot
/// evict them; they go away with the kubelet.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How [`drain`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOptions {
    /// Give up (or, with `force`, delete what is left) after this long.
    pub timeout: Duration,
    /// Delete pods whose eviction is refused, instead of waiting for their
    /// PodDisruptionBudget (`--force-drain`).
    pub force: bool,
    /// Pause between rounds of evictions and checks.
    pub poll: Duration,
}

impl Default for DrainOptions {
    /// Five minutes like `kubectl drain --timeout` users expect, polling every
    /// two seconds, respecting PodDisruptionBudgets.
    fn default() -> Self {
        DrainOptions {
            timeout: Duration::from_secs(300),
            force: false,
            poll: Duration::from_secs(2),
        }
    }
}

/// Why a pod on a draining node is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Owned by a DaemonSet: its controller would recreate it on the node at
    /// once (and it tolerates the unschedulable taint).
    DaemonSet,
    /// A static pod's mirror: the API cannot remove it.
    Mirror,
}

/// Why a pod is left alone by a drain, or `None` if it is to be evicted.
pub fn skip_reason(pod: &Pod) -> Option<SkipReason> {
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    {
        return Some(SkipReason::Mirror);
    }
    let daemonset_owned = pod.metadata.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.kind == "DaemonSet" && r.controller == Some(true))
    });
    daemonset_owned.then_some(SkipReason::DaemonSet)
}

/// The pods a drain evicts: every pod except DaemonSet-owned and mirror pods
/// (bare pods included: the node is going away, they would be lost anyway).
pub fn pods_to_evict(pods: &[Pod]) -> Vec<PodRef> {
    pods.iter()
        .filter(|p| skip_reason(p).is_none())
        .map(PodRef::of)
        .collect()
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Pods evicted through the eviction API.
    pub evicted: Vec<PodRef>,
    /// Pods deleted because they could not be evicted (force only).
    pub deleted: Vec<PodRef>,
    /// Pods left alone (DaemonSet, mirror).
    pub skipped: Vec<(PodRef, SkipReason)>,
}

/// Marks the node unschedulable (`spec.unschedulable=true`), so nothing new
/// lands on it while it drains.
pub async fn cordon(client: &kube::Client, node: &str) -> Result<(), ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    api.cordon(node)
        .await
        .map_err(|e| ClusterError::api(format!("cordoning node {node}"), e))?;
    Ok(())
}

/// Marks the node schedulable again, after an in-place change.
pub async fn uncordon(client: &kube::Client, node: &str) -> Result<(), ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    api.uncordon(node)
        .await
        .map_err(|e| ClusterError::api(format!("uncordoning node {node}"), e))?;
    Ok(())
}

enum Evicted {
    Accepted,
    Gone,
    Refused(String),
}

async fn evict(client: &kube::Client, pod: &PodRef) -> Result<Evicted, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        delete_options: None,
    };
    let res: Result<serde_json::Value, _> = api
        .create_subresource("eviction", &pod.name, &PostParams::default(), &eviction)
        .await;
    match res {
        Ok(_) => Ok(Evicted::Accepted),
        Err(e) => match status_code(&e) {
            Some(404) => Ok(Evicted::Gone),
            // 429: a PodDisruptionBudget allows no disruption right now.
            Some(429) => Ok(Evicted::Refused(describe(&e))),
            _ => Err(e),
        },
    }
}

async fn delete_pod(
    client: &kube::Client,
    pod: &PodRef,
    grace: Option<u32>,
) -> Result<(), ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let dp = DeleteParams {
        grace_period_seconds: grace,
        ..DeleteParams::default()
    };
    match api.delete(&pod.name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(ClusterError::api(format!("deleting pod {pod}"), e)),
    }
}

async fn pods_on(client: &kube::Client, node: &str) -> Result<Vec<Pod>, ClusterError> {
    let api: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    api.list(&lp)
        .await
        .map(|l| l.items)
        .map_err(|e| ClusterError::api(format!("listing pods on node {node}"), e))
}

/// Evicts every pod on the node except DaemonSet and mirror pods, then waits
/// until they are gone.
///
/// Evictions a PodDisruptionBudget refuses (HTTP 429) are retried every
/// `poll` until `timeout`; the timeout error names the pods still there and
/// suggests `--force-drain`. With `force`, a pod whose eviction is refused or
/// fails is deleted instead, and pods still terminating at the timeout are
/// deleted with no grace period (their node is going away).
pub async fn drain(
    client: &kube::Client,
    node: &str,
    opts: DrainOptions,
) -> Result<DrainReport, ClusterError> {
    let start = tokio::time::Instant::now();
    let deadline = start + opts.timeout;
    let mut evicted = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut refused: BTreeMap<PodRef, String> = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    // Every pod gets at least one eviction attempt, however short the timeout.
    let mut attempted = false;
    loop {
        let pods = pods_on(client, node).await?;
        for p in &pods {
            if let Some(why) = skip_reason(p) {
                skipped.insert(PodRef::of(p), why);
            }
        }
        let targets: Vec<(&Pod, PodRef)> = pods
            .iter()
            .filter(|p| skip_reason(p).is_none())
            .map(|p| (p, PodRef::of(p)))
            .collect();
        if targets.is_empty() {
            return Ok(DrainReport {
                evicted: evicted.into_iter().collect(),
                deleted: deleted.into_iter().collect(),
                skipped: skipped.into_iter().collect(),
            });
        }
        let now = tokio::time::Instant::now();
        if attempted && now >= deadline {
            if opts.force {
                for (_, r) in &targets {
                    delete_pod(client, r, Some(0)).await?;
                    deleted.insert(r.clone());
                }
                return Ok(DrainReport {
                    evicted: evicted.into_iter().collect(),
                    deleted: deleted.into_iter().collect(),
                    skipped: skipped.into_iter().collect(),
                });
            }
            let pods = targets
                .iter()
                .map(|(p, r)| StuckPod {
                    pod: r.clone(),
                    why: refused.get(r).cloned().unwrap_or_else(|| {
                        if p.metadata.deletion_timestamp.is_some() {
                            "still terminating".to_string()
                        } else {
                            "not evicted yet".to_string()
                        }
                    }),
                })
                .collect();
            return Err(ClusterError::DrainTimeout {
                node: node.to_string(),
                waited: now - start,
                pods,
            });
        }
        for (pod, r) in &targets {
            if pod.metadata.deletion_timestamp.is_some() {
                continue; // already on its way out
            }
            // kube's client retries HTTP 429 (what a PodDisruptionBudget
            // answers) with a backoff that can run for minutes: bound each
            // eviction by the time left so --drain-timeout holds.
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(opts.poll);
            let outcome = match tokio::time::timeout(left, evict(client, r)).await {
                Ok(o) => o,
                Err(_) => Ok(Evicted::Refused(format!(
                    "HTTP 429 (a PodDisruptionBudget allows no disruption now), still refused after {}s of retries",
                    left.as_secs()
                ))),
            };
            match (outcome, opts.force) {
                (Ok(Evicted::Accepted), _) => {
                    refused.remove(r);
                    evicted.insert(r.clone());
                }
                (Ok(Evicted::Gone), _) => {
                    refused.remove(r);
                }
                (Ok(Evicted::Refused(why)), false) => {
                    refused.insert(r.clone(), format!("eviction refused: {why}"));
                }
                (Ok(Evicted::Refused(_)) | Err(_), true) => {
                    delete_pod(client, r, None).await?;
                    deleted.insert(r.clone());
                }
                (Err(e), false) => {
                    return Err(ClusterError::api(
                        format!(
                            "evicting pod {r} from node {node} (rerun with --force-drain to delete it instead)"
                        ),
                        e,
                    ));
                }
            }
        }
        attempted = true;
        let now = tokio::time::Instant::now();
        tokio::time::sleep(opts.poll.min(deadline.saturating_duration_since(now))).await;
    }
}

/// Deletes the Node object. Already gone (404) is success: removal is
/// idempotent.
pub async fn delete_node(client: &kube::Client, node: &str) -> Result<(), ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    match api.delete(node, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(ClusterError::api(format!("deleting node {node}"), e)),
    }
}

/// Deletes a lost server's Node without draining it (its kubelet is gone,
/// so evictions would never finish; the pods are removed with the Node)
/// and polls until the Node is gone, at most `timeout`. k3s's etcd member
/// controller handles a deleted etcd Node (`OnRemove`,
/// `pkg/etcd/member_controller.go:26,111-134` @1feb5ae): wrangler holds
/// the Node with its finalizer `wrangler.cattle.io/managed-etcd-controller`
/// until the handler has removed the etcd member (`RemovePeer`), so the
/// Node gone is the member gone. Already gone (404) is done. `Ok(false)`:
/// still there after `timeout` (k3s has not removed the member).
pub async fn forget_node(
    client: &kube::Client,
    node: &str,
    timeout: Duration,
) -> Result<bool, ClusterError> {
    delete_node(client, node).await?;
    let api: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        match api.get_opt(node).await {
            Ok(None) => return Ok(true),
            Ok(Some(_)) => {}
            // Polled again until the deadline: the API server answering
            // may be between leaders.
            Err(_) if tokio::time::Instant::now() < deadline => {}
            Err(e) => return Err(ClusterError::api(format!("reading node {node}"), e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// What [`remove_node`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Cordoned, drained and deleted.
    Removed(DrainReport),
    /// There was no such Node (never registered, or removed before).
    AlreadyGone,
}

/// Cordon and drain, before a node restarts in place (an upgrade, new k3s
/// arguments, a resize); `None` when there is no such Node.
pub async fn cordon_and_drain(
    client: &kube::Client,
    node: &str,
    opts: DrainOptions,
) -> Result<Option<DrainReport>, ClusterError> {
    match cordon(client, node).await {
        Ok(()) => {}
        Err(ClusterError::Api { source, .. }) if status_code(&source) == Some(404) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    drain(client, node, opts).await.map(Some)
}

/// Cordon, drain, delete: the whole safe removal of one node, before its VM
/// is deleted.
pub async fn remove_node(
    client: &kube::Client,
    node: &str,
    opts: DrainOptions,
) -> Result<RemoveOutcome, ClusterError> {
    match cordon(client, node).await {
        Ok(()) => {}
        Err(ClusterError::Api { source, .. }) if status_code(&source) == Some(404) => {
            return Ok(RemoveOutcome::AlreadyGone);
        }
        Err(e) => return Err(e),
    }
    let report = drain(client, node, opts).await?;
    delete_node(client, node).await?;
    Ok(RemoveOutcome::Removed(report))
}

#[cfg(test)]
mod pure_tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        match serde_json::from_value(value) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn daemonset_and_mirror_pods_are_skipped() {
        let pods = [
            pod(
                serde_json::json!({"metadata": {"name": "web-1", "namespace": "app",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "1", "controller": true}]}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "flannel-x", "namespace": "kube-system",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "flannel", "uid": "2", "controller": true}]}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "etcd-n1", "namespace": "kube-system",
                "annotations": {"kubernetes.io/config.mirror": "abc"}}}),
            ),
            pod(serde_json::json!({"metadata": {"name": "bare", "namespace": "default"}})),
            // A DaemonSet reference that is not the controller does not count.
            pod(
                serde_json::json!({"metadata": {"name": "odd", "namespace": "x",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "3"}]}}),
            ),
            pod(serde_json::json!({"metadata": {"name": "nons"}})),
        ];
        let got: Vec<String> = pods_to_evict(&pods).iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["app/web-1", "default/bare", "x/odd", "default/nons"]);
        assert_eq!(skip_reason(&pods[1]), Some(SkipReason::DaemonSet));
        assert_eq!(skip_reason(&pods[2]), Some(SkipReason::Mirror));
        assert!(pods_to_evict(&[]).is_empty());
    }
}
