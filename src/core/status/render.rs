//! `status` for people: the table, the bootstrap steps, the problems
//! (each [`super::Problem`] in its wording, a failed bootstrap's last log
//! lines below it), the tailnet and its policy entry. Every line escaped
//! in one place ([`Screen::line`]).

use super::Status;
use crate::base::text::one_line;
use crate::core::tailnet_check::TailnetCheck;

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
    table(&mut out, s);
    if !s.cluster_api {
        api_unreachable(&mut out, s);
    }
    bootstrap_steps(&mut out, s);
    let problems = problem_lines(s);
    if let Some(t) = &s.tailnet {
        render_tailnet(&mut out, t);
    }
    verdict(&mut out, s, problems);
    warnings(&mut out, s);
    policy_entry(&mut out, s);
    out.0
}

/// The table: one row per VM, each column as wide as its widest
/// (escaped) cell.
fn table(out: &mut Screen, s: &Status) {
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
                    dash(&r.node.map(|n| n.to_string()))
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
}

/// Why the node columns are unknown, and how to give status the API.
fn api_unreachable(out: &mut Screen, s: &Status) {
    let why = s
        .cluster_api_error
        .as_deref()
        .unwrap_or("pass --kubeconfig, run `exedev-k8s kubeconfig -f FLEET`, or join the tailnet");
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

/// The steps of bootstraps that are not done (the table holds the phase).
fn bootstrap_steps(out: &mut Screen, s: &Status) {
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
}

/// Each problem as one line in its wording, a failed bootstrap's last log
/// lines with it, then each drift item.
fn problem_lines(s: &Status) -> Vec<(String, &[String])> {
    // Each problem is one line, a failed bootstrap's last log lines below it.
    s.rows
        .iter()
        .flat_map(|r| {
            r.problems.iter().map(move |p| {
                let log: &[String] = if p.is_bootstrap_failure() {
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
        .collect()
}

/// The problems, or why there are none and yet the fleet is not healthy,
/// or that it is.
fn verdict(out: &mut Screen, s: &Status, problems: Vec<(String, &[String])>) {
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
}

/// What is worth saying but not wrong (healthy stays healthy).
fn warnings(out: &mut Screen, s: &Status) {
    let lines: Vec<String> = s
        .rows
        .iter()
        .flat_map(|r| {
            r.warnings
                .iter()
                .map(move |w| format!("  ~ {}: {w}", r.name))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    out.blank();
    out.line("Warnings (not problems):");
    for l in lines {
        out.line(l);
    }
}

/// The tailnet policy entry that would let the dropped flows through.
fn policy_entry(out: &mut Screen, s: &Status) {
    if let Some(entry) = s.tailnet.as_ref().and_then(|t| t.acl_entry.as_ref()) {
        out.blank();
        out.line(
            "Tailnet policy: add this entry to \"acls\" in the tailnet policy file (admin console, Access controls):",
        );
        out.line(format!("  {entry}"));
        out.line(format!(
            "  It also lets {}/udp (flannel VXLAN) through, which a connect cannot check.",
            crate::core::tailnet_check::VXLAN_PORT
        ));
        if !s.tailnet.as_ref().is_some_and(|t| t.entry_by_tag) {
            out.line(
                "  Some devices have no ACL tag, so the entry names their current addresses, which a replaced VM does not keep: use a tagged auth key and write the entry for its tag.",
            );
        }
    }
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
