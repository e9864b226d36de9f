//! What a status row holds as data, and its wording in one place: the
//! node column ([`NodeCell`]) and each problem ([`Problem`], a variant
//! with its data). The join decides which; [`fmt::Display`] here says
//! them, for the table and for `--json`, which carries the same strings it
//! always has (each serialises as its wording). Pure.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::base::text::one_line;
use crate::core::tailnet_check::{self, Probe};
use crate::edges::cluster::NodeReadiness;

/// The node column: the Node's state as far as status can tell (`None` in
/// a row: the API was not reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeCell {
    /// `Ready=True` (drift and pending labels aside: problems of their own).
    Ready,
    /// Registered, `Ready` not `True`.
    NotReady,
    /// Expected, but k3s never registered a Node.
    NotRegistered,
    /// Neither expected nor registered (a VM not in the fleet).
    NoNode,
}

impl NodeCell {
    /// The cell as printed and as `--json` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCell::Ready => "Ready",
            NodeCell::NotReady => "NotReady",
            NodeCell::NotRegistered => "not registered",
            NodeCell::NoNode => "no node",
        }
    }
}

impl fmt::Display for NodeCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for NodeCell {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whose release a node's is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseSource {
    /// `k3s.version`.
    Fleet,
    /// A fleet following a channel (not looked up by status): the release
    /// most of its nodes run.
    Most,
}

/// One thing wrong with a VM, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The fleet's tag without the other marks of ownership.
    PartlyOwned { lacks: Vec<String> },
    /// Owned, but the fleet no longer wants it.
    NotInFleet,
    /// The fleet wants it; exe.dev has no such VM.
    NoVm,
    /// exe.dev reports it other than running.
    VmNotRunning { status: String },
    /// Its Node is not registered or not Ready (the verdict says why).
    NodeNotReady(NodeReadiness),
    /// Ready, but labels only the API may set are not on it yet.
    LabelsPending { labels: BTreeMap<String, String> },
    /// Labels or taints differ from the fleet (each listed as drift).
    Drifted,
    /// A Node of the fleet's name with no VM behind it.
    NodeWithoutVm,
    /// Cordoned, as an interrupted apply leaves a node.
    Cordoned { vm: String },
    /// The setup script failed; `k3s_says` is k3s's own reason, read from
    /// its journal when the step ran k3s.
    BootstrapFailed {
        step: String,
        k3s_says: Option<String>,
    },
    /// The setup script is still running and the node is not Ready.
    BootstrapRunning { step: String },
    /// The setup script has not started and the node is not Ready.
    BootstrapNotStarted,
    /// SSH could not read it.
    Unreadable { vm: String, error: String },
    /// The proxy differs from the fleet's share.
    ProxyDiffers {
        port: u16,
        public: bool,
        want_port: u16,
        want_public: bool,
    },
    /// A public proxy where the fleet shares nothing.
    ProxyPublicUnshared,
    /// The proxy's probe failed (the probe column's text).
    ProbeFailed { probe: String },
    /// On another k3s release than `want`.
    OtherRelease {
        have: String,
        want: String,
        whose: ReleaseSource,
    },
    /// The tailnet drops a connection this VM starts.
    TailnetDrops(Probe),
    /// It claims a tailnet identity the fleet does not expect (the
    /// tailnet check's wording).
    TailnetSuspect { what: String },
}

impl Problem {
    /// A failed bootstrap: the table shows the last log lines below it.
    pub fn is_bootstrap_failure(&self) -> bool {
        matches!(self, Problem::BootstrapFailed { .. })
    }
}

