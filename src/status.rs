//! `status`: one table joining exe.dev VMs (status, size, proxy) with
//! Kubernetes Nodes (Ready, version, drift) and proxy probes, flagging what
//! exists on one side only. Pure: the edges gather, this joins and renders.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::api::types::{ShareInfo, VmInfo};
use crate::cluster::{NodeState, NodeView, Readiness};
use crate::fleet::{self, DesiredVm};
use crate::probe::ProbeResult;
use crate::sizes::ByteSize;

/// One row of the status table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub name: String,
    pub pool: Option<String>,
    pub role: Option<String>,
    /// In the fleet file.
    pub desired: bool,
    /// exe.dev status, or None when the VM does not exist.
    pub vm_status: Option<String>,
    pub size: Option<String>,
    /// `8080 public`.
    pub proxy: Option<String>,
    /// Ready / NotReady / not registered / drift, or None without API access.
    pub node: Option<String>,
    pub k3s_version: Option<String>,
    pub drift: Vec<String>,
    /// `200 in 35 ms`.
    pub probe: Option<String>,
    /// What is wrong, if anything.
    pub problems: Vec<String>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub fleet: String,
    pub rows: Vec<Row>,
    /// Whether the Kubernetes API was reachable.
    pub cluster_api: bool,
    /// Why not, when it was not (set by the caller that tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_api_error: Option<String>,
    pub healthy: bool,
}

/// Joins the sides. `nodes`/`readiness` are None when the API is unreachable.
pub fn join(
    cluster: &str,
    desired: &[DesiredVm],
    vms: &[VmInfo],
    shares: &BTreeMap<String, ShareInfo>,
    nodes: Option<(&[NodeView], &Readiness)>,
    probes: &[ProbeResult],
) -> Status {
    let owned: Vec<&VmInfo> = vms
        .iter()
        .filter(|v| fleet::owns(cluster, &v.tags))
        .collect();
    let mut names: Vec<String> = desired.iter().map(|d| d.name.clone()).collect();
    for v in &owned {
        if !names.contains(&v.vm_name) {
            names.push(v.vm_name.clone());
        }
    }
    if let Some((ns, _)) = nodes {
        for n in ns {
            let ours = n
                .labels
                .get(fleet::FLEET_LABEL_KEY)
                .is_some_and(|f| f == cluster)
                || n.name.starts_with(&format!("{cluster}-"));
            if ours && !names.contains(&n.name) {
                names.push(n.name.clone());
            }
        }
    }
    let mut rows = Vec::new();
    for name in names {
        let d = desired.iter().find(|d| d.name == name);
        let vm = owned.iter().find(|v| v.vm_name == name);
        let mut problems = Vec::new();
        let node_view = nodes.and_then(|(ns, _)| ns.iter().find(|n| n.name == name));
        let verdict = nodes.and_then(|(_, r)| r.nodes.iter().find(|n| n.name == name));
        match (d, vm) {
            (None, Some(_)) => problems.push("not in the fleet (apply would delete it)".into()),
            (Some(_), None) => problems.push("no VM on exe.dev".into()),
            _ => {}
        }
        if let Some(v) = vm
            && !v.is_running()
        {
            problems.push(format!("VM is {}", v.status));
        }
        let (node, drift) = match (nodes.is_some(), verdict, node_view) {
            (false, _, _) => (None, Vec::new()),
            (true, Some(r), _) => match &r.state {
                NodeState::Ready => (Some("Ready".to_string()), Vec::new()),
                NodeState::NotRegistered => {
                    problems.push(r.explain());
                    (Some("not registered".to_string()), Vec::new())
                }
                NodeState::NotReady { .. } => {
                    problems.push(r.explain());
                    (Some("NotReady".to_string()), Vec::new())
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
                    items.extend(dr.missing_taints.iter().map(|t| format!("+taint {t}")));
                    items.extend(dr.extra_taints.iter().map(|t| format!("-taint {t}")));
                    problems.push("labels/taints drifted (apply corrects them)".into());
                    (Some("Ready".to_string()), items)
                }
            },
            (true, None, Some(n)) => {
                problems.push("Node without a VM in the fleet: delete it with kubectl".into());
                (
                    Some(if n.ready { "Ready" } else { "NotReady" }.to_string()),
                    Vec::new(),
                )
            }
            (true, None, None) => (Some("no node".to_string()), Vec::new()),
        };
        let share = shares.get(&name);
        let proxy = share.map(|s| {
            format!(
                "{} {}",
                s.port,
                if s.status.is_public() {
                    "public"
                } else {
                    "private"
                }
            )
        });
        if let (Some(want), Some(have)) = (d.and_then(|d| d.share), share)
            && (want.port != have.port || want.public != have.status.is_public())
        {
            problems.push(format!(
                "proxy is {} {}, fleet wants {} {}",
                have.port,
                if have.status.is_public() {
                    "public"
                } else {
                    "private"
                },
                want.port,
                if want.public { "public" } else { "private" }
            ));
        }
        if d.is_some_and(|d| d.share.is_none()) && share.is_some_and(|s| s.status.is_public()) {
            problems.push(
                "proxy is public, the fleet shares nothing here (apply makes it private)".into(),
            );
        }
        let probe = probes
            .iter()
            .find(|p| p.vm == name)
            .map(|p| match (p.status, &p.error) {
                (Some(s), None) => format!("{s} in {} ms", p.latency.as_millis()),
                (Some(s), Some(e)) => format!("{s} ({e})"),
                (None, Some(e)) => format!("failed: {e}"),
                (None, None) => "no answer".into(),
            });
        if let Some(p) = probes.iter().find(|p| p.vm == name)
            && (p.error.is_some() || p.status.is_none_or(|s| s >= 500))
        {
            problems.push(format!(
                "proxy probe: {}",
                probe.clone().unwrap_or_default()
            ));
        }
        rows.push(Row {
            name: name.clone(),
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
            proxy,
            node,
            k3s_version: node_view.and_then(|n| n.kubelet_version.clone()),
            drift,
            probe,
            problems,
        });
    }
    let healthy = rows.iter().all(|r| r.problems.is_empty());
    Status {
        fleet: cluster.to_string(),
        rows,
        cluster_api: nodes.is_some(),
        cluster_api_error: None,
        healthy,
    }
}

