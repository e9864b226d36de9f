//! The shapes of the API objects the world makes (Nodes as k3s registers
//! them, system pods, statuses) and the resources it serves. Pure.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

/// A resource the API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// API group (`""` for the core group).
    pub group: Cow<'static, str>,
    pub version: Cow<'static, str>,
    pub plural: Cow<'static, str>,
    pub kind: Cow<'static, str>,
    pub namespaced: bool,
}

impl Resource {
    const fn new(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        kind: &'static str,
        namespaced: bool,
    ) -> Self {
        Resource {
            group: Cow::Borrowed(group),
            version: Cow::Borrowed(version),
            plural: Cow::Borrowed(plural),
            kind: Cow::Borrowed(kind),
            namespaced,
        }
    }

    /// `v1` or `group/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How errors name it: `pods`, `poddisruptionbudgets.policy`.
    pub fn describe(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub const NAMESPACES: Resource = Resource::new("", "v1", "namespaces", "Namespace", false);
pub const NODES: Resource = Resource::new("", "v1", "nodes", "Node", false);
pub const PODS: Resource = Resource::new("", "v1", "pods", "Pod", true);
pub const SERVICEACCOUNTS: Resource =
    Resource::new("", "v1", "serviceaccounts", "ServiceAccount", true);
pub const PDBS: Resource = Resource::new(
    "policy",
    "v1",
    "poddisruptionbudgets",
    "PodDisruptionBudget",
    true,
);
/// `coordination.k8s.io/v1` Leases: what controllers (and apply's one
/// writer per fleet) elect a holder with. Served with the API's optimistic
/// concurrency: a create of an existing one and an update at a stale
/// `resourceVersion` are each a 409 (`store::Api::replace`).
pub const LEASES: Resource = Resource::new("coordination.k8s.io", "v1", "leases", "Lease", true);
pub const DEPLOYMENTS: Resource = Resource::new("apps", "v1", "deployments", "Deployment", true);
pub const REPLICASETS: Resource = Resource::new("apps", "v1", "replicasets", "ReplicaSet", true);
pub const DAEMONSETS: Resource = Resource::new("apps", "v1", "daemonsets", "DaemonSet", true);
/// Core `v1` Events: served (empty unless written) because `kubectl
/// describe` lists a pod's or node's events.
pub const EVENTS: Resource = Resource::new("", "v1", "events", "Event", true);
pub const SERVICES: Resource = Resource::new("", "v1", "services", "Service", true);
/// Core `v1` Secrets: k3s keeps each node's password hash in one
/// (`world::k3s::node_password`).
pub const SECRETS: Resource = Resource::new("", "v1", "secrets", "Secret", true);

/// Every resource with a fixed entry; others found in manifests are served
/// under `<lowercase kind>s`.
pub const RESOURCES: &[Resource] = &[
    NAMESPACES,
    NODES,
    PODS,
    SERVICEACCOUNTS,
    PDBS,
    LEASES,
    DEPLOYMENTS,
    REPLICASETS,
    DAEMONSETS,
    EVENTS,
    Resource::new("", "v1", "configmaps", "ConfigMap", true),
    SECRETS,
    SERVICES,
    Resource::new("", "v1", "endpoints", "Endpoints", true),
    Resource::new("apps", "v1", "statefulsets", "StatefulSet", true),
    Resource::new(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    Resource::new(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    Resource::new("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    Resource::new(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    Resource::new(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

/// Kinds that are cluster-scoped although the table does not list them.
const CLUSTER_SCOPED_KINDS: &[&str] = &[
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
];

/// `v1` or `group/v1`.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The resource of a manifest's `apiVersion` and `kind`.
pub fn resource_for(api_version: &str, kind: &str) -> Resource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if let Some(r) = RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
    {
        return r.clone();
    }
    Resource {
        group: Cow::Owned(group.to_string()),
        version: Cow::Owned(version.to_string()),
        plural: Cow::Owned(format!("{}s", kind.to_ascii_lowercase())),
        kind: Cow::Owned(kind.to_string()),
        namespaced: !CLUSTER_SCOPED_KINDS.contains(&kind),
    }
}

/// The resource an API path names.
pub fn resource_by_path(group: &str, plural: &str) -> Option<Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .cloned()
}

/// `(namespace, name)` of an object.
pub fn ns_name(v: &Value) -> (String, String) {
    (
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Milliseconds since the epoch as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as [`rfc3339`]
/// writes it (`2024-01-02T03:04:05Z`).
pub fn parse_rfc3339(t: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000).ok()
}

/// kubectl's AGE column: `45s`, `12m`, `5h`, `3d`.
pub fn age(obj: &Value, now_ms: u64) -> String {
    let Some(created) = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_rfc3339)
    else {
        return "<unknown>".to_string();
    };
    let s = now_ms.saturating_sub(created) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn taint_json(t: &str) -> Option<Value> {
    let (kv, effect) = t.rsplit_once(':')?;
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    let mut taint = json!({"key": k, "effect": effect});
    if !v.is_empty() {
        taint["value"] = json!(v);
    }
    Some(taint)
}

/// A Node as a k3s kubelet registers it: k3s's own labels (hostname, OS,
/// architecture, instance type; control-plane, master and etcd roles on
/// servers, which k3s sets itself), then the `node-label`s and
/// `node-taint`s it was started with.
pub fn new_node(
    name: &str,
    server: bool,
    etcd: bool,
    labels: &[String],
    taints: &[String],
    ip: Ipv4Addr,
    index: usize,
) -> Value {
    let mut l = serde_json::Map::new();
    for (k, v) in [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/instance-type", "k3s"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/hostname", name),
        ("node.kubernetes.io/instance-type", "k3s"),
    ] {
        l.insert(k.into(), json!(v));
    }
    if server {
        l.insert(
            "node-role.kubernetes.io/control-plane".into(),
            json!("true"),
        );
        l.insert("node-role.kubernetes.io/master".into(), json!("true"));
        if etcd {
            l.insert("node-role.kubernetes.io/etcd".into(), json!("true"));
        }
    }
    for kv in labels {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        l.insert(k.into(), json!(v));
    }
    let taints: Vec<Value> = taints.iter().filter_map(|t| taint_json(t)).collect();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": l,
                     "annotations": {"k3s.io/internal-ip": ip.to_string(),
                                     "flannel.alpha.coreos.com/public-ip": ip.to_string()}},
        "spec": {"podCIDR": format!("10.42.{index}.0/24"), "podCIDRs": [format!("10.42.{index}.0/24")],
                 "providerID": format!("k3s://{name}"), "taints": taints},
    })
}

fn node_info(version: &str) -> Value {
    json!({"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "containerd://1.7.23-k3s2",
           "kernelVersion": "6.1.0-exedev", "kubeProxyVersion": version, "kubeletVersion": version,
           "machineID": "", "operatingSystem": "linux", "osImage": "Ubuntu 24.04.1 LTS", "systemUUID": ""})
}

/// The kubelet posts Ready (or not) with its version and address.
pub fn set_node_status(node: &mut Value, ready: bool, version: &str, ip: Ipv4Addr, now_ms: u64) {
    let t = rfc3339(now_ms);
    let name = node["metadata"]["name"].clone();
    node["status"] = json!({
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                        "reason": if ready {"KubeletReady"} else {"KubeletNotReady"},
                        "message": if ready {"kubelet is posting ready status"} else {"kubelet is starting"},
                        "lastHeartbeatTime": t, "lastTransitionTime": t}],
        "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}],
        "nodeInfo": node_info(version),
        "capacity": {"cpu": NODE_CPUS.to_string(), "memory": format!("{}Ki", NODE_MEMORY_BYTES / 1024),
                     "pods": MAX_PODS.to_string(), "ephemeral-storage": "20971520Ki"},
        "allocatable": {"cpu": NODE_CPUS.to_string(),
                        "memory": format!("{}Ki", (NODE_MEMORY_BYTES - EVICTION_HARD_MEMORY) / 1024),
                        "pods": MAX_PODS.to_string(), "ephemeral-storage": "20971520Ki"},
    });
}

