//! The data plane's rules, one test per rule of `docs/facts/data-plane.md`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

/// A tailnet where some flows are dropped and the path MTU is chosen.
pub(super) struct Policy {
    /// (from, to, proto, port) dropped.
    dropped: Vec<(String, String, Proto, u16)>,
    mtu: u32,
}

impl Policy {
    fn open() -> Policy {
        Policy {
            dropped: Vec::new(),
            mtu: TAILSCALE_MTU,
        }
    }
    fn drop(mut self, from: &str, to: &str, proto: Proto, port: u16) -> Policy {
        self.dropped.push((from.into(), to.into(), proto, port));
        self
    }
}

/// Every flow passes.
pub(super) fn open() -> Policy {
    Policy::open()
}

/// Every flow passes but flannel's VXLAN from `from` to `to`.
pub(super) fn open_but(from: &str, to: &str) -> Policy {
    Policy::open().drop(from, to, Proto::Udp, VXLAN_PORT)
}

impl Underlay for Policy {
    fn passes(&self, from: &str, to: &str, proto: Proto, port: u16) -> bool {
        !self
            .dropped
            .contains(&(from.to_string(), to.to_string(), proto, port))
    }
    fn path_mtu(&self, _: &str, _: &str) -> u32 {
        self.mtu
    }
}

