//! The node's own attributes, changed in place: its k3s release
//! (`~ k3s.version v1.31.4+k3s1 → v1.31.6+k3s1`, an upgrade), its k3s
//! arguments and `disable` (rewritten over SSH, then a restart), its labels
//! and taints (through the API, no restart), and the comment that records
//! them.
//!
//! Where each "before" comes from: the release from the Node's
//! `kubeletVersion` when the API answers, else from the VM's comment
//! (`k3s=`); the arguments from the comment's `cfg=` fingerprints (values
//! are not recorded, so the plan shows what they become); labels and taints
//! from the Node, or without the API from the comment's `lbl=` fingerprint
//! (a change in the fleet shows; one made in the cluster does not, and the
//! plan says so). Pure.

use std::collections::{BTreeMap, BTreeSet};

use super::{AttrChange, AttrName, InPlace, Target, attr, observed_release};
use crate::base::node_labels::is_system_taint;
use crate::base::release::{self, Release, Step};
use crate::core::api::types::VmInfo;
use crate::core::fleet::{DesiredVm, Fleet, Role, Taint};
use crate::core::plan::spec::{self, SpecComment};
use crate::core::plan::{NodeFacts, Op};

/// The in-place changes of node `d`, observed as VM `o` (and Node `node`
/// when the API answered: `nodes_known`), towards `target`: its release,
/// its k3s settings, its labels and taints, then the comment recording
/// them (each a pass below).
pub(super) fn in_place(
    fleet: &Fleet,
    d: &DesiredVm,
    o: &VmInfo,
    node: Option<&NodeFacts>,
    nodes_known: bool,
    target: &Target,
) -> InPlace {
    let mut out = InPlace::default();
    let comment = SpecComment::parse(&o.comment);
    let release_after = release(d, observed_release(o, node), nodes_known, target, &mut out);
    settings(fleet, d, comment.as_ref(), &mut out);
    let lbl_after = labels(d, node, comment.as_ref(), &mut out);
    rewrite_comment(
        fleet,
        d,
        o,
        comment.as_ref(),
        (release_after, lbl_after),
        &mut out,
    );
    out
}

/// The release: an upgrade one step towards `target`, or refused (a
/// downgrade, a skipped minor), or unknown (warned, not upgraded). Returns
/// the release the comment may record after the plan.
fn release(
    d: &DesiredVm,
    have: Option<String>,
    nodes_known: bool,
    target: &Target,
    out: &mut InPlace,
) -> Option<String> {
    let mut release_after = have.clone();
    match have.as_deref().map(|h| (h, Release::parse(h))) {
        None => out.warnings.push(format!(
            "{}: its k3s release is unknown (no Node in the Kubernetes API{}, and its comment records none): it is not upgraded; make the API reachable (exedev-k8s kubeconfig, or --kubeconfig) and plan again",
            d.name,
            if nodes_known { "" } else { ", which is not reachable" }
        )),
        Some((h, None)) => out.warnings.push(format!(
            "{}: it reports k3s {:?}, which is not a release exedev-k8s understands: it is not upgraded",
            d.name,
            crate::base::text::one_line(h)
        )),
        Some((h, Some(from))) => match release::upgrade_step(&d.name, &from, &target.release) {
            Ok(Step::Same) => {}
            Ok(step) => {
                let to = target.release.to_string();
                out.reasons.push(format!(
                    "k3s {h} → {to} ({}, {}): installed over SSH, then k3s restarts",
                    target.source(),
                    if step == Step::Minor {
                        "next minor"
                    } else {
                        "patch"
                    }
                ));
                out.attributes
                    .push(attr(AttrName::K3sVersion, Some(h.to_string()), Some(to.clone())));
                out.ops.push(Op::Upgrade {
                    from: h.to_string(),
                    to: to.clone(),
                });
                release_after = Some(to);
            }
            Err(refusal) => {
                out.attributes.push(attr(
                        AttrName::K3sVersion,
                    Some(h.to_string()),
                    Some(target.release.to_string()),
                ));
                out.refusal = Some(refusal.to_string());
            }
        },
    }
    release_after
}

