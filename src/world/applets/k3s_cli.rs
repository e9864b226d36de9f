//! The k3s binary in a VM (`k3s`, and `kubectl` through its symlink): its
//! version, `k3s token rotate`, `k3s etcd-snapshot` and `k3s server
//! --cluster-reset` (both in [`super::etcd_snapshot`]), and the part of
//! kubectl a bootstrap script or a person on a server uses (`get`, `get
//! --raw`, `create namespace|configmap`, `label`, `cordon`, `uncordon`,
//! `delete node`, `version`). k3s itself runs only as its systemd unit in
//! the world: `k3s server` (but for a reset) and `k3s agent` run by hand
//! are refused with that explanation.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Args;
use crate::world::Inner;
use crate::world::kube::{self, Resource, objects};
use crate::world::protocol::{Call, Output};

fn version(call: &Call) -> Option<String> {
    call.env.get("EXEDEV_WORLD_K3S_VERSION").cloned()
}

/// `k3s ARGS...`, `kubectl ARGS...`, `crictl`, `ctr`.
pub fn run(inner: &Arc<Inner>, call: &Call) -> Output {
    let Some(v) = version(call) else {
        return Output::fail(
            1,
            "k3s: run through the installed binary (/usr/local/bin/k3s)",
        );
    };
    match call.command.as_str() {
        "kubectl" => return kubectl(inner, call, &call.args, &v),
        "crictl" | "ctr" => {
            return Output::fail(
                1,
                format!(
                    "{}: the world runs no containers (no container runtime is modelled)",
                    call.command
                ),
            );
        }
        _ => {}
    }
    match call.args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            Output::ok("k3s: server, agent, kubectl, token, etcd-snapshot, --version\n")
        }
        Some("--version" | "-v" | "version") => {
            Output::ok(format!("k3s version {v} (exedevw0)\ngo version go1.22.9\n"))
        }
        Some("kubectl") => kubectl(inner, call, &call.args[1..], &v),
        Some("token") => token(inner, call),
        Some("etcd-snapshot") => super::etcd_snapshot::etcd_snapshot(inner, call),
        Some("server") => super::etcd_snapshot::server(inner, call),
        Some(cmd @ "agent") => Output::fail(
            1,
            format!(
                "k3s {cmd}: the world runs k3s only as its systemd unit (write the unit with the installer, then `systemctl start`)"
            ),
        ),
        Some("check-config") => Output::ok("System: ok (exedev-k8s world)\n"),
        Some(other) => Output::fail(
            1,
            format!(
                "k3s: {other} is not modelled by the world (it models --version, kubectl, token rotate, etcd-snapshot, server --cluster-reset)"
            ),
        ),
    }
}

fn token(inner: &Arc<Inner>, call: &Call) -> Output {
    let args = &call.args[1..];
    if args.first().map(String::as_str) != Some("rotate") {
        return Output::fail(
            1,
            "k3s token: the world models `k3s token rotate [--token OLD] --new-token NEW`",
        );
    }
    if call.uid != 0 {
        return Output::fail(
            1,
            "k3s token rotate: open /var/lib/rancher/k3s/server/token: permission denied",
        );
    }
    let mut old = None;
    let mut new = None;
    // Go's flag package: `-flag=value` and `--flag=value` alike.
    let mut flags = Args::new(&args[1..], |_| true);
    while let Some(k) = flags.next_flag() {
        let mut value = || flags.value();
        match k {
            "--token" | "-t" => old = value(),
            "--new-token" => new = value(),
            "--server" | "-s" | "--data-dir" | "-d" => {
                let _ = value();
            }
            other => return Output::fail(1, format!("flag provided but not defined: {other}")),
        }
    }
    let Some(new) = new else {
        return Output::fail(1, "k3s token rotate: --new-token is required");
    };
    let mut m = inner.model();
    match m.rotate_token(&call.vm, old.as_deref(), &new) {
        Ok(fx) => {
            inner.settle(m, fx);
            Output::ok("Token rotated, restart k3s nodes with new token\n")
        }
        Err(e) => Output::fail(1, e),
    }
}

