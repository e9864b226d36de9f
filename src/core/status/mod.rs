//! `status`: one table joining exe.dev VMs (status, size, proxy), their
//! bootstrap state (read over SSH), Kubernetes Nodes (Ready, version, drift,
//! labels pending for the API) and proxy probes, flagging what exists on one
//! side only. Pure: the edges gather, [`join`] joins (each column a pass,
//! each problem a [`Problem`] with its data), [`render`] says it, at the
//! edge (`problem` holds every problem's wording).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::core::tailnet_check::TailnetCheck;

mod join;
mod problem;
mod proxy;
mod render;
#[cfg(test)]
mod tests;

pub use join::{Sides, join};
pub use problem::{NodeCell, Problem, ReleaseSource, Warning};
pub use render::render;

/// One row's judgement as it is built: what is wrong, what was checked,
/// what could not be read. Here, where the
/// join and its column files (`proxy`) both see it.
#[derive(Default)]
struct Judged {
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
    checked: Vec<String>,
    unknown: Vec<String>,
}

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
    /// Ready / NotReady / not registered / no node, or None without API
    /// access.
    pub node: Option<NodeCell>,
    pub k3s_version: Option<String>,
    pub drift: Vec<String>,
    /// Fleet labels only the API may set (`node-role.kubernetes.io/*`...),
    /// not on the node yet: `apply --wait` / `status --wait` apply them once
    /// the node is Ready.
    pub pending_labels: Vec<String>,
    /// `200 in 35 ms`.
    pub probe: Option<String>,
    /// What is wrong, if anything (each as its wording in JSON).
    pub problems: Vec<Problem>,
    /// What is worth saying but not wrong (each as its wording in JSON).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
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
                if let Problem::BootstrapFailed { k3s_says, .. } = p {
                    *k3s_says = Some(reason.clone());
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
                row.problems.push(Problem::TailnetDrops(d.clone()));
            }
        }
        // A VM claiming a tailnet identity the fleet does not expect.
        for (vm, what) in &check.suspect {
            if let Some(row) = self.rows.iter_mut().find(|r| &r.name == vm) {
                row.problems
                    .push(Problem::TailnetSuspect { what: what.clone() });
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
            Some(w) => (Some(w.to_string()), ReleaseSource::Fleet),
            None => (most, ReleaseSource::Most),
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
                row.problems.push(Problem::OtherRelease {
                    have,
                    want: want.clone(),
                    whose,
                });
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
