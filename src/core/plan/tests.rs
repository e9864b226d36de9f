//! Diff rules, exhaustively, on hand-made observed states.

use super::attributes::AttrName;
use super::spec::comment_for;
use super::*;
use crate::core::api::types::{ShareInfo, Visibility, VmInfo};
use crate::core::fleet::{self, DesiredVm, Fleet, fixtures};

const GIB: u64 = 1 << 30;
const VERSION: &str = "v1.31.4+k3s1";

/// The minimal fleet pinned to k3s v1.31.4+k3s1 (a plan shows the
/// release), `extra` appended.
fn pinned(extra: &str) -> String {
    fixtures::minimal_replacing("channel: stable", "version: v1.31.4+k3s1") + extra
}

/// Three servers and a shared pool `web` of two, then `extra_pools`.
fn fleet_text(extra_pools: &str) -> String {
    pinned(&format!(
        "controlPlane:
  count: 3
pools:
  - name: web
    count: 2
    share: {{port: 8080, public: true}}
{extra_pools}"
    ))
}

fn fleet(extra_pools: &str) -> Fleet {
    fixtures::parsed(&fleet_text(extra_pools))
}

/// The VM exe.dev would report for a desired VM created by this tool.
fn observed_vm(f: &Fleet, d: &DesiredVm) -> VmInfo {
    VmInfo {
        vm_name: d.name.clone(),
        status: "running".into(),
        image: d.image.clone(),
        comment: comment_for(f, d, Some(VERSION)),
        tags: d.tags.clone(),
        allocated_cpus: d.cpu,
        // exe.dev reports sizes in no stable unit: use decimal GB here.
        memory_capacity_bytes: d.memory.0 / GIB * 1_000_000_000,
        disk_capacity_bytes: d.disk.0 / GIB * 1_000_000_000,
        ..Default::default()
    }
}

/// Exactly what the fleet asks for, the API reachable and every Node at
/// [`VERSION`] with the fleet's labels and taints.
fn in_sync(f: &Fleet) -> Observed {
    let desired = fleet::desired_vms(f);
    let mut o = Observed {
        vms: desired.iter().map(|d| observed_vm(f, d)).collect(),
        nodes: Some(
            desired
                .iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        NodeFacts {
                            version: Some(VERSION.to_string()),
                            labels: d.labels.clone(),
                            taints: d.taints.iter().map(ToString::to_string).collect(),
                            not_ready_secs: None,
                        },
                    )
                })
                .collect(),
        ),
        ..Default::default()
    };
    for d in desired.iter().filter(|d| d.share.is_some()) {
        let s = d.share.unwrap_or(fleet::ShareSpec {
            port: 0,
            public: false,
        });
        o.shares.insert(
            d.name.clone(),
            ShareInfo {
                vm_name: d.name.clone(),
                status: Visibility::from_public(s.public),
                port: s.port,
                url: String::new(),
                users: None,
                links: None,
            },
        );
    }
    o
}

fn plan(f: &Fleet, o: &Observed) -> Plan {
    diff(f, "fp", o, &PlanOptions::default()).unwrap()
}

fn actions(p: &Plan) -> Vec<(Action, &str)> {
    p.changes
        .iter()
        .map(|c| (c.action, c.vm.as_str()))
        .collect()
}

#[test]
fn empty_account_creates_everything_servers_first() {
    let f = fleet("");
    let p = plan(&f, &Observed::default());
    assert_eq!(
        actions(&p),
        [
            (Action::Create, "demo-cp1"),
            (Action::Create, "demo-cp2"),
            (Action::Create, "demo-cp3"),
            (Action::Create, "demo-web1"),
            (Action::Create, "demo-web2"),
        ]
    );
    assert_eq!(
        p.summary,
        Summary {
            create: 5,
            update: 0,
            upgrade: 0,
            replace: 0,
            delete: 0
        }
    );
    assert_eq!(
        p.changes[3].ops,
        [
            Op::SharePort { port: 8080 },
            Op::ShareVisibility { public: true }
        ]
    );
}

#[test]
fn in_sync_means_no_changes_despite_gb_gib_noise() {
    let f = fleet("");
    let p = plan(&f, &in_sync(&f));
    assert!(!p.has_changes(), "{:#?}", p.changes);
    assert!(p.warnings.is_empty());
}

#[test]
fn resize_tags_and_share_are_updates() {
    let f = fleet("");
    let mut o = in_sync(&f);
    o.vms[3].allocated_cpus = 1;
    o.vms[3].disk_capacity_bytes = 10 * GIB;
    o.vms[3].tags.retain(|t| !t.starts_with("exk8s-role"));
    o.vms[3].tags.push("exk8s-pool-old".into());
    o.vms[3].tags.push("someone-elses".into());
    o.shares.get_mut("demo-web2").unwrap().port = 8000;
    o.shares.get_mut("demo-web2").unwrap().status = Visibility::Private;
    let p = plan(&f, &o);
    assert_eq!(
        actions(&p),
        [(Action::Update, "demo-web1"), (Action::Update, "demo-web2")]
    );
    assert_eq!(
        p.changes[0].ops,
        [
            Op::Resize {
                cpu: Some(2),
                memory: None,
                disk: Some("20GB".into())
            },
            Op::AddTags {
                tags: vec!["exk8s-role-agent".into()]
            },
            Op::RemoveTags {
                tags: vec!["exk8s-pool-old".into()]
            },
        ],
        "a tag the tool did not set is never removed"
    );
    assert_eq!(
        p.changes[1].ops,
        [
            Op::SharePort { port: 8080 },
            Op::ShareVisibility { public: true }
        ]
    );
}

/// What needs a new VM: another image, another role or tailnet (the
/// scheme-2 fingerprint), a disk that shrinks. Servers are replaced in
/// place; agents create-before-destroy under the pool's lowest free index.
#[test]
fn immutable_changes_replace() {
    let f = fleet("");
    let mut o = in_sync(&f);
    o.vms[3].image = "ubuntu:24.04".into();
    o.vms[4].comment = format!(
        "exedev-k8s spec=2.000000000000 k3s={VERSION} cfg={}",
        spec::config_fingerprint(&f, fleet::Role::Agent)
    );
    o.vms[1].disk_capacity_bytes = 100 * GIB;
    let p = plan(&f, &o);
    assert_eq!(
        actions(&p),
        [
            (Action::Replace, "demo-cp2"),
            (Action::Replace, "demo-web1"),
            (Action::Replace, "demo-web2")
        ]
    );
    assert!(p.changes[0].reasons[0].contains("disk shrinks"));
    assert_eq!(
        p.changes[0].replacement,
        Some(Replacement::DestroyBeforeCreate),
        "servers keep their names"
    );
    assert!(p.changes[1].reasons[0].contains("image changed"));
    assert!(p.changes[2].reasons[0].contains("role or tailnet changed"));
    assert_eq!(p.changes[1].successor(), Some("demo-web3"));
    assert_eq!(p.changes[2].successor(), Some("demo-web4"));
    assert!(p.changes.iter().all(|c| c.disrupts()));
    // In the JSON, only a create-before-destroy replacement says so
    // (`replaced_by`, as in format 3); read back, each order is the same.
    let json = render::json(&p);
    assert_eq!(json.matches("\"replaced_by\"").count(), 2, "{json}");
    assert!(json.contains("\"replaced_by\": \"demo-web3\""), "{json}");
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    assert_eq!(render::json(&back), json);
}

