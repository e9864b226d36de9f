//! The passes over the whole list of changes, once each VM is compared:
//! narrowing to `--target`, apply's order, etcd quorum, the refusals cut
//! to what a reviewer reads, the summary, and the warnings about what the
//! plan could not see or will not touch. Pure.

use std::collections::BTreeSet;

use super::PlanError;
use super::changes::{pool_of, role_of};
use crate::core::api::types::VmInfo;
use crate::core::fleet::{self, DesiredVm, Role};
use crate::core::plan::spec::SpecComment;
use crate::core::plan::{Action, Change, NodeFacts, Summary};

/// The `--target` pass: only the changes of the VMs or pools named, each
/// name known to the fleet (a typo is an error, not an empty plan).
pub(super) fn narrow_to_targets(
    changes: &mut Vec<Change>,
    targets: &[String],
    desired: &[DesiredVm],
    owned: &[&VmInfo],
) -> Result<(), PlanError> {
    if targets.is_empty() {
        return Ok(());
    }
    for t in targets {
        let known = desired.iter().any(|d| d.name == *t || d.pool == *t)
            || owned.iter().any(|v| v.vm_name == *t || pool_of(v) == *t);
        if !known {
            return Err(PlanError::UnknownTarget(t.clone()));
        }
    }
    changes.retain(|c| targets.iter().any(|t| *t == c.vm || *t == c.pool));
    Ok(())
}

/// Order in which apply carries changes out: servers before agents (facts
/// "Kubeconfig, manifests, removal, upgrade": servers first); within
/// servers creates and replaces in index order, then in-place changes from
/// the highest index down (the first server, which the tool reaches the API
/// through by default, restarts last), then deletions (highest index
/// first), so capacity is added before it is removed; agents by pool, in
/// index order, deletions last.
pub(super) fn order_key(c: &Change) -> (u8, u8, String, i64, String) {
    let server = c.role == Role::Server;
    let index = crate::base::names::split_fleet_vm_name(&c.vm).map_or(0, |n| i64::from(n.index));
    let (class, signed) = match c.action {
        Action::Create | Action::Replace => (0, index),
        Action::Update | Action::Upgrade if server => (1, -index),
        Action::Update | Action::Upgrade => (0, index),
        Action::Delete => (2, -index),
    };
    (
        if server { 0 } else { 1 },
        class,
        c.pool.clone(),
        signed,
        c.vm.clone(),
    )
}

/// The only server replaced loses the cluster's etcd data: said, so the
/// reviewer takes a snapshot first.
pub(super) fn only_server_warning(changes: &[Change], owned: &[&VmInfo]) -> Option<String> {
    let existing_servers = owned.iter().filter(|v| role_of(v) == Role::Server).count();
    let replaced = changes
        .iter()
        .find(|c| c.role == Role::Server && c.action == Action::Replace)?;
    (existing_servers == 1).then(|| format!(
        "{} replaces the only server: the cluster's etcd data is lost; take an etcd snapshot first",
        replaced.vm
    ))
}

/// The quorum pass: with members removed and each server waited for,
/// changes roll one at a time; without (no API), at most `existing -
/// quorum` servers may go down (deleted, replaced or restarted).
pub(super) fn quorum_refusal(
    changes: &[Change],
    owned: &[&VmInfo],
    members_removed: bool,
) -> Option<String> {
    let existing_servers = owned.iter().filter(|v| role_of(v) == Role::Server).count();
    // A lost server is down already: its replacement takes nothing down.
    let servers_down = changes
        .iter()
        .filter(|c| c.role == Role::Server && c.disrupts() && c.lost.is_none())
        .count();
    if members_removed || existing_servers <= 1 || servers_down == 0 {
        return None;
    }
    let quorum = existing_servers / 2 + 1;
    let max = existing_servers - quorum;
    (servers_down > max).then(|| format!(
        "this plan takes {servers_down} of the {existing_servers} existing servers down without the Kubernetes API to roll them one at a time, which can lose etcd quorum ({quorum} needed). Make the API reachable (exedev-k8s kubeconfig, or --kubeconfig), or change at most {max} server(s) per apply (--target NAME)"
    ))
}

