//! Strict field validation (`fieldValidation=Strict`, what kubectl 1.25+
//! sends by default once OpenAPI v3 says the server takes it; see
//! [`super::discovery`]): an object of a kind the world's controllers run
//! (Deployment, ReplicaSet, DaemonSet, Pod) with a field its type does not
//! declare is refused, as the real API server refuses it (400, `strict
//! decoding error: unknown field "spec.replica"`). The field lists are
//! those of k8s.io/api apps/v1 and core/v1 `types.go` (Kubernetes 1.31)
//! for the types down to containers and their ports; fields below those
//! (probes, volumes, affinity, security contexts) are not checked.
//! Other kinds are not checked at all.

use serde_json::Value;

const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
const DEPLOYMENT_SPEC: &[&str] = &[
    "replicas",
    "selector",
    "template",
    "strategy",
    "minReadySeconds",
    "revisionHistoryLimit",
    "paused",
    "progressDeadlineSeconds",
];
const REPLICASET_SPEC: &[&str] = &["replicas", "minReadySeconds", "selector", "template"];
const DAEMONSET_SPEC: &[&str] = &[
    "selector",
    "template",
    "updateStrategy",
    "minReadySeconds",
    "revisionHistoryLimit",
];
const TEMPLATE: &[&str] = &["metadata", "spec"];
const POD_SPEC: &[&str] = &[
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
    "topologySpreadConstraints",
    "setHostnameAsFQDN",
    "os",
    "hostUsers",
    "schedulingGates",
    "resourceClaims",
    "resources",
];
const CONTAINER: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
];
const PORT: &[&str] = &["name", "hostPort", "containerPort", "protocol", "hostIP"];

fn check(v: &Value, known: &[&str], path: &str, out: &mut Vec<String>) {
    if let Some(m) = v.as_object() {
        for k in m.keys().filter(|k| !known.contains(&k.as_str())) {
            out.push(if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            });
        }
    }
}

fn check_pod_spec(spec: &Value, path: &str, out: &mut Vec<String>) {
    check(spec, POD_SPEC, path, out);
    for list in ["containers", "initContainers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let cp = format!("{path}.{list}[{i}]");
            check(c, CONTAINER, &cp, out);
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                check(p, PORT, &format!("{cp}.ports[{j}]"), out);
            }
        }
    }
}

/// The fields of `obj` its kind does not declare (`spec.replica`), for
/// the kinds checked; empty otherwise.
pub fn unknown_fields(obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let spec_fields = match (obj["apiVersion"].as_str(), obj["kind"].as_str()) {
        (Some("apps/v1"), Some("Deployment")) => DEPLOYMENT_SPEC,
        (Some("apps/v1"), Some("ReplicaSet")) => REPLICASET_SPEC,
        (Some("apps/v1"), Some("DaemonSet")) => DAEMONSET_SPEC,
        (Some("v1"), Some("Pod")) => POD_SPEC,
        _ => return out,
    };
    check(obj, TOP, "", &mut out);
    check(&obj["metadata"], META, "metadata", &mut out);
    if obj["kind"] == "Pod" {
        check_pod_spec(&obj["spec"], "spec", &mut out);
    } else {
        check(&obj["spec"], spec_fields, "spec", &mut out);
        check(
            &obj["spec"]["template"],
            TEMPLATE,
            "spec.template",
            &mut out,
        );
        check(
            &obj["spec"]["template"]["metadata"],
            META,
            "spec.template.metadata",
            &mut out,
        );
        check_pod_spec(
            &obj["spec"]["template"]["spec"],
            "spec.template.spec",
            &mut out,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_of_modelled_kinds_are_named() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replica": 1, "template": {"spec": {"containers": [{"name": "c", "imagee": "x",
                "ports": [{"containerPort": 80, "proto": "TCP"}]}]}}}});
        assert_eq!(
            unknown_fields(&d),
            [
                "spec.replica",
                "spec.template.spec.containers[0].imagee",
                "spec.template.spec.containers[0].ports[0].proto"
            ]
        );
        let ok = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                        "spec": {"containers": [{"name": "c", "image": "x"}]}});
        assert!(unknown_fields(&ok).is_empty());
        assert!(
            unknown_fields(&json!({"apiVersion": "v1", "kind": "ConfigMap", "dta": {}})).is_empty()
        );
    }
}
