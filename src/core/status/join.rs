//! The join: one row per VM or Node of the fleet, each column a pass of
//! its own (ownership, node, bootstrap, proxy, probe) that fills the cell
//! and adds its [`Problem`]s, what it checked and what it could not read.
//! Pure: the edges gather the sides ([`Sides`]), this judges them.

use std::collections::BTreeMap;

use super::problem::{NodeCell, Problem};
use super::proxy::{probe_column, proxy_problems, visibility};
use super::{Judged, Row, Status, aspect};
use crate::base::sizes::ByteSize;
use crate::core::api::types::{ShareInfo, VmInfo};
use crate::core::bootstrap::{BootstrapPhase, BootstrapReport};
use crate::core::fleet::{self, DesiredVm};
use crate::edges::cluster::{NodeReadiness, NodeState, NodeView, Readiness, pending_labels};
use crate::edges::probe::ProbeResult;

/// What the edges gathered, for [`join`].
pub struct Sides<'a> {
    /// The fleet's name.
    pub cluster: &'a str,
    pub desired: &'a [DesiredVm],
    /// Every VM `ls` showed (the fleet's are picked by its tag).
    pub vms: &'a [VmInfo],
    /// `share show`, by VM.
    pub shares: &'a BTreeMap<String, ShareInfo>,
    /// The Nodes and their verdicts; `None` when the API is unreachable.
    pub nodes: Option<(&'a [NodeView], &'a Readiness)>,
    pub probes: &'a [ProbeResult],
    /// What SSH said per VM (absent: not read).
    pub bootstrap: &'a BTreeMap<String, Result<BootstrapReport, String>>,
}

/// Joins the sides into the status, healthy or not.
pub fn join(s: &Sides<'_>) -> Status {
    // Owned VMs, and those carrying the fleet's tag without the other
    // marks of ownership (shown, with why plan and apply leave them alone).
    let owned: Vec<&VmInfo> = s
        .vms
        .iter()
        .filter(|v| fleet::has_ownership_tag(s.cluster, &v.tags))
        .collect();
    let rows = names(s, &owned)
        .into_iter()
        .map(|name| row(s, &owned, name))
        .collect();
    let mut status = Status {
        fleet: s.cluster.to_string(),
        rows,
        cluster_api: s.nodes.is_some(),
        cluster_api_error: None,
        tailnet: None,
        healthy: false,
    };
    status.healthy = status.verdict();
    status
}

/// The rows: the fleet's VMs in fleet order, then owned VMs it no longer
/// wants, then Nodes of the fleet's (by label or name) with neither.
fn names(s: &Sides<'_>, owned: &[&VmInfo]) -> Vec<String> {
    let mut names: Vec<String> = s.desired.iter().map(|d| d.name.clone()).collect();
    for v in owned {
        if !names.contains(&v.vm_name) {
            names.push(v.vm_name.clone());
        }
    }
    for n in s.nodes.map_or(&[][..], |(ns, _)| ns) {
        let ours = n
            .labels
            .get(fleet::FLEET_LABEL_KEY)
            .is_some_and(|f| f == s.cluster)
            || n.name.starts_with(&format!("{}-", s.cluster));
        if ours && !names.contains(&n.name) {
            names.push(n.name.clone());
        }
    }
    names
}

