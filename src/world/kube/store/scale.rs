//! The `scale` subresource of Deployments and ReplicaSets (`autoscaling/v1`
//! `Scale`): what `kubectl scale` reads and patches (1.32 patches it,
//! 1.20 too, both with a merge patch of `spec.replicas`).

use serde_json::{Value, json};

use super::{ApiError, ApiStore, merge_patch};
use crate::world::kube::objects::Resource;

impl ApiStore {
    fn scale_of(obj: &Value) -> Value {
        let m = &obj["metadata"];
        let sel = &obj["spec"]["selector"]["matchLabels"];
        let mut selector: Vec<String> = sel
            .as_object()
            .map(|l| {
                l.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        selector.sort();
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
               "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
               "spec": {"replicas": obj["spec"]["replicas"].as_u64().unwrap_or(1)},
               "status": {"replicas": obj["status"]["replicas"].as_u64().unwrap_or(0), "selector": selector.join(",")}})
    }

    /// The Scale, changed by `patch` (a merge patch or a whole Scale) when
    /// given.
    pub fn scale(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        patch: Option<&Value>,
    ) -> Result<Value, ApiError> {
        if !matches!(&*res.plural, "deployments" | "replicasets" | "statefulsets") {
            return Err(ApiError::not_found(
                &format!("{}/scale", res.describe()),
                name,
            ));
        }
        let obj = self.get(res, ns, name)?;
        let mut scale = Self::scale_of(&obj);
        let Some(patch) = patch else {
            return Ok(scale);
        };
        merge_patch(&mut scale, patch);
        let replicas = scale["spec"]["replicas"].as_u64().ok_or_else(|| {
            ApiError::new(422, "Invalid", format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: must be greater than or equal to 0"))
        })?;
        let obj = self.patch_merge(res, ns, name, &json!({"spec": {"replicas": replicas}}))?;
        Ok(Self::scale_of(&obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::kube::objects;

    #[test]
    fn scaling_sets_replicas() {
        let mut s = super::super::tests::cluster();
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        s.create(&objects::DEPLOYMENTS, "default", d).unwrap();
        let sc = s
            .scale(
                &objects::DEPLOYMENTS,
                "default",
                "web",
                Some(&json!({"spec": {"replicas": 3}})),
            )
            .unwrap();
        assert_eq!(sc["spec"]["replicas"], 3);
        assert_eq!(sc["status"]["selector"], "app=web");
        s.tick(10);
        s.tick(20);
        assert_eq!(
            s.list(&objects::PODS, Some("default"), Some("app=web"), None)
                .len(),
            3
        );
        assert_eq!(
            s.scale(&objects::PODS, "default", "x", None)
                .unwrap_err()
                .code,
            404
        );
    }
}
