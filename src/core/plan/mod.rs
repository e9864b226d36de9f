//! The plan: desired state (from the fleet) against observed state (from
//! `ls` and `share show`), as an ordered list of changes with reasons.
//!
//! Pure: [`diff`] takes values and returns values. Rendering (human,
//! markdown, JSON) is in [`render`]; the saved plan file in [`file`].

pub mod attributes;
mod diff;
pub mod file;
pub mod placement;
pub mod render;
pub mod spec;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::api::types::{ShareInfo, VmInfo};
use crate::core::fleet::{Fleet, Role};

pub use diff::{
    PROTECTED_WARNING, PlanError, PlanOptions, ReleaseChoice, diff, unchecked_server_joins,
};

/// Version of the JSON plan schema; bumped on any incompatible change.
/// 2: a saved plan's `fleet_file` is relative to the plan file's directory.
/// 3: the `upgrade` action, `restart`, `replaced_by`, the in-place ops
/// (`upgrade`, `reconfigure`, `node_labels`, `comment`), the plan's
/// `release` and `refusals`.
/// 4: `fleet_file` is relative to the repository root when the fleet is in
/// a git repository (`fleet_file_base`), and `nodes_observed` says whether
/// the plan saw the cluster's Nodes. (Added within 4, optional: a lost
/// server's replacement carries `lost`; a plan without it reads as none.)
pub const FORMAT_VERSION: u32 = 4;

/// What a saved plan's `fleet_file` is relative to.
///
/// A plan made in a git repository records the fleet's path from the
/// repository root: CI downloads a reviewed plan wherever it likes
/// (`reviewed/plan.json` in the example workflow) into a fresh checkout,
/// and the fleet is where the repository keeps it, not beside the
/// download. Outside a repository there is no such anchor, and the path
/// is relative to the plan file's directory (so `apply dir/p.plan` works
/// from any working directory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetFileBase {
    /// The plan file's directory; also plans made in memory (not saved).
    #[default]
    PlanFile,
    /// The root of the git repository holding the fleet.
    Repository,
}

/// What happens to one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    /// In place: size, tags, proxy, node labels, k3s arguments, comment.
    Update,
    /// In place, with a new k3s release (and whatever else changes).
    Upgrade,
    Replace,
    Delete,
}

impl Action {
    /// The word, as in plan JSON: `create`, `update`, `upgrade`,
    /// `replace`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Upgrade => "upgrade",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }

    /// Terraform-style marker.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update | Action::Upgrade => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// What an in-place change restarts: the node is cordoned and drained
/// first, and counts against its pool's `maxUnavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// k3s restarts (new release or arguments); the VM keeps running.
    K3s,
    /// The VM restarts (a resize).
    Vm,
}

/// One in-place operation of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Resize {
        cpu: Option<u32>,
        memory: Option<String>,
        disk: Option<String>,
    },
    AddTags {
        tags: Vec<String>,
    },
    RemoveTags {
        tags: Vec<String>,
    },
    SharePort {
        port: u16,
    },
    ShareVisibility {
        public: bool,
    },
    /// A new k3s release, installed over SSH (the installer re-run with
    /// `INSTALL_K3S_VERSION`), then k3s restarted.
    Upgrade {
        from: String,
        to: String,
    },
    /// New k3s arguments or `disable` (fingerprints, [`spec::config_fingerprint`]),
    /// written over SSH, then k3s restarted. `before` is `None` when the
    /// VM's comment recorded none.
    Reconfigure {
        before: Option<String>,
        after: String,
    },
    /// The fleet's node labels and taints, set through the API (no
    /// restart).
    NodeLabels,
    /// The VM's comment rewritten to record its spec, release and settings
    /// ([`spec::SpecComment`]).
    Comment {
        comment: String,
    },
}

impl Op {
    /// Whether the op changes k3s on the node (one script run over SSH).
    pub fn changes_k3s(&self) -> bool {
        matches!(self, Op::Upgrade { .. } | Op::Reconfigure { .. })
    }
}

