use std::net::Ipv4Addr;

use serde_json::json;

use super::*;
use crate::world::kube::objects::{NAMESPACES, NODES, PDBS, PODS, SERVICEACCOUNTS};

pub(super) fn cluster() -> ApiStore {
    let mut s = ApiStore::new(0);
    s.seed_system(&["traefik".to_string()], 0);
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        s.register_node(
            n,
            i == 0,
            true,
            &[],
            &[],
            "v1.31.4+k3s1",
            Ipv4Addr::new(100, 64, 0, i as u8 + 1),
            0,
        );
    }
    s.tick(10);
    s
}

fn pod(name: &str, node: &str, app: &str, owner: Option<&str>) -> Value {
    let mut p = json!({"metadata": {"name": name, "labels": {"app": app}},
                       "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}});
    if let Some(kind) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": app, "uid": "u", "controller": true}]);
    }
    p
}

#[test]
fn a_new_cluster_has_its_namespaces_service_accounts_and_system_pods() {
    let s = cluster();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(s.get(&NAMESPACES, "", ns).is_ok(), "{ns}");
        assert!(s.get(&SERVICEACCOUNTS, ns, "default").is_ok(), "{ns}");
    }
    let pods = s.list(&PODS, Some("kube-system"), None, None);
    let names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("coredns")));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("traefik") || n.starts_with("svclb")),
        "disabled: {names:?}"
    );
    assert!(pods.iter().all(objects::pod_ready), "scheduled and running");
}

#[test]
fn server_side_apply_owns_labels_and_replaces_taints() {
    let mut s = cluster();
    let apply = |s: &mut ApiStore, labels: Value, taints: Value| {
        s.apply(
            &NODES,
            "",
            "n2",
            "exedev-k8s",
            true,
            &json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n2", "labels": labels}, "spec": {"taints": taints}}),
        )
    };
    apply(
        &mut s,
        json!({"tier": "web", "a": "1"}),
        json!([{"key": "d", "value": "web", "effect": "NoSchedule"}]),
    )
    .unwrap();
    let n = s.get(&NODES, "", "n2").unwrap();
    assert_eq!(n["metadata"]["labels"]["tier"], "web");
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/hostname"], "n2",
        "others' labels stay"
    );
    assert_eq!(n["spec"]["taints"].as_array().unwrap().len(), 1);
    // Dropping a label this manager owned removes it; the taint list is atomic.
    apply(&mut s, json!({"tier": "db"}), json!([])).unwrap();
    let n = s.get(&NODES, "", "n2").unwrap();
    assert_eq!(n["metadata"]["labels"]["tier"], "db");
    assert!(n["metadata"]["labels"].get("a").is_none());
    assert_eq!(n["spec"]["taints"], json!([]));
    // Without force, another manager's label with another value conflicts.
    let e = s
        .apply(
            &NODES,
            "",
            "n2",
            "other",
            false,
            &json!({"metadata": {"labels": {"tier": "x"}}}),
        )
        .unwrap_err();
    assert_eq!(e.code, 409);
    assert!(
        n["status"]["nodeInfo"]["kubeletVersion"].is_string(),
        "status kept"
    );
}

#[test]
fn cordon_sets_the_unschedulable_taint() {
    let mut s = cluster();
    let n = s
        .patch_merge(&NODES, "", "n1", &json!({"spec": {"unschedulable": true}}))
        .unwrap();
    assert!(
        n["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unschedulable")
    );
    let n = s
        .patch_merge(&NODES, "", "n1", &json!({"spec": {"unschedulable": false}}))
        .unwrap();
    assert!(n["spec"]["taints"].as_array().unwrap().is_empty());
}