/// The lost servers' pass: a dead etcd member is removed through the
/// members still alive, and etcd removes a member only with a quorum of
/// the current members (a membership change is a raft proposal; k3s's
/// `RemovePeer`, `pkg/etcd/etcd.go:1157-1206` @1feb5ae, calls
/// `MemberRemove`). So when the Ready etcd servers of this fleet are fewer
/// than a quorum of its etcd Nodes, nothing can remove a member: refused,
/// naming the lost servers and `restore`. Members are the fleet's Nodes
/// k3s labels etcd ([`NodeFacts::is_etcd`]); healthy ones are Ready and
/// have a VM. Once a removal is possible, each further one is easier (the
/// dead go, the healthy stay), so one check covers them all.
pub(super) fn lost_quorum_refusal(
    cluster: &str,
    changes: &[Change],
    owned: &[&VmInfo],
    nodes: Option<&std::collections::BTreeMap<String, NodeFacts>>,
) -> Option<String> {
    let nodes = nodes?;
    let lost: Vec<&str> = changes
        .iter()
        .filter(|c| c.lost.is_some() && c.role == Role::Server)
        .map(|c| c.vm.as_str())
        .collect();
    if lost.is_empty() {
        return None;
    }
    let members: Vec<(&String, &NodeFacts)> = nodes
        .iter()
        .filter(|(name, n)| {
            n.is_etcd() && crate::base::names::parse_fleet_vm_name(cluster, name).is_some()
        })
        .collect();
    let healthy = members
        .iter()
        .filter(|(name, n)| {
            n.not_ready_secs.is_none()
                && !lost.contains(&name.as_str())
                && owned.iter().any(|v| v.vm_name == **name)
        })
        .count();
    let quorum = members.len() / 2 + 1;
    (healthy < quorum).then(|| format!(
        "{} {} lost and only {healthy} of the {} etcd members {} healthy ({quorum} needed for quorum): etcd removes a member only with a quorum, so the dead members cannot be removed and no server can join. Restore the cluster from a snapshot instead: exedev-k8s restore -f FLEET --snapshot NAME (exedev-k8s snapshot list shows the snapshots)",
        lost.join(", "),
        if lost.len() == 1 { "is" } else { "are" },
        members.len(),
        if healthy == 1 { "is" } else { "are" },
    ))
}

/// Servers the plan creates to join an existing cluster whose Nodes it
/// could not read (the API did not answer): whether they were lost (their
/// etcd members remain, dead) could not be checked. Said in every such
/// plan (`below_quorum: false`); when the servers that exist are fewer
/// than a quorum of the declared ones, the missing ones may be lost members
/// of a cluster without quorum, which no join can repair: then the words
/// say so and name `restore` (`below_quorum: true`), and apply refuses
/// ([`crate::core::plan::unchecked_server_joins`]).
pub(super) fn unchecked_joins(changes: &[Change], owned: &[&VmInfo]) -> Option<(String, bool)> {
    let existing: Vec<&str> = owned
        .iter()
        .filter(|v| role_of(v) == Role::Server)
        .map(|v| v.vm_name.as_str())
        .collect();
    let joining: Vec<&str> = changes
        .iter()
        .filter(|c| c.role == Role::Server && c.action == Action::Create)
        .map(|c| c.vm.as_str())
        .collect();
    if existing.is_empty() || joining.is_empty() {
        return None;
    }
    let declared = existing.len() + joining.len();
    let quorum = declared / 2 + 1;
    let joining = joining.join(", ");
    if existing.len() >= quorum {
        return Some((
            format!(
                "server VM(s) {joining} are missing and the Kubernetes API did not answer, so whether they were lost (their etcd members still counted, dead) could not be checked; apply plans again with the API where it runs, and replaces a lost server after removing its dead member"
            ),
            false,
        ));
    }
    Some((
        format!(
            "server VM(s) {joining} are missing and the Kubernetes API did not answer, so whether they were lost (their etcd members still counted, dead) could not be checked: if they were, only {} of {declared} etcd members remain ({quorum} needed for quorum) and no server can join; restore the cluster from a snapshot instead (exedev-k8s restore -f FLEET --snapshot NAME). If the API is only unreachable from here, make it reachable (--via-ssh-tunnel, --kubeconfig) and plan again",
            existing.len(),
        ),
        true,
    ))
}

/// Refusals shown at most.
const SHOWN_REFUSALS: usize = 5;

/// The truncation pass: one refusal per node says the same thing many
/// times over, so repeats go and at most [`SHOWN_REFUSALS`] show, with how
/// many more there are.
pub(super) fn truncate_refusals(refusals: &mut Vec<String>) {
    refusals.dedup();
    if refusals.len() > SHOWN_REFUSALS {
        let more = refusals.len() - SHOWN_REFUSALS;
        refusals.truncate(SHOWN_REFUSALS);
        refusals.push(format!("... and {more} more like these"));
    }
}

/// The summary pass: changes counted per action.
pub(super) fn summarise(changes: &[Change]) -> Summary {
    let mut summary = Summary::default();
    for c in changes {
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Upgrade => summary.upgrade += 1,
            Action::Replace => summary.replace += 1,
            Action::Delete => summary.delete += 1,
        }
    }
    summary
}

