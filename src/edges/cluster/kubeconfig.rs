//! The kubeconfig this tool hands to kube-rs, to kubectl and to the disk,
//! built from what k3s serves rather than taken from it. A kubeconfig is
//! code: `users[].user.exec` and `auth-provider` run programs on the
//! operator's machine, file paths read local files, `proxy-url` sends the
//! traffic elsewhere. The file comes from a VM (root on any server can
//! rewrite `/etc/rancher/k3s/k3s.yaml`) or back from the disk, so it is
//! read like any other untrusted input: [`SafeKubeconfig::parse`] keeps the
//! CA data, the client certificate and key data (or a token) and refuses
//! every other field by name; the server URL is always the tool's own.
//!
//! k3s writes server `https://127.0.0.1:6443` and names everything
//! `default`, which is useless off the VM and collides with every other k3s
//! cluster in `~/.kube/config`: [`SafeKubeconfig::to_yaml`] names the
//! cluster, user and context after the fleet. Pure. Errors name fields and
//! places, never values: these files hold the cluster's admin key.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::error::ClusterError;
use crate::base::secret::Secret;

const SECTIONS: [&str; 3] = ["clusters", "users", "contexts"];

/// How a client proves who it is: exactly what k3s's admin kubeconfig
/// carries (a client certificate and key), or a bearer token.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAuth {
    /// `client-certificate-data` and `client-key-data`, base64 as written.
    Certificate { cert_data: String, key_data: Secret },
    /// `token`.
    Token(Secret),
}

/// A kubeconfig reduced to what a client of one k3s cluster needs, and to
/// nothing that runs, reads or redirects anything.
#[derive(Debug, Clone, PartialEq)]
pub struct SafeKubeconfig {
    /// `certificate-authority-data`, base64 as written.
    pub ca_data: String,
    pub auth: ClientAuth,
}

/// Why a field is refused, for the error message.
fn why_refused(field: &str) -> &'static str {
    match field {
        "exec" => "a credential plugin runs a program on this machine",
        "auth-provider" => "an auth provider runs code on this machine",
        "certificate-authority" | "client-certificate" | "client-key" | "tokenFile" => {
            "a file path reads a file of this machine"
        }
        "proxy-url" => "a proxy would send the cluster's traffic elsewhere",
        "insecure-skip-tls-verify" => "it turns off TLS verification",
        "username" | "password" => "basic authentication is not something k3s writes",
        "as" | "as-uid" | "as-groups" | "as-user-extra" => {
            "impersonation is not something k3s writes"
        }
        _ => "it is not one of the fields this tool keeps",
    }
}

/// What is kept, per level: everything else is refused by name.
const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "clusters",
    "users",
    "contexts",
    "current-context",
    "preferences",
];
const NAMED_FIELDS: &[&str] = &["name", "cluster", "user", "context"];
const CLUSTER_FIELDS: &[&str] = &["server", "certificate-authority-data"];
const USER_FIELDS: &[&str] = &["client-certificate-data", "client-key-data", "token"];
const CONTEXT_FIELDS: &[&str] = &["cluster", "user"];

fn invalid(what: &str, msg: impl std::fmt::Display) -> ClusterError {
    ClusterError::InvalidKubeconfig(format!("{what}: {msg}"))
}

/// A YAML error of a file that holds credentials: where, and what kind of
/// mistake, never the text around it (serde-saphyr's messages and snippets
/// quote the offending line, which may be `client-key-data: ...`).
pub fn yaml_error_without_content(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    let mut inner = e;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let kind = match inner {
        E::SerdeUnknownField { .. }
        | E::SerdeInvalidType { .. }
        | E::SerdeInvalidValue { .. }
        | E::SerdeInvalidLength { .. }
        | E::SerdeMissingField { .. }
        | E::InvalidScalar { .. }
        | E::Unexpected { .. } => "a value of the wrong type",
        E::DuplicateMappingKey { .. } => "a repeated key",
        _ => "a YAML syntax error",
    };
    match e.location() {
        Some(l) => format!(
            "{kind} at line {}, column {} (content not shown: the file holds credentials)",
            l.line(),
            l.column()
        ),
        None => format!("{kind} (content not shown: the file holds credentials)"),
    }
}

