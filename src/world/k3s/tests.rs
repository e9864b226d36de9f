//! The k3s model without files or processes: each refusal of the facts
//! file, and the paths that succeed.

use std::collections::BTreeMap;

use super::*;
use crate::world::model::Model;
use crate::world::tailnet::{Login, TailnetConfig};
use crate::world::{Faults, Timings};

const V: &str = "v1.31.4+k3s1";

struct Sim {
    m: Model,
    inputs: BTreeMap<(String, String), StartInputs>,
    now: u64,
}

fn cfg(pairs: &[(&str, &str)]) -> K3sConfig {
    let mut c = K3sConfig::default();
    for (k, v) in pairs {
        c.flags
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    c
}

fn inputs(role: Role, c: K3sConfig) -> StartInputs {
    StartInputs {
        role,
        cfg: c,
        version: Some(V.to_string()),
        notify: true,
        restart_always: true,
        has_data_dir: false,
        node_password: None,
        reset_flag: false,
    }
}

impl Sim {
    fn new(faults: Faults) -> Sim {
        Sim {
            m: Model::new(Timings::default(), faults, TailnetConfig::default(), 7),
            inputs: BTreeMap::new(),
            now: 1_000,
        }
    }

    /// A booted VM, on the tailnet unless `offline`.
    fn vm(&mut self, name: &str, on_tailnet: bool) {
        self.m.add_vm(name, true);
        self.m.boot_vm(name, self.now);
        if on_tailnet {
            let key = self.m.new_secret("nodekey:");
            self.m.vms.get_mut(name).unwrap().node_key = Some(key.clone());
            self.m.start_tailscaled(name, self.now);
            let login = Login {
                vm: name.into(),
                new_node_key: key,
                auth_key: Some("tskey-auth-x".into()),
                hostname: name.into(),
                accept_dns: true,
                ..Login::default()
            };
            self.m.tailnet.login(&login, self.now).unwrap();
        }
    }

    fn ip(&self, vm: &str) -> String {
        self.m.tailnet_ip(vm).unwrap().to_string()
    }

    fn start(&mut self, vm: &str, unit: &str, i: StartInputs) {
        self.inputs.insert((vm.into(), unit.into()), i.clone());
        let fx = self.m.start_k3s(vm, unit, Ok(i), self.now);
        self.effects(fx);
    }

    fn effects(&mut self, fx: Vec<Effect>) {
        for e in fx {
            // The VM's password file, read again at each start.
            if let Effect::WriteFile {
                vm, path, content, ..
            } = &e
                && path == node_password::PASSWORD_PATH
            {
                for ((v, _), i) in self.inputs.iter_mut() {
                    if v == vm {
                        i.node_password = Some(content.trim().to_string());
                    }
                }
            }
            if let Effect::RestartUnit { vm, unit } = e {
                let mut i = self.inputs[&(vm.clone(), unit.clone())].clone();
                i.has_data_dir = self.m.vms[&vm].server_data.is_some();
                let fx = self.m.start_k3s(&vm, &unit, Ok(i), self.now);
                self.effects(fx);
            }
        }
    }

    /// Advances the clock in 10 ms ticks.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 10;
            let fx = self.m.tick_k3s(self.now);
            self.effects(fx);
        }
    }

    fn phase(&self, vm: &str, unit: &str) -> Phase {
        self.m
            .proc(vm, unit)
            .map(|p| p.phase.clone())
            .unwrap_or(Phase::Starting)
    }

    fn error(&self, vm: &str, unit: &str) -> String {
        let journal: Vec<String> = self.m.vms[vm]
            .journal
            .iter()
            .map(|j| j.message.clone())
            .collect();
        match self.phase(vm, unit) {
            Phase::Failed { error, .. } => error,
            Phase::Waiting(w) => w,
            other => format!("{other:?} / {}", journal.join(" | ")),
        }
    }

    fn ready(&self, vm: &str, unit: &str) -> bool {
        self.phase(vm, unit) == Phase::Ready
    }

    /// First server (cluster-init, node-ip on the tailnet) up and Ready.
    fn first_server(&mut self, name: &str, extra: &[(&str, &str)]) {
        self.vm(name, true);
        let ip = self.ip(name);
        let san = format!("{name}.tail1234.ts.net");
        let mut pairs = vec![
            ("cluster-init", "true"),
            ("token", "secret"),
            ("node-ip", ip.as_str()),
            ("agent-token", "agentsecret"),
            ("tls-san", san.as_str()),
        ];
        pairs.extend_from_slice(extra);
        self.start(name, "k3s", inputs(Role::Server, cfg(&pairs)));
        self.run(200);
        assert!(self.ready(name, "k3s"), "{}", self.error(name, "k3s"));
    }

    fn join_server(&mut self, name: &str, extra: &[(&str, &str)]) {
        self.vm(name, true);
        let ip = self.ip(name);
        let san = format!("{name}.tail1234.ts.net");
        let mut pairs = vec![
            ("server", "https://c-cp1.tail1234.ts.net:6443"),
            ("token", "secret"),
            ("node-ip", ip.as_str()),
            ("agent-token", "agentsecret"),
            ("tls-san", san.as_str()),
        ];
        pairs.extend_from_slice(extra);
        self.start(name, "k3s", inputs(Role::Server, cfg(&pairs)));
    }
}