/// A new release, new arguments, new labels: in place, attribute by
/// attribute, never a replacement; a scheme-1 VM is not replaced because
/// the fingerprint's definition changed.
#[test]
fn version_arguments_and_labels_change_in_place() {
    let f = fleet("");
    let o = in_sync(&f);
    let g = fleet("  - name: extra\n    count: 0\n");
    assert!(!plan(&g, &o).has_changes(), "an empty pool changes no VM");
    let relabelled = fleet_text("").replace(
        "    count: 2\n",
        "    count: 2\n    labels: {tier: batch}\n",
    );
    let h = fixtures::parsed(&relabelled.replace(
        "  version: v1.31.4+k3s1\n",
        "  version: v1.32.0+k3s1\n  serverArgs: [--etcd-snapshot-retention=7]\n",
    ));
    let p = diff(
        &h,
        "fp",
        &o,
        &PlanOptions {
            members_removed: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((p.summary.replace, p.summary.upgrade), (0, 5));
    assert!(p.refusals.is_empty(), "{:?}", p.refusals);
    // Servers first, from the highest index down; agents after.
    assert_eq!(
        actions(&p),
        [
            (Action::Upgrade, "demo-cp3"),
            (Action::Upgrade, "demo-cp2"),
            (Action::Upgrade, "demo-cp1"),
            (Action::Upgrade, "demo-web1"),
            (Action::Upgrade, "demo-web2"),
        ]
    );
    let cp = &p.changes[0];
    let names: Vec<&AttrName> = cp.attributes.iter().map(|a| &a.name).collect();
    assert_eq!(names, [&AttrName::K3sVersion, &AttrName::ServerArgs]);
    assert_eq!(cp.attributes[0].before.as_deref(), Some(VERSION));
    assert_eq!(cp.attributes[0].after.as_deref(), Some("v1.32.0+k3s1"));
    assert_eq!(cp.restart, Some(Restart::K3s));
    let web = &p.changes[3];
    assert!(
        web.attributes.iter().any(
            |a| a.name == AttrName::Label("tier".into()) && a.after.as_deref() == Some("batch")
        ),
        "{:?}",
        web.attributes
    );
    assert!(web.ops.contains(&Op::NodeLabels));
    assert_eq!(p.release.as_ref().unwrap().version, "v1.32.0+k3s1");

    // Labels alone: no restart, no drain.
    let labels_only = fixtures::parsed(&relabelled);
    let p = plan(&labels_only, &o);
    assert_eq!(
        actions(&p),
        [(Action::Update, "demo-web1"), (Action::Update, "demo-web2")]
    );
    assert!(
        p.changes
            .iter()
            .all(|c| c.restart.is_none() && !c.disrupts())
    );

    // VMs from before scheme 2: their comment is migrated, nothing more.
    let mut old = in_sync(&f);
    for v in &mut old.vms {
        v.comment = "exedev-k8s spec=0123456789ab".into();
    }
    let p = plan(&f, &old);
    assert_eq!(p.summary.replace, 0);
    assert_eq!(p.summary.update, 5);
    assert!(
        p.changes
            .iter()
            .all(|c| matches!(c.ops[..], [Op::Comment { .. }]))
    );
}

/// What k3s refuses is refused in the plan, which is still returned whole
/// (every output format shows it with the refusal).
#[test]
fn downgrades_skips_and_skew_are_refused_with_the_plan_shown() {
    let f = fleet("");
    let mut o = in_sync(&f);
    let refused = |o: &Observed, opts: &PlanOptions| diff(&f, "fp", o, opts).unwrap();
    for n in o.nodes.as_mut().unwrap().values_mut() {
        n.version = Some("v1.29.9+k3s1".into());
    }
    let p = refused(&o, &PlanOptions::default());
    assert!(p.is_refused());
    assert!(
        p.refusals[0].contains("one minor version at a time"),
        "{:?}",
        p.refusals
    );
    assert_eq!(p.changes.len(), 5, "the plan is shown whole");
    let human = render::human(&p, false);
    assert!(
        human.contains("Refused: this plan cannot be applied"),
        "{human}"
    );
    assert!(render::markdown(&p).contains("[!CAUTION]"));
    let v: serde_json::Value = serde_json::from_str(&render::json(&p)).unwrap();
    assert!(v["refusals"][0].as_str().unwrap().contains("minor"));

    for n in o.nodes.as_mut().unwrap().values_mut() {
        n.version = Some("v1.31.6+k3s1".into());
    }
    let p = refused(&o, &PlanOptions::default());
    assert!(p.refusals[0].contains("downgraded"), "{:?}", p.refusals);

    // An upgrade narrowed to the agents would leave them newer than the
    // servers: refused, saying to upgrade the servers first.
    let mut o = in_sync(&f);
    for n in o.nodes.as_mut().unwrap().values_mut() {
        n.version = Some("v1.30.5+k3s1".into());
    }
    let p = refused(
        &o,
        &PlanOptions {
            targets: vec!["web".into()],
            members_removed: true,
            ..Default::default()
        },
    );
    assert!(
        p.refusals
            .iter()
            .any(|r| r.contains("never newer") && r.contains("--target cp")),
        "{:?}",
        p.refusals
    );
    let all = refused(
        &o,
        &PlanOptions {
            members_removed: true,
            ..Default::default()
        },
    );
    assert!(all.refusals.is_empty(), "{:?}", all.refusals);
}

/// A fleet that follows a channel takes the release it was looked up to;
/// when the lookup fails, it keeps the release its nodes agree on.
#[test]
fn channels_are_resolved_before_and_kept_when_the_lookup_fails() {
    let f = fleet("");
    let o = in_sync(&f);
    let moved = PlanOptions {
        members_removed: true,
        release: Some(ReleaseChoice::Channel {
            name: "stable".into(),
            resolved: Ok(crate::base::release::Release::parse("v1.31.6+k3s1").unwrap()),
        }),
        ..Default::default()
    };
    let p = diff(&f, "fp", &o, &moved).unwrap();
    assert_eq!(p.summary.upgrade, 5);
    assert_eq!(
        p.release,
        Some(PlanRelease {
            version: "v1.31.6+k3s1".into(),
            channel: Some("stable".into())
        })
    );
    // New nodes install the plan's release, never the channel.
    let p = diff(&f, "fp", &Observed::default(), &moved).unwrap();
    let v = p.changes[0]
        .attributes
        .iter()
        .find(|a| a.name == AttrName::K3sVersion)
        .unwrap();
    assert_eq!(v.after.as_deref(), Some("v1.31.6+k3s1"));
    let down = PlanOptions {
        release: Some(ReleaseChoice::Channel {
            name: "stable".into(),
            resolved: Err("connection refused".into()),
        }),
        ..Default::default()
    };
    let p = diff(&f, "fp", &o, &down).unwrap();
    assert!(!p.has_changes());
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("keeping the fleet's release v1.31.4+k3s1"))
    );
    assert!(matches!(
        diff(&f, "fp", &Observed::default(), &down),
        Err(PlanError::Release(_))
    ));
}

#[test]
fn the_api_is_reached_through_a_server_the_plan_leaves_alone() {
    let f = fleet("");
    let mut o = in_sync(&f);
    let servers: Vec<String> = fleet::desired_vms(&f)
        .iter()
        .filter(|d| d.role == fleet::Role::Server)
        .map(|d| d.name.clone())
        .collect();
    let opts = PlanOptions {
        members_removed: true,
        ..Default::default()
    };
    let p = diff(&f, "fp", &o, &opts).unwrap();
    assert_eq!(p.api_server(&servers).as_ref(), Some(&servers[0]));
    // The first server is being replaced: talk to the second.
    o.vms[0].image = "other".into();
    let p = diff(&f, "fp", &o, &opts).unwrap();
    assert!(
        p.changes
            .iter()
            .any(|c| c.vm == servers[0] && c.action == Action::Replace)
    );
    assert_eq!(p.api_server(&servers).as_ref(), Some(&servers[1]));
    // ... and the second resized too: the third.
    o.vms[1].allocated_cpus = 1;
    let p = diff(&f, "fp", &o, &opts).unwrap();
    assert_eq!(p.api_server(&servers).as_ref(), Some(&servers[2]));
    // Only servers that run count.
    assert_eq!(p.api_server(&servers[..2]), None);
}