/// Parses a kubeconfig's YAML into a JSON value: tags other than the core
/// ones and control characters refused, errors without content.
fn parse(raw: &str, what: &str) -> Result<Map<String, Value>, ClusterError> {
    if let Some(issue) = crate::base::yaml_guard::check(raw).into_iter().next() {
        return Err(invalid(
            what,
            format!(
                "line {}, column {}: {}",
                issue.line,
                issue.column,
                issue.message()
            ),
        ));
    }
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    let options = serde_saphyr::options! { with_snippet: false };
    let v: Value = serde_saphyr::from_str_with_options(raw, options).map_err(|e| {
        invalid(
            what,
            format!("not YAML: {}", yaml_error_without_content(&e)),
        )
    })?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(invalid(what, "not a kubeconfig (not a mapping)")),
    }
}

fn object<'a>(
    v: &'a Value,
    path: &str,
    what: &str,
) -> Result<&'a Map<String, Value>, ClusterError> {
    v.as_object()
        .ok_or_else(|| invalid(what, format!("`{path}` is not a mapping")))
}

/// Refuses any key of `m` not in `allowed`, naming it and why.
fn only(
    m: &Map<String, Value>,
    allowed: &[&str],
    path: &str,
    what: &str,
) -> Result<(), ClusterError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(invalid(
            what,
            format!(
                "`{path}{}{}` is refused: {}. exedev-k8s keeps only certificate-authority-data, client-certificate-data and client-key-data (or token), and sets the server itself",
                if path.is_empty() { "" } else { "." },
                crate::base::text::one_line(k),
                why_refused(k)
            ),
        )),
    }
}

fn list<'a>(
    doc: &'a Map<String, Value>,
    section: &str,
    what: &str,
) -> Result<&'a [Value], ClusterError> {
    match doc.get(section) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(what, format!("`{section}` is not a list"))),
    }
}

fn string<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
    what: &str,
) -> Result<Option<&'a str>, ClusterError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(what, format!("`{path}.{key}` is not a string"))),
    }
}

fn base64_field(value: &str, path: &str, what: &str) -> Result<String, ClusterError> {
    let compact: String = value.split_whitespace().collect();
    match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(bytes) if !bytes.is_empty() => Ok(compact),
        _ => Err(invalid(what, format!("`{path}` is not base64 data"))),
    }
}

/// The entry of `section` named `name`, or the only one when `name` is None.
fn pick<'a>(
    entries: &'a [Value],
    section: &str,
    name: Option<&str>,
    what: &str,
) -> Result<(usize, &'a Value), ClusterError> {
    let found: Vec<(usize, &Value)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| name.is_none_or(|n| e.get("name").and_then(Value::as_str) == Some(n)))
        .collect();
    match (found.as_slice(), name) {
        ([one], _) => Ok(*one),
        ([], Some(n)) => Err(invalid(
            what,
            format!(
                "no entry of `{section}` is named {:?}",
                crate::base::text::one_line(n)
            ),
        )),
        ([], None) => Err(invalid(what, format!("`{section}` is empty"))),
        (_, Some(n)) => Err(invalid(
            what,
            format!(
                "several entries of `{section}` are named {:?}",
                crate::base::text::one_line(n)
            ),
        )),
        (_, None) => Err(invalid(
            what,
            format!("`{section}` has several entries and no context says which to use"),
        )),
    }
}