#[test]
fn evictions_honour_disruption_budgets_and_controllers_replace_pods() {
    let mut s = cluster();
    s.create(
        &PODS,
        "default",
        pod("web-a", "n1", "web", Some("ReplicaSet")),
    )
    .unwrap();
    s.create(
        &PDBS,
        "default",
        json!({"metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .unwrap();
    s.tick(20);
    let e = s.evict("default", "web-a").unwrap_err();
    assert_eq!(e.code, 429);
    assert!(e.message.contains("disruption budget"), "{}", e.message);
    // A second replica elsewhere makes room for one disruption.
    s.create(
        &PODS,
        "default",
        pod("web-b", "n2", "web", Some("ReplicaSet")),
    )
    .unwrap();
    s.tick(30);
    s.evict("default", "web-a").unwrap();
    assert!(s.get(&PODS, "default", "web-a").is_err());
    // The ReplicaSet replaces it on a schedulable node.
    s.patch_merge(&NODES, "", "n1", &json!({"spec": {"unschedulable": true}}))
        .unwrap();
    s.tick(40);
    let web: Vec<Value> = s.list(&PODS, Some("default"), Some("app=web"), None);
    assert_eq!(web.len(), 2);
    assert!(
        web.iter()
            .all(|p| p["spec"]["nodeName"] == "n2" && objects::pod_ready(p))
    );
    assert_eq!(s.evict("default", "nope").unwrap_err().code, 404);
    // Bare pods are not replaced; DaemonSet-style pods go with their node.
    s.create(&PODS, "default", pod("bare", "n2", "bare", None))
        .unwrap();
    s.evict("default", "bare").unwrap();
    s.tick(50);
    assert!(
        s.list(&PODS, Some("default"), Some("app=bare"), None)
            .is_empty()
    );
}

#[test]
fn deleting_a_node_collects_its_pods() {
    let mut s = cluster();
    s.create(&PODS, "default", pod("x", "n2", "x", Some("ReplicaSet")))
        .unwrap();
    s.delete(&NODES, "", "n2").unwrap();
    assert!(
        s.list(&PODS, None, None, Some("spec.nodeName=n2"))
            .is_empty()
    );
    s.tick(60);
    let x = s.list(&PODS, Some("default"), Some("app=x"), None);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0]["spec"]["nodeName"], "n1");
    assert_eq!(s.delete(&NODES, "", "n2").unwrap_err().code, 404);
}

#[test]
fn manifests_apply_and_need_their_namespace() {
    let mut s = cluster();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sys"}});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "sys"}, "data": {"k": "v"}});
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "missing"}});
    assert_eq!(s.apply_manifest(&ns).unwrap(), "Namespace sys");
    assert_eq!(s.apply_manifest(&cm).unwrap(), "ConfigMap sys/c");
    assert_eq!(
        s.apply_manifest(&cm).unwrap(),
        "ConfigMap sys/c",
        "idempotent"
    );
    assert_eq!(s.apply_manifest(&other).unwrap_err().code, 404);
    let res = objects::resource_for("v1", "ConfigMap");
    assert_eq!(s.get(&res, "sys", "c").unwrap()["data"]["k"], "v");
    assert!(s.get(&SERVICEACCOUNTS, "sys", "default").is_ok());
}

#[test]
fn selectors_and_merge_patches() {
    let labels = json!({"a": "1", "b": "2"}).as_object().cloned().unwrap();
    assert!(selector_matches(
        &json!({"matchLabels": {"a": "1"}}),
        &labels
    ));
    assert!(!selector_matches(
        &json!({"matchLabels": {"a": "2"}}),
        &labels
    ));
    assert!(selector_matches(
        &json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "3"]}]}),
        &labels
    ));
    assert!(!selector_matches(
        &json!({"matchExpressions": [{"key": "c", "operator": "Exists"}]}),
        &labels
    ));
    assert!(label_query_matches("a=1,b!=3,!c", &labels));
    assert!(!label_query_matches("a", &serde_json::Map::new()));
    let mut v = json!({"a": {"b": 1, "c": 2}});
    merge_patch(&mut v, &json!({"a": {"b": null, "d": 3}}));
    assert_eq!(v, json!({"a": {"c": 2, "d": 3}}));
}