/// One row: each column's pass in turn.
fn row(s: &Sides<'_>, owned: &[&VmInfo], name: String) -> Row {
    let d = s.desired.iter().find(|d| d.name == name);
    let vm = owned.iter().copied().find(|v| v.vm_name == name);
    let node_view = s
        .nodes
        .and_then(|(ns, _)| ns.iter().find(|n| n.name == name));
    let verdict = s
        .nodes
        .and_then(|(_, r)| r.nodes.iter().find(|n| n.name == name));
    let mut j = Judged::default();
    ownership(s.cluster, d, vm, &mut j);
    let (node, drift) = match s.nodes {
        Some(_) => node_column(verdict, node_view, &mut j),
        None => (None, Vec::new()),
    };
    j.checked.push(aspect::VM.to_string());
    node_checks(s.nodes.is_some(), d, node_view, &name, &mut j);
    let pending: Vec<String> = match (d, s.nodes.is_some()) {
        (Some(d), true) => pending_labels(d, node_view)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        _ => Vec::new(),
    };
    let node_ready = node == Some(NodeCell::Ready);
    let (bootstrap, bootstrap_log) = match s.bootstrap.get(&name) {
        Some(read) => {
            let (b, log) = bootstrap_column(read, &name, node_ready, &mut j);
            (Some(b), log)
        }
        None => (None, Vec::new()),
    };
    let share = s.shares.get(&name);
    proxy_problems(d, share, &mut j);
    let running = vm.is_some_and(VmInfo::is_running);
    let port = d.and_then(|d| d.share).map(|sh| sh.port);
    let probe = probe_column(s.probes, &name, running.then_some(port).flatten(), &mut j);
    Row {
        pool: d.map(|d| d.pool.clone()),
        role: d.map(|d| d.role.as_str().to_string()),
        desired: d.is_some(),
        vm_status: vm.map(|v| v.status.clone()),
        size: vm.map(|v| {
            format!(
                "{}cpu/{}GB/{}GB",
                v.allocated_cpus,
                ByteSize(v.memory_capacity_bytes).gib_rounded(),
                ByteSize(v.disk_capacity_bytes).gib_rounded()
            )
        }),
        proxy: share.map(|s| format!("{} {}", s.port, visibility(s.status.is_public()))),
        bootstrap,
        bootstrap_log,
        k3s_reason: None,
        node,
        k3s_version: node_view.and_then(|n| n.kubelet_version.clone()),
        drift,
        pending_labels: pending,
        probe,
        problems: j.problems,
        warnings: j.warnings,
        checked: j.checked,
        unknown: j.unknown,
        name,
    }
}

/// Whether the VM is the fleet's and should be: partly owned (left
/// alone), owned but not wanted, wanted but missing, not running.
fn ownership(cluster: &str, d: Option<&DesiredVm>, vm: Option<&VmInfo>, j: &mut Judged) {
    let partial =
        vm.and_then(
            |v| match fleet::ownership(cluster, &v.vm_name, &v.tags, &v.comment) {
                fleet::Ownership::Partial { lacks } => Some(lacks),
                _ => None,
            },
        );
    match (d, vm, partial) {
        (_, _, Some(lacks)) => j.problems.push(Problem::PartlyOwned { lacks }),
        (None, Some(_), None) => j.problems.push(Problem::NotInFleet),
        (Some(_), None, None) => j.problems.push(Problem::NoVm),
        _ => {}
    }
    if let Some(v) = vm
        && !v.is_running()
    {
        j.problems.push(Problem::VmNotRunning {
            status: v.status.clone(),
        });
    }
}