impl SafeKubeconfig {
    /// Reads a kubeconfig (k3s's, or one this tool stored) and keeps only
    /// the CA data and the client credentials of its current context (or of
    /// its only cluster and user). Every field outside the kept ones, at any
    /// level, is an error naming it: `exec`, `auth-provider`, file paths,
    /// `proxy-url`, `insecure-skip-tls-verify`, extensions... `what` names
    /// the source in errors ("/etc/rancher/k3s/k3s.yaml on demo-cp1").
    pub fn parse(raw: &str, what: &str) -> Result<Self, ClusterError> {
        let doc = parse(raw, what)?;
        only(&doc, TOP_FIELDS, "", what)?;
        if let Some(p) = doc.get("preferences")
            && !(p.is_null() || p.as_object().is_some_and(Map::is_empty))
        {
            return Err(invalid(
                what,
                "`preferences` is refused: it is not one of the fields this tool keeps",
            ));
        }
        // Every entry of every section is checked, not only the one used:
        // a file with anything else in it was not written by k3s or by us.
        let mut sections: Vec<&[Value]> = Vec::new();
        for section in SECTIONS {
            let entries = list(&doc, section, what)?;
            let inner = match section {
                "clusters" => ("cluster", CLUSTER_FIELDS),
                "users" => ("user", USER_FIELDS),
                _ => ("context", CONTEXT_FIELDS),
            };
            for (i, e) in entries.iter().enumerate() {
                let path = format!("{section}[{i}]");
                let e = object(e, &path, what)?;
                only(e, NAMED_FIELDS, &path, what)?;
                if let Some(body) = e.get(inner.0).filter(|b| !b.is_null()) {
                    let path = format!("{path}.{}", inner.0);
                    only(object(body, &path, what)?, inner.1, &path, what)?;
                }
            }
            sections.push(entries);
        }
        let (clusters, users, contexts) = (sections[0], sections[1], sections[2]);
        let current = string(&doc, "current-context", "", what)?;
        let (cluster_name, user_name) = if contexts.is_empty() && current.is_none() {
            (None, None)
        } else {
            let (i, ctx) = pick(contexts, "contexts", current, what)?;
            let path = format!("contexts[{i}].context");
            let body = ctx
                .get("context")
                .ok_or_else(|| invalid(what, format!("`contexts[{i}]` has no context")))?;
            let body = object(body, &path, what)?;
            (
                string(body, "cluster", &path, what)?,
                string(body, "user", &path, what)?,
            )
        };
        let (ci, cluster) = pick(clusters, "clusters", cluster_name, what)?;
        let (ui, user) = pick(users, "users", user_name, what)?;
        let empty = Value::Object(Map::new());
        let cpath = format!("clusters[{ci}].cluster");
        let cluster = object(
            cluster
                .get("cluster")
                .filter(|v| !v.is_null())
                .unwrap_or(&empty),
            &cpath,
            what,
        )?;
        let upath = format!("users[{ui}].user");
        let user = object(
            user.get("user").filter(|v| !v.is_null()).unwrap_or(&empty),
            &upath,
            what,
        )?;
        let ca = string(cluster, "certificate-authority-data", &cpath, what)?.ok_or_else(|| {
            invalid(
                what,
                format!("`{cpath}` has no certificate-authority-data: the cluster's CA is needed to verify the server"),
            )
        })?;
        let ca_data = base64_field(ca, &format!("{cpath}.certificate-authority-data"), what)?;
        let cert = string(user, "client-certificate-data", &upath, what)?;
        let key = string(user, "client-key-data", &upath, what)?;
        let token = string(user, "token", &upath, what)?;
        let auth = match (cert, key, token) {
            (Some(c), Some(k), None) => ClientAuth::Certificate {
                cert_data: base64_field(c, &format!("{upath}.client-certificate-data"), what)?,
                key_data: Secret::new(base64_field(k, &format!("{upath}.client-key-data"), what)?),
            },
            (None, None, Some(t)) if !t.trim().is_empty() && !t.contains(char::is_whitespace) => {
                ClientAuth::Token(Secret::new(t))
            }
            (None, None, Some(_)) => {
                return Err(invalid(
                    what,
                    format!("`{upath}.token` is empty or holds spaces"),
                ));
            }
            (None, None, None) => {
                return Err(invalid(
                    what,
                    format!(
                        "`{upath}` has no credentials (client-certificate-data and client-key-data, or token)"
                    ),
                ));
            }
            (_, _, Some(_)) => {
                return Err(invalid(
                    what,
                    format!("`{upath}` has both a client certificate and a token: keep one"),
                ));
            }
            _ => {
                return Err(invalid(
                    what,
                    format!("`{upath}` needs both client-certificate-data and client-key-data"),
                ));
            }
        };
        Ok(SafeKubeconfig { ca_data, auth })
    }

