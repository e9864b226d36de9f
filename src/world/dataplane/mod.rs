//! The cluster's data plane, pure: which pod (and port) a connection from
//! a pod or a node to `IP:port` reaches, or the named reason it does not.
//! Every rule is in `docs/facts/data-plane.md`; the section is named at
//! each rule.
//!
//! What it models: pod addresses from each node's pod CIDR ([`cidr`]);
//! pod-to-pod traffic on one node over `cni0`, across nodes over flannel's
//! VXLAN (UDP 8472 between the two nodes' tailnet addresses, both ways, as
//! far as the tailnet policy lets it: the [`Underlay`]), on the flannel
//! interface only when that is the tailnet, and within the path MTU;
//! Services (ClusterIP, NodePort) to Ready endpoints; hostPort (CNI
//! portmap); CoreDNS names; the API server on each Ready server's 6443
//! behind `default/kubernetes`. What it does not: NetworkPolicy, session
//! affinity, `externalTrafficPolicy: Local`, IPv6, random endpoint choice
//! (the first reachable Ready endpoint in name order answers).
//!
//! [`Net`] is a snapshot built from the API objects ([`Net::from_objects`]);
//! the world keeps a cluster's last one with its API store and builds a
//! new one, under its lock, only when an object or a node's flannel/DNS
//! settings changed (`cache::NetCache`).

pub mod cache;
pub mod cidr;
pub mod http;
pub mod netexec;
pub mod services;
pub mod underlay;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;

use cidr::Cidr;
use netexec::Netexec;

pub use crate::world::tailnet::Proto;

/// flannel's VXLAN port on Linux (facts "flannel VXLAN": kernel default).
pub const VXLAN_PORT: u16 = 8472;
/// VXLAN's encapsulation overhead flannel subtracts (`encapOverhead`).
pub const VXLAN_OVERHEAD: u32 = 50;
/// `tailscale0`'s MTU (facts "flannel VXLAN", `net/tstun/mtu.go:79`).
pub const TAILSCALE_MTU: u32 = 1280;
/// The interface our templates give flannel.
pub const TAILNET_IFACE: &str = "tailscale0";
/// CoreDNS's port.
pub const DNS_PORT: u16 = 53;
/// The API server's port on each server node (k3s-facts "Ports": 6443).
pub const API_PORT: u16 = 6443;
/// The `kubernetes` Service's address: the first of the service CIDR
/// (facts "`exedev-k8s check`": cluster-ip-allocation docs).
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);

/// The network beneath the cluster: which flows pass between two nodes'
/// tailnet addresses (the world answers from its tailnet policy) and the
/// path MTU between them.
pub trait Underlay {
    /// Does `proto`/`port` from node `from` to node `to` pass?
    fn passes(&self, from: &str, to: &str, proto: Proto, port: u16) -> bool;
    /// The largest packet the underlay carries from `from` to `to`.
    fn path_mtu(&self, from: &str, to: &str) -> u32;
}

/// One node as the data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    pub name: String,
    /// Its InternalIP (on our clusters, the tailnet address).
    pub ip: Option<Ipv4Addr>,
    pub pod_cidr: Option<Cidr>,
    pub ready: bool,
    /// `flannel-iface` (`None`: the default route's interface).
    pub flannel_iface: Option<String>,
    /// The MTU flannel gives pods (interface MTU − 50 by default).
    pub flannel_mtu: u32,
}

impl NodeNet {
    /// VXLAN runs over the tailnet only when flannel's interface is the
    /// tailnet's (facts "flannel VXLAN"; k3s facts: exe.dev VMs reach each
    /// other only through the overlay).
    fn vxlan_on_tailnet(&self) -> bool {
        self.flannel_iface.as_deref() == Some(TAILNET_IFACE)
    }
}

/// What a pod runs, as far as the network sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    Netexec(Netexec),
    /// CoreDNS: answers DNS on UDP 53.
    Dns,
    /// A server's k3s API server on its node's 6443 (TLS). k3s runs it in
    /// its own process, not a pod: [`Net::from_objects`] stands in a
    /// host-network listener for it on each server whose API answers.
    ApiServer,
    /// Runs and serves nothing (every other image).
    Silent,
}

/// A container port, with its `hostPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub proto: Proto,
    pub host_port: Option<u16>,
}