fn agent(extra: &[(&str, &str)]) -> StartInputs {
    let mut pairs = vec![
        ("server", "https://c-cp1.tail1234.ts.net:6443"),
        ("token", "agentsecret"),
    ];
    pairs.extend_from_slice(extra);
    inputs(Role::Agent, cfg(&pairs))
}

#[test]
fn a_three_server_cluster_forms_one_join_at_a_time() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.join_server("c-cp2", &[]);
    s.run(150);
    assert!(s.ready("c-cp2", "k3s"), "{}", s.error("c-cp2", "k3s"));
    s.join_server("c-cp3", &[]);
    s.run(150);
    assert!(s.ready("c-cp3", "k3s"), "{}", s.error("c-cp3", "k3s"));
    let c = s.m.clusters.values().next().unwrap();
    assert_eq!(c.members.len(), 3);
    assert!(
        c.members.iter().all(
            |m| m.learner_since.is_none() && crate::world::tailnet::is_tailnet_range(m.peer_ip)
        )
    );
    assert_eq!(
        c.api
            .list(&crate::world::kube::objects::NODES, None, None, None)
            .len(),
        3
    );
}

/// "too many learner members" is retried inside the process (k3s
/// `pkg/etcd/etcd.go:503`): the second join waits, it does not exit.
#[test]
fn parallel_server_joins_wait_on_too_many_learners() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.join_server("c-cp2", &[]);
    s.join_server("c-cp3", &[]);
    s.run(10);
    assert!(
        matches!(s.phase("c-cp3", "k3s"), Phase::Waiting(ref w) if w.contains("too many learner members")),
        "{}",
        s.error("c-cp3", "k3s")
    );
    // Once cp2 is promoted the retry succeeds.
    s.run(600);
    assert!(s.ready("c-cp2", "k3s") && s.ready("c-cp3", "k3s"));
}

#[test]
fn an_etcd_peer_address_off_the_tailnet_never_joins() {
    let mut s = Sim::new(Faults::default());
    // vpn-auth without node-ip: etcd stays on the VM's own address.
    s.vm("c-cp1", true);
    s.start(
        "c-cp1",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[
                ("cluster-init", "true"),
                ("token", "secret"),
                ("vpn-auth", "name=tailscale,joinKey=tskey-auth-x"),
                ("tls-san", "c-cp1.tail1234.ts.net"),
            ]),
        ),
    );
    s.run(200);
    assert!(
        s.ready("c-cp1", "k3s"),
        "a lone server is fine: {}",
        s.error("c-cp1", "k3s")
    );
    let peer = s.m.proc("c-cp1", "k3s").unwrap().etcd_peer_ip.unwrap();
    assert_eq!(peer, s.m.vms["c-cp1"].lan_ip);
    s.vm("c-cp2", true);
    s.start(
        "c-cp2",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[
                ("server", "https://c-cp1.tail1234.ts.net:6443"),
                ("token", "secret"),
                ("vpn-auth", "name=tailscale,joinKey=tskey-auth-x"),
            ]),
        ),
    );
    s.run(2_000);
    assert_eq!(
        s.phase("c-cp2", "k3s"),
        Phase::Learner,
        "the join never completes"
    );
    let log: String = s.m.vms["c-cp2"]
        .journal
        .iter()
        .map(|j| j.message.clone())
        .collect();
    assert!(log.contains("cannot reach its peers"), "{log}");
}

#[test]
fn tokens_are_checked() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.vm("c-web1", true);
    s.start(
        "c-web1",
        "k3s-agent",
        inputs(
            Role::Agent,
            cfg(&[
                ("server", "https://c-cp1.tail1234.ts.net:6443"),
                ("token", "wrong"),
            ]),
        ),
    );
    s.run(20);
    assert!(
        s.error("c-web1", "k3s-agent")
            .contains("failed to validate token"),
        "{}",
        s.error("c-web1", "k3s-agent")
    );
    // An agent with the agent token joins.
    s.vm("c-web2", true);
    s.start("c-web2", "k3s-agent", agent(&[]));
    s.run(150);
    assert!(
        s.ready("c-web2", "k3s-agent"),
        "{}",
        s.error("c-web2", "k3s-agent")
    );
    // A server with the agent token does not.
    s.join_server("c-cp2", &[]);
    let mut i = s.inputs[&("c-cp2".to_string(), "k3s".to_string())].clone();
    i.cfg
        .flags
        .insert("token".into(), vec!["agentsecret".into()]);
    s.start("c-cp2", "k3s", i);
    s.run(20);
    assert!(
        s.error("c-cp2", "k3s")
            .contains("agent token cannot join a server"),
        "{}",
        s.error("c-cp2", "k3s")
    );
    // A secure token with another CA hash is refused.
    s.vm("c-web3", true);
    s.start(
        "c-web3",
        "k3s-agent",
        agent(&[("token", "K10deadbeef::node:agentsecret")]),
    );
    s.run(20);
    assert!(
        s.error("c-web3", "k3s-agent").contains("CA hash"),
        "{}",
        s.error("c-web3", "k3s-agent")
    );
}