    /// The kubeconfig as YAML: one cluster, user and context, all named
    /// `cluster_name`, with server `server_url`. Holds the admin client
    /// key: never print it.
    pub fn to_yaml(&self, cluster_name: &str, server_url: &str) -> Result<String, ClusterError> {
        let user = match &self.auth {
            ClientAuth::Certificate {
                cert_data,
                key_data,
            } => json!({
                "client-certificate-data": cert_data,
                "client-key-data": key_data.expose(),
            }),
            ClientAuth::Token(t) => json!({ "token": t.expose() }),
        };
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": cluster_name,
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": self.ca_data,
                },
            }],
            "users": [{ "name": cluster_name, "user": user }],
            "contexts": [{
                "name": cluster_name,
                "context": { "cluster": cluster_name, "user": cluster_name },
            }],
            "current-context": cluster_name,
        });
        match doc {
            Value::Object(m) => to_yaml(&m),
            _ => Err(ClusterError::InvalidKubeconfig(
                "cannot build the kubeconfig".into(),
            )),
        }
    }

    /// The same, for kube-rs: built from [`Self::to_yaml`], so nothing but
    /// the kept fields can reach the client.
    pub fn to_kube(
        &self,
        cluster_name: &str,
        server_url: &str,
    ) -> Result<kube::config::Kubeconfig, ClusterError> {
        let yaml = self.to_yaml(cluster_name, server_url)?;
        kube::config::Kubeconfig::from_yaml(&yaml).map_err(|_| {
            ClusterError::InvalidKubeconfig(
                "the rebuilt kubeconfig is not readable by kube-rs (a bug)".into(),
            )
        })
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
    v.as_array_mut()
        .ok_or_else(|| invalid(what, format!("`{section}` is not a list")))
}

fn to_yaml(doc: &Map<String, Value>) -> Result<String, ClusterError> {
    // Plain scalars: certificate data stays on one line, as kubectl writes it.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(doc, options)
        .map_err(|e| ClusterError::InvalidKubeconfig(format!("cannot write YAML: {e}")))
}

/// k3s's kubeconfig made safe and usable off the VM (see
/// [`SafeKubeconfig`]): YAML naming everything `cluster_name`, server
/// `server_url`.
pub fn kubeconfig_rewrite(
    raw: &str,
    cluster_name: &str,
    server_url: &str,
) -> Result<String, ClusterError> {
    SafeKubeconfig::parse(raw, "the k3s kubeconfig")?.to_yaml(cluster_name, server_url)
}

/// Merges the kubeconfig `new` into `existing` (e.g. `~/.kube/config`,
/// possibly empty): clusters, users and contexts of the same name are
/// replaced, all others kept, and `current-context` becomes `new`'s. Other
/// top-level settings of `existing` (preferences, extensions) are kept: the
/// file is the user's, and this tool never runs it.
pub fn merge_kubeconfig(existing: &str, new: &str) -> Result<String, ClusterError> {
    let mut doc = parse_user(existing, "the existing kubeconfig")?;
    let mut incoming = parse_user(new, "the new kubeconfig")?;
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

/// A user's own kubeconfig: any field is theirs to keep (it is merged,
/// never run), but its errors still never quote it.
fn parse_user(raw: &str, what: &str) -> Result<Map<String, Value>, ClusterError> {
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    let options = serde_saphyr::options! { with_snippet: false };
    let v: Value = serde_saphyr::from_str_with_options(raw, options).map_err(|e| {
        invalid(
            what,
            format!("not YAML: {}", yaml_error_without_content(&e)),
        )
    })?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(invalid(what, "not a kubeconfig (not a mapping)")),
    }
}