/// One pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNet {
    pub ns: String,
    pub name: String,
    pub node: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub running: bool,
    /// Its sandbox is up (the CNI gave it its address) and its containers
    /// are being created: nothing listens on its address yet.
    pub creating: bool,
    pub ready: bool,
    pub host_network: bool,
    pub labels: serde_json::Map<String, Value>,
    pub app: App,
    pub ports: Vec<ContainerPort>,
}

impl PodNet {
    /// Does its process listen on `port`/`proto`?
    fn listens(&self, port: u16, proto: Proto) -> bool {
        match &self.app {
            App::Netexec(n) => match proto {
                Proto::Tcp => n.http_port == port,
                Proto::Udp => n.udp_port == Some(port),
            },
            App::Dns => proto == Proto::Udp && port == DNS_PORT,
            App::ApiServer => proto == Proto::Tcp && port == API_PORT,
            App::Silent => false,
        }
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// A Service port; `target` a number or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub proto: Proto,
    pub target: Target,
    pub node_port: Option<u16>,
}

/// `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Number(u16),
    Name(String),
}

/// One Service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceNet {
    pub ns: String,
    pub name: String,
    pub cluster_ip: Option<Ipv4Addr>,
    /// `None`: no selector (endpoints managed by hand: none here).
    pub selector: Option<serde_json::Map<String, Value>>,
    pub ports: Vec<ServicePort>,
}

/// The snapshot the data plane answers from.
#[derive(Debug, Clone, PartialEq)]
pub struct Net {
    pub nodes: Vec<NodeNet>,
    pub pods: Vec<PodNet>,
    pub services: Vec<ServiceNet>,
    pub cluster_dns: Ipv4Addr,
    pub domain: String,
}

/// Where a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From<'a> {
    /// A pod, `namespace`, `name`.
    Pod(&'a str, &'a str),
    /// A process on a node (its host network), by node name.
    Node(&'a str),
}

/// How a connection got to its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    PodIp,
    Service { ns: String, name: String },
    NodePort { node: String },
    HostPort { node: String },
}

/// A connection that reached a listening pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Reached<'a> {
    pub pod: &'a PodNet,
    /// The pod's port it reached.
    pub port: u16,
    pub via: Via,
    /// The caller's address as the pod sees it (`/clientip`'s IP).
    pub client_ip: Ipv4Addr,
}

/// Why a connection did not reach a listener: each names the thing and the
/// likely cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The source pod is not running or has no address, or the source
    /// node is unknown.
    NoSource(String),
    /// Nothing answers for the address (not a pod, Service or node): the
    /// connect times out.
    NoRoute(Ipv4Addr),
    /// A node's pod traffic cannot reach another node: no tailnet address,
    /// not Ready, or no pod CIDR yet.
    NodeDown { node: String, why: String },
    /// flannel's interface is not the tailnet, so VXLAN goes where the
    /// other node cannot be reached.
    FlannelIface { node: String, iface: String },
    /// The tailnet policy drops UDP 8472 from one node to the other.
    VxlanBlocked { from: String, to: String },
    /// A node's flannel MTU + 50 exceeds the path's MTU and the exchange
    /// has packets that large.
    Mtu {
        from: String,
        to: String,
        flannel_mtu: u32,
        path_mtu: u32,
    },
    /// A node's address on a port: the tailnet policy drops the flow.
    NodePortBlocked {
        from: String,
        to: String,
        port: u16,
        proto: Proto,
    },
    /// The address answers but nothing listens on the port.
    Refused(SocketAddrV4),
    /// A Service whose selector matches no Ready pod (kube-proxy rejects).
    NoEndpoints { ns: String, name: String },
    /// DNS: no CoreDNS pod answered.
    DnsUnreachable(Box<Failure>),
    /// DNS: the name does not exist.
    NoSuchHost(String),
}

