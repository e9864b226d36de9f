//! The Deployment controller (kubernetes/kubernetes pkg/controller/deployment):
//! one ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`
//! and labelled with that hash (so its pods are too), owned by the
//! Deployment. A changed template makes a new ReplicaSet; the rollout then
//! follows the strategy:
//! - `RollingUpdate` (the default): the new ReplicaSet grows while all
//!   ReplicaSets together stay within `replicas + maxSurge` (default 25%,
//!   rounded up), old ones shrink while at least `replicas -
//!   maxUnavailable` (default 25%, rounded down; 1 when both are 0) pods
//!   stay available (`rolling.go` reconcileNewReplicaSet /
//!   reconcileOldReplicaSets: scale-down budget = all pods - minAvailable -
//!   new pods not yet available);
//! - `Recreate`: old ReplicaSets go to 0 and their pods away first.
//!
//! Status is `calculateStatus` of sync.go: `replicas`, `updatedReplicas`,
//! `readyReplicas`, `availableReplicas`, `unavailableReplicas`,
//! `observedGeneration`, and the `Available` and `Progressing` conditions
//! with the reasons `kubectl rollout status` and `describe` print.
//! Not modelled: proportional scaling of several live ReplicaSets,
//! `progressDeadlineSeconds`, `revisionHistoryLimit` clean-up, `paused`
//! beyond doing nothing.

use serde_json::{Value, json};

use super::{ApiStore, controller_uid, int_or_percent, owner_ref, rfc3339, template_hash};
use crate::world::kube::objects;

/// The annotation Kubernetes numbers a Deployment's rollouts with.
const REVISION: &str = "deployment.kubernetes.io/revision";

fn replicas(v: &Value) -> u64 {
    v["spec"]["replicas"].as_u64().unwrap_or(1)
}

/// `(maxSurge, maxUnavailable)` resolved against `desired`.
fn fenceposts(d: &Value, desired: u64) -> (u64, u64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge = int_or_percent(&ru["maxSurge"], desired, "25%", true);
    let unavailable = int_or_percent(&ru["maxUnavailable"], desired, "25%", false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(desired))
    }
}

impl ApiStore {
    fn owned_replicasets(&self, d: &Value) -> Vec<Value> {
        let (ns, _) = objects::ns_name(d);
        let uid = d["metadata"]["uid"].as_str().unwrap_or_default();
        self.list(&objects::REPLICASETS, Some(&ns), None, None)
            .into_iter()
            .filter(|rs| controller_uid(rs) == uid)
            .collect()
    }

    fn set_replicas(&mut self, rs: &Value, n: u64) {
        if replicas(rs) == n {
            return;
        }
        let (ns, name) = objects::ns_name(rs);
        let mut next = rs.clone();
        next["spec"]["replicas"] = json!(n);
        let _ = self.replace(&objects::REPLICASETS, &ns, &name, next);
    }

    pub(super) fn sync_deployments(&mut self) {
        for d in self.list(&objects::DEPLOYMENTS, None, None, None) {
            if d["spec"]["paused"] == true {
                continue;
            }
            self.sync_deployment(&d);
        }
    }