fn node(name: &str, i: u8) -> Value {
    json!({"metadata": {"name": name},
           "spec": {"podCIDR": format!("10.42.{i}.0/24")},
           "status": {"addresses": [{"type": "InternalIP", "address": format!("100.64.0.{}", i + 1)}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod(name: &str, node: &str, ip: &str, args: &[&str], labels: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "t", "labels": labels},
           "spec": {"nodeName": node,
                    "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                                    "args": args,
                                    "ports": [{"name": "http", "containerPort": 8080, "hostPort": 8000}]}]},
           "status": {"phase": "Running", "podIP": ip,
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn coredns(node: &str, ip: &str) -> Value {
    json!({"metadata": {"name": "coredns-abc", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
           "spec": {"nodeName": node, "containers": [{"name": "coredns", "image": "rancher/mirrored-coredns-coredns:1.12.0"}]},
           "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn service(name: &str, ip: &str, selector: Value, target: Value, node_port: Option<u16>) -> Value {
    json!({"metadata": {"name": name, "namespace": "t"},
           "spec": {"clusterIP": ip, "selector": selector,
                    "ports": [{"port": 80, "targetPort": target, "nodePort": node_port}]}})
}

fn flannel(names: &[&str]) -> BTreeMap<String, (Option<String>, u32)> {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                (
                    Some(TAILNET_IFACE.to_string()),
                    TAILSCALE_MTU - VXLAN_OVERHEAD,
                ),
            )
        })
        .collect()
}

/// Nodes a and b; netexec pods pa (on a) and pb (on b), a pod serving
/// nothing (silent, on b), CoreDNS on a, Service web → app=web on port
/// 80 → 8080 with NodePort 30080.
pub(super) fn net() -> Net {
    let nodes = [node("a", 0), node("b", 1)];
    let pods = [
        pod("pa", "a", "10.42.0.2", &["netexec"], json!({"app": "web"})),
        pod(
            "pb",
            "b",
            "10.42.1.2",
            &["netexec", "--http-port=8080"],
            json!({"app": "web"}),
        ),
        json!({"metadata": {"name": "silent", "namespace": "t", "labels": {"app": "quiet"}},
               "spec": {"nodeName": "b", "containers": [{"name": "c", "image": "nginx:1.27"}]},
               "status": {"phase": "Running", "podIP": "10.42.1.3",
                          "conditions": [{"type": "Ready", "status": "True"}]}}),
        coredns("a", "10.42.0.3"),
    ];
    let services = [
        service(
            "web",
            "10.43.0.50",
            json!({"app": "web"}),
            json!("http"),
            Some(30080),
        ),
        service(
            "quiet",
            "10.43.0.51",
            json!({"app": "quiet"}),
            json!(80),
            None,
        ),
        service(
            "empty",
            "10.43.0.52",
            json!({"app": "nobody"}),
            json!(8080),
            None,
        ),
    ];
    Net::from_objects(
        &nodes,
        &pods,
        &services,
        &flannel(&["a", "b"]),
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    )
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const PA: From<'static> = From::Pod("t", "pa");

#[test]
fn pod_to_pod_on_one_node_and_across_nodes() {
    let n = net();
    let u = Policy::open();
    let r = n
        .connect(PA, ip("10.42.0.2"), 8080, Proto::Tcp, 100, &u)
        .unwrap();
    assert_eq!((r.pod.name.as_str(), r.via.clone()), ("pa", Via::PodIp));
    let r = n
        .connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 100, &u)
        .unwrap();
    assert_eq!(r.pod.name, "pb");
    assert_eq!(r.client_ip, ip("10.42.0.2"), "no SNAT between pods");
    // UDP to netexec's UDP server.
    assert!(
        n.connect(PA, ip("10.42.1.2"), 8081, Proto::Udp, 100, &u)
            .is_ok()
    );
}

#[test]
fn cross_node_needs_udp_8472_both_ways_in_the_tailnet_policy() {
    let n = net();
    for (from, to) in [("a", "b"), ("b", "a")] {
        let u = Policy::open().drop(from, to, Proto::Udp, VXLAN_PORT);
        let e = n
            .connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 100, &u)
            .unwrap_err();
        assert_eq!(
            e,
            Failure::VxlanBlocked {
                from: from.into(),
                to: to.into()
            }
        );
        assert!(e.times_out());
        let text = e.to_string();
        assert!(
            text.contains("udp/8472") && text.contains(&format!("from {from} to {to}")),
            "{text}"
        );
        // Same-node traffic never touches flannel.
        assert!(
            n.connect(PA, ip("10.42.0.2"), 8080, Proto::Tcp, 100, &u)
                .is_ok()
        );
    }
    // Another port dropped changes nothing for pods.
    let u = Policy::open().drop("a", "b", Proto::Tcp, 8080);
    assert!(
        n.connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 100, &u)
            .is_ok()
    );
}

#[test]
fn flannel_on_another_interface_reaches_no_other_node() {
    let nodes = [node("a", 0), node("b", 1)];
    let pods = [
        pod("pa", "a", "10.42.0.2", &["netexec"], json!({})),
        pod("pb", "b", "10.42.1.2", &["netexec"], json!({})),
    ];
    let mut fl = flannel(&["a", "b"]);
    fl.insert("b".into(), (Some("eth0".into()), 1450));
    let n = Net::from_objects(
        &nodes,
        &pods,
        &[],
        &fl,
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    );
    let e = n
        .connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 100, &Policy::open())
        .unwrap_err();
    assert_eq!(
        e,
        Failure::FlannelIface {
            node: "b".into(),
            iface: "eth0".into()
        }
    );
    assert!(e.to_string().contains("flannel-iface: tailscale0"));
}

#[test]
fn a_node_not_ready_or_without_pod_cidr_carries_no_pod_traffic() {
    let mut b = node("b", 1);
    b["spec"] = json!({});
    let pods = [
        pod("pa", "a", "10.42.0.2", &["netexec"], json!({})),
        pod("pb", "b", "10.42.1.2", &["netexec"], json!({})),
    ];
    let n = Net::from_objects(
        &[node("a", 0), b],
        &pods,
        &[],
        &flannel(&["a", "b"]),
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    );
    let e = n
        .connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 100, &Policy::open())
        .unwrap_err();
    assert!(
        matches!(&e, Failure::NodeDown { node, why } if node == "b" && why.contains("podCIDR")),
        "{e}"
    );
    // k3s not running on b (no flannel settings): not Ready for pods.
    let n = Net::from_objects(
        &[node("a", 0), node("b", 1)],
        &pods,
        &[],
        &flannel(&["a"]),
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    );
    let e = n
        .connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 100, &Policy::open())
        .unwrap_err();
    assert!(
        matches!(&e, Failure::NodeDown { node, .. } if node == "b"),
        "{e}"
    );
}

