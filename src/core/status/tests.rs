use std::collections::BTreeMap;

use super::*;
use crate::core::api::types::{ShareInfo, Visibility, VmInfo};
use crate::core::bootstrap::{BootstrapPhase, BootstrapReport};
use crate::core::fleet::fixtures;
use crate::core::fleet::{self, DesiredVm};
use crate::edges::cluster::NodeView;
use crate::edges::probe::ProbeResult;
use std::time::Duration;

pub(super) fn fleet() -> crate::core::fleet::Fleet {
    fixtures::fleet_with(
        "pools:\n  - name: web\n    count: 2\n    share: {port: 8080, public: true}\n",
    )
}

pub(super) fn vm(d: &DesiredVm) -> VmInfo {
    VmInfo {
        vm_name: d.name.clone(),
        status: "running".into(),
        tags: d.tags.clone(),
        comment: format!("{}abc", fleet::SPEC_COMMENT_PREFIX),
        allocated_cpus: d.cpu,
        memory_capacity_bytes: d.memory.0,
        disk_capacity_bytes: d.disk.0,
        ..Default::default()
    }
}

pub(super) fn node(d: &DesiredVm, ready: bool) -> NodeView {
    NodeView {
        name: d.name.clone(),
        ready,
        ready_reason: None,
        ready_message: None,
        labels: d.labels.clone(),
        taints: d.taints.iter().map(|t| t.to_string()).collect(),
        kubelet_version: Some("v1.31.4+k3s1".into()),
        unschedulable: false,
        ready_since: None,
    }
}

#[test]
fn joins_both_sides_and_flags_one_sided_entries() {
    let f = fleet();
    let desired = crate::core::fleet::desired_vms(&f);
    let mut vms: Vec<VmInfo> = desired.iter().map(vm).collect();
    vms.remove(2); // demo-web2 has no VM
    let mut stray = vm(&desired[0]);
    stray.vm_name = "demo-web7".into();
    vms.push(stray);
    let mut nodes: Vec<NodeView> = desired.iter().map(|d| node(d, true)).collect();
    nodes[1].ready = false;
    let ghost = NodeView {
        name: "demo-old1".into(),
        ..nodes[0].clone()
    };
    nodes.push(ghost);
    let readiness = crate::edges::cluster::readiness(&desired, &nodes);
    let mut shares = BTreeMap::new();
    shares.insert(
        "demo-web1".into(),
        ShareInfo {
            vm_name: "demo-web1".into(),
            status: Visibility::Private,
            port: 8080,
            url: String::new(),
            users: None,
            links: None,
        },
    );
    let probes = vec![ProbeResult {
        vm: "demo-web1".into(),
        status: Some(200),
        latency: Duration::from_millis(12),
        error: None,
        authenticated: false,
        private_unprobed: false,
    }];
    let s = join(&Sides {
        cluster: "demo",
        desired: &desired,
        vms: &vms,
        shares: &shares,
        nodes: Some((&nodes, &readiness)),
        probes: &probes,
        bootstrap: &BTreeMap::new(),
    });
    let row = |n: &str| s.rows.iter().find(|r| r.name == n).unwrap();
    assert!(row("demo-cp1").problems.is_empty(), "{:?}", row("demo-cp1"));
    assert_eq!(row("demo-web1").node, Some(NodeCell::NotReady));
    assert!(row("demo-web1").problems.contains(&Problem::ProxyDiffers {
        port: 8080,
        public: false,
        want_port: 8080,
        want_public: true,
    }));
    assert_eq!(row("demo-web1").probe.as_deref(), Some("200 in 12 ms"));
    assert!(row("demo-web2").problems.contains(&Problem::NoVm));
    assert!(row("demo-web7").problems.contains(&Problem::NotInFleet));
    assert_eq!(row("demo-web7").node, Some(NodeCell::NoNode));
    assert!(row("demo-old1").problems.contains(&Problem::NodeWithoutVm));
    assert!(!s.healthy);
    // The missing VM, the stray VM and the Node without a VM each have
    // a row and a problem; the ghost Node's VM column says `missing`.
    insta::assert_snapshot!("status_one_sided", render(&s));
}

