//! What clients learn about the API before they call it: discovery
//! (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`: each resource's
//! short names, categories, verbs and subresources, as a real API server
//! lists them, so `kubectl get deploy`, `rs`, `po`, `all` resolve) and the
//! OpenAPI documents kubectl downloads to validate (`/openapi/v2`,
//! `/openapi/v3`, `/openapi/v3/<api path>`).
//!
//! How kubectl uses OpenAPI, and so what is served:
//! - kubectl 1.20 validates client-side against `/openapi/v2`, which it
//!   asks for only as protobuf (client-go discovery `OpenAPISchema`,
//!   `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`)
//!   and skips a kind the document has no model for (kubectl
//!   `pkg/util/openapi/validation` `validateResource`: "resource is not
//!   present, let's just skip validation"). The world serves a document
//!   with no models: 1.20 validates nothing client-side against it.
//! - kubectl 1.32 first asks `/openapi/v3` whether the PATCH operation of
//!   the object's kind takes the `fieldValidation` query parameter
//!   (cli-runtime `resource/query_param_verifier_v3.go`
//!   `supportsQueryParamV3`); when it does, validation is the server's
//!   (`fieldValidation=Strict`). Every group-version here lists, per
//!   resource, its PATCH operation with its kind and that parameter, and
//!   the world's API checks fields of the kinds it models (see
//!   [`super::fields`]).
//!
//! No schemas (`definitions`, `components.schemas`) are served: `kubectl
//! explain` has nothing to show, and kubectl's patch computation uses its
//! compiled-in types for built-in kinds instead.

use serde_json::{Value, json};

use super::objects::{self, Resource};

/// Short names, as the real API server's registry gives them.
fn short_names(r: &Resource) -> &'static [&'static str] {
    match (&*r.group, &*r.plural) {
        ("", "pods") => &["po"],
        ("", "services") => &["svc"],
        ("", "nodes") => &["no"],
        ("", "namespaces") => &["ns"],
        ("", "configmaps") => &["cm"],
        ("", "endpoints") => &["ep"],
        ("", "events") => &["ev"],
        ("", "serviceaccounts") => &["sa"],
        ("apps", "deployments") => &["deploy"],
        ("apps", "replicasets") => &["rs"],
        ("apps", "daemonsets") => &["ds"],
        ("apps", "statefulsets") => &["sts"],
        ("policy", "poddisruptionbudgets") => &["pdb"],
        ("apiextensions.k8s.io", "customresourcedefinitions") => &["crd", "crds"],
        _ => &[],
    }
}

/// The `all` category: what `kubectl get all` lists (the real server puts
/// pods, services, deployments, replicasets, daemonsets and statefulsets
/// in it, among those served here).
fn categories(r: &Resource) -> &'static [&'static str] {
    match (&*r.group, &*r.plural) {
        ("", "pods" | "services")
        | ("apps", "deployments" | "replicasets" | "daemonsets" | "statefulsets") => &["all"],
        _ => &[],
    }
}

/// The verbs served for every resource (no `deletecollection`).
const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Subresources served: `(resource, subresource, kind, verbs)`.
const SUBRESOURCES: &[(&str, &str, &str, &[&str])] = &[
    ("deployments", "scale", "Scale", &["get", "patch", "update"]),
    ("replicasets", "scale", "Scale", &["get", "patch", "update"]),
    ("pods", "log", "Pod", &["get"]),
    ("pods", "status", "Pod", &["get", "patch", "update"]),
    ("nodes", "status", "Node", &["get", "patch", "update"]),
    (
        "deployments",
        "status",
        "Deployment",
        &["get", "patch", "update"],
    ),
    (
        "replicasets",
        "status",
        "ReplicaSet",
        &["get", "patch", "update"],
    ),
    (
        "daemonsets",
        "status",
        "DaemonSet",
        &["get", "patch", "update"],
    ),
];

/// `APIResourceList` of one group-version.
pub fn resource_list(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = objects::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let mut v = vec![json!({"name": r.plural, "singularName": r.kind.to_ascii_lowercase(),
                "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS,
                "shortNames": short_names(r), "categories": categories(r)})];
            for (res, sub, kind, verbs) in SUBRESOURCES.iter().filter(|s| s.0 == r.plural) {
                let mut e = json!({"name": format!("{res}/{sub}"), "singularName": "", "namespaced": r.namespaced,
                              "kind": kind, "verbs": verbs});
                if *sub == "scale" {
                    e["group"] = json!("autoscaling");
                    e["version"] = json!("v1");
                }
                v.push(e);
            }
            if r.plural == "pods" && r.group.is_empty() {
                v.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true,
                              "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
            }
            v
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": objects::group_version(group, version),
           "resources": resources})
}