    fn sync_deployment(&mut self, d: &Value) {
        let (ns, name) = objects::ns_name(d);
        let desired = replicas(d);
        let template = &d["spec"]["template"];
        let hash = template_hash(template);
        let owned = self.owned_replicasets(d);
        let is_new = |rs: &&Value| rs["metadata"]["labels"]["pod-template-hash"] == hash.as_str();
        let olds: Vec<Value> = owned.iter().filter(|rs| !is_new(rs)).cloned().collect();
        let old_total: u64 = olds.iter().map(replicas).sum();
        let recreate = d["spec"]["strategy"]["type"] == "Recreate";
        let (surge, unavailable) = fenceposts(d, desired);
        let new_rs = match owned.iter().find(is_new) {
            Some(rs) => rs.clone(),
            None => {
                let revision = owned
                    .iter()
                    .filter_map(|rs| {
                        rs["metadata"]["annotations"][REVISION]
                            .as_str()?
                            .parse::<u64>()
                            .ok()
                    })
                    .max()
                    .unwrap_or(0)
                    + 1;
                let initial = if old_total == 0 {
                    desired
                } else if recreate {
                    0
                } else {
                    (desired + surge).saturating_sub(old_total).min(desired)
                };
                let mut t = template.clone();
                t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({"metadata": {"name": format!("{name}-{hash}"),
                        "labels": t["metadata"]["labels"],
                        "annotations": {REVISION: revision.to_string(),
                                        "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                                        "deployment.kubernetes.io/max-replicas": (desired + surge).to_string()},
                        "ownerReferences": [owner_ref(d)]},
                    "spec": {"replicas": initial, "selector": selector, "template": t}});
                let Ok(rs) = self.create(&objects::REPLICASETS, &ns, rs) else {
                    return;
                };
                let mut dd = d.clone();
                dd["metadata"]["annotations"][REVISION] = json!(revision.to_string());
                self.put(&objects::DEPLOYMENTS, dd);
                rs
            }
        };
        if olds.iter().all(|rs| replicas(rs) == 0) {
            if recreate
                && olds.iter().any(|rs| {
                    let uid = rs["metadata"]["uid"].as_str().unwrap_or_default();
                    !self.owned_pods(&ns, uid).is_empty()
                })
            {
                return;
            }
            self.set_replicas(&new_rs, desired);
            return;
        }
        if recreate {
            for rs in &olds {
                self.set_replicas(rs, 0);
            }
            return;
        }
        // Grow the new ReplicaSet within the surge.
        let mut new_n = replicas(&new_rs);
        let total = new_n + old_total;
        if new_n < desired {
            new_n += (desired + surge).saturating_sub(total).min(desired - new_n);
        } else {
            new_n = desired;
        }
        self.set_replicas(&new_rs, new_n);
        // Shrink old ones, oldest first, keeping the minimum available.
        let new_available = new_rs["status"]["availableReplicas"].as_u64().unwrap_or(0);
        let new_unavailable = new_n.saturating_sub(new_available);
        let min_available = desired.saturating_sub(unavailable);
        let mut budget = (new_n + old_total).saturating_sub(min_available + new_unavailable);
        let mut olds = olds;
        olds.sort_by_key(|rs| {
            rs["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        for rs in &olds {
            let n = replicas(rs);
            let take = n.min(budget);
            budget -= take;
            self.set_replicas(rs, n - take);
        }
    }

    pub(super) fn deployment_statuses(&mut self) {
        for mut d in self.list(&objects::DEPLOYMENTS, None, None, None) {
            let desired = replicas(&d);
            let hash = template_hash(&d["spec"]["template"]);
            let owned = self.owned_replicasets(&d);
            let sum = |f: &str| -> u64 {
                owned
                    .iter()
                    .map(|rs| rs["status"][f].as_u64().unwrap_or(0))
                    .sum()
            };
            let new_rs = owned
                .iter()
                .find(|rs| rs["metadata"]["labels"]["pod-template-hash"] == hash.as_str());
            let updated = new_rs.map_or(0, |rs| rs["status"]["replicas"].as_u64().unwrap_or(0));
            let (current, ready, available) = (
                sum("replicas"),
                sum("readyReplicas"),
                sum("availableReplicas"),
            );
            let spec_total: u64 = owned.iter().map(replicas).sum();
            let (_, max_unavailable) = fenceposts(&d, desired);
            let generation = d["metadata"]["generation"].clone();
            let complete = updated == desired && current == desired && available == desired;
            let rs_name = new_rs
                .map(|rs| {
                    rs["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap_or_default();
            let old = d["status"]["conditions"].clone();
            let now = rfc3339(self.now_ms);
            let condition = |ty: &str, status: &str, reason: &str, message: String| {
                let prev = old
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
                    .cloned();
                let same = prev
                    .as_ref()
                    .is_some_and(|p| p["status"] == status && p["reason"] == reason);
                let transition = match (&prev, same) {
                    (Some(p), true) => p["lastTransitionTime"].clone(),
                    _ => json!(now),
                };
                let update = if same {
                    prev.map(|p| p["lastUpdateTime"].clone())
                        .unwrap_or(json!(now))
                } else {
                    json!(now)
                };
                json!({"type": ty, "status": status, "reason": reason, "message": message,
                       "lastUpdateTime": update, "lastTransitionTime": transition})
            };
            let avail = if available >= desired.saturating_sub(max_unavailable) {
                condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                )
            } else {
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                )
            };
            let progressing = if complete {
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                )
            } else {
                condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                )
            };
            let mut status = json!({"observedGeneration": generation, "replicas": current,
                "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available,
                "conditions": [avail, progressing]});
            let unavailable = spec_total.saturating_sub(available);
            if unavailable > 0 {
                status["unavailableReplicas"] = json!(unavailable);
            }
            d["status"] = status;
            self.put(&objects::DEPLOYMENTS, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, replicas: u64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn apply(s: &mut ApiStore, d: &Value) {
        s.apply(&objects::DEPLOYMENTS, "default", "web", "kubectl", true, d)
            .unwrap();
    }

    #[test]
    fn a_deployment_makes_a_replicaset_and_pods_and_reports_rolled_out() {
        let mut s = super::super::tests::cluster();
        apply(&mut s, &deployment("nginx:1", 3));
        s.tick(20);
        let rss = s.list(&objects::REPLICASETS, Some("default"), None, None);
        assert_eq!(rss.len(), 1);
        let rs = &rss[0];
        let hash = rs["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        let pods = s.list(
            &objects::PODS,
            Some("default"),
            Some(&format!("pod-template-hash={hash}")),
            None,
        );
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().all(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("web-{hash}-"))
        }));
        let d = s.get(&objects::DEPLOYMENTS, "default", "web").unwrap();
        assert_eq!(d["status"]["observedGeneration"], 1);
        assert_eq!(d["status"]["updatedReplicas"], 3);
        assert_eq!(d["status"]["availableReplicas"], 3);
        assert_eq!(
            d["status"]["conditions"][1]["reason"],
            "NewReplicaSetAvailable"
        );
    }

    #[test]
    fn a_template_change_rolls_within_surge_and_unavailability() {
        let mut s = super::super::tests::cluster();
        apply(&mut s, &deployment("nginx:1", 3));
        s.tick(20);
        apply(&mut s, &deployment("nginx:2", 3));
        let mut t = 30;
        let mut steps = 0;
        loop {
            s.tick(t);
            t += 10;
            steps += 1;
            let pods = s.list(&objects::PODS, Some("default"), Some("app=web"), None);
            // maxSurge 1, maxUnavailable 0: never more than 4, never fewer
            // than 3 Ready.
            assert!(pods.len() <= 4, "{}", pods.len());
            assert!(pods.iter().filter(|p| objects::pod_ready(p)).count() >= 3);
            let d = s.get(&objects::DEPLOYMENTS, "default", "web").unwrap();
            if d["status"]["updatedReplicas"] == 3
                && d["status"]["replicas"] == 3
                && d["status"]["availableReplicas"] == 3
            {
                assert_eq!(d["status"]["observedGeneration"], 2);
                assert_eq!(d["metadata"]["annotations"][REVISION], "2");
                break;
            }
            assert!(steps < 20, "the rollout finishes");
        }
        let images: Vec<Value> = s
            .list(&objects::PODS, Some("default"), Some("app=web"), None)
            .iter()
            .map(|p| p["spec"]["containers"][0]["image"].clone())
            .collect();
        assert_eq!(images, vec![json!("nginx:2"); 3]);
        assert_eq!(
            s.list(&objects::REPLICASETS, Some("default"), None, None)
                .len(),
            2,
            "the old one is kept at 0"
        );
        // Deleting the Deployment takes its ReplicaSets and their pods.
        s.delete(&objects::DEPLOYMENTS, "default", "web").unwrap();
        s.tick(t + 10);
        assert!(
            s.list(&objects::REPLICASETS, Some("default"), None, None)
                .is_empty()
        );
        assert!(
            s.list(&objects::PODS, Some("default"), None, None)
                .is_empty()
        );
    }
}