/// A pool holds the indices it has (a create-before-destroy replacement
/// moved an agent to a new one): held VMs are kept, a shrink removes the
/// highest index, a grow fills the lowest free one.
#[test]
fn pools_keep_the_indices_they_hold() {
    let f = fleet("");
    let mut o = in_sync(&f);
    let web = |i: u32| DesiredVm {
        name: format!("demo-web{i}"),
        index: i,
        ..fleet::desired_vms(&f)[3].clone()
    };
    let mut share = o.shares["demo-web1"].clone();
    share.vm_name = "demo-web3".into();
    o.shares.insert("demo-web3".into(), share);
    o.vms.push(observed_vm(&f, &web(3)));
    let node = o.nodes.as_ref().unwrap()["demo-web1"].clone();
    o.nodes.as_mut().unwrap().insert("demo-web3".into(), node);
    let mut gone = observed_vm(
        &f,
        &DesiredVm {
            name: "demo-batch1".into(),
            pool: "batch".into(),
            ..web(1)
        },
    );
    gone.tags = vec![
        fleet::ownership_tag("demo"),
        fleet::pool_tag("batch"),
        fleet::role_tag(fleet::Role::Agent),
    ];
    o.vms.push(gone);
    let p = plan(&f, &o);
    assert_eq!(
        actions(&p),
        [
            (Action::Delete, "demo-batch1"),
            (Action::Delete, "demo-web3")
        ]
    );
    assert_eq!(p.changes[1].reasons, ["pool \"web\" shrank to 2"]);
    assert_eq!(
        p.changes[0].reasons,
        ["pool \"batch\" is no longer in the fleet"]
    );
    // web1 went (replaced by web3, its Node removed with it): web2 and
    // web3 are the pool now.
    o.vms
        .retain(|v| v.vm_name != "demo-web1" && v.vm_name != "demo-batch1");
    o.nodes.as_mut().unwrap().remove("demo-web1");
    assert!(!plan(&f, &o).has_changes(), "{:?}", actions(&plan(&f, &o)));
    // Growing to 3 fills the lowest free index.
    let mut grown = f.clone();
    grown.pools[0].count = 3;
    assert_eq!(actions(&plan(&grown, &o)), [(Action::Create, "demo-web1")]);
}

