//! The edge functions against an in-process fake API server behind
//! `tower_test::mock::pair` (the kube-rs way of testing without a cluster).
//! The fake keeps nodes and pods, scripts eviction outcomes and records every
//! request so tests can check what was sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode, request::Parts};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::base::sizes::ByteSize;
use crate::core::fleet::{DesiredVm, Role};

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

#[derive(Debug, Clone, Copy)]
enum EvictWith {
    /// Refuse (429, PDB) this many times, then accept.
    Refuse(usize),
    /// Always refuse with 429.
    RefuseAlways,
    /// 500.
    Fail,
}

#[derive(Default)]
struct Fake {
    /// Successive answers to node lists; the last one repeats.
    node_lists: Vec<Vec<Value>>,
    node_list_calls: usize,
    /// Node lists that fail with this status before the script starts.
    node_list_failures: Vec<u16>,
    pods: Vec<Value>,
    evictions: BTreeMap<String, EvictWith>,
    requests: Vec<Recorded>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": if code < 300 { "Success" } else { "Failure" },
           "reason": reason, "message": message, "code": code})
}

impl Fake {
    fn nodes(&mut self) -> &mut Vec<Value> {
        if self.node_lists.is_empty() {
            self.node_lists.push(Vec::new());
        }
        let i = self.node_list_calls.min(self.node_lists.len() - 1);
        &mut self.node_lists[i]
    }

    fn handle(&mut self, parts: &Parts, body: &[u8]) -> (u16, Value) {
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        self.requests.push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        });
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (parts.method.clone(), segs.as_slice()) {
            (Method::GET, ["api", "v1", "nodes"]) => {
                if !self.node_list_failures.is_empty() {
                    let code = self.node_list_failures.remove(0);
                    return (
                        code,
                        status(code, "ServiceUnavailable", "apiserver starting"),
                    );
                }
                let items = self.nodes().clone();
                self.node_list_calls += 1;
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}),
                )
            }
            (m, ["api", "v1", "nodes", name]) => {
                let name = name.to_string();
                let nodes = self.nodes();
                let Some(i) = nodes
                    .iter()
                    .position(|n| n["metadata"]["name"] == name.as_str())
                else {
                    return (
                        404,
                        status(404, "NotFound", &format!("nodes \"{name}\" not found")),
                    );
                };
                match m {
                    Method::GET => (200, nodes[i].clone()),
                    Method::PATCH => {
                        if let Some(u) = serde_json::from_slice::<Value>(body)
                            .ok()
                            .and_then(|b| b["spec"]["unschedulable"].as_bool())
                        {
                            nodes[i]["spec"]["unschedulable"] = json!(u);
                        }
                        (200, nodes[i].clone())
                    }
                    Method::DELETE => (200, nodes.remove(i)),
                    _ => (405, status(405, "MethodNotAllowed", "")),
                }
            }
            (Method::GET, ["api", "v1", "pods"]) => {
                let items: Vec<Value> = self
                    .pods
                    .iter()
                    .filter(|p| {
                        p["spec"]["nodeName"]
                            .as_str()
                            .is_some_and(|n| query.contains(&format!("spec.nodeName%3D{n}")))
                    })
                    .cloned()
                    .collect();
                // Evicted pods are seen terminating once, then are gone.
                self.pods
                    .retain(|p| p["metadata"]["deletionTimestamp"].is_null());
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
                )
            }
            (Method::POST, ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
                let key = format!("{ns}/{name}");
                let Some(i) = self.pod_index(ns, name) else {
                    return (404, status(404, "NotFound", "pod not found"));
                };
                let outcome = self.evictions.get(&key).copied();
                match outcome {
                    Some(EvictWith::RefuseAlways) => (429, pdb_refusal()),
                    Some(EvictWith::Refuse(n)) if n > 0 => {
                        self.evictions.insert(key, EvictWith::Refuse(n - 1));
                        (429, pdb_refusal())
                    }
                    Some(EvictWith::Fail) => (500, status(500, "InternalError", "boom")),
                    _ => {
                        self.pods[i]["metadata"]["deletionTimestamp"] =
                            json!("2025-01-01T00:00:00Z");
                        (201, status(201, "", ""))
                    }
                }
            }
            (Method::DELETE, ["api", "v1", "namespaces", ns, "pods", name]) => {
                match self.pod_index(ns, name) {
                    Some(i) => (200, self.pods.remove(i)),
                    None => (404, status(404, "NotFound", "pod not found")),
                }
            }
            _ => (
                404,
                status(404, "NotFound", &format!("fake has no route {path}")),
            ),
        }
    }

    fn pod_index(&self, ns: &str, name: &str) -> Option<usize> {
        self.pods
            .iter()
            .position(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
    }
}