/// One attribute's before → after, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    /// Serialised as the name's string (`k3s.version`, `labels.tier`).
    pub name: attributes::AttrName,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One VM's change. Its JSON is [`ChangeJson`]'s: a replacement's order
/// is read from it once, into [`Replacement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ChangeJson", into = "ChangeJson")]
pub struct Change {
    pub action: Action,
    pub vm: String,
    pub pool: String,
    pub role: Role,
    pub reasons: Vec<String>,
    pub attributes: Vec<AttrChange>,
    /// In-place operations (updates, and share settings after a create).
    pub ops: Vec<Op>,
    /// What an in-place change restarts (absent: nothing).
    pub restart: Option<Restart>,
    /// The order of a replacement's two halves: set for every
    /// [`Action::Replace`], by the diff or when a plan file is read.
    pub replacement: Option<Replacement>,
    /// A lost server replaced (action `replace`): its Node is deleted
    /// first, without a drain, and apply waits until it is gone (k3s
    /// removes the etcd member before the Node goes), then its VM, if any,
    /// is deleted and a new one created under the same name.
    pub lost: Option<Lost>,
}

/// The order of a replacement's two halves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    /// An agent: its successor (a new name, the pool's lowest free index)
    /// is created and Ready before the old node is drained and its VM
    /// removed.
    CreateBeforeDestroy { successor: String },
    /// The VM keeps its name (servers do): the old VM goes first, then the
    /// new one is created under the same name.
    DestroyBeforeCreate,
}

/// How long a server's Node may go without a `Ready=True` condition
/// before a plan calls the server lost: 300 s, the time Kubernetes itself
/// gives a NotReady or unreachable node before evicting its pods (the
/// `DefaultTolerationSeconds` admission plugin's default
/// `tolerationSeconds: 300` for `node.kubernetes.io/not-ready` and
/// `node.kubernetes.io/unreachable`). A restart, an upgrade or a reboot
/// is over well within it; a fixed default, not a setting, so every plan
/// of a fleet judges alike.
pub const LOST_AFTER_SECS: u64 = 300;

/// Why a server counts as lost (its etcd member is dead and stays until
/// its Node is deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Lost {
    /// Its VM is gone from exe.dev while its Node (and so its etcd member,
    /// which k3s removes only with the Node) remains.
    VmGone,
    /// Its VM exists, but its Node has not been Ready for `secs` seconds,
    /// at least [`LOST_AFTER_SECS`].
    NotReady { secs: u64 },
}

impl Change {
    /// Whether carrying it out takes the node out of service for a while
    /// (drained, restarted, replaced or removed): such changes count
    /// against the pool's `maxUnavailable`.
    pub fn disrupts(&self) -> bool {
        matches!(self.action, Action::Replace | Action::Delete) || self.restart.is_some()
    }

    /// The new VM of a create-before-destroy replacement.
    pub fn successor(&self) -> Option<&str> {
        match &self.replacement {
            Some(Replacement::CreateBeforeDestroy { successor }) => Some(successor),
            _ => None,
        }
    }
}

/// A [`Change`] as the plan JSON writes it (format 3): a create-before-
/// destroy replacement names its successor in `replaced_by`; a replacement
/// without one is destroy-before-create.
#[derive(Serialize, Deserialize)]
struct ChangeJson {
    action: Action,
    vm: String,
    pool: String,
    role: Role,
    reasons: Vec<String>,
    attributes: Vec<AttrChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ops: Vec<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart: Option<Restart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaced_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lost: Option<Lost>,
}

impl From<ChangeJson> for Change {
    fn from(j: ChangeJson) -> Change {
        let replacement = match (j.replaced_by, j.action) {
            (Some(successor), _) => Some(Replacement::CreateBeforeDestroy { successor }),
            (None, Action::Replace) => Some(Replacement::DestroyBeforeCreate),
            (None, _) => None,
        };
        Change {
            action: j.action,
            vm: j.vm,
            pool: j.pool,
            role: j.role,
            reasons: j.reasons,
            attributes: j.attributes,
            ops: j.ops,
            restart: j.restart,
            replacement,
            lost: j.lost,
        }
    }
}