#[test]
fn join_urls_must_resolve_and_answer() {
    let mut s = Sim::new(Faults::default());
    // Not on the tailnet: the MagicDNS name does not resolve.
    s.vm("c-web1", false);
    s.start("c-web1", "k3s-agent", agent(&[]));
    s.run(50);
    assert!(s.error("c-web1", "k3s-agent").contains("no such host"));
    // On the tailnet, the server not up yet: connection refused, retried.
    s.vm("c-web2", true);
    s.vm("c-cp1", true);
    s.start("c-web2", "k3s-agent", agent(&[]));
    s.run(50);
    assert!(
        s.error("c-web2", "k3s-agent")
            .contains("connection refused"),
        "{}",
        s.error("c-web2", "k3s-agent")
    );
    let ip = s.ip("c-cp1");
    s.start(
        "c-cp1",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[
                ("cluster-init", "true"),
                ("token", "secret"),
                ("node-ip", &ip),
                ("agent-token", "agentsecret"),
                ("tls-san", "c-cp1.tail1234.ts.net"),
            ]),
        ),
    );
    s.run(400);
    assert!(
        s.ready("c-web2", "k3s-agent"),
        "the agent joins once its server answers: {}",
        s.error("c-web2", "k3s-agent")
    );
    // A LAN address of another VM is unreachable.
    let lan = s.m.vms["c-cp1"].lan_ip.to_string();
    s.vm("c-web3", true);
    s.start(
        "c-web3",
        "k3s-agent",
        agent(&[("server", &format!("https://{lan}:6443"))]),
    );
    s.run(50);
    assert!(
        s.error("c-web3", "k3s-agent").contains("i/o timeout"),
        "{}",
        s.error("c-web3", "k3s-agent")
    );
}

#[test]
fn kubelet_forbidden_labels_stop_the_node() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.vm("c-web1", true);
    s.start(
        "c-web1",
        "k3s-agent",
        agent(&[("node-label", "node-role.kubernetes.io/worker=true")]),
    );
    s.run(20);
    assert!(
        s.error("c-web1", "k3s-agent")
            .contains("unknown 'kubernetes.io' or 'k8s.io' labels")
    );
    s.vm("c-web2", true);
    s.start(
        "c-web2",
        "k3s-agent",
        agent(&[
            ("node-label", "node.kubernetes.io/role=worker"),
            ("node-taint", "dedicated=web:NoSchedule"),
        ]),
    );
    s.run(150);
    assert!(s.ready("c-web2", "k3s-agent"));
    let c = s.m.clusters.values().next().unwrap();
    let n = c
        .api
        .get(&crate::world::kube::objects::NODES, "", "c-web2")
        .unwrap();
    assert_eq!(n["metadata"]["labels"]["node.kubernetes.io/role"], "worker");
    assert_eq!(n["spec"]["taints"][0]["key"], "dedicated");
}

/// Neither k3s nor the kubelet checks the skew policy (the tool does, at
/// plan time): a newer kubelet starts.
#[test]
fn a_kubelet_newer_than_the_api_server_is_not_refused_by_k3s() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.vm("c-web1", true);
    let mut i = agent(&[]);
    i.version = Some("v1.32.1+k3s1".into());
    s.start("c-web1", "k3s-agent", i);
    s.run(150);
    assert!(
        s.ready("c-web1", "k3s-agent"),
        "{}",
        s.error("c-web1", "k3s-agent")
    );
    s.vm("c-web2", true);
    let mut i = agent(&[]);
    i.version = Some("v1.30.8+k3s1".into());
    s.start("c-web2", "k3s-agent", i);
    s.run(150);
    assert!(s.ready("c-web2", "k3s-agent"), "older kubelets are fine");
}

/// k3s's `CriticalControlArgs` (facts "Read from source"): servicelb
/// disabled or not, egress-selector-mode, ... must match; other packaged
/// components and the agent token may differ per server.
#[test]
fn servers_must_share_critical_configuration() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[("disable", "servicelb")]);
    s.join_server("c-cp2", &[]);
    s.run(20);
    let e = s.error("c-cp2", "k3s");
    assert!(
        e.contains("critical configuration value mismatch") && e.contains("disable-service-lb"),
        "{e}"
    );
    s.join_server(
        "c-cp4",
        &[("disable", "servicelb"), ("egress-selector-mode", "pod")],
    );
    s.run(20);
    let e = s.error("c-cp4", "k3s");
    assert!(e.contains("egress-selector-mode"), "{e}");
    s.join_server(
        "c-cp3",
        &[
            ("disable", "servicelb"),
            ("disable", "traefik"),
            ("agent-token", "other"),
        ],
    );
    s.run(150);
    assert!(s.ready("c-cp3", "k3s"), "{}", s.error("c-cp3", "k3s"));
}

#[test]
fn a_rotated_token_refuses_an_old_config_at_restart() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.m.rotate_token("c-cp1", Some("secret"), "newsecret")
        .unwrap();
    assert!(s.m.rotate_token("c-cp1", Some("wrong"), "x").is_err());
    // Restart with the old token still in config.yaml.
    s.m.stop_k3s("c-cp1", "k3s", s.now);
    let mut i = s.inputs[&("c-cp1".to_string(), "k3s".to_string())].clone();
    i.has_data_dir = true;
    s.start("c-cp1", "k3s", i.clone());
    s.run(20);
    assert!(
        s.error("c-cp1", "k3s")
            .contains("bootstrap data already found and encrypted with different token")
    );
    // With the new token it comes back (cluster-init is ignored on existing data).
    s.m.stop_k3s("c-cp1", "k3s", s.now);
    i.cfg.flags.insert("token".into(), vec!["newsecret".into()]);
    s.start("c-cp1", "k3s", i);
    s.run(200);
    assert!(s.ready("c-cp1", "k3s"), "{}", s.error("c-cp1", "k3s"));
    assert_eq!(s.m.clusters.len(), 1, "no second cluster");
}