#[test]
fn mtu_fails_only_when_flannel_exceeds_the_path_and_the_packet_does_too() {
    let n = net();
    // Defaults: flannel 1230 over tailscale0's 1280: every size passes.
    assert!(
        n.connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 9000, &Policy::open())
            .is_ok()
    );
    // A smaller path (e.g. a nested tunnel): big exchanges fail, small pass.
    let u = Policy {
        mtu: 1200,
        ..Policy::open()
    };
    assert!(
        n.connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 1000, &u)
            .is_ok()
    );
    let e = n
        .connect(PA, ip("10.42.1.2"), 8080, Proto::Tcp, 1400, &u)
        .unwrap_err();
    assert_eq!(
        e,
        Failure::Mtu {
            from: "a".into(),
            to: "b".into(),
            flannel_mtu: 1230,
            path_mtu: 1200
        }
    );
    assert!(e.to_string().contains("at most 1150"), "{e}");
    // Same node: no VXLAN, no MTU limit.
    assert!(
        n.connect(PA, ip("10.42.0.2"), 8080, Proto::Tcp, 1400, &u)
            .is_ok()
    );
}

#[test]
fn other_images_and_other_ports_refuse() {
    let n = net();
    let u = Policy::open();
    let e = n
        .connect(PA, ip("10.42.1.3"), 80, Proto::Tcp, 100, &u)
        .unwrap_err();
    assert_eq!(e, Failure::Refused("10.42.1.3:80".parse().unwrap()));
    assert!(!e.times_out());
    let e = n
        .connect(PA, ip("10.42.1.2"), 9999, Proto::Tcp, 100, &u)
        .unwrap_err();
    assert!(matches!(e, Failure::Refused(_)));
    // An address nobody holds times out.
    let e = n
        .connect(PA, ip("10.42.1.77"), 8080, Proto::Tcp, 100, &u)
        .unwrap_err();
    assert_eq!(e, Failure::NoRoute(ip("10.42.1.77")));
}

#[test]
fn services_reach_a_ready_endpoint_by_port_name() {
    let n = net();
    let u = Policy::open();
    let r = n
        .connect(
            From::Pod("t", "pb"),
            ip("10.43.0.50"),
            80,
            Proto::Tcp,
            100,
            &u,
        )
        .unwrap();
    assert_eq!(
        r.via,
        Via::Service {
            ns: "t".into(),
            name: "web".into()
        }
    );
    assert_eq!(
        (r.pod.name.as_str(), r.port),
        ("pa", 8080),
        "first endpoint by name, named targetPort"
    );
    // pa unreachable (8472 blocked): the next endpoint answers.
    let blocked = Policy::open().drop("b", "a", Proto::Udp, VXLAN_PORT);
    let r = n
        .connect(
            From::Pod("t", "pb"),
            ip("10.43.0.50"),
            80,
            Proto::Tcp,
            100,
            &blocked,
        )
        .unwrap();
    assert_eq!(r.pod.name, "pb");
    // A port the Service does not have: dropped.
    assert!(matches!(
        n.connect(PA, ip("10.43.0.50"), 81, Proto::Tcp, 100, &u),
        Err(Failure::NoRoute(_))
    ));
    // No Ready endpoint: refused.
    let e = n
        .connect(PA, ip("10.43.0.52"), 80, Proto::Tcp, 100, &u)
        .unwrap_err();
    assert_eq!(
        e,
        Failure::NoEndpoints {
            ns: "t".into(),
            name: "empty".into()
        }
    );
    // An endpoint that serves nothing: refused by the pod.
    let e = n
        .connect(PA, ip("10.43.0.51"), 80, Proto::Tcp, 100, &u)
        .unwrap_err();
    assert!(matches!(e, Failure::Refused(_)), "{e}");
}

#[test]
fn not_ready_pods_are_no_endpoints_but_answer_on_their_address() {
    let nodes = [node("a", 0)];
    let mut p = pod("pa", "a", "10.42.0.2", &["netexec"], json!({"app": "web"}));
    p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    let n = Net::from_objects(
        &nodes,
        &[p],
        &[service(
            "web",
            "10.43.0.50",
            json!({"app": "web"}),
            json!(8080),
            None,
        )],
        &flannel(&["a"]),
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    );
    let u = Policy::open();
    assert!(matches!(
        n.connect(PA, ip("10.43.0.50"), 80, Proto::Tcp, 10, &u),
        Err(Failure::NoEndpoints { .. })
    ));
    assert!(
        n.connect(PA, ip("10.42.0.2"), 8080, Proto::Tcp, 10, &u)
            .is_ok()
    );
}