/// The node column with the API reachable, from the verdict of an
/// expected node, else the Node itself; drift listed item by item.
fn node_column(
    verdict: Option<&NodeReadiness>,
    node_view: Option<&NodeView>,
    j: &mut Judged,
) -> (Option<NodeCell>, Vec<String>) {
    let Some(r) = verdict else {
        return match node_view {
            Some(n) => {
                j.problems.push(Problem::NodeWithoutVm);
                let cell = if n.ready {
                    NodeCell::Ready
                } else {
                    NodeCell::NotReady
                };
                (Some(cell), Vec::new())
            }
            None => (Some(NodeCell::NoNode), Vec::new()),
        };
    };
    let cell = match &r.state {
        NodeState::Ready => NodeCell::Ready,
        NodeState::NotRegistered => {
            j.problems.push(Problem::NodeNotReady(r.clone()));
            NodeCell::NotRegistered
        }
        NodeState::NotReady { .. } => {
            j.problems.push(Problem::NodeNotReady(r.clone()));
            NodeCell::NotReady
        }
        NodeState::Drift(dr)
            if dr.missing_labels.is_empty()
                && dr.wrong_labels.is_empty()
                && dr.missing_taints.is_empty()
                && dr.extra_taints.is_empty() =>
        {
            j.problems.push(Problem::LabelsPending {
                labels: dr.pending_labels.clone(),
            });
            NodeCell::Ready
        }
        NodeState::Drift(dr) => {
            let mut items: Vec<String> = dr
                .missing_labels
                .iter()
                .map(|(k, v)| format!("+label {k}={v}"))
                .collect();
            items.extend(
                dr.wrong_labels
                    .iter()
                    .map(|w| format!("~label {}={} (is {})", w.key, w.want, w.got)),
            );
            items.extend(
                dr.pending_labels
                    .iter()
                    .map(|(k, v)| format!("+label {k}={v} (API only)")),
            );
            items.extend(dr.missing_taints.iter().map(|t| format!("+taint {t}")));
            items.extend(dr.extra_taints.iter().map(|t| format!("-taint {t}")));
            j.problems.push(Problem::Drifted);
            return (Some(NodeCell::Ready), items);
        }
    };
    (Some(cell), Vec::new())
}

/// What the Node lets status check (registered, labels, schedulable), a
/// fleet node cordoned, and the node unknown without the API.
fn node_checks(
    api: bool,
    d: Option<&DesiredVm>,
    node_view: Option<&NodeView>,
    name: &str,
    j: &mut Judged,
) {
    match (api, node_view) {
        (true, Some(n)) => {
            j.checked.extend(
                [aspect::NODE, aspect::LABELS_TAINTS, aspect::SCHEDULABLE].map(String::from),
            );
            if n.unschedulable && d.is_some() {
                j.problems.push(Problem::Cordoned {
                    vm: name.to_string(),
                });
            }
        }
        (true, None) => j.checked.push(aspect::NODE.to_string()),
        (false, _) if d.is_some() => j.unknown.push(format!(
            "{}: the Kubernetes API was not reachable",
            aspect::NODE
        )),
        (false, _) => {}
    }
}

/// The bootstrap column and a failed bootstrap's last log lines. Running
/// or not started is a problem only while the node is not Ready (a VM
/// restarted mid-script may never write `done`).
fn bootstrap_column(
    read: &Result<BootstrapReport, String>,
    name: &str,
    node_ready: bool,
    j: &mut Judged,
) -> (String, Vec<String>) {
    let report = match read {
        Ok(report) => report,
        Err(e) => {
            j.problems.push(Problem::Unreadable {
                vm: name.to_string(),
                error: e.clone(),
            });
            j.unknown.push(format!("{}: {e}", aspect::BOOTSTRAP));
            return ("unknown".to_string(), Vec::new());
        }
    };
    let mut log = Vec::new();
    match &report.phase {
        BootstrapPhase::Failed { step } => {
            j.problems.push(Problem::BootstrapFailed {
                step: step.clone(),
                k3s_says: None,
            });
            log = report.log_tail.clone();
        }
        BootstrapPhase::Running { step } if !node_ready => {
            j.problems
                .push(Problem::BootstrapRunning { step: step.clone() });
        }
        BootstrapPhase::NotStarted if !node_ready => {
            j.problems.push(Problem::BootstrapNotStarted);
        }
        _ => {}
    }
    j.checked.push(aspect::BOOTSTRAP.to_string());
    (report.phase.summary(), log)
}

#[cfg(test)]
mod tests {
    //! The join's judgements, asserted as [`Problem`]s (the wording is
    //! `problem`'s; the snapshots in `status::tests` show it).

    use std::collections::BTreeMap;

    use super::*;
    use crate::core::api::types::Visibility;
    use crate::core::fleet::fixtures;
    use crate::core::status::tests::{fleet, node, vm};
    use crate::core::status::{ReleaseSource, Warning, render};

