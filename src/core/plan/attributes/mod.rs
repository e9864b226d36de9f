//! What changes in place on one VM that stays, attribute by attribute, in
//! one place: what exe.dev holds (`vm`: sizes, a VM restart; tags; the
//! proxy) and what the node holds (`node`: the k3s release, an upgrade;
//! k3s arguments, a k3s restart; labels and taints, through the API; the
//! comment recording them). Every attribute a plan shows is named by
//! [`AttrName`], which plan JSON spells as it always has (`k3s.version`,
//! `labels.tier`), so a new attribute is one variant and one comparison,
//! and the plan's action and restart follow from the ops here, not from a
//! name compared as text. Pure.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::spec::SpecComment;
use super::{Action, AttrChange, NodeFacts, Op, Restart};
use crate::base::release::Release;
use crate::base::sizes::ByteSize;
use crate::core::api::types::{ShareInfo, VmInfo};
use crate::core::fleet::{DesiredVm, Fleet};

mod node;
mod vm;

pub use node::label_changes;

/// The name of an attribute a plan shows. Plan JSON holds it as the
/// string [`AttrName::as_str`] gives (the schema predates the enum, so the
/// strings are part of `FORMAT_VERSION` 4).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrName {
    /// `k3s.version`: the release (a new VM's, an upgrade, a refused one).
    K3sVersion,
    /// `k3s args`: a new VM's extra k3s flags (secrets shown by source).
    K3sArgs,
    /// `k3s.serverArgs`: a server's arguments changed (a k3s restart).
    ServerArgs,
    /// `k3s.agentArgs`: an agent's arguments changed (a k3s restart).
    AgentArgs,
    /// `k3s.disable`: the packaged components k3s leaves out.
    K3sDisable,
    /// `image`.
    Image,
    /// `cpu`.
    Cpu,
    /// `memory`.
    Memory,
    /// `disk`.
    Disk,
    /// `tags`: the VM's exe.dev tags.
    Tags,
    /// `share.port`: the HTTPS proxy's port.
    SharePort,
    /// `share.public`: whether the proxy is public.
    SharePublic,
    /// `labels.<key>`: one node label.
    Label(String),
    /// `taints`: the node's taints (Kubernetes' own aside).
    Taints,
    /// `labels and taints`: both, seen through the comment's fingerprint
    /// (without the API).
    LabelsAndTaints,
    /// `spec`: the identity fingerprint (role, tailnet) of a replacement.
    Spec,
    /// `comment`: the VM's comment rewritten.
    Comment,
}

/// The names with no data, to parse them back.
const FIXED: [AttrName; 16] = [
    AttrName::K3sVersion,
    AttrName::K3sArgs,
    AttrName::ServerArgs,
    AttrName::AgentArgs,
    AttrName::K3sDisable,
    AttrName::Image,
    AttrName::Cpu,
    AttrName::Memory,
    AttrName::Disk,
    AttrName::Tags,
    AttrName::SharePort,
    AttrName::SharePublic,
    AttrName::Taints,
    AttrName::LabelsAndTaints,
    AttrName::Spec,
    AttrName::Comment,
];

impl AttrName {
    /// The name as plans show it and plan JSON spells it.
    pub fn as_str(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            AttrName::K3sVersion => "k3s.version",
            AttrName::K3sArgs => "k3s args",
            AttrName::ServerArgs => "k3s.serverArgs",
            AttrName::AgentArgs => "k3s.agentArgs",
            AttrName::K3sDisable => "k3s.disable",
            AttrName::Image => "image",
            AttrName::Cpu => "cpu",
            AttrName::Memory => "memory",
            AttrName::Disk => "disk",
            AttrName::Tags => "tags",
            AttrName::SharePort => "share.port",
            AttrName::SharePublic => "share.public",
            AttrName::Label(k) => return Cow::Owned(format!("labels.{k}")),
            AttrName::Taints => "taints",
            AttrName::LabelsAndTaints => "labels and taints",
            AttrName::Spec => "spec",
            AttrName::Comment => "comment",
        })
    }
}

impl fmt::Display for AttrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl FromStr for AttrName {
    type Err = String;

    /// A saved plan's attribute names back; a name no plan writes is
    /// refused, so a plan file edited by hand fails where it is read.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(key) = s.strip_prefix("labels.") {
            return Ok(AttrName::Label(key.to_string()));
        }
        FIXED
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| format!("unknown plan attribute {s:?}"))
    }
}

impl Serialize for AttrName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for AttrName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One attribute's change, as plans show it.
pub(super) fn attr(name: AttrName, before: Option<String>, after: Option<String>) -> AttrChange {
    AttrChange {
        name,
        before,
        after,
    }
}

/// A size in bytes as plans show it (`20GB`).
pub(super) fn gb(bytes: u64) -> String {
    format!("{}GB", ByteSize(bytes).gib_rounded())
}

/// The release `vm` runs as far as the plan can tell: its Node's
/// `kubeletVersion` (the truth, when the API answers), else the one its
/// comment recorded (scheme 2).
pub fn observed_release(vm: &VmInfo, node: Option<&NodeFacts>) -> Option<String> {
    node.and_then(|n| n.version.clone()).or_else(|| {
        SpecComment::parse(&vm.comment)
            .filter(|c| c.scheme >= 2)
            .and_then(|c| c.k3s)
    })
}

