//! Which node labels a kubelet may set on itself (`--node-labels`, which
//! k3s's `--node-label` feeds). From `k3s-facts.md` ("Node labels the
//! kubelet refuses", [src: kubernetes pkg/kubelet/apis/well_known_labels.go]):
//! labels in the `kubernetes.io` / `k8s.io` namespaces (and their
//! subdomains) are allowed only under `kubelet.kubernetes.io` /
//! `node.kubernetes.io` (and their subdomains) or from a fixed list; any
//! other, e.g. `node-role.kubernetes.io/worker`, stops the kubelet. Pure.

/// The well-known labels a kubelet may set.
const ALLOWED: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
];

/// Namespaces (and their subdomains) a kubelet may label freely.
const ALLOWED_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(ns: &str, parent: &str) -> bool {
    ns == parent || ns.ends_with(&format!(".{parent}"))
}

/// May a kubelet register with this label key?
pub fn kubelet_may_set(key: &str) -> bool {
    let ns = namespace(key);
    let restricted = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
    !restricted || ALLOWED.contains(&key) || ALLOWED_NAMESPACES.iter().any(|a| in_namespace(ns, a))
}

/// The labels (`key=value` strings) a kubelet would refuse, and the error
/// it stops with, if any.
pub fn refused(labels: &[String]) -> Option<String> {
    let bad: Vec<&str> = labels
        .iter()
        .map(|l| l.split_once('=').map_or(l.as_str(), |(k, _)| k))
        .filter(|k| !kubelet_may_set(k))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {bad:?}; --node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix (kubelet.kubernetes.io, node.kubernetes.io) or be in the specifically allowed set"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_list() {
        for ok in [
            "tier",
            "example.com/gpu",
            "node.kubernetes.io/role",
            "x.node.kubernetes.io/y",
            "kubelet.kubernetes.io/z",
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
            "notkubernetes.io/x",
        ] {
            assert!(kubelet_may_set(ok), "{ok}");
        }
        for no in [
            "node-role.kubernetes.io/worker",
            "kubernetes.io/role",
            "foo.k8s.io/x",
            "k8s.io/x",
            "topology.kubernetes.io/rack",
        ] {
            assert!(!kubelet_may_set(no), "{no}");
        }
        assert_eq!(refused(&["tier=web".into()]), None);
        let e = refused(&["node-role.kubernetes.io/worker=true".into()]).unwrap();
        assert!(e.contains("node-role.kubernetes.io/worker"), "{e}");
    }
}
