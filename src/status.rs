//! `status`: one table joining exe.dev VMs (status, size, proxy), their
//! bootstrap state (read over SSH), Kubernetes Nodes (Ready, version, drift,
//! labels pending for the API) and proxy probes, flagging what exists on one
//! side only. Pure: the edges gather, this joins and renders.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::types::{ShareInfo, VmInfo};
use crate::bootstrap::{BootstrapPhase, BootstrapReport};
use crate::cluster::{NodeState, NodeView, Readiness, pending_labels};
use crate::fleet::{self, DesiredVm};
use crate::probe::ProbeResult;
use crate::sizes::ByteSize;
use crate::tailnet_check::TailnetCheck;
use crate::text::one_line;

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
    /// How far the setup script got (`done`, `running (step)`, `failed
    /// (step)`, `not started`), `unknown` when SSH failed, None when not read.
    pub bootstrap: Option<String>,
    /// The last lines of the bootstrap log, for a failed bootstrap.
    pub bootstrap_log: Vec<String>,
    /// k3s's own reason, from its journal, when the bootstrap failed while
    /// k3s ran (a wrong token, a refused label, a configuration mismatch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k3s_reason: Option<String>,
    /// Ready / NotReady / not registered / drift, or None without API access.
    pub node: Option<String>,
    pub k3s_version: Option<String>,
    pub drift: Vec<String>,
    /// Fleet labels only the API may set (`node-role.kubernetes.io/*`...),
    /// not on the node yet: `apply --wait` / `status --wait` apply them once
    /// the node is Ready.
    pub pending_labels: Vec<String>,
    /// `200 in 35 ms`.
    pub probe: Option<String>,
    /// What is wrong, if anything.
    pub problems: Vec<String>,
    /// What was read and judged for this VM ([`Aspect`] names: `vm`,
    /// `bootstrap`, `node`, `labels_taints`, `schedulable`, `release`,
    /// `proxy`), holding or not (`problems` says which did not).
    pub checked: Vec<String>,
    /// What should have been read but could not be, each `aspect: why`.
    /// Anything here makes the status unhealthy: unknown is not healthy.
    pub unknown: Vec<String>,
}

/// The aspects of a VM `status` reads, as named in [`Row::checked`].
pub mod aspect {
    /// The VM on exe.dev (exists, running, size).
    pub const VM: &str = "vm";
    /// Its setup script's state, over SSH.
    pub const BOOTSTRAP: &str = "bootstrap";
    /// Its Node: registered and Ready.
    pub const NODE: &str = "node";
    /// The Node's labels and taints against the fleet's.
    pub const LABELS_TAINTS: &str = "labels_taints";
    /// Not cordoned.
    pub const SCHEDULABLE: &str = "schedulable";
    /// The kubelet's k3s release against the fleet's.
    pub const RELEASE: &str = "release";
    /// Its HTTPS proxy, probed.
    pub const PROXY: &str = "proxy";
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
    /// Whether the tailnet lets the nodes reach each other (read over SSH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tailnet: Option<TailnetCheck>,
    pub healthy: bool,
}

impl Status {
    /// Adds k3s's own reasons (by VM) to rows whose bootstrap failed while
    /// k3s ran.
    pub fn add_k3s_reasons(&mut self, reasons: &BTreeMap<String, String>) {
        for row in &mut self.rows {
            let Some(reason) = reasons.get(&row.name) else {
                continue;
            };
            for p in &mut row.problems {
                if p.starts_with(BOOTSTRAP_FAILED) {
                    p.push_str(&format!("; k3s says: {reason}"));
                }
            }
            row.k3s_reason = Some(reason.clone());
        }
    }

    /// Adds the tailnet check: each dropped flow is a problem of the VM it
    /// starts from; the entry to add shows once, below the problems.
    pub fn add_tailnet(&mut self, check: TailnetCheck) {
        for d in &check.dropped {
            if let Some(row) = self.rows.iter_mut().find(|r| r.name == d.from) {
                row.problems.push(crate::tailnet_check::problem(d));
            }
        }
        // A VM claiming a tailnet identity the fleet does not expect.
        for (vm, what) in &check.suspect {
            if let Some(row) = self.rows.iter_mut().find(|r| &r.name == vm) {
                row.problems.push(what.clone());
            }
        }
        self.tailnet = Some(check);
        self.healthy = self.verdict();
    }

