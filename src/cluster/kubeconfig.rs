//! Turning k3s's kubeconfig into one a user can keep: k3s writes
//! `/etc/rancher/k3s/k3s.yaml` with server `https://127.0.0.1:6443` and every
//! name `default`, which is useless off the VM and collides with every other
//! k3s cluster in `~/.kube/config`. Pure.

use serde_json::{Map, Value};

use super::error::ClusterError;

const SECTIONS: [&str; 3] = ["clusters", "users", "contexts"];

fn parse(raw: &str, what: &str) -> Result<Map<String, Value>, ClusterError> {
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    let v: Value = serde_saphyr::from_str(raw)
        .map_err(|e| ClusterError::InvalidKubeconfig(format!("{what} is not YAML: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(ClusterError::InvalidKubeconfig(format!(
            "{what} is not a kubeconfig (not a mapping)"
        ))),
    }
}

fn entries<'a>(
    doc: &'a mut Map<String, Value>,
    section: &str,
    what: &str,
) -> Result<&'a mut Vec<Value>, ClusterError> {
    let v = doc
        .entry(section.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut().ok_or_else(|| {
        ClusterError::InvalidKubeconfig(format!("{what}: `{section}` is not a list"))
    })
}

fn rename(v: Option<&mut Value>, from: &str, to: &str) {
    if let Some(v) = v
        && v.as_str() == Some(from)
    {
        *v = Value::String(to.to_string());
    }
}

fn to_yaml(doc: &Map<String, Value>) -> Result<String, ClusterError> {
    // Plain scalars: certificate data stays on one line, as kubectl writes it.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(doc, options)
        .map_err(|e| ClusterError::InvalidKubeconfig(format!("cannot write YAML: {e}")))
}

/// Rewrites k3s's kubeconfig for use off the VM: every cluster's server
/// becomes `server_url`, and every cluster, user and context named `default`
/// (and references to them) is renamed `cluster_name`. Returns YAML.
pub fn kubeconfig_rewrite(
    raw: &str,
    cluster_name: &str,
    server_url: &str,
) -> Result<String, ClusterError> {
    const WHAT: &str = "the k3s kubeconfig";
    let mut doc = parse(raw, WHAT)?;
    let clusters = entries(&mut doc, "clusters", WHAT)?;
    if clusters.is_empty() {
        return Err(ClusterError::InvalidKubeconfig(format!(
            "{WHAT} has no cluster"
        )));
    }
    for c in clusters.iter_mut().filter_map(Value::as_object_mut) {
        rename(c.get_mut("name"), "default", cluster_name);
        if let Some(cluster) = c.get_mut("cluster").and_then(Value::as_object_mut) {
            cluster.insert("server".to_string(), Value::String(server_url.to_string()));
        }
    }
    for u in entries(&mut doc, "users", WHAT)?
        .iter_mut()
        .filter_map(Value::as_object_mut)
    {
        rename(u.get_mut("name"), "default", cluster_name);
    }
    for c in entries(&mut doc, "contexts", WHAT)?
        .iter_mut()
        .filter_map(Value::as_object_mut)
    {
        rename(c.get_mut("name"), "default", cluster_name);
        if let Some(ctx) = c.get_mut("context").and_then(Value::as_object_mut) {
            rename(ctx.get_mut("cluster"), "default", cluster_name);
            rename(ctx.get_mut("user"), "default", cluster_name);
        }
    }
    rename(doc.get_mut("current-context"), "default", cluster_name);
    to_yaml(&doc)
}

