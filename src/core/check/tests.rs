use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

fn nodes(spec: &[(&str, usize)]) -> Vec<CheckNode> {
    spec.iter()
        .flat_map(|(pool, n)| {
            (1..=*n).map(move |i| CheckNode {
                name: format!("ha-{pool}{i}"),
                pool: (*pool).to_string(),
            })
        })
        .collect()
}

fn answered(r: &str) -> Dial {
    Dial::Answered {
        response: r.to_string(),
    }
}

fn timeout() -> Dial {
    Dial::Failed {
        error: "Get \"http://10.42.1.2:8080/hostname\": context deadline exceeded".into(),
    }
}

#[test]
fn small_clusters_probe_every_ordered_pair() {
    let n = nodes(&[("cp", 1), ("web", 2)]);
    let p = pairs(&n);
    assert_eq!(p.len(), 6);
    assert!(p.contains(&("ha-web2".into(), "ha-cp1".into())));
    assert!(pairs(&nodes(&[("cp", 1)])).is_empty());
}

/// Every node sends and receives, every ordered pool pair is covered, and
/// the count stays linear: 2n + p² at most.
#[test]
fn large_clusters_are_bounded_and_cover_every_node_and_pool_pair() {
    for spec in [
        &[("cp", 3), ("ingress", 2), ("web", 4)][..],
        &[("cp", 3), ("ingress", 2), ("web", 55)][..],
        &[("cp", 5), ("a", 1), ("b", 1), ("c", 30)][..],
    ] {
        let n = nodes(spec);
        let p = pairs(&n);
        let pools = spec.len();
        assert!(p.len() <= 2 * n.len() + pools * pools, "{} pairs", p.len());
        for node in &n {
            assert!(
                p.iter().any(|(f, _)| *f == node.name),
                "{} sends",
                node.name
            );
            assert!(
                p.iter().any(|(_, t)| *t == node.name),
                "{} receives",
                node.name
            );
        }
        let pool = |name: &str| n.iter().find(|c| c.name == name).map(|c| c.pool.clone());
        let covered: BTreeSet<_> = p.iter().map(|(f, t)| (pool(f), pool(t))).collect();
        for (a, an) in spec {
            for (b, _) in spec {
                if a == b && *an < 2 {
                    continue;
                }
                assert!(
                    covered.contains(&(Some(a.to_string()), Some(b.to_string()))),
                    "{a} -> {b}"
                );
            }
        }
        assert!(p.iter().all(|(f, t)| f != t));
    }
    assert_eq!(
        pairs(&nodes(&[("cp", 3), ("ingress", 2), ("web", 4)])).len(),
        19
    );
}

#[test]
fn dial_paths_go_through_the_pod_proxy_with_encoded_values() {
    assert_eq!(
        dial_path(
            "exedev-k8s-check-ab12",
            "netexec-x",
            "10.42.1.5",
            8080,
            "echo?msg=a b"
        ),
        "/api/v1/namespaces/exedev-k8s-check-ab12/pods/netexec-x:8080/proxy/dial?host=10.42.1.5&port=8080&request=echo%3Fmsg%3Da%20b&protocol=http&tries=1"
    );
    assert!(large_request().len() > LARGE_REQUEST);
}

