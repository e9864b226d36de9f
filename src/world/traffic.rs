//! Traffic into a cluster's pods from outside it, over the data plane
//! (`dataplane`): the API server's proxy subresources
//! (`/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH`, `services/…`),
//! which the API listeners (`kube::server`) call, and exe.dev's HTTPS proxy
//! reaching a VM's port, where a hostPort pod may listen. Methods on
//! [`Inner`] so the API listeners reach them through the world they
//! already hold.

use serde_json::json;

use super::Inner;
use super::dataplane::cache::snapshot;
use super::dataplane::http::Session;
use super::dataplane::underlay::{World, settings};
use super::dataplane::{Failure, From, Net, Target};
use super::kube::objects::{self, Resource};

/// An answer to pass on: status, body, and whether the body is a
/// Kubernetes `Status` (JSON) rather than the pod's own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyReply {
    pub status: u16,
    pub body: String,
    pub is_status: bool,
}

impl ProxyReply {
    fn status(code: u16, reason: &str, message: &str) -> ProxyReply {
        ProxyReply {
            status: code,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message, "reason": reason, "code": code})
            .to_string(),
            is_status: true,
        }
    }
}

/// Which proxy subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Pod,
    Service,
}

fn services() -> Resource {
    objects::resource_by_path("", "services")
        .unwrap_or_else(|| objects::resource_for("v1", "Service"))
}

/// The cluster's data plane now: the store's kept snapshot while neither
/// its objects nor the nodes' settings changed, else one built from them.
fn data_plane(api: &super::kube::ApiStore, w: &World<'_>) -> std::sync::Arc<Net> {
    api.data_plane(settings(w), |s| {
        let nodes = api.list(&objects::NODES, None, None, None);
        let pods = api.list(&objects::PODS, None, None, None);
        let svcs = api.list(&services(), None, None, None);
        snapshot(s, &nodes, &pods, &svcs)
    })
}

/// `[scheme:]name[:port]` of a proxy path (Kubernetes'
/// `net.SplitSchemeNamePort`).
fn split_name(s: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [name] => Some(("", *name, "")),
        [name, port] => Some(("", *name, *port)),
        [scheme, name, port] if matches!(*scheme, "http" | "https") => {
            Some((*scheme, *name, *port))
        }
        _ => None,
    }
    .filter(|(_, n, _)| !n.is_empty())
}

/// kube-apiserver's answer when it cannot reach the backend (its proxy
/// responder's "error trying to reach service"; the world's dial text).
fn unreachable(f: &Failure, ip: std::net::Ipv4Addr, port: u16) -> ProxyReply {
    let why = if f.times_out() {
        "i/o timeout"
    } else {
        "connect: connection refused"
    };
    ProxyReply::status(
        503,
        "ServiceUnavailable",
        &format!("error trying to reach service: dial tcp {ip}:{port}: {why}"),
    )
}

impl Inner {
    /// The API server on `server_vm` proxies `GET target` to a pod or a
    /// Service's endpoint of `cluster`. It dials from its own node (k3s's
    /// default `egress-selector-mode: agent`), or, in `pod`/`cluster` mode,
    /// through the agent tunnel from the pod's node (facts "Services").
    pub fn api_proxy(
        &self,
        cluster: &str,
        server_vm: &str,
        kind: ProxyKind,
        ns: &str,
        name_port: &str,
        target: &str,
    ) -> ProxyReply {
        let m = self.model();
        let Some(c) = m.clusters.get(cluster) else {
            return ProxyReply::status(503, "ServiceUnavailable", "cluster is gone");
        };
        let Some((scheme, name, port)) = split_name(name_port) else {
            return ProxyReply::status(400, "BadRequest", &format!("invalid name {name_port:?}"));
        };
        if scheme == "https" {
            return ProxyReply::status(
                503,
                "ServiceUnavailable",
                "the VM world's pods serve plain HTTP only",
            );
        }
        let (server_node, tunnel) = match m.any_proc(server_vm) {
            Some((_, p)) => (
                p.node_name.clone(),
                matches!(p.cfg.get("egress-selector-mode"), Some("pod" | "cluster")),
            ),
            None => {
                return ProxyReply::status(503, "ServiceUnavailable", "the server is not running");
            }
        };
        let w = World::new(&m, cluster);
        let net = data_plane(&c.api, &w);
        let backend = match kind {
            ProxyKind::Pod => pod_backend(&net, ns, name, port),
            ProxyKind::Service => service_backend(&net, ns, name, port),
        };
        let (pod_node, ip, port) = match backend {
            Ok(b) => b,
            Err(r) => return r,
        };
        let from = if tunnel {
            From::Node(&pod_node)
        } else {
            From::Node(&server_node)
        };
        let session = Session {
            net: &net,
            underlay: &w,
            now: objects::rfc3339(super::now_ms()),
        };
        match session.get(from, ip, port, target) {
            Ok(r) => ProxyReply {
                status: r.status,
                body: r.body,
                is_status: false,
            },
            Err(f) => unreachable(&f, ip, port),
        }
    }

