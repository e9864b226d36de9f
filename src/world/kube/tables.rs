//! `kubectl get` asks the server for a `meta.k8s.io/v1` Table; these are
//! the columns the real API server's printers give (kubernetes/kubernetes
//! pkg/printers/internalversion/printers.go, `AddHandlers`): priority 0
//! columns always, priority 1 ones only with `-o wide`. A resource without
//! its own printer gets the default (`Name`, `Created At`), as
//! apiserver's `DefaultTableConvertor` gives.

use serde_json::{Map, Value, json};

use super::objects::{self, Resource};

/// A column: name, type, priority.
type Col = (&'static str, &'static str, u8);

const POD: &[Col] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Status", "string", 0),
    ("Restarts", "string", 0),
    ("Age", "string", 0),
    ("IP", "string", 1),
    ("Node", "string", 1),
    ("Nominated Node", "string", 1),
    ("Readiness Gates", "string", 1),
];
const NODE: &[Col] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Roles", "string", 0),
    ("Age", "string", 0),
    ("Version", "string", 0),
    ("Internal-IP", "string", 1),
    ("External-IP", "string", 1),
    ("OS-Image", "string", 1),
    ("Kernel-Version", "string", 1),
    ("Container-Runtime", "string", 1),
];
const DEPLOYMENT: &[Col] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Up-to-date", "string", 0),
    ("Available", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];
const REPLICASET: &[Col] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];
const DAEMONSET: &[Col] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Up-to-date", "integer", 0),
    ("Available", "integer", 0),
    ("Node Selector", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];
const SERVICE: &[Col] = &[
    ("Name", "string", 0),
    ("Type", "string", 0),
    ("Cluster-IP", "string", 0),
    ("External-IP", "string", 0),
    ("Port(s)", "string", 0),
    ("Age", "string", 0),
    ("Selector", "string", 1),
];
const NAMESPACE: &[Col] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Age", "string", 0),
];
const LEASE: &[Col] = &[
    ("Name", "string", 0),
    ("Holder", "string", 0),
    ("Age", "string", 0),
];
const DEFAULT: &[Col] = &[("Name", "string", 0), ("Created At", "date", 0)];

fn none_if_empty(s: String) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

/// `metav1.FormatLabelSelector`: `a=b,c in (d,e)`, `<none>` when empty.
fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let k = e["key"].as_str().unwrap_or_default();
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{k} in ({})", vals.join(",")),
            "NotIn" => format!("{k} notin ({})", vals.join(",")),
            "Exists" => k.to_string(),
            _ => format!("!{k}"),
        });
    }
    parts.sort();
    none_if_empty(parts.join(","))
}

