//! Which node labels a kubelet may set on its own Node, and so which fleet
//! labels can travel in k3s's `node-label` (applied at registration by the
//! kubelet) and which must be applied through the API once the Node exists.
//!
//! The rule is the kubelet's own (`cmd/kubelet/app/options/options.go`
//! `isKubernetesLabel`, `pkg/kubelet/apis/well_known_labels.go`
//! `IsKubeletLabel`): a key whose prefix is `kubernetes.io` or `k8s.io`, or
//! a subdomain of either, is refused ("unknown 'kubernetes.io' or 'k8s.io'
//! labels specified with --node-labels", and the kubelet does not start)
//! unless it is in the allowed set below or its prefix is, or ends in,
//! `kubelet.kubernetes.io` / `node.kubernetes.io`. So
//! `node-role.kubernetes.io/worker` must never reach `node-label`.
//!
//! Also which taints Kubernetes itself sets and removes
//! ([`is_system_taint`]: never the fleet's business), so the plan and the
//! cluster leave the same ones alone. Pure.

/// Exact keys a kubelet may set although they are in a Kubernetes namespace
/// (the union over the Kubernetes releases k3s ships: legacy beta keys and
/// their GA successors).
pub const KUBELET_ALLOWED_KEYS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.kubernetes.io/zone",
    "failure-domain.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

/// Label prefixes (and their subdomains) a kubelet may always set.
pub const KUBELET_ALLOWED_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn prefix(key: &str) -> &str {
    key.split_once('/').map_or("", |(p, _)| p)
}

fn in_namespace(prefix: &str, ns: &str) -> bool {
    prefix == ns
        || prefix
            .strip_suffix(ns)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// True when a kubelet may set `key` on its own Node at registration.
pub fn kubelet_may_set(key: &str) -> bool {
    let p = prefix(key);
    let kubernetes = in_namespace(p, "kubernetes.io") || in_namespace(p, "k8s.io");
    !kubernetes
        || KUBELET_ALLOWED_KEYS.contains(&key)
        || KUBELET_ALLOWED_NAMESPACES
            .iter()
            .any(|ns| in_namespace(p, ns))
}

/// Taints Kubernetes itself sets and removes (not-ready, unreachable,
/// unschedulable, disk-pressure, cloud-provider uninitialized...): never
/// drift, never touched by the tool.
pub fn is_system_taint(taint_or_key: &str) -> bool {
    taint_or_key.starts_with("node.kubernetes.io/")
        || taint_or_key.starts_with("node.cloudprovider.kubernetes.io/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_rule_as_a_table() {
        for (key, allowed) in [
            ("team", true),
            ("example.com/tier", true),
            ("exedev-k8s.io/pool", true),
            ("node.kubernetes.io/role", true),
            ("x.node.kubernetes.io/role", true),
            ("kubelet.kubernetes.io/anything", true),
            ("topology.kubernetes.io/zone", true),
            ("kubernetes.io/hostname", true),
            ("beta.kubernetes.io/arch", true),
            ("node-role.kubernetes.io/worker", false),
            ("node-role.kubernetes.io/control-plane", false),
            ("kubernetes.io/role", false),
            ("k8s.io/x", false),
            ("sub.k8s.io/x", false),
            ("topology.kubernetes.io/rack", false),
            ("node-restriction.kubernetes.io/x", false),
            // Not a subdomain: only a dot makes one.
            ("evilkubernetes.io/x", true),
            ("notnode.kubernetes.io/x", false),
        ] {
            assert_eq!(kubelet_may_set(key), allowed, "{key}");
        }
    }
}
