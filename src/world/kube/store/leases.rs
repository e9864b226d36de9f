//! Node Leases: the kubelet's heartbeat. Each kubelet keeps a
//! `coordination.k8s.io/v1` Lease named after its node in
//! `kube-node-lease`, held by the node, 40 s long, owned by the Node, and
//! renews it every 10 s (a quarter of the duration) while it runs
//! (kubernetes/kubernetes pkg/kubelet/kubelet.go: `nodeLeaseRenewIntervalFraction
//! = 0.25`; `NodeLeaseDurationSeconds` default 40 in
//! pkg/kubelet/apis/config/v1beta1/defaults.go; kubernetes.io/docs/concepts/architecture/leases/).
//! A node whose kubelet stopped (not Ready) is not renewed. `kubectl
//! describe node` reads it for its `Lease:` block.

use serde_json::json;

use super::{ApiStore, key, owner_ref};
use crate::world::kube::objects;

/// How long a node Lease lasts, seconds.
const LEASE_SECONDS: u64 = 40;
/// Renewal every quarter of it.
const RENEW_MS: u64 = LEASE_SECONDS * 1000 / 4;

/// A `MicroTime` as the API writes it (`2024-01-02T03:04:05.123000Z`):
/// clients parse it with exactly six fractional digits.
pub(crate) fn micro_time(ms: u64) -> String {
    let s = objects::rfc3339(ms);
    format!("{}.{:06}Z", s.trim_end_matches('Z'), (ms % 1000) * 1000)
}

/// Milliseconds of a [`micro_time`].
fn parse_micro_time(t: &str) -> Option<u64> {
    let ms = t
        .get(20..23)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    Some(objects::parse_rfc3339(t)? + ms)
}

impl ApiStore {
    /// Creates or renews the Lease of every Ready node whose last renewal is
    /// at least [`RENEW_MS`] old.
    pub(super) fn renew_leases(&mut self, now_ms: u64) {
        // Looked at once a second: renewals land within a second of due,
        // and the world's 10 ms ticks do not scan every node each time.
        if self.leases_checked_ms.is_some_and(|at| now_ms < at + 1000) {
            return;
        }
        self.leases_checked_ms = Some(now_ms);
        let due: Vec<_> = self
            .objects
            .iter()
            .filter(|((_, r, _, _), n)| r == "nodes" && objects::node_ready(n))
            .map(|(_, n)| n.clone())
            .filter(|n| {
                let name = n["metadata"]["name"].as_str().unwrap_or_default();
                self.objects
                    .get(&key(&objects::LEASES, "kube-node-lease", name))
                    .and_then(|l| parse_micro_time(l["spec"]["renewTime"].as_str()?))
                    .is_none_or(|at| now_ms >= at + RENEW_MS)
            })
            .collect();
        for node in due {
            let name = node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let k = key(&objects::LEASES, "kube-node-lease", &name);
            let renew = micro_time(now_ms);
            match self.objects.get(&k).cloned() {
                Some(mut l) => {
                    l["spec"]["renewTime"] = json!(renew);
                    self.put(&objects::LEASES, l);
                }
                None => {
                    let lease = json!({"metadata": {"name": name, "ownerReferences": [owner_ref(&node)]},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                                 "renewTime": renew}});
                    let _ = self.create(&objects::LEASES, "kube-node-lease", lease);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_nodes_hold_a_lease_renewed_every_ten_seconds() {
        let mut s = super::super::tests::cluster();
        let l = s.get(&objects::LEASES, "kube-node-lease", "n1").unwrap();
        assert_eq!(l["spec"]["holderIdentity"], "n1");
        assert_eq!(l["metadata"]["ownerReferences"][0]["kind"], "Node");
        let first = l["spec"]["renewTime"].clone();
        s.tick(5_000);
        assert_eq!(
            s.get(&objects::LEASES, "kube-node-lease", "n1").unwrap()["spec"]["renewTime"],
            first
        );
        s.tick(10_010);
        let l = s.get(&objects::LEASES, "kube-node-lease", "n1").unwrap();
        assert_eq!(l["spec"]["renewTime"], micro_time(10_010));
        assert_eq!(micro_time(1_500), "1970-01-01T00:00:01.500000Z");
        s.node_not_ready("n1", 11_000);
        s.tick(30_000);
        assert_eq!(
            s.get(&objects::LEASES, "kube-node-lease", "n1").unwrap()["spec"]["renewTime"],
            micro_time(10_010)
        );
        // The Lease goes with its Node.
        s.delete(&objects::NODES, "", "n1").unwrap();
        assert!(s.get(&objects::LEASES, "kube-node-lease", "n1").is_err());
    }
}
