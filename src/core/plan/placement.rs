//! Which indices a pool's agents hold. Names stay `{cluster}-{pool}{index}`
//! (parsed back by [`crate::base::names::split_fleet_vm_name`]), but an agent
//! replaced create-before-destroy leaves its index behind: its replacement
//! takes the pool's lowest free index, is Ready before the old VM is
//! drained and removed, and from then on the pool holds that index.
//!
//! So a pool's desired VMs are not `1..=count` but follow what exe.dev
//! holds, deterministically and without local state: keep the owned VMs of
//! the pool, those that need no replacement first, then the lowest indices,
//! up to `count`; fill the rest with the lowest free indices. Servers keep
//! `1..=count`: their names are in every server's `tls-san` and they are
//! replaced in place, one at a time. Pure.

use std::collections::BTreeSet;

use crate::core::api::types::VmInfo;
use crate::core::fleet::{self, DesiredVm, Fleet, Role};

/// The desired VM named `name`, if the fleet could have it: a server index
/// up to the control plane's count, or any index of a pool in the fleet
/// (a replacement's new name, a placed agent).
pub fn desired_named(fleet: &Fleet, name: &str) -> Option<DesiredVm> {
    let cluster = &fleet.name;
    let (pool, index) = crate::base::names::parse_fleet_vm_name(cluster, name)?;
    // Every VM of a group is alike but for its name and index.
    let template = fleet::desired_vms(fleet)
        .into_iter()
        .find(|d| d.pool == pool)?;
    if template.role == Role::Server && index > fleet.control_plane.count {
        return None;
    }
    Some(at_index(cluster, template, index))
}

fn at_index(cluster: &str, mut d: DesiredVm, index: u32) -> DesiredVm {
    d.name = crate::base::names::fleet_vm_name(cluster, &d.pool, index);
    d.index = index;
    d
}

/// The fleet's desired VMs placed on what exe.dev holds: servers at
/// `1..=count`, each pool's agents at the indices of its owned VMs
/// (`owned`: VMs the fleet owns, [`super::owned`]) as described above.
/// `needs_replace(template, vm)` says whether an owned agent will be
/// replaced; with more owned VMs than `count`, those are the first to go.
/// Order: servers, then pools in file order, indices ascending.
pub fn place(
    fleet: &Fleet,
    owned: &[&VmInfo],
    needs_replace: impl Fn(&DesiredVm, &VmInfo) -> bool,
) -> Vec<DesiredVm> {
    let cluster = fleet.name.as_str();
    // One template per group, not every desired VM: the placed list is the
    // only full one (a 1,000-VM plan held two at once before).
    let templates = fleet::group_templates(fleet);
    let mut out: Vec<DesiredVm> = Vec::new();
    for (template, count) in templates.iter().filter(|(t, _)| t.role == Role::Server) {
        out.extend((1..=*count).map(|i| at_index(cluster, template.clone(), i)));
    }
    for pool in &fleet.pools {
        let name = pool.pool.as_str();
        let count = pool.count as usize;
        let Some((template, _)) = templates.iter().find(|(d, c)| d.pool == name && *c > 0) else {
            continue;
        };
        let mut held: Vec<(bool, u32)> = owned
            .iter()
            .filter_map(|v| {
                let (p, i) = crate::base::names::parse_fleet_vm_name(cluster, &v.vm_name)?;
                (p == name).then(|| (needs_replace(template, v), i))
            })
            .collect();
        held.sort();
        let mut indices: BTreeSet<u32> = held.iter().take(count).map(|(_, i)| *i).collect();
        let taken: BTreeSet<u32> = held.iter().map(|(_, i)| *i).collect();
        let mut next = 1;
        while indices.len() < count {
            if !taken.contains(&next) && !indices.contains(&next) {
                indices.insert(next);
            }
            next += 1;
        }
        out.extend(
            indices
                .into_iter()
                .map(|i| at_index(cluster, template.clone(), i)),
        );
    }
    out
}

