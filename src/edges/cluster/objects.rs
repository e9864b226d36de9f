//! The fleet's `manifests:` applied: each object by server-side apply
//! (field manager `exedev-k8s`, conflicts forced: the fleet file is the
//! source of truth for what it lists, as `kubectl apply --server-side
//! --force-conflicts`), its resource found by the API's discovery, so any
//! kind the cluster serves (CRDs included) can be listed.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;

use super::{ClusterError, FIELD_MANAGER};

/// Applies `objects` in order (a Namespace listed before what it holds);
/// a namespaced object without `metadata.namespace` goes to `default`, as
/// kubectl does. Returns how many were applied.
pub async fn apply_objects(
    client: &kube::Client,
    objects: &[serde_json::Value],
) -> Result<usize, ClusterError> {
    for o in objects {
        fn s(v: Option<&serde_json::Value>) -> &str {
            v.and_then(|v| v.as_str()).unwrap_or_default()
        }
        let api_version = s(o.get("apiVersion"));
        let kind = s(o.get("kind"));
        let meta = o.get("metadata");
        let name = s(meta.and_then(|m| m.get("name")));
        let what = format!("applying {kind} {name} from the fleet's manifests");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| ClusterError::api(what.clone(), e))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = meta
                    .and_then(|m| m.get("namespace"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("default");
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(o),
        )
        .await
        .map_err(|e| ClusterError::api(what, e))?;
    }
    Ok(objects.len())
}
