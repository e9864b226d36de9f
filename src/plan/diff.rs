//! Desired against observed: the heart of `plan`.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::{self, fingerprint_in};
use super::{Action, AttrChange, Change, FORMAT_VERSION, Observed, Op, Plan, Summary};
use crate::api::types::{Visibility, VmInfo};
use crate::bootstrap::BootstrapError;
use crate::fleet::{self, DesiredVm, Fleet, RESERVED_TAG_PREFIX, Role};
use crate::sizes::{ByteSize, same_size};

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
    #[error(
        "this plan takes {down} of the {existing} existing servers down, which loses etcd quorum ({quorum} needed). Change at most {max} server(s) per apply (use --target NAME)"
    )]
    Quorum {
        down: usize,
        existing: usize,
        quorum: usize,
        max: usize,
    },
}

fn gb(bytes: u64) -> String {
    format!("{}GB", ByteSize(bytes).gib_rounded())
}

fn is_managed_tag(tag: &str) -> bool {
    // Pool and role tags are ours to fix; fleet tags (ours or another
    // fleet's) are never removed.
    tag.starts_with(RESERVED_TAG_PREFIX)
        && !tag.starts_with(&format!("{RESERVED_TAG_PREFIX}fleet-"))
}

fn attr(name: &str, before: Option<String>, after: Option<String>) -> AttrChange {
    AttrChange {
        name: name.into(),
        before,
        after,
    }
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
        attr("k3s args", None, Some(shown.join(" ")))
    })
}