/// Arguments and `disable`: recorded as fingerprints in scheme 2, so a
/// change shows what they become (values are not recorded); one
/// reconfigure, then k3s restarts.
fn settings(fleet: &Fleet, d: &DesiredVm, comment: Option<&SpecComment>, out: &mut InPlace) {
    let want_cfg = spec::config_fingerprint(fleet, d.role);
    let recorded = comment
        .filter(|c| c.scheme >= 2)
        .and_then(|c| c.cfg.clone());
    if let Some(have_cfg) = recorded.filter(|h| *h != want_cfg) {
        let (args, disable) = spec::k3s_settings(fleet, d.role);
        let (have_args, have_dis) = have_cfg.split_once('.').unwrap_or((&have_cfg, ""));
        let (want_args, want_dis) = want_cfg.split_once('.').unwrap_or((&want_cfg, ""));
        let shown = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(" ")
            }
        };
        let was = |h: &str| Some(format!("(other: recorded {h})"));
        if have_args != want_args {
            let name = match d.role {
                Role::Server => AttrName::ServerArgs,
                Role::Agent => AttrName::AgentArgs,
            };
            out.reasons.push(format!(
                "{name} changed: written over SSH, then k3s restarts"
            ));
            out.attributes
                .push(attr(name, was(have_args), Some(shown(&args))));
        }
        if have_dis != want_dis {
            out.attributes.push(attr(
                AttrName::K3sDisable,
                was(have_dis),
                Some(shown(&disable)),
            ));
            out.reasons
                .push("k3s.disable changed: written over SSH, then k3s restarts".to_string());
        }
        out.ops.push(Op::Reconfigure {
            before: Some(have_cfg.clone()),
            after: want_cfg.clone(),
        });
    }
}

/// Labels and taints: compared with the Node when the API answers
/// (cluster-side drift too); else with the fingerprint the comment
/// records (scheme 3), which sees a change the fleet makes but not one
/// made with kubectl. Returns what the comment may then record: unknown
/// (scheme 2, no API) stays unknown.
fn labels(
    d: &DesiredVm,
    node: Option<&NodeFacts>,
    comment: Option<&SpecComment>,
    out: &mut InPlace,
) -> Option<String> {
    let want_lbl = spec::labels_fingerprint(d);
    let recorded_lbl = comment.and_then(|c| c.lbl.clone());
    match (node, recorded_lbl) {
        (Some(n), _) => {
            let labels = label_changes(d, n);
            if !labels.is_empty() {
                out.reasons.push(
                    "node labels or taints differ from the fleet: set through the API, no restart"
                        .to_string(),
                );
                out.attributes.extend(labels);
                out.ops.push(Op::NodeLabels);
            }
            Some(want_lbl)
        }
        (None, Some(have)) if have != want_lbl => {
            out.reasons.push(format!(
                "the fleet's labels or taints changed since they were set (recorded lbl={have}, now {want_lbl}): set through the API, no restart"
            ));
            out.attributes.push(attr(
                AttrName::LabelsAndTaints,
                Some(format!("(other: recorded {have})")),
                Some(shown_labels(d)),
            ));
            out.ops.push(Op::NodeLabels);
            Some(want_lbl)
        }
        (None, Some(have)) => Some(have),
        (None, None) => None,
    }
}

/// The comment records the spec, release, settings and labels (`after`:
/// the release and labels fingerprint it records once the plan is
/// carried out). An in-place k3s change rewrites it when it is done
/// (apply writes the op last), so it is planned without a reason of its
/// own unless it is the only change.
fn rewrite_comment(
    fleet: &Fleet,
    d: &DesiredVm,
    o: &VmInfo,
    comment: Option<&SpecComment>,
    after: (Option<String>, Option<String>),
    out: &mut InPlace,
) {
    let (release_after, lbl_after) = after;
    let want_comment = spec::comment_with(fleet, d, release_after.as_deref(), lbl_after);
    let k3s_change = out.ops.iter().any(Op::changes_k3s);
    if o.comment != want_comment && out.refusal.is_none() {
        // Shown when it is the only change; otherwise it is bookkeeping of
        // the changes shown.
        if !k3s_change && out.ops.is_empty() {
            out.reasons.push(match comment {
                Some(c) if c.scheme == 1 => format!(
                    "created by an earlier exedev-k8s (spec scheme 1): its comment is rewritten in scheme {} (not a replacement; its k3s arguments are taken to be the fleet's)",
                    SpecComment::parse(&want_comment).map_or(2, |c| c.scheme)
                ),
                Some(c) if c.scheme < spec::SPEC_SCHEME => format!(
                    "created by an earlier exedev-k8s (spec scheme {}): its comment now records its labels and taints (scheme {}), as read from the Kubernetes API; not a replacement",
                    c.scheme,
                    spec::SPEC_SCHEME
                ),
                _ => "its comment is brought up to date (release, settings, labels)".to_string(),
            });
            out.attributes.push(attr(
                AttrName::Comment,
                Some(o.comment.clone()),
                Some(want_comment.clone()),
            ));
        }
        out.ops.push(Op::Comment {
            comment: want_comment,
        });
    }
}