/// Merges the kubeconfig `new` into `existing` (e.g. `~/.kube/config`,
/// possibly empty): clusters, users and contexts of the same name are
/// replaced, all others kept, and `current-context` becomes `new`'s. Other
/// top-level settings of `existing` (preferences, extensions) are kept.
pub fn merge_kubeconfig(existing: &str, new: &str) -> Result<String, ClusterError> {
    let mut doc = parse(existing, "the existing kubeconfig")?;
    let mut incoming = parse(new, "the new kubeconfig")?;
    doc.entry("apiVersion".to_string())
        .or_insert_with(|| Value::String("v1".to_string()));
    doc.entry("kind".to_string())
        .or_insert_with(|| Value::String("Config".to_string()));
    for section in SECTIONS {
        let add = std::mem::take(entries(&mut incoming, section, "the new kubeconfig")?);
        let have = entries(&mut doc, section, "the existing kubeconfig")?;
        for entry in add {
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string);
            let pos = name.as_deref().and_then(|n| {
                have.iter()
                    .position(|h| h.get("name").and_then(Value::as_str) == Some(n))
            });
            match pos {
                Some(i) => have[i] = entry,
                None => have.push(entry),
            }
        }
    }
    if let Some(cc) = incoming.remove("current-context") {
        doc.insert("current-context".to_string(), cc);
    }
    to_yaml(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::config::Kubeconfig;

    const K3S: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJkekNDQVIyZ0F3SUJBZ0lCQURBS0JnZ3Foa2pPUFFRREFqQWpNU0V3SHdZRFZRUUREQmhyTTNNdGMyVnkKZG1WeUxXTmhRREUzTURBd01EQXdNREF3SGhjTk1qUXdNVEF4TURBd01EQXdXaGNOTXpRd01UQXhNREF3TURBdwo=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    fn kc(yaml: &str) -> Kubeconfig {
        match Kubeconfig::from_yaml(yaml) {
            Ok(k) => k,
            Err(e) => panic!("{e}\n{yaml}"),
        }
    }

    fn ok<T>(r: Result<T, ClusterError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn rewrite_renames_default_and_points_at_the_server() {
        let out = ok(kubeconfig_rewrite(
            K3S,
            "demo",
            "https://demo-cp1.tail1234.ts.net:6443",
        ));
        assert!(
            out.contains("    certificate-authority-data: LS0tLS1CRUdJTi"),
            "base64 on one line:\n{out}"
        );
        let k = kc(&out);
        assert_eq!(k.current_context.as_deref(), Some("demo"));
        assert_eq!(k.clusters.len(), 1);
        assert_eq!(k.clusters[0].name, "demo");
        let cluster = k.clusters[0].cluster.clone().unwrap_or_default();
        assert_eq!(
            cluster.server.as_deref(),
            Some("https://demo-cp1.tail1234.ts.net:6443")
        );
        assert!(
            cluster
                .certificate_authority_data
                .is_some_and(|d| d.starts_with("LS0tLS1CRUdJTi"))
        );
        assert_eq!(k.auth_infos[0].name, "demo");
        assert_eq!(k.contexts[0].name, "demo");
        let ctx = k.contexts[0].context.clone().unwrap_or_default();
        assert_eq!(
            (ctx.cluster.as_str(), ctx.user.as_deref()),
            ("demo", Some("demo"))
        );
        assert!(!out.contains("127.0.0.1"));
        assert!(!out.contains("default"));
    }

    #[test]
    fn rewrite_keeps_data_byte_for_byte() {
        let out = ok(kubeconfig_rewrite(K3S, "demo", "https://x:6443"));
        let before: Value = match serde_saphyr::from_str(K3S) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        let after: Value = match serde_saphyr::from_str(&out) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            before["clusters"][0]["cluster"]["certificate-authority-data"],
            after["clusters"][0]["cluster"]["certificate-authority-data"]
        );
        assert_eq!(before["users"], {
            let mut u = after["users"].clone();
            u[0]["name"] = Value::String("default".into());
            u
        });
    }

    #[test]
    fn rewrite_refuses_garbage() {
        assert!(kubeconfig_rewrite("", "d", "https://x").is_err());
        assert!(kubeconfig_rewrite("- a\n- b\n", "d", "https://x").is_err());
        assert!(kubeconfig_rewrite("clusters: 3\n", "d", "https://x").is_err());
        assert!(kubeconfig_rewrite("key: [unclosed\n", "d", "https://x").is_err());
    }

    #[test]
    fn merge_replaces_same_names_keeps_others_and_switches_context() {
        let other = "apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: prod
  cluster: {server: 'https://prod:6443'}
- name: demo
  cluster: {server: 'https://old-demo:6443'}
users:
- name: prod
  user: {token: abc}
- name: demo
  user: {token: stale}
contexts:
- name: prod
  context: {cluster: prod, user: prod}
- name: demo
  context: {cluster: demo, user: demo}
current-context: prod
";
        let new = ok(kubeconfig_rewrite(K3S, "demo", "https://demo:6443"));
        let merged = ok(merge_kubeconfig(other, &new));
        let k = kc(&merged);
        assert_eq!(k.current_context.as_deref(), Some("demo"));
        let names = |v: Vec<String>| v.join(",");
        assert_eq!(
            names(k.clusters.iter().map(|c| c.name.clone()).collect()),
            "prod,demo"
        );
        assert_eq!(
            names(k.auth_infos.iter().map(|c| c.name.clone()).collect()),
            "prod,demo"
        );
        assert_eq!(
            names(k.contexts.iter().map(|c| c.name.clone()).collect()),
            "prod,demo"
        );
        let demo = k.clusters[1].cluster.clone().unwrap_or_default();
        assert_eq!(demo.server.as_deref(), Some("https://demo:6443"));
        let prod = k.clusters[0].cluster.clone().unwrap_or_default();
        assert_eq!(prod.server.as_deref(), Some("https://prod:6443"));
        assert!(!merged.contains("stale"));
        assert!(merged.contains("colors"));
    }

    #[test]
    fn merge_into_nothing_is_the_new_config() {
        let new = ok(kubeconfig_rewrite(K3S, "demo", "https://demo:6443"));
        for existing in ["", "  \n", "# only a comment\n"] {
            let merged = ok(merge_kubeconfig(existing, &new));
            let k = kc(&merged);
            assert_eq!(k.current_context.as_deref(), Some("demo"));
            assert_eq!(k.clusters.len(), 1);
            assert_eq!(k.auth_infos.len(), 1);
        }
        assert!(merge_kubeconfig("[1, 2]", &new).is_err());
    }
}