fn create_attrs(fleet: &Fleet, d: &DesiredVm) -> Vec<AttrChange> {
    let mut a = vec![
        attr("image", None, Some(d.image.clone())),
        attr("cpu", None, Some(d.cpu.to_string())),
        attr("memory", None, Some(d.memory.to_string())),
        attr("disk", None, Some(d.disk.to_string())),
        attr("tags", None, Some(d.tags.join(","))),
    ];
    if let Some(s) = d.share {
        a.push(attr("share.port", None, Some(s.port.to_string())));
        a.push(attr("share.public", None, Some(s.public.to_string())));
    }
    a.extend(k3s_args_attr(fleet, d));
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

fn role_of(v: &VmInfo) -> Role {
    if v.tags.iter().any(|t| *t == fleet::role_tag(Role::Server)) {
        Role::Server
    } else {
        Role::Agent
    }
}

fn pool_of(v: &VmInfo) -> String {
    v.tags
        .iter()
        .find_map(|t| {
            t.strip_prefix(&format!("{RESERVED_TAG_PREFIX}pool-"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn delete_change(v: &VmInfo, reason: String) -> Change {
    Change {
        action: Action::Delete,
        vm: v.vm_name.clone(),
        pool: pool_of(v),
        role: role_of(v),
        reasons: vec![reason],
        attributes: vec![
            attr("image", Some(v.image.clone()), None),
            attr("cpu", Some(v.allocated_cpus.to_string()), None),
            attr("memory", Some(gb(v.memory_capacity_bytes)), None),
            attr("disk", Some(gb(v.disk_capacity_bytes)), None),
        ],
        ops: Vec::new(),
    }
}

/// Compares one desired VM with the owned VM of the same name.
fn compare(fleet: &Fleet, d: &DesiredVm, o: &VmInfo, observed: &Observed) -> Option<Change> {
    let script_fp = spec::script_fingerprint(fleet, d);
    let want_fp = spec::with_image(&script_fp, &d.image);
    let mut reasons = Vec::new();
    let mut attributes = Vec::new();
    if !o.image.is_empty() && o.image != d.image {
        reasons.push(format!("image changed ({} → {})", o.image, d.image));
        attributes.push(attr("image", Some(o.image.clone()), Some(d.image.clone())));
    }
    let have_fp = fingerprint_in(&o.comment).unwrap_or("none");
    // With the observed image, would the fingerprint match? Then only the
    // image changed and the script reason would be noise.
    let script_same = have_fp == want_fp
        || (!o.image.is_empty() && spec::with_image(&script_fp, &o.image) == have_fp);
    if have_fp != want_fp && !script_same {
        reasons.push(format!(
            "bootstrap settings changed (spec {have_fp} → {want_fp}): k3s version, args, labels, taints or network"
        ));
        attributes.push(attr("spec", Some(have_fp.into()), Some(want_fp.clone())));
        // What the VM was given is not recorded (only its fingerprint).
        attributes.extend(k3s_args_attr(fleet, d).map(|mut a| {
            a.before = Some("(not recorded)".into());
            a
        }));
    }
    let disk_differs = !same_size(o.disk_capacity_bytes, d.disk.0);
    if disk_differs && d.disk.0 < o.disk_capacity_bytes {
        reasons.push(format!(
            "disk shrinks ({} → {}); exe.dev disks only grow",
            gb(o.disk_capacity_bytes),
            d.disk
        ));
        attributes.push(attr(
            "disk",
            Some(gb(o.disk_capacity_bytes)),
            Some(d.disk.to_string()),
        ));
    }
    if !reasons.is_empty() {
        if o.allocated_cpus != d.cpu {
            attributes.push(attr(
                "cpu",
                Some(o.allocated_cpus.to_string()),
                Some(d.cpu.to_string()),
            ));
        }
        return Some(Change {
            action: Action::Replace,
            vm: d.name.clone(),
            pool: d.pool.clone(),
            role: d.role,
            reasons,
            attributes,
            ops: share_ops(d),
        });
    }

    let mut ops = Vec::new();
    let cpu = (o.allocated_cpus != d.cpu).then_some(d.cpu);
    let memory = (!same_size(o.memory_capacity_bytes, d.memory.0)).then(|| d.memory.to_string());
    let disk = disk_differs.then(|| d.disk.to_string());
    if let Some(c) = cpu {
        attributes.push(attr(
            "cpu",
            Some(o.allocated_cpus.to_string()),
            Some(c.to_string()),
        ));
    }
    if let Some(m) = &memory {
        attributes.push(attr(
            "memory",
            Some(gb(o.memory_capacity_bytes)),
            Some(m.clone()),
        ));
    }
    if let Some(dk) = &disk {
        attributes.push(attr(
            "disk",
            Some(gb(o.disk_capacity_bytes)),
            Some(dk.clone()),
        ));
    }
    if cpu.is_some() || memory.is_some() || disk.is_some() {
        reasons.push("size changed".into());
        ops.push(Op::Resize { cpu, memory, disk });
    }
    // A booting VM cannot answer `share show`: its proxy settings are
    // unknown, not wrong (the plan already warns that it is not running).
    let share_known = observed.shares.contains_key(&d.name) || o.is_running();
    let have: BTreeSet<&String> = o.tags.iter().collect();
    let want: BTreeSet<&String> = d.tags.iter().collect();
    let add: Vec<String> = want.difference(&have).map(|t| t.to_string()).collect();
    // The share tag goes only once the proxy is known to be made private
    // (below): without it no later plan would look at the proxy again.
    let remove: Vec<String> = have
        .difference(&want)
        .filter(|t| is_managed_tag(t))
        .filter(|t| t.as_str() != fleet::SHARE_TAG || share_known)
        .map(|t| t.to_string())
        .collect();
    if !add.is_empty() || !remove.is_empty() {
        reasons.push("tags changed".into());
        attributes.push(attr(
            "tags",
            Some(o.tags.join(",")),
            Some({
                let mut t: Vec<String> = o
                    .tags
                    .iter()
                    .filter(|t| !remove.contains(t))
                    .cloned()
                    .collect();
                t.extend(add.iter().cloned());
                t.sort();
                t.join(",")
            }),
        ));
    }
    // Tags are added before the proxy changes (the share tag must be on a
    // VM before its proxy is made public) and removed after them.
    if !add.is_empty() {
        ops.push(Op::AddTags { tags: add });
    }
    if let Some(want) = d.share.filter(|_| share_known) {
        let have = observed.shares.get(&d.name);
        let have_port = have.map(|s| s.port);
        let have_public = have.map(|s| s.status == Visibility::Public);
        if have_port != Some(want.port) {
            reasons.push("proxy port changed".into());
            attributes.push(attr(
                "share.port",
                have_port.map(|p| p.to_string()),
                Some(want.port.to_string()),
            ));
            ops.push(Op::SharePort { port: want.port });
        }
        if have_public != Some(want.public) {
            reasons.push("proxy visibility changed".into());
            attributes.push(attr(
                "share.public",
                have_public.map(|p| p.to_string()),
                Some(want.public.to_string()),
            ));
            ops.push(Op::ShareVisibility {
                public: want.public,
            });
        }
    }
    // The group no longer declares a share, but the tool managed this VM's
    // proxy: it ends private, as every VM without a share.
    let was_shared = o.tags.iter().any(|t| t == fleet::SHARE_TAG);
    if d.share.is_none() && was_shared && share_known {
        let have_public = observed
            .shares
            .get(&d.name)
            .map(|s| s.status == Visibility::Public);
        if have_public != Some(false) {
            reasons.push("proxy no longer shared: made private".into());
            attributes.push(attr(
                "share.public",
                have_public.map(|p| p.to_string()),
                Some("false".into()),
            ));
            ops.push(Op::ShareVisibility { public: false });
        }
    }
    if !remove.is_empty() {
        ops.push(Op::RemoveTags { tags: remove });
    }
    (!ops.is_empty()).then(|| Change {
        action: Action::Update,
        vm: d.name.clone(),
        pool: d.pool.clone(),
        role: d.role,
        reasons,
        attributes,
        ops,
    })
}

/// Order in which apply carries changes out: servers before agents; within
/// servers creates and replaces in index order before deletions (highest
/// index first), so capacity is added before it is removed.
fn order_key(c: &Change) -> (u8, u8, String, i64, String) {
    let server = c.role == Role::Server;
    let index = crate::names::split_fleet_vm_name(&c.vm).map_or(0, |n| i64::from(n.index));
    let deleting = c.action == Action::Delete;
    (
        if server { 0 } else { 1 },
        u8::from(deleting),
        c.pool.clone(),
        if deleting { -index } else { index },
        c.vm.clone(),
    )
}

/// Computes the plan.
pub fn diff(
    fleet: &Fleet,
    fleet_fingerprint: &str,
    observed: &Observed,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let cluster = fleet.name.clone();
    let desired = fleet::desired_vms(fleet);
    let by_name: BTreeMap<&str, &VmInfo> = observed
        .vms
        .iter()
        .map(|v| (v.vm_name.as_str(), v))
        .collect();
    let scoped: Vec<&VmInfo> = observed.in_scope(fleet).collect();
    let owned: Vec<&VmInfo> = scoped
        .iter()
        .copied()
        .filter(|v| super::owned(&cluster, v))
        .collect();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();

    if opts.destroy {
        if fleet.protect {
            warnings.push(PROTECTED_WARNING.into());
        }
        for v in &owned {
            changes.push(delete_change(
                v,
                "destroy: the fleet is being torn down".into(),
            ));
        }
    } else {
        spec::check_scripts(fleet, &desired)?;
        let mut collisions = Vec::new();
        for d in &desired {
            match by_name.get(d.name.as_str()) {
                None => changes.push(Change {
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
                    attributes: create_attrs(fleet, d),
                    ops: share_ops(d),
                }),
                Some(o) if !super::owned(&cluster, o) => {
                    let lacks = match fleet::ownership(&cluster, &o.vm_name, &o.tags, &o.comment) {
                        fleet::Ownership::Partial { lacks } => lacks.join(" and "),
                        _ => format!("the tag {}", fleet::ownership_tag(&cluster)),
                    };
                    collisions.push(PlanError::Collision {
                        vm: d.name.clone(),
                        fleet: cluster.clone(),
                        lacks,
                    })
                }
                Some(o) => {
                    if !o.is_running() {
                        warnings.push(format!("{} is {:?}, not running", o.vm_name, o.status));
                    }
                    if let Some(c) = compare(fleet, d, o, observed) {
                        changes.push(c);
                    }
                }
            }
        }
        if let Some(first) = collisions.into_iter().next() {
            return Err(first);
        }
        let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
        let pools: BTreeMap<&str, u32> = desired.iter().fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d.pool.as_str()).or_insert(0) += 1;
            m
        });
        for v in owned
            .iter()
            .filter(|v| !wanted.contains(v.vm_name.as_str()))
        {
            let pool = pool_of(v);
            let reason = match pools.get(pool.as_str()) {
                Some(n) => format!("pool {pool:?} shrank to {n}"),
                None if !pool.is_empty() => format!("pool {pool:?} is no longer in the fleet"),
                None => "not in the fleet".into(),
            };
            changes.push(delete_change(v, reason));
        }
    }

    if !opts.targets.is_empty() {
        for t in &opts.targets {
            let known = desired.iter().any(|d| d.name == *t || d.pool == *t)
                || owned.iter().any(|v| v.vm_name == *t || pool_of(v) == *t);
            if !known {
                return Err(PlanError::UnknownTarget(t.clone()));
            }
        }
        changes.retain(|c| opts.targets.iter().any(|t| *t == c.vm || *t == c.pool));
    }

    changes.sort_by_key(order_key);

    // Servers taken down by this plan: deleted, replaced, or restarted by a
    // resize.
    let existing_servers = owned.iter().filter(|v| role_of(v) == Role::Server).count();
    let server_down = |c: &Change| {
        c.role == Role::Server
            && (matches!(c.action, Action::Delete | Action::Replace)
                || c.ops.iter().any(|o| matches!(o, Op::Resize { .. })))
    };
    let servers_down = changes.iter().filter(|c| server_down(c)).count();
    let replacing_the_only_server = existing_servers == 1
        && changes
            .iter()
            .any(|c| c.role == Role::Server && c.action == Action::Replace);
    if !opts.destroy && replacing_the_only_server {
        warnings.push(format!(
            "{} replaces the only server: the cluster's etcd data is lost; take an etcd snapshot first",
            changes
                .iter()
                .find(|c| c.role == Role::Server && c.action == Action::Replace)
                .map(|c| c.vm.as_str())
                .unwrap_or("this plan")
        ));
    }
    // With members removed and each server waited for, changes roll one at
    // a time; without, at most `existing - quorum` servers may go down.
    if !opts.destroy && !opts.members_removed && existing_servers > 1 && servers_down > 0 {
        let quorum = existing_servers / 2 + 1;
        let max = existing_servers - quorum;
        if servers_down > max {
            return Err(PlanError::Quorum {
                down: servers_down,
                existing: existing_servers,
                quorum,
                max,
            });
        }
    }

    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Delete => summary.delete += 1,
        }
    }
    // VMs in scope the fleet does not own: reported, never touched.
    let desired_names: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    for v in scoped
        .iter()
        .filter(|v| !desired_names.contains(v.vm_name.as_str()))
    {
        match fleet::ownership(&cluster, &v.vm_name, &v.tags, &v.comment) {
            fleet::Ownership::Owned => {}
            fleet::Ownership::Partial { lacks } => warnings.push(format!(
                "{} carries fleet {cluster:?}'s ownership tag but lacks {}: left alone (exedev-k8s changes or removes only VMs it can prove it created; remove the tag, or the VM, yourself)",
                v.vm_name,
                lacks.join(" and ")
            )),
            fleet::Ownership::NotOwned => warnings.push(format!(
                "{} looks like this fleet's but is not owned by it: left alone",
                v.vm_name
            )),
        }
    }
    Ok(Plan {
        format_version: FORMAT_VERSION,
        fleet: cluster.clone(),
        mode: if opts.destroy {
            super::Mode::Destroy
        } else {
            super::Mode::Apply
        },
        changes,
        summary,
        warnings,
        fleet_file: String::new(),
        targets: opts.targets.clone(),
        fleet_fingerprint: fleet_fingerprint.to_string(),
        observed_fingerprint: observed.fingerprint(fleet),
    })
}