/// Which cluster a kubeconfig reaches from this VM, checking its client
/// certificate like the API server would.
fn cluster_of(inner: &Inner, call: &Call) -> Result<String, String> {
    use base64::Engine;
    let text = call.stdin.as_deref().unwrap_or_default();
    let kc: Value = serde_saphyr::from_str(text)
        .map_err(|e| format!("error: error loading config file: {e}"))?;
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap_or_default();
    let cert = kc["users"][0]["user"]["client-certificate-data"]
        .as_str()
        .unwrap_or_default();
    let host = server
        .strip_prefix("https://")
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or_default()
        .to_string();
    let m = inner.model();
    let refused = || {
        format!(
            "The connection to the server {} was refused - did you specify the right host or port?",
            server.trim_start_matches("https://")
        )
    };
    let ip = m.resolve(&call.vm, &host).ok_or_else(|| {
        format!("Unable to connect to the server: dial tcp: lookup {host}: no such host")
    })?;
    let target = m.route(&call.vm, ip).ok_or_else(refused)?;
    let (_, cid) = m.ready_server(&target).ok_or_else(refused)?;
    let c = &m.clusters[cid];
    let pem = base64::engine::general_purpose::STANDARD
        .decode(cert)
        .unwrap_or_default();
    if String::from_utf8_lossy(&pem).trim() != c.pki.admin_cert_pem.trim() {
        return Err("error: You must be logged in to the server (Unauthorized)".into());
    }
    Ok(cid.to_string())
}

fn resource_named(word: &str) -> Option<Resource> {
    let plural = match word {
        "node" | "nodes" | "no" => "nodes",
        "pod" | "pods" | "po" => "pods",
        "namespace" | "namespaces" | "ns" => "namespaces",
        "serviceaccount" | "serviceaccounts" | "sa" => "serviceaccounts",
        "configmap" | "configmaps" | "cm" => "configmaps",
        "pdb" | "poddisruptionbudget" | "poddisruptionbudgets" => {
            return objects::resource_by_path("policy", "poddisruptionbudgets");
        }
        _ => return None,
    };
    objects::resource_by_path("", plural)
}