fn containers_images(template_spec: &Value) -> (String, String) {
    let cs: Vec<&Value> = template_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The node's STATUS column: `Ready`, `NotReady`, `Unknown`, plus
/// `,SchedulingDisabled` when cordoned.
fn node_status(node: &Value) -> String {
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready",
            Some("False") => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    let mut s = ready.to_string();
    if node["spec"]["unschedulable"] == json!(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

/// One row's cells for `res`'s columns (see `columns`): a dispatch on the
/// kind, each kind's printer in its own function.
fn cells(res: &Resource, o: &Value, now_ms: u64) -> Vec<Value> {
    let age = objects::age(o, now_ms);
    let name = o["metadata"]["name"].clone();
    match (&*res.group, &*res.plural) {
        ("", "pods") => pod_cells(o, name, age),
        ("", "nodes") => node_cells(o, name, age),
        ("apps", "deployments") => deployment_cells(o, name, age),
        ("apps", "replicasets") => replicaset_cells(o, name, age),
        ("apps", "daemonsets") => daemonset_cells(o, name, age),
        ("", "services") => service_cells(o, name, age),
        ("", "namespaces") => {
            vec![
                name,
                json!(o["status"]["phase"].as_str().unwrap_or("Active")),
                json!(age),
            ]
        }
        ("coordination.k8s.io", "leases") => {
            vec![
                name,
                json!(o["spec"]["holderIdentity"].as_str().unwrap_or("<none>")),
                json!(age),
            ]
        }
        _ => vec![name, o["metadata"]["creationTimestamp"].clone()],
    }
}

/// The cells of a pod's row, in `POD`'s column order; its own function
/// so that `cells` stays a short dispatch on the resource kind.
fn pod_cells(o: &Value, name: Value, age: String) -> Vec<Value> {
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = o["status"]["containerStatuses"]
        .as_array()
        .map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
    let restarts: u64 = o["status"]["containerStatuses"]
        .as_array()
        .map_or(0, |cs| cs.iter().map(|c| n(&c["restartCount"])).sum());
    let status = if o["metadata"]["deletionTimestamp"].is_null() {
        o["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_string()
    } else {
        "Terminating".to_string()
    };
    let ip = none_if_empty(
        o["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let node = none_if_empty(
        o["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let nominated = none_if_empty(
        o["status"]["nominatedNodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    vec![
        name,
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age),
        json!(ip),
        json!(node),
        json!(nominated),
        json!("<none>"),
    ]
}

/// The cells of a node's row, in `NODE`'s column order; its own function
/// so that `cells` stays a short dispatch on the resource kind.
fn node_cells(o: &Value, name: Value, age: String) -> Vec<Value> {
    let mut roles: Vec<&str> = o["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    let info = &o["status"]["nodeInfo"];
    let external = o["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "ExternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or("<none>");
    vec![
        name,
        json!(node_status(o)),
        json!(none_if_empty(roles.join(","))),
        json!(age),
        info["kubeletVersion"].clone(),
        json!(none_if_empty(objects::node_internal_ip(o))),
        json!(external),
        info["osImage"].clone(),
        info["kernelVersion"].clone(),
        info["containerRuntimeVersion"].clone(),
    ]
}

/// The cells of a Deployment's row, in `DEPLOYMENT`'s column order; its own function
/// so that `cells` stays a short dispatch on the resource kind.
fn deployment_cells(o: &Value, name: Value, age: String) -> Vec<Value> {
    let (c, i) = containers_images(&o["spec"]["template"]["spec"]);
    let st = &o["status"];
    vec![
        name,
        json!(format!(
            "{}/{}",
            n(&st["readyReplicas"]),
            o["spec"]["replicas"].as_u64().unwrap_or(1)
        )),
        json!(n(&st["updatedReplicas"])),
        json!(n(&st["availableReplicas"])),
        json!(age),
        json!(c),
        json!(i),
        json!(selector_string(&o["spec"]["selector"])),
    ]
}

/// The cells of a ReplicaSet's row, in `REPLICASET`'s column order; its own function
/// so that `cells` stays a short dispatch on the resource kind.
fn replicaset_cells(o: &Value, name: Value, age: String) -> Vec<Value> {
    let (c, i) = containers_images(&o["spec"]["template"]["spec"]);
    let st = &o["status"];
    vec![
        name,
        json!(o["spec"]["replicas"].as_u64().unwrap_or(1)),
        json!(n(&st["replicas"])),
        json!(n(&st["readyReplicas"])),
        json!(age),
        json!(c),
        json!(i),
        json!(selector_string(&o["spec"]["selector"])),
    ]
}

/// The cells of a DaemonSet's row, in `DAEMONSET`'s column order; its own function
/// so that `cells` stays a short dispatch on the resource kind.
fn daemonset_cells(o: &Value, name: Value, age: String) -> Vec<Value> {
    let (c, i) = containers_images(&o["spec"]["template"]["spec"]);
    let st = &o["status"];
    let node_sel: Vec<String> = o["spec"]["template"]["spec"]["nodeSelector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    vec![
        name,
        json!(n(&st["desiredNumberScheduled"])),
        json!(n(&st["currentNumberScheduled"])),
        json!(n(&st["numberReady"])),
        json!(n(&st["updatedNumberScheduled"])),
        json!(n(&st["numberAvailable"])),
        json!(none_if_empty(node_sel.join(","))),
        json!(age),
        json!(c),
        json!(i),
        json!(selector_string(&o["spec"]["selector"])),
    ]
}

/// The cells of a Service's row, in `SERVICE`'s column order; its own function
/// so that `cells` stays a short dispatch on the resource kind.
fn service_cells(o: &Value, name: Value, age: String) -> Vec<Value> {
    let spec = &o["spec"];
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    let sel = spec["selector"]
        .as_object()
        .map(|m| {
            let mut v: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            v.sort();
            v.join(",")
        })
        .unwrap_or_default();
    let external = spec["externalIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let external = if external.is_empty() && ty == "LoadBalancer" {
        "<pending>".to_string()
    } else {
        none_if_empty(external)
    };
    vec![
        name,
        json!(ty),
        json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
        json!(external),
        json!(none_if_empty(ports.join(","))),
        json!(age),
        json!(none_if_empty(sel)),
    ]
}

fn columns(res: &Resource) -> &'static [Col] {
    match (&*res.group, &*res.plural) {
        ("", "pods") => POD,
        ("", "nodes") => NODE,
        ("apps", "deployments") => DEPLOYMENT,
        ("apps", "replicasets") => REPLICASET,
        ("apps", "daemonsets") => DAEMONSET,
        ("", "services") => SERVICE,
        ("", "namespaces") => NAMESPACE,
        ("coordination.k8s.io", "leases") => LEASE,
        _ => DEFAULT,
    }
}

/// The Table of `items`; each row carries the object's metadata as a
/// `PartialObjectMetadata` (kubectl's default `includeObject=Metadata`)
/// or the whole object when asked (`includeObject=Object`).
pub fn table(
    res: &Resource,
    items: &[Value],
    now_ms: u64,
    whole_object: bool,
    list_meta: Value,
) -> Value {
    let defs: Vec<Value> = columns(res)
        .iter()
        .map(|(name, ty, priority)| {
            json!({"name": name, "type": ty, "format": if *name == "Name" {"name"} else {""},
                   "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = if whole_object {
                o.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
            };
            json!({"cells": cells(res, o, now_ms), "object": object})
        })
        .collect();
    let mut t = Map::new();
    t.insert("kind".into(), json!("Table"));
    t.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    t.insert("metadata".into(), list_meta);
    t.insert("columnDefinitions".into(), json!(defs));
    t.insert("rows".into(), json!(rows));
    Value::Object(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_columns_follow_the_real_printers() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
                         "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [{"ready": true, "restartCount": 0}]}});
        let t = table(&objects::PODS, &[pod], 0, false, json!({}));
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(t["rows"][0]["cells"][1], "1/1");
        assert_eq!(t["rows"][0]["cells"][5], "10.42.0.5");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "a", "image": "i:1"}, {"name": "b", "image": "j:2"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
        let t = table(&objects::DEPLOYMENTS, &[d], 0, false, json!({}));
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "1/2", 2, 1, "<unknown>", "a,b", "i:1,j:2", "app=web"])
        );
    }
}
