//! Desired against observed: the heart of `plan`.
//!
//! What needs a new VM (image, role, tailnet: [`spec::spec_fingerprint`];
//! a disk that shrinks) is a replacement: servers in place, one at a time;
//! agents create-before-destroy under a new index ([`super::placement`]).
//! Everything else changes in place, attribute by attribute
//! ([`super::attributes`]): sizes (a VM restart), tags, the proxy, the k3s
//! release (an upgrade), k3s arguments (a k3s restart), labels and taints
//! (the API). What k3s refuses (a downgrade, a skipped minor, a kubelet
//! newer than the servers) and what would lose etcd quorum make the plan
//! refused: it is still returned, with [`Plan::refusals`].

use std::collections::{BTreeMap, BTreeSet};

use super::attributes::{self, Target, attr};
use super::placement;
use super::spec::{self, SpecComment};
use super::{
    Action, AttrChange, Change, FORMAT_VERSION, Observed, Op, Plan, PlanRelease, Restart, Summary,
};
use crate::api::types::{Visibility, VmInfo};
use crate::bootstrap::BootstrapError;
use crate::fleet::{self, DesiredVm, Fleet, K3sRelease, RESERVED_TAG_PREFIX, Role};
use crate::release::{self, Release};
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

fn gb(bytes: u64) -> String {
    format!("{}GB", ByteSize(bytes).gib_rounded())
}

fn is_managed_tag(tag: &str) -> bool {
    // Pool and role tags are ours to fix; fleet tags (ours or another
    // fleet's) are never removed.
    tag.starts_with(RESERVED_TAG_PREFIX)
        && !tag.starts_with(&format!("{RESERVED_TAG_PREFIX}fleet-"))
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

fn create_attrs(fleet: &Fleet, d: &DesiredVm, release: &Release) -> Vec<AttrChange> {
    let mut a = vec![
        attr("k3s.version", None, Some(release.to_string())),
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
    // What the node gets from k3s and the API: the same names an update
    // shows (`labels.<key>`, `taints`, `k3s.disable`), so a reviewer sees
    // them before the node exists, not only when they later drift.
    for (k, v) in &d.labels {
        a.push(attr(&format!("labels.{k}"), None, Some(v.clone())));
    }
    if !d.taints.is_empty() {
        let taints: Vec<String> = d.taints.iter().map(ToString::to_string).collect();
        a.push(attr("taints", None, Some(taints.join(","))));
    }
    let (_, disable) = spec::k3s_settings(fleet, d.role);
    if !disable.is_empty() {
        a.push(attr("k3s.disable", None, Some(disable.join(" "))));
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
        restart: None,
        replaced_by: None,
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
        attributes.push(attr("image", Some(o.image.clone()), Some(d.image.clone())));
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
            attributes.push(attr("spec", Some(c.fingerprint), Some(want)));
        }
    }
    if !same_size(o.disk_capacity_bytes, d.disk.0) && d.disk.0 < o.disk_capacity_bytes {
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
    (reasons, attributes)
}

/// What the plan reads about the cluster for one comparison.
struct Seen<'a> {
    observed: &'a Observed,
    target: &'a Target,
    refusals: &'a mut Vec<String>,
    warnings: &'a mut Vec<String>,
}

/// Compares one desired VM with the owned VM of the same name.
fn compare(fleet: &Fleet, d: &DesiredVm, o: &VmInfo, seen: &mut Seen<'_>) -> Option<Change> {
    let observed = seen.observed;
    let (reasons, mut attributes) = replace_reasons(fleet, d, o);
    if !reasons.is_empty() {
        if o.allocated_cpus != d.cpu {
            attributes.push(attr(
                "cpu",
                Some(o.allocated_cpus.to_string()),
                Some(d.cpu.to_string()),
            ));
        }
        // The new VM installs the plan's release: shown when it is not the
        // one the old VM runs.
        let have = attributes::observed_release(o, node_of(observed, &d.name));
        let want = seen.target.release.to_string();
        if have.as_deref() != Some(want.as_str()) {
            attributes.push(attr("k3s.version", have, Some(want)));
        }
        return Some(Change {
            action: Action::Replace,
            vm: d.name.clone(),
            pool: d.pool.clone(),
            role: d.role,
            reasons,
            attributes,
            ops: share_ops(d),
            restart: None,
            replaced_by: None,
        });
    }
    let mut reasons = Vec::new();

    let mut ops = Vec::new();
    let cpu = (o.allocated_cpus != d.cpu).then_some(d.cpu);
    let memory = (!same_size(o.memory_capacity_bytes, d.memory.0)).then(|| d.memory.to_string());
    let disk = (!same_size(o.disk_capacity_bytes, d.disk.0)).then(|| d.disk.to_string());
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
        reasons.push("size changed: exe.dev restarts the VM".into());
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
    let k3s = attributes::in_place(
        fleet,
        d,
        o,
        node_of(observed, &d.name),
        observed.nodes.is_some(),
        seen.target,
    );
    seen.refusals.extend(k3s.refusal);
    seen.warnings.extend(k3s.warnings);
    reasons.extend(k3s.reasons);
    attributes.extend(k3s.attributes);
    ops.extend(k3s.ops);
    let upgrade = ops.iter().any(|o| matches!(o, Op::Upgrade { .. }));
    let restart = if ops.iter().any(|o| matches!(o, Op::Resize { .. })) {
        Some(Restart::Vm)
    } else if ops.iter().any(Op::changes_k3s) {
        Some(Restart::K3s)
    } else {
        None
    };
    (!ops.is_empty() || !attributes.is_empty()).then(|| Change {
        action: if upgrade || attributes.iter().any(|a| a.name == "k3s.version") {
            Action::Upgrade
        } else {
            Action::Update
        },
        vm: d.name.clone(),
        pool: d.pool.clone(),
        role: d.role,
        reasons,
        attributes,
        ops,
        restart,
        replaced_by: None,
    })
}

fn node_of<'a>(observed: &'a Observed, name: &str) -> Option<&'a super::NodeFacts> {
    observed.nodes.as_ref().and_then(|n| n.get(name))
}