/// A tiny JSONPath: `{.a.b}`, `{.items[*].metadata.name}`, `{.items[0].x}`.
fn jsonpath(v: &Value, expr: &str) -> String {
    let expr = expr.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = vec![v.clone()];
    for part in expr
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, Some(i.trim_end_matches(']'))),
            None => (part, None),
        };
        cur = cur
            .into_iter()
            .map(|c| if name.is_empty() { c } else { c[name].clone() })
            .flat_map(|c| match index {
                Some("*") => c.as_array().cloned().unwrap_or_default(),
                Some(i) => vec![
                    i.parse::<usize>()
                        .ok()
                        .map(|i| c[i].clone())
                        .unwrap_or(Value::Null),
                ],
                None => vec![c],
            })
            .collect();
    }
    cur.iter()
        .map(|c| match c {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn table(res: &Resource, items: &[Value], wide: bool) -> String {
    let now = crate::world::now_ms();
    let mut rows: Vec<Vec<String>> = Vec::new();
    match &*res.plural {
        "nodes" => {
            let mut head = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
            if wide {
                head.push("INTERNAL-IP");
            }
            rows.push(head.iter().map(|s| s.to_string()).collect());
            for n in items {
                let mut st = if objects::node_ready(n) {
                    "Ready"
                } else {
                    "NotReady"
                }
                .to_string();
                if n["spec"]["unschedulable"] == json!(true) {
                    st.push_str(",SchedulingDisabled");
                }
                let mut roles: Vec<&str> = n["metadata"]["labels"]
                    .as_object()
                    .map(|l| {
                        l.keys()
                            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                            .collect()
                    })
                    .unwrap_or_default();
                roles.sort();
                let mut row = vec![
                    n["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    st,
                    if roles.is_empty() {
                        "<none>".into()
                    } else {
                        roles.join(",")
                    },
                    objects::age(n, now),
                    n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ];
                if wide {
                    row.push(
                        n["metadata"]["annotations"]["k3s.io/internal-ip"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                rows.push(row);
            }
        }
        "pods" => {
            rows.push(
                ["NAMESPACE", "NAME", "READY", "STATUS", "NODE"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            );
            for p in items {
                rows.push(vec![
                    p["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    if objects::pod_ready(p) { "1/1" } else { "0/1" }.to_string(),
                    p["status"]["phase"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_string(),
                ]);
            }
        }
        _ => {
            rows.push(vec!["NAME".into()]);
            for o in items {
                rows.push(vec![
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ]);
            }
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            format!("{}\n", cells.join("   ").trim_end())
        })
        .collect()
}

/// What a kubectl command line says: its flags the world reads and the
/// words left (verb, kind, name, `key=value`s).
struct KubectlArgs {
    ns: Option<String>,
    all_ns: bool,
    output: Option<String>,
    raw: Option<String>,
    words: Vec<String>,
}

impl KubectlArgs {
    fn parse(args: &[String]) -> KubectlArgs {
        let mut k = KubectlArgs {
            ns: None,
            all_ns: false,
            output: None,
            raw: None,
            words: Vec::new(),
        };
        let mut flags = Args::new(args, |a| a.starts_with("--") || a.starts_with("-o"));
        while let Some(flag) = flags.next_flag() {
            let mut value = || flags.value().unwrap_or_default();
            match flag {
                "-n" | "--namespace" => k.ns = Some(value()),
                "-A" | "--all-namespaces" => k.all_ns = true,
                "-o" | "--output" => k.output = Some(value()),
                "--raw" => k.raw = Some(value()),
                "--kubeconfig" | "--context" | "--request-timeout" => {
                    let _ = value();
                }
                "--overwrite" | "--no-headers" | "--ignore-not-found" => {}
                s if s.starts_with("-o") && s.len() > 2 => {
                    k.output = Some(s[2..].trim_start_matches('=').to_string())
                }
                _ => k.words.push(flags.whole().to_string()),
            }
        }
        k
    }

    fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }

    fn ns_or_default(&self) -> String {
        self.ns.clone().unwrap_or_else(|| "default".to_string())
    }
}

/// `kubectl create namespace|configmap NAME`: objects a person makes by
/// hand (what a restore must bring back, or drop).
fn create(api: &mut kube::ApiStore, k: &KubectlArgs) -> Output {
    let (Some(kind), Some(name)) = (k.word(1), k.word(2)) else {
        return Output::fail(1, "error: kubectl create namespace|configmap NAME");
    };
    let res = match resource_named(kind) {
        Some(r) if matches!(&*r.plural, "namespaces" | "configmaps") => r,
        _ => {
            return Output::fail(
                1,
                format!("error: the world's kubectl creates namespaces and configmaps, not {kind}"),
            );
        }
    };
    let ns = if res.namespaced {
        k.ns_or_default()
    } else {
        String::new()
    };
    match api.create(&res, &ns, json!({"metadata": {"name": name}})) {
        Ok(_) => Output::ok(format!(
            "{}/{name} created\n",
            res.kind.to_ascii_lowercase()
        )),
        Err(e) => api_failure(e),
    }
}

/// kubectl's way of showing the API's refusal.
fn api_failure(e: kube::ApiError) -> Output {
    Output::fail(
        1,
        format!("Error from server ({}): {}", e.reason, e.message),
    )
}

fn kubectl(inner: &Arc<Inner>, call: &Call, args: &[String], version: &str) -> Output {
    let k = KubectlArgs::parse(args);
    if k.word(0) == Some("version") {
        return Output::ok(format!(
            "Client Version: {version}\nKustomize Version: v5.4.2\n"
        ));
    }
    let cid = match cluster_of(inner, call) {
        Ok(c) => c,
        Err(e) => return Output::fail(1, e),
    };
    let mut m = inner.model();
    let api_version = m.api_version(&cid);
    let Some(c) = m.clusters.get_mut(&cid) else {
        return Output::fail(1, "the cluster is gone");
    };
    match k.word(0) {
        Some("get") => match &k.raw {
            Some(path) => get_raw(path, &api_version),
            None => get(&c.api, &k),
        },
        Some(verb @ ("cordon" | "uncordon")) => {
            let Some(name) = k.word(1) else {
                return Output::fail(1, format!("error: kubectl {verb} NODE"));
            };
            let patch = json!({"spec": {"unschedulable": verb == "cordon"}});
            match c.api.patch_merge(&objects::NODES, "", name, &patch) {
                Ok(_) => Output::ok(format!("node/{name} {verb}ed\n")),
                Err(e) => api_failure(e),
            }
        }
        Some("label") => label(&mut c.api, &k),
        Some("delete")
            if k.word(1)
                .and_then(resource_named)
                .is_some_and(|r| r.plural == "nodes") =>
        {
            let Some(name) = k.word(2) else {
                return Output::fail(1, "error: kubectl delete node NAME");
            };
            match c.api.delete(&objects::NODES, "", name) {
                Ok(_) => {
                    let fx = m.node_deleted(&cid, name, crate::world::now_ms());
                    inner.settle(m, fx);
                    Output::ok(format!("node \"{name}\" deleted\n"))
                }
                Err(e) => api_failure(e),
            }
        }
        Some("create") => create(&mut c.api, &k),
        Some("cluster-info") => {
            Output::ok("Kubernetes control plane is running at https://127.0.0.1:6443\n")
        }
        other => Output::fail(
            1,
            format!(
                "error: the world's kubectl does not model {:?} (it models get, get --raw, create, label, cordon, uncordon, delete node, version)",
                other.unwrap_or_default()
            ),
        ),
    }
}

/// `kubectl get --raw PATH`: the health endpoints and `/version`.
fn get_raw(path: &str, api_version: &str) -> Output {
    match path {
        "/readyz" | "/livez" | "/healthz" => Output::ok("ok"),
        "/version" => Output::ok(json!({"gitVersion": api_version}).to_string()),
        other => Output::fail(
            1,
            format!(
                "Error from server (NotFound): the world's kubectl --raw serves /readyz, /livez, /healthz, /version, not {other}"
            ),
        ),
    }
}

/// `kubectl get KIND [NAME]`, printed as `-o` asks.
fn get(api: &kube::ApiStore, k: &KubectlArgs) -> Output {
    let Some(res) = k.word(1).and_then(resource_named) else {
        return Output::fail(
            1,
            "error: the world's kubectl gets nodes, pods, namespaces, serviceaccounts, configmaps, pdb",
        );
    };
    let ns = k.ns_or_default();
    let items: Vec<Value> = match k.word(2) {
        Some(name) => match api.get(&res, &ns, name) {
            Ok(o) => vec![o],
            Err(e) => return api_failure(e),
        },
        None => {
            let scope = if k.all_ns || !res.namespaced {
                None
            } else {
                Some(ns.as_str())
            };
            api.list(&res, scope, None, None)
        }
    };
    let whole = match k.word(2) {
        Some(_) => items[0].clone(),
        None => json!({"apiVersion": "v1", "kind": "List", "items": items}),
    };
    match k.output.as_deref() {
        Some("json") => Output::ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&whole).unwrap_or_default()
        )),
        Some("name") => Output::ok(
            items
                .iter()
                .map(|o| {
                    format!(
                        "{}/{}\n",
                        res.kind.to_ascii_lowercase(),
                        o["metadata"]["name"].as_str().unwrap_or_default()
                    )
                })
                .collect::<String>(),
        ),
        Some(o) if o.starts_with("jsonpath") => {
            let expr = o.split_once('=').map(|(_, e)| e).unwrap_or_default();
            Output::ok(jsonpath(&whole, expr))
        }
        Some("wide") => Output::ok(table(&res, &items, true)),
        None => Output::ok(table(&res, &items, false)),
        Some(other) => Output::fail(
            1,
            format!("error: the world's kubectl does not print -o {other}"),
        ),
    }
}

/// `kubectl label KIND NAME key=value... key-...`.
fn label(api: &mut kube::ApiStore, k: &KubectlArgs) -> Output {
    let (Some(kind), Some(name)) = (k.word(1), k.word(2)) else {
        return Output::fail(1, "error: kubectl label node NAME key=value...");
    };
    let Some(res) = resource_named(kind) else {
        return Output::fail(
            1,
            "error: the world's kubectl labels nodes, pods, namespaces",
        );
    };
    let mut labels = serde_json::Map::new();
    for kv in &k.words[3..] {
        match kv.split_once('=') {
            Some((key, v)) => labels.insert(key.to_string(), json!(v)),
            None => labels.insert(kv.trim_end_matches('-').to_string(), Value::Null),
        };
    }
    let patch = json!({"metadata": {"labels": labels}});
    match api.patch_merge(&res, &k.ns_or_default(), name, &patch) {
        Ok(_) => Output::ok(format!(
            "{}/{name} labeled\n",
            res.kind.to_ascii_lowercase()
        )),
        Err(e) => api_failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_basics() {
        let v = json!({"items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]});
        assert_eq!(jsonpath(&v, "{.items[*].metadata.name}"), "a b");
        assert_eq!(jsonpath(&v, "{.items[1].metadata.name}"), "b");
        assert_eq!(jsonpath(&v, "{.nothing}"), "");
    }
}
