//! One cluster's API objects and the controllers a test leans on: Node
//! registration by the k3s model, cordon's unschedulable taint, evictions
//! that honour PodDisruptionBudgets, pods of a deleted node collected, the
//! `default` ServiceAccount of every namespace, and one controller per
//! file: Deployments ([`deployment`]), ReplicaSets ([`replicaset`]),
//! DaemonSets ([`daemonset`]), the scheduler ([`scheduler`]), NoExecute
//! taint eviction ([`taint_eviction`]), garbage
//! collection by ownerReferences ([`gc`]), node Leases ([`leases`]), pod
//! addresses ([`network`]). Pure: time comes in as milliseconds.
//!
//! A pod whose controlling owner is not an object here (the seeded system
//! pods, a test's bare pods naming a ReplicaSet) is recreated by
//! `queue_replacement` when it goes; one whose owner is an object here is
//! the owner's controller's to replace.
//!
//! Objects are JSON values keyed by (group, resource, namespace, name).
//! Server-side apply tracks which labels each field manager owns, so a
//! label a manager stops applying is removed; other fields merge (lists are
//! replaced whole, as for atomic lists such as Node taints).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use super::objects::{self, Resource, rfc3339};

mod daemonset;
mod deployment;
mod gc;
mod leases;
mod network;
mod replicaset;
mod scale;
mod scheduler;
mod smp;
mod taint_eviction;

/// An API error: status code, reason, message (a `Status` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn not_found(what: &str, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{what} \"{name}\" not found"),
        }
    }
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }
    /// The `Status` body.
    pub fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

/// Object key: group, resource (plural), namespace (empty: cluster-scoped), name.
pub type Key = (String, String, String, String);

fn key(res: &Resource, ns: &str, name: &str) -> Key {
    let ns = if res.namespaced { ns } else { "" };
    (
        res.group.to_string(),
        res.plural.to_string(),
        ns.to_string(),
        name.to_string(),
    )
}

/// A pod to recreate (a controller's replacement for an evicted pod).
#[derive(Debug, Clone)]
struct Pending {
    template: Value,
    due_ms: u64,
}

/// One cluster's objects (cloned into an etcd snapshot).
#[derive(Debug, Default, Clone)]
pub struct ApiStore {
    objects: BTreeMap<Key, Value>,
    /// Labels owned by each field manager, per object.
    label_owners: BTreeMap<Key, BTreeMap<String, BTreeSet<String>>>,
    rv: u64,
    uid: u64,
    now_ms: u64,
    recreate: Vec<Pending>,
    /// Pods whose containers are being created, and when each starts
    /// (`Timings::pod_start_ms` after the kubelet took it up).
    starting: BTreeMap<Key, u64>,
    /// How long a bound pod stays `ContainerCreating` (`Timings::pod_start_ms`;
    /// 0: Running at once).
    pod_start_ms: u64,
    /// Components k3s was told not to deploy (`disable`).
    disabled: Vec<String>,
    /// UIDs of deleted objects: their dependents are collected, not
    /// replaced.
    gone_uids: BTreeSet<String>,
    /// The resourceVersion the workload controllers last saw: nothing
    /// changed since, nothing to reconcile.
    synced_rv: u64,
    /// When node Leases were last looked at (`leases`).
    leases_checked_ms: Option<u64>,
    /// The data plane's last snapshot of these objects (`world::traffic`).
    net: crate::world::dataplane::cache::NetCache,
}

pub use super::objects::selector_matches;

/// A `labelSelector` query (`a=b,c!=d,e`) against labels.
fn label_query_matches(q: &str, labels: &Map<String, Value>) -> bool {
    q.split(',').filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels.get(k).and_then(Value::as_str) != Some(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels.get(k).and_then(Value::as_str) == Some(v)
        } else if let Some(k) = term.strip_prefix('!') {
            !labels.contains_key(k)
        } else {
            labels.contains_key(term)
        }
    })
}