impl From<Change> for ChangeJson {
    fn from(c: Change) -> ChangeJson {
        let replaced_by = c.successor().map(str::to_string);
        ChangeJson {
            action: c.action,
            vm: c.vm,
            pool: c.pool,
            role: c.role,
            reasons: c.reasons,
            attributes: c.attributes,
            ops: c.ops,
            restart: c.restart,
            replaced_by,
            lost: c.lost,
        }
    }
}

/// Counts per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: u32,
    pub update: u32,
    #[serde(default)]
    pub upgrade: u32,
    pub replace: u32,
    pub delete: u32,
}

impl Summary {
    pub fn total(&self) -> u32 {
        self.create + self.update + self.upgrade + self.replace + self.delete
    }
}

/// The k3s release a plan installs on new nodes and upgrades nodes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRelease {
    /// e.g. `v1.31.6+k3s1`.
    pub version: String,
    /// The channel it was looked up from, when the fleet follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// What a plan is for: converging on the fleet, or tearing it down.
/// Serialized as `apply` / `destroy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Apply,
    Destroy,
}

impl Mode {
    /// The word used in plan JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::Destroy => "destroy",
        }
    }
}

/// A reviewed, saveable plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub fleet: String,
    pub mode: Mode,
    /// In the order apply carries them out.
    pub changes: Vec<Change>,
    pub summary: Summary,
    /// Things a reviewer should know that are not changes.
    pub warnings: Vec<String>,
    /// The fleet file the plan was made from: as given in memory; in a
    /// saved plan, relative to [`Self::fleet_file_base`].
    #[serde(default)]
    pub fleet_file: String,
    /// What a saved `fleet_file` is relative to.
    #[serde(default)]
    pub fleet_file_base: FleetFileBase,
    /// Whether the plan read the cluster's Nodes (the Kubernetes API
    /// answered). Apply compares a saved plan with a fresh one made with
    /// the same knowledge: a pull-request plan made without the API is
    /// not stale merely because apply can reach it.
    #[serde(default)]
    pub nodes_observed: bool,
    /// `--target` values the plan was narrowed by.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Fingerprint of the fleet file the plan was made from.
    pub fleet_fingerprint: String,
    /// Fingerprint of the observed state the plan was made against.
    pub observed_fingerprint: String,
    /// The release this plan installs and upgrades to (absent for a
    /// destroy). Apply of a saved plan uses it as it is: a channel that
    /// moved since is not looked up again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<PlanRelease>,
    /// Why the plan must not be carried out (etcd quorum, a downgrade, a
    /// skipped minor, version skew), each with what to do instead. A
    /// refused plan is still shown in full.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<String>,
    /// The CI repository the plan was saved in (`GITHUB_REPOSITORY`, e.g.
    /// `acme/fleet`), when it was saved in one: apply in another
    /// repository refuses it by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Whether the plan was refused ([`Self::refusals`]).
    pub fn is_refused(&self) -> bool {
        !self.refusals.is_empty()
    }

    /// Whether carrying it out needs the cluster's secrets: new VMs carry
    /// them in their setup scripts; in-place k3s changes write the secret
    /// flags' values.
    pub fn needs_secrets(&self) -> bool {
        self.creates_vms()
            || self
                .changes
                .iter()
                .any(|c| c.ops.iter().any(Op::changes_k3s))
    }

    /// Whether carrying it out starts VMs (creates or replaces): the only
    /// changes that need the cluster's secrets.
    pub fn creates_vms(&self) -> bool {
        self.mode == Mode::Apply
            && self
                .changes
                .iter()
                .any(|c| matches!(c.action, Action::Create | Action::Replace))
    }

    /// The server the tool should reach the Kubernetes API through while
    /// carrying this plan out: the lowest-named of `running_servers` that
    /// the plan does not delete, replace or restart, so a rolling server
    /// change never pulls the API from under the tool. None when every
    /// server changes (a single-server cluster, an upgrade of every server:
    /// then the server the tool uses restarts last, and the tool waits for
    /// it).
    pub fn api_server(&self, running_servers: &[String]) -> Option<String> {
        let changing: Vec<&str> = self
            .changes
            .iter()
            .filter(|c| c.role == Role::Server)
            .filter(|c| c.disrupts())
            .map(|c| c.vm.as_str())
            .collect();
        running_servers
            .iter()
            .filter(|s| !changing.contains(&s.as_str()))
            .min()
            .cloned()
    }
}