/// Long names and probe results widen their columns instead of running
/// into the next; the reason the API is unreachable shows once.
#[test]
fn columns_fit_their_widest_cell_and_the_api_reason_shows_once() {
    let f = fixtures::parsed(
        &(fixtures::minimal_replacing("name: demo", "name: production-europe-west")
            + "pools:\n  - name: ingressgateway\n    count: 1\n    share: {port: 8080, public: true}\n"),
    );
    let desired = crate::core::fleet::desired_vms(&f);
    let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
    let mut shares = BTreeMap::new();
    shares.insert(
        desired[1].name.clone(),
        ShareInfo {
            vm_name: desired[1].name.clone(),
            status: Visibility::Public,
            port: 8080,
            url: String::new(),
            users: None,
            links: None,
        },
    );
    let probes = vec![ProbeResult {
        vm: desired[1].name.clone(),
        status: Some(200),
        latency: Duration::from_millis(1234),
        error: None,
        authenticated: false,
        private_unprobed: false,
    }];
    let mut st = join(&Sides {
        cluster: "production-europe-west",
        desired: &desired,
        vms: &vms,
        shares: &shares,
        nodes: None,
        probes: &probes,
        bootstrap: &BTreeMap::new(),
    });
    st.cluster_api_error = Some("no kubeconfig at .exedev-k8s/p/kubeconfig".into());
    let text = render(&st);
    assert_eq!(text.matches("not reachable").count(), 1, "{text}");
    insta::assert_snapshot!(text, @r"
    VM                                      ROLE    VM STATUS  SIZE           PROXY        BOOTSTRAP  NODE  K3S  PROBE
    production-europe-west-cp1              server  running    2cpu/4GB/20GB  -            -          ?     -    -
    production-europe-west-ingressgateway1  agent   running    2cpu/4GB/20GB  8080 public  -          ?     -    200 in 1234 ms

    Kubernetes API not reachable, node columns unknown: no kubeconfig at .exedev-k8s/p/kubeconfig

    Not healthy: no problems in what could be read (2 VMs), but their nodes are unknown without the Kubernetes API.
    ");
}

#[test]
fn without_api_access_node_columns_are_unknown() {
    let f = fleet();
    let desired = crate::core::fleet::desired_vms(&f);
    let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
    let s = join(&Sides {
        cluster: "demo",
        desired: &desired,
        vms: &vms,
        shares: &BTreeMap::new(),
        nodes: None,
        probes: &[],
        bootstrap: &BTreeMap::new(),
    });
    // Unknown is not healthy: exit 2, said in words.
    assert!(!s.healthy && !s.cluster_api);
    assert!(
        s.rows
            .iter()
            .all(|r| r.unknown == ["node: the Kubernetes API was not reachable"]),
        "{:?}",
        s.rows
    );
    // `?` in the node column, and how to give status API access.
    insta::assert_snapshot!("status_without_api", render(&s));
}

#[test]
fn bootstrap_states_and_pending_labels_show_with_their_cause() {
    let f = fixtures::fleet_with(
        "pools:\n  - name: web\n    count: 3\n    labels: {node-role.kubernetes.io/worker: \"true\"}\n",
    );
    let desired = crate::core::fleet::desired_vms(&f);
    let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
    // cp1 Ready; web1 Ready without its role label; web2 and web3 never
    // registered.
    let mut nodes = vec![node(&desired[0], true), node(&desired[1], true)];
    nodes[1].labels.remove("node-role.kubernetes.io/worker");
    let readiness = crate::edges::cluster::readiness(&desired, &nodes);
    let report = |phase, log: &[&str]| {
        Ok(BootstrapReport {
            phase,
            log_tail: log.iter().map(|l| l.to_string()).collect(),
        })
    };
    let bootstrap = BTreeMap::from([
        ("demo-cp1".to_string(), report(BootstrapPhase::Done, &[])),
        ("demo-web1".to_string(), report(BootstrapPhase::Done, &[])),
        (
            "demo-web2".to_string(),
            report(
                BootstrapPhase::Failed {
                    step: "join the tailnet".into(),
                },
                &[
                    "tailscale up failed (attempt 5 of 5)",
                    "backend error: invalid key",
                ],
            ),
        ),
        (
            "demo-web3".to_string(),
            report(
                BootstrapPhase::Running {
                    step: "run the k3s installer".into(),
                },
                &[],
            ),
        ),
    ]);
    let s = join(&Sides {
        cluster: "demo",
        desired: &desired,
        vms: &vms,
        shares: &BTreeMap::new(),
        nodes: Some((&nodes, &readiness)),
        probes: &[],
        bootstrap: &bootstrap,
    });
    let row = |n: &str| s.rows.iter().find(|r| r.name == n).unwrap();
    assert!(row("demo-cp1").problems.is_empty(), "{:?}", row("demo-cp1"));
    assert_eq!(
        row("demo-web1").pending_labels,
        ["node-role.kubernetes.io/worker=true"]
    );
    assert!(
        row("demo-web1")
            .problems
            .iter()
            .any(|p| matches!(p, Problem::LabelsPending { labels } if labels.contains_key("node-role.kubernetes.io/worker"))),
        "{:?}",
        row("demo-web1")
    );
    assert_eq!(
        row("demo-web2").bootstrap.as_deref(),
        Some("failed (join the tailnet)")
    );
    assert_eq!(
        row("demo-web3").bootstrap.as_deref(),
        Some("running (run the k3s installer)")
    );
    assert!(row("demo-web3").problems.iter().any(|p| *p
        == Problem::BootstrapRunning {
            step: "run the k3s installer".into()
        }));
    assert!(!s.healthy);
    // The phase in the table, the step under `Bootstrap:`, a failed
    // bootstrap's last log lines under its problem.
    insta::assert_snapshot!("status_bootstrap", render(&s));
}

/// Statuses, names and node versions come from exe.dev and Kubernetes:
/// the table shows their control characters as escapes.
#[test]
fn outside_text_is_escaped_in_the_table() {
    let f = fleet();
    let desired = crate::core::fleet::desired_vms(&f);
    let mut vms: Vec<VmInfo> = desired.iter().map(vm).collect();
    vms[0].status = "stopped\u{1b}]0;pwned\u{7}".into();
    let mut nodes: Vec<NodeView> = desired.iter().map(|d| node(d, true)).collect();
    nodes[1].kubelet_version = Some("v1\u{1b}[2J".into());
    nodes.push(NodeView {
        name: "demo-x\u{1b}[31m".into(),
        ..nodes[0].clone()
    });
    nodes[2]
        .labels
        .insert("exedev-k8s.io/pool".into(), "evil\u{9b}".into());
    let readiness = crate::edges::cluster::readiness(&desired, &nodes);
    let s = join(&Sides {
        cluster: "demo",
        desired: &desired,
        vms: &vms,
        shares: &BTreeMap::new(),
        nodes: Some((&nodes, &readiness)),
        probes: &[],
        bootstrap: &BTreeMap::new(),
    });
    let text = render(&s);
    assert!(
        !text
            .chars()
            .any(|c| crate::base::text::is_control(c) && c != '\n'),
        "{text}"
    );
    insta::assert_snapshot!("status_escaped", text);
}

/// Issue 22, finding 1. Repro: a VM whose bootstrap state file says
/// `step: ESC]0;PWNED-TITLE BEL ESC[2J ESC[31m ... U+202E` made
/// `status` set the window title, clear the screen and reverse text:
/// the "Bootstrap:" lines were built with `format!("{}: {b}", ...)`
/// and printed raw (the Problems section escaped the same string).
/// Here every field a hostile VM controls (bootstrap step, failed step,
/// log lines, k3s's journal reason, SSH's error, the tailnet check's
/// "not checked" reason) carries escapes, bidi overrides and a line
/// break that forges a problem line: none reaches the output raw.
#[test]
fn every_line_from_a_hostile_vm_is_escaped() {
    let evil = "\u{1b}]0;PWNED-TITLE\u{7}\u{1b}[2J\u{1b}[31mred\u{202e}desrever\u{9b}1m\r\n  ! demo-cp1: FORGED";
    let f = fixtures::fleet_with("pools:\n  - name: web\n    count: 3\n");
    let desired = crate::core::fleet::desired_vms(&f);
    let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
    let nodes: Vec<NodeView> = desired.iter().map(|d| node(d, false)).collect();
    let readiness = crate::edges::cluster::readiness(&desired, &nodes);
    let bootstrap = BTreeMap::from([
        (
            "demo-cp1".to_string(),
            Ok(BootstrapReport {
                phase: BootstrapPhase::Running { step: evil.into() },
                log_tail: Vec::new(),
            }),
        ),
        (
            "demo-web1".to_string(),
            Ok(BootstrapReport {
                phase: BootstrapPhase::Failed { step: evil.into() },
                log_tail: vec![evil.into(), evil.into()],
            }),
        ),
        ("demo-web2".to_string(), Err(evil.to_string())),
    ]);
    let mut st = join(&Sides {
        cluster: "demo",
        desired: &desired,
        vms: &vms,
        shares: &BTreeMap::new(),
        nodes: Some((&nodes, &readiness)),
        probes: &[],
        bootstrap: &bootstrap,
    });
    st.add_k3s_reasons(&BTreeMap::from([("demo-web1".to_string(), evil.into())]));
    st.add_tailnet(crate::core::tailnet_check::evaluate(
        &[],
        &[],
        &BTreeMap::new(),
        vec![("demo-web3".into(), evil.into())],
        vec![("demo-web2".into(), evil.into())],
    ));
    let text = render(&st);
    assert!(
        !text
            .chars()
            .any(|c| crate::base::text::is_control(c) && c != '\n'),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("! demo-cp1: FORGED")),
        "{text}"
    );
    // The step is still there, escaped, on its VM's line.
    assert!(
        text.lines()
            .any(|l| l.starts_with("  demo-cp1: running (\\u{1b}]0;PWNED-TITLE")),
        "{text}"
    );
}