    /// A proxy still public on a VM whose pool shares nothing is a problem
    /// status names (apply makes it private).
    #[test]
    fn a_public_proxy_the_fleet_does_not_share_is_a_problem() {
        let f = fixtures::fleet_with("pools:\n  - name: web\n    count: 1\n");
        let desired = crate::core::fleet::desired_vms(&f);
        let mut vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        vms[1].tags.push(fleet::SHARE_TAG.into());
        let share = |public| ShareInfo {
            vm_name: "demo-web1".into(),
            status: Visibility::from_public(public),
            port: 8080,
            url: String::new(),
            users: None,
            links: None,
        };
        let problems = |public| {
            let shares = BTreeMap::from([("demo-web1".to_string(), share(public))]);
            let st = join(&Sides {
                cluster: "demo",
                desired: &desired,
                vms: &vms,
                shares: &shares,
                nodes: None,
                probes: &[],
                bootstrap: &BTreeMap::new(),
            });
            st.rows[1].problems.clone()
        };
        assert!(
            problems(true).contains(&Problem::ProxyPublicUnshared),
            "{:?}",
            problems(true)
        );
        assert!(problems(false).is_empty(), "{:?}", problems(false));
    }

    /// What an interrupted upgrade and an unreadable VM leave: a cordoned
    /// node, nodes on the previous release, a VM SSH cannot read. Each is
    /// a named problem; none of it is healthy; the JSON says per VM what
    /// was checked and what is unknown.
    #[test]
    fn cordoned_nodes_other_releases_and_unread_vms_are_problems() {
        let f = fleet();
        let desired = crate::core::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        let mut nodes: Vec<NodeView> = desired.iter().map(|d| node(d, true)).collect();
        nodes[1].unschedulable = true;
        nodes[2].kubelet_version = Some("v1.31.5+k3s1".into());
        let readiness = crate::edges::cluster::readiness(&desired, &nodes);
        let done = || {
            Ok(BootstrapReport {
                phase: BootstrapPhase::Done,
                log_tail: Vec::new(),
            })
        };
        let bootstrap = BTreeMap::from([
            ("demo-cp1".to_string(), done()),
            ("demo-web1".to_string(), done()),
            (
                "demo-web2".to_string(),
                Err("no answer over SSH within 20s".to_string()),
            ),
        ]);
        let joined = || {
            join(&Sides {
                cluster: "demo",
                desired: &desired,
                vms: &vms,
                shares: &BTreeMap::new(),
                nodes: Some((&nodes, &readiness)),
                probes: &[],
                bootstrap: &bootstrap,
            })
        };
        let mut s = joined();
        // The fleet pins v1.31.5+k3s1: cp1 and web1 are behind.
        s.add_release_check(Some("v1.31.5+k3s1"));
        assert!(!s.healthy);
        let row = |s: &Status, n: &str| s.rows.iter().find(|r| r.name == n).unwrap().clone();
        let cp1 = row(&s, "demo-cp1");
        assert_eq!(cp1.problems.len(), 1, "{cp1:?}");
        assert_eq!(
            cp1.problems[0],
            Problem::OtherRelease {
                have: "v1.31.4+k3s1".into(),
                want: "v1.31.5+k3s1".into(),
                whose: ReleaseSource::Fleet,
            }
        );
        let web1 = row(&s, "demo-web1");
        assert!(
            web1.problems.iter().any(|p| *p
                == Problem::Cordoned {
                    vm: "demo-web1".into()
                }),
            "{web1:?}"
        );
        let web2 = row(&s, "demo-web2");
        assert_eq!(web2.unknown, ["bootstrap: no answer over SSH within 20s"]);
        assert!(
            web2.problems[0]
                == Problem::Unreadable {
                    vm: "demo-web2".into(),
                    error: "no answer over SSH within 20s".into()
                },
            "{web2:?}"
        );
        assert_eq!(
            web2.checked,
            ["vm", "node", "labels_taints", "schedulable", "release"]
        );
        assert_eq!(
            cp1.checked,
            [
                "vm",
                "node",
                "labels_taints",
                "schedulable",
                "bootstrap",
                "release"
            ]
        );
        // A channel fleet (no pinned release): the odd one out is named.
        let mut s = joined();
        s.add_release_check(None);
        assert!(
            row(&s, "demo-web2").problems.iter().any(|p| *p
                == Problem::OtherRelease {
                    have: "v1.31.5+k3s1".into(),
                    want: "v1.31.4+k3s1".into(),
                    whose: ReleaseSource::Most,
                }),
            "{:?}",
            row(&s, "demo-web2")
        );
        assert!(row(&s, "demo-cp1").problems.is_empty());
        let text = render(&s);
        assert!(!text.contains("healthy."), "{text}");
        // Everything read and holding: healthy.
        let mut nodes: Vec<NodeView> = desired.iter().map(|d| node(d, true)).collect();
        nodes.iter_mut().for_each(|n| n.unschedulable = false);
        let readiness = crate::edges::cluster::readiness(&desired, &nodes);
        let all_done = BTreeMap::from_iter(desired.iter().map(|d| (d.name.clone(), done())));
        let mut s = join(&Sides {
            cluster: "demo",
            desired: &desired,
            vms: &vms,
            shares: &BTreeMap::new(),
            nodes: Some((&nodes, &readiness)),
            probes: &[],
            bootstrap: &all_done,
        });
        s.add_release_check(Some("v1.31.4+k3s1"));
        assert!(s.healthy, "{:?}", s.rows);
        assert!(render(&s).contains("All 3 VMs healthy."));
    }