fn pdb_refusal() -> Value {
    let mut s = status(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    s["details"] = json!({"causes": [{"reason": "DisruptionBudget",
        "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]});
    s
}

type Shared = Arc<Mutex<Fake>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(fake: Fake) -> (kube::Client, Shared) {
    let shared = Arc::new(Mutex::new(fake));
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let state = shared.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let (code, json) = lock(&state).handle(&parts, &bytes);
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&json).unwrap_or_default()));
            match resp {
                Ok(r) => send.send_response(r),
                Err(e) => panic!("{e}"),
            }
        }
    });
    (kube::Client::new(svc, "default"), shared)
}

fn node(name: &str, ready: bool, labels: Value, taints: Value) -> Value {
    let cond = if ready {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"})
    } else {
        json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
               "message": "container runtime network not ready: cni plugin not initialized"})
    };
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": labels},
           "spec": {"taints": taints},
           "status": {"conditions": [cond],
                      "nodeInfo": {"kubeletVersion": "v1.33.1+k3s1", "architecture": "amd64",
                        "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                        "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
                        "osImage": "", "systemUUID": ""}}})
}

fn pod(ns: &str, name: &str, node: &str, owner_kind: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}});
    if let Some(kind) = owner_kind {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind,
            "name": "owner", "uid": "u", "controller": true}]);
    }
    p
}

fn vm(name: &str, role: Role, labels: &[(&str, &str)], taints: &[&str]) -> DesiredVm {
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

fn ok<T>(r: Result<T, ClusterError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

fn err<T>(r: Result<T, ClusterError>) -> ClusterError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

const MS: Duration = Duration::from_millis(1);

fn fast(timeout_ms: u64, force: bool) -> DrainOptions {
    DrainOptions {
        timeout: MS * timeout_ms as u32,
        force,
        poll: MS * 10,
    }
}

#[tokio::test]
async fn list_nodes_then_readiness() {
    let (client, fake) = serve(Fake {
        node_lists: vec![vec![
            node(
                "c-cp1",
                true,
                json!({"exedev-k8s.io/fleet": "c"}),
                json!([]),
            ),
            node(
                "c-web1",
                false,
                json!({}),
                json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]),
            ),
        ]],
        ..Fake::default()
    });
    let nodes = ok(list_nodes(&client).await);
    assert_eq!(nodes.len(), 2);
    assert!(nodes[0].ready);
    assert_eq!(nodes[0].kubelet_version.as_deref(), Some("v1.33.1+k3s1"));
    assert!(!nodes[1].ready);
    assert_eq!(nodes[1].taints, ["node.kubernetes.io/not-ready:NoSchedule"]);
    let expected = [
        vm("c-cp1", Role::Server, &[("exedev-k8s.io/fleet", "c")], &[]),
        vm("c-web1", Role::Agent, &[], &[]),
    ];
    let r = readiness(&expected, &nodes);
    assert_eq!(r.nodes[0].state, NodeState::Ready);
    assert_eq!(
        r.nodes[1].state,
        NodeState::NotReady {
            reason: Some("KubeletNotReady".into()),
            message: Some("container runtime network not ready: cni plugin not initialized".into()),
        }
    );
    let reqs = lock(&fake).requests.clone();
    assert_eq!(
        (reqs[0].method.clone(), reqs[0].path.as_str()),
        (Method::GET, "/api/v1/nodes")
    );
}

