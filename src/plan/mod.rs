//! The plan: desired state (from the fleet) against observed state (from
//! `ls` and `share show`), as an ordered list of changes with reasons.
//!
//! Pure: [`diff`] takes values and returns values. Rendering (human,
//! markdown, JSON) is in [`render`]; the saved plan file in [`file`].

mod diff;
pub mod file;
pub mod render;
pub mod spec;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::types::{ShareInfo, VmInfo};
use crate::fleet::{Fleet, Role};

pub use diff::{PROTECTED_WARNING, PlanError, PlanOptions, diff};

/// Version of the JSON plan schema; bumped on any incompatible change.
/// 2: a saved plan's `fleet_file` is relative to the plan file's directory.
pub const FORMAT_VERSION: u32 = 2;

/// What happens to one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    /// The word, as in plan JSON: `create`, `update`, `replace`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }

    /// Terraform-style marker.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
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
}

/// One attribute's before → after, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    pub name: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One VM's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    pub vm: String,
    pub pool: String,
    pub role: Role,
    pub reasons: Vec<String>,
    pub attributes: Vec<AttrChange>,
    /// In-place operations (updates, and share settings after a create).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<Op>,
}

/// Counts per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: u32,
    pub update: u32,
    pub replace: u32,
    pub delete: u32,
}

impl Summary {
    pub fn total(&self) -> u32 {
        self.create + self.update + self.replace + self.delete
    }
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
    /// The fleet file the plan was made from, as given.
    #[serde(default)]
    pub fleet_file: String,
    /// `--target` values the plan was narrowed by.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Fingerprint of the fleet file the plan was made from.
    pub fleet_fingerprint: String,
    /// Fingerprint of the observed state the plan was made against.
    pub observed_fingerprint: String,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
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
    /// the plan does not delete, replace or resize, so a rolling server
    /// change never pulls the API from under the tool. None when every
    /// server changes (a single-server cluster).
    pub fn api_server(&self, running_servers: &[String]) -> Option<String> {
        let changing: Vec<&str> = self
            .changes
            .iter()
            .filter(|c| c.role == Role::Server)
            .filter(|c| {
                matches!(c.action, Action::Delete | Action::Replace)
                    || c.ops.iter().any(|o| matches!(o, Op::Resize { .. }))
            })
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
}

impl Observed {
    /// The VMs a plan of `fleet` looks at at all: those the fleet owns or
    /// could own ([`crate::fleet::concerns`]) and any holding one of its
    /// desired names (a collision to report). Another fleet's VMs
    /// (`prod-eu-cp1` for `prod`), and VMs carrying another fleet's
    /// ownership tag, are not among them.
    pub fn in_scope<'a>(&'a self, fleet: &Fleet) -> impl Iterator<Item = &'a VmInfo> + 'a {
        let cluster = fleet.name.clone();
        let desired: std::collections::BTreeSet<String> = crate::fleet::desired_vms(fleet)
            .into_iter()
            .map(|d| d.name)
            .collect();
        self.vms.iter().filter(move |v| {
            desired.contains(&v.vm_name) || crate::fleet::concerns(&cluster, &v.vm_name, &v.tags)
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
        hex12(lines.join("\n").as_bytes())
    }
}

/// Whether fleet `cluster` owns `v` (tag, generated name and spec comment:
/// [`crate::fleet::ownership`]): the only VMs it may change or remove.
pub fn owned(cluster: &str, v: &VmInfo) -> bool {
    crate::fleet::owns(cluster, &v.vm_name, &v.tags, &v.comment)
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
