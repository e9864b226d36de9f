//! Pod addresses: the hook where the data plane gives a pod its `podIP`
//! when the kubelet starts it ([`ApiStore::pod_ip`], called by the
//! scheduler; `hostIP` is the node's InternalIP, set beside it).
//!
//! Here, only what k3s's defaults make certain: a `hostNetwork` pod has
//! its node's address; any other pod gets the next free address of its
//! node's `spec.podCIDR` (`objects::new_node` gives node i 10.42.i.0/24:
//! k3s's documented default `--cluster-cidr` 10.42.0.0/16, docs.k3s.io
//! "Server CLI options"; k3s-facts.md does not state it). Addresses start
//! at `.2`: flannel's host-local IPAM leaves the network address and `.1`
//! (the node's cni0 gateway) out; that is from flannel's CNI config and
//! not read from its source here. The data plane
//! (issue 25, item 1) owns the rules of pod networking and may replace
//! this body.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::ApiStore;
use crate::world::kube::objects;

impl ApiStore {
    /// The address the pod gets on `node`, or `None` when the node has no
    /// pod CIDR or it is full.
    pub(super) fn pod_ip(&self, pod: &Value, node: &Value) -> Option<String> {
        if pod["spec"]["hostNetwork"] == true {
            return Some(objects::node_internal_ip(node));
        }
        let cidr = node["spec"]["podCIDR"].as_str()?;
        let (net, bits) = cidr.split_once('/')?;
        let net: Ipv4Addr = net.parse().ok()?;
        let bits: u32 = bits.parse().ok().filter(|b| (8..=30).contains(b))?;
        let size = 1u32 << (32 - bits);
        let base = u32::from(net);
        let used: Vec<&str> = self
            .objects
            .iter()
            .filter(|((_, r, _, _), p)| {
                r == "pods"
                    && p["spec"]["nodeName"] == node["metadata"]["name"]
                    && p["metadata"]["uid"] != pod["metadata"]["uid"]
            })
            .filter_map(|(_, p)| p["status"]["podIP"].as_str())
            .collect();
        (2..size - 1)
            .map(|i| Ipv4Addr::from(base + i).to_string())
            .find(|ip| !used.contains(&ip.as_str()))
    }
}