#[tokio::test]
async fn wait_ready_succeeds_after_polls() {
    let (client, _fake) = serve(Fake {
        node_list_failures: vec![503],
        node_lists: vec![
            vec![node("c-cp1", false, json!({}), json!([]))],
            vec![node("c-cp1", true, json!({}), json!([]))],
        ],
        ..Fake::default()
    });
    let seen = Mutex::new(Vec::new());
    let r = ok(wait_ready(
        &client,
        &[vm("c-cp1", Role::Server, &[], &[])],
        Duration::from_secs(5),
        MS * 10,
        |r| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.ready_count())
        },
    )
    .await);
    assert!(r.all_ready());
    assert_eq!(*seen.lock().unwrap_or_else(|e| e.into_inner()), [0, 1]);
}

#[tokio::test]
async fn wait_ready_timeout_names_each_straggler_and_its_cause() {
    let (client, _fake) = serve(Fake {
        node_lists: vec![vec![
            node("c-cp1", true, json!({}), json!([])),
            node("c-web1", false, json!({}), json!([])),
        ]],
        ..Fake::default()
    });
    let expected = [
        vm("c-cp1", Role::Server, &[], &[]),
        vm("c-web1", Role::Agent, &[], &[]),
        vm("c-web2", Role::Agent, &[], &[]),
    ];
    let e = err(wait_ready(&client, &expected, MS * 80, MS * 20, |_| {}).await);
    let ClusterError::NotReady { stragglers, .. } = &e else {
        panic!("{e:?}");
    };
    let names: Vec<&str> = stragglers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["c-web1", "c-web2"]);
    let msg = e.to_string();
    assert!(msg.starts_with("2 node(s) not Ready after"), "{msg}");
    assert!(
        msg.contains(
            "c-web1: registered but not Ready (KubeletNotReady: container runtime network not ready"
        ),
        "{msg}"
    );
    assert!(msg.contains("c-web2: not registered"), "{msg}");
    assert!(msg.contains("exedev-k8s-bootstrap.log"), "{msg}");
    assert!(!msg.contains("c-cp1"), "{msg}");
}

#[tokio::test]
async fn wait_ready_gives_up_at_once_on_refused_credentials() {
    let (client, fake) = serve(Fake {
        node_list_failures: vec![403, 403, 403],
        ..Fake::default()
    });
    let e = err(wait_ready(
        &client,
        &[vm("a", Role::Agent, &[], &[])],
        Duration::from_secs(5),
        MS * 10,
        |_| {},
    )
    .await);
    assert!(e.to_string().contains("HTTP 403"), "{e}");
    assert_eq!(lock(&fake).requests.len(), 1);
}

#[tokio::test]
async fn apply_labels_taints_is_a_forced_server_side_apply_of_fleet_fields_only() {
    let (client, fake) = serve(Fake {
        node_lists: vec![vec![node(
            "c-gpu1",
            true,
            json!({"exedev-k8s.io/fleet": "c", "k3s.io/hostname": "c-gpu1", "tier": "old"}),
            json!([
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": "2025-01-01T00:00:00Z"},
                {"key": "manual", "value": "x", "effect": "NoExecute"},
            ]),
        )]],
        ..Fake::default()
    });
    let v = vm(
        "c-gpu1",
        Role::Agent,
        &[
            ("exedev-k8s.io/fleet", "c"),
            ("exedev-k8s.io/pool", "gpu"),
            ("tier", "gpu"),
        ],
        &["dedicated=gpu:NoSchedule"],
    );
    let removed = ok(apply_labels_taints(&client, &v).await);
    assert_eq!(removed, ["manual=x:NoExecute"]);
    let reqs = lock(&fake).requests.clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let patch = &reqs[1];
    assert_eq!(patch.method, Method::PATCH);
    assert_eq!(patch.path, "/api/v1/nodes/c-gpu1");
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert!(
        patch.query.contains("fieldManager=exedev-k8s"),
        "{}",
        patch.query
    );
    assert!(patch.query.contains("force=true"), "{}", patch.query);
    assert_eq!(
        patch.body,
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "c-gpu1", "labels": {
                "exedev-k8s.io/fleet": "c", "exedev-k8s.io/pool": "gpu", "tier": "gpu"}},
            "spec": {"taints": [
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": "2025-01-01T00:00:00Z"},
            ]},
        })
    );
}

