//! What exe.dev holds of a VM that stays, changed in place: its size (a
//! resize restarts the VM), its tags, and its HTTPS proxy (port and
//! visibility). The ops come out in the order apply carries them out:
//! resize, tags added, proxy, tags removed. Pure.

use std::collections::BTreeSet;

use super::{AttrName, InPlace, attr, gb};
use crate::base::sizes::same_size;
use crate::core::api::types::{ShareInfo, Visibility, VmInfo};
use crate::core::fleet::{self, DesiredVm, RESERVED_TAG_PREFIX};
use crate::core::plan::Op;

/// Sizes, tags and the proxy of `o` against `d`; `share` is its `share
/// show`, when read.
pub(super) fn compare(d: &DesiredVm, o: &VmInfo, share: Option<&ShareInfo>) -> InPlace {
    let mut out = InPlace::default();
    size(d, o, &mut out);
    // A booting VM cannot answer `share show`: its proxy settings are
    // unknown, not wrong (the plan already warns that it is not running).
    let share_known = share.is_some() || o.is_running();
    let (add, remove) = tag_changes(d, o, share_known);
    if !add.is_empty() || !remove.is_empty() {
        out.reasons.push("tags changed".into());
        let mut after: Vec<String> = o
            .tags
            .iter()
            .filter(|t| !remove.contains(t))
            .cloned()
            .collect();
        after.extend(add.iter().cloned());
        after.sort();
        out.attributes.push(attr(
            AttrName::Tags,
            Some(o.tags.join(",")),
            Some(after.join(",")),
        ));
    }
    // Tags are added before the proxy changes (the share tag must be on a
    // VM before its proxy is made public) and removed after them.
    if !add.is_empty() {
        out.ops.push(Op::AddTags { tags: add });
    }
    if share_known {
        proxy(d, o, share, &mut out);
    }
    if !remove.is_empty() {
        out.ops.push(Op::RemoveTags { tags: remove });
    }
    out
}

/// CPUs, memory and disk: any of them changed is one resize, which exe.dev
/// carries out by restarting the VM.
fn size(d: &DesiredVm, o: &VmInfo, out: &mut InPlace) {
    let cpu = (o.allocated_cpus != d.cpu).then_some(d.cpu);
    let memory = (!same_size(o.memory_capacity_bytes, d.memory.0)).then(|| d.memory.to_string());
    let disk = (!same_size(o.disk_capacity_bytes, d.disk.0)).then(|| d.disk.to_string());
    if let Some(c) = cpu {
        out.attributes.push(attr(
            AttrName::Cpu,
            Some(o.allocated_cpus.to_string()),
            Some(c.to_string()),
        ));
    }
    if let Some(m) = &memory {
        out.attributes.push(attr(
            AttrName::Memory,
            Some(gb(o.memory_capacity_bytes)),
            Some(m.clone()),
        ));
    }
    if let Some(dk) = &disk {
        out.attributes.push(attr(
            AttrName::Disk,
            Some(gb(o.disk_capacity_bytes)),
            Some(dk.clone()),
        ));
    }
    if cpu.is_some() || memory.is_some() || disk.is_some() {
        out.reasons
            .push("size changed: exe.dev restarts the VM".into());
        out.ops.push(Op::Resize { cpu, memory, disk });
    }
}

/// Pool and role tags are ours to fix; fleet tags (ours or another
/// fleet's) are never removed.
fn is_managed_tag(tag: &str) -> bool {
    tag.starts_with(RESERVED_TAG_PREFIX)
        && !tag.starts_with(&format!("{RESERVED_TAG_PREFIX}fleet-"))
}

/// The tags to add and the managed tags to remove. The share tag goes only
/// once the proxy is known (to be made private): without it no later plan
/// would look at the proxy again.
fn tag_changes(d: &DesiredVm, o: &VmInfo, share_known: bool) -> (Vec<String>, Vec<String>) {
    let have: BTreeSet<&String> = o.tags.iter().collect();
    let want: BTreeSet<&String> = d.tags.iter().collect();
    let add = want.difference(&have).map(|t| t.to_string()).collect();
    let remove = have
        .difference(&want)
        .filter(|t| is_managed_tag(t))
        .filter(|t| t.as_str() != fleet::SHARE_TAG || share_known)
        .map(|t| t.to_string())
        .collect();
    (add, remove)
}