impl Failure {
    /// Whether a client sees a timeout (the packet was dropped) rather
    /// than a refusal.
    pub fn times_out(&self) -> bool {
        !matches!(
            self,
            Failure::Refused(_) | Failure::NoEndpoints { .. } | Failure::NoSuchHost(_)
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoSource(s) => write!(f, "{s}"),
            Failure::NoRoute(ip) => write!(f, "no pod, Service or node has address {ip}"),
            Failure::NodeDown { node, why } => {
                write!(f, "node {node} carries no pod traffic: {why}")
            }
            Failure::FlannelIface { node, iface } => write!(
                f,
                "node {node}'s flannel uses interface {iface}, not {TAILNET_IFACE}: VXLAN to other \
                 nodes goes where exe.dev VMs cannot reach each other; set flannel-iface: {TAILNET_IFACE}"
            ),
            Failure::VxlanBlocked { from, to } => write!(
                f,
                "pod traffic from node {from} to node {to} is dropped: the tailnet policy does not \
                 accept udp/{VXLAN_PORT} (flannel VXLAN) from {from} to {to}; add it to the policy's acls"
            ),
            Failure::Mtu {
                from,
                to,
                flannel_mtu,
                path_mtu,
            } => write!(
                f,
                "large packets from node {from} to node {to} are dropped: flannel's MTU {flannel_mtu} \
                 plus {VXLAN_OVERHEAD} bytes of VXLAN exceeds the path MTU {path_mtu}; give flannel an \
                 MTU of at most {}",
                path_mtu.saturating_sub(VXLAN_OVERHEAD)
            ),
            Failure::NodePortBlocked {
                from,
                to,
                port,
                proto,
            } => write!(
                f,
                "the tailnet policy does not accept {}/{port} from node {from} to node {to}",
                proto_name(*proto)
            ),
            Failure::Refused(a) => write!(f, "connection refused: nothing listens on {a}"),
            Failure::NoEndpoints { ns, name } => write!(
                f,
                "Service {ns}/{name} has no Ready endpoints (no Ready pod matches its selector)"
            ),
            Failure::DnsUnreachable(why) => {
                write!(f, "cluster DNS does not answer: {why}")
            }
            Failure::NoSuchHost(h) => write!(f, "DNS: no such host {h:?}"),
        }
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

impl Net {
    fn node(&self, name: &str) -> Option<&NodeNet> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A pod by namespace and name.
    pub fn pod(&self, ns: &str, name: &str) -> Option<&PodNet> {
        self.pods.iter().find(|p| p.ns == ns && p.name == name)
    }

    /// The node a connection starts on and the address it comes from.
    fn source(&self, from: From<'_>) -> Result<(&NodeNet, Ipv4Addr), Failure> {
        match from {
            From::Pod(ns, name) => {
                let p = self
                    .pod(ns, name)
                    .ok_or_else(|| Failure::NoSource(format!("no pod {ns}/{name}")))?;
                let (Some(node), Some(ip), true) = (&p.node, p.ip, p.running) else {
                    return Err(Failure::NoSource(format!(
                        "pod {ns}/{name} is not running with an address"
                    )));
                };
                let n = self.node(node).ok_or_else(|| {
                    Failure::NoSource(format!("pod {ns}/{name}'s node {node} is gone"))
                })?;
                Ok((n, ip))
            }
            From::Node(name) => {
                let n = self
                    .node(name)
                    .ok_or_else(|| Failure::NoSource(format!("no node {name}")))?;
                let ip = n.ip.ok_or_else(|| Failure::NodeDown {
                    node: name.to_string(),
                    why: "it has no address".into(),
                })?;
                Ok((n, ip))
            }
        }
    }

    /// Pod traffic from node `a` to node `b` over flannel's VXLAN, with
    /// its largest packet `size` bytes (facts "flannel VXLAN"). Same node:
    /// `cni0`, always.
    fn overlay(
        &self,
        a: &NodeNet,
        b: &NodeNet,
        size: u32,
        u: &dyn Underlay,
    ) -> Result<(), Failure> {
        if a.name == b.name {
            return Ok(());
        }
        for n in [a, b] {
            let why = if n.ip.is_none() {
                Some("it has no tailnet address")
            } else if n.pod_cidr.is_none() {
                Some("it has no pod CIDR (spec.podCIDR) yet")
            } else if !n.ready {
                Some("it is not Ready (its k3s, and flannel with it, is not running)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Failure::NodeDown {
                    node: n.name.clone(),
                    why: why.into(),
                });
            }
            if !n.vxlan_on_tailnet() {
                return Err(Failure::FlannelIface {
                    node: n.name.clone(),
                    iface: n
                        .flannel_iface
                        .clone()
                        .unwrap_or_else(|| "(default route)".into()),
                });
            }
        }
        // A TCP exchange needs both directions (replies travel back
        // through the other node's VXLAN).
        for (x, y) in [(a, b), (b, a)] {
            if !u.passes(&x.name, &y.name, Proto::Udp, VXLAN_PORT) {
                return Err(Failure::VxlanBlocked {
                    from: x.name.clone(),
                    to: y.name.clone(),
                });
            }
        }
        for (x, y) in [(a, b), (b, a)] {
            let path = u.path_mtu(&x.name, &y.name);
            let packet = size.min(x.flannel_mtu).min(y.flannel_mtu);
            if packet + VXLAN_OVERHEAD > path {
                return Err(Failure::Mtu {
                    from: x.name.clone(),
                    to: y.name.clone(),
                    flannel_mtu: x.flannel_mtu,
                    path_mtu: path,
                });
            }
        }
        Ok(())
    }

    /// A connection from `from` to `ip:port` whose largest packet is `size`
    /// bytes: the pod that answers, or why none does.
    pub fn connect(
        &self,
        from: From<'_>,
        ip: Ipv4Addr,
        port: u16,
        proto: Proto,
        size: u32,
        u: &dyn Underlay,
    ) -> Result<Reached<'_>, Failure> {
        let (src, src_ip) = self.source(from)?;
        // A Service's cluster IP: kube-proxy on the source node sends it
        // to an endpoint (facts "Services").
        if let Some(svc) = self.services.iter().find(|s| s.cluster_ip == Some(ip)) {
            let Some(sp) = svc
                .ports
                .iter()
                .find(|p| p.port == port && p.proto == proto)
            else {
                return Err(Failure::NoRoute(ip));
            };
            return self
                .to_endpoints(svc, sp, src, src_ip, size, u)
                .map(|mut r| {
                    r.via = Via::Service {
                        ns: svc.ns.clone(),
                        name: svc.name.clone(),
                    };
                    r
                });
        }
        // A pod's address.
        if let Some(p) = self
            .pods
            .iter()
            .find(|p| p.ip == Some(ip) && !p.host_network)
        {
            return self.to_pod(p, port, proto, src, src_ip, size, u, Via::PodIp);
        }
        // A node's address: NodePort, hostPort, host-network pods.
        if let Some(dst) = self.nodes.iter().find(|n| n.ip == Some(ip)) {
            return self.to_node(dst, port, proto, src, src_ip, size, u);
        }
        if src.ip == Some(ip) || ip.is_loopback() {
            return self.to_node(src, port, proto, src, src_ip, size, u);
        }
        Err(Failure::NoRoute(ip))
    }

