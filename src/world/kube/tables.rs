//! `kubectl get` asks the server for a `meta.k8s.io/v1` Table; these are
//! the columns the real API server's printers give (kubernetes/kubernetes
//! pkg/printers/internalversion/printers.go, `AddHandlers`): priority 0
//! columns always, priority 1 ones only with `-o wide`. A resource without
//! its own printer gets the default (`Name`, `Created At`), as
//! apiserver's `DefaultTableConvertor` gives.
//!
//! Each kind's printer is data: one list of columns, each with its name,
//! type, priority and the cell it shows, so a column and its cell cannot
//! drift apart.

use serde_json::{Map, Value, json};

use super::objects::{self, Resource};

/// What a cell is read from: the object and its age as kubectl shows it.
struct Row<'a> {
    o: &'a Value,
    age: &'a str,
}

/// A column: name, type, priority, and its cell of a row.
struct Col {
    name: &'static str,
    ty: &'static str,
    priority: u8,
    cell: fn(&Row) -> Value,
}

/// `col!("Name", "string", 0, |r| ...)`.
macro_rules! col {
    ($name:literal, $ty:literal, $priority:literal, $cell:expr) => {
        Col {
            name: $name,
            ty: $ty,
            priority: $priority,
            cell: $cell,
        }
    };
}

fn name(r: &Row) -> Value {
    r.o["metadata"]["name"].clone()
}
fn age(r: &Row) -> Value {
    json!(r.age)
}
/// A string field, `<none>` when absent or empty.
fn text_or_none(v: &Value) -> Value {
    json!(none_if_empty(v.as_str().unwrap_or_default().to_string()))
}
fn containers(r: &Row) -> Value {
    json!(containers_images(&r.o["spec"]["template"]["spec"]).0)
}
fn images(r: &Row) -> Value {
    json!(containers_images(&r.o["spec"]["template"]["spec"]).1)
}
fn selector(r: &Row) -> Value {
    json!(selector_string(&r.o["spec"]["selector"]))
}

const POD: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Ready", "string", 0, |r| {
        let total = r.o["spec"]["containers"].as_array().map_or(0, Vec::len);
        let ready = r.o["status"]["containerStatuses"]
            .as_array()
            .map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
        json!(format!("{ready}/{total}"))
    }),
    col!("Status", "string", 0, |r| {
        if r.o["metadata"]["deletionTimestamp"].is_null() {
            json!(r.o["status"]["phase"].as_str().unwrap_or("Pending"))
        } else {
            json!("Terminating")
        }
    }),
    col!("Restarts", "string", 0, |r| {
        let restarts: u64 = r.o["status"]["containerStatuses"]
            .as_array()
            .map_or(0, |cs| cs.iter().map(|c| n(&c["restartCount"])).sum());
        json!(restarts.to_string())
    }),
    col!("Age", "string", 0, age),
    col!("IP", "string", 1, |r| text_or_none(&r.o["status"]["podIP"])),
    col!("Node", "string", 1, |r| text_or_none(
        &r.o["spec"]["nodeName"]
    )),
    col!("Nominated Node", "string", 1, |r| {
        text_or_none(&r.o["status"]["nominatedNodeName"])
    }),
    col!("Readiness Gates", "string", 1, |_| json!("<none>")),
];
const NODE: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Status", "string", 0, |r| json!(node_status(r.o))),
    col!("Roles", "string", 0, |r| {
        let mut roles: Vec<&str> = r.o["metadata"]["labels"]
            .as_object()
            .map(|l| {
                l.keys()
                    .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                    .collect()
            })
            .unwrap_or_default();
        roles.sort_unstable();
        json!(none_if_empty(roles.join(",")))
    }),
    col!("Age", "string", 0, age),
    col!("Version", "string", 0, |r| {
        r.o["status"]["nodeInfo"]["kubeletVersion"].clone()
    }),
    col!("Internal-IP", "string", 1, |r| {
        json!(none_if_empty(objects::node_internal_ip(r.o)))
    }),
    col!("External-IP", "string", 1, |r| {
        json!(
            r.o["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "ExternalIP")
                .and_then(|a| a["address"].as_str())
                .unwrap_or("<none>")
        )
    }),
    col!("OS-Image", "string", 1, |r| {
        r.o["status"]["nodeInfo"]["osImage"].clone()
    }),
    col!("Kernel-Version", "string", 1, |r| {
        r.o["status"]["nodeInfo"]["kernelVersion"].clone()
    }),
    col!("Container-Runtime", "string", 1, |r| {
        r.o["status"]["nodeInfo"]["containerRuntimeVersion"].clone()
    }),
];
const DEPLOYMENT: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Ready", "string", 0, |r| {
        json!(format!(
            "{}/{}",
            n(&r.o["status"]["readyReplicas"]),
            r.o["spec"]["replicas"].as_u64().unwrap_or(1)
        ))
    }),
    col!("Up-to-date", "string", 0, |r| json!(n(
        &r.o["status"]["updatedReplicas"]
    ))),
    col!("Available", "string", 0, |r| json!(n(
        &r.o["status"]["availableReplicas"]
    ))),
    col!("Age", "string", 0, age),
    col!("Containers", "string", 1, containers),
    col!("Images", "string", 1, images),
    col!("Selector", "string", 1, selector),
];
const REPLICASET: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Desired", "integer", 0, |r| json!(
        r.o["spec"]["replicas"].as_u64().unwrap_or(1)
    )),
    col!("Current", "integer", 0, |r| json!(n(
        &r.o["status"]["replicas"]
    ))),
    col!("Ready", "integer", 0, |r| json!(n(
        &r.o["status"]["readyReplicas"]
    ))),
    col!("Age", "string", 0, age),
    col!("Containers", "string", 1, containers),
    col!("Images", "string", 1, images),
    col!("Selector", "string", 1, selector),
];
const DAEMONSET: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Desired", "integer", 0, |r| json!(n(
        &r.o["status"]["desiredNumberScheduled"]
    ))),
    col!("Current", "integer", 0, |r| json!(n(
        &r.o["status"]["currentNumberScheduled"]
    ))),
    col!("Ready", "integer", 0, |r| json!(n(
        &r.o["status"]["numberReady"]
    ))),
    col!("Up-to-date", "integer", 0, |r| json!(n(
        &r.o["status"]["updatedNumberScheduled"]
    ))),
    col!("Available", "integer", 0, |r| json!(n(
        &r.o["status"]["numberAvailable"]
    ))),
    col!("Node Selector", "string", 0, |r| {
        let sel: Vec<String> = r.o["spec"]["template"]["spec"]["nodeSelector"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        json!(none_if_empty(sel.join(",")))
    }),
    col!("Age", "string", 0, age),
    col!("Containers", "string", 1, containers),
    col!("Images", "string", 1, images),
    col!("Selector", "string", 1, selector),
];
const SERVICE: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Type", "string", 0, |r| json!(service_type(r.o))),
    col!("Cluster-IP", "string", 0, |r| {
        json!(r.o["spec"]["clusterIP"].as_str().unwrap_or("<none>"))
    }),
    col!("External-IP", "string", 0, service_external),
    col!("Port(s)", "string", 0, |r| {
        let ports: Vec<String> = r.o["spec"]["ports"]
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
        json!(none_if_empty(ports.join(",")))
    }),
    col!("Age", "string", 0, age),
    col!("Selector", "string", 1, |r| {
        let mut sel: Vec<String> = r.o["spec"]["selector"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        sel.sort();
        json!(none_if_empty(sel.join(",")))
    }),
];
const NAMESPACE: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Status", "string", 0, |r| {
        json!(r.o["status"]["phase"].as_str().unwrap_or("Active"))
    }),
    col!("Age", "string", 0, age),
];
const LEASE: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Holder", "string", 0, |r| {
        json!(r.o["spec"]["holderIdentity"].as_str().unwrap_or("<none>"))
    }),
    col!("Age", "string", 0, age),
];
const DEFAULT: &[Col] = &[
    col!("Name", "string", 0, name),
    col!("Created At", "date", 0, |r| {
        r.o["metadata"]["creationTimestamp"].clone()
    }),
];