#[test]
fn quorum_and_member_removal() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.join_server("c-cp2", &[]);
    s.run(150);
    s.join_server("c-cp3", &[]);
    s.run(150);
    let cid = s.m.proc("c-cp1", "k3s").unwrap().cluster.clone().unwrap();
    // Two of three down: the third cannot restart on its own.
    s.m.halt_vm("c-cp2", s.now);
    s.m.halt_vm("c-cp3", s.now);
    s.m.stop_k3s("c-cp1", "k3s", s.now);
    let mut i = s.inputs[&("c-cp1".to_string(), "k3s".to_string())].clone();
    i.has_data_dir = true;
    s.start("c-cp1", "k3s", i);
    s.run(300);
    assert!(
        s.error("c-cp1", "k3s").contains("quorum"),
        "{}",
        s.error("c-cp1", "k3s")
    );
    assert!(!s.m.has_quorum(&cid));
    // Deleting a Node removes its etcd member.
    let fx = s.m.node_deleted(&cid, "c-cp3", s.now);
    assert!(fx.is_empty(), "cp3 runs nothing");
    assert_eq!(s.m.clusters[&cid].members.len(), 2);
}

#[test]
fn the_never_ready_fault_holds_a_server() {
    let mut s = Sim::new(Faults {
        server_never_ready: vec!["c-cp*".into()],
        ..Faults::default()
    });
    s.vm("c-cp1", true);
    s.start(
        "c-cp1",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[("cluster-init", "true"), ("token", "t")]),
        ),
    );
    s.run(1_000);
    assert!(matches!(s.phase("c-cp1", "k3s"), Phase::Booting { .. }));
    assert_eq!(
        s.m.proc("c-cp1", "k3s").unwrap().active_state(),
        "activating"
    );
}

#[test]
fn vpn_auth_brings_tailscale_up_or_says_why_not() {
    let mut s = Sim::new(Faults::default());
    s.vm("c-cp1", false);
    let vpn = ("vpn-auth", "name=tailscale,joinKey=tskey-auth-x");
    s.start(
        "c-cp1",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[("cluster-init", "true"), ("token", "t"), vpn]),
        ),
    );
    s.run(20);
    assert!(
        s.error("c-cp1", "k3s").contains("tailscaled"),
        "{}",
        s.error("c-cp1", "k3s")
    );
    s.m.start_tailscaled("c-cp1", s.now);
    s.run(600);
    assert!(s.ready("c-cp1", "k3s"), "{}", s.error("c-cp1", "k3s"));
    assert!(s.m.tailnet_ip("c-cp1").is_some());
    assert_eq!(
        s.m.proc("c-cp1", "k3s").unwrap().node_ip,
        s.m.tailnet_ip("c-cp1")
    );
    assert!(parse_vpn_auth("name=wireguard,joinKey=x").is_err());
    assert!(parse_vpn_auth("name=tailscale").is_err());
    assert_eq!(
        parse_vpn_auth("name=tailscale,joinKey=k,extraArgs=--hostname=h --accept-dns=false")
            .unwrap()
            .extra_args,
        ["--hostname=h", "--accept-dns=false"]
    );
}

#[test]
fn flannel_iface_puts_etcd_on_the_tailnet_and_node_ip_must_be_local() {
    let mut s = Sim::new(Faults::default());
    s.vm("c-cp1", true);
    s.start(
        "c-cp1",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[
                ("cluster-init", "true"),
                ("token", "t"),
                ("flannel-iface", "tailscale0"),
            ]),
        ),
    );
    s.run(200);
    assert_eq!(
        s.m.proc("c-cp1", "k3s").unwrap().etcd_peer_ip,
        s.m.tailnet_ip("c-cp1")
    );
    s.vm("c-cp2", true);
    s.start(
        "c-cp2",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[
                ("cluster-init", "true"),
                ("token", "t"),
                ("node-ip", "100.64.9.9"),
            ]),
        ),
    );
    s.run(20);
    assert!(
        s.error("c-cp2", "k3s")
            .contains("cannot assign requested address")
    );
}

#[test]
fn tokens_and_versions_parse() {
    assert_eq!(
        parse_token("K10abc::server:s3"),
        Token {
            ca_hash: Some("abc"),
            user: Some("server"),
            secret: "s3"
        }
    );
    assert_eq!(parse_token("plain").secret, "plain");
    assert_eq!(minor_version("v1.31.4+k3s1"), Some((1, 31)));
    assert_eq!(minor_version("junk"), None);
}

