//! The VMs a fleet asks for, and the tags and labels that mark them as ours.
//!
//! The plan compares [`desired_vms`] with what exe.dev reports. Ownership is
//! decided only by [`ownership`]: the fleet's ownership tag, a name the
//! fleet generates ([`crate::base::names::parse_fleet_vm_name`]) and the spec comment the tool writes
//! ([`SPEC_COMMENT_PREFIX`]), all three. A VM with less is reported, never
//! changed or removed: a tag is one `exedev-k8s exec -- tag` away from any
//! VM, and `precious-db` tagged by mistake must survive the next apply.

use std::collections::BTreeMap;

// The resolved fleet's own vocabulary, named here too because every
// user of desired VMs needs it.
pub use super::resolved::{CONTROL_PLANE_POOL, CONTROL_PLANE_TAINT, Role, ShareSpec};
use super::resolved::{Fleet, NodeGroup, Taint};
use crate::base::sizes::ByteSize;

/// The server counts a fleet may ask for: odd, for etcd quorum.
pub const SERVER_COUNTS: &[u32] = &[1, 3, 5];
/// Most servers a fleet may have.
pub const MAX_SERVERS: u32 = 5;
/// Prefix of every tag the tool sets; users may not use it, so a user tag can
/// never fake ownership.
pub const RESERVED_TAG_PREFIX: &str = "exk8s-";
/// Tag on every VM whose HTTPS proxy the fleet manages (its group declares
/// a `share`): the tool may have made its proxy public or re-ported it. A
/// plan reads `share show` only for VMs whose group declares a share or
/// that carry this tag, so a VM whose pool lost its share is still seen
/// and made private (then the tag goes), without a `share show` per VM.
pub const SHARE_TAG: &str = "exk8s-share";
/// Prefix of every label the tool sets on nodes; reserved for the tool.
pub const RESERVED_LABEL_PREFIX: &str = "exedev-k8s.io/";
/// Node label naming the fleet a node belongs to.
pub const FLEET_LABEL_KEY: &str = "exedev-k8s.io/fleet";
/// Node label naming the pool a node belongs to.
pub const POOL_LABEL_KEY: &str = "exedev-k8s.io/pool";
/// One VM the fleet asks for, with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVm {
    /// exe.dev VM name: `{cluster}-cp{i}` or `{cluster}-{pool}{i}`
    /// (`crate::base::names::fleet_vm_name`).
    pub name: String,
    /// Server or agent.
    pub role: Role,
    /// Pool name; `cp` for the control plane.
    pub pool: String,
    /// 1-based index within the pool.
    pub index: u32,
    /// exe.dev image.
    pub image: String,
    /// vCPUs.
    pub cpu: u32,
    /// Memory.
    pub memory: ByteSize,
    /// Disk.
    pub disk: ByteSize,
    /// exe.dev tags: user tags plus ownership tags, sorted and deduplicated.
    pub tags: Vec<String>,
    /// Kubernetes node labels: user labels plus the tool's labels.
    pub labels: BTreeMap<String, String>,
    /// Kubernetes node taints.
    pub taints: Vec<Taint>,
    /// exe.dev HTTPS proxy, if any.
    pub share: Option<ShareSpec>,
}

impl DesiredVm {
    /// The server that initialises the cluster (`--cluster-init`) and that
    /// the others join: control plane index 1.
    pub fn is_first_server(&self) -> bool {
        self.pool == CONTROL_PLANE_POOL && self.index == 1
    }
}

/// The ownership tag `exk8s-fleet-{cluster}`: one of the three marks of a
/// VM the fleet owns (see [`ownership`]).
pub fn ownership_tag(cluster: &str) -> String {
    format!("{RESERVED_TAG_PREFIX}fleet-{cluster}")
}

/// Prefix of every fleet's ownership tag.
pub fn ownership_tag_prefix() -> String {
    format!("{RESERVED_TAG_PREFIX}fleet-")
}

/// Prefix of the comment every VM the tool creates carries,
/// `exedev-k8s spec=<fingerprint>` (see `plan::spec`): one of the three
/// marks of ownership.
pub const SPEC_COMMENT_PREFIX: &str = "exedev-k8s spec=";

/// Tag naming a VM's pool (`exk8s-pool-{pool}`), so that `ls` output can be
/// grouped without parsing VM names.
pub fn pool_tag(pool: &str) -> String {
    format!("{RESERVED_TAG_PREFIX}pool-{pool}")
}

/// Tag naming a VM's role (`exk8s-role-server` / `exk8s-role-agent`).
pub fn role_tag(role: Role) -> String {
    format!("{RESERVED_TAG_PREFIX}role-{}", role.as_str())
}