/// A `fieldSelector` query against an object (`spec.nodeName=x`,
/// `metadata.name=x`, `metadata.namespace=x`, `status.phase=x`).
fn field_query_matches(q: &str, obj: &Value) -> bool {
    q.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (path, want, eq) = match term.split_once("!=") {
            Some((p, v)) => (p, v, false),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((p, v)) => (p, v, true),
                None => return false,
            },
        };
        let mut cur = obj;
        for part in path.split('.') {
            cur = &cur[part];
        }
        let have = cur.as_str().unwrap_or_default();
        (have == want) == eq
    })
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Kubernetes' alphabet for generated name suffixes and hashes: no vowels
/// (no words), no `0 1 3` (apimachinery `util/rand.SafeEncodeString`).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `SafeEncodeString`: each byte mapped into [`SAFE`].
fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// The `pod-template-hash` (and a DaemonSet's `controller-revision-hash`)
/// of a pod template: as Kubernetes' `controller.ComputeHash`, a 32-bit
/// FNV-1a hash written in decimal and safe-encoded. Kubernetes hashes the
/// Go struct's printed form, this the template's JSON with sorted keys,
/// so the values differ from a real cluster's while keeping their form
/// (`5d9c7b8f6d`-like, changing exactly when the template does).
fn template_hash(template: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), canonical(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            v => v.clone(),
        }
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in canonical(template).to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    safe_encode(&h.to_string())
}

/// The controller owner reference's uid of an object (empty: none).
fn controller_uid(v: &Value) -> &str {
    v["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["controller"] == json!(true)))
        .and_then(|r| r["uid"].as_str())
        .unwrap_or_default()
}

/// An owner reference to `owner` as its controller.
fn owner_ref(owner: &Value) -> Value {
    json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true})
}

