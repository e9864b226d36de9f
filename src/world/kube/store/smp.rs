//! Strategic merge patch, as `kubectl apply` (client-side), `edit`,
//! `cordon`, `scale` and `rollout restart` send it
//! (kubernetes/community contributors/devel/sig-api-machinery/strategic-merge-patch.md):
//! maps merge as in a JSON merge patch; a list with a patch merge key is
//! merged element by element on that key (an element with `$patch:
//! delete` is removed), other lists are replaced; `$setElementOrder/<list>`
//! orders a merged list, `$retainKeys` drops the keys it does not name,
//! `$deleteFromPrimitiveList/<list>` removes values, `$patch: replace`
//! replaces the map. The merge keys are the built-in types' `patchMergeKey`
//! tags (k8s.io/api core/v1 types.go) for the fields the world's kinds
//! use; any other list is replaced whole.

use serde_json::{Map, Value};

/// The patch merge key of a list field, by the field's name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Applies `patch` to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = p.clone();
        m.remove("$patch");
        *target = Value::Object(m);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|x| x == k));
    }
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(cur), Some(gone)) =
                (t.get_mut(list).and_then(Value::as_array_mut), v.as_array())
            {
                cur.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (merge_key(k), v.as_array()) {
            (Some(mk), Some(items)) => {
                let cur = t.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
                if !cur.is_array() {
                    *cur = Value::Array(vec![]);
                }
                let Some(list) = cur.as_array_mut() else {
                    continue;
                };
                for item in items {
                    let id = &item[mk];
                    let pos = list.iter().position(|x| x[mk] == *id && !id.is_null());
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            list.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => strategic_merge(&mut list[i], item),
                        (None, false) => {
                            let mut fresh = Value::Object(Map::new());
                            strategic_merge(&mut fresh, item);
                            list.push(fresh);
                        }
                    }
                }
                if let Some(order) = p
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array)
                {
                    list.sort_by_key(|x| {
                        order
                            .iter()
                            .position(|o| o[mk] == x[mk])
                            .unwrap_or(usize::MAX)
                    });
                }
            }
            _ if v.is_object() => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_with_merge_keys_merge_by_key() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}}, "replicas": 1}});
        // What kubectl apply sends for an image change and a removed container.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"name": "web", "image": "nginx:2"}, {"name": "side", "$patch": "delete"}]}}}});
        strategic_merge(&mut d, &patch);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([
            {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}])
        );
        assert_eq!(d["spec"]["replicas"], 1);
        strategic_merge(&mut d, &json!({"spec": {"replicas": null, "paused": true}}));
        assert_eq!(
            d["spec"],
            json!({"template": d["spec"]["template"].clone(), "paused": true})
        );
        let mut n = json!({"spec": {"taints": [{"key": "a"}]}});
        strategic_merge(&mut n, &json!({"spec": {"taints": [{"key": "b"}]}}));
        assert_eq!(
            n["spec"]["taints"],
            json!([{"key": "b"}]),
            "no merge key: replaced"
        );
    }
}