    /// Checks each fleet node's k3s release (its kubelet's): against
    /// `want`, the fleet's pinned release, or, for a fleet that follows a
    /// channel (`want` None: status does not look channels up), against the
    /// release most of the nodes run. A node on another release is what an
    /// interrupted or partial upgrade leaves.
    pub fn add_release_check(&mut self, want: Option<&str>) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in self.rows.iter().filter(|r| r.desired) {
            if let Some(v) = r.k3s_version.as_deref() {
                *counts.entry(v).or_default() += 1;
            }
        }
        let most = counts
            .iter()
            .max_by_key(|(v, n)| (**n, std::cmp::Reverse(**v)))
            .map(|(v, _)| v.to_string());
        let (want, whose) = match want {
            Some(w) => (Some(w.to_string()), "the fleet's release"),
            None => (most, "the release most nodes run"),
        };
        let Some(want) = want else {
            return;
        };
        for row in self.rows.iter_mut().filter(|r| r.desired) {
            let Some(have) = row.k3s_version.clone() else {
                continue;
            };
            row.checked.push(aspect::RELEASE.to_string());
            if have != want {
                row.problems.push(format!(
                    "on k3s {have}, not on {whose} {want}: an upgrade was interrupted or not applied yet; `exedev-k8s plan -f FLEET` shows the change, apply carries it out"
                ));
            }
        }
        self.healthy = self.verdict();
    }

    /// Healthy: nothing wrong, the API answered, and nothing that was to be
    /// read is unknown.
    fn verdict(&self) -> bool {
        self.cluster_api
            && self
                .rows
                .iter()
                .all(|r| r.problems.is_empty() && r.unknown.is_empty())
    }
}

/// How a failed bootstrap's problem starts.
const BOOTSTRAP_FAILED: &str = "bootstrap failed at step";

