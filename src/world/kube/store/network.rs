//! Pod addresses: the hook where the data plane gives a pod its `podIP`
//! when the kubelet starts it ([`ApiStore::pod_ip`], called by the
//! scheduler; `hostIP` is the node's InternalIP, set beside it). The rules
//! are the data plane's (`world::dataplane::cidr`, facts
//! `docs/facts/data-plane.md` "Addresses"): a `hostNetwork` pod has its
//! node's address; any other pod the lowest free address from `.2` of its
//! node's `spec.podCIDR` (`.0` is flannel.1's, `.1` cni0's).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::ApiStore;
use crate::world::dataplane::cidr::{Cidr, next_pod_ip};
use crate::world::kube::objects;

impl ApiStore {
    /// The address the pod gets on `node`, or `None` when the node has no
    /// pod CIDR or it is full.
    pub(super) fn pod_ip(&self, pod: &Value, node: &Value) -> Option<String> {
        if pod["spec"]["hostNetwork"] == true {
            return Some(objects::node_internal_ip(node));
        }
        let cidr = Cidr::parse(node["spec"]["podCIDR"].as_str()?).ok()?;
        let used: BTreeSet<Ipv4Addr> = self
            .objects
            .iter()
            .filter(|((_, r, _, _), p)| {
                r == "pods"
                    && p["spec"]["nodeName"] == node["metadata"]["name"]
                    && p["metadata"]["uid"] != pod["metadata"]["uid"]
            })
            .filter_map(|(_, p)| p["status"]["podIP"].as_str()?.parse().ok())
            .collect();
        next_pod_ip(&cidr, &used).map(|ip| ip.to_string())
    }
}