    /// A running VM whose shared port has nothing behind it (the proxy's
    /// 502) is a warning with advice, not a problem: healthy, exit 0. Any
    /// other failed probe stays a problem.
    #[test]
    fn a_share_with_nothing_behind_it_is_a_warning() {
        let f = fleet();
        let desired = crate::core::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        let nodes: Vec<NodeView> = desired.iter().map(|d| node(d, true)).collect();
        let readiness = crate::edges::cluster::readiness(&desired, &nodes);
        let shares: BTreeMap<String, ShareInfo> = ["demo-web1", "demo-web2"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    ShareInfo {
                        vm_name: n.to_string(),
                        status: Visibility::from_public(true),
                        port: 8080,
                        url: String::new(),
                        users: None,
                        links: None,
                    },
                )
            })
            .collect();
        let probe = |vm: &str, status| ProbeResult {
            vm: vm.into(),
            status: Some(status),
            latency: std::time::Duration::from_millis(3),
            error: (status != 200).then(|| format!("HTTP {status}")),
            authenticated: false,
            private_unprobed: false,
        };
        let done = BTreeMap::from_iter(desired.iter().map(|d| {
            (
                d.name.clone(),
                Ok(BootstrapReport {
                    phase: BootstrapPhase::Done,
                    log_tail: Vec::new(),
                }),
            )
        }));
        let st = |probes: &[ProbeResult]| {
            join(&Sides {
                cluster: "demo",
                desired: &desired,
                vms: &vms,
                shares: &shares,
                nodes: Some((&nodes, &readiness)),
                probes,
                bootstrap: &done,
            })
        };
        let row =
            |s: &Status, name: &str| s.rows.iter().find(|r| r.name == name).cloned().expect(name);
        let s = st(&[probe("demo-web1", 502), probe("demo-web2", 200)]);
        assert!(s.healthy, "{:?}", s.rows);
        assert_eq!(
            row(&s, "demo-web1").warnings,
            [Warning::NothingOnSharedPort { port: 8080 }]
        );
        let text = render(&s);
        assert!(text.contains("All 3 VMs healthy."), "{text}");
        assert!(
            text.contains("~ demo-web1: nothing answers on shared port 8080"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert!(
            json["rows"][1]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("hostPort 8080")
        );
        // A 503 or no answer is still a problem.
        let s = st(&[probe("demo-web1", 503), probe("demo-web2", 200)]);
        assert!(!s.healthy);
        assert!(row(&s, "demo-web1").warnings.is_empty());
    }
}