#[test]
fn netexec_answers_are_read_as_netexec_writes_them() {
    assert_eq!(
        read_dial(200, r#"{"responses":["netexec-abc"]}"#, true),
        answered("netexec-abc")
    );
    assert!(matches!(
        read_dial(200, r#"{"errors":["dial tcp 10.42.2.3:8080: i/o timeout"]}"#, true),
        Dial::Failed { error } if error.contains("i/o timeout")
    ));
    assert!(matches!(
        read_dial(
            400,
            "host and/or port param are invalid. lookup x: no such host\n",
            true
        ),
        Dial::Unresolved { .. }
    ));
    assert!(matches!(
        read_dial(503, "error trying to reach service", false),
        Dial::NoProxy { error } if error.contains("503")
    ));
    assert!(matches!(
        read_dial(200, "<html>", true),
        Dial::Failed { .. }
    ));
    assert!(matches!(read_dial(200, "{}", true), Dial::Failed { .. }));
}

/// The DaemonSet tolerates every taint (servers, cordoned nodes) and runs
/// the pinned agnhost netexec; the Service selects its pods.
#[test]
fn manifests_cover_every_node() {
    let (ns, ds, svc) = manifests("exedev-k8s-check-1");
    assert_eq!(ns["metadata"]["name"], "exedev-k8s-check-1");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert_eq!(pod["containers"][0]["image"], AGNHOST_IMAGE);
    assert_eq!(pod["containers"][0]["args"][0], "netexec");
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(service_dns("n"), "netexec.n.svc.cluster.local");
}

fn probe(vm: &str, status: Option<u16>, error: Option<&str>, private: bool) -> ProbeResult {
    ProbeResult {
        vm: vm.into(),
        status,
        latency: Duration::ZERO,
        error: error.map(String::from),
        authenticated: false,
        private_unprobed: private,
    }
}

fn healthy() -> Observed {
    let n = nodes(&[("cp", 1), ("ingress", 1), ("web", 1)]);
    let names: Vec<String> = n.iter().map(|c| c.name.clone()).collect();
    Observed {
        pods: n
            .iter()
            .map(|c| (c.clone(), Ok(format!("netexec-{}", c.name))))
            .collect(),
        pairs: pairs(&n)
            .into_iter()
            .map(|p| (p, answered("netexec-x"), Some(answered("xxx"))))
            .collect(),
        service: names
            .iter()
            .map(|f| (f.clone(), answered("netexec-x")))
            .collect(),
        dns: names
            .iter()
            .map(|f| (f.clone(), answered("netexec-x")))
            .collect(),
        api: names
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    answered("Client sent an HTTP request to an HTTPS server.\n"),
                )
            })
            .collect(),
        shares: vec![(
            "ingress".into(),
            8000,
            probe("ha-ingress1", Some(200), None, false),
        )],
        via: "ha-cp1".into(),
    }
}

#[test]
fn a_healthy_cluster_passes() {
    let r = judge("ns", &healthy());
    assert!(r.passed, "{:?}", r.failures);
    assert_eq!(
        r.pod_to_pod,
        Tally {
            probed: 6,
            passed: 6
        }
    );
    assert_eq!(
        r.shares,
        Tally {
            probed: 1,
            passed: 1
        }
    );
}

fn set_pair(o: &mut Observed, from: &str, to: &str, small: Dial, large: Option<Dial>) {
    for (p, s, l) in &mut o.pairs {
        if p.0 == from && p.1 == to {
            *s = small.clone();
            *l = large.clone();
        }
    }
}

#[test]
fn failures_are_named_by_node_pair_with_their_likely_cause() {
    let mut o = healthy();
    set_pair(&mut o, "ha-web1", "ha-ingress1", timeout(), None);
    set_pair(
        &mut o,
        "ha-cp1",
        "ha-web1",
        answered("netexec-x"),
        Some(timeout()),
    );
    let r = judge("ns", &o);
    assert!(!r.passed);
    let vxlan = r
        .failures
        .iter()
        .find(|f| matches!(f.cause, Cause::Vxlan { .. }))
        .expect("vxlan");
    assert_eq!(
        vxlan.path,
        Path::PodToPod {
            from: "ha-web1".into(),
            to: "ha-ingress1".into()
        }
    );
    assert!(vxlan.advice.contains("8472/udp") && vxlan.advice.contains("ha-web1 to ha-ingress1"));
    assert!(r.failures.iter().any(|f| f.cause == Cause::Mtu
        && f.path
            == Path::PodToPod {
                from: "ha-cp1".into(),
                to: "ha-web1".into()
            }));
}

#[test]
fn dns_is_blamed_only_when_the_address_answers() {
    let mut o = healthy();
    o.dns[0].1 = Dial::Unresolved {
        error: "lookup netexec.ns.svc.cluster.local: i/o timeout".into(),
    };
    o.service[1].1 = timeout();
    o.dns[1].1 = timeout();
    let r = judge("ns", &o);
    let causes: Vec<_> = r
        .failures
        .iter()
        .map(|f| (f.path.clone(), f.cause.clone()))
        .collect();
    assert!(causes.contains(&(
        Path::Dns {
            from: "ha-cp1".into()
        },
        Cause::CoreDns
    )));
    assert!(causes.contains(&(
        Path::Service {
            from: "ha-ingress1".into()
        },
        Cause::ServiceProxy
    )));
    assert!(!causes.contains(&(
        Path::Dns {
            from: "ha-ingress1".into()
        },
        Cause::CoreDns
    )));
}