/// The proxy's port and visibility against the group's share; a VM whose
/// group no longer declares one, but whose proxy the tool managed (it
/// carries the share tag), ends private, as every VM without a share.
fn proxy(d: &DesiredVm, o: &VmInfo, share: Option<&ShareInfo>, out: &mut InPlace) {
    let have_port = share.map(|s| s.port);
    let have_public = share.map(|s| s.status == Visibility::Public);
    if let Some(want) = d.share {
        if have_port != Some(want.port) {
            out.reasons.push("proxy port changed".into());
            out.attributes.push(attr(
                AttrName::SharePort,
                have_port.map(|p| p.to_string()),
                Some(want.port.to_string()),
            ));
            out.ops.push(Op::SharePort { port: want.port });
        }
        if have_public != Some(want.public) {
            out.reasons.push("proxy visibility changed".into());
            out.attributes.push(attr(
                AttrName::SharePublic,
                have_public.map(|p| p.to_string()),
                Some(want.public.to_string()),
            ));
            out.ops.push(Op::ShareVisibility {
                public: want.public,
            });
        }
        return;
    }
    let was_shared = o.tags.iter().any(|t| t == fleet::SHARE_TAG);
    if was_shared && have_public != Some(false) {
        out.reasons
            .push("proxy no longer shared: made private".into());
        out.attributes.push(attr(
            AttrName::SharePublic,
            have_public.map(|p| p.to_string()),
            Some("false".into()),
        ));
        out.ops.push(Op::ShareVisibility { public: false });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::fixtures;

    fn desired(share: &str) -> DesiredVm {
        let f = fixtures::fleet_with(&format!("pools:\n  - name: web\n    count: 1\n{share}"));
        fleet::desired_vms(&f).pop().unwrap()
    }

    fn same(d: &DesiredVm) -> VmInfo {
        VmInfo {
            vm_name: d.name.clone(),
            status: "running".into(),
            tags: d.tags.clone(),
            allocated_cpus: d.cpu,
            memory_capacity_bytes: d.memory.0,
            disk_capacity_bytes: d.disk.0,
            ..Default::default()
        }
    }

    fn share(port: u16, status: Visibility) -> ShareInfo {
        ShareInfo {
            vm_name: String::new(),
            status,
            port,
            url: String::new(),
            users: None,
            links: None,
        }
    }

    #[test]
    fn the_same_vm_is_nothing_and_a_size_is_one_resize() {
        let d = desired("");
        assert_eq!(compare(&d, &same(&d), None), InPlace::default());
        let o = VmInfo {
            allocated_cpus: d.cpu + 2,
            ..same(&d)
        };
        let got = compare(&d, &o, None);
        assert_eq!(
            got.ops,
            [Op::Resize {
                cpu: Some(d.cpu),
                memory: None,
                disk: None
            }]
        );
        assert_eq!(got.attributes[0].name, AttrName::Cpu);
    }

    #[test]
    fn tags_are_added_before_the_proxy_and_removed_after_it() {
        let d = desired("    share: {port: 8080, public: true}\n");
        let mut o = same(&d);
        o.tags.retain(|t| t != fleet::SHARE_TAG);
        o.tags.push(format!("{RESERVED_TAG_PREFIX}pool-old"));
        o.tags.push("someone-elses".into());
        let got = compare(&d, &o, Some(&share(8080, Visibility::Private)));
        let names: Vec<&AttrName> = got.attributes.iter().map(|a| &a.name).collect();
        assert_eq!(names, [&AttrName::Tags, &AttrName::SharePublic]);
        assert!(matches!(
            &got.ops[..],
            [
                Op::AddTags { tags: add },
                Op::ShareVisibility { public: true },
                Op::RemoveTags { tags: remove },
            ] if add == &[fleet::SHARE_TAG.to_string()]
                && remove == &[format!("{RESERVED_TAG_PREFIX}pool-old")]
        ));
    }

    #[test]
    fn an_unshared_proxy_ends_private_once_it_is_known() {
        let d = desired("");
        let mut o = same(&d);
        o.tags.push(fleet::SHARE_TAG.to_string());
        let public = share(8080, Visibility::Public);
        let got = compare(&d, &o, Some(&public));
        assert_eq!(
            got.ops,
            [
                Op::ShareVisibility { public: false },
                Op::RemoveTags {
                    tags: vec![fleet::SHARE_TAG.to_string()]
                }
            ]
        );
        // A booting VM's proxy is unknown: the share tag stays, nothing
        // is changed.
        o.status = "starting".into();
        assert_eq!(compare(&d, &o, None), InPlace::default());
    }
}