/// The named groups, each at `v1`.
fn group_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = objects::RESOURCES
        .iter()
        .filter_map(|r| match &r.group {
            std::borrow::Cow::Borrowed(g) if !g.is_empty() => Some(*g),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `APIGroupList` (`/apis`).
pub fn group_list() -> Value {
    let groups: Vec<Value> = group_names()
        .iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The API paths OpenAPI v3 is served for: `api/v1`, `apis/<group>/v1`.
fn api_paths() -> Vec<(String, &'static str)> {
    let mut v = vec![("api/v1".to_string(), "")];
    v.extend(
        group_names()
            .into_iter()
            .map(|g| (format!("apis/{g}/v1"), g)),
    );
    v
}

/// `/openapi/v3`: where each group-version's document is.
pub fn openapi_v3_index(version: &str) -> Value {
    let paths: serde_json::Map<String, Value> = api_paths()
        .into_iter()
        .map(|(p, _)| {
            let url = format!("/openapi/v3/{p}?hash={}", etag(version, &p));
            (p, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// A stable content hash for the index's URLs (the document changes only
/// with the server's version).
fn etag(version: &str, path: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in version.bytes().chain(path.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `/openapi/v3/<api path>`: each resource's object path with its PATCH
/// operation, its kind and the query parameters the server takes.
pub fn openapi_v3_group(path: &str, version: &str) -> Option<Value> {
    let (_, group) = api_paths().into_iter().find(|(p, _)| p == path)?;
    let mut paths = serde_json::Map::new();
    let query = |name: &str, desc: &str| json!({"name": name, "in": "query", "description": desc, "schema": {"type": "string", "uniqueItems": true}});
    for r in objects::RESOURCES.iter().filter(|r| r.group == group) {
        let prefix = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/v1")
        };
        let object = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": group, "version": "v1", "kind": r.kind});
        let patch = json!({
            "description": format!("partially update the specified {}", r.kind),
            "operationId": format!("patch{}", r.kind),
            "parameters": [
                query("dryRun", "When present, indicates that modifications should not be persisted."),
                query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
                query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields."),
                json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}),
            ],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        });
        paths.insert(object, json!({"patch": patch}));
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": version},
                "paths": paths, "components": {"schemas": {}}}),
    )
}

/// `/openapi/v2` as JSON: no models, no paths.
pub fn openapi_v2_json(version: &str) -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": {}, "definitions": {}})
}

/// `/openapi/v2` as protobuf: gnostic's `openapi_v2.Document` with
/// `swagger` (field 1) and `info` (field 2: `title` 1, `version` 2), the
/// same document as [`openapi_v2_json`].
pub fn openapi_v2_protobuf(version: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push(number << 3 | 2);
        let mut len = bytes.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, version.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_names_short_names_categories_and_subresources() {
        let apps = resource_list("apps", "v1");
        let deploy = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        assert!(
            deploy["verbs"]
                .as_array()
                .unwrap()
                .contains(&json!("watch"))
        );
        let core = resource_list("", "v1");
        assert!(
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "pods/log")
        );
        assert!(
            group_list()["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "apps")
        );
    }

    #[test]
    fn openapi_v3_lists_field_validation_for_every_kind() {
        let idx = openapi_v3_index("v1.31.4+k3s1");
        let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc = openapi_v3_group("apis/apps/v1", "v1.31.4+k3s1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        let core = openapi_v3_group("api/v1", "v").unwrap();
        assert!(core["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
        assert!(openapi_v3_group("apis/nope/v1", "v").is_none());
    }

    #[test]
    fn the_v2_protobuf_is_a_document_with_swagger_and_info() {
        let pb = openapi_v2_protobuf("v1.31.4+k3s1");
        // field 1 (swagger), length 3, "2.0"; field 2 (info) follows.
        assert_eq!(&pb[..5], &[0x0a, 3, b'2', b'.', b'0']);
        assert_eq!(pb[5], 0x12);
        assert_eq!(usize::from(pb[6]), pb.len() - 7);
    }
}
