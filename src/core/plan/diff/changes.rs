//! The per-VM passes: where the fleet's VMs go ([`place`], scripts
//! rendered), each desired VM against the VM of its name ([`converge`]:
//! create, refuse a collision, replace, or change in place through
//! [`attributes::compare`]), the owned VMs the fleet no longer wants
//! ([`removals`]) and a teardown ([`teardown`]). Pure.

use std::collections::{BTreeMap, BTreeSet};

use super::PlanError;
use crate::base::release::Release;
use crate::base::sizes::same_size;
use crate::core::api::types::VmInfo;
use crate::core::fleet::{self, DesiredVm, Fleet, RESERVED_TAG_PREFIX, Role};
use crate::core::plan::attributes::{self, AttrName, Target, attr, gb};
use crate::core::plan::spec::{self, SpecComment};
use crate::core::plan::{
    Action, AttrChange, Change, LOST_AFTER_SECS, Lost, NodeFacts, Observed, Op, Replacement,
    placement,
};

/// The VMs a plan looks at: those `ls` shows in the fleet's scope, and of
/// them the ones the fleet provably owns (the only ones it may change).
pub(super) struct Scope<'a> {
    pub scoped: Vec<&'a VmInfo>,
    pub owned: Vec<&'a VmInfo>,
}

/// The scope pass: everything after it sees only the fleet's VMs.
pub(super) fn scope<'a>(fleet: &'a Fleet, observed: &'a Observed) -> Scope<'a> {
    let scoped: Vec<&VmInfo> = observed.in_scope(fleet).collect();
    let owned = scoped
        .iter()
        .copied()
        .filter(|v| crate::core::plan::owned(&fleet.name, v))
        .collect();
    Scope { scoped, owned }
}

pub(super) fn role_of(v: &VmInfo) -> Role {
    if v.tags.iter().any(|t| *t == fleet::role_tag(Role::Server)) {
        Role::Server
    } else {
        Role::Agent
    }
}