    /// Into pod `p` on `port` (its own address), from node `src`.
    #[allow(clippy::too_many_arguments)]
    fn to_pod<'a>(
        &'a self,
        p: &'a PodNet,
        port: u16,
        proto: Proto,
        src: &NodeNet,
        src_ip: Ipv4Addr,
        size: u32,
        u: &dyn Underlay,
        via: Via,
    ) -> Result<Reached<'a>, Failure> {
        let (Some(node), Some(ip)) = (&p.node, p.ip) else {
            return Err(Failure::NoRoute(p.ip.unwrap_or(Ipv4Addr::UNSPECIFIED)));
        };
        let dst = self.node(node).ok_or(Failure::NoRoute(ip))?;
        if !p.running && !p.creating {
            return Err(Failure::NoRoute(ip));
        }
        if p.host_network {
            self.node_hop(src, dst, port, proto, u)?;
        } else {
            self.overlay(src, dst, size, u)?;
        }
        // A starting pod's address exists (its sandbox's network namespace,
        // set up by the CNI before the kubelet posts `podIP`) but no
        // process listens: the kernel answers a TCP SYN with a reset (RFC
        // 9293 3.10.7.1, a segment to a CLOSED port) and a UDP datagram
        // with ICMP port unreachable (RFC 1122 4.1.3.1): refused, not
        // unroutable.
        if p.creating || !p.listens(port, proto) {
            return Err(Failure::Refused(SocketAddrV4::new(ip, port)));
        }
        Ok(Reached {
            pod: p,
            port,
            via,
            client_ip: src_ip,
        })
    }

    /// A flow from node `src` to node `dst`'s own address: over the
    /// tailnet, as its policy allows (facts k3s "Tailscale as the overlay").
    fn node_hop(
        &self,
        src: &NodeNet,
        dst: &NodeNet,
        port: u16,
        proto: Proto,
        u: &dyn Underlay,
    ) -> Result<(), Failure> {
        if src.name == dst.name {
            return Ok(());
        }
        if dst.ip.is_none() || src.ip.is_none() {
            return Err(Failure::NodeDown {
                node: if dst.ip.is_none() {
                    &dst.name
                } else {
                    &src.name
                }
                .clone(),
                why: "it has no tailnet address".into(),
            });
        }
        if u.passes(&src.name, &dst.name, proto, port) {
            Ok(())
        } else {
            Err(Failure::NodePortBlocked {
                from: src.name.clone(),
                to: dst.name.clone(),
                port,
                proto,
            })
        }
    }

    /// To a node's address: a NodePort (then on to an endpoint), a
    /// hostPort (CNI portmap DNAT to the pod), or a host-network pod.
    #[allow(clippy::too_many_arguments)]
    fn to_node<'a>(
        &'a self,
        dst: &'a NodeNet,
        port: u16,
        proto: Proto,
        src: &NodeNet,
        src_ip: Ipv4Addr,
        size: u32,
        u: &dyn Underlay,
    ) -> Result<Reached<'a>, Failure> {
        let dst_ip = dst.ip.unwrap_or(Ipv4Addr::LOCALHOST);
        self.node_hop(src, dst, port, proto, u)?;
        // From another node the source is the caller's node address.
        let client = if src.name == dst.name {
            src_ip
        } else {
            src.ip.unwrap_or(src_ip)
        };
        for svc in &self.services {
            if let Some(sp) = svc
                .ports
                .iter()
                .find(|p| p.node_port == Some(port) && p.proto == proto)
            {
                // kube-proxy on `dst` forwards (masquerading, Cluster
                // policy) to an endpoint anywhere.
                let masq = dst.pod_cidr.as_ref().map_or(dst_ip, cidr::vxlan_ip);
                return self.to_endpoints(svc, sp, dst, masq, size, u).map(|mut r| {
                    r.via = Via::NodePort {
                        node: dst.name.clone(),
                    };
                    r
                });
            }
        }
        let on_node = self
            .pods
            .iter()
            .filter(|p| p.node.as_deref() == Some(&dst.name) && p.running);
        for p in on_node {
            if let Some(cp) = p
                .ports
                .iter()
                .find(|c| c.host_port == Some(port) && c.proto == proto)
                && !p.host_network
            {
                let mut r = self.to_pod(
                    p,
                    cp.port,
                    proto,
                    dst,
                    client,
                    size,
                    u,
                    Via::HostPort {
                        node: dst.name.clone(),
                    },
                )?;
                r.client_ip = client;
                return Ok(r);
            }
            if p.host_network && p.listens(port, proto) {
                return Ok(Reached {
                    pod: p,
                    port,
                    via: Via::HostPort {
                        node: dst.name.clone(),
                    },
                    client_ip: client,
                });
            }
        }
        Err(Failure::Refused(SocketAddrV4::new(dst_ip, port)))
    }

    /// A Service's Ready endpoints, in name order (CoreDNS pods for the
    /// cluster DNS address when no Service holds it: k3s deploys the
    /// `kube-dns` Service with CoreDNS).
    pub fn endpoints<'a>(&'a self, svc: &ServiceNet) -> Vec<&'a PodNet> {
        let mut eps: Vec<&PodNet> = self
            .pods
            .iter()
            .filter(|p| (p.ns == svc.ns || p.app == App::ApiServer) && p.ready && p.running)
            .filter(|p| p.ip.is_some())
            .filter(|p| match &svc.selector {
                Some(sel) => !sel.is_empty() && sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)),
                // The API server keeps `default/kubernetes`'s endpoints
                // itself: the servers' addresses on 6443.
                None if svc.ns == "default" && svc.name == "kubernetes" => p.app == App::ApiServer,
                None => svc.cluster_ip == Some(self.cluster_dns) && p.app == App::Dns,
            })
            .collect();
        eps.sort_by(|a, b| a.name.cmp(&b.name));
        eps
    }

    #[allow(clippy::too_many_arguments)]
    fn to_endpoints<'a>(
        &'a self,
        svc: &ServiceNet,
        sp: &ServicePort,
        src: &NodeNet,
        src_ip: Ipv4Addr,
        size: u32,
        u: &dyn Underlay,
    ) -> Result<Reached<'a>, Failure> {
        let eps = self.endpoints(svc);
        let mut first_err = None;
        for p in eps {
            let port = match &sp.target {
                Target::Number(n) => *n,
                Target::Name(name) => {
                    match p.ports.iter().find(|c| c.name.as_deref() == Some(name)) {
                        Some(c) => c.port,
                        None => continue,
                    }
                }
            };
            match self.to_pod(p, port, sp.proto, src, src_ip, size, u, Via::PodIp) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| Failure::NoEndpoints {
            ns: svc.ns.clone(),
            name: svc.name.clone(),
        }))
    }

    /// What a pod's resolver answers for `name` (facts "DNS"): a literal
    /// address as it is; otherwise CoreDNS must be reachable at the cluster
    /// DNS address, then `<svc>.<ns>.svc.<domain>` through the pod's
    /// search list. A node's resolver does not use cluster DNS: only
    /// literals resolve from `From::Node`.
    pub fn resolve(
        &self,
        from: From<'_>,
        name: &str,
        u: &dyn Underlay,
    ) -> Result<Ipv4Addr, Failure> {
        if let Ok(ip) = name.parse::<Ipv4Addr>() {
            return Ok(ip);
        }
        let From::Pod(ns, _) = from else {
            return Err(Failure::NoSuchHost(name.to_string()));
        };
        self.connect(from, self.cluster_dns, DNS_PORT, Proto::Udp, 512, u)
            .and_then(|r| {
                if r.pod.app == App::Dns {
                    Ok(())
                } else {
                    Err(Failure::Refused(SocketAddrV4::new(
                        self.cluster_dns,
                        DNS_PORT,
                    )))
                }
            })
            .map_err(|e| Failure::DnsUnreachable(Box::new(e)))?;
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".svc.{}", self.domain);
        let candidates = [
            format!("{name}.{ns}{suffix}"),
            format!("{name}{suffix}"),
            format!("{name}.{}", self.domain),
            name.clone(),
        ];
        for c in &candidates {
            if let Some(rest) = c.strip_suffix(&suffix)
                && let Some((svc, sns)) = rest.split_once('.')
                && !sns.contains('.')
                && let Some(s) = self.services.iter().find(|s| s.name == svc && s.ns == sns)
                && let Some(ip) = s.cluster_ip
            {
                return Ok(ip);
            }
        }
        Err(Failure::NoSuchHost(name))
    }

    /// Builds the snapshot from API objects (Nodes, Pods, Services) and
    /// each node's flannel settings (`flannel-iface` and its MTU, from the
    /// node's k3s config; absent: the node's k3s is not running here).
    /// Each Ready server node (control-plane label, k3s running) gets a
    /// host-network [`App::ApiServer`] listener named `k3s-api-<node>` in
    /// `kube-system`: its API answers on the node's address, 6443.
    pub fn from_objects(
        nodes_json: &[Value],
        pods: &[Value],
        services: &[Value],
        flannel: &BTreeMap<String, (Option<String>, u32)>,
        cluster_dns: Ipv4Addr,
        domain: &str,
    ) -> Net {
        let nodes: Vec<NodeNet> = nodes_json
            .iter()
            .map(|n| {
                let name = str_of(&n["metadata"]["name"]);
                let ip = n["status"]["addresses"].as_array().and_then(|a| {
                    a.iter()
                        .find(|x| x["type"] == "InternalIP")
                        .and_then(|x| x["address"].as_str()?.parse().ok())
                });
                let pod_cidr = n["spec"]["podCIDR"]
                    .as_str()
                    .and_then(|c| Cidr::parse(c).ok());
                let ready = n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                let (iface, mtu) = flannel.get(&name).cloned().unwrap_or((None, 0));
                NodeNet {
                    ready: ready && flannel.contains_key(&name),
                    name,
                    ip,
                    pod_cidr,
                    flannel_iface: iface,
                    flannel_mtu: mtu,
                }
            })
            .collect();
        let mut pods: Vec<PodNet> = pods.iter().map(pod_net).collect();
        pods.extend(api_servers(nodes_json, &nodes));
        let mut services: Vec<ServiceNet> = services.iter().map(service_net).collect();
        // k3s deploys the `kube-dns` Service at `cluster-dns` with CoreDNS
        // (facts "DNS"); the world's API may not hold it as an object.
        if !services.iter().any(|s| s.cluster_ip == Some(cluster_dns)) {
            services.push(ServiceNet {
                ns: "kube-system".into(),
                name: "kube-dns".into(),
                cluster_ip: Some(cluster_dns),
                selector: None,
                ports: vec![ServicePort {
                    name: Some("dns".into()),
                    port: DNS_PORT,
                    proto: Proto::Udp,
                    target: Target::Number(DNS_PORT),
                    node_port: None,
                }],
            });
        }
        Net {
            nodes,
            pods,
            services,
            cluster_dns,
            domain: domain.to_string(),
        }
    }
}

