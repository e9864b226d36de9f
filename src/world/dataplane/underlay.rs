//! The world's side of the data plane: which flows pass between two
//! nodes' VMs (the tailnet and its policy, `Model::route_port`), each
//! node's flannel settings from its k3s config, and what else a cluster's
//! snapshot is built from ([`settings`]; the snapshot and its cache are
//! `cache`'s). Pure: reads the model, changes nothing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::cache::Settings;
use super::cidr::DEFAULT_CLUSTER_DNS;
use super::{Proto, TAILNET_IFACE, TAILSCALE_MTU, Underlay, VXLAN_OVERHEAD};
use crate::world::k3s::Phase;
use crate::world::model::Model;

/// The MTU of an interface other than `tailscale0`. [?]: an exe.dev VM's
/// `eth0` MTU is not in the facts files; 1500 (Ethernet's) is assumed. It
/// matters little: VXLAN on that interface reaches no other VM anyway.
const OTHER_IFACE_MTU: u32 = 1500;

/// The tailnet between the cluster's VMs.
pub struct World<'a> {
    m: &'a Model,
    /// Node name → VM.
    vm_of: BTreeMap<String, String>,
}

impl<'a> World<'a> {
    /// The underlay of the VMs whose k3s runs `cluster`'s nodes.
    pub fn new(m: &'a Model, cluster: &str) -> World<'a> {
        let vm_of = m
            .vms
            .keys()
            .filter_map(|vm| {
                let (_, p) = m.any_proc(vm)?;
                (p.cluster.as_deref() == Some(cluster)).then(|| (p.node_name.clone(), vm.clone()))
            })
            .collect();
        World { m, vm_of }
    }

    /// The VM a node runs on.
    pub fn vm_of(&self, node: &str) -> Option<&str> {
        self.vm_of.get(node).map(String::as_str)
    }

    /// Each running node's `flannel-iface` and flannel MTU (the
    /// interface's MTU − 50, facts "flannel VXLAN").
    fn flannel(&self) -> BTreeMap<String, (Option<String>, u32)> {
        self.vm_of
            .iter()
            .filter_map(|(node, vm)| {
                let (_, p) = self.m.any_proc(vm)?;
                if p.phase != Phase::Ready {
                    return None;
                }
                let iface = p.cfg.get("flannel-iface").map(str::to_string);
                let mtu = if iface.as_deref() == Some(TAILNET_IFACE) {
                    TAILSCALE_MTU
                } else {
                    OTHER_IFACE_MTU
                };
                Some((node.clone(), (iface, mtu - VXLAN_OVERHEAD)))
            })
            .collect()
    }
}

impl Underlay for World<'_> {
    fn passes(&self, from: &str, to: &str, proto: Proto, port: u16) -> bool {
        let (Some(a), Some(b)) = (self.vm_of(from), self.vm_of(to)) else {
            return false;
        };
        let Some(ip) = self.m.tailnet_ip(b) else {
            return false;
        };
        self.m.route_port(a, ip, proto, port).as_deref() == Some(b)
    }

    /// The tailnet carries `tailscale0`'s MTU between any two devices
    /// (facts "flannel VXLAN"); the world models no smaller path.
    fn path_mtu(&self, _from: &str, _to: &str) -> u32 {
        TAILSCALE_MTU
    }
}

/// The [`Settings`] of the cluster `w` runs, read from the model now.
pub fn settings(w: &World<'_>) -> Settings {
    let cfg = w
        .vm_of
        .values()
        .find_map(|vm| w.m.any_proc(vm).map(|(_, p)| &p.cfg));
    let dns = cfg
        .and_then(|c| c.get("cluster-dns"))
        .and_then(|d| d.parse::<Ipv4Addr>().ok())
        .unwrap_or(DEFAULT_CLUSTER_DNS);
    let domain = cfg
        .and_then(|c| c.get("cluster-domain"))
        .unwrap_or("cluster.local")
        .to_string();
    Settings {
        flannel: w.flannel(),
        dns,
        domain,
    }
}