/// `/ping` answers from the supervisor router before the server is Ready
/// (k3s `pkg/server/handlers/router.go:71`); the certificate holds
/// `tls-san` and the node's addresses, not the tailnet name by itself.
#[test]
fn the_supervisor_answers_before_ready_and_the_certificate_holds_tls_san() {
    let mut s = Sim::new(Faults::default());
    s.vm("p-cp1", true);
    let ip = s.ip("p-cp1");
    s.start(
        "p-cp1",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[
                ("cluster-init", "true"),
                ("token", "secret"),
                ("node-ip", ip.as_str()),
                ("tls-san", "api.example.com"),
            ]),
        ),
    );
    let mut seen_before_ready = false;
    for _ in 0..200 {
        s.run(10);
        if s.m.supervisor("p-cp1").is_some() && s.m.ready_server("p-cp1").is_none() {
            seen_before_ready = true;
        }
    }
    assert!(seen_before_ready, "{:?}", s.phase("p-cp1", "k3s"));
    assert!(s.ready("p-cp1", "k3s"));
    let (p, _) = s.m.ready_server("p-cp1").unwrap();
    assert!(p.serves_name("p-cp1", "api.example.com"));
    assert!(p.serves_name("p-cp1", &ip));
    assert!(!p.serves_name("p-cp1", "p-cp1.tail1234.ts.net"));
}

/// A learner whose peers cannot reach it is removed after 5 minutes (k3s
/// `pkg/etcd/etcd.go:67,1295-1299`): the process fails and systemd
/// restarts it, where before it stayed a learner forever.
#[test]
fn a_stalled_learner_is_removed_after_five_minutes() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.vm("c-cp2", true);
    s.start(
        "c-cp2",
        "k3s",
        inputs(
            Role::Server,
            cfg(&[
                ("server", "https://c-cp1.tail1234.ts.net:6443"),
                ("token", "secret"),
                ("agent-token", "agentsecret"),
            ]),
        ),
    );
    s.run(2_000);
    assert_eq!(s.phase("c-cp2", "k3s"), Phase::Learner);
    s.run(LEARNER_MAX_STALL_MS);
    let journal: Vec<&str> = s.m.vms["c-cp2"]
        .journal
        .iter()
        .map(|j| j.message.as_str())
        .collect();
    assert!(
        journal
            .iter()
            .any(|l| l.contains("removed from the cluster: not promoted within 5m0s")),
        "{journal:?}"
    );
    assert_ne!(s.phase("c-cp2", "k3s"), Phase::Learner);
    let c = s.m.clusters.values().next().unwrap();
    assert!(
        c.members
            .iter()
            .all(|m| m.vm != "c-cp2" || m.learner_since.is_none()),
        "{:?}",
        c.members
    );
}

/// Scheduled snapshots follow `etcd-snapshot-schedule-cron` on the
/// model's clock; an expression cron refuses schedules none and k3s says
/// nothing (it discards `AddJob`'s error, `pkg/etcd/snapshot.go:890`).
#[test]
fn scheduled_snapshots_follow_the_cron_and_a_refused_cron_schedules_none() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[("etcd-snapshot-schedule-cron", "@every 1s")]);
    let mut due = 0;
    for _ in 0..250 {
        s.now += 10;
        due += s
            .m
            .tick_k3s(s.now)
            .iter()
            .filter(|e| matches!(e, Effect::ScheduledSnapshot { vm, unit } if vm == "c-cp1" && unit == "k3s"))
            .count();
    }
    assert_eq!(due, 2, "one a second after Ready, for 2.5 s");

    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[("etcd-snapshot-schedule-cron", "every hour")]);
    assert!(s.m.proc("c-cp1", "k3s").unwrap().snapshot_timer.is_none());
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    let t =
        s.m.proc("c-cp1", "k3s")
            .unwrap()
            .snapshot_timer
            .clone()
            .unwrap();
    assert_eq!(
        t.schedule,
        crate::world::cron::Schedule::parse(snapshot::DEFAULT_SCHEDULE).unwrap()
    );
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[("etcd-disable-snapshots", "true")]);
    assert!(s.m.proc("c-cp1", "k3s").unwrap().snapshot_timer.is_none());
}

