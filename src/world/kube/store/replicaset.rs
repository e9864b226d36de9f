//! The ReplicaSet controller: keeps `spec.replicas` pods of its template,
//! owned by it (`ownerReferences`, controller), creating the missing and
//! deleting the surplus (unscheduled first, then not Ready, then the
//! newest: the order of pkg/controller/replicaset's `getPodsToDelete`,
//! simplified), and posts `status` (`replicas`, `fullyLabeledReplicas`,
//! `readyReplicas`, `availableReplicas`, `observedGeneration`). A pod is
//! available as soon as it is Ready: `minReadySeconds` is not modelled.

use serde_json::{Value, json};

use super::{ApiStore, controller_uid};
use crate::world::kube::objects;

impl ApiStore {
    /// Pods (not being deleted) controlled by the object with `uid`.
    pub(super) fn owned_pods(&self, ns: &str, uid: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((_, r, n, _), p)| r == "pods" && n == ns && controller_uid(p) == uid)
            .map(|(_, p)| p.clone())
            .collect()
    }

    pub(super) fn sync_replicasets(&mut self) {
        for rs in self.list(&objects::REPLICASETS, None, None, None) {
            let (ns, name) = objects::ns_name(&rs);
            let uid = rs["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let want = rs["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
            let mut pods = self.owned_pods(&ns, &uid);
            if pods.len() < want {
                for _ in pods.len()..want {
                    let pod = self.pod_from_template(&rs, &name, &rs["spec"]["template"], &[]);
                    let _ = self.create(&objects::PODS, &ns, pod);
                }
            } else if pods.len() > want {
                // Cheapest to lose first: unscheduled, not Ready, newest.
                pods.sort_by_key(|p| {
                    (
                        !p["spec"]["nodeName"].is_null(),
                        objects::pod_ready(p),
                        std::cmp::Reverse(
                            p["metadata"]["uid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        ),
                    )
                });
                for p in pods.iter().take(pods.len() - want) {
                    let (pns, pname) = objects::ns_name(p);
                    let _ = self.delete(&objects::PODS, &pns, &pname);
                }
            }
        }
    }

    pub(super) fn replicaset_statuses(&mut self) {
        for mut rs in self.list(&objects::REPLICASETS, None, None, None) {
            let (ns, _) = objects::ns_name(&rs);
            let uid = rs["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let pods = self.owned_pods(&ns, &uid);
            let ready = pods.iter().filter(|p| objects::pod_ready(p)).count();
            rs["status"] = json!({"replicas": pods.len(), "fullyLabeledReplicas": pods.len(),
                                  "readyReplicas": ready, "availableReplicas": ready,
                                  "observedGeneration": rs["metadata"]["generation"]});
            self.put(&objects::REPLICASETS, rs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicaset_keeps_its_count_and_replaces_what_goes() {
        let mut s = super::super::tests::cluster();
        let rs = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        s.create(&objects::REPLICASETS, "default", rs).unwrap();
        s.tick(20);
        let pods = s.list(&objects::PODS, Some("default"), Some("app=web"), None);
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().all(objects::pod_ready));
        let rs = s.get(&objects::REPLICASETS, "default", "web").unwrap();
        assert_eq!(rs["status"]["readyReplicas"], 3);
        let (_, victim) = objects::ns_name(&pods[0]);
        s.delete(&objects::PODS, "default", &victim).unwrap();
        s.tick(30);
        assert_eq!(
            s.list(&objects::PODS, Some("default"), Some("app=web"), None)
                .len(),
            3
        );
        s.patch_merge(
            &objects::REPLICASETS,
            "default",
            "web",
            &json!({"spec": {"replicas": 1}}),
        )
        .unwrap();
        s.tick(40);
        assert_eq!(
            s.list(&objects::PODS, Some("default"), Some("app=web"), None)
                .len(),
            1
        );
        let rs = s.get(&objects::REPLICASETS, "default", "web").unwrap();
        assert_eq!(rs["status"]["observedGeneration"], 2);
        assert_eq!(rs["status"]["replicas"], 1);
    }
}
