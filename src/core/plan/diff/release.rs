//! The plan's k3s release: which one (the pass before the VMs are
//! compared), and whether the cluster after the plan respects k3s's
//! version skew (the pass after).

use std::collections::BTreeSet;

use super::changes::{node_of, role_of};
use super::{PlanError, PlanOptions, ReleaseChoice};
use crate::base::release::{self, Release};
use crate::core::api::types::VmInfo;
use crate::core::fleet::{self, Fleet, K3sRelease, Role};
use crate::core::plan::attributes::{self, Target};
use crate::core::plan::{Action, Change, Observed, Op};

/// The pass deciding the plan's release, before any VM is compared: every
/// new VM installs it and every node is upgraded to it, so it is one value
/// for the whole plan. A channel that could not be looked up keeps the
/// release the nodes agree on (`node_releases`, each owned VM's as far as
/// the plan can tell), with a warning; without one, no plan.
pub(super) fn target_release(
    fleet: &Fleet,
    opts: &PlanOptions,
    node_releases: &[Option<String>],
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
            let known: BTreeSet<&str> = node_releases.iter().filter_map(|v| v.as_deref()).collect();
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

/// The skew pass, once the changes are narrowed and ordered: kubelets
/// must never be newer than the API servers (facts "Versions"). After this
/// plan (narrowed by `--target`, servers may stay behind), every agent's
/// minor must be at most the oldest server's.
pub(super) fn skew_refusals(
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
            .filter_map(|c| match (&c.action, c.successor()) {
                (Action::Create, _) => Some(c.vm.clone()),
                (Action::Replace, Some(new)) => Some(new.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::fixtures;

    fn channel_fleet() -> Fleet {
        let mut f = fixtures::fleet_with("");
        f.k3s.release = K3sRelease::Channel("stable".into());
        f
    }

    #[test]
    fn an_unreachable_channel_keeps_the_release_the_nodes_agree_on() {
        let f = channel_fleet();
        let opts = PlanOptions::default();
        let mut warnings = Vec::new();
        let agree = [Some("v1.31.4+k3s1".to_string()), None];
        let t = target_release(&f, &opts, &agree, &mut warnings).unwrap();
        assert_eq!(t.release.to_string(), "v1.31.4+k3s1");
        assert_eq!(t.channel.as_deref(), Some("stable"));
        assert_eq!(warnings.len(), 1);
        let none = target_release(&f, &opts, &[None], &mut Vec::new());
        assert!(matches!(none, Err(PlanError::Release(_))));
        let split = [
            Some("v1.31.4+k3s1".to_string()),
            Some("v1.31.6+k3s1".to_string()),
        ];
        let split = target_release(&f, &opts, &split, &mut Vec::new());
        assert!(matches!(split, Err(PlanError::Release(m)) if m.contains("different releases")));
    }

    #[test]
    fn a_given_release_wins_over_the_fleet() {
        let f = channel_fleet();
        let release = Release::parse("v1.32.0+k3s1").unwrap();
        let opts = PlanOptions {
            release: Some(ReleaseChoice::Pinned {
                release: release.clone(),
            }),
            ..Default::default()
        };
        let t = target_release(&f, &opts, &[], &mut Vec::new()).unwrap();
        assert_eq!((t.release, t.channel), (release, None));
    }
}
