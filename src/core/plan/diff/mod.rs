//! Desired against observed: the heart of `plan`.
//!
//! What needs a new VM (image, role, tailnet: [`super::spec::spec_fingerprint`];
//! a disk that shrinks) is a replacement: servers in place, one at a time;
//! agents create-before-destroy under a new index ([`super::placement`]).
//! Everything else changes in place, attribute by attribute
//! ([`super::attributes`]): sizes (a VM restart), tags, the proxy, the k3s
//! release (an upgrade), k3s arguments (a k3s restart), labels and taints
//! (the API). What k3s refuses (a downgrade, a skipped minor, a kubelet
//! newer than the servers) and what would lose etcd quorum make the plan
//! refused: it is still returned, with [`Plan::refusals`].
//!
//! [`diff`] is a sequence of named passes, each a function of its own:
//! scope ([`changes::scope`]), release ([`release::target_release`]),
//! placement and scripts ([`changes::place`]), convergence of each
//! desired VM ([`changes::converge`], collisions refused), removals,
//! `--target` ([`checks::narrow_to_targets`]), apply's order, version skew
//! ([`release::skew_refusals`]), quorum (and the quorum a lost server's
//! removal needs), truncation, summary and warnings ([`checks`]).
//!
//! A lost server (its VM gone while its Node remains, or its Node not
//! Ready for [`super::LOST_AFTER_SECS`]) is a replacement that removes its
//! dead etcd member first ([`super::Lost`]); below quorum, refused.

use super::attributes::observed_release;
use super::{FORMAT_VERSION, Observed, Plan, PlanRelease};
use crate::base::release::Release;
use crate::core::bootstrap::BootstrapError;
use crate::core::fleet::Fleet;

mod changes;
mod checks;
mod release;

use changes::{Notes, node_of};

/// Options narrowing or changing what is planned.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// VM or pool names; empty means everything.
    pub targets: Vec<String>,
    /// Plan the teardown of every VM the fleet owns.
    pub destroy: bool,
    /// Whether apply removes a server's Node (and etcd member) before
    /// deleting its VM and waits for each new or restarted server to be a
    /// Ready node before the next: then server changes roll one at a time.
    /// Without it, taking servers down can lose etcd quorum, so a plan may
    /// take down at most `existing - quorum` of them.
    pub members_removed: bool,
    /// The release to install and upgrade to (`None`: the fleet's
    /// `k3s.version`; a fleet following a channel must give one).
    pub release: Option<ReleaseChoice>,
}

/// Where the plan's k3s release comes from, decided before the (pure) diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseChoice {
    /// `k3s.version`. (A saved plan's release is never taken as given:
    /// apply plans again and refuses a saved plan whose release differs.)
    Pinned { release: Release },
    /// `k3s.channel`, looked up at plan time; `Err` says why it could not
    /// be (the plan then keeps the release the fleet's nodes run).
    Channel {
        name: String,
        resolved: Result<Release, String>,
    },
}

/// The warning of a teardown plan of a protected fleet.
pub const PROTECTED_WARNING: &str = "the fleet is protected (metadata.protect: true): apply and destroy refuse to carry out this teardown; set protect: false in the fleet file first if you mean it";

/// Why no plan can be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "VM {vm:?} exists but is not owned by fleet {fleet:?} (it lacks {lacks}); exedev-k8s never takes over a VM it cannot prove it created. Rename the fleet or pool, or remove/rename that VM yourself"
    )]
    Collision {
        vm: String,
        fleet: String,
        /// What marks of ownership it lacks: the tag, the spec comment.
        lacks: String,
    },
    #[error("--target {0:?} matches no VM or pool of this fleet")]
    UnknownTarget(String),
    #[error(transparent)]
    Script(#[from] BootstrapError),
    /// No release to install: a channel that cannot be looked up for a
    /// fleet whose nodes do not agree on one (or have none yet).
    #[error("{0}")]
    Release(String),
}