/// An int-or-percent (`maxSurge`, `maxUnavailable`) against `total`,
/// percentages rounded up or down as Kubernetes'
/// `intstr.GetScaledValueFromIntOrPercent` is told.
fn int_or_percent(v: &Value, total: u64, default: &str, round_up: bool) -> u64 {
    let v = if v.is_null() {
        json!(default)
    } else {
        v.clone()
    };
    match &v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<u64>().ok()) {
            Some(p) if round_up => (p * total).div_ceil(100),
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

fn labels_of(v: &Value) -> Map<String, Value> {
    v["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

impl ApiStore {
    pub fn new(now_ms: u64) -> Self {
        ApiStore {
            now_ms,
            ..ApiStore::default()
        }
    }

    fn stamp(&mut self, v: &mut Value, res: &Resource, ns: &str, name: &str, create: bool) {
        self.rv += 1;
        let meta = &mut v["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(name);
        if res.namespaced {
            meta["namespace"] = json!(ns);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        meta["resourceVersion"] = json!(self.rv.to_string());
        // metadata.generation: 1 at creation, +1 at each change of `spec`
        // (what `observedGeneration` and `kubectl rollout status` compare).
        if !matches!(
            &*res.plural,
            "pods" | "nodes" | "namespaces" | "events" | "leases"
        ) {
            let old = self.objects.get(&key(res, ns, name));
            let generation = match old {
                Some(o) if !create => {
                    let g = o["metadata"]["generation"].as_u64().unwrap_or(1);
                    if o["spec"] == v["spec"] { g } else { g + 1 }
                }
                _ => 1,
            };
            v["metadata"]["generation"] = json!(generation);
        }
        let meta = &mut v["metadata"];
        if create {
            self.uid += 1;
            meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid));
            meta["creationTimestamp"] = json!(rfc3339(self.now_ms));
        }
        v["apiVersion"] = json!(res.api_version());
        v["kind"] = json!(res.kind);
    }

    /// One object.
    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(res, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.describe(), name))
    }

    /// Objects of a resource, in one namespace or all, filtered.
    pub fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == res.group && *p == res.plural && ns.is_none_or(|want| n == want)
            })
            .map(|(_, v)| v)
            .filter(|v| labels.is_none_or(|q| label_query_matches(q, &labels_of(v))))
            .filter(|v| fields.is_none_or(|q| field_query_matches(q, v)))
            .cloned()
            .collect()
    }

    /// Every object, in key order (what an etcd snapshot file shows).
    pub fn all(&self) -> impl Iterator<Item = &Value> {
        self.objects.values()
    }

    /// The list's resourceVersion.
    pub fn resource_version(&self) -> String {
        self.rv.to_string()
    }

    /// The data plane's snapshot of these objects at this resourceVersion
    /// (every change of an object bumps it) and `settings`, built by
    /// `build` from the objects when the kept one is not for both.
    pub fn data_plane(
        &self,
        settings: crate::world::dataplane::cache::Settings,
        build: impl FnOnce(&crate::world::dataplane::cache::Settings) -> crate::world::dataplane::Net,
    ) -> std::sync::Arc<crate::world::dataplane::Net> {
        self.net.get_or_build(self.rv, settings, build)
    }

    /// Creates an object (409 if it exists).
    pub fn create(&mut self, res: &Resource, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                obj["metadata"]["generateName"]
                    .as_str()
                    .map(|g| format!("{g}{:05x}", self.uid + 1))
            })
            .ok_or_else(|| ApiError::new(422, "Invalid", "metadata.name: Required value"))?;
        if res.namespaced && self.get(&objects::NAMESPACES, "", ns).is_err() {
            return Err(ApiError::not_found("namespaces", ns));
        }
        let k = key(res, ns, &name);
        if self.objects.contains_key(&k) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.describe()),
            ));
        }
        self.after_write(res, ns, &name, &mut obj);
        self.stamp(&mut obj, res, ns, &name, true);
        self.objects.insert(k, obj.clone());
        self.on_created(res, ns, &name);
        Ok(obj)
    }

    /// Replaces an object (PUT).
    pub fn replace(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        // The API's optimistic concurrency (k8s API conventions,
        // "Concurrency Control and Consistency"): an update that names a
        // resourceVersion other than the object's is refused, so two
        // writers that read the same version cannot both win.
        if let Some(want) = obj["metadata"]["resourceVersion"].as_str()
            && !want.is_empty()
            && Some(want) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    res.describe()
                ),
            ));
        }
        obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
        obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
        if res.plural == "nodes" && obj.get("status").is_none() {
            obj["status"] = old["status"].clone();
        }
        self.after_write(res, ns, name, &mut obj);
        self.stamp(&mut obj, res, ns, name, false);
        self.objects.insert(key(res, ns, name), obj.clone());
        Ok(obj)
    }

    /// A JSON merge patch (also used for strategic merge patches, which
    /// behave the same for the fields the tool and kubectl send here).
    pub fn patch_merge(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let mut obj = self.get(res, ns, name)?;
        merge_patch(&mut obj, patch);
        self.after_write(res, ns, name, &mut obj);
        self.stamp(&mut obj, res, ns, name, false);
        self.objects.insert(key(res, ns, name), obj.clone());
        Ok(obj)
    }

    /// A strategic merge patch (see [`smp`]).
    pub fn patch_strategic(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let mut obj = self.get(res, ns, name)?;
        smp::strategic_merge(&mut obj, patch);
        self.after_write(res, ns, name, &mut obj);
        self.stamp(&mut obj, res, ns, name, false);
        self.objects.insert(key(res, ns, name), obj.clone());
        Ok(obj)
    }

    /// Server-side apply by `manager`: creates the object if missing;
    /// labels this manager applied before and omits now are removed (unless
    /// another manager owns them too); other fields merge, lists replaced.
    /// Without `force`, a label another manager owns with another value is
    /// a conflict (409).
    pub fn apply(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        manager: &str,
        force: bool,
        applied: &Value,
    ) -> Result<Value, ApiError> {
        let k = key(res, ns, name);
        let new_labels: BTreeSet<String> = labels_of(applied).keys().cloned().collect();
        let existing = self.objects.get(&k).cloned();
        let mut obj = match &existing {
            Some(o) => o.clone(),
            None => {
                let mut o = applied.clone();
                if let Some(m) = o["metadata"].as_object_mut() {
                    m.remove("labels");
                }
                o
            }
        };
        let owners = self.label_owners.entry(k.clone()).or_default();
        if !force {
            let have = labels_of(&obj);
            let want = labels_of(applied);
            for (lk, lv) in &want {
                let owned_by_other = owners.iter().any(|(m, ks)| m != manager && ks.contains(lk));
                if owned_by_other && have.get(lk).is_some_and(|h| h != lv) {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Apply failed with 1 conflict: conflict with another manager: .metadata.labels.{lk}"
                        ),
                    ));
                }
            }
        }
        let previous = owners.get(manager).cloned().unwrap_or_default();
        let others: BTreeSet<String> = owners
            .iter()
            .filter(|(m, _)| m.as_str() != manager)
            .flat_map(|(_, ks)| ks.iter().cloned())
            .collect();
        if force {
            for ks in owners.values_mut() {
                ks.retain(|l| !new_labels.contains(l));
            }
        }
        owners.insert(manager.to_string(), new_labels.clone());
        let mut patch = applied.clone();
        if let Some(m) = patch["metadata"].as_object_mut() {
            let mut labels = m
                .remove("labels")
                .and_then(|l| l.as_object().cloned())
                .unwrap_or_default();
            for gone in previous.difference(&new_labels) {
                if !others.contains(gone) {
                    labels.insert(gone.clone(), Value::Null);
                }
            }
            if !labels.is_empty() {
                m.insert("labels".into(), Value::Object(labels));
            }
        }
        merge_patch(&mut obj, &patch);
        self.after_write(res, ns, name, &mut obj);
        self.stamp(&mut obj, res, ns, name, existing.is_none());
        self.objects.insert(k, obj.clone());
        if existing.is_none() {
            self.on_created(res, ns, name);
        }
        Ok(obj)
    }

    /// Deletes an object; a Node takes its pods with it (pod GC) and a
    /// namespace its objects.
    pub fn delete(&mut self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        let k = key(res, ns, name);
        let gone = self
            .objects
            .remove(&k)
            .ok_or_else(|| ApiError::not_found(&res.describe(), name))?;
        self.label_owners.remove(&k);
        self.rv += 1;
        if let Some(uid) = gone["metadata"]["uid"].as_str() {
            self.gone_uids.insert(uid.to_string());
            self.collect_dependents(uid);
        }
        match &*res.plural {
            "nodes" => {
                let pods = self.list(
                    &objects::PODS,
                    None,
                    None,
                    Some(&format!("spec.nodeName={name}")),
                );
                for p in pods {
                    let (pns, pname) = objects::ns_name(&p);
                    self.remove_pod(&pns, &pname);
                }
            }
            "pods" => self.queue_replacement(&gone),
            "namespaces" => {
                self.objects.retain(|(_, _, n, _), _| n != name);
            }
            _ => {}
        }
        Ok(gone)
    }

    fn remove_pod(&mut self, ns: &str, name: &str) {
        if let Some(p) = self.objects.remove(&key(&objects::PODS, ns, name)) {
            self.rv += 1;
            self.queue_replacement(&p);
        }
    }

    /// A controller (ReplicaSet, StatefulSet) replaces a pod it owns that
    /// went away; DaemonSet pods follow their node; bare pods are gone.
    fn queue_replacement(&mut self, pod: &Value) {
        let owner_ref = pod["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["controller"] == json!(true)));
        let owner = owner_ref.and_then(|r| r["kind"].as_str());
        let owner_uid = owner_ref
            .and_then(|r| r["uid"].as_str())
            .unwrap_or_default();
        if self.gone_uids.contains(owner_uid) || self.uid_exists(owner_uid) {
            return;
        }
        if matches!(owner, Some("ReplicaSet" | "StatefulSet" | "Job")) {
            let mut t = pod.clone();
            if let Some(m) = t["metadata"].as_object_mut() {
                for f in [
                    "uid",
                    "resourceVersion",
                    "creationTimestamp",
                    "deletionTimestamp",
                ] {
                    m.remove(f);
                }
            }
            if let Some(s) = t["spec"].as_object_mut() {
                s.remove("nodeName");
            }
            t["status"] = json!({"phase": "Pending"});
            self.recreate.push(Pending {
                template: t,
                due_ms: self.now_ms,
            });
        }
    }

    /// Fixes up what the API server or a controller would right after a
    /// write: cordon's taint, a new pod's status.
    fn after_write(&mut self, res: &Resource, _ns: &str, _name: &str, obj: &mut Value) {
        objects::set_defaults(res, obj);
        match &*res.plural {
            "nodes" => objects::sync_unschedulable_taint(obj),
            "services" => {
                let others: Vec<Value> = self
                    .list(res, None, None, None)
                    .into_iter()
                    .filter(|o| o["metadata"]["uid"] != obj["metadata"]["uid"])
                    .collect();
                crate::world::dataplane::services::allocate(obj, &others);
            }
            "pods" if obj["status"]["phase"].is_null() => {
                obj["status"] = json!({"phase": "Pending"});
                objects::default_pod_spec(obj);
            }
            _ => {}
        }
    }

    /// A pod made from a controller's template: named `<base>-<5 safe
    /// characters>` as `generateName` would, owned by `owner`.
    fn pod_from_template(
        &self,
        owner: &Value,
        base: &str,
        template: &Value,
        extra_labels: &[(&str, &str)],
    ) -> Value {
        let mut labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in extra_labels {
            labels.insert((*k).to_string(), json!(v));
        }
        // Five characters of [`SAFE`], spread over its 27^5 names.
        let mut x = (self.uid + 1).wrapping_mul(2_654_435_761) % 14_348_907;
        let n: String = (0..5)
            .map(|_| {
                let c = SAFE[(x % 27) as usize] as char;
                x /= 27;
                c
            })
            .collect();
        let mut meta = json!({"name": format!("{base}-{n}"), "generateName": format!("{base}-"),
                              "labels": labels, "ownerReferences": [owner_ref(owner)]});
        if let Some(a) = template["metadata"]["annotations"].as_object() {
            meta["annotations"] = json!(a);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"].clone()})
    }

    fn on_created(&mut self, res: &Resource, _ns: &str, name: &str) {
        if res.plural == "namespaces" {
            let sa = json!({"metadata": {"name": "default"}});
            let _ = self.create(&objects::SERVICEACCOUNTS, name, sa);
        }
    }

    /// An eviction: refused (429) when a PodDisruptionBudget allows no
    /// disruption now, 404 for a missing pod; otherwise the pod is deleted.
    pub fn evict(&mut self, ns: &str, name: &str) -> Result<(), ApiError> {
        let pod = self.get(&objects::PODS, ns, name)?;
        let labels = labels_of(&pod);
        let pdbs: Vec<Value> = self
            .list(&objects::PDBS, Some(ns), None, None)
            .into_iter()
            .filter(|b| selector_matches(&b["spec"]["selector"], &labels))
            .collect();
        if pdbs.len() > 1 {
            return Err(ApiError::new(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = pdbs.first() {
            let selected: Vec<Value> = self
                .list(&objects::PODS, Some(ns), None, None)
                .into_iter()
                .filter(|p| selector_matches(&pdb["spec"]["selector"], &labels_of(p)))
                .collect();
            let healthy = selected.iter().filter(|p| objects::pod_ready(p)).count() as i64;
            let total = selected.len() as i64;
            let resolve = |v: &Value| -> Option<i64> {
                match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<i64>().ok())
                        .map(|p| (p * total + 99) / 100),
                    _ => None,
                }
            };
            let allowed = if let Some(min) = resolve(&pdb["spec"]["minAvailable"]) {
                healthy > min
            } else if let Some(max) = resolve(&pdb["spec"]["maxUnavailable"]) {
                (total - healthy) < max
            } else {
                true
            };
            let evicting_unhealthy = !objects::pod_ready(&pod);
            if !allowed && !evicting_unhealthy {
                return Err(ApiError::new(
                    429,
                    "TooManyRequests",
                    format!(
                        "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {} needs {} healthy pods and has {healthy} currently",
                        pdb["metadata"]["name"].as_str().unwrap_or_default(),
                        pdb["spec"]["minAvailable"]
                    ),
                ));
            }
        }
        self.remove_pod(ns, name);
        Ok(())
    }

    /// Registers a Node as a starting kubelet does. An existing Node keeps
    /// its labels and taints (flags apply at registration only: facts
    /// "Joining") and only reports Ready again with its current version.
    #[allow(clippy::too_many_arguments)]
    pub fn register_node(
        &mut self,
        name: &str,
        server: bool,
        etcd: bool,
        labels: &[String],
        taints: &[String],
        version: &str,
        ip: Ipv4Addr,
        now_ms: u64,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        let k = key(&objects::NODES, "", name);
        let mut node = match self.objects.get(&k) {
            Some(existing) => existing.clone(),
            None => {
                // The node IPAM gives the next free slice: after a node
                // is deleted, its slice is free again (facts
                // `docs/facts/data-plane.md` "Addresses").
                let taken: BTreeSet<String> = self
                    .list(&objects::NODES, None, None, None)
                    .iter()
                    .filter_map(|n| n["spec"]["podCIDR"].as_str().map(str::to_string))
                    .collect();
                let index = crate::world::dataplane::cidr::free_node_slice(&taken);
                let n = objects::new_node(name, server, etcd, labels, taints, ip, index);
                self.uid += 1;
                n
            }
        };
        objects::set_node_status(&mut node, true, version, ip, now_ms);
        // Its kubelet takes its Lease at the next tick.
        self.leases_checked_ms = None;
        let created = !self.objects.contains_key(&k);
        self.stamp(&mut node, &objects::NODES, "", name, created);
        self.objects.insert(k, node);
        // DaemonSet pods follow nodes (svclb when traefik and servicelb run).
        if !self
            .disabled
            .iter()
            .any(|d| d == "servicelb" || d == "traefik")
        {
            let pod = objects::system_pod("svclb-traefik", "DaemonSet", Some(name), name);
            let _ = self.create(&objects::PODS, "kube-system", pod);
        }
    }

    /// The kubelet stopped posting status.
    pub fn node_not_ready(&mut self, name: &str, now_ms: u64) {
        let k = key(&objects::NODES, "", name);
        if let Some(mut n) = self.objects.get(&k).cloned() {
            objects::set_node_unknown(&mut n, now_ms);
            self.stamp(&mut n, &objects::NODES, "", name, false);
            self.objects.insert(k, n);
        }
    }

    /// The namespaces, service accounts and system pods of a new k3s
    /// cluster, minus the disabled components.
    pub fn seed_system(&mut self, disabled: &[String], now_ms: u64) {
        self.now_ms = now_ms;
        self.disabled = disabled.to_vec();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = self.create(&objects::NAMESPACES, "", json!({"metadata": {"name": ns}}));
        }
        // The API server keeps `default/kubernetes` (facts "`exedev-k8s
        // check`"): the first address of the service CIDR (the world's
        // allocator uses k3s's default CIDR, so 10.43.0.1), `https` 443 to
        // the servers' 6443; no selector, its endpoints are the data
        // plane's API servers.
        let api = crate::world::dataplane::API_SERVICE_IP.to_string();
        let _ = self.create(
            &objects::SERVICES,
            "default",
            json!({
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": api,
                    "clusterIPs": [api],
                    "ports": [{"name": "https", "protocol": "TCP", "port": 443,
                               "targetPort": crate::world::dataplane::API_PORT}],
                },
            }),
        );
        for (component, pod) in [
            ("coredns", "coredns"),
            ("local-storage", "local-path-provisioner"),
            ("metrics-server", "metrics-server"),
            ("traefik", "traefik"),
        ] {
            if !disabled.iter().any(|d| d == component) {
                let _ = self.create(
                    &objects::PODS,
                    "kube-system",
                    objects::system_pod(pod, "ReplicaSet", None, "6d4f9b5c7-x1"),
                );
            }
        }
    }

    /// Controllers, in the order one pass of a real cluster's would settle:
    /// recreate replaced pods, Deployments scale their ReplicaSets,
    /// ReplicaSets and DaemonSets create or delete pods, the scheduler
    /// binds pending pods and the kubelet runs them, then each controller
    /// posts its status; node Leases are renewed. A pass runs only when
    /// something changed since the last one (or a replacement or a pod's
    /// start is due).
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.renew_leases(now_ms);
        let due: Vec<Pending> = {
            let (due, later): (Vec<_>, Vec<_>) =
                self.recreate.drain(..).partition(|p| p.due_ms <= now_ms);
            self.recreate = later;
            due
        };
        let start_due = self.starting.values().any(|&at| at <= now_ms);
        if due.is_empty() && !start_due && self.rv == self.synced_rv {
            return;
        }
        let before = self.rv;
        for p in due {
            let mut t = p.template;
            let (ns, name) = objects::ns_name(&t);
            let base = name
                .rsplit_once('-')
                .map_or(name.as_str(), |(b, _)| b)
                .to_string();
            t["metadata"]["name"] = json!(format!("{base}-{:05x}", self.uid + 1));
            let _ = self.create(&objects::PODS, &ns, t);
        }
        self.evict_for_taints();
        self.sync_deployments();
        self.sync_replicasets();
        self.sync_daemonsets();
        self.schedule(now_ms);
        self.replicaset_statuses();
        self.deployment_statuses();
        self.daemonset_statuses();
        // A pass that changed something runs again: its controllers have
        // not yet seen each other's writes.
        if self.rv == before {
            self.synced_rv = self.rv;
        }
    }

    /// Pods bound from now on take `ms` to start (`Timings::pod_start_ms`).
    pub fn set_pod_start_ms(&mut self, ms: u64) {
        self.pod_start_ms = ms;
    }

    /// Stores a controller's write when it changes the object: a new
    /// resourceVersion only then (watchers see real changes only).
    fn put(&mut self, res: &Resource, mut obj: Value) {
        let (ns, name) = objects::ns_name(&obj);
        let k = key(res, &ns, &name);
        if self.objects.get(&k) == Some(&obj) {
            return;
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(k, obj);
    }

    /// Is there an object with this uid?
    fn uid_exists(&self, uid: &str) -> bool {
        !uid.is_empty() && self.objects.values().any(|o| o["metadata"]["uid"] == uid)
    }

    /// Applies a manifest document as k3s's deploy controller does (apply
    /// under its own field manager); returns what it created or changed.
    pub fn apply_manifest(&mut self, doc: &Value) -> Result<String, ApiError> {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        if kind.is_empty() || api_version.is_empty() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "object has no apiVersion or kind",
            ));
        }
        let res = objects::resource_for(api_version, kind);
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        if res.namespaced && self.get(&objects::NAMESPACES, "", &ns).is_err() {
            return Err(ApiError::not_found("namespaces", &ns));
        }
        self.apply(&res, &ns, &name, "deploy@k3s", true, doc)?;
        Ok(format!(
            "{kind} {}{name}",
            if res.namespaced {
                format!("{ns}/")
            } else {
                String::new()
            }
        ))
    }
}

#[cfg(test)]
mod tests;