/// What exe.dev reports: every VM from `ls`, and `share show` for those the
/// fleet manages the proxy of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub vms: Vec<VmInfo>,
    pub shares: BTreeMap<String, ShareInfo>,
    /// The cluster's Nodes by name, when the Kubernetes API was reachable
    /// (`None`: not reachable; versions then come from VM comments, and
    /// labels and taints cannot be compared).
    pub nodes: Option<BTreeMap<String, NodeFacts>>,
}

/// What a plan reads from one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// `status.nodeInfo.kubeletVersion`, e.g. `v1.31.4+k3s1`.
    pub version: Option<String>,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// Every taint, `key[=value]:Effect`.
    pub taints: Vec<String>,
    /// For how many seconds its `Ready` condition has not been `True`
    /// (from the condition's `lastTransitionTime`, read by the engine
    /// against its clock); `None`: Ready, or not known.
    pub not_ready_secs: Option<u64>,
}

impl NodeFacts {
    /// Whether k3s runs etcd on it: k3s labels every etcd server's Node
    /// `node-role.kubernetes.io/etcd=true` (k3s `pkg/util/labels.go:5`,
    /// set by its etcd metadata controller, `pkg/etcd/metadata_controller.go:127-133`
    /// @1feb5ae).
    pub fn is_etcd(&self) -> bool {
        self.labels
            .get("node-role.kubernetes.io/etcd")
            .is_some_and(|v| v == "true")
    }
}

impl Observed {
    /// The VMs a plan of `fleet` looks at at all: those the fleet owns or
    /// could own ([`crate::core::fleet::concerns`]) and any holding one of its
    /// desired names (a collision to report). Another fleet's VMs
    /// (`prod-eu-cp1` for `prod`), and VMs carrying another fleet's
    /// ownership tag, are not among them.
    pub fn in_scope<'a>(&'a self, fleet: &'a Fleet) -> impl Iterator<Item = &'a VmInfo> + 'a {
        self.vms.iter().filter(move |v| {
            crate::core::fleet::is_desired_name(fleet, &v.vm_name)
                || crate::core::fleet::concerns(&fleet.name, &v.vm_name, &v.tags)
        })
    }

    /// Stable fingerprint of the VMs a plan depends on: names, images,
    /// comments, tags and sizes of the VMs [`Self::in_scope`]. Not `status`,
    /// which changes as VMs boot, nor proxy settings, which `share show`
    /// cannot read while a VM boots and which apply sets idempotently
    /// anyway, nor any other fleet's VMs.
    pub fn fingerprint(&self, fleet: &Fleet) -> String {
        let mut lines: Vec<String> = self
            .in_scope(fleet)
            .map(|v| {
                let mut tags = v.tags.clone();
                tags.sort();
                format!(
                    "{}|{}|{}|{}|{}|{}|{}",
                    v.vm_name,
                    v.image,
                    v.comment,
                    tags.join(","),
                    v.allocated_cpus,
                    v.memory_capacity_bytes,
                    v.disk_capacity_bytes,
                )
            })
            .collect();
        lines.sort();
        // The hash of the lines joined by "\n", fed line by line: the same
        // value without a second copy of every line.
        let mut h = Sha256::new();
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                h.update(b"\n");
            }
            h.update(l.as_bytes());
        }
        h.finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Whether fleet `cluster` owns `v` (tag, generated name and spec comment:
/// [`crate::core::fleet::ownership`]): the only VMs it may change or remove.
pub fn owned(cluster: &str, v: &VmInfo) -> bool {
    crate::core::fleet::owns(cluster, &v.vm_name, &v.tags, &v.comment)
}

/// First 12 hex digits of SHA-256.
pub fn hex12(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