#[test]
fn unowned_vms_are_never_touched_and_collisions_are_errors() {
    let f = fleet("");
    let mut o = in_sync(&f);
    let mut stranger = o.vms[4].clone();
    stranger.vm_name = "demo-web9".into();
    stranger.tags = vec!["mine".into()];
    o.vms.push(stranger);
    let p = plan(&f, &o);
    assert!(!p.has_changes());
    assert!(p.warnings[0].contains("demo-web9") && p.warnings[0].contains("not owned"));

    o.vms[4].tags = vec!["mine".into()];
    match diff(&f, "fp", &o, &PlanOptions::default()) {
        Err(PlanError::Collision { vm, .. }) => assert_eq!(vm, "demo-web2"),
        other => panic!("{other:?}"),
    }
    let d = diff(
        &f,
        "fp",
        &o,
        &PlanOptions {
            destroy: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        d.changes
            .iter()
            .all(|c| c.vm != "demo-web2" && c.vm != "demo-web9")
    );
}

#[test]
fn destroy_deletes_everything_owned_highest_index_first() {
    let f = fleet("");
    let p = diff(
        &f,
        "fp",
        &in_sync(&f),
        &PlanOptions {
            destroy: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        actions(&p),
        [
            (Action::Delete, "demo-cp3"),
            (Action::Delete, "demo-cp2"),
            (Action::Delete, "demo-cp1"),
            (Action::Delete, "demo-web2"),
            (Action::Delete, "demo-web1"),
        ]
    );
    assert_eq!(p.mode, crate::core::plan::Mode::Destroy);
    assert!(p.warnings.is_empty());
}

#[test]
fn a_teardown_plan_of_a_protected_fleet_says_it_will_be_refused() {
    let mut f = fleet("");
    f.protect = true;
    let destroy = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    let p = diff(&f, "fp", &in_sync(&f), &destroy).unwrap();
    assert_eq!(p.warnings, [PROTECTED_WARNING]);
    // A teardown in the human format: every VM deleted (the servers
    // first, the highest index first), the refusal as a warning.
    insta::assert_snapshot!("plan_human_protected_teardown", render::human(&p, false));
    let p = plan(&f, &in_sync(&f));
    assert!(p.warnings.is_empty(), "only teardowns are refused");
}

#[test]
fn quorum_is_protected_without_member_removal() {
    let f = fleet("");
    let mut o = in_sync(&f);
    o.vms[0].image = "other".into();
    o.vms[1].image = "other".into();
    let p = diff(&f, "fp", &o, &PlanOptions::default()).unwrap();
    assert!(
        p.refusals[0].contains("takes 2 of the 3 existing servers down")
            && p.refusals[0].contains("at most 1 server(s)"),
        "{:?}",
        p.refusals
    );
    let one = diff(
        &f,
        "fp",
        &o,
        &PlanOptions {
            targets: vec!["demo-cp2".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(actions(&one), [(Action::Replace, "demo-cp2")]);
    assert!(!one.is_refused());
    let rolling = diff(
        &f,
        "fp",
        &o,
        &PlanOptions {
            members_removed: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!rolling.is_refused());
}

#[test]
fn targets_narrow_and_unknown_targets_fail() {
    let f = fleet("");
    let p = diff(
        &f,
        "fp",
        &Observed::default(),
        &PlanOptions {
            targets: vec!["web".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        actions(&p),
        [(Action::Create, "demo-web1"), (Action::Create, "demo-web2")]
    );
    assert!(matches!(
        diff(
            &f,
            "fp",
            &Observed::default(),
            &PlanOptions {
                targets: vec!["nope".into()],
                ..Default::default()
            }
        ),
        Err(PlanError::UnknownTarget(_))
    ));
}

#[test]
fn observed_fingerprint_ignores_status_and_other_fleets() {
    let f = fleet("");
    let mut o = in_sync(&f);
    let before = o.fingerprint(&f);
    o.vms[0].status = "starting".into();
    o.shares.clear();
    o.vms.push(VmInfo {
        vm_name: "other-cp1".into(),
        tags: vec![fleet::ownership_tag("other")],
        ..Default::default()
    });
    assert_eq!(o.fingerprint(&f), before);
    // Hashed line by line, it is still the hash of the sorted lines joined
    // by "\n": plans saved by earlier versions keep matching.
    let mut lines: Vec<String> = o
        .in_scope(&f)
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
                v.disk_capacity_bytes
            )
        })
        .collect();
    lines.sort();
    assert!(lines.len() > 1);
    assert_eq!(
        before,
        crate::core::plan::hex12(lines.join("\n").as_bytes())
    );
    o.vms[1].allocated_cpus = 9;
    assert_ne!(o.fingerprint(&f), before);
}

/// One plan with every action, a warning, a secret k3s flag and outside
/// text to escape, as each format shows it. The colour codes and the
/// escaping rules have their own targeted tests below.
fn representative_plan() -> Plan {
    let f = fixtures::parsed(&fleet_text("").replace(
        "  version: v1.31.4+k3s1\n",
        "  version: v1.31.4+k3s1\n  serverArgs:\n    - --etcd-s3\n    - {flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}\n",
    ));
    let mut o = in_sync(&f);
    // demo-cp3 is missing: created, with its k3s flags, the secret one
    // named by where it comes from.
    o.vms.retain(|v| v.vm_name != "demo-cp3");
    let web = |o: &mut Observed, name: &str| -> usize {
        o.vms.iter().position(|v| v.vm_name == name).unwrap()
    };
    // demo-cp1 runs an older patch release: upgraded in place.
    let i = web(&mut o, "demo-cp1");
    let older = "v1.31.2+k3s1";
    o.vms[i].comment = comment_for(&f, &fleet::desired_vms(&f)[0], Some(older));
    if let Some(n) = o.nodes.as_mut().and_then(|n| n.get_mut("demo-cp1")) {
        n.version = Some(older.to_string());
    }
    // demo-web1 has one vCPU: resized in place.
    let i = web(&mut o, "demo-web1");
    o.vms[i].allocated_cpus = 1;
    // demo-web2 runs another image, named by exe.dev with an escape
    // sequence and markdown's specials: replaced, the image escaped.
    let i = web(&mut o, "demo-web2");
    o.vms[i].image = "ubuntu\u{1b}]0;TITLE\u{7}`|<!--".into();
    // demo-old1 belongs to a pool the fleet no longer has: deleted.
    let i = web(&mut o, "demo-web1");
    let mut extra = o.vms[i].clone();
    extra.vm_name = "demo-old1".into();
    for t in &mut extra.tags {
        if *t == fleet::pool_tag("web") {
            *t = fleet::pool_tag("old");
        }
    }
    extra.allocated_cpus = 2;
    o.vms.push(extra);
    // A VM with the fleet's tag but not one of its names: a warning.
    o.vms.push(VmInfo {
        vm_name: "precious-db".into(),
        status: "running".into(),
        tags: vec![fleet::ownership_tag("demo")],
        ..Default::default()
    });
    // The API answers (the Nodes above): servers roll one at a time.
    let rolling = PlanOptions {
        members_removed: true,
        ..Default::default()
    };
    let p = diff(&f, "fp", &o, &rolling).unwrap();
    assert_eq!(
        (
            p.summary.create,
            p.summary.update,
            p.summary.upgrade,
            p.summary.replace,
            p.summary.delete
        ),
        (1, 1, 1, 1, 1),
        "{:?}",
        actions(&p)
    );
    assert!(!p.warnings.is_empty() && p.refusals.is_empty(), "{p:?}");
    p
}

#[test]
fn a_representative_plan_in_every_format() {
    let p = representative_plan();
    insta::assert_snapshot!("plan_human", render::human(&p, false));
    insta::assert_snapshot!("plan_markdown", render::markdown(&p));
    insta::assert_snapshot!("plan_json", render::json(&p));
}

/// Colour is the tool's own SGR codes around the markers, nothing else.
#[test]
fn colour_is_only_the_tools_own_codes() {
    let p = representative_plan();
    let plain = render::human(&p, false);
    let coloured = render::human(&p, true);
    assert!(coloured.contains("\x1b[32m+"), "{coloured}");
    assert!(!plain.contains('\x1b'), "{plain}");
    let stripped = [
        "\u{1b}[0m",
        "\u{1b}[32m",
        "\u{1b}[33m",
        "\u{1b}[35m",
        "\u{1b}[31m",
    ]
    .iter()
    .fold(coloured, |s, code| s.replace(code, ""));
    assert_eq!(stripped, plain);
}

#[test]
fn a_replacement_first_server_joins_the_survivors_instead_of_initialising() {
    let f = fleet("");
    let cp1 = fleet::desired_vms(&f).remove(0);
    let secrets = spec::ClusterSecrets::placeholders();
    let init = spec::new_vm(&f, &cp1, &secrets, None, VERSION).unwrap();
    let join = spec::new_vm(&f, &cp1, &secrets, Some("demo-cp2"), VERSION).unwrap();
    let script =
        |n: &crate::core::api::NewVm| n.setup_script.as_ref().unwrap().expose().to_string();
    assert!(script(&init).contains("cluster-init"));
    assert!(!script(&join).contains("cluster-init"));
    assert!(script(&join).contains("JOIN='demo-cp2.tail1234.ts.net'"));
    assert_eq!(
        init.comment, join.comment,
        "same spec: no perpetual replace"
    );
}

#[test]
fn server_resizes_count_as_downtime_and_the_only_server_warning_always_shows() {
    let f = fleet("");
    let mut o = in_sync(&f);
    for v in o.vms.iter_mut().take(3) {
        v.allocated_cpus = 1; // all three servers would restart
    }
    let p = diff(&f, "fp", &o, &PlanOptions::default()).unwrap();
    assert!(
        p.refusals[0].contains("takes 3 of the 3"),
        "{:?}",
        p.refusals
    );
    assert!(p.changes.iter().all(|c| c.restart == Some(Restart::Vm)));
    let rolling = PlanOptions {
        members_removed: true,
        ..Default::default()
    };
    assert_eq!(diff(&f, "fp", &o, &rolling).unwrap().summary.update, 3);

    let single = fixtures::parsed(&pinned(""));
    let mut o = in_sync(&single);
    o.vms[0].image = "other".into();
    for opts in [PlanOptions::default(), rolling] {
        let p = diff(&single, "fp", &o, &opts).unwrap();
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("only server") && w.contains("etcd data is lost"))
        );
    }
}

#[test]
fn markdown_is_summarised_under_the_limit_and_says_where_the_full_plan_is() {
    // 500 VMs to create: far over GitHub's comment limit when whole.
    let pools: String = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|p| format!("  - name: pool{p}\n    count: 100\n"))
        .collect();
    let f = fleet(&pools);
    let mut p = plan(&f, &Observed::default());
    p.warnings.push("an important warning".into());
    assert_eq!(p.summary.create, 505);
    let whole = render::markdown(&p);
    assert!(whole.len() > render::MARKDOWN_MAX_BYTES, "{}", whole.len());
    let md = render::markdown_within(
        &p,
        render::MARKDOWN_MAX_BYTES,
        "see https://ci.example/run/1",
    );
    assert!(md.len() <= render::MARKDOWN_MAX_BYTES, "{}", md.len());
    // What a summary looks like, on a budget that leaves room for a few
    // changes: the heading, the note saying where the whole plan is, the
    // warnings, counts per pool, then changes, servers first.
    let small_budget = render::markdown_within(&p, 3_000, "see https://ci.example/run/1");
    insta::assert_snapshot!("plan_markdown_summarised", small_budget);
    // Whatever the budget, everything before the list of changes is the
    // same; the full budget lists every change and leaves out only the
    // attribute changes.
    let Some(changes_at) = small_budget.find("| action |") else {
        panic!("no list of changes: {small_budget}");
    };
    assert!(md.starts_with(&small_budget[..changes_at]), "{md}");
    assert!(md.contains("| ➕ create | `demo-poole100` |"), "{md}");
    let tail = md.lines().last().unwrap_or_default();
    assert_eq!(
        tail,
        "_Not shown here: the attribute changes; see https://ci.example/run/1._"
    );
    // Tight budgets still hold, and say what was left out.
    for max in [2_000, 5_000, 20_000] {
        let md = render::markdown_within(&p, max, "x");
        assert!(md.len() <= max, "{max}: {}", md.len());
        let tail = md.lines().last().unwrap_or_default();
        assert!(tail.contains("more changes"), "{max}: {tail}");
    }
    // A plan that fits is given whole.
    let small = plan(&fleet(""), &Observed::default());
    assert_eq!(
        render::markdown_within(&small, render::MARKDOWN_MAX_BYTES, "x"),
        render::markdown(&small)
    );
}

#[test]
fn new_vms_show_their_k3s_flags_with_secrets_redacted() {
    let src = pinned("pools:\n  - name: web\n    count: 1\n").replace(
        "  version: v1.31.4+k3s1\n",
        "  version: v1.31.4+k3s1\n  serverArgs:\n    - --etcd-s3\n    - {flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}\n",
    );
    let f = fixtures::parsed(&src);
    let p = plan(&f, &Observed::default());
    let args = |vm: &str| {
        p.changes
            .iter()
            .find(|c| c.vm == vm)
            .and_then(|c| c.attributes.iter().find(|a| a.name == AttrName::K3sArgs))
            .and_then(|a| a.after.clone())
    };
    assert_eq!(
        args("demo-cp1").as_deref(),
        Some("--etcd-s3 --etcd-s3-secret-key=(secret from env ETCD_S3_SECRET)")
    );
    assert_eq!(args("demo-web1"), None, "agents have no extra flags");
    // Adding a secret flag changes the servers in place (its reference,
    // never its value, is in the recorded settings), and says what they
    // get.
    let without = fleet::parse(
        &src.replace(
            "    - {flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}\n",
            "",
        ),
        "f.yaml",
    )
    .unwrap();
    let p = plan(&f, &in_sync(&without));
    assert_eq!(actions(&p), [(Action::Update, "demo-cp1")]);
    assert_eq!(p.changes[0].restart, Some(Restart::K3s));
    let a = p.changes[0]
        .attributes
        .iter()
        .find(|a| a.name == AttrName::ServerArgs)
        .unwrap();
    assert!(
        a.before
            .as_deref()
            .unwrap()
            .starts_with("(other: recorded ")
    );
    assert_eq!(
        a.after.as_deref(),
        Some("--etcd-s3 --etcd-s3-secret-key=(secret from env ETCD_S3_SECRET)")
    );
}

/// A tag alone is not ownership: `precious-db` tagged for the fleet and a
/// fleet-named VM without the spec comment are warned about, never
/// deleted, neither by apply nor by destroy.
#[test]
fn a_tag_alone_is_not_ownership() {
    let f = fleet("");
    let mut o = in_sync(&f);
    o.vms.push(VmInfo {
        vm_name: "precious-db".into(),
        tags: vec![fleet::ownership_tag("demo")],
        ..Default::default()
    });
    let mut handmade = o.vms[4].clone();
    handmade.vm_name = "demo-web7".into();
    handmade.comment = "made by hand".into();
    o.vms.push(handmade);
    for destroy in [false, true] {
        let p = diff(
            &f,
            "fp",
            &o,
            &PlanOptions {
                destroy,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            p.changes
                .iter()
                .all(|c| c.vm != "precious-db" && c.vm != "demo-web7"),
            "{:?}",
            actions(&p)
        );
        let w = p.warnings.join("\n");
        assert!(w.contains("precious-db carries fleet \"demo\"'s ownership tag but lacks a name fleet \"demo\" generates"), "{w}");
        assert!(
            w.contains(
                "demo-web7 carries fleet \"demo\"'s ownership tag but lacks the spec comment"
            ),
            "{w}"
        );
    }
    // Under a desired name, the same VM is a collision naming what it lacks.
    o.vms[4].comment = String::new();
    match diff(&f, "fp", &o, &PlanOptions::default()) {
        Err(e @ PlanError::Collision { .. }) => {
            assert!(e.to_string().contains("\"demo-web2\""), "{e}");
            assert!(e.to_string().contains("lacks the spec comment"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// Fleet `demo-eu`'s VMs (`demo-eu-cp1`) start with `demo-` but are not
/// names fleet `demo` generates, and carry `demo-eu`'s tag: they change
/// neither `demo`'s plan, nor its warnings, nor its observed fingerprint.
#[test]
fn a_fleet_named_with_this_ones_prefix_is_invisible() {
    let f = fleet("");
    let o = in_sync(&f);
    let before = plan(&f, &o);
    let mut with_eu = o.clone();
    for name in ["demo-eu-cp1", "demo-eu-web1", "demo-eu-web2"] {
        with_eu.vms.push(VmInfo {
            vm_name: name.into(),
            status: "running".into(),
            comment: "exedev-k8s spec=2.0123456789ab".into(),
            tags: vec![fleet::ownership_tag("demo-eu")],
            allocated_cpus: 2,
            ..Default::default()
        });
    }
    let after = plan(&f, &with_eu);
    assert_eq!(after.warnings, before.warnings);
    assert_eq!(after.changes, before.changes);
    assert_eq!(after.observed_fingerprint, before.observed_fingerprint);
    // An untagged VM under a name this fleet generates still counts.
    with_eu.vms.push(VmInfo {
        vm_name: "demo-web3".into(),
        ..Default::default()
    });
    let stray = plan(&f, &with_eu);
    assert_ne!(stray.observed_fingerprint, before.observed_fingerprint);
    assert!(stray.warnings.iter().any(|w| w.contains("demo-web3")));
}

/// What exe.dev reports reaches terminals and pull requests only escaped:
/// an escape sequence in a comment, `<!--` in an image, backticks and pipes
/// in a VM name.
#[test]
fn outside_text_is_escaped_in_every_format() {
    let f = fleet("");
    let mut o = in_sync(&f);
    o.vms[4].comment = "exedev-k8s spec=\u{1b}]0;TITLE\u{7}\u{1b}[31mRED\u{9b}2J".into();
    o.vms[3].image = "x<!-- hidden -->`|\u{202e}".into();
    o.vms.push(VmInfo {
        vm_name: "demo-web9".into(),
        status: "running\u{1b}[2J".into(),
        tags: vec![fleet::ownership_tag("demo")],
        comment: "exedev-k8s spec=\u{1b}[31m".into(),
        image: "a\rb".into(),
        ..Default::default()
    });
    let p = diff(&f, "fp", &o, &PlanOptions::default()).unwrap();
    let evil = |s: &str| s.chars().any(crate::base::text::is_control);
    // The raw plan does carry them: this is what the renderers must handle.
    assert!(p.changes.iter().any(|c| c.reasons.iter().any(|r| evil(r))));

    let human = render::human(&p, false);
    assert!(
        !human
            .chars()
            .any(|c| crate::base::text::is_control(c) && c != '\n'),
        "{human}"
    );
    assert!(
        human.contains("\\u{1b}]0;TITLE\\u{7}"),
        "visible, not hidden: {human}"
    );
    // With colour, the only escapes are the tool's own SGR codes.
    let coloured = render::human(&p, true);
    let stripped = [
        "\u{1b}[0m",
        "\u{1b}[32m",
        "\u{1b}[33m",
        "\u{1b}[35m",
        "\u{1b}[31m",
    ]
    .iter()
    .fold(coloured, |s, code| s.replace(code, ""));
    assert!(
        !stripped
            .chars()
            .any(|c| crate::base::text::is_control(c) && c != '\n'),
        "{stripped}"
    );

    let md = render::markdown(&p);
    // Outside the fenced block (where nothing is markdown or HTML), no
    // comment can open; inside, no line can close the fence early.
    let fence_at = md.find("```diff").unwrap_or(md.len());
    let (outside, block) = md.split_at(fence_at);
    assert!(!outside.contains("<!--"), "{md}");
    let body = &block[7..block[7..].find("```").map_or(block.len(), |i| i + 7)];
    assert!(
        body.contains("x<!-- hidden -->"),
        "literal in the block: {md}"
    );
    assert!(
        !md.chars()
            .any(|c| crate::base::text::is_control(c) && c != '\n'),
        "{md}"
    );
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        // Every table row keeps its five cells: no pipe leaked.
        let cells = line.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 6, "{line}");
    }

    let json = render::json(&p);
    assert!(
        !json
            .chars()
            .any(|c| crate::base::text::is_control(c) && !matches!(c, '\n')),
        "{json}"
    );
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p, "escaping keeps the values");
}

/// The fleet of [`fleet`] with the web pool's `share` removed.
fn unshared() -> Fleet {
    fixtures::parsed(&fleet_text("").replace("    share: {port: 8080, public: true}\n", ""))
}

#[test]
fn shared_vms_carry_the_share_tag() {
    let f = fleet("");
    for d in fleet::desired_vms(&f) {
        assert_eq!(
            d.tags.iter().any(|t| t == fleet::SHARE_TAG),
            d.share.is_some(),
            "{}",
            d.name
        );
    }
    assert!(fleet::SHARE_TAG.starts_with(fleet::RESERVED_TAG_PREFIX));
}

#[test]
fn a_pool_that_loses_its_share_goes_private_then_loses_the_tag() {
    let shared = fleet("");
    let o = in_sync(&shared);
    let p = plan(&unshared(), &o);
    assert_eq!(
        actions(&p),
        [(Action::Update, "demo-web1"), (Action::Update, "demo-web2")]
    );
    let c = &p.changes[0];
    assert_eq!(
        c.ops,
        [
            Op::ShareVisibility { public: false },
            Op::RemoveTags {
                tags: vec![fleet::SHARE_TAG.into()]
            },
        ],
        "private first: the tag is what makes later plans look"
    );
    assert!(
        c.reasons.iter().any(|r| r.contains("made private")),
        "{c:?}"
    );
    assert!(c.attributes.iter().any(|a| a.name == AttrName::SharePublic
        && a.before.as_deref() == Some("true")
        && a.after.as_deref() == Some("false")));

    // Already private: only the tag goes.
    let mut o2 = o.clone();
    for s in o2.shares.values_mut() {
        s.status = Visibility::Private;
    }
    let p = plan(&unshared(), &o2);
    assert_eq!(
        p.changes[0].ops,
        [Op::RemoveTags {
            tags: vec![fleet::SHARE_TAG.into()]
        }]
    );

    // Booting (share unknown): the tag stays until the proxy can be read.
    let mut o3 = o.clone();
    o3.shares.clear();
    for v in &mut o3.vms {
        v.status = "starting".into();
    }
    let p = plan(&unshared(), &o3);
    assert!(
        p.changes.iter().all(|c| c.ops.iter().all(|op| !matches!(
            op,
            Op::RemoveTags { tags } if tags.iter().any(|t| t == fleet::SHARE_TAG)
        ))),
        "{:#?}",
        p.changes
    );

    // Running but its `share show` missing: made private anyway (idempotent).
    let mut o4 = o.clone();
    o4.shares.clear();
    let p = plan(&unshared(), &o4);
    assert_eq!(p.changes[0].ops[0], Op::ShareVisibility { public: false });
}

#[test]
fn a_pool_that_gains_a_share_is_tagged_before_its_proxy_opens() {
    let f = unshared();
    let o = in_sync(&f);
    let p = plan(&fleet(""), &o);
    let c = &p.changes[0];
    assert_eq!(c.vm, "demo-web1");
    let tag_at = c
        .ops
        .iter()
        .position(|op| matches!(op, Op::AddTags { .. }))
        .unwrap();
    let public_at = c
        .ops
        .iter()
        .position(|op| matches!(op, Op::ShareVisibility { public: true }))
        .unwrap();
    assert!(tag_at < public_at, "{:?}", c.ops);
}

/// Rendering only the longest-named VM of each group checks exactly what
/// rendering every VM would: for label sizes around the 10 KiB limit, the
/// two agree, and the sweep sees big9 fit while big10 does not. (Each
/// filler label adds fewer bytes to the script than the last label's 63
/// lengths span, so the sweep leaves no gap the limit could fall into.)
#[test]
fn check_scripts_on_the_worst_case_matches_checking_every_vm() {
    let limit = crate::core::bootstrap::MAX_SETUP_SCRIPT_BYTES;
    let build = |n: usize, len: usize| {
        let mut labels = String::new();
        for i in 0..n {
            labels.push_str(&format!("      l{i:03}: {}\n", "v".repeat(50)));
        }
        labels.push_str(&format!("      zz: {}\n", "v".repeat(len)));
        fixtures::parsed(&pinned(&format!(
            "pools:\n  - name: big\n    count: 10\n    labels:\n{labels}"
        )))
    };
    let size = |f: &Fleet, name: &str| {
        let vms = fleet::desired_vms(f);
        let d = vms.iter().find(|d| d.name == name).unwrap();
        let input =
            spec::bootstrap_input(f, d, &spec::ClusterSecrets::placeholders(), None, VERSION);
        crate::core::bootstrap::render_unchecked_len(&input)
    };
    let mut n = 0;
    while size(&build(n + 1, 1), "demo-big10") <= limit {
        n += 1;
    }
    let mut straddled = false;
    for labels in [n.saturating_sub(1), n] {
        for len in 1..=63 {
            let f = build(labels, len);
            let vms = fleet::desired_vms(&f);
            let every = vms.iter().all(|d| size(&f, &d.name) <= limit);
            assert_eq!(
                spec::check_scripts(&f, &vms, VERSION).is_ok(),
                every,
                "{labels} labels, last {len}"
            );
            straddled |= size(&f, "demo-big9") <= limit && size(&f, "demo-big10") > limit;
        }
    }
    assert!(
        straddled,
        "the sweep must reach the limit between big9 and big10"
    );
}

/// A warning that quotes a multi-line error (a KubeAccessError's advice
/// under it) shows its lines as lines, in every text format: never a
/// literal `\n`.
#[test]
fn multi_line_warnings_keep_their_lines() {
    let f = fleet("");
    let mut p = plan(&f, &Observed::default());
    p.warnings.push(
        "Kubernetes API not reachable (cannot reach the Kubernetes API at https://demo-cp1.tail1234.ts.net:6443: connection refused\n  check that this machine is on the tailnet): nodes cannot be drained".into(),
    );
    let md = render::markdown(&p);
    let human = render::human(&p, false);
    for out in [&md, &human] {
        assert!(!out.contains("\\n"), "{out}");
    }
    let warning_md = &md[md.find("> [!WARNING]").expect("warnings")..];
    insta::assert_snapshot!(warning_md, @r"
    > [!WARNING]
    > Kubernetes API not reachable (cannot reach the Kubernetes API at https://demo-cp1.tail1234.ts.net:6443: connection refused
    > check that this machine is on the tailnet): nodes cannot be drained
    ");
    let warning_human = &human
        [human.find("Warnings:").expect("warnings")..human.find("\nPlan:").expect("plan line")];
    insta::assert_snapshot!(warning_human, @r"
    Warnings:
      ! Kubernetes API not reachable (cannot reach the Kubernetes API at https://demo-cp1.tail1234.ts.net:6443: connection refused
        check that this machine is on the tailnet): nodes cannot be drained
    ");
}

/// A saved plan is a claim: each field apply acts on is checked against
/// the plan re-derived now, and the refusal names what differs.
#[test]
fn a_saved_plan_that_disagrees_with_the_fleet_now_is_refused_by_what_differs() {
    use super::file::{PlanFileError, check_fresh};
    let f = fleet("");
    let o = in_sync(&f);
    let fresh = plan(&f, &o);
    assert!(check_fresh(&fresh, &fresh).is_ok());
    let refused = |edit: &dyn Fn(&mut Plan)| {
        let mut saved = fresh.clone();
        edit(&mut saved);
        let e = check_fresh(&saved, &fresh).unwrap_err();
        assert!(e.is_stale(), "{e}");
        e
    };
    let e = refused(&|p| p.release.as_mut().unwrap().version = "v1.31.6+k3s1".into());
    assert!(matches!(e, PlanFileError::ReleaseNotPinned { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "the plan installs k3s v1.31.6+k3s1, but the fleet file pins k3s.version v1.31.4+k3s1 (was the plan file edited?)"
    );
    let e = refused(&|p| p.fleet = "other\x1b[31m".into());
    assert!(e.to_string().contains("for fleet \"other"), "{e}");
    assert!(
        !e.to_string().contains('\x1b'),
        "terminal escapes from a file are not printed"
    );
    let e = refused(&|p| p.mode = Mode::Destroy);
    assert!(matches!(e, PlanFileError::ModeDiffers { .. }), "{e}");
    let e = refused(&|p| p.fleet_fingerprint = "0".into());
    assert!(matches!(e, PlanFileError::FleetChanged { .. }), "{e}");
    let creates = plan(&f, &Observed::default());
    let mut saved = creates.clone();
    saved.changes.pop();
    let e = check_fresh(&saved, &creates).unwrap_err();
    assert!(matches!(e, PlanFileError::ChangesDiffer { .. }), "{e}");
    let dropped = &creates.changes.last().unwrap().vm;
    assert!(
        e.to_string()
            .contains(&format!("{dropped}: none in the plan, create now")),
        "{e}"
    );
    // A channel that moved since the plan: stale, and says to where.
    let channel = |v: &str| PlanOptions {
        release: Some(ReleaseChoice::Channel {
            name: "stable".into(),
            resolved: Ok(crate::base::release::Release::parse(v).unwrap()),
        }),
        ..Default::default()
    };
    let then = diff(&f, "fp", &o, &channel("v1.31.5+k3s1")).unwrap();
    let now = diff(&f, "fp", &o, &channel("v1.31.6+k3s1")).unwrap();
    let e = check_fresh(&then, &now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the plan is stale: it installs k3s v1.31.5+k3s1 from channel stable, which now resolves to v1.31.6+k3s1"
    );
}

/// Without the API, VMs whose comment records no labels (spec scheme 2)
/// are named once: a label change to them cannot be seen.
#[test]
fn vms_that_record_no_labels_are_named_when_the_api_is_not_reachable() {
    let f = fleet("");
    let mut o = in_sync(&f);
    o.nodes = None;
    let p = plan(&f, &o);
    assert!(!p.has_changes());
    assert!(
        !p.warnings.iter().any(|w| w.contains("do not record")),
        "{:?}",
        p.warnings
    );
    let desired = fleet::desired_vms(&f);
    for (i, d) in desired.iter().enumerate().take(2) {
        o.vms[i].comment = spec::comment_with(&f, d, Some(VERSION), None);
    }
    let p = plan(&f, &o);
    assert!(!p.has_changes(), "never a replacement: {:?}", p.changes);
    let w: Vec<&String> = p
        .warnings
        .iter()
        .filter(|w| w.contains("do not record"))
        .collect();
    assert_eq!(w.len(), 1, "{:?}", p.warnings);
    assert!(
        w[0].starts_with(&format!("{} and 1 more do not record", o.vms[0].vm_name)),
        "{}",
        w[0]
    );
}

/// `etcd.snapshots` added to a running fleet: a k3s change in place on the
/// servers only (one at a time, as every server change), shown as k3s
/// settings with the S3 keys as where they come from; agents untouched. A
/// new server's comment records what its setup script gave it (no snapshot
/// settings: they come by SSH once it is Ready).
#[test]
fn snapshot_settings_change_servers_in_place_and_show_no_key() {
    let f = fleet("");
    let o = in_sync(&f);
    let g = fixtures::parsed(
        &(fleet_text("")
            + "etcd:
  snapshots:
    schedule: \"0 */6 * * *\"
    retention: 5
    s3:
      endpoint: s3.emulator.internal
      bucket: prod-k3s-snapshots
      accessKey: {env: S3_ACCESS_KEY}
      secretKey: {file: secrets/s3-secret-key}
"),
    );
    let p = diff(
        &g,
        "fp",
        &o,
        &PlanOptions {
            members_removed: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(p.refusals.is_empty(), "{:?}", p.refusals);
    assert_eq!(
        actions(&p),
        [
            (Action::Update, "demo-cp3"),
            (Action::Update, "demo-cp2"),
            (Action::Update, "demo-cp1"),
        ]
    );
    for c in &p.changes {
        let names: Vec<&AttrName> = c.attributes.iter().map(|a| &a.name).collect();
        assert_eq!(names, [&AttrName::ServerArgs], "{}", c.vm);
        assert_eq!(c.restart, Some(Restart::K3s));
    }
    for text in [
        render::human(&p, false),
        render::markdown(&p),
        render::json(&p),
    ] {
        assert!(
            text.contains("etcd-snapshot-schedule-cron=0 */6 * * *"),
            "{text}"
        );
        assert!(text.contains("etcd-s3-bucket=prod-k3s-snapshots"), "{text}");
        assert!(
            text.contains("etcd-s3-secret-key=(secret from file secrets/s3-secret-key)"),
            "{text}"
        );
    }
    // In sync once applied (the comment records the settings).
    assert!(!plan(&g, &in_sync(&g)).has_changes());

    let secrets = spec::ClusterSecrets::placeholders();
    let desired = fleet::desired_vms(&g);
    let server = desired
        .iter()
        .find(|d| d.role == fleet::Role::Server)
        .unwrap();
    let agent = desired
        .iter()
        .find(|d| d.role == fleet::Role::Agent)
        .unwrap();
    let new = spec::new_vm(&g, server, &secrets, None, VERSION).unwrap();
    assert_eq!(new.comment, Some(comment_for(&f, server, Some(VERSION))));
    assert!(spec::settles_after_boot(&g, fleet::Role::Server));
    assert!(!spec::settles_after_boot(&g, fleet::Role::Agent));
    assert!(!spec::settles_after_boot(&f, fleet::Role::Server));
    let new = spec::new_vm(&g, agent, &secrets, None, VERSION).unwrap();
    assert_eq!(new.comment, Some(comment_for(&g, agent, Some(VERSION))));
    assert_eq!(
        spec::config_fingerprint(&f, fleet::Role::Agent),
        spec::config_fingerprint(&g, fleet::Role::Agent)
    );
}

/// [`in_sync`], each server's Node labelled etcd as k3s labels it.
fn with_etcd_nodes(f: &Fleet) -> Observed {
    let mut o = in_sync(f);
    for (name, n) in o.nodes.iter_mut().flatten() {
        if name.contains("-cp") {
            n.labels
                .insert("node-role.kubernetes.io/etcd".into(), "true".into());
        }
    }
    o
}

fn without_vms(mut o: Observed, gone: &[&str]) -> Observed {
    o.vms.retain(|v| !gone.contains(&v.vm_name.as_str()));
    o
}

#[test]
fn a_server_vm_gone_with_its_node_left_is_a_lost_server_replaced_member_first() {
    let f = fleet("");
    let o = without_vms(with_etcd_nodes(&f), &["demo-cp2"]);
    let p = plan(&f, &o);
    assert_eq!(actions(&p), [(Action::Replace, "demo-cp2")]);
    let c = &p.changes[0];
    assert_eq!(c.lost, Some(Lost::VmGone));
    assert!(
        c.reasons[0].starts_with(
            "demo-cp2 is lost: its VM is gone from exe.dev but its node, and so its etcd member, remains; its etcd member will be removed (its node deleted), then a new VM created and joined"
        ),
        "{:?}",
        c.reasons
    );
    assert!(
        c.reasons[1].contains("remove device demo-cp2"),
        "{:?}",
        c.reasons
    );
    assert!(!p.is_refused(), "{:?}", p.refusals);
    assert_eq!(p.summary.replace, 1);
    assert_eq!(
        p.api_server(&["demo-cp1".into(), "demo-cp3".into()]),
        Some("demo-cp1".into())
    );
    // Apply needs the secrets of a new VM.
    assert!(p.creates_vms());
    // Without member removal for other changes (--skip-drain), a lost
    // server takes nothing down that is not down already.
    let skip = diff(
        &f,
        "fp",
        &o,
        &PlanOptions {
            members_removed: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!skip.is_refused(), "{:?}", skip.refusals);
    // No Node left (never joined, or removed already): a plain create.
    let mut no_node = o.clone();
    no_node.nodes.as_mut().unwrap().remove("demo-cp2");
    let p = plan(&f, &no_node);
    assert_eq!(actions(&p), [(Action::Create, "demo-cp2")]);
    assert_eq!(p.changes[0].lost, None);
    // An agent whose VM is gone has no etcd member, but its Node keeps
    // its node password, which k3s holds against a new VM of that name
    // (docs/facts/node-password.md): lost too, its Node deleted first.
    let agent = without_vms(with_etcd_nodes(&f), &["demo-web1"]);
    let p = plan(&f, &agent);
    assert_eq!(actions(&p), [(Action::Replace, "demo-web1")]);
    let c = &p.changes[0];
    assert_eq!(c.lost, Some(Lost::VmGone));
    assert_eq!(c.replacement, Some(Replacement::DestroyBeforeCreate));
    assert!(
        c.reasons[0]
            .starts_with("demo-web1 is lost: its VM is gone from exe.dev but its node remains")
            && c.reasons[0].contains("kube-system/demo-web1.node-password.k3s")
            && !c.reasons[0].contains("etcd"),
        "{:?}",
        c.reasons
    );
    assert!(
        !p.is_refused(),
        "a lost agent is no etcd member: {:?}",
        p.refusals
    );
    // Its Node gone too: a plain create.
    let mut clean = agent.clone();
    clean.nodes.as_mut().unwrap().remove("demo-web1");
    assert_eq!(actions(&plan(&f, &clean)), [(Action::Create, "demo-web1")]);
    // Below quorum, a lost agent is not named among the lost servers.
    let dark = without_vms(with_etcd_nodes(&f), &["demo-web1", "demo-cp2", "demo-cp3"]);
    let p = plan(&f, &dark);
    let refusal = p.refusals.join("\n");
    assert!(
        refusal.contains("demo-cp2, demo-cp3 are lost") && !refusal.contains("demo-web1"),
        "{refusal}"
    );
}

#[test]
fn a_server_node_not_ready_for_five_minutes_is_lost_and_its_vm_replaced() {
    let f = fleet("");
    let not_ready = |vm: &str, secs: u64| {
        let mut o = with_etcd_nodes(&f);
        o.nodes
            .as_mut()
            .unwrap()
            .get_mut(vm)
            .unwrap()
            .not_ready_secs = Some(secs);
        o
    };
    // Under the threshold: said, not acted on.
    let p = plan(&f, &not_ready("demo-cp3", LOST_AFTER_SECS - 1));
    assert!(!p.has_changes());
    assert!(
        p.warnings.contains(
            &"demo-cp3's node has not been Ready for 4m59s: if it stays so for 5m, a plan calls the server lost and replaces it"
                .to_string()
        ),
        "{:?}",
        p.warnings
    );
    let p = plan(&f, &not_ready("demo-cp3", 400));
    assert_eq!(actions(&p), [(Action::Replace, "demo-cp3")]);
    assert_eq!(p.changes[0].lost, Some(Lost::NotReady { secs: 400 }));
    assert!(
        p.changes[0].reasons[0].starts_with(
            "demo-cp3 is lost: its node has not been Ready for 6m40s (a server is lost after 5m); its etcd member will be removed (its node deleted), then its VM deleted and a new one created and joined"
        ),
        "{:?}",
        p.changes[0].reasons
    );
    assert!(!p.is_refused(), "{:?}", p.refusals);
    // An agent NotReady that long is no etcd member: nothing here.
    let p = plan(&f, &not_ready("demo-web2", 4000));
    assert!(!p.has_changes(), "{:?}", actions(&p));
}

#[test]
fn losing_a_quorum_of_servers_is_refused_naming_restore() {
    let f = fleet("");
    let o = without_vms(with_etcd_nodes(&f), &["demo-cp2", "demo-cp3"]);
    let p = plan(&f, &o);
    assert_eq!(
        actions(&p),
        [(Action::Replace, "demo-cp2"), (Action::Replace, "demo-cp3")]
    );
    assert_eq!(
        p.refusals,
        [
            "demo-cp2, demo-cp3 are lost and only 1 of the 3 etcd members is healthy (2 needed for quorum): etcd removes a member only with a quorum, so the dead members cannot be removed and no server can join. Restore the cluster from a snapshot instead: exedev-k8s restore -f FLEET --snapshot NAME (exedev-k8s snapshot list shows the snapshots)"
        ]
    );
    // One lost and another NotReady (not yet lost) is below quorum too.
    let mut o = without_vms(with_etcd_nodes(&f), &["demo-cp2"]);
    o.nodes
        .as_mut()
        .unwrap()
        .get_mut("demo-cp3")
        .unwrap()
        .not_ready_secs = Some(30);
    let p = plan(&f, &o);
    assert!(
        p.refusals[0].starts_with("demo-cp2 is lost and only 1 of the 3"),
        "{:?}",
        p.refusals
    );
    // Five servers, two lost: three of five is a quorum.
    let five = fixtures::parsed(&fleet_text("").replace("count: 3", "count: 5"));
    let o = without_vms(with_etcd_nodes(&five), &["demo-cp4", "demo-cp5"]);
    let p = plan(&five, &o);
    assert_eq!(p.summary.replace, 2);
    assert!(!p.is_refused(), "{:?}", p.refusals);
}

#[test]
fn without_the_api_missing_servers_below_quorum_are_said_unchecked() {
    let f = fleet("");
    let mut o = without_vms(in_sync(&f), &["demo-cp2", "demo-cp3"]);
    o.nodes = None;
    let p = plan(&f, &o);
    assert_eq!(
        actions(&p),
        [(Action::Create, "demo-cp2"), (Action::Create, "demo-cp3")]
    );
    let said = unchecked_server_joins(&p, &o).unwrap();
    assert!(
        said.starts_with("server VM(s) demo-cp2, demo-cp3 are missing and the Kubernetes API did not answer, so whether they were lost (their etcd members still counted, dead) could not be checked: if they were, only 1 of 3 etcd members remain (2 needed for quorum)"),
        "{said}"
    );
    assert!(said.contains("exedev-k8s restore -f FLEET --snapshot NAME"));
    assert!(p.warnings.contains(&said), "{:?}", p.warnings);
    // One of three missing: the two left hold a quorum either way; said
    // as unchecked, not refused.
    let mut one = without_vms(in_sync(&f), &["demo-cp3"]);
    one.nodes = None;
    let p = plan(&f, &one);
    assert_eq!(unchecked_server_joins(&p, &one), None);
    assert!(
        p.warnings.contains(&"server VM(s) demo-cp3 are missing and the Kubernetes API did not answer, so whether they were lost (their etcd members still counted, dead) could not be checked; apply plans again with the API where it runs, and replaces a lost server after removing its dead member".to_string()),
        "{:?}",
        p.warnings
    );
    // A new cluster has no servers to be lost from.
    assert_eq!(
        unchecked_server_joins(&plan(&f, &Observed::default()), &Observed::default()),
        None
    );
}

#[test]
fn a_lost_server_in_every_format() {
    let f = fleet("");
    let o = without_vms(with_etcd_nodes(&f), &["demo-cp2"]);
    let p = plan(&f, &o);
    insta::assert_snapshot!("plan_human_lost_server", render::human(&p, false));
    insta::assert_snapshot!("plan_markdown_lost_server", render::markdown(&p));
    insta::assert_snapshot!("plan_json_lost_server", render::json(&p));
}

#[test]
fn a_lost_agent_in_every_format() {
    let f = fleet("");
    let o = without_vms(with_etcd_nodes(&f), &["demo-web1"]);
    let p = plan(&f, &o);
    insta::assert_snapshot!("plan_human_lost_agent", render::human(&p, false));
    insta::assert_snapshot!("plan_markdown_lost_agent", render::markdown(&p));
    insta::assert_snapshot!("plan_json_lost_agent", render::json(&p));
}
