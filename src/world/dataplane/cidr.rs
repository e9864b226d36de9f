//! IPv4 CIDRs as k3s and flannel use them: the cluster CIDR cut into one
//! slice per node, a pod address from its node's slice. Facts:
//! `docs/facts/data-plane.md` "Addresses".

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

/// k3s's defaults (`pkg/cli/cmds/server.go`, facts "Addresses"); the
/// world's `k3s_config` reads the same defaults from a node's config.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
pub const DEFAULT_CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
/// kube-controller-manager's `node-cidr-mask-size` default (facts
/// "Addresses": `NodeCIDRMaskSize = 24`).
pub const NODE_CIDR_MASK: u8 = 24;

/// An IPv4 network: address with the host bits cleared, prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Reads `a.b.c.d/n`; the host bits must be zero, as Kubernetes
    /// requires of a CIDR it is given.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0-32"))?;
        let c = Cidr {
            net: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        };
        if c.net != ip {
            return Err(format!("{s:?} has host bits set (the network is {c})"));
        }
        Ok(c)
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.net)
    }

    /// How many addresses it spans.
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`-th address (0 is the network address itself).
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.net) + n as u32))
    }

    /// The `index`-th slice of length `prefix` (the node IPAM's n-th
    /// allocation); `None` past the end or when `prefix` is shorter than
    /// this network's.
    pub fn subnet(&self, prefix: u8, index: usize) -> Option<Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << u32::from(prefix - self.prefix);
        let index = index as u64;
        (index < count).then(|| Cidr {
            net: Ipv4Addr::from(u32::from(self.net) + (index << (32 - u32::from(prefix))) as u32),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The pod CIDR of the node registered `index`-th (from 0): the node IPAM's
/// next free `/24` of the cluster CIDR (facts "Addresses"); an error naming
/// the cluster CIDR when it has no slice left.
pub fn node_pod_cidr(cluster: &Cidr, index: usize) -> Result<Cidr, String> {
    cluster.subnet(NODE_CIDR_MASK, index).ok_or_else(|| {
        format!(
            "the cluster CIDR {cluster} has no /{NODE_CIDR_MASK} left for a node \
             (node number {}): give k3s a larger cluster-cidr",
            index + 1
        )
    })
}

/// The index of the first slice of k3s's default cluster CIDR that no
/// node holds (`taken`: the nodes' `spec.podCIDR`s), for the node IPAM's
/// next allocation. The world gives every cluster the default cluster
/// CIDR: a fleet's `cluster-cidr` is not applied to its Nodes. With all
/// 256 slices taken it answers 256, whose `10.42.256.0/24` parses as no
/// CIDR: the node then has no pod CIDR, as when the IPAM has none left.
pub fn free_node_slice(taken: &BTreeSet<String>) -> usize {
    let Ok(cluster) = Cidr::parse(DEFAULT_CLUSTER_CIDR) else {
        return 0;
    };
    (0..)
        .find(|i| {
            node_pod_cidr(&cluster, *i).is_ok_and(|c| !taken.contains(&c.to_string())) || *i >= 256
        })
        .unwrap_or(0)
}

/// The address on a node's `cni0` bridge: the first host address of its
/// pod CIDR (flannel's CNI delegate has `isDefaultGateway`, facts
/// "Addresses").
pub fn bridge_ip(pod_cidr: &Cidr) -> Option<Ipv4Addr> {
    pod_cidr.nth(1)
}

/// The address `flannel.1` holds on a node: the pod CIDR's network
/// address, which is where traffic from the node itself to another node's
/// pods comes from. [?]: flannel's VXLAN backend gives the device the
/// lease's first address; read in `vxlan_network.go` (`nw.dev.Configure`
/// with the lease's network) but not line-cited in the facts file.
pub fn vxlan_ip(pod_cidr: &Cidr) -> Ipv4Addr {
    pod_cidr.net
}

/// The next pod address on a node: the lowest free one from `.2` (`.0` is
/// the network and flannel.1, `.1` is `cni0`), below the broadcast
/// address. Host-local IPAM's real order (round-robin after the last one
/// given) is not modelled (facts "Addresses", marked [?]).
pub fn next_pod_ip(pod_cidr: &Cidr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let last = pod_cidr.size().checked_sub(1)?;
    (2..last)
        .filter_map(|n| pod_cidr.nth(n))
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let c = Cidr::parse(DEFAULT_CLUSTER_CIDR).unwrap();
        assert_eq!(c.to_string(), "10.42.0.0/16");
        assert!(c.contains("10.42.255.3".parse().unwrap()));
        assert!(!c.contains("10.43.0.10".parse().unwrap()));
        let e = Cidr::parse("10.42.1.0/16").unwrap_err();
        assert!(e.contains("host bits") && e.contains("10.42.0.0/16"), "{e}");
        assert!(Cidr::parse("10.42.0.0").is_err());
        assert!(Cidr::parse("10.42.0.0/33").is_err());
        assert!(Cidr::parse("10.42.0/16").is_err());
        assert_eq!(
            Cidr::parse("0.0.0.0/0").unwrap().nth(5),
            Some(Ipv4Addr::new(0, 0, 0, 5))
        );
    }

    #[test]
    fn each_node_gets_its_own_slash_24_until_the_slash_16_is_full() {
        let c = Cidr::parse(DEFAULT_CLUSTER_CIDR).unwrap();
        assert_eq!(node_pod_cidr(&c, 0).unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(node_pod_cidr(&c, 1).unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(
            node_pod_cidr(&c, 255).unwrap().to_string(),
            "10.42.255.0/24"
        );
        let e = node_pod_cidr(&c, 256).unwrap_err();
        assert!(
            e.contains("10.42.0.0/16") && e.contains("node number 257"),
            "{e}"
        );
        let other = Cidr::parse("10.60.0.0/20").unwrap();
        assert_eq!(
            node_pod_cidr(&other, 15).unwrap().to_string(),
            "10.60.15.0/24"
        );
        assert!(node_pod_cidr(&other, 16).is_err());
        // A cluster CIDR smaller than a node's slice gives none.
        assert!(node_pod_cidr(&Cidr::parse("10.42.0.0/25").unwrap(), 0).is_err());
    }

    #[test]
    fn a_deleted_nodes_slice_is_given_again() {
        let taken: BTreeSet<String> = ["10.42.0.0/24", "10.42.2.0/24"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(free_node_slice(&taken), 1);
        assert_eq!(free_node_slice(&BTreeSet::new()), 0);
    }

    #[test]
    fn pod_addresses_start_after_the_bridge_and_stop_before_broadcast() {
        let c = Cidr::parse("10.42.3.0/24").unwrap();
        assert_eq!(vxlan_ip(&c), Ipv4Addr::new(10, 42, 3, 0));
        assert_eq!(bridge_ip(&c), Some(Ipv4Addr::new(10, 42, 3, 1)));
        let mut used = BTreeSet::new();
        let first = next_pod_ip(&c, &used).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 42, 3, 2));
        used.insert(first);
        assert_eq!(next_pod_ip(&c, &used), Some(Ipv4Addr::new(10, 42, 3, 3)));
        // A freed address is reused.
        used.insert(Ipv4Addr::new(10, 42, 3, 3));
        used.remove(&first);
        assert_eq!(next_pod_ip(&c, &used), Some(first));
        // 253 pods fit (.2 to .254); the 254th gets nothing.
        let all: BTreeSet<Ipv4Addr> = (2..255).map(|n| c.nth(n).unwrap()).collect();
        assert_eq!(all.len(), 253);
        assert_eq!(next_pod_ip(&c, &all), None);
    }
}