/// True when `tags` hold the ownership tag of `cluster`: necessary for
/// ownership, not sufficient (see [`ownership`]).
pub fn has_ownership_tag(cluster: &str, tags: &[String]) -> bool {
    let tag = ownership_tag(cluster);
    tags.contains(&tag)
}

/// How a VM stands to a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The ownership tag, a name the fleet generates and the spec comment:
    /// the fleet may change or remove it.
    Owned,
    /// Some marks but not all; `lacks` says which are missing, for the
    /// report ("a name fleet \"own\" generates", "the spec comment ...").
    /// Never changed or removed.
    Partial { lacks: Vec<String> },
    /// Without the ownership tag: not the fleet's, whatever its name and
    /// comment (under a desired name, the plan reports a collision).
    NotOwned,
}

/// Whether fleet `cluster` owns the VM `name` with `tags` and `comment`:
/// [`Ownership::Owned`] needs all three marks; a VM carrying the ownership
/// tag without the others is [`Ownership::Partial`]; a VM without the tag
/// is [`Ownership::NotOwned`] whatever its name.
pub fn ownership(cluster: &str, name: &str, tags: &[String], comment: &str) -> Ownership {
    let mut lacks = Vec::new();
    if !has_ownership_tag(cluster, tags) {
        return Ownership::NotOwned;
    }
    if crate::base::names::parse_fleet_vm_name(cluster, name).is_none() {
        lacks.push(format!("a name fleet {cluster:?} generates"));
    }
    if !comment.starts_with(SPEC_COMMENT_PREFIX) {
        lacks.push(format!("the spec comment ({SPEC_COMMENT_PREFIX}...)"));
    }
    if lacks.is_empty() {
        Ownership::Owned
    } else {
        Ownership::Partial { lacks }
    }
}

/// True when fleet `cluster` owns the VM (see [`ownership`]): the only VMs
/// it may change or remove.
pub fn owns(cluster: &str, name: &str, tags: &[String], comment: &str) -> bool {
    ownership(cluster, name, tags, comment) == Ownership::Owned
}

/// Whether a VM is any business of fleet `cluster`: it carries the fleet's
/// ownership tag, or its name is one the fleet could generate and it
/// carries no other fleet's ownership tag. Fleets whose names prefix each
/// other (`prod`, `prod-eu`) never see each other's VMs: `prod-eu-cp1` is
/// not a name `prod` generates, and a VM under one of `prod`'s names that
/// carries `exk8s-fleet-prod-eu` is `prod-eu`'s business, not `prod`'s.
pub fn concerns(cluster: &str, name: &str, tags: &[String]) -> bool {
    let own = ownership_tag(cluster);
    let prefix = ownership_tag_prefix();
    tags.contains(&own)
        || (crate::base::names::parse_fleet_vm_name(cluster, name).is_some()
            && !tags.iter().any(|t| t.starts_with(&prefix) && *t != own))
}

/// The node label pair `exedev-k8s.io/fleet={cluster}`.
pub fn fleet_label(cluster: &str) -> (String, String) {
    (FLEET_LABEL_KEY.to_string(), cluster.to_string())
}

/// The node label pair `exedev-k8s.io/pool={pool}`.
pub fn pool_label(pool: &str) -> (String, String) {
    (POOL_LABEL_KEY.to_string(), pool.to_string())
}

/// Whether `name` is one of the VMs the fleet asks for (a name
/// [`desired_vms`] yields), without building them: a plan's scope and
/// fingerprint ask this of every VM `ls` lists, and a 1,000-VM fleet's
/// [`DesiredVm`]s (tags and labels each) cost about 1 MB.
pub fn is_desired_name(fleet: &Fleet, name: &str) -> bool {
    desired_group(fleet, name).is_some()
}

/// The group (control plane or pool) of a VM the fleet asks for, by name;
/// `None` for any other name.
pub fn desired_group<'a>(fleet: &'a Fleet, name: &str) -> Option<&'a NodeGroup> {
    let (pool, index) = crate::base::names::parse_fleet_vm_name(&fleet.name, name)?;
    fleet.groups().find(|g| {
        g.pool == pool
            && (1..=g.count).contains(&index)
            && crate::base::names::fleet_vm_name(&fleet.name, pool, index) == name
    })
}