/// `k3s server --cluster-reset --cluster-reset-restore-path`: refused
/// while k3s runs, with another token, or for a file that is no snapshot;
/// otherwise the node is a one-member cluster holding the snapshot's
/// objects. A server still on the old data waits on the old membership
/// until its `server/db` is gone, then joins; an agent reports to the
/// restored cluster.
#[test]
fn a_restore_needs_its_token_and_strands_the_old_membership_until_rejoined() {
    use crate::world::kube::objects::NAMESPACES;
    use serde_json::json;
    use snapshot::{PORTS_HELD, ResetRequest, WRONG_TOKEN};

    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.join_server("c-cp2", &[]);
    s.run(300);
    assert!(s.ready("c-cp2", "k3s"), "{}", s.error("c-cp2", "k3s"));
    s.vm("c-a1", true);
    s.start("c-a1", "k3s-agent", agent(&[]));
    s.run(300);
    assert!(
        s.ready("c-a1", "k3s-agent"),
        "{}",
        s.error("c-a1", "k3s-agent")
    );
    let old = s.m.ready_server("c-cp1").unwrap().1.to_string();
    let ns = |name: &str| json!({"metadata": {"name": name}});
    fn api<'a>(s: &'a mut Sim, c: &str) -> &'a mut crate::world::kube::ApiStore {
        &mut s.m.clusters.get_mut(c).unwrap().api
    }
    api(&mut s, &old)
        .create(&NAMESPACES, "", ns("before"))
        .unwrap();
    let taken = s.m.take_snapshot("c-cp1", s.now).unwrap();
    assert_eq!(
        (taken.unit.as_str(), taken.node_name.as_str()),
        ("k3s", "c-cp1")
    );
    api(&mut s, &old)
        .create(&NAMESPACES, "", ns("after"))
        .unwrap();

    let req = ResetRequest {
        node_name: "c-cp1".into(),
        token: Some("secret".into()),
        snapshot: Some(taken.content.clone()),
        has_data_dir: true,
        reset_flag: false,
    };
    assert_eq!(
        s.m.cluster_reset("c-cp1", &req, s.now).unwrap_err(),
        PORTS_HELD
    );
    for vm in ["c-cp1", "c-cp2"] {
        s.m.stop_k3s(vm, "k3s", s.now);
    }
    let wrong = ResetRequest {
        token: Some("K10abc::server:other".into()),
        ..req.clone()
    };
    assert_eq!(
        s.m.cluster_reset("c-cp1", &wrong, s.now).unwrap_err(),
        WRONG_TOKEN
    );
    let garbage = ResetRequest {
        snapshot: Some("etcd\n".into()),
        ..req.clone()
    };
    assert!(
        s.m.cluster_reset("c-cp1", &garbage, s.now)
            .unwrap_err()
            .contains("integrity check failed")
    );
    let (log, _) = s.m.cluster_reset("c-cp1", &req, s.now).unwrap();
    assert!(
        log.iter().any(|l| l.contains("cluster-reset=true")),
        "{log:?}"
    );
    let new = s.m.vms["c-cp1"].server_data.clone().unwrap();
    assert_ne!(new, old);
    {
        let c = &s.m.clusters[&new];
        assert_eq!(c.members.len(), 1);
        assert!(c.api.get(&NAMESPACES, "", "before").is_ok());
        assert!(c.api.get(&NAMESPACES, "", "after").is_err());
        assert!(std::sync::Arc::ptr_eq(&c.pki, &s.m.clusters[&old].pki));
    }

    // The reset server restarts alone on its data, on its tailnet address.
    let mut i = s.inputs[&("c-cp1".to_string(), "k3s".to_string())].clone();
    i.has_data_dir = true;
    s.start("c-cp1", "k3s", i);
    s.run(300);
    assert!(s.ready("c-cp1", "k3s"), "{}", s.error("c-cp1", "k3s"));
    let ip = s.ip("c-cp1");
    assert_eq!(s.m.clusters[&new].members[0].peer_ip.to_string(), ip);
    // The agent reports to the restored cluster, without a restart.
    s.run(50);
    let a = s.m.proc("c-a1", "k3s-agent").unwrap();
    assert_eq!(a.cluster.as_deref(), Some(new.as_str()));
    assert!(
        s.m.clusters[&new]
            .api
            .get(&crate::world::kube::objects::NODES, "", "c-a1")
            .is_ok_and(|n| crate::world::kube::objects::node_ready(&n))
    );

    // cp2 on its old data: the old membership has no quorum.
    let mut i2 = s.inputs[&("c-cp2".to_string(), "k3s".to_string())].clone();
    i2.has_data_dir = true;
    s.start("c-cp2", "k3s", i2.clone());
    s.run(300);
    let e = s.error("c-cp2", "k3s");
    assert!(
        e.contains("cluster ID mismatch") && e.contains("delete /var/lib/rancher/k3s/server/db"),
        "{e}"
    );
    // Its data removed, it joins the restored cluster.
    s.m.stop_k3s("c-cp2", "k3s", s.now);
    i2.has_data_dir = false;
    s.start("c-cp2", "k3s", i2);
    s.run(400);
    assert!(s.ready("c-cp2", "k3s"), "{}", s.error("c-cp2", "k3s"));
    assert_eq!(s.m.vms["c-cp2"].server_data.as_deref(), Some(new.as_str()));
    assert_eq!(s.m.clusters[&new].members.len(), 2);
}

#[test]
fn retention_keeps_the_newest_of_a_prefix() {
    use snapshot::{created_secs, local_retention, snapshot_name};
    let names: Vec<String> = [
        "etcd-snapshot-a-100",
        "etcd-snapshot-a-300",
        "etcd-snapshot-a-200",
        "on-demand-a-50",
        "etcd-snapshot-a-400.zip",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        local_retention(&names, "etcd-snapshot", 2),
        ["etcd-snapshot-a-200", "etcd-snapshot-a-100"]
    );
    assert!(local_retention(&names, "etcd-snapshot", 0).is_empty());
    assert_eq!(created_secs("etcd-snapshot-a-400.zip"), Some(400));
    assert_eq!(created_secs("x"), None);
    assert_eq!(
        snapshot_name("on-demand", "srv-1", 1_765_000_000_600),
        "on-demand-srv-1-1765000001"
    );
}

