//! The scheduler and the kubelet's start of a pod: a pending pod goes to a
//! Ready node it fits (see [`objects::schedulable_for`]: cordon, taints,
//! `nodeSelector`, required node affinity) whose allocatable CPU, memory
//! and pod count still hold its requests, the least loaded first (the
//! default scheduler's `NodeResourcesFit` filter and a spreading score;
//! its other plugins are not modelled). A pod already bound (`nodeName`,
//! as DaemonSet pods of old and static pods) starts when its node is
//! Ready: its containers are created for `pod_start_ms`
//! ([`objects::creating_status`]), then it runs
//! ([`objects::running_status`]). A pod that ran before and whose node
//! came back runs again at once (its containers were not recreated).
//! Pods on a node that is not Ready lose their Ready condition.

use serde_json::Value;

use std::collections::BTreeMap;

use super::{ApiStore, key};
use crate::world::kube::objects;

/// What is bound to a node: CPU (millicores), memory (milli-bytes), pods.
#[derive(Default, Clone, Copy)]
struct Usage {
    cpu: u128,
    mem: u128,
    pods: usize,
}

impl Usage {
    fn add(&mut self, pod: &Value) {
        let (c, m) = objects::pod_requests(pod);
        self.cpu += c;
        self.mem += m;
        self.pods += 1;
    }

    /// Does the node still have room for the pod's requests (CPU, memory,
    /// pods) next to what is bound to it?
    fn fits(self, node: &Value, pod: &Value) -> bool {
        let (cpu_cap, mem_cap) = objects::node_allocatable(node);
        let pod_cap = node["status"]["allocatable"]["pods"]
            .as_str()
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(objects::MAX_PODS as usize);
        let (c, m) = objects::pod_requests(pod);
        self.pods < pod_cap && self.cpu + c <= cpu_cap && self.mem + m <= mem_cap
    }
}

impl ApiStore {
    /// CPU, memory and pod count bound to each node now.
    fn usage(&self) -> BTreeMap<String, Usage> {
        let mut u: BTreeMap<String, Usage> = BTreeMap::new();
        for ((_, r, _, _), p) in &self.objects {
            if r != "pods" {
                continue;
            }
            if let Some(n) = p["spec"]["nodeName"].as_str() {
                u.entry(n.to_string()).or_default().add(p);
            }
        }
        u
    }

    /// Binds pending pods and runs pods whose node is Ready.
    pub(super) fn schedule(&mut self, now_ms: u64) {
        let nodes = self.list(&objects::NODES, None, None, None);
        let ready: std::collections::BTreeSet<&str> = nodes
            .iter()
            .filter(|n| objects::node_ready(n))
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        let waiting: Vec<(String, String)> = self
            .objects
            .iter()
            .filter(|((_, r, _, _), p)| r == "pods" && p["metadata"]["deletionTimestamp"].is_null())
            .map(|(_, p)| p)
            .filter(|p| {
                let node_ready = p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| ready.contains(n));
                p["status"]["phase"] == "Pending" || objects::pod_ready(p) != node_ready
            })
            .map(objects::ns_name)
            .collect();
        let mut usage = self.usage();
        for (ns, name) in waiting {
            let k = key(&objects::PODS, &ns, &name);
            let Some(mut pod) = self.objects.get(&k).cloned() else {
                continue;
            };
            let used = |n: &Value| {
                let name = n["metadata"]["name"].as_str().unwrap_or_default();
                usage.get(name).copied().unwrap_or_default()
            };
            let bound = pod["spec"]["nodeName"].as_str().map(str::to_string);
            let node = match &bound {
                Some(n) => nodes
                    .iter()
                    .find(|x| x["metadata"]["name"] == n.as_str())
                    .cloned(),
                None => nodes
                    .iter()
                    .filter(|n| objects::schedulable_for(n, &pod) && used(n).fits(n, &pod))
                    .min_by_key(|n| used(n).pods)
                    .cloned(),
            };
            let Some(node) = node else {
                continue;
            };
            if !objects::node_ready(&node) {
                if objects::pod_ready(&pod) {
                    objects::set_pod_not_ready(&mut pod, now_ms);
                    self.put(&objects::PODS, pod);
                }
                continue;
            }
            if bound.is_none() {
                let name = node["metadata"]["name"].as_str().unwrap_or_default();
                usage.entry(name.to_string()).or_default().add(&pod);
            }
            pod["spec"]["nodeName"] = node["metadata"]["name"].clone();
            let host_ip = objects::node_internal_ip(&node);
            let pod_ip = self.pod_ip(&pod, &node);
            let start_at = if pod["status"]["phase"] == "Pending" {
                *self
                    .starting
                    .entry(k.clone())
                    .or_insert(now_ms + self.pod_start_ms)
            } else {
                now_ms
            };
            if start_at > now_ms {
                if !objects::pod_creating(&pod) {
                    pod["status"] =
                        objects::creating_status(&pod, &host_ip, pod_ip.as_deref(), now_ms);
                    self.put(&objects::PODS, pod);
                }
                continue;
            }
            self.starting.remove(&k);
            let since = pod["status"]["startTime"].clone();
            pod["status"] = objects::running_status(&pod, &host_ip, pod_ip.as_deref(), now_ms);
            if since.is_string() {
                // The kubelet took the pod up when its start began.
                pod["status"]["startTime"] = since;
            }
            self.put(&objects::PODS, pod);
        }
        self.forget_gone_starts();
    }

    /// Drops starts of pods that were deleted meanwhile.
    fn forget_gone_starts(&mut self) {
        let objects = &self.objects;
        self.starting.retain(|k, _| {
            objects
                .get(k)
                .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_are_held_against_allocatable() {
        let mut s = ApiStore::new(0);
        s.seed_system(
            &[
                "coredns".into(),
                "local-storage".into(),
                "metrics-server".into(),
                "traefik".into(),
            ],
            0,
        );
        s.register_node(
            "n1",
            false,
            false,
            &[],
            &[],
            "v1.31.4+k3s1",
            std::net::Ipv4Addr::new(100, 64, 0, 1),
            0,
        );
        let big = |name: &str| {
            json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]}})
        };
        s.create(&objects::PODS, "default", big("a")).unwrap();
        s.create(&objects::PODS, "default", big("b")).unwrap();
        s.tick(10);
        let a = s.get(&objects::PODS, "default", "a").unwrap();
        let b = s.get(&objects::PODS, "default", "b").unwrap();
        assert_eq!(a["status"]["phase"], "Running");
        assert_eq!(
            b["status"]["phase"], "Pending",
            "2 CPUs hold one 1.5-CPU pod"
        );
        assert_eq!(a["status"]["qosClass"], "Burstable");
        assert_eq!(a["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(a["status"]["hostIP"], "100.64.0.1");
    }
}