/// Every VM the fleet asks for, in a stable order: servers first (index 1
/// up), then the pools in file order, each with the tool's own tags and
/// labels added to the user's.
pub fn desired_vms(fleet: &Fleet) -> Vec<DesiredVm> {
    let mut out = Vec::new();
    for (template, count) in group_templates(fleet) {
        for index in 1..=count {
            out.push(DesiredVm {
                name: crate::base::names::fleet_vm_name(&fleet.name, &template.pool, index),
                index,
                ..template.clone()
            });
        }
    }
    out
}

/// Each group's first VM (index 1) and how many the group has: what all of
/// a group's VMs share, for callers that place VMs themselves (a plan puts
/// agents on the indices a pool holds) without building every one twice.
pub fn group_templates(fleet: &Fleet) -> Vec<(DesiredVm, u32)> {
    let cluster = fleet.name.as_str();
    fleet
        .groups()
        .map(|g| {
            let mut tags: Vec<String> = g
                .tags
                .iter()
                .cloned()
                .chain([ownership_tag(cluster), pool_tag(&g.pool), role_tag(g.role)])
                .chain(g.share.map(|_| SHARE_TAG.to_string()))
                .collect();
            tags.sort();
            tags.dedup();
            let mut labels = g.labels.clone();
            labels.extend([fleet_label(cluster), pool_label(&g.pool)]);
            let template = DesiredVm {
                name: crate::base::names::fleet_vm_name(cluster, &g.pool, 1),
                role: g.role,
                pool: g.pool.clone(),
                index: 1,
                image: g.image.clone(),
                cpu: g.cpu,
                memory: g.memory,
                disk: g.disk,
                tags,
                labels,
                taints: g.taints.clone(),
                share: g.share,
            };
            (template, g.count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::names::check_node_name;
    use crate::core::fleet::fixtures::minimal_replacing;
    use crate::core::fleet::parse;
    use proptest::prelude::*;

    fn fleet(yaml_tail: &str) -> Fleet {
        crate::core::fleet::fixtures::fleet_with(yaml_tail)
    }

    /// The names-only test agrees with the VMs themselves, both ways.
    #[test]
    fn is_desired_name_is_desired_vms_names() {
        let f = fleet("pools:\n  - name: web\n    count: 3\n  - name: db\n    count: 1\n");
        let names: Vec<String> = desired_vms(&f).into_iter().map(|d| d.name).collect();
        for n in &names {
            assert!(is_desired_name(&f, n), "{n}");
        }
        for n in [
            "demo-web4",
            "demo-web0",
            "demo-db2",
            "demo-cp2",
            "other-web1",
            "demo-web01",
            "demo-api1",
        ] {
            assert!(!names.contains(&n.to_string()));
            assert!(!is_desired_name(&f, n), "{n}");
        }
    }

    fn gb(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }

    #[test]
    fn minimal_fleet_is_one_schedulable_server_with_defaults() {
        let vms = desired_vms(&fleet(""));
        assert_eq!(vms.len(), 1);
        let vm = &vms[0];
        assert_eq!(vm.name, "demo-cp1");
        assert_eq!(vm.role, Role::Server);
        assert_eq!((vm.pool.as_str(), vm.index), ("cp", 1));
        assert!(vm.is_first_server());
        assert_eq!(vm.image, "exeuntu");
        assert_eq!((vm.cpu, vm.memory, vm.disk), (2, gb(4), gb(20)));
        assert_eq!(
            vm.tags,
            ["exk8s-fleet-demo", "exk8s-pool-cp", "exk8s-role-server"]
        );
        assert_eq!(
            vm.labels,
            BTreeMap::from([
                ("exedev-k8s.io/fleet".to_string(), "demo".to_string()),
                ("exedev-k8s.io/pool".to_string(), "cp".to_string()),
            ])
        );
        assert!(vm.taints.is_empty());
        assert_eq!(vm.share, None);
    }

    #[test]
    fn order_names_roles_and_indices() {
        let f = fleet(
            "controlPlane:\n  count: 3\npools:\n  - name: web\n    count: 2\n  - name: db\n    count: 1\n  - name: idle\n    count: 0\n",
        );
        let got: Vec<(String, Role, String, u32)> = desired_vms(&f)
            .into_iter()
            .map(|v| (v.name, v.role, v.pool, v.index))
            .collect();
        let want = [
            ("demo-cp1", Role::Server, "cp", 1),
            ("demo-cp2", Role::Server, "cp", 2),
            ("demo-cp3", Role::Server, "cp", 3),
            ("demo-web1", Role::Agent, "web", 1),
            ("demo-web2", Role::Agent, "web", 2),
            ("demo-db1", Role::Agent, "db", 1),
        ]
        .map(|(n, r, p, i)| (n.to_string(), r, p.to_string(), i));
        assert_eq!(got, want);
        let vms = desired_vms(&f);
        assert_eq!(
            vms.iter().filter(|v| v.is_first_server()).count(),
            1,
            "exactly one first server"
        );
    }

    #[test]
    fn tags_merge_user_and_ownership_sorted_deduped() {
        let f = fleet(
            "defaults:\n  tags: [team-a, shared]\ncontrolPlane:\n  tags: [shared, cp-extra]\npools:\n  - name: gpu\n    count: 1\n    tags: [gpu, team-a]\n",
        );
        let vms = desired_vms(&f);
        assert_eq!(
            vms[0].tags,
            [
                "cp-extra",
                "exk8s-fleet-demo",
                "exk8s-pool-cp",
                "exk8s-role-server",
                "shared",
                "team-a"
            ]
        );
        assert_eq!(
            vms[1].tags,
            [
                "exk8s-fleet-demo",
                "exk8s-pool-gpu",
                "exk8s-role-agent",
                "gpu",
                "shared",
                "team-a"
            ]
        );
        assert!(has_ownership_tag("demo", &vms[1].tags));
        assert!(!has_ownership_tag("demo2", &vms[1].tags));
        assert!(!has_ownership_tag("dem", &vms[1].tags));
    }

    #[test]
    fn labels_and_taints() {
        let f = fleet(
            "controlPlane:\n  schedulable: false\n  labels: {tier: control}\n  taints: [\"a=b:NoExecute\"]\npools:\n  - name: gpu\n    count: 1\n    labels: {node.kubernetes.io/role: gpu}\n    taints: [\"dedicated=gpu:NoSchedule\"]\n",
        );
        let vms = desired_vms(&f);
        assert_eq!(vms[0].taints, ["a=b:NoExecute", CONTROL_PLANE_TAINT]);
        assert_eq!(
            vms[0].labels.get("tier").map(String::as_str),
            Some("control")
        );
        assert_eq!(vms[1].taints, ["dedicated=gpu:NoSchedule"]);
        assert_eq!(
            vms[1].labels,
            BTreeMap::from([
                ("exedev-k8s.io/fleet".to_string(), "demo".to_string()),
                ("exedev-k8s.io/pool".to_string(), "gpu".to_string()),
                ("node.kubernetes.io/role".to_string(), "gpu".to_string()),
            ])
        );
        // Schedulable servers get no taint of ours.
        let vms = desired_vms(&fleet("controlPlane:\n  count: 3\n"));
        assert!(vms.iter().all(|v| v.taints.is_empty()));
    }

    #[test]
    fn size_image_and_share_overrides() {
        let f = fleet(
            "defaults:\n  image: ubuntu\n  cpu: 4\n  memory: 8GB\n  disk: 40GB\ncontrolPlane:\n  memory: 16GB\n  share: {port: 6443}\npools:\n  - name: big\n    count: 1\n    image: exeuntu-gpu\n    cpu: 16\n    disk: 1TB\n    share: {port: 8080, public: true}\n  - name: plain\n    count: 1\n",
        );
        let vms = desired_vms(&f);
        let brief: Vec<_> = vms
            .iter()
            .map(|v| (v.image.as_str(), v.cpu, v.memory, v.disk, v.share))
            .collect();
        assert_eq!(
            brief,
            [
                (
                    "ubuntu",
                    4,
                    gb(16),
                    gb(40),
                    Some(ShareSpec {
                        port: 6443,
                        public: false
                    })
                ),
                (
                    "exeuntu-gpu",
                    16,
                    gb(8),
                    gb(1024),
                    Some(ShareSpec {
                        port: 8080,
                        public: true
                    })
                ),
                ("ubuntu", 4, gb(8), gb(40), None),
            ]
        );
    }

    #[test]
    fn ownership_helpers() {
        assert_eq!(ownership_tag("prod"), "exk8s-fleet-prod");
        assert_eq!(pool_tag("gpu"), "exk8s-pool-gpu");
        assert_eq!(role_tag(Role::Server), "exk8s-role-server");
        assert_eq!(role_tag(Role::Agent), "exk8s-role-agent");
        assert!(has_ownership_tag(
            "prod",
            &["x".into(), "exk8s-fleet-prod".into()]
        ));
        assert!(!has_ownership_tag("prod", &["exk8s-fleet-prod2".into()]));
        assert!(!has_ownership_tag("prod", &[]));
    }

    /// Owned means the tag, a name the fleet generates and the spec
    /// comment; anything less is partial (reported) or not owned at all.
    #[test]
    fn ownership_needs_all_three_marks() {
        let tag = vec![ownership_tag("own"), "team".to_string()];
        let spec = format!("{SPEC_COMMENT_PREFIX}0123456789ab");
        let no_name = || Ownership::Partial {
            lacks: vec!["a name fleet \"own\" generates".to_string()],
        };
        let no_comment = "the spec comment (exedev-k8s spec=...)".to_string();
        let cases: Vec<(&str, &[String], &str, Ownership)> = vec![
            ("own-cp1", &tag, &spec, Ownership::Owned),
            ("own-web12", &tag, &spec, Ownership::Owned),
            // The case: tagged by mistake, any name.
            (
                "precious-db",
                &tag,
                "",
                Ownership::Partial {
                    lacks: vec![
                        "a name fleet \"own\" generates".to_string(),
                        no_comment.clone(),
                    ],
                },
            ),
            ("precious-db", &tag, &spec, no_name()),
            (
                "own-web1",
                &tag,
                "my notes",
                Ownership::Partial {
                    lacks: vec![no_comment.clone()],
                },
            ),
            ("own-web01", &tag, &spec, no_name()),
            ("own-web0", &tag, &spec, no_name()),
            ("own-web", &tag, &spec, no_name()),
            ("own-web-1", &tag, &spec, no_name()),
            ("own-eu-web3", &tag, &spec, no_name()),
            ("owner-web1", &tag, &spec, no_name()),
            ("own-web1", &[], &spec, Ownership::NotOwned),
        ];
        let other = vec!["exk8s-fleet-own2".to_string()];
        for (name, tags, comment, want) in cases.into_iter().chain([(
            "own-web1",
            other.as_slice(),
            spec.as_str(),
            Ownership::NotOwned,
        )]) {
            assert_eq!(
                ownership("own", name, tags, comment),
                want,
                "{name} {tags:?} {comment:?}"
            );
            assert_eq!(owns("own", name, tags, comment), want == Ownership::Owned);
        }
    }

    #[test]
    fn other_fleets_vms_are_out_of_scope() {
        let eu = vec![ownership_tag("prod-eu")];
        assert!(!concerns("prod", "prod-eu-cp1", &eu));
        assert!(concerns("prod-eu", "prod-eu-cp1", &eu));
        // prod-eu's names are not prod's, tagged or not.
        assert!(!concerns("prod", "prod-eu-cp1", &[]));
        // Untagged under a name prod generates: concerns prod (a warning).
        assert!(concerns("prod", "prod-cp1", &[]));
        // ...unless another fleet's tag says whose it is.
        assert!(!concerns("prod", "prod-cp1", &eu));
        assert!(!concerns("prod", "precious-db", &[]));
        // Tagged for prod: concerns prod whatever the name (reported).
        assert!(concerns("prod", "precious-db", &[ownership_tag("prod")]));
    }

    fn pool_name() -> impl Strategy<Value = String> {
        "[a-z]([a-z0-9]{0,6}[a-z])?".prop_filter("cp is reserved", |n| n != "cp")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn valid_fleets_yield_unique_acceptable_vm_names(
            cluster in "[a-z][a-z0-9]{2,12}(-[a-z0-9]{1,6})?",
            cp in prop::sample::select(vec![1u32, 3, 5]),
            pools in prop::collection::btree_map(pool_name(), 0u32..=12, 0..5),
        ) {
            let mut yaml = minimal_replacing("name: demo", &format!("name: {cluster}"))
                + &format!(
                    "controlPlane:\n  count: {cp}\npools:{}\n",
                    if pools.is_empty() { " []" } else { "" }
                );
            for (name, count) in &pools {
                yaml.push_str(&format!("  - name: {name}\n    count: {count}\n"));
            }
            let f = match parse(&yaml, "p.yaml") {
                Ok(f) => f,
                Err(e) => return Err(TestCaseError::fail(format!("{e}\n{yaml}"))),
            };
            let vms = desired_vms(&f);
            let expected = cp + pools.values().sum::<u32>();
            prop_assert_eq!(vms.len() as u32, expected);
            let mut names = std::collections::BTreeSet::new();
            for vm in &vms {
                prop_assert_eq!(check_node_name(&vm.name), Ok(()));
                prop_assert!(names.insert(vm.name.clone()), "duplicate {}", vm.name);
                prop_assert!(has_ownership_tag(&cluster, &vm.tags));
                prop_assert_eq!(
                    crate::base::names::parse_fleet_vm_name(&cluster, &vm.name),
                    Some((vm.pool.as_str(), vm.index))
                );
                let comment = format!("{SPEC_COMMENT_PREFIX}x");
                prop_assert!(owns(&cluster, &vm.name, &vm.tags, &comment));
            }
        }
    }
}