/// CPUs of every node. The world's model does not carry a VM's size, so
/// every node has exe.dev's default VM (`allocated_cpus: 2`,
/// `memory_capacity_bytes: 4294967296` in exedev-api.md's `ls --json`).
pub const NODE_CPUS: u64 = 2;
/// Memory of every node (see [`NODE_CPUS`]).
pub const NODE_MEMORY_BYTES: u64 = 4 << 30;
/// The kubelet's default `maxPods` (110) and hard eviction threshold
/// `memory.available<100Mi`, which is what allocatable memory subtracts
/// when nothing is reserved (kubernetes/kubernetes
/// pkg/kubelet/apis/config/v1beta1/defaults.go, `MaxPods` and
/// `DefaultEvictionHard`; node allocatable = capacity - reserved -
/// hard eviction, kubernetes.io/docs/tasks/administer-cluster/reserve-compute-resources/).
/// k3s passes neither `--kube-reserved` nor `--system-reserved` by default.
pub const MAX_PODS: u64 = 110;
const EVICTION_HARD_MEMORY: u64 = 100 << 20;

/// A quantity (`500m`, `2`, `128Mi`, `1G`, `1.5Gi`) in thousandths of its
/// unit: millicores for CPU, milli-bytes for memory (so both fit one
/// parser). `None` for what Kubernetes would refuse.
pub fn quantity_milli(q: &Value) -> Option<u128> {
    let s = match q {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: u128 = match suffix {
        "" => 1000,
        "m" => 1,
        "k" => 1000 * 1000,
        "M" => 1000 * 1000u128.pow(2),
        "G" => 1000 * 1000u128.pow(3),
        "T" => 1000 * 1000u128.pow(4),
        "Ki" => 1000 << 10,
        "Mi" => 1000 << 20,
        "Gi" => 1000 << 30,
        "Ti" => 1000 << 40,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut v = int.checked_mul(mult)?;
    let mut scale = mult;
    for d in frac.chars().take(12) {
        scale /= 10;
        v += u128::from(d.to_digit(10)?) * scale;
    }
    Some(v)
}

/// The CPU (millicores) and memory (milli-bytes) a pod requests: the sum
/// over its containers (init containers are not modelled).
pub fn pod_requests(pod: &Value) -> (u128, u128) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let r = &c["resources"]["requests"];
        cpu += quantity_milli(&r["cpu"]).unwrap_or(0);
        mem += quantity_milli(&r["memory"]).unwrap_or(0);
    }
    (cpu, mem)
}

