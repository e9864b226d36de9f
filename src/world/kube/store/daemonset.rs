//! The DaemonSet controller (kubernetes/kubernetes pkg/controller/daemon):
//! one pod per eligible node, pinned to it by required node affinity on
//! `metadata.name` (as the controller has done since Kubernetes 1.12, so
//! the scheduler binds it), carrying the tolerations the controller adds to
//! every daemon pod (`util.AddOrUpdateDaemonPodTolerations`: not-ready and
//! unreachable NoExecute; disk-, memory-, pid-pressure and unschedulable
//! NoSchedule), so a cordoned node keeps and gets its daemon pod. A node is
//! eligible when the pod's `nodeSelector`, affinity and tolerations allow
//! it (its Ready state does not matter for eligibility); a daemon pod
//! already running stays through a new NoSchedule taint (pkg/controller/daemon
//! `predicates`: only an untolerated NoExecute taint or a selector that no
//! longer matches ends it; excerpt read, no commit). A changed
//! template rolls node by node within `maxUnavailable` (default 1): an
//! old-template pod is deleted and the new one created. Status:
//! `desiredNumberScheduled`, `currentNumberScheduled`, `numberMisscheduled`,
//! `numberReady`, `numberAvailable`, `numberUnavailable`,
//! `updatedNumberScheduled`, `observedGeneration` (what `kubectl rollout
//! status ds` reads).

use serde_json::{Value, json};

use super::{ApiStore, int_or_percent, template_hash};
use crate::world::kube::objects;

/// The label a daemon pod carries for its template's revision.
const REVISION_HASH: &str = "controller-revision-hash";