/// Leases race as on a real API server: the second create of one name is
/// 409 AlreadyExists; of two updates from the same read, the second is 409
/// Conflict; an update at the current version wins.
#[test]
fn leases_are_created_once_and_updated_at_the_version_read() {
    use crate::world::kube::objects::LEASES;
    let mut s = cluster();
    let lease = |holder: &str| {
        json!({"metadata": {"name": "exedev-k8s-demo"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60}})
    };
    let first = s.create(&LEASES, "kube-system", lease("a")).unwrap();
    let again = s.create(&LEASES, "kube-system", lease("b")).unwrap_err();
    assert_eq!((again.code, again.reason), (409, "AlreadyExists"));
    let rv = first["metadata"]["resourceVersion"].clone();
    let mut take = |holder: &str| {
        let mut l = lease(holder);
        l["metadata"]["resourceVersion"] = rv.clone();
        s.replace(&LEASES, "kube-system", "exedev-k8s-demo", l)
    };
    let won = take("b").unwrap();
    assert_eq!(won["spec"]["holderIdentity"], "b");
    let lost = take("c").unwrap_err();
    assert_eq!((lost.code, lost.reason), (409, "Conflict"));
    let now = s.get(&LEASES, "kube-system", "exedev-k8s-demo").unwrap();
    assert_eq!(now["spec"]["holderIdentity"], "b");
}

/// The kubelet's start of a pod takes `pod_start_ms`: until then it is
/// `Pending` with its container `ContainerCreating`, scheduled, with an
/// address, not Ready and no Service endpoint; the tick when the start
/// falls due (nothing else changed) runs it, and only then is it the
/// Service's endpoint.
#[test]
fn a_bound_pod_creates_its_containers_for_pod_start_ms_then_runs() {
    let mut s = cluster();
    s.set_pod_start_ms(500);
    s.create(&PODS, "default", pod("web-1", "n2", "web", None))
        .unwrap();
    s.create(
        &objects::SERVICES,
        "default",
        json!({"metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .unwrap();
    let endpoints = |s: &ApiStore| {
        let net = crate::world::dataplane::Net::from_objects(
            &s.list(&NODES, None, None, None),
            &s.list(&PODS, None, None, None),
            &s.list(&objects::SERVICES, None, None, None),
            &BTreeMap::new(),
            Ipv4Addr::new(10, 43, 0, 10),
            "cluster.local",
        );
        let svc = net
            .services
            .iter()
            .find(|x| x.name == "web")
            .expect("the Service");
        net.endpoints(svc)
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    s.tick(100);
    let p = s.get(&PODS, "default", "web-1").unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    let c = &p["status"]["containerStatuses"][0];
    assert_eq!(c["state"]["waiting"]["reason"], "ContainerCreating");
    assert_eq!(
        (c["ready"].clone(), c["started"].clone()),
        (json!(false), json!(false))
    );
    let cond = |p: &Value, ty: &str| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
            .map(|c| c["status"].clone())
    };
    assert_eq!(cond(&p, "PodScheduled"), Some(json!("True")));
    assert_eq!(cond(&p, "Ready"), Some(json!("False")));
    assert_eq!(cond(&p, "ContainersReady"), Some(json!("False")));
    assert!(
        p["status"]["podIP"].is_string(),
        "the sandbox has its address"
    );
    assert!(!objects::pod_ready(&p));
    assert!(endpoints(&s).is_empty(), "a starting pod is no endpoint");
    let rv = p["metadata"]["resourceVersion"].clone();
    s.tick(599);
    let p = s.get(&PODS, "default", "web-1").unwrap();
    assert_eq!(p["status"]["phase"], "Pending", "1 ms before its start");
    assert_eq!(p["metadata"]["resourceVersion"], rv, "no write meanwhile");
    s.tick(600);
    let p = s.get(&PODS, "default", "web-1").unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    assert!(objects::pod_ready(&p));
    assert!(p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
    assert_eq!(endpoints(&s), ["web-1"]);
}