/// Order in which apply carries changes out: servers before agents (facts
/// "Kubeconfig, manifests, removal, upgrade": servers first); within
/// servers creates and replaces in index order, then in-place changes from
/// the highest index down (the first server, which the tool reaches the API
/// through by default, restarts last), then deletions (highest index
/// first), so capacity is added before it is removed; agents by pool, in
/// index order, deletions last.
fn order_key(c: &Change) -> (u8, u8, String, i64, String) {
    let server = c.role == Role::Server;
    let index = crate::names::split_fleet_vm_name(&c.vm).map_or(0, |n| i64::from(n.index));
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

/// The release of this plan, and what a reviewer should know about it.
fn target_release(
    fleet: &Fleet,
    opts: &PlanOptions,
    node_releases: &[(String, Option<String>)],
    warnings: &mut Vec<String>,
) -> Result<Target, PlanError> {
    let choice = match (&opts.release, &fleet.k3s.release) {
        (Some(c), _) => c.clone(),
        (None, K3sRelease::Version(release)) => ReleaseChoice::Pinned {
            release: release.clone(),
        },
        (None, K3sRelease::Channel(name)) => ReleaseChoice::Channel {
            name: name.clone(),
            resolved: Err("it was not looked up".to_string()),
        },
    };
    match choice {
        ReleaseChoice::Pinned { release } => Ok(Target {
            release,
            channel: None,
        }),
        ReleaseChoice::Channel {
            name,
            resolved: Ok(release),
        } => Ok(Target {
            release,
            channel: Some(name),
        }),
        ReleaseChoice::Channel {
            name,
            resolved: Err(why),
        } => {
            // The fleet's release is what its nodes run, if they agree.
            let known: BTreeSet<&str> = node_releases
                .iter()
                .filter_map(|(_, v)| v.as_deref())
                .collect();
            match (
                known.len(),
                known.iter().next().and_then(|v| Release::parse(v)),
            ) {
                (1, Some(release)) => {
                    warnings.push(format!(
                        "could not look up k3s channel {name} ({why}): keeping the fleet's release {release}; new nodes install it too"
                    ));
                    Ok(Target {
                        release,
                        channel: Some(name),
                    })
                }
                (0, _) => Err(PlanError::Release(format!(
                    "could not look up k3s channel {name} ({why}), and no node of the fleet records a release to keep: make the channel server reachable (--channel-server or EXEDEV_K8S_CHANNEL_SERVER), or pin k3s.version"
                ))),
                _ => Err(PlanError::Release(format!(
                    "could not look up k3s channel {name} ({why}), and the fleet's nodes run different releases ({}): pin k3s.version to the one to converge on",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

/// Kubelets must never be newer than the API servers (facts "Versions").
/// After this plan (narrowed by `--target`, servers may stay behind),
/// every agent's minor must be at most the oldest server's.
fn skew_refusals(
    changes: &[Change],
    owned: &[&VmInfo],
    observed: &Observed,
    target: &Release,
) -> Vec<String> {
    let after = |name: &str, v: &VmInfo| -> Option<Release> {
        match changes.iter().find(|c| c.vm == name) {
            Some(c) if c.action == Action::Delete => None,
            Some(c)
                if matches!(c.action, Action::Replace | Action::Create)
                    || c.ops.iter().any(|o| matches!(o, Op::Upgrade { .. })) =>
            {
                Some(target.clone())
            }
            _ => attributes::observed_release(v, node_of(observed, name))
                .and_then(|r| Release::parse(&r)),
        }
    };
    let mut servers: Vec<(String, Release)> = owned
        .iter()
        .filter(|v| role_of(v) == Role::Server)
        .filter_map(|v| after(&v.vm_name, v).map(|r| (v.vm_name.clone(), r)))
        .collect();
    servers.extend(
        changes
            .iter()
            .filter(|c| c.role == Role::Server && c.action == Action::Create)
            .map(|c| (c.vm.clone(), target.clone())),
    );
    let Some((oldest_name, oldest)) = servers.into_iter().min_by(|a, b| a.1.cmp(&b.1)) else {
        return Vec::new();
    };
    let mut agents: Vec<(String, Release)> = owned
        .iter()
        .filter(|v| role_of(v) == Role::Agent)
        .filter_map(|v| after(&v.vm_name, v).map(|r| (v.vm_name.clone(), r)))
        .collect();
    agents.extend(
        changes
            .iter()
            .filter(|c| c.role == Role::Agent)
            .filter_map(|c| match (&c.action, &c.replaced_by) {
                (Action::Create, _) => Some(c.vm.clone()),
                (Action::Replace, Some(new)) => Some(new.clone()),
                _ => None,
            })
            .map(|n| (n, target.clone())),
    );
    agents
        .into_iter()
        .filter(|(_, r)| !release::kubelet_allowed(r, &oldest))
        .map(|(name, r)| {
            format!(
                "{name} would run k3s {r} while server {oldest_name} runs {oldest}: a kubelet may be older than the API servers, never newer. Upgrade the servers first: drop --target, or add --target {}",
                fleet::CONTROL_PLANE_POOL
            )
        })
        .collect()
}

/// Computes the plan.
pub fn diff(
    fleet: &Fleet,
    fleet_fingerprint: &str,
    observed: &Observed,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let cluster = fleet.name.clone();
    let scoped: Vec<&VmInfo> = observed.in_scope(fleet).collect();
    let owned: Vec<&VmInfo> = scoped
        .iter()
        .copied()
        .filter(|v| super::owned(&cluster, v))
        .collect();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    let mut refusals = Vec::new();
    let mut release = None;
    let desired: Vec<DesiredVm>;

    if opts.destroy {
        desired = Vec::new();
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
        let node_releases: Vec<(String, Option<String>)> = owned
            .iter()
            .map(|v| {
                (
                    v.vm_name.clone(),
                    attributes::observed_release(v, node_of(observed, &v.vm_name)),
                )
            })
            .collect();
        let target = target_release(fleet, opts, &node_releases, &mut warnings)?;
        release = Some(PlanRelease {
            version: target.release.to_string(),
            channel: target.channel.clone(),
        });
        let version = target.release.to_string();
        desired = placement::place(fleet, &owned, |d, v| {
            !replace_reasons(fleet, d, v).0.is_empty()
        });
        spec::check_scripts(fleet, &desired, &version)?;
        let by_name: BTreeMap<&str, &VmInfo> = observed
            .vms
            .iter()
            .map(|v| (v.vm_name.as_str(), v))
            .collect();
        // Indices a pool holds or will hold: a replacement takes the
        // lowest index in none of them.
        let mut taken: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for name in owned
            .iter()
            .map(|v| v.vm_name.as_str())
            .chain(desired.iter().map(|d| d.name.as_str()))
            .chain(scoped.iter().map(|v| v.vm_name.as_str()))
        {
            if let Some((pool, i)) = crate::names::parse_fleet_vm_name(&cluster, name) {
                taken.entry(pool.to_string()).or_default().insert(i);
            }
        }
        let mut collisions = Vec::new();
        let mut seen = Seen {
            observed,
            target: &target,
            refusals: &mut refusals,
            warnings: &mut warnings,
        };
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
                    attributes: create_attrs(fleet, d, &target.release),
                    ops: share_ops(d),
                    restart: None,
                    replaced_by: None,
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
                        seen.warnings
                            .push(format!("{} is {:?}, not running", o.vm_name, o.status));
                    }
                    if let Some(mut c) = compare(fleet, d, o, &mut seen) {
                        // Agents are replaced create-before-destroy under
                        // the pool's lowest free index.
                        if c.action == Action::Replace && d.role == Role::Agent {
                            let held = taken.entry(d.pool.clone()).or_default();
                            let i = placement::lowest_free(held);
                            held.insert(i);
                            let new = crate::names::fleet_vm_name(&cluster, &d.pool, i);
                            c.reasons.push(format!(
                                "create before destroy: {new} is created and Ready before {} is drained and removed",
                                d.name
                            ));
                            c.replaced_by = Some(new);
                        }
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
            let in_fleet =
                fleet.pools.iter().any(|p| p.pool == pool) || pool == fleet::CONTROL_PLANE_POOL;
            let reason = match pools.get(pool.as_str()) {
                Some(n) => format!("pool {pool:?} shrank to {n}"),
                None if in_fleet => format!("pool {pool:?} shrank to 0"),
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

    if let (Some(r), false) = (&release, opts.destroy)
        && let Some(target) = Release::parse(&r.version)
    {
        refusals.extend(skew_refusals(&changes, &owned, observed, &target));
    }

    // Servers taken down by this plan: deleted, replaced, or restarted.
    let existing_servers = owned.iter().filter(|v| role_of(v) == Role::Server).count();
    let server_down = |c: &Change| c.role == Role::Server && c.disrupts();
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
            refusals.push(format!(
                "this plan takes {servers_down} of the {existing_servers} existing servers down without the Kubernetes API to roll them one at a time, which can lose etcd quorum ({quorum} needed). Make the API reachable (exedev-k8s kubeconfig, or --kubeconfig), or change at most {max} server(s) per apply (--target NAME)"
            ));
        }
    }
    refusals.dedup();
    // One refusal per node says the same thing many times over.
    const SHOWN_REFUSALS: usize = 5;
    if refusals.len() > SHOWN_REFUSALS {
        let more = refusals.len() - SHOWN_REFUSALS;
        refusals.truncate(SHOWN_REFUSALS);
        refusals.push(format!("... and {more} more like these"));
    }

    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Upgrade => summary.upgrade += 1,
            Action::Replace => summary.replace += 1,
            Action::Delete => summary.delete += 1,
        }
    }
    if !opts.destroy && observed.nodes.is_none() && !owned.is_empty() {
        warnings.push(
            "the Kubernetes API is not reachable: node labels and taints are compared with what the VMs' comments record (a change made in the cluster, e.g. with kubectl, is not seen), and k3s releases are read from the VMs' comments".to_string(),
        );
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
            warnings.push(format!(
                "{first}{more} do not record their labels and taints yet (made by an earlier exedev-k8s): a change to them is not seen without the Kubernetes API; a plan and apply with the API reachable records them"
            ));
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
        fleet_file_base: super::FleetFileBase::PlanFile,
        nodes_observed: observed.nodes.is_some(),
        targets: opts.targets.clone(),
        fleet_fingerprint: fleet_fingerprint.to_string(),
        observed_fingerprint: observed.fingerprint(fleet),
        release,
        refusals,
        repository: None,
    })
}