/// k3s's own reason joins the failed bootstrap's problem (escaped: it
/// comes from a VM), and a dropped tailnet flow is a problem of the VM
/// it starts from, with the entry to add printed once.
#[test]
fn k3s_reasons_and_dropped_tailnet_flows_show_with_what_to_do() {
    use crate::core::tailnet_check::{Probe, TailnetNode, evaluate, probes};
    use core::net::Ipv4Addr;
    let f = fixtures::fleet_with("pools:\n  - name: web\n    count: 1\n");
    let desired = crate::core::fleet::desired_vms(&f);
    let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
    let failed = Ok(BootstrapReport {
        phase: BootstrapPhase::Failed {
            step: "wait for k3s-agent to be active".into(),
        },
        log_tail: vec!["k3s-agent not active after 10 minutes".into()],
    });
    let bootstrap = BTreeMap::from([("demo-web1".to_string(), failed)]);
    let mut st = join(&Sides {
        cluster: "demo",
        desired: &desired,
        vms: &vms,
        shares: &BTreeMap::new(),
        nodes: None,
        probes: &[],
        bootstrap: &bootstrap,
    });
    st.add_k3s_reasons(&BTreeMap::from([(
        "demo-web1".to_string(),
        "failed to validate token\u{1b}[2J".to_string(),
    )]));
    let node = |vm: &str, server, last| TailnetNode {
        vm: vm.into(),
        server,
        ip: Ipv4Addr::new(100, 64, 0, last),
        tags: Vec::new(),
    };
    let nodes = [node("demo-cp1", true, 1), node("demo-web1", false, 2)];
    let ps = probes(&nodes);
    let outputs = BTreeMap::from([
        (
            "demo-web1".to_string(),
            Ok("probe 100.64.0.1:6443 28\nprobe 100.64.0.1:10250 0\n".to_string()),
        ),
        (
            "demo-cp1".to_string(),
            Ok("probe 100.64.0.2:10250 7\n".to_string()),
        ),
    ]);
    st.add_tailnet(evaluate(&nodes, &ps, &outputs, Vec::new(), Vec::new()));
    assert!(!st.healthy);
    assert_eq!(
        st.tailnet.as_ref().map(|t| t.dropped.clone()),
        Some(vec![Probe {
            from: "demo-web1".into(),
            to: "demo-cp1".into(),
            ip: Ipv4Addr::new(100, 64, 0, 1),
            port: 6443
        }])
    );
    insta::assert_snapshot!(render(&st), @r#"
    VM         ROLE    VM STATUS  SIZE           PROXY  BOOTSTRAP  NODE  K3S  PROBE
    demo-cp1   server  running    2cpu/4GB/20GB  -      -          ?     -    -
    demo-web1  agent   running    2cpu/4GB/20GB  -      failed     ?     -    -

    Kubernetes API not reachable, node columns unknown: pass --kubeconfig, run `exedev-k8s kubeconfig -f FLEET`, or join the tailnet

    Bootstrap:
      demo-web1: failed (wait for k3s-agent to be active)

    Tailnet: 1 of 3 connections between 2 nodes dropped (8472/udp (flannel VXLAN) cannot be checked by a connect).

    Problems:
      ! demo-web1: bootstrap failed at step "wait for k3s-agent to be active"; k3s says: failed to validate token\u{1b}[2J; last log lines:
        | k3s-agent not active after 10 minutes
      ! demo-web1: the tailnet drops demo-web1 -> demo-cp1 (100.64.0.1) on 6443/tcp (API server and supervisor): no connection within 3s; add the tailnet policy entry below

    Tailnet policy: add this entry to "acls" in the tailnet policy file (admin console, Access controls):
      {"action": "accept", "src": ["100.64.0.1", "100.64.0.2"], "dst": ["100.64.0.1:6443,2379-2380,8472,10250", "100.64.0.2:6443,2379-2380,8472,10250"]}
      It also lets 8472/udp (flannel VXLAN) through, which a connect cannot check.
      Some devices have no ACL tag, so the entry names their current addresses, which a replaced VM does not keep: use a tagged auth key and write the entry for its tag.
    "#);
}