/// A node's allocatable CPU (millicores) and memory (milli-bytes).
pub fn node_allocatable(node: &Value) -> (u128, u128) {
    let a = &node["status"]["allocatable"];
    (
        quantity_milli(&a["cpu"]).unwrap_or(0),
        quantity_milli(&a["memory"]).unwrap_or(0),
    )
}

/// The kubelet stopped posting status (its k3s stopped or the VM is gone).
/// The node lifecycle controller says so at once here; Kubernetes waits
/// its grace period first (`--node-monitor-grace-period`: 40 s by default,
/// 50 s in recent releases, kubernetes/kubernetes#127352): compressed, as
/// the world's other timings. `lastTransitionTime` is when it turned, which
/// a plan reads to judge a server lost (`plan::LOST_AFTER_SECS`).
pub fn set_node_unknown(node: &mut Value, now_ms: u64) {
    let t = rfc3339(now_ms);
    if let Some(conds) = node["status"]["conditions"].as_array_mut() {
        for c in conds.iter_mut().filter(|c| c["type"] == "Ready") {
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
            c["message"] = json!("Kubelet stopped posting node status.");
            c["lastTransitionTime"] = json!(t);
        }
    }
}

/// The `node.kubernetes.io/unschedulable:NoSchedule` taint follows
/// `spec.unschedulable` (the node lifecycle controller's job).
pub fn sync_unschedulable_taint(node: &mut Value) {
    const KEY: &str = "node.kubernetes.io/unschedulable";
    let cordoned = node["spec"]["unschedulable"].as_bool().unwrap_or(false);
    let mut taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = taints.iter().any(|t| t["key"] == KEY);
    if cordoned && !has {
        taints.push(json!({"key": KEY, "effect": "NoSchedule"}));
    } else if !cordoned && has {
        taints.retain(|t| t["key"] != KEY);
    } else {
        return;
    }
    node["spec"]["taints"] = json!(taints);
}