/// The lowest index of `pool` in none of `taken`: where a replacement goes.
pub fn lowest_free(taken: &BTreeSet<u32>) -> u32 {
    (1..).find(|i| !taken.contains(i)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fleet(count: u32) -> Fleet {
        let yaml = format!(
            "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n  version: v1.31.4+k3s1\nnetwork:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {{env: K}}\ncontrolPlane:\n  count: 3\npools:\n  - name: web\n    count: {count}\n  - name: db\n    count: 1\n"
        );
        fleet::parse(&yaml, "f.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn vm(name: &str) -> VmInfo {
        VmInfo {
            vm_name: name.to_string(),
            ..Default::default()
        }
    }

    fn names(v: &[DesiredVm]) -> Vec<&str> {
        v.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn nothing_held_is_one_to_count() {
        let f = fleet(2);
        assert_eq!(
            names(&place(&f, &[], |_, _| false)),
            [
                "demo-cp1",
                "demo-cp2",
                "demo-cp3",
                "demo-web1",
                "demo-web2",
                "demo-db1"
            ]
        );
    }

    #[test]
    fn held_indices_are_kept_and_gaps_filled_lowest_first() {
        let f = fleet(3);
        let held = [vm("demo-web2"), vm("demo-web4")];
        let refs: Vec<&VmInfo> = held.iter().collect();
        assert_eq!(
            names(&place(&f, &refs, |_, _| false))[3..6],
            ["demo-web1", "demo-web2", "demo-web4"]
        );
    }

    /// An interrupted create-before-destroy left old web1 and new web3:
    /// the VM that needs replacing is the one to go.
    #[test]
    fn with_too_many_held_the_ones_to_replace_go_first() {
        let f = fleet(2);
        let held = [vm("demo-web1"), vm("demo-web2"), vm("demo-web3")];
        let refs: Vec<&VmInfo> = held.iter().collect();
        let placed = place(&f, &refs, |_, v| v.vm_name == "demo-web1");
        assert_eq!(names(&placed)[3..5], ["demo-web2", "demo-web3"]);
        // Without replacements, the highest index goes (a scale-down).
        let placed = place(&f, &refs, |_, _| false);
        assert_eq!(names(&placed)[3..5], ["demo-web1", "demo-web2"]);
    }

    #[test]
    fn named_vms_come_from_their_group() {
        let f = fleet(2);
        let d = desired_named(&f, "demo-web7").unwrap();
        assert_eq!((d.pool.as_str(), d.index, d.role), ("web", 7, Role::Agent));
        assert!(desired_named(&f, "demo-cp4").is_none(), "beyond the count");
        assert!(desired_named(&f, "demo-gpu1").is_none(), "no such pool");
        assert!(desired_named(&f, "other-web1").is_none());
        assert_eq!(lowest_free(&BTreeSet::from([1, 2, 4])), 3);
    }

    proptest! {
        /// Whatever exe.dev holds, each pool gets exactly `count` distinct,
        /// parseable names, and every held index the pool keeps is one it
        /// already had.
        #[test]
        fn placement_is_exact_unique_and_sticky(
            count in 0u32..6,
            held in prop::collection::btree_set(1u32..12, 0..8),
            replace in prop::collection::btree_set(1u32..12, 0..4),
        ) {
            let f = fleet(count);
            let vms: Vec<VmInfo> = held.iter().map(|i| vm(&format!("demo-web{i}"))).collect();
            let refs: Vec<&VmInfo> = vms.iter().collect();
            let placed = place(&f, &refs, |_, v| {
                replace.iter().any(|i| v.vm_name == format!("demo-web{i}"))
            });
            let web: Vec<&DesiredVm> = placed.iter().filter(|d| d.pool == "web").collect();
            prop_assert_eq!(web.len() as u32, count);
            let idx: BTreeSet<u32> = web.iter().map(|d| d.index).collect();
            prop_assert_eq!(idx.len(), web.len());
            for d in &web {
                prop_assert_eq!(
                    crate::base::names::parse_fleet_vm_name("demo", &d.name),
                    Some(("web", d.index))
                );
            }
            // Held VMs that need no replacement are kept first.
            let keep: Vec<u32> = held.iter().filter(|i| !replace.contains(i)).copied().collect();
            for i in keep.iter().take(count as usize) {
                prop_assert!(idx.contains(i), "kept {}", i);
            }
        }
    }
}