fn visibility(public: bool) -> &'static str {
    if public { "public" } else { "private" }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::PartlyOwned { lacks } => write!(
                f,
                "carries the fleet's ownership tag but lacks {}: plan and apply leave it alone",
                lacks.join(" and ")
            ),
            Problem::NotInFleet => f.write_str("not in the fleet (apply would delete it)"),
            Problem::NoVm => f.write_str("no VM on exe.dev"),
            Problem::VmNotRunning { status } => write!(f, "VM is {status}"),
            Problem::NodeNotReady(r) => f.write_str(&r.state_and_cause()),
            Problem::LabelsPending { labels } => write!(
                f,
                "labels pending: {} (only the API may set them: `apply --wait` or `status --wait` applies them)",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Problem::Drifted => f.write_str("labels/taints drifted (apply corrects them)"),
            Problem::NodeWithoutVm => {
                f.write_str("Node without a VM in the fleet: delete it with kubectl")
            }
            Problem::Cordoned { vm } => write!(
                f,
                "cordoned (SchedulingDisabled): nothing new is scheduled on it. An interrupted apply leaves a node so; when no apply is running and it is Ready, `kubectl uncordon {}`",
                one_line(vm)
            ),
            Problem::BootstrapFailed { step, k3s_says } => {
                write!(f, "bootstrap failed at step {step:?}")?;
                match k3s_says {
                    Some(reason) => write!(f, "; k3s says: {reason}"),
                    None => Ok(()),
                }
            }
            Problem::BootstrapRunning { step } => write!(f, "bootstrap still running: {step}"),
            Problem::BootstrapNotStarted => f.write_str(
                "the setup script has not started (no /var/lib/exedev-k8s/bootstrap-state)",
            ),
            Problem::Unreadable { vm, error } => write!(
                f,
                "could not be read over SSH ({error}): its bootstrap and tailnet are unknown; check `ssh {}.exe.xyz true`",
                one_line(vm)
            ),
            Problem::ProxyDiffers {
                port,
                public,
                want_port,
                want_public,
            } => write!(
                f,
                "proxy is {port} {}, fleet wants {want_port} {}",
                visibility(*public),
                visibility(*want_public)
            ),
            Problem::ProxyPublicUnshared => f.write_str(
                "proxy is public, the fleet shares nothing here (apply makes it private)",
            ),
            Problem::ProbeFailed { probe } => write!(f, "proxy probe: {probe}"),
            Problem::OtherRelease { have, want, whose } => write!(
                f,
                "on k3s {have}, not on {} {want}: an upgrade was interrupted or not applied yet; `exedev-k8s plan -f FLEET` shows the change, apply carries it out",
                match whose {
                    ReleaseSource::Fleet => "the fleet's release",
                    ReleaseSource::Most => "the release most nodes run",
                }
            ),
            Problem::TailnetDrops(p) => f.write_str(&tailnet_check::problem(p)),
            Problem::TailnetSuspect { what } => f.write_str(what),
        }
    }
}

/// Something worth saying that does not make the fleet unhealthy: `status`
/// lists it after the problems and still exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The VM runs and its share's proxy answered 502 (Bad Gateway):
    /// nothing listens on the shared port yet. The facts file does not say
    /// what exe.dev's proxy answers then; a reverse proxy's 502 is the
    /// emulator's reading (`emulator::proxy`), so that is what is read
    /// here. A cluster without workloads is not broken.
    NothingOnSharedPort { port: u16 },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::NothingOnSharedPort { port } => write!(
                f,
                "nothing answers on shared port {port} (the proxy says 502): run a workload there with hostPort {port} (the HA example's ingress manifest does), or stop sharing the pool"
            ),
        }
    }
}

impl Serialize for Warning {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_problems_serialise_as_their_wording() {
        assert_eq!(
            serde_json::to_string(&NodeCell::NotRegistered).unwrap(),
            "\"not registered\""
        );
        let p = Problem::BootstrapFailed {
            step: "k3s".into(),
            k3s_says: Some("token mismatch".into()),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            "\"bootstrap failed at step \\\"k3s\\\"; k3s says: token mismatch\""
        );
        assert!(p.is_bootstrap_failure());
        let proxy = Problem::ProxyDiffers {
            port: 80,
            public: false,
            want_port: 8080,
            want_public: true,
        };
        assert_eq!(
            proxy.to_string(),
            "proxy is 80 private, fleet wants 8080 public"
        );
    }
}