/// The table for people: each column as wide as its widest cell, two
/// spaces apart, so that long VM names or probe results never run into the
/// next column.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let header = [
        "VM",
        "ROLE",
        "VM STATUS",
        "SIZE",
        "PROXY",
        "NODE",
        "K3S",
        "PROBE",
    ];
    let rows: Vec<[String; 8]> = s
        .rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                dash(&r.role),
                r.vm_status.clone().unwrap_or_else(|| "missing".into()),
                dash(&r.size),
                dash(&r.proxy),
                if s.cluster_api {
                    dash(&r.node)
                } else {
                    "?".into()
                },
                dash(&r.k3s_version),
                dash(&r.probe),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    if !s.cluster_api {
        let why = s.cluster_api_error.as_deref().unwrap_or(
            "pass --kubeconfig, run `exedev-k8s kubeconfig -f FLEET`, or join the tailnet",
        );
        let _ = writeln!(
            out,
            "\nKubernetes API not reachable, node columns unknown: {why}"
        );
    }
    let problems: Vec<String> = s
        .rows
        .iter()
        .flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.name)))
        .chain(s.rows.iter().flat_map(|r| {
            r.drift
                .iter()
                .map(move |d| format!("{}: drift {d}", r.name))
        }))
        .collect();
    if problems.is_empty() {
        let _ = writeln!(out, "\nAll {} VMs healthy.", s.rows.len());
    } else {
        let _ = writeln!(out, "\nProblems:");
        for p in problems {
            let _ = writeln!(out, "  ! {p}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::Visibility;
    use std::time::Duration;

    fn fleet() -> crate::fleet::Fleet {
        crate::fleet::parse(
            "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n  channel: stable\nnetwork:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {env: X}\npools:\n  - name: web\n    count: 2\n    share: {port: 8080, public: true}\n",
            "f.yaml",
        )
        .unwrap()
    }

    fn vm(d: &DesiredVm) -> VmInfo {
        VmInfo {
            vm_name: d.name.clone(),
            status: "running".into(),
            tags: d.tags.clone(),
            allocated_cpus: 2,
            ..Default::default()
        }
    }

    fn node(d: &DesiredVm, ready: bool) -> NodeView {
        NodeView {
            name: d.name.clone(),
            ready,
            ready_reason: None,
            ready_message: None,
            labels: d.labels.clone(),
            taints: d.taints.clone(),
            kubelet_version: Some("v1.31.4+k3s1".into()),
            unschedulable: false,
        }
    }

    #[test]
    fn joins_both_sides_and_flags_one_sided_entries() {
        let f = fleet();
        let desired = crate::fleet::desired_vms(&f);
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
        let readiness = crate::cluster::readiness(&desired, &nodes);
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
        }];
        let s = join(
            "demo",
            &desired,
            &vms,
            &shares,
            Some((&nodes, &readiness)),
            &probes,
        );
        let row = |n: &str| s.rows.iter().find(|r| r.name == n).unwrap();
        assert!(row("demo-cp1").problems.is_empty(), "{:?}", row("demo-cp1"));
        assert_eq!(row("demo-web1").node.as_deref(), Some("NotReady"));
        assert!(
            row("demo-web1")
                .problems
                .iter()
                .any(|p| p.contains("fleet wants 8080 public"))
        );
        assert_eq!(row("demo-web1").probe.as_deref(), Some("200 in 12 ms"));
        assert!(
            row("demo-web2")
                .problems
                .iter()
                .any(|p| p == "no VM on exe.dev")
        );
        assert!(
            row("demo-web7")
                .problems
                .iter()
                .any(|p| p.contains("not in the fleet"))
        );
        assert_eq!(row("demo-web7").node.as_deref(), Some("no node"));
        assert!(
            row("demo-old1")
                .problems
                .iter()
                .any(|p| p.contains("Node without a VM"))
        );
        assert!(!s.healthy);
        let text = render(&s);
        assert!(
            text.contains("demo-web2") && text.contains("missing") && text.contains("Problems:")
        );
    }

    /// Long names and probe results widen their columns instead of running
    /// into the next; the reason the API is unreachable shows once.
    #[test]
    fn columns_fit_their_widest_cell_and_the_api_reason_shows_once() {
        let f = crate::fleet::parse(
            "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: production-europe-west\nk3s:\n  channel: stable\nnetwork:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {env: X}\npools:\n  - name: ingressgateway\n    count: 1\n    share: {port: 8080, public: true}\n",
            "f.yaml",
        )
        .unwrap();
        let desired = crate::fleet::desired_vms(&f);
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
        }];
        let mut st = join(
            "production-europe-west",
            &desired,
            &vms,
            &shares,
            None,
            &probes,
        );
        st.cluster_api_error = Some("no kubeconfig at .exedev-k8s/p/kubeconfig".into());
        let text = render(&st);
        assert_eq!(text.matches("not reachable").count(), 1, "{text}");
        insta::assert_snapshot!(text, @r"
        VM                                      ROLE    VM STATUS  SIZE          PROXY        NODE  K3S  PROBE
        production-europe-west-cp1              server  running    2cpu/0GB/0GB  -            ?     -    -
        production-europe-west-ingressgateway1  agent   running    2cpu/0GB/0GB  8080 public  ?     -    200 in 1234 ms

        Kubernetes API not reachable, node columns unknown: no kubeconfig at .exedev-k8s/p/kubeconfig

        All 2 VMs healthy.
        ");
    }

    #[test]
    fn without_api_access_node_columns_are_unknown() {
        let f = fleet();
        let desired = crate::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        let s = join("demo", &desired, &vms, &BTreeMap::new(), None, &[]);
        assert!(s.healthy && !s.cluster_api);
        assert!(render(&s).contains("Kubernetes API not reachable"));
    }
}