    /// exe.dev's HTTPS proxy sends `GET target` to `vm`'s port `port`: the
    /// answer of the pod whose hostPort (or host network) holds that port
    /// on the VM's node, or `None` when nothing there listens. [?] How
    /// exe.dev's proxy reaches the port (from outside the VM, on its
    /// private address) is not in the facts; portmap DNATs the hostPort on
    /// the node's addresses, which the world takes to include it.
    pub fn host_port(&self, vm: &str, port: u16, target: &str) -> Option<ProxyReply> {
        let m = self.model();
        let (_, p) = m.any_proc(vm)?;
        let cluster = p.cluster.clone()?;
        let node = p.node_name.clone();
        let c = m.clusters.get(&cluster)?;
        let w = World::new(&m, &cluster);
        let net = data_plane(&c.api, &w);
        let ip = net.nodes.iter().find(|n| n.name == node)?.ip?;
        let session = Session {
            net: &net,
            underlay: &w,
            now: objects::rfc3339(super::now_ms()),
        };
        let r = session.get(From::Node(&node), ip, port, target).ok()?;
        Some(ProxyReply {
            status: r.status,
            body: r.body,
            is_status: false,
        })
    }
}

/// A pod's address and port: `port` a number or a container port's name,
/// empty for 80 (kube-apiserver's default for a pod proxy).
fn pod_backend(
    net: &Net,
    ns: &str,
    name: &str,
    port: &str,
) -> Result<(String, std::net::Ipv4Addr, u16), ProxyReply> {
    let p = net.pod(ns, name).ok_or_else(|| {
        ProxyReply::status(404, "NotFound", &format!("pods \"{name}\" not found"))
    })?;
    let port = if port.is_empty() {
        80
    } else if let Ok(n) = port.parse() {
        n
    } else {
        p.ports
            .iter()
            .find(|c| c.name.as_deref() == Some(port))
            .map(|c| c.port)
            .ok_or_else(|| {
                ProxyReply::status(
                    503,
                    "ServiceUnavailable",
                    &format!("no port named {port:?} on pod {name}"),
                )
            })?
    };
    match (&p.node, p.ip, p.running) {
        (Some(node), Some(ip), true) => Ok((node.clone(), ip, port)),
        _ => Err(ProxyReply::status(
            503,
            "ServiceUnavailable",
            &format!("pod {name} is not running with an address"),
        )),
    }
}

/// A Service's endpoint: the Service port by name or number (empty: its
/// only or first port), then the first Ready endpoint's target port.
fn service_backend(
    net: &Net,
    ns: &str,
    name: &str,
    port: &str,
) -> Result<(String, std::net::Ipv4Addr, u16), ProxyReply> {
    let not_found =
        || ProxyReply::status(404, "NotFound", &format!("services \"{name}\" not found"));
    let svc = net
        .services
        .iter()
        .find(|s| s.ns == ns && s.name == name)
        .ok_or_else(not_found)?;
    let sp = if port.is_empty() {
        svc.ports.first()
    } else {
        svc.ports
            .iter()
            .find(|p| port.parse() == Ok(p.port) || p.name.as_deref() == Some(port))
    };
    let no_endpoints = || {
        ProxyReply::status(
            503,
            "ServiceUnavailable",
            &format!("no endpoints available for service \"{name}\""),
        )
    };
    let sp = sp.ok_or_else(no_endpoints)?;
    for p in net.endpoints(svc) {
        let target = match &sp.target {
            Target::Number(n) => Some(*n),
            Target::Name(t) => p
                .ports
                .iter()
                .find(|c| c.name.as_deref() == Some(t))
                .map(|c| c.port),
        };
        if let (Some(t), Some(node), Some(ip)) = (target, &p.node, p.ip) {
            return Ok((node.clone(), ip, t));
        }
    }
    Err(no_endpoints())
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn proxy_names() {
        assert_eq!(split_name("web"), Some(("", "web", "")));
        assert_eq!(split_name("web:8080"), Some(("", "web", "8080")));
        assert_eq!(split_name("http:web:http"), Some(("http", "web", "http")));
        assert_eq!(split_name(":80"), None);
        assert_eq!(split_name("a:b:c"), None);
    }
}
