//! Carries a plan out against exe.dev and the cluster: servers one at a
//! time (each a ready member before the next: etcd joins one learner at a
//! time), then agents, each pool's disruptive changes (drains, restarts,
//! replacements, removals) within its `maxUnavailable` ([`crate::core::rollout`])
//! and the rest in parallel (bounded); every `new` whose outcome is unknown
//! settled by re-reading `ls` instead of re-sending blindly.
//!
//! An in-place change rolls node by node: cordon and drain (PDBs
//! respected), change (k3s over SSH: [`crate::edges::upgrade`]; a resize), Ready
//! again at the plan's release, uncordon, comment updated. An agent
//! replacement creates its successor (a new index) and waits for it to be
//! Ready before draining and removing the old VM. A failed disruptive change
//! stops the roll: nothing disruptive starts after it, the node stays
//! cordoned, and re-running apply resumes (nodes already at the target are
//! not planned again).
//!
//! On a new cluster, agents start as soon as the first server is ready, in
//! parallel with the remaining server joins; otherwise after every server
//! change. Every joiner is pointed at a server that is up at that moment.
//! Before a VM is deleted its Tailscale device is logged out (bounded, never
//! blocking), so a replacement gets the same MagicDNS name.
//!
//! The executor reports through [`Event`]s; the terminal edge turns them into
//! progress bars, plain lines or JSON.
//!
//! By job: [`events`] (what it tells and its report), [`ops`] (what it does
//! to a node through the API or SSH: [`NodeOps`]), [`schedule`] (the
//! order: servers, agents, budgets, halting), `steps` and `in_place` (one
//! VM's change), [`error`] (why a change failed).

mod error;
mod events;
mod in_place;
mod ops;
mod schedule;
mod steps;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use error::{NotInFleet, StepError};
pub use events::{ApplyReport, Done, Event, Failed, Reporter, Skipped};
pub use ops::{HookError, NilOps, NodeOps, Pending, StepSink};
pub use schedule::apply;

/// How apply runs.
#[derive(Clone)]
pub struct ApplyOptions {
    /// What it does to nodes through the Kubernetes API or SSH (wait for
    /// Ready, drain, change k3s, uncordon, label, remove, log out): each
    /// operation the implementation leaves out is not done.
    pub ops: Arc<dyn NodeOps>,
    /// Agents changed at once.
    pub parallelism: usize,
    /// How long to wait for a server to be `running` before the next.
    pub server_boot_timeout: Duration,
    /// Reads of `ls` before concluding an unknown `new` did not happen.
    pub settle_reads: u32,
    pub settle_delay: Duration,
    /// Set to stop starting new work (Ctrl-C).
    pub cancel: Arc<AtomicBool>,
    /// Whether a new server's settings given after its boot (etcd
    /// snapshots) restart k3s: `false` only for a caller that restarts it
    /// itself right after (restore's new first server: its reset reads
    /// them), which saves a `server_ready` on its critical path.
    pub settle_restart: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            ops: Arc::new(NilOps),
            parallelism: 16,
            server_boot_timeout: Duration::from_secs(300),
            settle_reads: 3,
            settle_delay: Duration::from_millis(700),
            cancel: Arc::new(AtomicBool::new(false)),
            settle_restart: true,
        }
    }
}