/// The fleet's labels and taints of `d`, for a plan's "after":
/// `tier=web; taints: dedicated=web:NoSchedule` (the tool's own
/// `exedev-k8s.io/` labels, which follow from the VM's name, left out).
fn shown_labels(d: &DesiredVm) -> String {
    let labels: Vec<String> = d
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(crate::core::fleet::RESERVED_LABEL_PREFIX))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let taints: Vec<String> = d.taints.iter().map(Taint::to_string).collect();
    let or_none = |v: Vec<String>| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(",")
        }
    };
    format!("{}; taints: {}", or_none(labels), or_none(taints))
}

/// Labels the fleet gives `d` that its Node lacks or has with another
/// value (`labels.<key>`), and its taints when they differ (Kubernetes'
/// own taints aside). Labels the fleet does not mention are left alone.
pub fn label_changes(d: &DesiredVm, node: &NodeFacts) -> Vec<AttrChange> {
    let mut out = Vec::new();
    let want: &BTreeMap<String, String> = &d.labels;
    for (k, v) in want {
        let have = node.labels.get(k);
        if have != Some(v) {
            out.push(attr(
                AttrName::Label(k.clone()),
                have.cloned(),
                Some(v.clone()),
            ));
        }
    }
    let want_t: BTreeSet<String> = d.taints.iter().map(Taint::to_string).collect();
    let have_t: BTreeSet<String> = node
        .taints
        .iter()
        .map(|t| Taint::canonical(t))
        .filter(|t| !is_system_taint(t))
        .collect();
    if want_t != have_t {
        let join = |s: &BTreeSet<String>| {
            if s.is_empty() {
                "(none)".to_string()
            } else {
                s.iter().cloned().collect::<Vec<_>>().join(",")
            }
        };
        out.push(attr(
            AttrName::Taints,
            Some(join(&have_t)),
            Some(join(&want_t)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet;

    fn fleet_with(k3s: &str) -> Fleet {
        let yaml = fleet_yaml(k3s);
        fleet::parse(&yaml, "f.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn fleet_yaml(k3s: &str) -> String {
        format!(
            "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n{k3s}network:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {{env: K}}\npools:\n  - name: web\n    count: 1\n    labels: {{tier: web}}\n    taints: [\"dedicated=web:NoSchedule\"]\n"
        )
    }

    fn target(v: &str) -> Target {
        Target {
            release: Release::parse(v).unwrap(),
            channel: None,
        }
    }

    fn observed(f: &Fleet, d: &DesiredVm, k3s: Option<&str>) -> VmInfo {
        VmInfo {
            vm_name: d.name.clone(),
            comment: spec::comment_for(f, d, k3s),
            ..Default::default()
        }
    }

    fn node(version: &str, d: &DesiredVm) -> NodeFacts {
        NodeFacts {
            version: Some(version.to_string()),
            labels: d.labels.clone(),
            taints: d.taints.iter().map(ToString::to_string).collect(),
            not_ready_secs: None,
        }
    }

    #[test]
    fn in_sync_is_nothing() {
        let f = fleet_with("  version: v1.31.4+k3s1\n");
        for d in fleet::desired_vms(&f) {
            let o = observed(&f, &d, Some("v1.31.4+k3s1"));
            let n = node("v1.31.4+k3s1", &d);
            let got = in_place(&f, &d, &o, Some(&n), true, &target("v1.31.4+k3s1"));
            assert_eq!(got, InPlace::default(), "{}", d.name);
        }
    }

    #[test]
    fn a_patch_is_an_upgrade_with_the_api_version_as_before() {
        let f = fleet_with("  version: v1.31.6+k3s1\n");
        let d = &fleet::desired_vms(&f)[0];
        // The comment says v1.31.4, the API v1.31.5 (someone upgraded by
        // hand): the API wins.
        let o = observed(&f, d, Some("v1.31.4+k3s1"));
        let got = in_place(
            &f,
            d,
            &o,
            Some(&node("v1.31.5+k3s1", d)),
            true,
            &target("v1.31.6+k3s1"),
        );
        // The comment is rewritten last, recording the new release.
        assert_eq!(
            got.ops,
            [
                Op::Upgrade {
                    from: "v1.31.5+k3s1".into(),
                    to: "v1.31.6+k3s1".into()
                },
                Op::Comment {
                    comment: spec::comment_for(&f, d, Some("v1.31.6+k3s1"))
                }
            ]
        );
        assert_eq!(
            got.attributes,
            [attr(
                AttrName::K3sVersion,
                Some("v1.31.5+k3s1".into()),
                Some("v1.31.6+k3s1".into())
            )]
        );
        assert!(got.reasons[0].contains("patch"), "{:?}", got.reasons);
        // Without the API, the comment's release is the before.
        let got = in_place(&f, d, &o, None, false, &target("v1.31.6+k3s1"));
        assert_eq!(got.attributes[0].before.as_deref(), Some("v1.31.4+k3s1"));
    }

    #[test]
    fn downgrades_and_skips_are_refused_with_the_way_out() {
        let f = fleet_with("  version: v1.31.4+k3s1\n");
        let d = &fleet::desired_vms(&f)[0];
        let o = observed(&f, d, Some("v1.31.6+k3s1"));
        let got = in_place(&f, d, &o, None, false, &target("v1.31.4+k3s1"));
        assert!(got.refusal.as_deref().unwrap().contains("downgraded"));
        let o = observed(&f, d, Some("v1.29.1+k3s1"));
        let got = in_place(&f, d, &o, None, false, &target("v1.31.4+k3s1"));
        let r = got.refusal.unwrap();
        assert!(
            r.contains("one minor version at a time") && r.contains("v1.30"),
            "{r}"
        );
        assert!(got.ops.is_empty(), "nothing to carry out: {:?}", got.ops);
    }

    #[test]
    fn arguments_and_disable_are_told_apart() {
        let old = fleet_with(
            "  version: v1.31.4+k3s1\n  serverArgs: [\"--etcd-snapshot-retention=5\"]\n",
        );
        let new = fleet_with(
            "  version: v1.31.4+k3s1\n  serverArgs: [\"--etcd-snapshot-retention=7\"]\n",
        );
        let d = &fleet::desired_vms(&new)[0];
        let o = observed(&old, d, Some("v1.31.4+k3s1"));
        let got = in_place(&new, d, &o, None, false, &target("v1.31.4+k3s1"));
        let names: Vec<&AttrName> = got.attributes.iter().map(|a| &a.name).collect();
        assert_eq!(names, [&AttrName::ServerArgs]);
        assert_eq!(
            got.attributes[0].after.as_deref(),
            Some("--etcd-snapshot-retention=7")
        );
        assert!(matches!(
            got.ops[..],
            [Op::Reconfigure { .. }, Op::Comment { .. }]
        ));
        let disabled = fleet_with(
            "  version: v1.31.4+k3s1\n  serverArgs: [\"--etcd-snapshot-retention=5\"]\n  disable: [traefik]\n",
        );
        let got = in_place(&disabled, d, &o, None, false, &target("v1.31.4+k3s1"));
        let names: Vec<&AttrName> = got.attributes.iter().map(|a| &a.name).collect();
        assert_eq!(names, [&AttrName::K3sDisable]);
        // Agents do not care about server arguments.
        let agent = &fleet::desired_vms(&new)[1];
        let o = observed(&old, agent, Some("v1.31.4+k3s1"));
        let got = in_place(&new, agent, &o, None, false, &target("v1.31.4+k3s1"));
        assert_eq!(got, InPlace::default());
    }

    #[test]
    fn labels_and_taints_go_through_the_api_without_a_restart() {
        let f = fleet_with("  version: v1.31.4+k3s1\n");
        let d = &fleet::desired_vms(&f)[1];
        let o = observed(&f, d, Some("v1.31.4+k3s1"));
        let mut n = node("v1.31.4+k3s1", d);
        n.labels.insert("tier".into(), "batch".into());
        n.labels.insert("someone.else/x".into(), "y".into());
        n.taints = vec![
            "node.kubernetes.io/unschedulable:NoSchedule".into(),
            "old=x:NoExecute".into(),
        ];
        let got = in_place(&f, d, &o, Some(&n), true, &target("v1.31.4+k3s1"));
        assert_eq!(
            got.attributes,
            [
                attr(
                    AttrName::Label("tier".into()),
                    Some("batch".into()),
                    Some("web".into())
                ),
                attr(
                    AttrName::Taints,
                    Some("old=x:NoExecute".into()),
                    Some("dedicated=web:NoSchedule".into())
                ),
            ]
        );
        assert_eq!(got.ops, [Op::NodeLabels]);
    }

    /// Without the API (a pull request's plan), a label or taint change in
    /// the fleet is seen through the fingerprint the comment records; a
    /// change made in the cluster is not (the Node is not read).
    #[test]
    fn without_the_api_a_fleet_label_change_is_seen_through_the_comment() {
        let old = fleet_with("  version: v1.31.4+k3s1\n");
        let new = fleet::parse(
            &fleet_yaml("  version: v1.31.4+k3s1\n").replace("tier: web", "tier: frontend"),
            "f.yaml",
        )
        .unwrap();
        let d_old = &fleet::desired_vms(&old)[1];
        let d = &fleet::desired_vms(&new)[1];
        let o = observed(&old, d_old, Some("v1.31.4+k3s1"));
        let got = in_place(&new, d, &o, None, false, &target("v1.31.4+k3s1"));
        assert_eq!(
            got.attributes[0],
            attr(
                AttrName::LabelsAndTaints,
                Some(format!(
                    "(other: recorded {})",
                    spec::labels_fingerprint(d_old)
                )),
                Some("tier=frontend; taints: dedicated=web:NoSchedule".into())
            )
        );
        assert_eq!(
            got.ops,
            [
                Op::NodeLabels,
                Op::Comment {
                    comment: spec::comment_for(&new, d, Some("v1.31.4+k3s1"))
                }
            ]
        );
        // A taint change alone is seen too; the same fleet is nothing.
        let tainted = fleet::parse(
            &fleet_yaml("  version: v1.31.4+k3s1\n").replace("dedicated=web", "dedicated=web2"),
            "f.yaml",
        )
        .unwrap();
        let d2 = &fleet::desired_vms(&tainted)[1];
        let got = in_place(&tainted, d2, &o, None, false, &target("v1.31.4+k3s1"));
        assert!(got.ops.contains(&Op::NodeLabels), "{:?}", got.ops);
        let got = in_place(&old, d_old, &o, None, false, &target("v1.31.4+k3s1"));
        assert_eq!(got, InPlace::default());
    }

    /// A scheme-2 VM (labels not recorded) keeps its comment until its
    /// labels are known: without the API nothing is claimed; with it, the
    /// comment is rewritten in scheme 3. Never a replacement.
    #[test]
    fn scheme_two_comments_gain_labels_once_they_are_read() {
        let f = fleet_with("  version: v1.31.4+k3s1\n");
        let d = &fleet::desired_vms(&f)[1];
        let scheme2 = spec::comment_with(&f, d, Some("v1.31.4+k3s1"), None);
        assert!(scheme2.starts_with("exedev-k8s spec=2.") && !scheme2.contains("lbl="));
        let o = VmInfo {
            vm_name: d.name.clone(),
            comment: scheme2,
            ..Default::default()
        };
        let got = in_place(&f, d, &o, None, false, &target("v1.31.4+k3s1"));
        assert_eq!(got, InPlace::default());
        let got = in_place(
            &f,
            d,
            &o,
            Some(&node("v1.31.4+k3s1", d)),
            true,
            &target("v1.31.4+k3s1"),
        );
        assert_eq!(
            got.ops,
            [Op::Comment {
                comment: spec::comment_for(&f, d, Some("v1.31.4+k3s1"))
            }]
        );
        assert!(got.reasons[0].contains("scheme 2"), "{:?}", got.reasons);
        assert!(spec::comment_for(&f, d, None).starts_with("exedev-k8s spec=3."));
    }

    /// VMs from before scheme 2 are not replaced: their comment is
    /// rewritten, recording the release the API reports.
    #[test]
    fn scheme_one_comments_are_migrated_not_replaced() {
        let f = fleet_with("  version: v1.31.4+k3s1\n");
        let d = &fleet::desired_vms(&f)[0];
        let o = VmInfo {
            vm_name: d.name.clone(),
            comment: "exedev-k8s spec=0123456789ab".into(),
            ..Default::default()
        };
        let got = in_place(
            &f,
            d,
            &o,
            Some(&node("v1.31.4+k3s1", d)),
            true,
            &target("v1.31.4+k3s1"),
        );
        assert_eq!(
            got.ops,
            [Op::Comment {
                comment: spec::comment_for(&f, d, Some("v1.31.4+k3s1"))
            }]
        );
        assert!(got.reasons[0].contains("scheme 1"), "{:?}", got.reasons);
        // Without the API its release is unknown: said, not guessed.
        let got = in_place(&f, d, &o, None, false, &target("v1.31.6+k3s1"));
        assert!(got.warnings[0].contains("unknown"), "{:?}", got.warnings);
        assert!(!got.ops.iter().any(Op::changes_k3s));
    }
}