#[tokio::test]
async fn apply_labels_taints_on_a_missing_node_names_it() {
    let (client, _fake) = serve(Fake::default());
    let e = err(apply_labels_taints(&client, &vm("ghost", Role::Agent, &[], &[])).await);
    let msg = e.to_string();
    assert!(
        msg.contains("reading node ghost: HTTP 404 NotFound"),
        "{msg}"
    );
}

#[tokio::test]
async fn cordon_sets_unschedulable() {
    let (client, fake) = serve(Fake {
        node_lists: vec![vec![node("n1", true, json!({}), json!([]))]],
        ..Fake::default()
    });
    ok(cordon(&client, "n1").await);
    let f = lock(&fake);
    let r = &f.requests[0];
    assert_eq!(
        (r.method.clone(), r.path.as_str()),
        (Method::PATCH, "/api/v1/nodes/n1")
    );
    assert_eq!(r.body, json!({"spec": {"unschedulable": true}}));
    assert_eq!(f.node_lists[0][0]["spec"]["unschedulable"], json!(true));
}

fn evictions(fake: &Shared) -> Vec<String> {
    lock(fake)
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/eviction"))
        .map(|r| r.path.clone())
        .collect()
}

fn drain_fake(evictions: &[(&str, EvictWith)]) -> Fake {
    let mut mirror = pod("kube-system", "etcd-n1", "n1", None);
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
    Fake {
        node_lists: vec![vec![node("n1", true, json!({}), json!([]))]],
        pods: vec![
            pod("app", "web-1", "n1", Some("ReplicaSet")),
            pod("kube-system", "svclb-1", "n1", Some("DaemonSet")),
            mirror,
            pod("app", "elsewhere", "n2", Some("ReplicaSet")),
        ],
        evictions: evictions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..Fake::default()
    }
}

#[tokio::test]
async fn drain_evicts_normal_pods_and_skips_daemonset_and_mirror_pods() {
    let (client, fake) = serve(drain_fake(&[]));
    let report = ok(drain(&client, "n1", fast(2000, false)).await);
    assert_eq!(
        evictions(&fake),
        ["/api/v1/namespaces/app/pods/web-1/eviction"]
    );
    let evicted: Vec<String> = report.evicted.iter().map(|p| p.to_string()).collect();
    assert_eq!(evicted, ["app/web-1"]);
    assert!(report.deleted.is_empty());
    let skipped: Vec<(String, SkipReason)> = report
        .skipped
        .iter()
        .map(|(p, r)| (p.to_string(), *r))
        .collect();
    assert_eq!(
        skipped,
        [
            ("kube-system/etcd-n1".to_string(), SkipReason::Mirror),
            ("kube-system/svclb-1".to_string(), SkipReason::DaemonSet),
        ]
    );
    let f = lock(&fake);
    let eviction = f.requests.iter().find(|r| r.path.ends_with("/eviction"));
    let body = eviction.map(|r| r.body.clone()).unwrap_or_default();
    assert_eq!(body["apiVersion"], "policy/v1");
    assert_eq!(body["kind"], "Eviction");
    assert_eq!(
        body["metadata"],
        json!({"name": "web-1", "namespace": "app"})
    );
    let list = f.requests.iter().find(|r| r.path == "/api/v1/pods");
    assert!(list.is_some_and(|r| r.query.contains("fieldSelector=spec.nodeName%3Dn1")));
}

#[tokio::test]
async fn drain_retries_a_pdb_refusal_until_it_is_allowed() {
    let (client, fake) = serve(drain_fake(&[("app/web-1", EvictWith::Refuse(2))]));
    let report = ok(drain(&client, "n1", fast(3000, false)).await);
    assert_eq!(evictions(&fake).len(), 3);
    assert_eq!(report.evicted.len(), 1);
    assert!(
        lock(&fake)
            .pods
            .iter()
            .all(|p| p["metadata"]["name"] != "web-1")
    );
}