#[test]
fn node_port_and_host_port_on_a_node_address() {
    let n = net();
    let u = Policy::open();
    // NodePort on b's address, from node a: the tailnet must accept tcp/30080.
    let r = n
        .connect(
            From::Node("a"),
            ip("100.64.0.2"),
            30080,
            Proto::Tcp,
            100,
            &u,
        )
        .unwrap();
    assert_eq!(r.via, Via::NodePort { node: "b".into() });
    let e = n
        .connect(
            From::Node("a"),
            ip("100.64.0.2"),
            30080,
            Proto::Tcp,
            100,
            &Policy::open().drop("a", "b", Proto::Tcp, 30080),
        )
        .unwrap_err();
    assert!(
        matches!(e, Failure::NodePortBlocked { port: 30080, .. }),
        "{e}"
    );
    // hostPort 8000 on b reaches pb's 8080 (pa's hostPort is on a).
    let r = n
        .connect(From::Node("b"), ip("100.64.0.2"), 8000, Proto::Tcp, 100, &u)
        .unwrap();
    assert_eq!(
        (r.pod.name.as_str(), r.port, r.via.clone()),
        ("pb", 8080, Via::HostPort { node: "b".into() })
    );
    let r = n
        .connect(From::Node("a"), ip("127.0.0.1"), 8000, Proto::Tcp, 100, &u)
        .unwrap();
    assert_eq!(r.pod.name, "pa");
    // A node port nobody holds: refused.
    let e = n
        .connect(From::Node("a"), ip("100.64.0.2"), 8001, Proto::Tcp, 100, &u)
        .unwrap_err();
    assert_eq!(e, Failure::Refused("100.64.0.2:8001".parse().unwrap()));
}

#[test]
fn dns_names_through_a_reachable_coredns() {
    let n = net();
    let u = Policy::open();
    let pb = From::Pod("t", "pb");
    for name in [
        "web",
        "web.t",
        "web.t.svc",
        "web.t.svc.cluster.local",
        "web.t.svc.cluster.local.",
    ] {
        assert_eq!(n.resolve(pb, name, &u), Ok(ip("10.43.0.50")), "{name}");
    }
    assert_eq!(n.resolve(pb, "10.1.2.3", &u), Ok(ip("10.1.2.3")));
    assert_eq!(
        n.resolve(pb, "nope", &u),
        Err(Failure::NoSuchHost("nope".into()))
    );
    assert_eq!(
        n.resolve(pb, "web.other", &u),
        Err(Failure::NoSuchHost("web.other".into()))
    );
    // CoreDNS runs on a: from b, DNS needs VXLAN b <-> a.
    let blocked = Policy::open().drop("a", "b", Proto::Udp, VXLAN_PORT);
    let e = n.resolve(pb, "web", &blocked).unwrap_err();
    assert!(
        matches!(&e, Failure::DnsUnreachable(inner) if matches!(**inner, Failure::VxlanBlocked { .. })),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("cluster DNS does not answer: "),
        "{e}"
    );
    // From a (same node as CoreDNS) DNS still works.
    assert!(n.resolve(PA, "web", &blocked).is_ok());
    // A node's resolver does not use cluster DNS.
    assert!(n.resolve(From::Node("a"), "web", &u).is_err());
}

#[test]
fn dns_fails_without_a_running_coredns() {
    let nodes = [node("a", 0)];
    let pods = [pod("pa", "a", "10.42.0.2", &["netexec"], json!({}))];
    let n = Net::from_objects(
        &nodes,
        &pods,
        &[],
        &flannel(&["a"]),
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    );
    let e = n.resolve(PA, "kubernetes", &Policy::open()).unwrap_err();
    assert!(
        matches!(&e, Failure::DnsUnreachable(inner) if matches!(**inner, Failure::NoEndpoints { .. })),
        "{e}"
    );
}

#[test]
fn sources_must_run() {
    let n = net();
    let e = n
        .connect(
            From::Pod("t", "ghost"),
            ip("10.42.0.2"),
            8080,
            Proto::Tcp,
            1,
            &Policy::open(),
        )
        .unwrap_err();
    assert!(matches!(e, Failure::NoSource(_)));
}