/// A kube-system pod: owned by a ReplicaSet (a Deployment's) or a
/// DaemonSet (bound to its node).
pub fn system_pod(app: &str, owner_kind: &str, node: Option<&str>, suffix: &str) -> Value {
    let mut pod = json!({
        "metadata": {"name": format!("{app}-{suffix}"), "labels": {"k8s-app": app},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": app,
                                          "uid": "00000000-0000-4000-8000-0000000000aa", "controller": true}]},
        "spec": {"containers": [{"name": app, "image": format!("rancher/mirrored-{app}")}],
                 "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
                                 {"key": "CriticalAddonsOnly", "operator": "Exists"}]},
        "status": {"phase": "Pending"},
    });
    if let Some(n) = node {
        pod["spec"]["nodeName"] = json!(n);
        pod["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    }
    pod
}

/// `Running` with the conditions and container statuses a kubelet posts
/// once every container started (`PodScheduled`, `Initialized`,
/// `ContainersReady`, `Ready`; one running `containerStatuses` entry per
/// container, `restartCount` 0), on the node at `host_ip`, with the pod's
/// address `pod_ip` (see `store::network`).
pub fn running_status(pod: &Value, host_ip: &str, pod_ip: Option<&str>, now_ms: u64) -> Value {
    let t = rfc3339(now_ms);
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let image = c["image"].as_str().unwrap_or_default();
            json!({"name": c["name"], "image": image, "imageID": "", "ready": true, "started": true,
                   "restartCount": 0, "containerID": container_id(pod, c),
                   "state": {"running": {"startedAt": t}}, "lastState": {}})
        })
        .collect();
    let mut st = json!({"phase": "Running", "startTime": t, "hostIP": host_ip, "qosClass": qos_class(pod),
           "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
           "containerStatuses": statuses});
    if let Some(ip) = pod_ip {
        st["podIP"] = json!(ip);
        st["podIPs"] = json!([{"ip": ip}]);
    }
    st["hostIPs"] = json!([{"ip": host_ip}]);
    st
}

/// `Pending` as the kubelet posts it while the pod's sandbox exists but
/// its containers are still being created (image pull, container start):
/// `PodScheduled` and `Initialized` True (no init containers are
/// modelled), `ContainersReady` and `Ready` False with reason
/// `ContainersNotReady` and the message the kubelet words
/// (pkg/kubelet/status/generate.go, `GenerateContainersReadyCondition`),
/// each container `waiting` with reason `ContainerCreating`, not ready and
/// not started; `hostIP`, `startTime` and the sandbox's `podIP` are set.
/// The `PodReadyToStartContainers` condition of recent releases is not
/// modelled.
pub fn creating_status(pod: &Value, host_ip: &str, pod_ip: Option<&str>, now_ms: u64) -> Value {
    let t = rfc3339(now_ms);
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let message = format!("containers with unready status: [{}]", names.join(" "));
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    let unready = |ty: &str| {
        json!({"type": ty, "status": "False", "reason": "ContainersNotReady", "message": message,
               "lastProbeTime": null, "lastTransitionTime": t})
    };
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let image = c["image"].as_str().unwrap_or_default();
            json!({"name": c["name"], "image": image, "imageID": "", "ready": false, "started": false,
                   "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}})
        })
        .collect();
    let mut st = json!({"phase": "Pending", "startTime": t, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
           "qosClass": qos_class(pod),
           "conditions": [cond("Initialized"), unready("Ready"), unready("ContainersReady"), cond("PodScheduled")],
           "containerStatuses": statuses});
    if let Some(ip) = pod_ip {
        st["podIP"] = json!(ip);
        st["podIPs"] = json!([{"ip": ip}]);
    }
    st
}