/// A reset without a snapshot keeps the node's own data as a one-member
/// cluster and leaves the reset flag: a second reset is refused until the
/// flag is deleted (`pkg/cluster/managed.go:47-56`); with no data there is
/// nothing to reset.
#[test]
fn a_reset_without_a_snapshot_keeps_the_data_once() {
    use crate::world::kube::objects::NAMESPACES;
    use snapshot::{RESET_FLAG, ResetRequest};

    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.join_server("c-cp2", &[]);
    s.run(300);
    let old = s.m.ready_server("c-cp1").unwrap().1.to_string();
    s.m.clusters
        .get_mut(&old)
        .unwrap()
        .api
        .create(
            &NAMESPACES,
            "",
            serde_json::json!({"metadata": {"name": "kept"}}),
        )
        .unwrap();
    for vm in ["c-cp1", "c-cp2"] {
        s.m.stop_k3s(vm, "k3s", s.now);
    }
    let req = ResetRequest {
        node_name: "c-cp1".into(),
        token: Some("secret".into()),
        snapshot: None,
        has_data_dir: true,
        reset_flag: false,
    };
    let (_, fx) = s.m.cluster_reset("c-cp1", &req, s.now).unwrap();
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::WriteFile { path, .. } if path == RESET_FLAG))
    );
    let new = s.m.vms["c-cp1"].server_data.clone().unwrap();
    let c = &s.m.clusters[&new];
    assert_eq!(
        c.members.iter().map(|m| m.vm.as_str()).collect::<Vec<_>>(),
        ["c-cp1"]
    );
    assert!(c.api.get(&NAMESPACES, "", "kept").is_ok());
    assert_eq!(
        s.m.clusters[&old].superseded_by.as_deref(),
        Some(new.as_str())
    );
    let again = ResetRequest {
        reset_flag: true,
        ..req.clone()
    };
    let e = s.m.cluster_reset("c-cp1", &again, s.now).unwrap_err();
    assert!(
        e.contains("previously reset") && e.contains(RESET_FLAG),
        "{e}"
    );
    let nothing = ResetRequest {
        has_data_dir: false,
        ..req
    };
    assert!(
        s.m.cluster_reset("c-cp1", &nothing, s.now)
            .unwrap_err()
            .contains("no etcd data")
    );
}

/// The node-password Secret of `node` in the one cluster, if any.
fn password_secret(s: &Sim, node: &str) -> Option<serde_json::Value> {
    let c = s.m.clusters.values().last()?;
    c.api
        .get(
            &crate::world::kube::objects::SECRETS,
            "kube-system",
            &node_password::secret_name(node),
        )
        .ok()
}

/// An agent's password is made once (k3s `pkg/agent/config/config.go:206-227`)
/// and kept: a restart of its k3s proves the same name again, and its
/// Secret is owned by its Node (`pkg/nodepassword/controller.go:67-97`).
#[test]
fn an_agent_keeps_its_password_across_restarts_and_its_secret_is_owned_by_its_node() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.vm("c-web1", true);
    s.start("c-web1", "k3s-agent", agent(&[]));
    s.run(150);
    assert!(
        s.ready("c-web1", "k3s-agent"),
        "{}",
        s.error("c-web1", "k3s-agent")
    );
    let pass = s.inputs[&("c-web1".to_string(), "k3s-agent".to_string())]
        .node_password
        .clone()
        .expect("the password file was written");
    assert_eq!(pass.len(), 32, "16 bytes as hex, as k3s makes it");
    let secret = password_secret(&s, "c-web1").expect("its Secret");
    assert_eq!(secret["type"], node_password::SECRET_TYPE);
    assert!(
        !secret.to_string().contains(&pass),
        "the Secret holds a hash, never the password"
    );
    let node =
        s.m.clusters
            .values()
            .last()
            .unwrap()
            .api
            .get(&crate::world::kube::objects::NODES, "", "c-web1")
            .unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        node["metadata"]["uid"]
    );
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Node");
    // The server's own node has one too.
    assert!(password_secret(&s, "c-cp1").is_some());
    // Restarted (the same VM, the same file): admitted again.
    let fx = s.m.stop_k3s("c-web1", "k3s-agent", s.now);
    s.effects(fx);
    let i = s.inputs[&("c-web1".to_string(), "k3s-agent".to_string())].clone();
    s.start("c-web1", "k3s-agent", i);
    s.run(150);
    assert!(
        s.ready("c-web1", "k3s-agent"),
        "{}",
        s.error("c-web1", "k3s-agent")
    );
    assert_eq!(
        s.inputs[&("c-web1".to_string(), "k3s-agent".to_string())].node_password,
        Some(pass)
    );
}

