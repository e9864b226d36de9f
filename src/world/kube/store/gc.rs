//! Garbage collection by ownerReferences: when an object is deleted, the
//! objects that name its uid in `metadata.ownerReferences` are deleted too,
//! and theirs in turn (a Deployment takes its ReplicaSets, they their
//! pods). This is Kubernetes' background cascading deletion, the default
//! kubectl asks for (kubernetes.io/docs/concepts/architecture/garbage-collection/);
//! the real garbage collector does it asynchronously, so dependents stay
//! visible for a moment, here they go at once. Orphan propagation is not
//! modelled.

use super::{ApiStore, Key};
use crate::world::kube::objects;

impl ApiStore {
    /// Deletes every object owned by `uid`.
    pub(super) fn collect_dependents(&mut self, uid: &str) {
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (group, plural, ns, name) in dependents {
            let res =
                objects::resource_by_path(&group, &plural).unwrap_or_else(|| objects::Resource {
                    group: group.into(),
                    version: "v1".into(),
                    plural: plural.clone().into(),
                    kind: plural.into(),
                    namespaced: !ns.is_empty(),
                });
            let _ = self.delete(&res, &ns, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn deleting_an_owner_deletes_its_dependents_and_theirs() {
        let mut s = ApiStore::new(0);
        s.seed_system(&[], 0);
        let rs = s
            .create(
                &objects::REPLICASETS,
                "default",
                json!({"metadata": {"name": "r"}}),
            )
            .unwrap();
        let uid = rs["metadata"]["uid"].clone();
        let pod = json!({"metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": uid, "controller": true}]},
            "spec": {"containers": []}});
        s.create(&objects::PODS, "default", pod).unwrap();
        s.delete(&objects::REPLICASETS, "default", "r").unwrap();
        assert!(s.get(&objects::PODS, "default", "p").is_err());
        s.tick(1_000);
        assert!(
            s.list(&objects::PODS, Some("default"), None, None)
                .is_empty(),
            "an owner that is gone recreates nothing"
        );
    }
}