/// Is the pod's start under way: bound, its containers being created
/// ([`creating_status`])?
pub fn pod_creating(pod: &Value) -> bool {
    pod["status"]["phase"] == "Pending"
        && pod["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| !c["state"]["waiting"].is_null()))
}

/// A containerd container ID: 64 hex digits, here derived from the pod's
/// uid and the container's name (stable for one pod).
fn container_id(pod: &Value, c: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let seed = format!("{}/{}", pod["metadata"]["uid"], c["name"]);
    let mut out = String::from("containerd://");
    for round in 0..4u8 {
        for b in seed.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// Kubernetes' QoS class: BestEffort without requests or limits,
/// Guaranteed when every container's requests equal its limits for CPU and
/// memory, Burstable otherwise (pkg/apis/core/helper/qos).
fn qos_class(pod: &Value) -> &'static str {
    let cs: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let none = cs.iter().all(|c| {
        c["resources"]["requests"]
            .as_object()
            .is_none_or(|m| m.is_empty())
            && c["resources"]["limits"]
                .as_object()
                .is_none_or(|m| m.is_empty())
    });
    if none {
        return "BestEffort";
    }
    let guaranteed = cs.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let l = &c["resources"]["limits"][*r];
            let q = &c["resources"]["requests"][*r];
            !l.is_null() && (q.is_null() || quantity_milli(q) == quantity_milli(l))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The defaults the API server fills in at every write of the kinds the
/// world's controllers run (k8s.io/kubernetes pkg/apis/apps/v1/defaults.go
/// and pkg/apis/core/v1/defaults.go): a Deployment's `replicas: 1`,
/// `RollingUpdate` with 25%/25%, `revisionHistoryLimit: 10`,
/// `progressDeadlineSeconds: 600`; a ReplicaSet's `replicas: 1`; a
/// DaemonSet's `RollingUpdate` with `maxUnavailable: 1`, `maxSurge: 0`;
/// and in every pod spec (templates too) the pod and container defaults
/// of [`pod_spec_defaults`]. `kubectl rollout status` refuses a DaemonSet
/// without `updateStrategy.type: RollingUpdate`, so these matter.
pub fn set_defaults(res: &Resource, obj: &mut Value) {
    fn default(v: &mut Value, k: &str, d: Value) {
        if v[k].is_null() {
            v[k] = d;
        }
    }
    let spec = &mut obj["spec"];
    match (&*res.group, &*res.plural) {
        ("apps", "deployments") => {
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            default(spec, "strategy", json!({}));
            default(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                default(&mut spec["strategy"], "rollingUpdate", json!({}));
                default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
                default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            pod_spec_defaults(&mut spec["template"]["spec"]);
        }
        ("apps", "replicasets") => {
            default(spec, "replicas", json!(1));
            pod_spec_defaults(&mut spec["template"]["spec"]);
        }
        ("apps", "daemonsets") => {
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "updateStrategy", json!({}));
            default(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                default(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
                default(
                    &mut spec["updateStrategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!(1),
                );
                default(
                    &mut spec["updateStrategy"]["rollingUpdate"],
                    "maxSurge",
                    json!(0),
                );
            }
            pod_spec_defaults(&mut spec["template"]["spec"]);
        }
        ("", "pods") => pod_spec_defaults(spec),
        _ => {}
    }
}

/// Pod spec defaults (pkg/apis/core/v1/defaults.go `SetDefaults_PodSpec`,
/// `SetDefaults_Container`, `SetDefaults_ContainerPort`): `restartPolicy:
/// Always`, `dnsPolicy: ClusterFirst`, `schedulerName:
/// default-scheduler`, `terminationGracePeriodSeconds: 30`; per
/// container `imagePullPolicy` (`Always` for `:latest` or no tag,
/// `IfNotPresent` otherwise), `terminationMessagePath`/`Policy`; a port's
/// `protocol: TCP`.
fn pod_spec_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        let image = c["image"].as_str().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or_default();
        let tag = last
            .split_once('@')
            .map_or(last, |(n, _)| n)
            .split_once(':')
            .map(|(_, t)| t);
        let pull = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
            "IfNotPresent"
        } else {
            "Always"
        };
        for (k, v) in [
            ("imagePullPolicy", json!(pull)),
            ("terminationMessagePath", json!("/dev/termination-log")),
            ("terminationMessagePolicy", json!("File")),
            ("resources", json!({})),
        ] {
            if c[k].is_null() {
                c[k] = v;
            }
        }
        for p in c["ports"].as_array_mut().into_iter().flatten() {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
        }
    }
}

/// What admission fills into a new pod's spec: the `default` service
/// account (ServiceAccount admission) and
/// the DefaultTolerationSeconds admission plugin's NoExecute tolerations
/// for `not-ready` and `unreachable` (300 s), unless the pod has its own.
pub fn default_pod_spec(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    for (k, v) in [
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let has = tolerations.iter().any(|t| {
            (t["key"] == key || t["key"].is_null())
                && (t["effect"] == "NoExecute" || t["effect"].is_null())
        });
        if !has {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = json!(tolerations);
}

/// The pod's `Ready` condition went False: its node stopped (the kubelet
/// is not there to run it). Kubernetes marks pods of an unreachable node
/// NotReady through the node lifecycle controller.
pub fn set_pod_not_ready(pod: &mut Value, now_ms: u64) {
    let t = rfc3339(now_ms);
    if let Some(cs) = pod["status"]["conditions"].as_array_mut() {
        for c in cs
            .iter_mut()
            .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
        {
            c["status"] = json!("False");
            c["lastTransitionTime"] = json!(t);
        }
    }
}

/// A pod counts as healthy for a PodDisruptionBudget.
pub fn pod_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The node's `InternalIP` address (empty when it has none).
pub fn node_internal_ip(n: &Value) -> String {
    n["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The node's Ready condition is True.
pub fn node_ready(n: &Value) -> bool {
    n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Does `labels` satisfy a `matchLabels`/`matchExpressions` selector?
pub fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> bool {
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object)
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let k = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let have = labels.get(k).and_then(Value::as_str);
        let ok = match e["operator"].as_str().unwrap_or_default() {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Required node affinity: one of `nodeSelectorTerms` must match; a term
/// matches when all its `matchExpressions` (labels) and `matchFields`
/// (only `metadata.name`, the one field Kubernetes allows) do.
fn affinity_matches(node: &Value, pod: &Value) -> bool {
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    let Some(terms) = terms.as_array() else {
        return true;
    };
    let labels = node["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut fields = serde_json::Map::new();
    fields.insert("metadata.name".into(), node["metadata"]["name"].clone());
    terms.iter().any(|t| {
        let exprs =
            |k: &str| json!({"matchExpressions": t[k].as_array().cloned().unwrap_or_default()});
        selector_matches(&exprs("matchExpressions"), &labels)
            && selector_matches(&exprs("matchFields"), &fields)
    })
}

/// Does the pod tolerate the taint (`operator: Exists` or equal value;
/// an empty key with Exists tolerates everything; no effect: every effect)?
pub fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok = t["key"].is_null() || t["key"] == taint["key"];
            let effect_ok = t["effect"].is_null() || t["effect"] == taint["effect"];
            let value_ok = t["operator"] == "Exists" || t["value"] == taint["value"];
            key_ok && effect_ok && value_ok
        })
    })
}

/// The cordon taint's key: a pod that tolerates it (DaemonSet pods do) may
/// still go to a cordoned node (the scheduler's NodeUnschedulable plugin,
/// pkg/scheduler/framework/plugins/nodeunschedulable).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Can the scheduler put this pod on this node: Ready, not cordoned
/// (unless the pod tolerates the cordon taint), every NoSchedule/NoExecute
/// taint tolerated (a toleration with `operator: Exists` and no key
/// tolerates every taint), `nodeSelector` and required node affinity
/// (`matchExpressions` on labels, `matchFields` on `metadata.name`)
/// matched. Resources are checked by the store's scheduler, which knows
/// the node's pods.
pub fn schedulable_for(node: &Value, pod: &Value) -> bool {
    if !node_ready(node) {
        return false;
    }
    let cordon = json!({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"});
    if node["spec"]["unschedulable"] == json!(true) && !tolerates(pod, &cordon) {
        return false;
    }
    placement_matches(node, pod) && !has_untolerated(node, pod, &["NoSchedule", "NoExecute"])
}

/// The pod's `nodeSelector` and required node affinity match the node.
pub fn placement_matches(node: &Value, pod: &Value) -> bool {
    affinity_matches(node, pod)
        && pod["spec"]["nodeSelector"]
            .as_object()
            .is_none_or(|sel| sel.iter().all(|(k, v)| node["metadata"]["labels"][k] == *v))
}

/// Has the node a taint with one of `effects` that the pod does not
/// tolerate?
pub fn has_untolerated(node: &Value, pod: &Value, effects: &[&str]) -> bool {
    node["spec"]["taints"].as_array().is_some_and(|ts| {
        ts.iter()
            .filter(|t| effects.iter().any(|e| t["effect"] == *e))
            .any(|t| !tolerates(pod, t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        for ms in [0, 951_782_400_000, 1_700_000_000_000, 4_102_444_799_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        let o = json!({"metadata": {"creationTimestamp": rfc3339(1_000_000_000)}});
        assert_eq!(age(&o, 1_000_030_000), "30s");
        assert_eq!(age(&o, 1_000_000_000 + 3 * 86_400_000), "3d");
        assert_eq!(age(&json!({}), 0), "<unknown>");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn nodes_deserialize_as_kubernetes_nodes() {
        let mut n = new_node(
            "c-cp1",
            true,
            true,
            &["tier=web".into()],
            &["dedicated=web:NoSchedule".into()],
            Ipv4Addr::new(100, 64, 0, 1),
            0,
        );
        set_node_status(
            &mut n,
            true,
            "v1.31.4+k3s1",
            Ipv4Addr::new(100, 64, 0, 1),
            0,
        );
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(n.clone()).unwrap();
        let view = crate::edges::cluster::NodeView::from(&node);
        assert!(view.ready);
        assert_eq!(view.labels["tier"], "web");
        assert_eq!(view.labels["node-role.kubernetes.io/etcd"], "true");
        assert_eq!(view.taints, ["dedicated=web:NoSchedule"]);
        assert_eq!(view.kubelet_version.as_deref(), Some("v1.31.4+k3s1"));
        n["spec"]["unschedulable"] = json!(true);
        sync_unschedulable_taint(&mut n);
        sync_unschedulable_taint(&mut n);
        assert_eq!(n["spec"]["taints"].as_array().unwrap().len(), 2);
        set_node_unknown(&mut n, 5);
        assert!(!node_ready(&n));
    }

    #[test]
    fn scheduling_respects_taints_and_cordon() {
        let mut n = new_node(
            "a",
            false,
            false,
            &[],
            &["gpu=x:NoSchedule".into()],
            Ipv4Addr::LOCALHOST,
            0,
        );
        set_node_status(&mut n, true, "v1", Ipv4Addr::LOCALHOST, 0);
        let plain = json!({"spec": {"containers": []}});
        let tolerant = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}});
        assert!(!schedulable_for(&n, &plain));
        assert!(schedulable_for(&n, &tolerant));
        n["spec"]["unschedulable"] = json!(true);
        assert!(!schedulable_for(&n, &tolerant));
        let r = resource_for("example.com/v1", "Widget");
        assert_eq!((&*r.plural, r.namespaced), ("widgets", true));
        assert_eq!(resource_for("v1", "ConfigMap").plural, "configmaps");
    }
}