/// A user's kubeconfig at a glance: its contexts' names and its
/// `current-context`, for `kubeconfig --out` to refuse dropping other
/// contexts and to say when `--merge` switches the current one. Never
/// quotes the file (it may hold credentials).
pub fn contexts_of(raw: &str) -> Result<(Vec<String>, Option<String>), ClusterError> {
    let doc = parse_user(raw, "the existing kubeconfig")?;
    let names = match doc.get("contexts") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(invalid(
                "the existing kubeconfig",
                "`contexts` is not a list",
            ));
        }
    };
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok((names, current))
}

/// The credential plugins a user's kubeconfig would run, as
/// `user "NAME": exec` / `auth-provider`: for the warning printed when a
/// `--kubeconfig` the user brings is used as it is. Unreadable files give
/// nothing here (reading them fails later, with its own error).
pub fn credential_plugins(raw: &str) -> Vec<String> {
    let Ok(doc) = parse_user(raw, "") else {
        return Vec::new();
    };
    let Some(Value::Array(users)) = doc.get("users") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for u in users {
        let name = u.get("name").and_then(Value::as_str).unwrap_or("?");
        for field in ["exec", "auth-provider"] {
            if u.get("user")
                .and_then(|b| b.get(field))
                .is_some_and(|v| !v.is_null())
            {
                out.push(format!(
                    "user {:?}: {field}",
                    crate::base::text::one_line(name)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::config::Kubeconfig;
    use proptest::prelude::*;

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
    client-key-data: S0VZU0VDUkVUS0VZ
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

    fn refused(yaml: &str) -> String {
        match SafeKubeconfig::parse(yaml, "the test kubeconfig") {
            Ok(k) => panic!("accepted: {k:?}\n{yaml}"),
            Err(e) => e.to_string(),
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
        let after: Value = match serde_saphyr::from_str(&out) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            after["clusters"][0]["cluster"]["certificate-authority-data"],
            K3S.lines()
                .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
                .unwrap_or_default()
        );
        assert_eq!(
            after["users"][0]["user"]["client-certificate-data"],
            "Q0VSVA=="
        );
        assert_eq!(
            after["users"][0]["user"]["client-key-data"],
            "S0VZU0VDUkVUS0VZ"
        );
    }

    #[test]
    fn its_own_output_reads_back_the_same() {
        let safe = ok(SafeKubeconfig::parse(K3S, "k3s"));
        let out = ok(safe.to_yaml("demo", "https://x:6443"));
        assert_eq!(ok(SafeKubeconfig::parse(&out, "stored")), safe);
        let token = ok(SafeKubeconfig::parse(
            &K3S.replace(
                "    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZU0VDUkVUS0VZ\n",
                "    token: K10abc::server:def\n",
            ),
            "k3s",
        ));
        assert_eq!(
            token.auth,
            ClientAuth::Token(Secret::new("K10abc::server:def"))
        );
        let out = ok(token.to_yaml("demo", "https://x:6443"));
        assert_eq!(ok(SafeKubeconfig::parse(&out, "stored")), token);
        let k = ok(token.to_kube("demo", "https://x:6443"));
        assert_eq!(k.auth_infos.len(), 1);
    }

    /// Every field a kubeconfig may carry beyond the kept ones is refused by
    /// its path, at whatever level it appears, and no refused value shows.
    #[test]
    fn each_refused_field_is_named() {
        let user = "    client-key-data: S0VZU0VDUkVUS0VZ\n";
        let cluster = "    server: https://127.0.0.1:6443\n";
        let cases: &[(&str, &str, &str, &str)] = &[
            // (after, inserted, expected path, expected reason)
            (
                user,
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'id > PWNED']\n",
                "users[0].user.exec",
                "runs a program",
            ),
            (
                user,
                "    auth-provider:\n      name: oidc\n      config: {client-secret: HIDDEN-VALUE}\n",
                "users[0].user.auth-provider",
                "runs code",
            ),
            (
                user,
                "    client-certificate: /home/me/cert.pem\n",
                "users[0].user.client-certificate",
                "file path",
            ),
            (
                user,
                "    client-key: /home/me/HIDDEN-VALUE.pem\n",
                "users[0].user.client-key",
                "file path",
            ),
            (
                user,
                "    tokenFile: /var/run/HIDDEN-VALUE\n",
                "users[0].user.tokenFile",
                "file path",
            ),
            (
                user,
                "    username: admin\n    password: HIDDEN-VALUE\n",
                "users[0].user.",
                "basic authentication",
            ),
            (
                user,
                "    as: system:admin\n",
                "users[0].user.as",
                "impersonation",
            ),
            (
                user,
                "    extensions: []\n",
                "users[0].user.extensions",
                "not one of the fields",
            ),
            (
                cluster,
                "    certificate-authority: /etc/HIDDEN-VALUE.crt\n",
                "clusters[0].cluster.certificate-authority",
                "file path",
            ),
            (
                cluster,
                "    proxy-url: http://HIDDEN-VALUE:3128\n",
                "clusters[0].cluster.proxy-url",
                "elsewhere",
            ),
            (
                cluster,
                "    insecure-skip-tls-verify: true\n",
                "clusters[0].cluster.insecure-skip-tls-verify",
                "TLS verification",
            ),
            (
                cluster,
                "    tls-server-name: HIDDEN-VALUE\n",
                "clusters[0].cluster.tls-server-name",
                "not one of the fields",
            ),
            (
                "    user: default\n",
                "    namespace: HIDDEN-VALUE\n",
                "contexts[0].context.namespace",
                "not one of the fields",
            ),
            (
                cluster,
                "  extensions: [HIDDEN-VALUE]\n",
                "clusters[0].extensions",
                "not one of the fields",
            ),
            (
                "kind: Config\n",
                "proxy: HIDDEN-VALUE\n",
                "`proxy`",
                "not one of the fields",
            ),
            (
                "kind: Config\n",
                "extensions: [{name: x, extension: HIDDEN-VALUE}]\n",
                "`extensions`",
                "not one of the fields",
            ),
        ];
        for (after, insert, path, reason) in cases {
            assert!(K3S.contains(after), "{after}");
            let yaml = K3S.replacen(after, &format!("{after}{insert}"), 1);
            let e = refused(&yaml);
            assert!(e.contains(path), "{path}: {e}");
            assert!(e.contains(reason), "{reason}: {e}");
            assert!(!e.contains("HIDDEN-VALUE") && !e.contains("PWNED"), "{e}");
            assert!(!e.contains("S0VZU0VDUkVUS0VZ"), "no key data: {e}");
        }
        assert!(
            refused(&K3S.replace("preferences: {}", "preferences: {colors: true}"))
                .contains("`preferences` is refused")
        );
    }

    #[test]
    fn a_second_user_with_a_plugin_is_refused_too() {
        let yaml = format!("{K3S}- name: other\n  user:\n    exec: {{command: /bin/sh}}\n");
        assert!(refused(&yaml).contains("users[1].user.exec"));
    }

    #[test]
    fn what_is_kept_must_be_complete_and_well_formed() {
        for (yaml, expect) in [
            (K3S.replace("    client-key-data: S0VZU0VDUkVUS0VZ\n", ""), "needs both"),
            (K3S.replace("    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZU0VDUkVUS0VZ\n", ""), "no credentials"),
            (K3S.replace("Q0VSVA==", "not base64!"), "client-certificate-data` is not base64"),
            (K3S.replace("    certificate-authority-data: LS0t", "    x-certificate-authority-data: LS0t"), "x-certificate-authority-data"),
            (K3S.replace("    client-key-data: S0VZU0VDUkVUS0VZ\n", "    client-key-data: S0VZU0VDUkVUS0VZ\n    token: abc\n"), "both a client certificate and a token"),
            (K3S.replace("current-context: default", "current-context: other"), "no entry of `contexts` is named \"other\""),
            (K3S.replace("    certificate-authority-data", "    server2: x\n    certificate-authority-data"), "server2"),
        ] {
            let e = refused(&yaml);
            assert!(e.contains(expect), "{expect}: {e}");
            assert!(!e.contains("S0VZU0VDUkVUS0VZ"), "{e}");
        }
        assert!(refused("").contains("`clusters` is empty"));
        assert!(refused("- a\n- b\n").contains("not a mapping"));
        assert!(refused("clusters: 3\n").contains("not a list"));
        assert!(refused("key: [unclosed\n").contains("not YAML"));
        assert!(refused("users: !!binary aGk=\n").contains("!!binary"));
    }

    #[test]
    fn yaml_errors_never_quote_the_file() {
        // A broken line right after the key: serde-saphyr's own message and
        // snippet would quote both.
        let broken = K3S.replace(
            "    client-key-data: S0VZU0VDUkVUS0VZ\n",
            "    client-key-data: S0VZU0VDUkVUS0VZ\n   token: \"SEKRIT-TOKEN\n",
        );
        let e = refused(&broken);
        assert!(e.contains("line "), "{e}");
        assert!(
            !e.contains("S0VZU0VDUkVUS0VZ") && !e.contains("SEKRIT"),
            "{e}"
        );
        let e = match merge_kubeconfig(&broken, "") {
            Ok(_) => panic!("merged a broken file"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("line "), "{e}");
        assert!(
            !e.contains("S0VZU0VDUkVUS0VZ") && !e.contains("SEKRIT"),
            "{e}"
        );
        let typed = "users:\n- name: x\n  user: {client-key-data: [S0VZU0VDUkVUS0VZ]}\n";
        assert!(!refused(typed).contains("S0VZU0VDUkVUS0VZ"));
    }

    #[test]
    fn plugins_in_a_users_file_are_listed() {
        let yaml = "users:\n- name: eks\n  user:\n    exec: {command: aws}\n- name: gke\n  user:\n    auth-provider: {name: gcp}\n- name: plain\n  user: {token: t}\n";
        assert_eq!(
            credential_plugins(yaml),
            ["user \"eks\": exec", "user \"gke\": auth-provider"]
        );
        assert!(credential_plugins(K3S).is_empty());
        assert!(credential_plugins("not: [valid").is_empty());
    }

    proptest! {
        /// Any key added to a user, cluster, context or the top level that
        /// is not a kept field is refused, by name.
        #[test]
        fn any_unknown_field_is_refused(
            key in "[a-zA-Z][a-zA-Z0-9-]{0,20}",
            place in 0usize..4,
        ) {
            let (after, indent, kept): (&str, &str, &[&str]) = match place {
                0 => ("    client-key-data: S0VZU0VDUkVUS0VZ\n", "    ", USER_FIELDS),
                1 => ("    server: https://127.0.0.1:6443\n", "    ", CLUSTER_FIELDS),
                2 => ("    user: default\n", "    ", CONTEXT_FIELDS),
                _ => ("kind: Config\n", "", TOP_FIELDS),
            };
            prop_assume!(!kept.contains(&key.as_str()));
            let yaml = K3S.replacen(after, &format!("{after}{indent}{key}: x\n"), 1);
            match SafeKubeconfig::parse(&yaml, "t") {
                Ok(_) => prop_assert!(false, "accepted {key}"),
                Err(e) => {
                    let want = format!("{key}` is refused");
                    prop_assert!(e.to_string().contains(&want), "{}", e);
                }
            }
        }
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