/// Without the API a plan sees labels, taints and releases only through
/// the VMs' comments: said once, and which VMs record no labels yet.
pub(super) fn blind_warnings(owned: &[&VmInfo]) -> Vec<String> {
    if owned.is_empty() {
        return Vec::new();
    }
    let mut out = vec![
        "the Kubernetes API is not reachable: node labels and taints are compared with what the VMs' comments record (a change made in the cluster, e.g. with kubectl, is not seen), and k3s releases are read from the VMs' comments".to_string(),
    ];
    // VMs of an earlier version record no labels until a plan reads
    // their Nodes: said once, not per VM.
    let unrecorded: Vec<&str> = owned
        .iter()
        .filter(|v| SpecComment::parse(&v.comment).is_some_and(|c| c.lbl.is_none()))
        .map(|v| v.vm_name.as_str())
        .collect();
    if let Some(first) = unrecorded.first() {
        let more = match unrecorded.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        out.push(format!(
            "{first}{more} do not record their labels and taints yet (made by an earlier exedev-k8s): a change to them is not seen without the Kubernetes API; a plan and apply with the API reachable records them"
        ));
    }
    out
}

/// VMs in scope the fleet neither wants nor owns: reported, never touched.
pub(super) fn unowned_warnings(
    cluster: &str,
    scoped: &[&VmInfo],
    desired: &[DesiredVm],
) -> Vec<String> {
    let desired_names: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    scoped
        .iter()
        .filter(|v| !desired_names.contains(v.vm_name.as_str()))
        .filter_map(|v| match fleet::ownership(cluster, &v.vm_name, &v.tags, &v.comment) {
            fleet::Ownership::Owned => None,
            fleet::Ownership::Partial { lacks } => Some(format!(
                "{} carries fleet {cluster:?}'s ownership tag but lacks {}: left alone (exedev-k8s changes or removes only VMs it can prove it created; remove the tag, or the VM, yourself)",
                v.vm_name,
                lacks.join(" and ")
            )),
            fleet::Ownership::NotOwned => Some(format!(
                "{} looks like this fleet's but is not owned by it: left alone",
                v.vm_name
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::Restart;

    fn server(name: &str) -> VmInfo {
        VmInfo {
            vm_name: name.into(),
            tags: vec![fleet::role_tag(Role::Server)],
            ..Default::default()
        }
    }

    fn change(vm: &str, action: Action, restart: Option<Restart>) -> Change {
        Change {
            action,
            vm: vm.into(),
            pool: fleet::CONTROL_PLANE_POOL.into(),
            role: Role::Server,
            reasons: Vec::new(),
            attributes: Vec::new(),
            ops: Vec::new(),
            restart,
            replacement: None,
            lost: None,
        }
    }

    #[test]
    fn quorum_allows_existing_minus_quorum_servers_down_without_the_api() {
        let vms = [server("d-cp1"), server("d-cp2"), server("d-cp3")];
        let owned: Vec<&VmInfo> = vms.iter().collect();
        let one = [change("d-cp1", Action::Update, Some(Restart::K3s))];
        assert_eq!(quorum_refusal(&one, &owned, false), None);
        let two = [
            one[0].clone(),
            change("d-cp2", Action::Delete, None),
            // An update that restarts nothing takes nothing down.
            change("d-cp3", Action::Update, None),
        ];
        let refusal = quorum_refusal(&two, &owned, false).unwrap();
        assert!(refusal.contains("2 of the 3") && refusal.contains("(2 needed)"));
        assert_eq!(quorum_refusal(&two, &owned, true), None);
    }

    #[test]
    fn refusals_are_deduplicated_then_cut_to_five() {
        let mut r: Vec<String> = ["a", "a", "b", "c", "d", "e", "f", "g"]
            .map(String::from)
            .to_vec();
        truncate_refusals(&mut r);
        assert_eq!(r, ["a", "b", "c", "d", "e", "... and 2 more like these"]);
    }

    #[test]
    fn servers_go_first_and_the_first_server_restarts_last() {
        let mut cs = vec![
            change("d-cp1", Action::Update, None),
            change("d-cp2", Action::Update, None),
            change("d-cp3", Action::Delete, None),
            change("d-cp4", Action::Create, None),
        ];
        cs.sort_by_key(order_key);
        let names: Vec<&str> = cs.iter().map(|c| c.vm.as_str()).collect();
        assert_eq!(names, ["d-cp4", "d-cp2", "d-cp1", "d-cp3"]);
        let summary = summarise(&cs);
        assert_eq!((summary.create, summary.update, summary.delete), (1, 2, 1));
    }

    #[test]
    fn an_unknown_target_is_an_error_not_an_empty_plan() {
        let mut cs = vec![change("d-cp1", Action::Update, None)];
        let vms = [server("d-cp1")];
        let owned: Vec<&VmInfo> = vms.iter().collect();
        let err = narrow_to_targets(&mut cs, &["nope".into()], &[], &owned);
        assert!(matches!(err, Err(PlanError::UnknownTarget(t)) if t == "nope"));
        narrow_to_targets(&mut cs, &["d-cp1".into()], &[], &owned).unwrap();
        assert_eq!(cs.len(), 1);
    }
}