/// Joins the sides. `nodes`/`readiness` are None when the API is
/// unreachable; `bootstrap` holds what SSH said per VM (absent: not read).
pub fn join(
    cluster: &str,
    desired: &[DesiredVm],
    vms: &[VmInfo],
    shares: &BTreeMap<String, ShareInfo>,
    nodes: Option<(&[NodeView], &Readiness)>,
    probes: &[ProbeResult],
    bootstrap: &BTreeMap<String, Result<BootstrapReport, String>>,
) -> Status {
    // Owned VMs, and those carrying the fleet's tag without the other
    // marks of ownership (shown, with why plan and apply leave them alone).
    let owned: Vec<&VmInfo> = vms
        .iter()
        .filter(|v| fleet::has_ownership_tag(cluster, &v.tags))
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
        let partial =
            vm.and_then(
                |v| match fleet::ownership(cluster, &v.vm_name, &v.tags, &v.comment) {
                    fleet::Ownership::Partial { lacks } => Some(lacks.join(" and ")),
                    _ => None,
                },
            );
        match (d, vm) {
            _ if partial.is_some() => problems.push(format!(
                "carries the fleet's ownership tag but lacks {}: plan and apply leave it alone",
                partial.clone().unwrap_or_default()
            )),
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
                    problems.push(r.state_and_cause());
                    (Some("not registered".to_string()), Vec::new())
                }
                NodeState::NotReady { .. } => {
                    problems.push(r.state_and_cause());
                    (Some("NotReady".to_string()), Vec::new())
                }
                NodeState::Drift(dr)
                    if dr.missing_labels.is_empty()
                        && dr.wrong_labels.is_empty()
                        && dr.missing_taints.is_empty()
                        && dr.extra_taints.is_empty() =>
                {
                    problems.push(format!(
                        "labels pending: {} (only the API may set them: `apply --wait` or `status --wait` applies them)",
                        dr.pending_labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    (Some("Ready".to_string()), Vec::new())
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
        let node_ready = node.as_deref() == Some("Ready");
        let mut checked = vec![aspect::VM.to_string()];
        let mut unknown = Vec::new();
        match (nodes.is_some(), node_view) {
            (true, Some(n)) => {
                checked.extend(
                    [aspect::NODE, aspect::LABELS_TAINTS, aspect::SCHEDULABLE].map(String::from),
                );
                if n.unschedulable && d.is_some() {
                    problems.push(format!(
                        "cordoned (SchedulingDisabled): nothing new is scheduled on it. An interrupted apply leaves a node so; when no apply is running and it is Ready, `kubectl uncordon {}`",
                        one_line(&name)
                    ));
                }
            }
            (true, None) => checked.push(aspect::NODE.to_string()),
            (false, _) if d.is_some() => unknown.push(format!(
                "{}: the Kubernetes API was not reachable",
                aspect::NODE
            )),
            (false, _) => {}
        }
        let pending: Vec<String> = match (d, nodes.is_some()) {
            (Some(d), true) => pending_labels(d, node_view)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            _ => Vec::new(),
        };
        let mut bootstrap_log = Vec::new();
        let boot = bootstrap.get(&name).map(|r| match r {
            Ok(report) => {
                match &report.phase {
                    BootstrapPhase::Failed { step } => {
                        problems.push(format!("{BOOTSTRAP_FAILED} {step:?}"));
                        bootstrap_log = report.log_tail.clone();
                    }
                    BootstrapPhase::Running { step } if !node_ready => {
                        problems.push(format!("bootstrap still running: {step}"));
                    }
                    BootstrapPhase::NotStarted if !node_ready => problems.push(
                        "the setup script has not started (no /var/lib/exedev-k8s/bootstrap-state)"
                            .into(),
                    ),
                    _ => {}
                }
                report.phase.summary()
            }
            Err(e) => {
                problems.push(format!(
                    "could not be read over SSH ({e}): its bootstrap and tailnet are unknown; check `ssh {}.exe.xyz true`",
                    one_line(&name)
                ));
                unknown.push(format!("{}: {e}", aspect::BOOTSTRAP));
                "unknown".to_string()
            }
        });
        if boot.as_deref().is_some_and(|b| b != "unknown") {
            checked.push(aspect::BOOTSTRAP.to_string());
        }
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
                _ if p.private_unprobed => {
                    "private: login page (--ssh-key to probe behind it)".to_string()
                }
                (Some(s), None) => format!("{s} in {} ms", p.latency.as_millis()),
                (Some(s), Some(e)) => format!("{s} ({e})"),
                (None, Some(e)) => format!("failed: {e}"),
                (None, None) => "no answer".into(),
            });
        if probes.iter().any(|p| p.vm == name) {
            checked.push(aspect::PROXY.to_string());
        }
        if let Some(p) = probes.iter().find(|p| p.vm == name)
            && !p.private_unprobed
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
            bootstrap: boot,
            bootstrap_log,
            k3s_reason: None,
            node,
            k3s_version: node_view.and_then(|n| n.kubelet_version.clone()),
            drift,
            pending_labels: pending,
            probe,
            problems,
            checked,
            unknown,
        });
    }
    let mut status = Status {
        fleet: cluster.to_string(),
        rows,
        cluster_api: nodes.is_some(),
        cluster_api_error: None,
        tailnet: None,
        healthy: false,
    };
    status.healthy = status.verdict();
    status
}