/// Why apply must not carry `plan` out without the Kubernetes API: it
/// creates servers to join a cluster whose existing servers are fewer than
/// a quorum of the declared ones, and without the API nothing tells
/// whether the missing servers were lost members (`None`: nothing of the
/// kind). Pure; the engine calls it when the API did not answer.
pub fn unchecked_server_joins(plan: &Plan, observed: &Observed) -> Option<String> {
    let owned: Vec<&crate::core::api::types::VmInfo> = observed
        .vms
        .iter()
        .filter(|v| super::owned(&plan.fleet, v))
        .collect();
    checks::unchecked_joins(&plan.changes, &owned)
        .filter(|(_, below_quorum)| *below_quorum)
        .map(|(why, _)| why)
}

/// Computes the plan: the passes in order. A teardown (`--destroy`)
/// deletes every owned VM and skips what only matters for a fleet that
/// stays (release, placement, skew, quorum, the API's blind spots).
pub fn diff(
    fleet: &Fleet,
    fleet_fingerprint: &str,
    observed: &Observed,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let scope = changes::scope(fleet, observed);
    let mut notes = Notes::default();
    let (desired, mut changes, target) = if opts.destroy {
        if fleet.protect {
            notes.warnings.push(PROTECTED_WARNING.into());
        }
        (Vec::new(), changes::teardown(&scope.owned), None)
    } else {
        let node_releases: Vec<Option<String>> = scope
            .owned
            .iter()
            .map(|v| observed_release(v, node_of(observed, &v.vm_name)))
            .collect();
        let target = release::target_release(fleet, opts, &node_releases, &mut notes.warnings)?;
        let desired = changes::place(fleet, &scope.owned, &target)?;
        let mut changes =
            changes::converge(fleet, observed, &scope, &desired, &target, &mut notes)?;
        changes.extend(changes::removals(fleet, &scope.owned, &desired));
        (desired, changes, Some(target))
    };
    checks::narrow_to_targets(&mut changes, &opts.targets, &desired, &scope.owned)?;
    changes.sort_by_key(checks::order_key);
    let Notes {
        mut warnings,
        mut refusals,
    } = notes;
    if let Some(t) = &target {
        refusals.extend(release::skew_refusals(
            &changes,
            &scope.owned,
            observed,
            &t.release,
        ));
        warnings.extend(checks::only_server_warning(&changes, &scope.owned));
        refusals.extend(checks::quorum_refusal(
            &changes,
            &scope.owned,
            opts.members_removed,
        ));
        refusals.extend(checks::lost_quorum_refusal(
            &fleet.name,
            &changes,
            &scope.owned,
            observed.nodes.as_ref(),
        ));
        if observed.nodes.is_none() {
            warnings.extend(checks::unchecked_joins(&changes, &scope.owned).map(|(w, _)| w));
        }
    }
    checks::truncate_refusals(&mut refusals);
    let summary = checks::summarise(&changes);
    if target.is_some() && observed.nodes.is_none() {
        warnings.extend(checks::blind_warnings(&scope.owned));
    }
    warnings.extend(checks::unowned_warnings(
        &fleet.name,
        &scope.scoped,
        &desired,
    ));
    Ok(Plan {
        format_version: FORMAT_VERSION,
        fleet: fleet.name.clone(),
        mode: if opts.destroy {
            super::Mode::Destroy
        } else {
            super::Mode::Apply
        },
        changes,
        summary,
        warnings,
        fleet_file: String::new(),
        fleet_file_base: super::FleetFileBase::PlanFile,
        nodes_observed: observed.nodes.is_some(),
        targets: opts.targets.clone(),
        fleet_fingerprint: fleet_fingerprint.to_string(),
        observed_fingerprint: observed.fingerprint(fleet),
        release: target.map(|t| PlanRelease {
            version: t.release.to_string(),
            channel: t.channel,
        }),
        refusals,
        repository: None,
    })
}