/// A new VM under the name of a Node that remains brings a new password:
/// refused with k3s's 403 and its agent's message, retried (k3s
/// `config.go:57-76`); once the Node is deleted the garbage collector takes
/// its Secret and the next try is admitted.
#[test]
fn a_new_agent_vm_under_a_remaining_nodes_name_is_refused_until_the_node_goes() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.vm("c-web1", true);
    s.start("c-web1", "k3s-agent", agent(&[]));
    s.run(150);
    assert!(s.ready("c-web1", "k3s-agent"));
    let before = password_secret(&s, "c-web1").unwrap();
    // Removed behind everyone's back, and created again: a new root.
    let fx = s.m.remove_vm("c-web1", s.now);
    s.effects(fx);
    s.vm("c-web1", true);
    s.start("c-web1", "k3s-agent", agent(&[]));
    s.run(2_000);
    let err = s.error("c-web1", "k3s-agent");
    assert!(
        err.contains(node_password::REJECTED)
            && err.contains("serving-kubelet.crt")
            && err.starts_with("Waiting to retrieve agent configuration"),
        "{err}"
    );
    assert!(matches!(s.phase("c-web1", "k3s-agent"), Phase::Waiting(_)));
    let server_log: Vec<&str> = s.m.vms["c-cp1"]
        .journal
        .iter()
        .map(|j| j.message.as_str())
        .collect();
    assert!(
        server_log.iter().any(|l| l.contains("403 response")
            && l.contains("unable to verify password for node c-web1: hash does not match")),
        "{server_log:#?}"
    );
    assert_eq!(
        password_secret(&s, "c-web1"),
        Some(before),
        "the Secret is kept"
    );
    // The stale Node deleted: its Secret goes with it, the retry joins.
    let cid = s.m.clusters.keys().last().unwrap().clone();
    s.m.clusters
        .get_mut(&cid)
        .unwrap()
        .api
        .delete(&crate::world::kube::objects::NODES, "", "c-web1")
        .unwrap();
    assert!(
        password_secret(&s, "c-web1").is_none(),
        "collected with its Node"
    );
    s.run(1_000);
    assert!(
        s.ready("c-web1", "k3s-agent"),
        "{}",
        s.error("c-web1", "k3s-agent")
    );
}

/// The retry is k3s's: not before the interval (the world's
/// `restart_ms`, k3s's 5 s base) is over.
#[test]
fn a_refused_agent_asks_again_only_after_the_retry_interval() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    s.vm("c-web1", true);
    s.start("c-web1", "k3s-agent", agent(&[]));
    s.run(150);
    let fx = s.m.remove_vm("c-web1", s.now);
    s.effects(fx);
    s.vm("c-web1", true);
    s.start("c-web1", "k3s-agent", agent(&[]));
    s.run(20);
    assert!(
        s.error("c-web1", "k3s-agent")
            .contains(node_password::REJECTED)
    );
    let cid = s.m.clusters.keys().last().unwrap().clone();
    s.m.clusters
        .get_mut(&cid)
        .unwrap()
        .api
        .delete(&crate::world::kube::objects::NODES, "", "c-web1")
        .unwrap();
    s.run(100);
    assert!(
        !s.ready("c-web1", "k3s-agent"),
        "asked again too soon: {}",
        s.error("c-web1", "k3s-agent")
    );
    s.run(Timings::default().restart_ms + 200);
    assert!(
        s.ready("c-web1", "k3s-agent"),
        "{}",
        s.error("c-web1", "k3s-agent")
    );
}

/// A server's own node is verified against its own file before its API
/// runs (k3s `pkg/nodepassword/validate.go:62-65,127-168`): a server whose
/// password changed under a remaining Node is not refused; the deferred
/// check only warns (`validate.go:185-208`).
#[test]
fn a_server_with_a_new_password_is_not_refused_only_warned() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    let before = password_secret(&s, "c-cp1").unwrap();
    let fx = s.m.stop_k3s("c-cp1", "k3s", s.now);
    s.effects(fx);
    let mut i = s.inputs[&("c-cp1".to_string(), "k3s".to_string())].clone();
    i.has_data_dir = true;
    i.node_password = Some("another-password".into());
    s.start("c-cp1", "k3s", i);
    s.run(300);
    assert!(s.ready("c-cp1", "k3s"), "{}", s.error("c-cp1", "k3s"));
    let log: Vec<&str> = s.m.vms["c-cp1"]
        .journal
        .iter()
        .map(|j| j.message.as_str())
        .collect();
    assert!(
        log.iter()
            .any(|l| l.contains("NodePasswordValidationFailed")),
        "{log:#?}"
    );
    assert_eq!(password_secret(&s, "c-cp1"), Some(before), "not replaced");
}

/// The first start after a cluster reset deletes the node's own Secret
/// before its check (k3s `pkg/cluster/managed.go:58-62,133-143`): a server
/// whose password differs from the restored one gets a Secret of its own,
/// without the warning.
#[test]
fn after_a_reset_a_server_replaces_its_own_password_secret() {
    let mut s = Sim::new(Faults::default());
    s.first_server("c-cp1", &[]);
    let before = password_secret(&s, "c-cp1").unwrap();
    let fx = s.m.stop_k3s("c-cp1", "k3s", s.now);
    s.effects(fx);
    let mut i = s.inputs[&("c-cp1".to_string(), "k3s".to_string())].clone();
    i.has_data_dir = true;
    i.node_password = Some("another-password".into());
    i.reset_flag = true;
    s.start("c-cp1", "k3s", i);
    s.run(300);
    assert!(s.ready("c-cp1", "k3s"), "{}", s.error("c-cp1", "k3s"));
    let after = password_secret(&s, "c-cp1").unwrap();
    assert_ne!(after["data"], before["data"], "a new hash");
    assert!(after["metadata"]["ownerReferences"][0]["kind"] == "Node");
    let warned = s.m.vms["c-cp1"]
        .journal
        .iter()
        .any(|j| j.message.contains("NodePasswordValidationFailed"));
    assert!(!warned);
}
