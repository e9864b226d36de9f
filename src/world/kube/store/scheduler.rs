//! The scheduler and the kubelet's start of a pod: a pending pod goes to a
//! Ready node it fits (see [`objects::schedulable_for`]: cordon, taints,
//! `nodeSelector`, required node affinity) whose allocatable CPU, memory
//! and pod count still hold its requests, the least loaded first (the
//! default scheduler's `NodeResourcesFit` filter and a spreading score;
//! its other plugins are not modelled). A pod already bound (`nodeName`,
//! as DaemonSet pods of old and static pods) runs when its node is Ready.
//! Pods on a node that is not Ready lose their Ready condition.

use serde_json::Value;

use super::{ApiStore, key};
use crate::world::kube::objects;

impl ApiStore {
    /// Does the node still have room for the pod's requests (CPU, memory,
    /// pods) next to the pods bound to it?
    pub(super) fn fits(&self, node: &Value, pod: &Value) -> bool {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        let (cpu_cap, mem_cap) = objects::node_allocatable(node);
        let pod_cap = node["status"]["allocatable"]["pods"]
            .as_str()
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(objects::MAX_PODS as usize);
        let mut count = 0;
        let (mut cpu, mut mem) = objects::pod_requests(pod);
        for p in self.objects.iter().filter_map(|((_, r, _, _), v)| {
            (r == "pods"
                && v["spec"]["nodeName"] == name
                && v["metadata"]["uid"] != pod["metadata"]["uid"])
                .then_some(v)
        }) {
            let (c, m) = objects::pod_requests(p);
            cpu += c;
            mem += m;
            count += 1;
        }
        count < pod_cap && cpu <= cpu_cap && mem <= mem_cap
    }

    fn pods_on(&self, node: &str) -> usize {
        self.objects
            .iter()
            .filter(|((_, p, _, _), v)| p == "pods" && v["spec"]["nodeName"] == node)
            .count()
    }

    /// Binds pending pods and runs pods whose node is Ready.
    pub(super) fn schedule(&mut self, now_ms: u64) {
        let nodes = self.list(&objects::NODES, None, None, None);
        let waiting: Vec<(String, String)> = self
            .objects
            .iter()
            .filter(|((_, r, _, _), p)| r == "pods" && p["metadata"]["deletionTimestamp"].is_null())
            .map(|(_, p)| p)
            .filter(|p| {
                let node_ready = p["spec"]["nodeName"].as_str().is_some_and(|n| {
                    nodes
                        .iter()
                        .any(|x| x["metadata"]["name"] == n && objects::node_ready(x))
                });
                p["status"]["phase"] == "Pending" || objects::pod_ready(p) != node_ready
            })
            .map(objects::ns_name)
            .collect();
        for (ns, name) in waiting {
            let k = key(&objects::PODS, &ns, &name);
            let Some(mut pod) = self.objects.get(&k).cloned() else {
                continue;
            };
            let node = match pod["spec"]["nodeName"].as_str() {
                Some(n) => nodes.iter().find(|x| x["metadata"]["name"] == n).cloned(),
                None => nodes
                    .iter()
                    .filter(|n| objects::schedulable_for(n, &pod) && self.fits(n, &pod))
                    .min_by_key(|n| {
                        self.pods_on(n["metadata"]["name"].as_str().unwrap_or_default())
                    })
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
            pod["spec"]["nodeName"] = node["metadata"]["name"].clone();
            let host_ip = objects::node_internal_ip(&node);
            let pod_ip = self.pod_ip(&pod, &node);
            pod["status"] = objects::running_status(&pod, &host_ip, pod_ip.as_deref(), now_ms);
            self.put(&objects::PODS, pod);
        }
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