/// The table for people: each column as wide as its widest cell, two
/// spaces apart, so that long VM names or probe results never run into the
/// next column.
///
/// Every line goes through [`Screen::line`], the one escaping rule
/// (`text::one_line`) applied at the one place lines are written: a field a
/// VM, exe.dev or Kubernetes chose (a bootstrap step, a log line, a status)
/// can neither reach the terminal raw nor start a line of its own, whatever
/// code path put it there.
pub fn render(s: &Status) -> String {
    let mut out = Screen::default();
    let dash = |o: &Option<String>| o.as_deref().unwrap_or("-").to_string();
    let header = [
        "VM",
        "ROLE",
        "VM STATUS",
        "SIZE",
        "PROXY",
        "BOOTSTRAP",
        "NODE",
        "K3S",
        "PROBE",
    ];
    // Cells are escaped before measuring, so the columns line up as shown.
    let rows: Vec<[String; 9]> = s
        .rows
        .iter()
        .map(|r| {
            // The column holds the phase; the step goes below the table.
            let phase = r
                .bootstrap
                .as_deref()
                .map(|b| b.split(" (").next().unwrap_or(b).to_string());
            [
                r.name.clone(),
                dash(&r.role),
                r.vm_status.as_deref().unwrap_or("missing").to_string(),
                dash(&r.size),
                dash(&r.proxy),
                dash(&phase),
                if s.cluster_api {
                    dash(&r.node)
                } else {
                    "?".into()
                },
                dash(&r.k3s_version),
                dash(&r.probe),
            ]
            .map(|c| one_line(&c).into_owned())
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
    out.line(line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.line(line(&cells));
    }
    if !s.cluster_api {
        let why = s.cluster_api_error.as_deref().unwrap_or(
            "pass --kubeconfig, run `exedev-k8s kubeconfig -f FLEET`, or join the tailnet",
        );
        out.blank();
        // The caller's error may span lines (a cause and its advice): each
        // is a line of its own, escaped like every other.
        let mut why = why.split('\n');
        out.line(format!(
            "Kubernetes API not reachable, node columns unknown: {}",
            why.next().unwrap_or_default()
        ));
        for l in why {
            out.line(l);
        }
    }
    let in_progress: Vec<String> = s
        .rows
        .iter()
        .filter_map(|r| {
            let b = r.bootstrap.as_deref()?;
            (b != "done").then(|| format!("  {}: {b}", r.name))
        })
        .collect();
    if !in_progress.is_empty() {
        out.blank();
        out.line("Bootstrap:");
        for b in in_progress {
            out.line(b);
        }
    }
    // Each problem is one line, a failed bootstrap's last log lines below it.
    let problems: Vec<(String, &[String])> = s
        .rows
        .iter()
        .flat_map(|r| {
            r.problems.iter().map(move |p| {
                let log: &[String] = if p.starts_with(BOOTSTRAP_FAILED) {
                    &r.bootstrap_log
                } else {
                    &[]
                };
                (format!("{}: {p}", r.name), log)
            })
        })
        .chain(s.rows.iter().flat_map(|r| {
            r.drift
                .iter()
                .map(move |d| (format!("{}: drift {d}", r.name), &[][..]))
        }))
        .collect();
    if let Some(t) = &s.tailnet {
        render_tailnet(&mut out, t);
    }
    if problems.is_empty() && !s.cluster_api {
        // Nothing wrong in what could be read, but the nodes were not.
        out.blank();
        out.line(format!(
            "Not healthy: no problems in what could be read ({} VMs), but their nodes are unknown without the Kubernetes API.",
            s.rows.len()
        ));
    } else if problems.is_empty() && !s.healthy {
        out.blank();
        out.line(format!(
            "Not healthy: no problems in what could be read ({} VMs), but not everything could be checked (`--json` lists each VM's unknown).",
            s.rows.len()
        ));
    } else if problems.is_empty() {
        out.blank();
        out.line(format!("All {} VMs healthy.", s.rows.len()));
    } else {
        out.blank();
        out.line("Problems:");
        for (p, log) in problems {
            if log.is_empty() {
                out.line(format!("  ! {p}"));
            } else {
                out.line(format!("  ! {p}; last log lines:"));
                for l in log {
                    out.line(format!("    | {l}"));
                }
            }
        }
    }
    if let Some(entry) = s.tailnet.as_ref().and_then(|t| t.acl_entry.as_ref()) {
        out.blank();
        out.line(
            "Tailnet policy: add this entry to \"acls\" in the tailnet policy file (admin console, Access controls):",
        );
        out.line(format!("  {entry}"));
        out.line(format!(
            "  It also lets {}/udp (flannel VXLAN) through, which a connect cannot check.",
            crate::tailnet_check::VXLAN_PORT
        ));
        if !s.tailnet.as_ref().is_some_and(|t| t.entry_by_tag) {
            out.line(
                "  Some devices have no ACL tag, so the entry names their current addresses, which a replaced VM does not keep: use a tagged auth key and write the entry for its tag.",
            );
        }
    }
    out.0
}

/// What `status` prints, built line by line: each line is escaped with
/// `text::one_line` as it is added, so a control character or a line break
/// inside any field shows as an escape on the line it belongs to.
#[derive(Default)]
struct Screen(String);

impl Screen {
    fn line(&mut self, l: impl AsRef<str>) {
        self.0.push_str(&one_line(l.as_ref()));
        self.0.push('\n');
    }

    fn blank(&mut self) {
        self.0.push('\n');
    }
}

/// The tailnet line(s) above the problems.
fn render_tailnet(out: &mut Screen, t: &TailnetCheck) {
    out.blank();
    out.line(format!(
        "Tailnet: {} of {} connections between {} nodes dropped ({}).",
        t.dropped.len(),
        t.checked,
        t.nodes,
        t.unverified
    ));
    for (vm, why) in &t.unchecked {
        out.line(format!("  {vm}: not checked: {why}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::Visibility;
    use crate::fleet::fixtures;
    use std::time::Duration;

    fn fleet() -> crate::fleet::Fleet {
        fixtures::fleet_with(
            "pools:\n  - name: web\n    count: 2\n    share: {port: 8080, public: true}\n",
        )
    }

    fn vm(d: &DesiredVm) -> VmInfo {
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

    fn node(d: &DesiredVm, ready: bool) -> NodeView {
        NodeView {
            name: d.name.clone(),
            ready,
            ready_reason: None,
            ready_message: None,
            labels: d.labels.clone(),
            taints: d.taints.iter().map(|t| t.to_string()).collect(),
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
            private_unprobed: false,
        }];
        let s = join(
            "demo",
            &desired,
            &vms,
            &shares,
            Some((&nodes, &readiness)),
            &probes,
            &BTreeMap::new(),
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
            private_unprobed: false,
        }];
        let mut st = join(
            "production-europe-west",
            &desired,
            &vms,
            &shares,
            None,
            &probes,
            &BTreeMap::new(),
        );
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

    /// A proxy still public on a VM whose pool shares nothing is a problem
    /// status names (apply makes it private).
    #[test]
    fn a_public_proxy_the_fleet_does_not_share_is_a_problem() {
        let f = fixtures::fleet_with("pools:\n  - name: web\n    count: 1\n");
        let desired = crate::fleet::desired_vms(&f);
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
            let st = join("demo", &desired, &vms, &shares, None, &[], &BTreeMap::new());
            st.rows[1].problems.clone()
        };
        assert!(
            problems(true)
                .iter()
                .any(|p| p.contains("apply makes it private")),
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
        let desired = crate::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        let mut nodes: Vec<NodeView> = desired.iter().map(|d| node(d, true)).collect();
        nodes[1].unschedulable = true;
        nodes[2].kubelet_version = Some("v1.31.5+k3s1".into());
        let readiness = crate::cluster::readiness(&desired, &nodes);
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
            join(
                "demo",
                &desired,
                &vms,
                &BTreeMap::new(),
                Some((&nodes, &readiness)),
                &[],
                &bootstrap,
            )
        };
        let mut s = joined();
        // The fleet pins v1.31.5+k3s1: cp1 and web1 are behind.
        s.add_release_check(Some("v1.31.5+k3s1"));
        assert!(!s.healthy);
        let row = |s: &Status, n: &str| s.rows.iter().find(|r| r.name == n).unwrap().clone();
        let cp1 = row(&s, "demo-cp1");
        assert_eq!(cp1.problems.len(), 1, "{cp1:?}");
        assert!(
            cp1.problems[0]
                .starts_with("on k3s v1.31.4+k3s1, not on the fleet's release v1.31.5+k3s1")
        );
        let web1 = row(&s, "demo-web1");
        assert!(
            web1.problems
                .iter()
                .any(|p| p.starts_with("cordoned (SchedulingDisabled)")
                    && p.contains("kubectl uncordon demo-web1")),
            "{web1:?}"
        );
        let web2 = row(&s, "demo-web2");
        assert_eq!(web2.unknown, ["bootstrap: no answer over SSH within 20s"]);
        assert!(
            web2.problems[0]
                .starts_with("could not be read over SSH (no answer over SSH within 20s)"),
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
            row(&s, "demo-web2").problems.iter().any(|p| p.starts_with(
                "on k3s v1.31.5+k3s1, not on the release most nodes run v1.31.4+k3s1"
            )),
            "{:?}",
            row(&s, "demo-web2")
        );
        assert!(row(&s, "demo-cp1").problems.is_empty());
        let text = render(&s);
        assert!(!text.contains("healthy."), "{text}");
        // Everything read and holding: healthy.
        let mut nodes: Vec<NodeView> = desired.iter().map(|d| node(d, true)).collect();
        nodes.iter_mut().for_each(|n| n.unschedulable = false);
        let readiness = crate::cluster::readiness(&desired, &nodes);
        let all_done = BTreeMap::from_iter(desired.iter().map(|d| (d.name.clone(), done())));
        let mut s = join(
            "demo",
            &desired,
            &vms,
            &BTreeMap::new(),
            Some((&nodes, &readiness)),
            &[],
            &all_done,
        );
        s.add_release_check(Some("v1.31.4+k3s1"));
        assert!(s.healthy, "{:?}", s.rows);
        assert!(render(&s).contains("All 3 VMs healthy."));
    }

    #[test]
    fn without_api_access_node_columns_are_unknown() {
        let f = fleet();
        let desired = crate::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        let s = join(
            "demo",
            &desired,
            &vms,
            &BTreeMap::new(),
            None,
            &[],
            &BTreeMap::new(),
        );
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
        let desired = crate::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        // cp1 Ready; web1 Ready without its role label; web2 and web3 never
        // registered.
        let mut nodes = vec![node(&desired[0], true), node(&desired[1], true)];
        nodes[1].labels.remove("node-role.kubernetes.io/worker");
        let readiness = crate::cluster::readiness(&desired, &nodes);
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
        let s = join(
            "demo",
            &desired,
            &vms,
            &BTreeMap::new(),
            Some((&nodes, &readiness)),
            &[],
            &bootstrap,
        );
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
                .any(|p| p.starts_with("labels pending")),
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
        assert!(
            row("demo-web3")
                .problems
                .iter()
                .any(|p| p == "bootstrap still running: run the k3s installer")
        );
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
        let desired = crate::fleet::desired_vms(&f);
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
        let readiness = crate::cluster::readiness(&desired, &nodes);
        let s = join(
            "demo",
            &desired,
            &vms,
            &BTreeMap::new(),
            Some((&nodes, &readiness)),
            &[],
            &BTreeMap::new(),
        );
        let text = render(&s);
        assert!(
            !text
                .chars()
                .any(|c| crate::text::is_control(c) && c != '\n'),
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
        let desired = crate::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        let nodes: Vec<NodeView> = desired.iter().map(|d| node(d, false)).collect();
        let readiness = crate::cluster::readiness(&desired, &nodes);
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
        let mut st = join(
            "demo",
            &desired,
            &vms,
            &BTreeMap::new(),
            Some((&nodes, &readiness)),
            &[],
            &bootstrap,
        );
        st.add_k3s_reasons(&BTreeMap::from([("demo-web1".to_string(), evil.into())]));
        st.add_tailnet(crate::tailnet_check::evaluate(
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
                .any(|c| crate::text::is_control(c) && c != '\n'),
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
        use crate::tailnet_check::{Probe, TailnetNode, evaluate, probes};
        use core::net::Ipv4Addr;
        let f = fixtures::fleet_with("pools:\n  - name: web\n    count: 1\n");
        let desired = crate::fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(vm).collect();
        let failed = Ok(BootstrapReport {
            phase: BootstrapPhase::Failed {
                step: "wait for k3s-agent to be active".into(),
            },
            log_tail: vec!["k3s-agent not active after 10 minutes".into()],
        });
        let bootstrap = BTreeMap::from([("demo-web1".to_string(), failed)]);
        let mut st = join(
            "demo",
            &desired,
            &vms,
            &BTreeMap::new(),
            None,
            &[],
            &bootstrap,
        );
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
}