/// Each kind with a printer of its own, by (group, plural); any other
/// gets [`DEFAULT`].
const PRINTERS: &[(&str, &str, &[Col])] = &[
    ("", "pods", POD),
    ("", "nodes", NODE),
    ("apps", "deployments", DEPLOYMENT),
    ("apps", "replicasets", REPLICASET),
    ("apps", "daemonsets", DAEMONSET),
    ("", "services", SERVICE),
    ("", "namespaces", NAMESPACE),
    ("coordination.k8s.io", "leases", LEASE),
];

fn service_type(o: &Value) -> &str {
    o["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

/// `externalIPs` joined; a LoadBalancer without any is `<pending>`.
fn service_external(r: &Row) -> Value {
    let external = r.o["spec"]["externalIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if external.is_empty() && service_type(r.o) == "LoadBalancer" {
        json!("<pending>")
    } else {
        json!(none_if_empty(external))
    }
}

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

fn columns(res: &Resource) -> &'static [Col] {
    PRINTERS
        .iter()
        .find(|(group, plural, _)| *group == &*res.group && *plural == &*res.plural)
        .map_or(DEFAULT, |(_, _, cols)| cols)
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
    let cols = columns(res);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.ty, "format": if c.name == "Name" {"name"} else {""},
                   "description": "", "priority": c.priority})
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
            let age = objects::age(o, now_ms);
            let row = Row { o, age: &age };
            let cells: Vec<Value> = cols.iter().map(|c| (c.cell)(&row)).collect();
            json!({"cells": cells, "object": object})
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
        let svc = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9",
            "selector": {"b": "2", "a": "1"}, "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
        let t = table(&objects::SERVICES, &[svc], 0, false, json!({}));
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "lb",
                "LoadBalancer",
                "10.43.0.9",
                "<pending>",
                "80:30080/TCP,53/UDP",
                "<unknown>",
                "a=1,b=2"
            ])
        );
        let other = json!({"metadata": {"name": "x", "creationTimestamp": "2026-12-07T00:00:00Z"}});
        let t = table(&objects::SERVICEACCOUNTS, &[other], 0, false, json!({}));
        assert_eq!(t["rows"][0]["cells"], json!(["x", "2026-12-07T00:00:00Z"]));
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
    }
}