#[tokio::test]
async fn drain_timeout_names_the_blocked_pod_and_suggests_force() {
    let (client, fake) = serve(drain_fake(&[("app/web-1", EvictWith::RefuseAlways)]));
    let e = err(drain(&client, "n1", fast(80, false)).await);
    let ClusterError::DrainTimeout { pods, node, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(node, "n1");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].pod.to_string(), "app/web-1");
    let msg = e.to_string();
    assert!(msg.contains("app/web-1: eviction refused: HTTP 429 TooManyRequests: Cannot evict pod as it would violate the pod's disruption budget."), "{msg}");
    assert!(msg.contains("--force-drain"), "{msg}");
    assert!(evictions(&fake).len() >= 2, "refusals are retried");
    assert!(
        lock(&fake)
            .requests
            .iter()
            .all(|r| r.method != Method::DELETE)
    );
}

#[tokio::test]
async fn force_drain_deletes_pods_that_cannot_be_evicted() {
    let mut f = drain_fake(&[
        ("app/web-1", EvictWith::RefuseAlways),
        ("app/api-1", EvictWith::Fail),
    ]);
    f.pods.push(pod("app", "api-1", "n1", None));
    let (client, fake) = serve(f);
    let report = ok(drain(&client, "n1", fast(2000, true)).await);
    let deleted: Vec<String> = report.deleted.iter().map(|p| p.to_string()).collect();
    assert_eq!(deleted, ["app/api-1", "app/web-1"]);
    assert!(report.evicted.is_empty());
    let deletes: Vec<String> = lock(&fake)
        .requests
        .iter()
        .filter(|r| r.method == Method::DELETE)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        deletes,
        [
            "/api/v1/namespaces/app/pods/web-1",
            "/api/v1/namespaces/app/pods/api-1"
        ]
    );
}

#[tokio::test]
async fn eviction_failure_without_force_is_an_error_naming_the_pod() {
    let (client, _fake) = serve(drain_fake(&[("app/web-1", EvictWith::Fail)]));
    let e = err(drain(&client, "n1", fast(2000, false)).await);
    let msg = e.to_string();
    assert!(msg.contains("evicting pod app/web-1 from node n1"), "{msg}");
    assert!(msg.contains("HTTP 500"), "{msg}");
}

#[tokio::test]
async fn delete_node_treats_404_as_done() {
    let (client, fake) = serve(Fake {
        node_lists: vec![vec![node("n1", true, json!({}), json!([]))]],
        ..Fake::default()
    });
    ok(delete_node(&client, "n1").await);
    ok(delete_node(&client, "n1").await);
    let f = lock(&fake);
    assert!(f.node_lists[0].is_empty());
    let deletes = f
        .requests
        .iter()
        .filter(|r| r.method == Method::DELETE && r.path == "/api/v1/nodes/n1");
    assert_eq!(deletes.count(), 2);
}

#[tokio::test]
async fn remove_node_cordons_drains_and_deletes_in_order() {
    let (client, fake) = serve(drain_fake(&[]));
    let out = ok(remove_node(&client, "n1", fast(2000, false)).await);
    assert!(matches!(out, RemoveOutcome::Removed(ref r) if r.evicted.len() == 1));
    let steps: Vec<String> = lock(&fake)
        .requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        steps.first().map(String::as_str),
        Some("PATCH /api/v1/nodes/n1")
    );
    assert_eq!(
        steps.last().map(String::as_str),
        Some("DELETE /api/v1/nodes/n1")
    );
    assert!(lock(&fake).node_lists[0].is_empty());
    let again = ok(remove_node(&client, "n1", fast(2000, false)).await);
    assert_eq!(again, RemoveOutcome::AlreadyGone);
}

#[tokio::test]
async fn even_a_zero_timeout_tries_evictions_and_force_then_deletes_stragglers() {
    let (client, fake) = serve(drain_fake(&[]));
    let report = ok(drain(&client, "n1", fast(0, true)).await);
    assert_eq!(evictions(&fake).len(), 1, "one eviction attempt");
    assert_eq!(report.evicted.len(), 1);
    // Still terminating at the deadline: deleted with no grace period.
    assert_eq!(report.deleted.len(), 1);
    let f = lock(&fake);
    let delete = f.requests.iter().find(|r| r.method == Method::DELETE);
    assert!(
        delete.is_some_and(
            |r| r.query.contains("gracePeriodSeconds=0") || r.body["gracePeriodSeconds"] == 0
        ),
        "{:?}",
        f.requests
    );
}