/// A pod the API server's proxy cannot reach is one failure, between the
/// server the check went through and that node, whatever was planned
/// from it.
#[test]
fn an_unreachable_pod_is_one_failure_from_the_api_server() {
    let mut o = healthy();
    let no = Dial::NoProxy {
        error: "the API server's proxy answered 503: dial tcp 10.42.2.2:8080: i/o timeout".into(),
    };
    set_pair(&mut o, "ha-web1", "ha-cp1", no.clone(), None);
    set_pair(&mut o, "ha-web1", "ha-ingress1", no.clone(), None);
    o.service[2].1 = no.clone();
    o.dns[2].1 = no.clone();
    o.api[2].1 = no;
    let r = judge("ns", &o);
    assert_eq!(r.failures.len(), 1, "{:#?}", r.failures);
    assert_eq!(
        r.failures[0].cause,
        Cause::Vxlan {
            from: "ha-cp1".into(),
            to: "ha-web1".into()
        }
    );
}

#[test]
fn a_share_with_nothing_behind_it_says_what_to_run() {
    let mut o = healthy();
    o.shares = vec![
        (
            "ingress".into(),
            8000,
            probe(
                "ha-ingress1",
                Some(502),
                Some("HTTP 502 Bad Gateway"),
                false,
            ),
        ),
        (
            "web".into(),
            8080,
            probe("ha-web1", Some(307), Some("private and no token"), true),
        ),
    ];
    let r = judge("ns", &o);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].cause, Cause::NothingOnPort { port: 8000 });
    assert!(r.failures[0].advice.contains("hostPort 8000"));
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(
        r.shares,
        Tally {
            probed: 1,
            passed: 0
        }
    );
}

#[test]
fn a_node_without_a_pod_fails() {
    let mut o = healthy();
    o.pods[2].1 = Err("Pending: ErrImagePull".into());
    let r = judge("ns", &o);
    assert_eq!(r.failures[0].cause, Cause::NoPod);
}

fn failing() -> Report {
    let mut o = healthy();
    set_pair(&mut o, "ha-web1", "ha-ingress1", timeout(), None);
    set_pair(&mut o, "ha-cp1", "ha-web1", answered("x"), Some(timeout()));
    o.dns[0].1 = Dial::Unresolved {
        error: "lookup netexec.ns.svc.cluster.local: no such host\u{1b}[2J".into(),
    };
    o.shares[0].2 = probe(
        "ha-ingress1",
        Some(502),
        Some("HTTP 502 Bad Gateway"),
        false,
    );
    let mut r = judge("exedev-k8s-check-0a1b2c", &o);
    r.cleaned_up = true;
    r
}

#[test]
fn report_rendering() {
    insta::assert_snapshot!("check_failing", render(&failing()));
    let mut ok = judge("exedev-k8s-check-0a1b2c", &healthy());
    ok.cleaned_up = true;
    insta::assert_snapshot!("check_passing", render(&ok));
}

#[test]
fn report_json() {
    insta::assert_json_snapshot!("check_failing_json", failing());
}

/// The numbers the README gives: the HA example (3 servers, pools of 3, 1
/// and 2) and a 60-node fleet.
#[test]
fn pair_counts_of_the_documented_fleets() {
    let ha = nodes(&[("cp", 3), ("general", 3), ("gpu", 1), ("ingress", 2)]);
    assert_eq!(pairs(&ha).len(), 21);
    let big = nodes(&[("cp", 3), ("general", 55), ("ingress", 2)]);
    assert_eq!(pairs(&big).len(), 121);
}

/// The slowest path: deploy, pods and the slowest probe one after the
/// other; the shares alongside, counting only when they take longer.
#[test]
fn the_slowest_path_runs_the_shares_alongside() {
    let mut t = Timings {
        deploy_ms: 4,
        pods_ms: 46,
        probes_ms: 76,
        slowest_probe_ms: 31,
        shares_ms: 20,
        slowest_path_ms: 0,
    };
    assert_eq!(t.slowest_path(), 81);
    t.shares_ms = 500;
    assert_eq!(t.slowest_path(), 500);
}
