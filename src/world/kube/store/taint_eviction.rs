//! Taint-based eviction (kubernetes/kubernetes pkg/controller/tainteviction,
//! [docs: kubernetes.io "Taints and Tolerations", effect NoExecute]): a pod
//! bound to a node with a NoExecute taint it does not tolerate is deleted
//! (its controller, if any, makes a new one elsewhere). A toleration's
//! `tolerationSeconds` is not modelled: a tolerated taint is tolerated for
//! good. NoSchedule taints leave running pods alone.

use super::ApiStore;
use crate::world::kube::objects;

impl ApiStore {
    pub(super) fn evict_for_taints(&mut self) {
        let nodes = self.list(&objects::NODES, None, None, None);
        let tainted: Vec<&serde_json::Value> = nodes
            .iter()
            .filter(|n| {
                n["spec"]["taints"]
                    .as_array()
                    .is_some_and(|ts| ts.iter().any(|t| t["effect"] == "NoExecute"))
            })
            .collect();
        if tainted.is_empty() {
            return;
        }
        let victims: Vec<(String, String)> = self
            .objects
            .iter()
            .filter(|((_, r, _, _), _)| r == "pods")
            .map(|(_, p)| p)
            .filter(|p| {
                tainted.iter().any(|n| {
                    n["metadata"]["name"] == p["spec"]["nodeName"]
                        && objects::has_untolerated(n, p, &["NoExecute"])
                })
            })
            .map(objects::ns_name)
            .collect();
        for (ns, name) in victims {
            let _ = self.delete(&objects::PODS, &ns, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_no_execute_taint_evicts_pods_that_do_not_tolerate_it() {
        let mut s = super::super::tests::cluster();
        let pod = |name: &str, tolerations: serde_json::Value| {
            json!({"metadata": {"name": name}, "spec": {"nodeName": "n2",
                "containers": [{"name": "c", "image": "x"}], "tolerations": tolerations}})
        };
        s.create(&objects::PODS, "default", pod("plain", json!([])))
            .unwrap();
        s.create(
            &objects::PODS,
            "default",
            pod("tolerant", json!([{"key": "maint", "operator": "Exists"}])),
        )
        .unwrap();
        s.tick(20);
        let taint =
            |effect: &str| json!({"spec": {"taints": [{"key": "maint", "effect": effect}]}});
        s.patch_merge(&objects::NODES, "", "n2", &taint("NoSchedule"))
            .unwrap();
        s.tick(30);
        assert!(
            s.get(&objects::PODS, "default", "plain").is_ok(),
            "NoSchedule keeps it"
        );
        s.patch_merge(&objects::NODES, "", "n2", &taint("NoExecute"))
            .unwrap();
        s.tick(40);
        assert!(s.get(&objects::PODS, "default", "plain").is_err());
        assert!(s.get(&objects::PODS, "default", "tolerant").is_ok());
    }
}