/// The release the plan moves every node to, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub release: Release,
    /// The channel it was looked up from (`None`: `k3s.version`).
    pub channel: Option<String>,
}

impl Target {
    fn source(&self) -> String {
        match &self.channel {
            Some(c) => format!("channel {c}"),
            None => "k3s.version".to_string(),
        }
    }
}

/// One VM's in-place changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InPlace {
    pub reasons: Vec<String>,
    pub attributes: Vec<AttrChange>,
    pub ops: Vec<Op>,
    /// Why the plan must not be carried out (a downgrade, a skipped minor).
    pub refusal: Option<String>,
    pub warnings: Vec<String>,
}

impl InPlace {
    /// Adds `other`'s changes after these.
    fn extend(&mut self, other: InPlace) {
        self.reasons.extend(other.reasons);
        self.attributes.extend(other.attributes);
        self.ops.extend(other.ops);
        self.refusal = self.refusal.take().or(other.refusal);
        self.warnings.extend(other.warnings);
    }

    /// Whether anything changes (an attribute shown without an op is a
    /// refused one: still a change, so the refusal has a VM to show on).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.attributes.is_empty()
    }

    /// An upgrade when the release changes, carried out or refused (the
    /// reviewer sees the release a plan wants either way); else an update.
    pub fn action(&self) -> Action {
        let release = self.ops.iter().any(|o| matches!(o, Op::Upgrade { .. }))
            || self
                .attributes
                .iter()
                .any(|a| a.name == AttrName::K3sVersion);
        if release {
            Action::Upgrade
        } else {
            Action::Update
        }
    }

    /// What the change restarts: a resize the VM, a k3s change k3s.
    pub fn restart(&self) -> Option<Restart> {
        if self.ops.iter().any(|o| matches!(o, Op::Resize { .. })) {
            Some(Restart::Vm)
        } else if self.ops.iter().any(Op::changes_k3s) {
            Some(Restart::K3s)
        } else {
            None
        }
    }
}

/// What the plan observed of one VM, for comparing it with the fleet.
pub struct Seen<'a> {
    pub vm: &'a VmInfo,
    /// Its `share show`, when read.
    pub share: Option<&'a ShareInfo>,
    /// Its Node, when the API answered and has one.
    pub node: Option<&'a NodeFacts>,
    /// Whether the API answered.
    pub nodes_known: bool,
}

/// Every in-place change of VM `seen.vm` towards `d` and `target`: first
/// what exe.dev holds (sizes, tags, proxy), then what the node holds
/// (release, arguments, labels, comment), in the order apply carries
/// them out.
pub fn compare(fleet: &Fleet, d: &DesiredVm, seen: &Seen<'_>, target: &Target) -> InPlace {
    let mut out = vm::compare(d, seen.vm, seen.share);
    out.extend(node::in_place(
        fleet,
        d,
        seen.vm,
        seen.node,
        seen.nodes_known,
        target,
    ));
    out
}

/// What a replacement shows besides why: the CPUs when they change, and
/// the release the new VM installs when the old one runs another.
pub fn on_replace(d: &DesiredVm, seen: &Seen<'_>, target: &Target) -> Vec<AttrChange> {
    let mut out = Vec::new();
    let o = seen.vm;
    if o.allocated_cpus != d.cpu {
        out.push(attr(
            AttrName::Cpu,
            Some(o.allocated_cpus.to_string()),
            Some(d.cpu.to_string()),
        ));
    }
    let have = observed_release(o, seen.node);
    let want = target.release.to_string();
    if have.as_deref() != Some(want.as_str()) {
        out.push(attr(AttrName::K3sVersion, have, Some(want)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_the_strings_plans_always_wrote() {
        let mut all = FIXED.to_vec();
        all.push(AttrName::Label("tier".into()));
        for n in all {
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(json, format!("{:?}", n.as_str()));
            assert_eq!(serde_json::from_str::<AttrName>(&json).unwrap(), n);
        }
        assert_eq!(AttrName::K3sVersion.to_string(), "k3s.version");
        assert_eq!(AttrName::Label("a.b/c".into()).to_string(), "labels.a.b/c");
        assert!(serde_json::from_str::<AttrName>("\"colour\"").is_err());
    }

    #[test]
    fn a_refused_release_is_still_an_upgrade_and_a_resize_restarts_the_vm() {
        let refused = InPlace {
            attributes: vec![attr(
                AttrName::K3sVersion,
                Some("a".into()),
                Some("b".into()),
            )],
            refusal: Some("no".into()),
            ..Default::default()
        };
        assert_eq!(refused.action(), Action::Upgrade);
        assert_eq!(refused.restart(), None);
        let resized = InPlace {
            ops: vec![
                Op::Resize {
                    cpu: Some(2),
                    memory: None,
                    disk: None,
                },
                Op::Reconfigure {
                    before: None,
                    after: "x".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(resized.action(), Action::Update);
        assert_eq!(resized.restart(), Some(Restart::Vm));
        let reconfigured = InPlace {
            ops: vec![resized.ops[1].clone()],
            ..Default::default()
        };
        assert_eq!(reconfigured.restart(), Some(Restart::K3s));
        assert!(InPlace::default().is_empty());
    }
}