/// The daemon pod's template with the controller's tolerations added.
fn daemon_template(ds: &Value) -> Value {
    let mut t = ds["spec"]["template"].clone();
    let mut tolerations = t["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        (objects::UNSCHEDULABLE_TAINT, "NoSchedule"),
    ] {
        if !tolerations
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
        {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    t["spec"]["tolerations"] = json!(tolerations);
    t
}

/// Would the daemon pod run on this node (Ready or not)?
fn eligible(node: &Value, pod: &Value) -> bool {
    let mut as_ready = node.clone();
    as_ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    objects::schedulable_for(&as_ready, pod)
}

impl ApiStore {
    pub(super) fn sync_daemonsets(&mut self) {
        let nodes = self.list(&objects::NODES, None, None, None);
        for ds in self.list(&objects::DAEMONSETS, None, None, None) {
            let (ns, name) = objects::ns_name(&ds);
            let uid = ds["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let template = daemon_template(&ds);
            let hash = template_hash(&ds["spec"]["template"]);
            let pods = self.owned_pods(&ns, &uid);
            let eligible_nodes: Vec<bool> = nodes.iter().map(|n| eligible(n, &template)).collect();
            let desired = eligible_nodes.iter().filter(|e| **e).count() as u64;
            let max_unavailable = int_or_percent(
                &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
                desired,
                "1",
                true,
            )
            .max(1);
            let mut unavailable = pods.iter().filter(|p| !objects::pod_ready(p)).count() as u64;
            let rolling = ds["spec"]["updateStrategy"]["type"] != "OnDelete";
            for (node, is_eligible) in nodes.iter().zip(eligible_nodes) {
                let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
                let on_node: Vec<&Value> = pods.iter().filter(|p| p["spec"]["nodeName"] == node_name
                    || p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                        ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0] == node_name).collect();
                // A node the pod should no longer go to keeps a running
                // daemon pod unless its selector stopped matching or an
                // untolerated NoExecute taint came (the controller's
                // `shouldContinueRunning`): a new NoSchedule taint leaves
                // it there, counted as misscheduled.
                let keep = objects::placement_matches(node, &template)
                    && !objects::has_untolerated(node, &template, &["NoExecute"]);
                if !is_eligible && keep {
                    continue;
                }
                if !is_eligible {
                    for p in on_node {
                        let (pns, pname) = objects::ns_name(p);
                        let _ = self.delete(&objects::PODS, &pns, &pname);
                    }
                    continue;
                }
                if on_node.is_empty() {
                    let mut t = template.clone();
                    t["spec"]["affinity"]["nodeAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}});
                    let pod = self.pod_from_template(&ds, &name, &t, &[(REVISION_HASH, &hash)]);
                    let _ = self.create(&objects::PODS, &ns, pod);
                    continue;
                }
                let old = on_node
                    .iter()
                    .find(|p| p["metadata"]["labels"][REVISION_HASH] != hash.as_str());
                if let Some(p) = old
                    && rolling
                    && (unavailable < max_unavailable || !objects::pod_ready(p))
                {
                    if objects::pod_ready(p) {
                        unavailable += 1;
                    }
                    let (pns, pname) = objects::ns_name(p);
                    let _ = self.delete(&objects::PODS, &pns, &pname);
                }
            }
        }
    }

    pub(super) fn daemonset_statuses(&mut self) {
        let nodes = self.list(&objects::NODES, None, None, None);
        for mut ds in self.list(&objects::DAEMONSETS, None, None, None) {
            let (ns, _) = objects::ns_name(&ds);
            let uid = ds["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let template = daemon_template(&ds);
            let hash = template_hash(&ds["spec"]["template"]);
            let pods = self.owned_pods(&ns, &uid);
            let mut status = json!({"desiredNumberScheduled": 0, "currentNumberScheduled": 0,
                "numberMisscheduled": 0, "numberReady": 0, "numberAvailable": 0,
                "updatedNumberScheduled": 0, "observedGeneration": ds["metadata"]["generation"]});
            let bump = |status: &mut Value, f: &str| {
                status[f] = json!(status[f].as_u64().unwrap_or(0) + 1);
            };
            for node in &nodes {
                let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
                let want = eligible(node, &template);
                let here: Vec<&Value> = pods
                    .iter()
                    .filter(|p| p["spec"]["nodeName"] == node_name)
                    .collect();
                if want {
                    bump(&mut status, "desiredNumberScheduled");
                }
                if here.is_empty() {
                    continue;
                }
                bump(
                    &mut status,
                    if want {
                        "currentNumberScheduled"
                    } else {
                        "numberMisscheduled"
                    },
                );
                if want
                    && here
                        .iter()
                        .any(|p| p["metadata"]["labels"][REVISION_HASH] == hash.as_str())
                {
                    bump(&mut status, "updatedNumberScheduled");
                }
                if want && here.iter().any(|p| objects::pod_ready(p)) {
                    bump(&mut status, "numberReady");
                    bump(&mut status, "numberAvailable");
                }
            }
            let unavailable = status["desiredNumberScheduled"].as_u64().unwrap_or(0)
                - status["numberAvailable"]
                    .as_u64()
                    .unwrap_or(0)
                    .min(status["desiredNumberScheduled"].as_u64().unwrap_or(0));
            if unavailable > 0 {
                status["numberUnavailable"] = json!(unavailable);
            }
            ds["status"] = status;
            self.put(&objects::DAEMONSETS, ds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemonset_runs_on_every_eligible_node_cordoned_or_not() {
        let mut s = super::super::tests::cluster();
        s.patch_merge(
            &objects::NODES,
            "",
            "n2",
            &json!({"spec": {"unschedulable": true}}),
        )
        .unwrap();
        let ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        s.create(&objects::DAEMONSETS, "default", ds).unwrap();
        s.tick(20);
        s.tick(30);
        let pods = s.list(&objects::PODS, Some("default"), Some("app=agent"), None);
        let mut nodes: Vec<&str> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2"]);
        let ds = s.get(&objects::DAEMONSETS, "default", "agent").unwrap();
        assert_eq!(ds["status"]["desiredNumberScheduled"], 2);
        assert_eq!(ds["status"]["numberAvailable"], 2);
        assert_eq!(ds["status"]["updatedNumberScheduled"], 2);
        // A NoSchedule taint it does not tolerate leaves the running pod
        // (misscheduled); a NoExecute one takes it away.
        for (effect, t, left) in [("NoSchedule", 40, 2), ("NoExecute", 60, 1)] {
            let taint = json!({"spec": {"taints": [{"key": "gpu", "effect": effect}]}});
            s.patch_merge(&objects::NODES, "", "n1", &taint).unwrap();
            s.tick(t);
            s.tick(t + 10);
            let pods = s.list(&objects::PODS, Some("default"), Some("app=agent"), None);
            assert_eq!(pods.len(), left, "{effect}");
        }
        let ds = s.get(&objects::DAEMONSETS, "default", "agent").unwrap();
        assert_eq!(ds["status"]["desiredNumberScheduled"], 1);
        let pods = s.list(&objects::PODS, Some("default"), Some("app=agent"), None);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["spec"]["nodeName"], "n2");
        // A new template replaces the pod.
        s.patch_merge(&objects::DAEMONSETS, "default", "agent",
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:2"}]}}}})).unwrap();
        for t in 6..12 {
            s.tick(t * 10);
        }
        let pods = s.list(&objects::PODS, Some("default"), Some("app=agent"), None);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["spec"]["containers"][0]["image"], "x:2");
        let ds = s.get(&objects::DAEMONSETS, "default", "agent").unwrap();
        assert_eq!(ds["status"]["observedGeneration"], 2);
        assert_eq!(ds["status"]["updatedNumberScheduled"], 1);
    }

    /// Its status counts a pod only once started: scheduled on both nodes
    /// while their containers are created, ready on neither until
    /// `pod_start_ms` has passed (what `kubectl rollout status` waits on).
    #[test]
    fn a_daemonset_counts_its_pods_ready_only_once_started() {
        let mut s = super::super::tests::cluster();
        s.set_pod_start_ms(200);
        let ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        s.create(&objects::DAEMONSETS, "default", ds).unwrap();
        s.tick(20);
        s.tick(30);
        let st = |s: &ApiStore| {
            s.get(&objects::DAEMONSETS, "default", "agent").unwrap()["status"].clone()
        };
        assert_eq!(st(&s)["currentNumberScheduled"], 2);
        assert_eq!(st(&s)["numberReady"], 0);
        assert_eq!(st(&s)["numberAvailable"], 0);
        s.tick(240);
        assert_eq!(st(&s)["numberReady"], 2);
        assert_eq!(st(&s)["numberAvailable"], 2);
    }
}