pub(super) fn pool_of(v: &VmInfo) -> String {
    v.tags
        .iter()
        .find_map(|t| {
            t.strip_prefix(&format!("{RESERVED_TAG_PREFIX}pool-"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

pub(super) fn node_of<'a>(observed: &'a Observed, name: &str) -> Option<&'a NodeFacts> {
    observed.nodes.as_ref().and_then(|n| n.get(name))
}

/// The placement pass: which VMs the fleet wants, under which names (an
/// agent to be replaced leaves its index to the new VM's pool slot), and
/// their setup scripts rendered now, so a plan fails where apply would
/// (a script over exe.dev's 10 KiB).
pub(super) fn place(
    fleet: &Fleet,
    owned: &[&VmInfo],
    target: &Target,
) -> Result<Vec<DesiredVm>, PlanError> {
    let desired = placement::place(fleet, owned, |d, v| {
        !replace_reasons(fleet, d, v).0.is_empty()
    });
    spec::check_scripts(fleet, &desired, &target.release.to_string())?;
    Ok(desired)
}

/// The extra k3s flags a new VM gets, for the reviewer; a secret flag shows
/// where its value comes from, never the value. None without flags.
fn k3s_args_attr(fleet: &Fleet, d: &DesiredVm) -> Option<AttrChange> {
    let k3s = &fleet.k3s;
    let args = match d.role {
        Role::Server => &k3s.server_args,
        Role::Agent => &k3s.agent_args,
    };
    (!args.is_empty()).then(|| {
        let shown: Vec<String> = args.iter().map(|a| a.shown()).collect();
        attr(AttrName::K3sArgs, None, Some(shown.join(" ")))
    })
}

fn create_attrs(fleet: &Fleet, d: &DesiredVm, release: &Release) -> Vec<AttrChange> {
    let mut a = vec![
        attr(AttrName::K3sVersion, None, Some(release.to_string())),
        attr(AttrName::Image, None, Some(d.image.clone())),
        attr(AttrName::Cpu, None, Some(d.cpu.to_string())),
        attr(AttrName::Memory, None, Some(d.memory.to_string())),
        attr(AttrName::Disk, None, Some(d.disk.to_string())),
        attr(AttrName::Tags, None, Some(d.tags.join(","))),
    ];
    if let Some(s) = d.share {
        a.push(attr(AttrName::SharePort, None, Some(s.port.to_string())));
        a.push(attr(
            AttrName::SharePublic,
            None,
            Some(s.public.to_string()),
        ));
    }
    a.extend(k3s_args_attr(fleet, d));
    // What the node gets from k3s and the API: the same names an update
    // shows (`labels.<key>`, `taints`, `k3s.disable`), so a reviewer sees
    // them before the node exists, not only when they later drift.
    for (k, v) in &d.labels {
        a.push(attr(AttrName::Label(k.clone()), None, Some(v.clone())));
    }
    if !d.taints.is_empty() {
        let taints: Vec<String> = d.taints.iter().map(ToString::to_string).collect();
        a.push(attr(AttrName::Taints, None, Some(taints.join(","))));
    }
    let (_, disable) = spec::k3s_settings(fleet, d.role);
    if !disable.is_empty() {
        a.push(attr(AttrName::K3sDisable, None, Some(disable.join(" "))));
    }
    a
}

fn share_ops(d: &DesiredVm) -> Vec<Op> {
    match d.share {
        Some(s) => {
            let mut ops = vec![Op::SharePort { port: s.port }];
            if s.public {
                ops.push(Op::ShareVisibility { public: true });
            }
            ops
        }
        None => Vec::new(),
    }
}

fn create_change(fleet: &Fleet, d: &DesiredVm, target: &Target) -> Change {
    Change {
        action: Action::Create,
        vm: d.name.clone(),
        pool: d.pool.clone(),
        role: d.role,
        reasons: vec![format!(
            "{} {} of pool {:?} does not exist",
            d.role.as_str(),
            d.index,
            d.pool
        )],
        attributes: create_attrs(fleet, d, &target.release),
        ops: share_ops(d),
        restart: None,
        replacement: None,
        lost: None,
    }
}

fn delete_change(v: &VmInfo, reason: String) -> Change {
    Change {
        action: Action::Delete,
        vm: v.vm_name.clone(),
        pool: pool_of(v),
        role: role_of(v),
        reasons: vec![reason],
        attributes: vec![
            attr(AttrName::Image, Some(v.image.clone()), None),
            attr(AttrName::Cpu, Some(v.allocated_cpus.to_string()), None),
            attr(AttrName::Memory, Some(gb(v.memory_capacity_bytes)), None),
            attr(AttrName::Disk, Some(gb(v.disk_capacity_bytes)), None),
        ],
        ops: Vec::new(),
        restart: None,
        replacement: None,
        lost: None,
    }
}

/// Why owned VM `o` needs a new VM to become `d`, if it does: another
/// image, another role or tailnet (scheme-2 fingerprint), a disk that
/// shrinks. A scheme-1 comment fingerprinted the whole setup script, so
/// it is not compared: only what exe.dev reports is.
fn replace_reasons(fleet: &Fleet, d: &DesiredVm, o: &VmInfo) -> (Vec<String>, Vec<AttrChange>) {
    let mut reasons = Vec::new();
    let mut attributes = Vec::new();
    if !o.image.is_empty() && o.image != d.image {
        reasons.push(format!("image changed ({} → {})", o.image, d.image));
        attributes.push(attr(
            AttrName::Image,
            Some(o.image.clone()),
            Some(d.image.clone()),
        ));
    }
    if let Some(c) = SpecComment::parse(&o.comment).filter(|c| c.scheme >= spec::IDENTITY_SCHEME) {
        let want = spec::spec_fingerprint(fleet, d);
        // With the observed image, would it match? Then only the image
        // changed and a second reason would be noise.
        let image_only = !o.image.is_empty()
            && spec::spec_fingerprint_with_image(fleet, d, &o.image) == c.fingerprint;
        if c.fingerprint != want && !image_only {
            reasons.push(format!(
                "role or tailnet changed (spec {} → {want}): the setup script exe.dev stored joins the tailnet at every boot and cannot be changed",
                c.fingerprint
            ));
            attributes.push(attr(AttrName::Spec, Some(c.fingerprint), Some(want)));
        }
    }
    if !same_size(o.disk_capacity_bytes, d.disk.0) && d.disk.0 < o.disk_capacity_bytes {
        reasons.push(format!(
            "disk shrinks ({} → {}); exe.dev disks only grow",
            gb(o.disk_capacity_bytes),
            d.disk
        ));
        attributes.push(attr(
            AttrName::Disk,
            Some(gb(o.disk_capacity_bytes)),
            Some(d.disk.to_string()),
        ));
    }
    (reasons, attributes)
}

/// What the comparisons add to the plan besides changes.
#[derive(Default)]
pub(super) struct Notes {
    pub warnings: Vec<String>,
    pub refusals: Vec<String>,
}

/// Compares one desired VM with the owned VM of the same name: a
/// replacement when it needs a new VM, else its in-place changes (every
/// attribute compared in [`attributes::compare`]), else nothing.
fn compare(
    fleet: &Fleet,
    d: &DesiredVm,
    seen: &attributes::Seen<'_>,
    target: &Target,
    notes: &mut Notes,
) -> Option<Change> {
    let (reasons, mut attrs) = replace_reasons(fleet, d, seen.vm);
    if !reasons.is_empty() {
        attrs.extend(attributes::on_replace(d, seen, target));
        return Some(Change {
            action: Action::Replace,
            vm: d.name.clone(),
            pool: d.pool.clone(),
            role: d.role,
            reasons,
            attributes: attrs,
            ops: share_ops(d),
            restart: None,
            // Agents are moved to create-before-destroy by the removals
            // pass, when the pool has room.
            replacement: Some(Replacement::DestroyBeforeCreate),
            lost: None,
        });
    }
    let changes = attributes::compare(fleet, d, seen, target);
    notes.refusals.extend(changes.refusal.clone());
    notes.warnings.extend(changes.warnings.iter().cloned());
    (!changes.is_empty()).then(|| Change {
        action: changes.action(),
        vm: d.name.clone(),
        pool: d.pool.clone(),
        role: d.role,
        restart: changes.restart(),
        reasons: changes.reasons,
        attributes: changes.attributes,
        ops: changes.ops,
        replacement: None,
        lost: None,
    })
}

/// Indices a pool holds or will hold (owned, desired, or merely in
/// scope): a replacement agent takes the lowest index in none of them.
fn taken_indices(
    cluster: &str,
    scope: &Scope<'_>,
    desired: &[DesiredVm],
) -> BTreeMap<String, BTreeSet<u32>> {
    let mut taken: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for name in scope
        .owned
        .iter()
        .map(|v| v.vm_name.as_str())
        .chain(desired.iter().map(|d| d.name.as_str()))
        .chain(scope.scoped.iter().map(|v| v.vm_name.as_str()))
    {
        if let Some((pool, i)) = crate::base::names::parse_fleet_vm_name(cluster, name) {
            taken.entry(pool.to_string()).or_default().insert(i);
        }
    }
    taken
}

/// `300` → `5m`, `75` → `1m15s`, `40` → `40s`.
fn duration(secs: u64) -> String {
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// A lost server's replacement: its dead etcd member goes first (by
/// deleting its Node: k3s's etcd member controller removes the member of
/// a deleted etcd Node, `pkg/etcd/member_controller.go:111-134` @1feb5ae),
/// then its VM if any, then a new VM under the same name joins. The new
/// VM's attributes are a create's.
fn lost_change(fleet: &Fleet, d: &DesiredVm, target: &Target, lost: Lost) -> Change {
    let mut reasons = vec![match lost {
        Lost::VmGone if d.role == Role::Agent => format!(
            "{} is lost: its VM is gone from exe.dev but its node remains; k3s refuses a new VM under the name of a remaining node (its node-password Secret, kube-system/{}, holds the old VM's password), so its node will be deleted first (the Secret goes with it), then a new VM created and joined",
            d.name,
            crate::base::names::node_password_secret(&d.name)
        ),
        Lost::VmGone => format!(
            "{} is lost: its VM is gone from exe.dev but its node, and so its etcd member, remains; its etcd member will be removed (its node deleted), then a new VM created and joined",
            d.name
        ),
        Lost::NotReady { secs } => format!(
            "{} is lost: its node has not been Ready for {} (a server is lost after {}); its etcd member will be removed (its node deleted), then its VM deleted and a new one created and joined",
            d.name,
            duration(secs),
            duration(LOST_AFTER_SECS)
        ),
    }];
    if lost == Lost::VmGone {
        // Nothing can log the gone VM's device out: a device holding the
        // name makes the new one `<name>-1` (facts "Tailscale"), where the
        // setup script stops; apply checks first (`NodeOps::name_free`).
        reasons.push(format!(
            "its Tailscale device cannot be logged out (the VM is gone): unless the fleet's auth key is ephemeral, remove device {} in the Tailscale admin console before apply (apply checks the tailnet first and stops before any change while a device holds the name)",
            d.name
        ));
    }
    Change {
        action: Action::Replace,
        vm: d.name.clone(),
        pool: d.pool.clone(),
        role: d.role,
        reasons,
        attributes: create_attrs(fleet, d, &target.release),
        ops: share_ops(d),
        restart: None,
        // The name is kept: the dead member and its VM go first.
        replacement: Some(Replacement::DestroyBeforeCreate),
        lost: Some(lost),
    }
}

/// Agents are replaced create-before-destroy under the pool's lowest free
/// index (which it then holds).
fn create_before_destroy(
    cluster: &str,
    c: &mut Change,
    taken: &mut BTreeMap<String, BTreeSet<u32>>,
) {
    let held = taken.entry(c.pool.clone()).or_default();
    let i = placement::lowest_free(held);
    held.insert(i);
    let new = crate::base::names::fleet_vm_name(cluster, &c.pool, i);
    c.reasons.push(format!(
        "create before destroy: {new} is created and Ready before {} is drained and removed",
        c.vm
    ));
    c.replacement = Some(Replacement::CreateBeforeDestroy { successor: new });
}

/// The convergence pass: each desired VM against the VM of its name. A VM
/// of that name the fleet does not own is a collision: no plan, since
/// exedev-k8s never takes over a VM it cannot prove it created.
pub(super) fn converge(
    fleet: &Fleet,
    observed: &Observed,
    scope: &Scope<'_>,
    desired: &[DesiredVm],
    target: &Target,
    notes: &mut Notes,
) -> Result<Vec<Change>, PlanError> {
    let cluster = &fleet.name;
    let by_name: BTreeMap<&str, &VmInfo> = observed
        .vms
        .iter()
        .map(|v| (v.vm_name.as_str(), v))
        .collect();
    let mut taken = taken_indices(cluster, scope, desired);
    let mut changes = Vec::new();
    for d in desired {
        // Only a server's etcd Node stands for an etcd member, which stays
        // until the Node is deleted.
        let member = node_of(observed, &d.name).filter(|n| d.role == Role::Server && n.is_etcd());
        // An agent's Node keeps its node password: k3s refuses a new VM
        // under its name while it remains (`docs/facts/node-password.md`).
        let stale = node_of(observed, &d.name).filter(|_| d.role == Role::Agent);
        let Some(o) = by_name.get(d.name.as_str()) else {
            // A server whose VM is gone but whose Node remains still has
            // its etcd member: a plain create would join a fourth member
            // beside the dead one.
            changes.push(match member.or(stale) {
                Some(_) => lost_change(fleet, d, target, Lost::VmGone),
                None => create_change(fleet, d, target),
            });
            continue;
        };
        if !crate::core::plan::owned(cluster, o) {
            let lacks = match fleet::ownership(cluster, &o.vm_name, &o.tags, &o.comment) {
                fleet::Ownership::Partial { lacks } => lacks.join(" and "),
                _ => format!("the tag {}", fleet::ownership_tag(cluster)),
            };
            return Err(PlanError::Collision {
                vm: d.name.clone(),
                fleet: cluster.clone(),
                lacks,
            });
        }
        if !o.is_running() {
            notes
                .warnings
                .push(format!("{} is {:?}, not running", o.vm_name, o.status));
        }
        if let Some(secs) = member.and_then(|n| n.not_ready_secs) {
            if secs >= LOST_AFTER_SECS {
                changes.push(lost_change(fleet, d, target, Lost::NotReady { secs }));
                continue;
            }
            notes.warnings.push(format!(
                "{}'s node has not been Ready for {}: if it stays so for {}, a plan calls the server lost and replaces it",
                d.name,
                duration(secs),
                duration(LOST_AFTER_SECS)
            ));
        }
        let seen = attributes::Seen {
            vm: o,
            share: observed.shares.get(&d.name),
            node: node_of(observed, &d.name),
            nodes_known: observed.nodes.is_some(),
        };
        if let Some(mut c) = compare(fleet, d, &seen, target, notes) {
            if c.action == Action::Replace && d.role == Role::Agent {
                create_before_destroy(cluster, &mut c, &mut taken);
            }
            changes.push(c);
        }
    }
    Ok(changes)
}

/// The removal pass: owned VMs the fleet no longer wants, each with why
/// (its pool shrank, left the fleet, or it belongs to none).
pub(super) fn removals(fleet: &Fleet, owned: &[&VmInfo], desired: &[DesiredVm]) -> Vec<Change> {
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let pools: BTreeMap<&str, u32> = desired.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.pool.as_str()).or_insert(0) += 1;
        m
    });
    owned
        .iter()
        .filter(|v| !wanted.contains(v.vm_name.as_str()))
        .map(|v| {
            let pool = pool_of(v);
            let in_fleet =
                fleet.pools.iter().any(|p| p.pool == pool) || pool == fleet::CONTROL_PLANE_POOL;
            let reason = match pools.get(pool.as_str()) {
                Some(n) => format!("pool {pool:?} shrank to {n}"),
                None if in_fleet => format!("pool {pool:?} shrank to 0"),
                None if !pool.is_empty() => format!("pool {pool:?} is no longer in the fleet"),
                None => "not in the fleet".into(),
            };
            delete_change(v, reason)
        })
        .collect()
}

/// The teardown pass (`--destroy`): every owned VM deleted.
pub(super) fn teardown(owned: &[&VmInfo]) -> Vec<Change> {
    owned
        .iter()
        .map(|v| delete_change(v, "destroy: the fleet is being torn down".into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::fixtures;

    fn fleet() -> Fleet {
        fixtures::fleet_with("pools:\n  - name: web\n    count: 2\n")
    }

    fn owned(d: &DesiredVm) -> VmInfo {
        VmInfo {
            vm_name: d.name.clone(),
            tags: d.tags.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn a_replacement_agent_takes_the_lowest_index_no_vm_holds() {
        let f = fleet();
        let desired = fleet::desired_vms(&f);
        let vms: Vec<VmInfo> = desired.iter().map(owned).collect();
        let refs: Vec<&VmInfo> = vms.iter().collect();
        let scope = Scope {
            scoped: refs.clone(),
            owned: refs,
        };
        let mut taken = taken_indices(&f.name, &scope, &desired);
        let agent = desired.iter().find(|d| d.role == Role::Agent).unwrap();
        let mut c = delete_change(&owned(agent), String::new());
        create_before_destroy(&f.name, &mut c, &mut taken);
        let new = c.successor().unwrap().to_string();
        assert!(!desired.iter().any(|d| d.name == new), "{new}");
        // The next one does not take the same index.
        create_before_destroy(&f.name, &mut c, &mut taken);
        assert_ne!(c.successor().unwrap(), new);
    }

    #[test]
    fn removals_say_whether_the_pool_shrank_or_left() {
        let f = fleet();
        let desired = fleet::desired_vms(&f);
        let web = desired.iter().find(|d| d.pool == "web").unwrap();
        let gone = VmInfo {
            vm_name: format!("{}-old1", f.name),
            tags: vec![format!("{RESERVED_TAG_PREFIX}pool-old")],
            ..Default::default()
        };
        let extra = VmInfo {
            vm_name: format!("{}-web9", f.name),
            tags: web.tags.clone(),
            ..Default::default()
        };
        let got = removals(&f, &[&gone, &extra], &desired);
        let reasons: Vec<&str> = got.iter().map(|c| c.reasons[0].as_str()).collect();
        assert_eq!(
            reasons,
            [
                "pool \"old\" is no longer in the fleet",
                "pool \"web\" shrank to 2"
            ]
        );
        assert!(got.iter().all(|c| c.action == Action::Delete));
    }
}