/// Node a a server (control-plane label), b an agent; the API server's
/// `default/kubernetes` Service as the world's API holds it.
fn api_net(b_ready: bool) -> Net {
    let mut a = node("a", 0);
    a["metadata"]["labels"] = json!({"node-role.kubernetes.io/control-plane": "true"});
    let pods = [pod("pb", "b", "10.42.1.2", &["netexec"], json!({}))];
    let svc = json!({"metadata": {"name": "kubernetes", "namespace": "default"},
                     "spec": {"clusterIP": "10.43.0.1",
                              "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}});
    let nodes = if b_ready {
        vec![a, node("b", 1)]
    } else {
        vec![node("b", 1)]
    };
    Net::from_objects(
        &nodes,
        &pods,
        &[svc],
        &flannel(&["a", "b"]),
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    )
}

#[test]
fn the_kubernetes_service_reaches_the_servers_api_on_6443_and_only_servers() {
    let n = api_net(true);
    let pb = From::Pod("t", "pb");
    let r = n
        .connect(pb, API_SERVICE_IP, 443, Proto::Tcp, 100, &open())
        .unwrap();
    assert_eq!(r.pod.app, App::ApiServer);
    assert_eq!((r.pod.node.as_deref(), r.port), (Some("a"), API_PORT));
    assert_eq!(
        r.via,
        Via::Service {
            ns: "default".into(),
            name: "kubernetes".into()
        }
    );
    // The server node's own address answers on 6443; the agent's does not.
    assert!(
        n.connect(pb, ip("100.64.0.1"), API_PORT, Proto::Tcp, 100, &open())
            .is_ok()
    );
    assert_eq!(
        n.connect(pb, ip("100.64.0.2"), API_PORT, Proto::Tcp, 100, &open())
            .unwrap_err(),
        Failure::Refused(SocketAddrV4::new(ip("100.64.0.2"), API_PORT))
    );
    // The tailnet policy dropping tcp/6443 to the server cuts the path.
    let u = Policy::open().drop("b", "a", Proto::Tcp, API_PORT);
    assert!(matches!(
        n.connect(pb, API_SERVICE_IP, 443, Proto::Tcp, 100, &u),
        Err(Failure::NodePortBlocked { port: API_PORT, .. })
    ));
    // No server whose API answers: no endpoints.
    assert_eq!(
        api_net(false)
            .connect(pb, API_SERVICE_IP, 443, Proto::Tcp, 100, &open())
            .unwrap_err(),
        Failure::NoEndpoints {
            ns: "default".into(),
            name: "kubernetes".into()
        }
    );
}

#[test]
fn netexec_dialing_the_api_gets_gos_plain_http_refusal() {
    let n = api_net(true);
    let s = http::Session {
        net: &n,
        underlay: &open(),
        now: "T".into(),
    };
    let r = s
        .get(
            From::Node("a"),
            ip("10.42.1.2"),
            8080,
            "/dial?host=10.43.0.1&port=443&request=healthz&protocol=http&tries=1",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        r#"{"responses":["Client sent an HTTP request to an HTTPS server.\n"]}"#
    );
}

/// A pod whose containers are being created has its address (its
/// sandbox is up) but nothing listens: a connection to it is refused, it
/// is no Service endpoint, and it sends nothing.
#[test]
fn a_starting_pod_refuses_and_is_no_endpoint() {
    let nodes = [node("a", 0)];
    let mut p = pod("pa", "a", "10.42.0.2", &["netexec"], json!({"app": "web"}));
    p["status"] = json!({"phase": "Pending", "podIP": "10.42.0.2",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]});
    let other = pod("pb", "a", "10.42.0.3", &["netexec"], json!({"app": "x"}));
    let n = Net::from_objects(
        &nodes,
        &[p, other],
        &[service(
            "web",
            "10.43.0.50",
            json!({"app": "web"}),
            json!(8080),
            None,
        )],
        &flannel(&["a"]),
        cidr::DEFAULT_CLUSTER_DNS,
        "cluster.local",
    );
    let u = Policy::open();
    let pb = From::Pod("t", "pb");
    let e = n
        .connect(pb, ip("10.42.0.2"), 8080, Proto::Tcp, 10, &u)
        .unwrap_err();
    assert!(matches!(e, Failure::Refused(_)), "{e}");
    assert!(matches!(
        n.connect(pb, ip("10.43.0.50"), 80, Proto::Tcp, 10, &u),
        Err(Failure::NoEndpoints { .. })
    ));
    assert!(matches!(
        n.connect(PA, ip("10.42.0.3"), 8080, Proto::Tcp, 10, &u),
        Err(Failure::NoSource(_))
    ));
}