/// The API servers that answer: one host-network listener on each Ready
/// server node with an address (a server's k3s serves 6443 while it runs;
/// `ready` already requires its k3s to run here).
fn api_servers(json: &[Value], nodes: &[NodeNet]) -> Vec<PodNet> {
    nodes
        .iter()
        .filter(|n| n.ready && n.ip.is_some())
        .filter(|n| {
            json.iter().any(|j| {
                j["metadata"]["name"] == n.name.as_str()
                    && j["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == "true"
            })
        })
        .map(|n| PodNet {
            ns: "kube-system".into(),
            name: format!("k3s-api-{}", n.name),
            node: Some(n.name.clone()),
            ip: n.ip,
            running: true,
            creating: false,
            ready: true,
            host_network: true,
            labels: serde_json::Map::new(),
            app: App::ApiServer,
            ports: vec![ContainerPort {
                name: Some("https".into()),
                port: API_PORT,
                proto: Proto::Tcp,
                host_port: Some(API_PORT),
            }],
        })
        .collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn proto_of(v: &Value) -> Proto {
    if v.as_str().is_some_and(|p| p.eq_ignore_ascii_case("udp")) {
        Proto::Udp
    } else {
        Proto::Tcp
    }
}

fn port_of(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// Whether a pod is CoreDNS: kube-system, labelled `k8s-app` `kube-dns`
/// (k3s's manifest, facts "DNS") or `coredns` (the world's seeded pod).
fn is_coredns(p: &Value) -> bool {
    p["metadata"]["namespace"] == "kube-system"
        && matches!(
            p["metadata"]["labels"]["k8s-app"].as_str(),
            Some("kube-dns" | "coredns")
        )
}

fn pod_net(p: &Value) -> PodNet {
    let containers = p["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let app = if is_coredns(p) {
        App::Dns
    } else {
        containers
            .iter()
            .find_map(netexec::in_container)
            .map_or(App::Silent, App::Netexec)
    };
    let ports = containers
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|cp| {
            Some(ContainerPort {
                name: cp["name"].as_str().map(str::to_string),
                port: port_of(&cp["containerPort"])?,
                proto: proto_of(&cp["protocol"]),
                host_port: port_of(&cp["hostPort"]),
            })
        })
        .collect();
    let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    PodNet {
        ns: str_of(&p["metadata"]["namespace"]),
        name: str_of(&p["metadata"]["name"]),
        node: p["spec"]["nodeName"].as_str().map(str::to_string),
        ip: p["status"]["podIP"].as_str().and_then(|s| s.parse().ok()),
        running: p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null(),
        // Bound, `Pending`, a container `waiting` (the kubelet's
        // `ContainerCreating`; the shape `kube::objects::creating_status`
        // writes).
        creating: p["status"]["phase"] == "Pending"
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| !c["state"]["waiting"].is_null())),
        ready,
        host_network: p["spec"]["hostNetwork"] == Value::Bool(true),
        labels: p["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        app,
        ports,
    }
}

fn service_net(s: &Value) -> ServiceNet {
    let ports = s["spec"]["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let port = port_of(&p["port"])?;
                    let target = match &p["targetPort"] {
                        Value::String(n) => match n.parse() {
                            Ok(n) => Target::Number(n),
                            Err(_) => Target::Name(n.clone()),
                        },
                        v => Target::Number(port_of(v).unwrap_or(port)),
                    };
                    Some(ServicePort {
                        name: p["name"].as_str().map(str::to_string),
                        port,
                        proto: proto_of(&p["protocol"]),
                        target,
                        node_port: port_of(&p["nodePort"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    ServiceNet {
        ns: str_of(&s["metadata"]["namespace"]),
        name: str_of(&s["metadata"]["name"]),
        cluster_ip: s["spec"]["clusterIP"].as_str().and_then(|c| c.parse().ok()),
        selector: s["spec"]["selector"].as_object().cloned(),
        ports,
    }
}

#[cfg(test)]
mod tests;
