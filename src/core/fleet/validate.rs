//! Semantic checks of a parsed fleet file.
//!
//! YAML syntax, unknown keys and wrong types are caught while reading; this
//! module checks the values, collecting every problem with the location of
//! the node at fault, so the user fixes the whole file in one go.

use std::collections::BTreeSet;

use serde_saphyr::Spanned;

use super::desired::{
    CONTROL_PLANE_POOL, RESERVED_LABEL_PREFIX, RESERVED_TAG_PREFIX, ownership_tag, pool_tag,
};
use super::error::FleetError;
use super::model::{API_VERSION, FleetFile, K3sArg, KIND, Labels, SecretRef, Share, Sizing};
use super::secret_flags;
use super::snapshots;
use crate::base::k3s_flags::{self, Role};
use crate::base::names::{check_node_name, fleet_vm_name, is_name_segment, is_pool_segment};
use crate::base::sizes::{ByteSize, SizeError};

/// Components k3s can be told not to deploy (`--disable`).
pub const DISABLABLE: &[&str] = &[
    "traefik",
    "servicelb",
    "metrics-server",
    "local-storage",
    "coredns",
];
/// Taint effects Kubernetes knows.
pub const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
/// Largest pool; a guard against a typo creating hundreds of VMs.
pub const MAX_POOL_COUNT: u32 = 100;
pub use crate::base::limits::CPU_RANGE;
/// exe.dev's range of shareable ports, widened to the fleet file's integer
/// type (`crate::base::limits::SHARE_PORT_RANGE`).
pub const SHARE_PORTS: std::ops::RangeInclusive<u32> = *crate::base::limits::SHARE_PORT_RANGE
    .start() as u32
    ..=*crate::base::limits::SHARE_PORT_RANGE.end() as u32;

/// Smallest memory of a k3s server VM: 2GB. k3s's resource profiling
/// (docs.k3s.io/reference/resource-profiling, k3s v1.26) measured 1606 MB
/// for a server with embedded etcd and a small workload, and 1450 MB for a
/// server with a single agent; below 2GB the API server and etcd are
/// OOM-killed as soon as anything runs. (k3s-facts.md has no figure.)
pub const MIN_SERVER_MEMORY: ByteSize = ByteSize(2 << 30);
/// Smallest memory of a k3s agent VM: 512MB. The same profiling measured
/// 275 MB for the kubelet and k3s agent alone; 512MB leaves room for the
/// node's system pods and a first workload.
pub const MIN_AGENT_MEMORY: ByteSize = ByteSize(512 << 20);
/// Smallest disk of any node: 5GB, the tool's own floor, not a k3s figure
/// (k3s documents none): the exe.dev image, the k3s binary (~70 MB), the
/// images of its packaged components and containerd's image store need a
/// few GB, and the kubelet starts evicting pods when less than 10-15% of
/// the disk is free.
pub const MIN_DISK: ByteSize = ByteSize(5 << 30);

struct Ctx<'a> {
    file: &'a str,
    errors: Vec<FleetError>,
}

impl Ctx<'_> {
    fn at<T>(&mut self, node: &Spanned<T>, message: impl Into<String>, hint: impl Into<String>) {
        let loc = node.referenced;
        self.errors.push(FleetError::at(
            self.file,
            loc.line(),
            loc.column(),
            message,
            hint,
        ));
    }
}

/// Checks every value of `fleet`; returns all problems, in file order.
pub fn validate(fleet: &FleetFile, file: &str) -> Vec<FleetError> {
    let mut cx = Ctx {
        file,
        errors: Vec::new(),
    };
    check_header(&mut cx, fleet);
    let cluster_ok = check_cluster_name(&mut cx, &fleet.metadata.name);
    check_k3s(&mut cx, fleet);
    check_etcd(&mut cx, fleet);
    check_network(&mut cx, fleet);
    check_manifests(&mut cx, &fleet.manifests);

    let d = &fleet.defaults;
    check_node_group(&mut cx, d.sizing(), MIN_SERVER_MEMORY);

    let cp = &fleet.control_plane;
    if let Some(count) = &cp.count
        && !super::SERVER_COUNTS.contains(&count.value)
    {
        let msg = if count.value.is_multiple_of(2) && count.value > 0 {
            format!(
                "control plane count {} is even: an even number of etcd members breaks quorum as soon as half of them are down, with no gain over {}",
                count.value,
                count.value - 1
            )
        } else {
            format!("control plane count {} is not supported", count.value)
        };
        cx.at(count, msg, "write count: 1, 3 or 5");
    }
    check_node_group(&mut cx, cp.sizing(), MIN_SERVER_MEMORY);
    check_labels(&mut cx, &cp.labels);
    check_taints(&mut cx, &cp.taints);
    check_share(&mut cx, &cp.share);
    if cluster_ok {
        let cluster = &fleet.metadata.name;
        check_vm_names(
            &mut cx,
            cluster,
            &cluster.value,
            CONTROL_PLANE_POOL,
            cp.count(),
        );
    }

    let mut seen = BTreeSet::new();
    for pool in &fleet.pools {
        let name_ok = check_pool_name(&mut cx, &pool.name);
        if name_ok && !seen.insert(pool.name.value.as_str()) {
            cx.at(
                &pool.name,
                format!("pool name {:?} is used twice", pool.name.value),
                "give every pool its own name, or merge the two pools",
            );
        }
        if pool.count.value > MAX_POOL_COUNT {
            cx.at(
                &pool.count,
                format!(
                    "pool count {} is more than {MAX_POOL_COUNT}",
                    pool.count.value
                ),
                format!("write a count from 0 to {MAX_POOL_COUNT}, or split the pool"),
            );
        }
        if let Some(m) = pool
            .max_unavailable
            .as_ref()
            .filter(|m| m.value < MIN_MAX_UNAVAILABLE)
        {
            cx.at(
                m,
                format!(
                    "maxUnavailable {} would never let a node of this pool change",
                    m.value
                ),
                "write 1 (the default: one node at a time) or more",
            );
        }
        check_node_group(&mut cx, pool.sizing(), MIN_AGENT_MEMORY);
        check_labels(&mut cx, &pool.labels);
        check_taints(&mut cx, &pool.taints);
        check_share(&mut cx, &pool.share);
        if cluster_ok && name_ok {
            check_vm_names(
                &mut cx,
                &pool.name,
                &fleet.metadata.name.value,
                &pool.name.value,
                pool.count.value.min(MAX_POOL_COUNT),
            );
        }
    }

    check_minimums(&mut cx, fleet);

    cx.errors.sort_by_key(|e| (e.line, e.column));
    // A `defaults` size inherited by several pools is reported once.
    cx.errors
        .dedup_by(|a, b| (a.line, a.column, &a.message) == (b.line, b.column, &b.message));
    cx.errors
}

/// Refuses memory and disk below what a k3s node of its role needs, at the
/// node where the value is written: the group's own, or the `defaults` one
/// it inherits.
fn check_minimums(cx: &mut Ctx, fleet: &FleetFile) {
    let d = &fleet.defaults;
    let cp = &fleet.control_plane;
    let mut groups = vec![(
        "controlPlane",
        "k3s server",
        MIN_SERVER_MEMORY,
        &cp.memory,
        &cp.disk,
    )];
    for p in &fleet.pools {
        groups.push(("pool", "k3s agent", MIN_AGENT_MEMORY, &p.memory, &p.disk));
    }
    for (group, role, min_memory, memory, disk) in groups {
        for (what, own, default, min) in [
            ("memory", memory, &d.memory, min_memory),
            ("disk", disk, &d.disk, MIN_DISK),
        ] {
            let Some(node) = own.as_ref().or(default.as_ref()) else {
                continue;
            };
            let Ok(size) = ByteSize::parse_with_unit(&node.value) else {
                continue; // reported by check_node_group
            };
            if size.0 == 0 || size >= min {
                continue;
            }
            let inherited = if own.is_none() {
                format!(" ({group} inherits defaults.{what})")
            } else {
                String::new()
            };
            cx.at(
                node,
                format!("{what} {size} is below the {min} a {role} needs{inherited}"),
                format!("write {what}: {min} or more"),
            );
        }
    }
}

/// The unit a bare number most likely lacks, chosen so the size passes
/// `floor` (the role's minimum): megabytes when that is enough (`4096` →
/// `4096MB`), else gigabytes for a number under 1024 (`20` → `20GB`, never
/// `20MB` under a 5GB floor), else the floor itself (`1024` for a server's
/// memory meant megabytes, too few: `2GB or more`, not `1024GB`).
fn unit_that_passes(number: &str, floor: ByteSize) -> String {
    let Ok(n) = number.parse::<u64>() else {
        return floor.to_string();
    };
    let passes = |mult: u64| n.checked_mul(mult).is_some_and(|b| b >= floor.0);
    if passes(1 << 20) {
        format!("{n}MB")
    } else if n < 1024 && passes(1 << 30) {
        format!("{n}GB")
    } else {
        // A thousand or more is megabytes meant, too few: the floor.
        format!("{floor} or more")
    }
}

/// `8Gi` (a Kubernetes quantity) written as this file reads it, `8GiB`.
fn kubernetes_quantity(value: &str) -> Option<String> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = value.split_at(split);
    let unit = unit.trim();
    let fixed = ["Ki", "Mi", "Gi", "Ti"]
        .into_iter()
        .find(|u| u.eq_ignore_ascii_case(unit))?;
    (!num.is_empty()).then(|| format!("{num}{fixed}B"))
}

fn check_header(cx: &mut Ctx, fleet: &FleetFile) {
    if fleet.api_version.value != API_VERSION {
        cx.at(
            &fleet.api_version,
            format!("apiVersion {:?} is not supported", fleet.api_version.value),
            format!("write apiVersion: {API_VERSION}"),
        );
    }
    if fleet.kind.value != KIND {
        cx.at(
            &fleet.kind,
            format!("kind {:?} is not supported", fleet.kind.value),
            format!("write kind: {KIND}"),
        );
    }
}

fn check_cluster_name(cx: &mut Ctx, name: &Spanned<String>) -> bool {
    if !is_name_segment(&name.value) {
        cx.at(
            name,
            format!(
                "cluster name {:?} must start with a lowercase letter and contain only lowercase letters, digits and single inner hyphens",
                name.value
            ),
            "write a name such as demo or prod-eu1",
        );
        return false;
    }
    let tag = ownership_tag(&name.value);
    if !is_tag(&tag) {
        cx.at(
            name,
            format!(
                "cluster name {:?} is too long: its ownership tag {tag:?} would exceed 63 characters",
                name.value
            ),
            "use a cluster name of at most 51 characters",
        );
        return false;
    }
    true
}

fn check_pool_name(cx: &mut Ctx, name: &Spanned<String>) -> bool {
    if name.value == CONTROL_PLANE_POOL {
        cx.at(
            name,
            "pool name \"cp\" is reserved for the control plane",
            "choose another pool name, e.g. workers",
        );
        return false;
    }
    if !is_pool_segment(&name.value) {
        // The character rule first: `Web_1` is refused for its capital
        // and underscore, not for its final digit.
        let charset = name.value.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .value
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        let why = if !charset {
            "must start with a lowercase letter and contain only lowercase letters and digits"
        } else if name.value.contains('-') {
            "must not contain a hyphen: VM names are {cluster}-{pool}{index}, and the last hyphen separates the cluster from the pool"
        } else {
            // Lowercase letters and digits, starting with a letter: what
            // `is_pool_segment` still refuses is the final digit.
            "must not end in a digit: VM names are {cluster}-{pool}{index}, so a final digit would read as part of the index"
        };
        cx.at(
            name,
            format!("pool name {:?} {why}", name.value),
            "write a name such as workers, gpu or x2large",
        );
        return false;
    }
    let tag = pool_tag(&name.value);
    if !is_tag(&tag) {
        cx.at(
            name,
            format!(
                "pool name {:?} is too long: its pool tag {tag:?} would exceed 63 characters",
                name.value
            ),
            "use a shorter pool name",
        );
        return false;
    }
    true
}

/// Reports the first computed VM name of a group that exe.dev would refuse
/// under either reading of its naming rule (see `crate::base::names`).
fn check_vm_names(cx: &mut Ctx, at: &Spanned<String>, cluster: &str, pool: &str, count: u32) {
    for i in 1..=count {
        let name = fleet_vm_name(cluster, pool, i);
        if let Err(e) = check_node_name(&name) {
            cx.at(
                at,
                format!("computed VM name {name:?} is not accepted by exe.dev: {e}"),
                "shorten the cluster or pool name so that every VM name stays within exe.dev's rules",
            );
            return;
        }
    }
}

fn check_k3s(cx: &mut Ctx, fleet: &FleetFile) {
    let k3s = &fleet.k3s.value;
    match (&k3s.version, &k3s.channel) {
        (Some(_), Some(channel)) => cx.at(
            channel,
            "k3s.version and k3s.channel are both set",
            "keep only one: version pins a release, channel follows a release line",
        ),
        (None, None) => cx.at(
            &fleet.k3s,
            "k3s needs either version or channel",
            "add version: v1.31.4+k3s1 or channel: stable",
        ),
        _ => {}
    }
    if let Some(v) = &k3s.version
        && !is_k3s_version(&v.value)
    {
        cx.at(
            v,
            format!("{:?} is not a k3s release version", v.value),
            "write a version like v1.31.4+k3s1",
        );
    }
    if let Some(c) = &k3s.channel
        && !is_k3s_channel(&c.value)
    {
        cx.at(
            c,
            format!("{:?} is not a k3s channel", c.value),
            "write stable, latest, testing or a minor line such as v1.31",
        );
    }
    let tables = flag_tables(cx, fleet);
    let roles = (k3s.server_args.iter().map(|a| (Role::Server, a)))
        .chain(k3s.agent_args.iter().map(|a| (Role::Agent, a)));
    for (role, arg) in roles {
        match &arg.value {
            K3sArg::Plain(value) => {
                if check_plain_arg(cx, arg, value) {
                    let body = &value[2..];
                    let (name, has_value) = body
                        .split_once('=')
                        .map_or((body, false), |(n, _)| (n, true));
                    check_defined(cx, arg, &tables, role, name, has_value);
                }
            }
            K3sArg::Secret { flag, secret } => {
                if check_secret_flag(cx, flag) {
                    check_defined(cx, flag, &tables, role, &flag.value[2..], true);
                }
                check_secret(cx, secret, "ETCD_S3_SECRET");
            }
        }
    }
    for d in &k3s.disable {
        if !DISABLABLE.contains(&d.value.as_str()) {
            cx.at(
                d,
                format!("{:?} is not a k3s component that can be disabled", d.value),
                format!("write one of: {}", DISABLABLE.join(", ")),
            );
        }
    }
    if let Some(token) = &k3s.token {
        check_secret(cx, token, "K3S_TOKEN");
    }
    if let Some(token) = &k3s.agent_token {
        check_secret(cx, token, "K3S_AGENT_TOKEN");
    }
    check_server_token_stays_on_servers(cx, fleet);
}

/// The k3s flag tables a fleet's arguments are checked against: its
/// release's minor, or, following a named channel (minor unknown until the
/// channel is asked), every table: a flag no covered release defines is
/// still refused. Empty (nothing checked) when the release's minor is not
/// covered, which is itself refused when the fleet passes k3s flags.
fn flag_tables(cx: &mut Ctx, fleet: &FleetFile) -> Vec<&'static k3s_flags::Table> {
    let k3s = &fleet.k3s.value;
    let minor = |s: &str| -> Option<(u32, u32)> {
        if let Some(r) = crate::base::release::Release::parse(s) {
            return Some((r.major, r.minor));
        }
        let (a, b) = s.strip_prefix('v')?.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let pinned = k3s
        .version
        .as_ref()
        .and_then(|v| Some((v, minor(&v.value)?)))
        .or_else(|| {
            k3s.channel
                .as_ref()
                .and_then(|c| Some((c, minor(&c.value)?)))
        });
    let Some((at, (major, min))) = pinned else {
        return k3s_flags::all();
    };
    match k3s_flags::for_minor(major, min) {
        Ok(t) => vec![t],
        Err(why) => {
            if !(k3s.server_args.is_empty() && k3s.agent_args.is_empty()) {
                cx.at(
                    at,
                    format!("serverArgs/agentArgs cannot be checked: {why}"),
                    format!(
                        "use a release of {}, or a newer exedev-k8s; k3s exits on a flag it does not define, so unchecked flags are not passed on",
                        k3s_flags::covered()
                    ),
                );
            }
            Vec::new()
        }
    }
}

/// A flag given to k3s must be one k3s defines for that role, with a value
/// unless it is a boolean (k3s exits otherwise: `k3s_flags`).
fn check_defined<T>(
    cx: &mut Ctx,
    at: &Spanned<T>,
    tables: &[&k3s_flags::Table],
    role: Role,
    name: &str,
    has_value: bool,
) {
    if tables.is_empty() {
        return;
    }
    if let Err((message, hint)) = k3s_flags::check_flag(tables, role, name, has_value) {
        cx.at(at, message, hint);
    }
}

/// Whether the item is a well-formed `--flag[=value]` (reported if not).
fn check_plain_arg(cx: &mut Ctx, arg: &Spanned<K3sArg>, value: &str) -> bool {
    let name = secret_flags::flag_name(value);
    if !value.starts_with("--") {
        cx.at(
            arg,
            format!("k3s argument {name:?} does not start with --"),
            "write each flag as its own item, e.g. --kubelet-arg=max-pods=200",
        );
        false
    } else if value.contains(['\n', '\0']) {
        cx.at(
            arg,
            "k3s argument contains a newline or NUL character",
            "write each flag on one line, as its own list item",
        );
        false
    } else if let Some(flag) = secret_flags::plain_secret(value) {
        let hint = match FLAGS_WITH_OWN_FIELD.iter().find(|(f, _)| *f == name) {
            Some((_, field)) => format!(
                "remove this item and reference the secret from {field} (e.g. {field}: {{env: NAME}})"
            ),
            None => format!(
                "write it as {{flag: {name}, secret: {{env: NAME}}}} (or {{file: path}}): the value then reaches only the node's config.yaml"
            ),
        };
        cx.at(
            arg,
            format!(
                "k3s argument {name} carries {} in plain text: plans (and pull-request comments) and the node's command line would show it",
                flag.what
            ),
            hint,
        );
        false
    } else {
        true
    }
}

/// Flags whose values exedev-k8s itself writes into config.yaml from
/// other fields of the fleet: a secret flag of the same name would fight
/// them. (`bootstrap::render` also refuses any key its config already has.)
const FLAGS_WITH_OWN_FIELD: &[(&str, &str)] = &[
    ("--token", "k3s.token"),
    ("--agent-token", "k3s.agentToken"),
    ("--vpn-auth", "network.tailscale.authKey"),
];

/// A secret flag becomes a config.yaml key: `--name` exactly, lowercase
/// letters, digits and inner hyphens (what k3s's flags look like), no value.
/// Whether it is one exedev-k8s passes on (reported if not).
fn check_secret_flag(cx: &mut Ctx, flag: &Spanned<String>) -> bool {
    let name = flag.value.strip_prefix("--").unwrap_or("");
    let well_formed = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !well_formed {
        let why = if flag.value.contains('=') {
            "has a value: the value is the secret"
        } else {
            "is not a k3s flag name"
        };
        cx.at(
            flag,
            format!("secret flag {:?} {why}", flag.value),
            "write the flag alone, e.g. flag: --etcd-s3-secret-key, and its value as secret: {env: NAME}",
        );
        false
    } else if let Some((_, field)) = FLAGS_WITH_OWN_FIELD.iter().find(|(f, _)| *f == flag.value) {
        cx.at(
            flag,
            format!("{} is set by exedev-k8s from {field}", flag.value),
            format!("remove this item and set {field} instead"),
        );
        false
    } else {
        true
    }
}

/// `etcd.snapshots` (rules in `super::snapshots`), and no `serverArgs`
/// entry setting what the section sets: both are named.
fn check_etcd(cx: &mut Ctx, fleet: &FleetFile) {
    let Some(s) = fleet.etcd.as_ref().and_then(|e| e.snapshots.as_ref()) else {
        return;
    };
    if let Err(why) = snapshots::check_schedule(&s.schedule.value) {
        cx.at(
            &s.schedule,
            format!(
                "snapshot schedule {:?} is not a cron expression k3s reads: {why}",
                s.schedule.value
            ),
            "write five fields, minute hour day-of-month month day-of-week, e.g. \"0 */6 * * *\" (every 6 hours)",
        );
    }
    if s.retention.value < snapshots::MIN_RETENTION {
        cx.at(
            &s.retention,
            format!(
                "snapshot retention {} would delete every snapshot as soon as it is taken",
                s.retention.value
            ),
            "write retention: 1 or more (k3s's default is 5)",
        );
    }
    if let Some(b) = &s.s3 {
        if let Err(why) = snapshots::check_bucket(&b.bucket.value) {
            cx.at(
                &b.bucket,
                format!("S3 bucket name {:?} {why}", b.bucket.value),
                "write the name of the bucket as S3 shows it, e.g. prod-k3s-snapshots",
            );
        }
        if let Err(why) = snapshots::check_endpoint(&b.endpoint.value) {
            cx.at(
                &b.endpoint,
                format!("S3 endpoint {:?} {why}", b.endpoint.value),
                "write a host such as s3.amazonaws.com or minio.example.com:9000",
            );
        }
        for (what, value) in [("folder", &b.folder), ("region", &b.region)] {
            if let Some(v) = value
                && (v.value.is_empty() || v.value.chars().any(char::is_control))
            {
                cx.at(
                    v,
                    format!(
                        "S3 {what} {:?} is empty or has a control character",
                        v.value
                    ),
                    format!("write the {what} as plain text, or leave it out"),
                );
            }
        }
        check_secret(cx, &b.access_key, "S3_ACCESS_KEY");
        check_secret(cx, &b.secret_key, "S3_SECRET_KEY");
    }
    for arg in &fleet.k3s.value.server_args {
        let name = match &arg.value {
            K3sArg::Plain(v) => v
                .strip_prefix("--")
                .map(|b| b.split('=').next().unwrap_or(b)),
            K3sArg::Secret { flag, .. } => flag.value.strip_prefix("--"),
        };
        if let Some(name) = name.filter(|n| snapshots::SNAPSHOT_FLAGS.contains(n)) {
            let field = snapshots::field_of(name);
            let (msg, hint) = match snapshot_field_at(s, name) {
                Some((line, column)) => (
                    format!(
                        "serverArgs sets --{name}, which {field} (line {line}, column {column}) sets too"
                    ),
                    format!("remove --{name} from serverArgs and keep {field}"),
                ),
                None if name == "etcd-disable-snapshots" => (
                    "serverArgs sets --etcd-disable-snapshots, which contradicts etcd.snapshots"
                        .to_string(),
                    "remove --etcd-disable-snapshots, or remove etcd.snapshots to take none"
                        .to_string(),
                ),
                None => (
                    format!(
                        "serverArgs sets --{name}, a snapshot setting the fleet writes as {field}"
                    ),
                    format!("remove --{name} from serverArgs and write it as {field}"),
                ),
            };
            cx.at(arg, msg, hint);
        }
    }
}

/// Where `etcd.snapshots` writes the k3s setting `flag`, if it does.
fn snapshot_field_at(s: &super::model::Snapshots, flag: &str) -> Option<(u64, u64)> {
    fn at<T>(n: &Spanned<T>) -> Option<(u64, u64)> {
        Some((n.referenced.line(), n.referenced.column()))
    }
    let b = s.s3.as_ref();
    match flag {
        "etcd-snapshot-schedule-cron" => at(&s.schedule),
        "etcd-snapshot-retention" => at(&s.retention),
        "etcd-s3-retention" => b.and_then(|_| at(&s.retention)),
        "etcd-s3" | "etcd-s3-endpoint" => b.and_then(|b| at(&b.endpoint)),
        "etcd-s3-bucket" => b.and_then(|b| at(&b.bucket)),
        "etcd-s3-folder" => b.and_then(|b| b.folder.as_ref()).and_then(at),
        "etcd-s3-region" => b.and_then(|b| b.region.as_ref()).and_then(at),
        // Booleans are written only when true; their keys carry no span.
        "etcd-s3-insecure" => b.filter(|b| b.insecure).and_then(|b| at(&b.endpoint)),
        "etcd-s3-skip-ssl-verify" => b
            .filter(|b| b.skip_ssl_verify)
            .and_then(|b| at(&b.endpoint)),
        "etcd-s3-access-key" => b.and_then(|b| at(&b.access_key)),
        "etcd-s3-secret-key" => b.and_then(|b| at(&b.secret_key)),
        _ => None,
    }
}

fn check_secret(cx: &mut Ctx, secret: &Spanned<SecretRef>, example_env: &str) {
    match &secret.value {
        SecretRef::Literal => cx.at(
            secret,
            "secrets are never written into the fleet file",
            format!("write {{env: {example_env}}} (or {{file: path}}) and put the value there"),
        ),
        SecretRef::Env(name) if !is_env_name(name) => cx.at(
            secret,
            format!("{name:?} is not an environment variable name"),
            format!("write e.g. {{env: {example_env}}}"),
        ),
        SecretRef::File(path) if path.as_os_str().is_empty() => cx.at(
            secret,
            "secret file path is empty",
            "write e.g. {file: secrets/token}",
        ),
        _ => check_not_own_credential(cx, secret),
    }
}

/// Environment variables that hold exedev-k8s's own credentials and
/// settings: `EXE_DEV_API_KEY` (the API token), `EXE_DEV_SSH_KEY` and
/// `EXE_DEV_SSH_KEY_PASSPHRASE` (the key that mints tokens and its
/// passphrase), `EXE_DEV_ENDPOINT`, and the `EXEDEV_K8S_*` settings.
const OWN_ENV_PREFIXES: &[&str] = &["EXE_DEV_", "EXEDEV_K8S_"];
/// Directories whose files are credentials the tool uses itself: SSH keys
/// (`~/.ssh/`, where an exe.dev key lives) and the tool's own state beside
/// the fleet file (`.exedev-k8s/`: the generated server and agent tokens,
/// the admin kubeconfig; `cluster_secrets::STATE_DIR_NAME`).
const OWN_CREDENTIAL_DIRS: &[&str] = &[".ssh", ".exedev-k8s"];

/// A secret reference sends its value to VMs (a setup script exe.dev
/// stores, a config file): it must never name the tool's own credentials.
/// In the GitOps apply job the environment holds the apply token beside
/// the fleet's secrets; `{env: EXE_DEV_API_KEY}` would hand it to every
/// node. Refused by name, whatever the field.
fn check_not_own_credential(cx: &mut Ctx, secret: &Spanned<SecretRef>) {
    match &secret.value {
        SecretRef::Env(name) if OWN_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) => cx.at(
            secret,
            format!(
                "{name} holds exedev-k8s's own credentials or settings: the nodes would receive it"
            ),
            "put this secret in a variable of its own (e.g. {env: ETCD_S3_SECRET}); variables starting with EXE_DEV_ or EXEDEV_K8S_ are the tool's",
        ),
        SecretRef::File(path)
            if path.components().any(|c| {
                OWN_CREDENTIAL_DIRS
                    .iter()
                    .any(|d| c.as_os_str() == std::ffi::OsStr::new(d))
            }) =>
        {
            cx.at(
                secret,
                format!(
                    "{} is in a directory of credentials the tool uses itself (.ssh/ or .exedev-k8s/): the nodes would receive it",
                    path.display()
                ),
                "keep the secrets meant for the nodes in files of their own, e.g. {file: secrets/etcd-s3}",
            )
        }
        _ => {}
    }
}

/// The server token is admin-equivalent and only servers may hold it (k3s
/// "token" docs: agents join with the agent token). A reference to the
/// same environment variable or file as `k3s.token` in `agentArgs` or as
/// `k3s.agentToken` would hand it to agents: refused at the reference.
fn check_server_token_stays_on_servers(cx: &mut Ctx, fleet: &FleetFile) {
    let k3s = &fleet.k3s.value;
    let Some(token) = &k3s.token else {
        return;
    };
    if matches!(token.value, SecretRef::Literal) {
        return;
    }
    let agent_refs = k3s
        .agent_args
        .iter()
        .filter_map(|a| match &a.value {
            K3sArg::Secret { secret, .. } => Some((secret, "agentArgs")),
            K3sArg::Plain(_) => None,
        })
        .chain(k3s.agent_token.iter().map(|t| (t, "k3s.agentToken")));
    for (secret, place) in agent_refs {
        if secret.value == token.value {
            cx.at(
                secret,
                format!(
                    "{place} names the server token's source ({:?}, k3s.token): agents would receive the admin-equivalent server token",
                    secret.value
                ),
                "agents get only the agent token: reference another secret here",
            );
        }
    }
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn check_network(cx: &mut Ctx, fleet: &FleetFile) {
    let ts = &fleet.network.tailscale;
    if !is_dns_name(&ts.tailnet.value) || !ts.tailnet.value.contains('.') {
        cx.at(
            &ts.tailnet,
            format!("tailnet {:?} is not a DNS name", ts.tailnet.value),
            "write the MagicDNS suffix from the Tailscale admin console, e.g. tail1234.ts.net",
        );
    }
    check_secret(cx, &ts.auth_key, "TS_AUTHKEY");
}

/// `min_memory`: the memory floor of the group's role (servers' for
/// `defaults`, which servers inherit too), so a suggested size passes.
fn check_node_group(cx: &mut Ctx, g: Sizing<'_>, min_memory: ByteSize) {
    let Sizing {
        image,
        cpu,
        memory,
        disk,
        tags,
    } = g;
    if let Some(image) = image
        && (image.value.trim().is_empty() || image.value.contains(char::is_whitespace))
    {
        cx.at(
            image,
            format!("image {:?} is not an image name", image.value),
            "write an exe.dev image such as exeuntu",
        );
    }
    if let Some(cpu) = cpu
        && !CPU_RANGE.contains(&cpu.value)
    {
        cx.at(
            cpu,
            format!("cpu {} is out of range", cpu.value),
            "write a whole number of vCPUs from 1 to 64",
        );
    }
    for (field, size, floor) in [("memory", memory, min_memory), ("disk", disk, MIN_DISK)] {
        let Some(size) = size else { continue };
        match ByteSize::parse_with_unit(&size.value) {
            Ok(b) if b.0 == 0 => cx.at(
                size,
                format!("{field} is zero"),
                "write a size such as 4GB",
            ),
            Ok(_) => {}
            Err(e @ SizeError::NoUnit { .. }) => cx.at(
                size,
                e.to_string(),
                format!(
                    "write {}: sizes take a unit, B, KB, MB, GB or TB (binary multiples; KiB, MiB, GiB and TiB too)",
                    unit_that_passes(size.value.trim(), floor)
                ),
            ),
            Err(e) => cx.at(
                size,
                e.to_string(),
                match kubernetes_quantity(size.value.trim()) {
                    Some(fixed) => format!(
                        "write {fixed} (Kubernetes' Ki, Mi, Gi and Ti are written KiB, MiB, GiB and TiB here; KB, MB, GB and TB mean the same)"
                    ),
                    None => "write a whole number with a unit, e.g. 4GB, 4GiB, 512MB or 1TB".to_string(),
                },
            ),
        }
    }
    for tag in tags {
        if tag.value.starts_with(RESERVED_TAG_PREFIX) {
            cx.at(
                tag,
                format!(
                    "tag {:?} uses the prefix {RESERVED_TAG_PREFIX}, which is reserved for the tool's ownership tags",
                    tag.value
                ),
                "choose a tag that does not start with exk8s-",
            );
        } else if !is_tag(&tag.value) {
            cx.at(
                tag,
                format!("{:?} is not a valid exe.dev tag", tag.value),
                "write 1-63 lowercase letters, digits or hyphens, starting with a letter or digit",
            );
        }
    }
}

pub(crate) use crate::base::names::is_tag;

fn check_labels(cx: &mut Ctx, labels: &Labels) {
    for (key, value) in &labels.0 {
        if let Err(why) = label_key_problem(&key.value) {
            cx.at(
                key,
                format!("label key {:?} is invalid: {why}", key.value),
                "write [prefix/]name, e.g. node.kubernetes.io/role or team",
            );
        } else if is_reserved_label(&key.value) {
            cx.at(
                key,
                format!(
                    "label key {:?} is under {RESERVED_LABEL_PREFIX}, which is reserved for the tool",
                    key.value
                ),
                "use your own prefix, e.g. example.com/name",
            );
        }
        if !is_label_value(&value.value) {
            cx.at(
                value,
                format!("label value {:?} is invalid", value.value),
                "write at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (or an empty string)",
            );
        }
    }
}

fn is_reserved_label(key: &str) -> bool {
    let prefix = RESERVED_LABEL_PREFIX.trim_end_matches('/');
    match key.split_once('/') {
        Some((p, _)) => p == prefix || p.ends_with(&format!(".{prefix}")),
        None => false,
    }
}

/// Why `key` is not a Kubernetes label (or taint) key, if it is not.
fn label_key_problem(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.len() > 253 || !is_dns_name(prefix) {
                return Err(
                    "the prefix before '/' must be a lowercase DNS subdomain of at most 253 characters",
                );
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 {
        return Err("the name must be 1 to 63 characters");
    }
    if !is_label_value(name) {
        return Err(
            "the name may contain only letters, digits, '-', '_' and '.', and must start and end with a letter or digit",
        );
    }
    Ok(())
}

/// Kubernetes label value: empty, or at most 63 of `[A-Za-z0-9._-]`
/// starting and ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let b = v.as_bytes();
    b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Lowercase DNS name (RFC 1123 subdomain): dot-separated labels of 1-63
/// `[a-z0-9-]`, not starting or ending with '-', at most 253 in total.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            (1..=63).contains(&b.len())
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn check_taints(cx: &mut Ctx, taints: &[Spanned<String>]) {
    for t in taints {
        if let Err(why) = taint_problem(&t.value) {
            cx.at(
                t,
                format!("taint {:?} is invalid: {why}", t.value),
                "write key[=value]:Effect, e.g. dedicated=gpu:NoSchedule",
            );
        }
    }
}

fn taint_problem(t: &str) -> Result<(), String> {
    let Some((kv, effect)) = t.rsplit_once(':') else {
        return Err("it has no :Effect".to_string());
    };
    if !TAINT_EFFECTS.contains(&effect) {
        return Err(format!(
            "effect {effect:?} is not one of {}",
            TAINT_EFFECTS.join(", ")
        ));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    label_key_problem(key).map_err(|why| format!("key {key:?}: {why}"))?;
    if !is_label_value(value) {
        return Err(format!("value {value:?} is not a valid label value"));
    }
    Ok(())
}

fn check_share(cx: &mut Ctx, share: &Option<Share>) {
    if let Some(share) = share
        && !SHARE_PORTS.contains(&share.port.value)
    {
        cx.at(
            &share.port,
            format!("share port {} is outside exe.dev's range", share.port.value),
            "write a port from 3000 to 9999",
        );
    }
}

/// The values of a pattern rule, as regular expressions in the dialect
/// JSON Schema and Rust's `regex` share. The schema (`fleet::schema`)
/// carries them; this module's tests prove each agrees with the function
/// that validates the same rule (which explains failures one by one).
pub mod patterns {
    use super::TAINT_EFFECTS;
    use crate::core::fleet::desired::{RESERVED_LABEL_PREFIX, RESERVED_TAG_PREFIX};

    /// A k3s release, `v1.31.4+k3s1` (`is_k3s_version`).
    pub const K3S_VERSION: &str = r"^v[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}\+k3s[0-9]{1,9}$";
    /// An environment variable name (`is_env_name`).
    pub const ENV_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
    /// An image name: something, without whitespace.
    pub const IMAGE: &str = r"^\S+$";
    /// A k3s flag: `--`, one line (`check_k3s`).
    pub const K3S_ARG: &str = r"^--[^\n\x00]*$";
    const DNS_LABEL: &str = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
    const LABEL_NAME: &str = "[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?";

    /// A k3s channel (`is_k3s_channel`): a named channel or a minor line.
    pub fn k3s_channel() -> String {
        format!("^({}|v[0-9]+\\.[0-9]+)$", super::K3S_CHANNELS.join("|"))
    }

    /// The tailnet: a lowercase DNS name with at least one dot (`check_network`).
    pub fn tailnet() -> String {
        format!("^{DNS_LABEL}(\\.{DNS_LABEL})+$")
    }

    fn dns_name() -> String {
        format!("{DNS_LABEL}(\\.{DNS_LABEL})*")
    }

    fn label_key() -> String {
        format!("({}/)?{LABEL_NAME}", dns_name())
    }

    /// A Kubernetes label key, `[prefix/]name` (`label_key_problem`).
    pub fn label_key_full() -> String {
        format!("^{}$", label_key())
    }

    /// A Kubernetes label value, possibly empty (`is_label_value`).
    pub fn label_value() -> String {
        format!("^({LABEL_NAME})?$")
    }

    /// Label keys under the tool's prefix (`is_reserved_label`).
    pub fn reserved_label() -> String {
        let prefix = escape(RESERVED_LABEL_PREFIX.trim_end_matches('/'));
        format!("^([^/]*\\.)?{prefix}/")
    }

    /// A taint, `key[=value]:Effect` (`taint_problem`).
    pub fn taint() -> String {
        format!(
            "^{}(=({LABEL_NAME})?)?:({})$",
            label_key(),
            TAINT_EFFECTS.join("|")
        )
    }

    /// Tags under the tool's prefix, refused in the fleet.
    pub fn reserved_tag() -> String {
        format!("^{}", escape(RESERVED_TAG_PREFIX))
    }

    /// A size with its unit (`ByteSize::parse_with_unit`), not zero; units in
    /// any case, from `sizes::UNITS`.
    pub fn size() -> String {
        let units: Vec<String> = crate::base::sizes::UNITS
            .iter()
            .map(|(u, _)| {
                u.chars()
                    .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
                    .collect()
            })
            .collect();
        format!("^\\s*0*[1-9][0-9]*\\s*({})\\s*$", units.join("|"))
    }

    /// `s` with regular-expression metacharacters escaped.
    pub fn escape(s: &str) -> String {
        s.chars().fold(String::new(), |mut out, c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                out.push('\\');
            }
            out.push(c);
            out
        })
    }
}

/// The least `maxUnavailable` a pool may have: 0 would block every change.
pub const MIN_MAX_UNAVAILABLE: u32 = 1;

/// Named k3s release channels (besides minor lines such as `v1.31`).
pub const K3S_CHANNELS: &[&str] = crate::base::release::NAMED_CHANNELS;

fn is_k3s_version(v: &str) -> bool {
    crate::base::release::is_release(v)
}

fn is_k3s_channel(c: &str) -> bool {
    crate::base::release::is_channel(c)
}

/// Manifest paths: relative to the fleet file (so the fleet's directory
/// carries them, as it carries secret files), YAML, listed once. Whether
/// each reads and parses is checked where the file is read
/// (`workspace::read_manifests`).
fn check_manifests(cx: &mut Ctx<'_>, manifests: &[Spanned<String>]) {
    let mut seen = BTreeSet::new();
    for m in manifests {
        let p = m.value.as_str();
        let hint = "write a path relative to the fleet file, e.g. `manifests: [ingress.yaml]`";
        // Control characters never get here: `yaml_guard` refuses them
        // in the fleet file first.
        if p.is_empty() || p.starts_with('/') || p.starts_with('~') {
            cx.at(m, format!("manifest {p:?} is not a relative path"), hint);
        } else if !(p.ends_with(".yaml") || p.ends_with(".yml")) {
            cx.at(
                m,
                format!("manifest {p:?} is not a .yaml or .yml file"),
                hint,
            );
        } else if !seen.insert(p) {
            cx.at(
                m,
                format!("manifest {p:?} is listed twice"),
                "list each manifest once",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every "this fleet gives this located error" case is a file in
    //! `tests/fleets/invalid/`, its errors a snapshot
    //! (`tests/it/invalid_fleets.rs`). Here: what cannot be a data file.

    use crate::core::fleet::fixtures::{MINIMAL, minimal_replacing, minimal_with, parsed};

    /// Values at the edge of a rule, on the valid side: the minimal fleet,
    /// and each one beside it, parses.
    #[test]
    fn the_minimal_fleet_and_values_at_the_limits_are_valid() {
        let long_cluster = "c".repeat(47);
        for (what, text) in [
            ("the minimal fleet", MINIMAL.to_string()),
            (
                "every pool commented out leaves `pools:` empty: no pools",
                minimal_with("pools:\n#  - name: web\n#    count: 1\n"),
            ),
            (
                "each role's minimum memory and disk",
                minimal_with(
                    "controlPlane:\n  memory: 2GB\n  disk: 5GB\npools:\n  - name: web\n    count: 1\n    memory: 512MB\n",
                ),
            ),
            (
                "cluster `demo` and pool `a` give demo-a1",
                minimal_with("pools:\n  - name: a\n    count: 1\n"),
            ),
            (
                "cluster `a` gives a-cp1, 5 characters, exe.dev's minimum",
                minimal_replacing("name: demo", "name: a"),
            ),
            (
                "{47 x c}-{14 x p}1 is 63 characters, a DNS label's maximum",
                minimal_replacing("name: demo", &format!("name: {long_cluster}"))
                    + &format!("pools:\n  - name: {}\n    count: 1\n", "p".repeat(14)),
            ),
            (
                "an empty label value",
                minimal_with("controlPlane:\n  labels:\n    team: \"\"\n"),
            ),
            (
                "taints with and without a value, with a prefixed key",
                minimal_with(
                    "controlPlane:\n  taints: [\"a:NoExecute\", \"x.io/k=v:PreferNoSchedule\"]\n",
                ),
            ),
            (
                "a minor-line channel",
                minimal_replacing("channel: stable", "channel: v1.31"),
            ),
            (
                "a release version",
                minimal_replacing("channel: stable", "version: v1.31.4+k3s1"),
            ),
        ] {
            if let Err(e) = crate::core::fleet::parse(&text, "fleet.yaml") {
                panic!("{what}: refused:\n{e}\n{text}");
            }
        }
    }

    /// A secret flag shows where its value comes from, never the value.
    #[test]
    fn secret_k3s_flags_show_where_their_value_comes_from() {
        let f = parsed(&minimal_replacing(
            "  channel: stable\n",
            "  channel: stable\n  serverArgs:\n    - --etcd-s3\n    - {flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}\n  agentArgs:\n    - flag: --kubelet-arg\n      secret: {file: secrets/kubelet}\n",
        ));
        let shown: Vec<String> = f
            .k3s
            .server_args
            .iter()
            .chain(&f.k3s.agent_args)
            .map(|a| a.shown())
            .collect();
        assert_eq!(
            shown,
            [
                "--etcd-s3",
                "--etcd-s3-secret-key=(secret from env ETCD_S3_SECRET)",
                "--kubelet-arg=(secret from file secrets/kubelet)"
            ]
        );
    }

    use super::patterns;
    use crate::core::fleet::pattern_matcher as matcher;
    use proptest::prelude::*;

    proptest! {
        /// Each pattern the schema carries accepts exactly what the
        /// validator's function for that rule accepts (DNS names' overall
        /// 253-character limit aside: no input here comes near it).
        #[test]
        fn patterns_agree_with_the_validator(
            s in "[a-zA-Z0-9._/:=+-]{0,12}|v[0-9.]{0,6}(\\+k3s[0-9]{0,2})?|v[0-9]{8,11}\\.[0-9]\\.[0-9]{8,11}\\+k3s[0-9]{8,11}|[a-z0-9.-]{0,20}|[a-z./]{0,8}=?[a-z]{0,3}:(No|Pre)[A-Za-z]{0,12}|--[a-z=\n]{0,5}|[ 0-9]{0,4}[a-zA-Z ]{0,4}"
        ) {
            prop_assert_eq!(matcher(patterns::K3S_VERSION)(&s), super::is_k3s_version(&s), "{}", s);
            prop_assert_eq!(matcher(&patterns::k3s_channel())(&s), super::is_k3s_channel(&s), "{}", s);
            prop_assert_eq!(matcher(patterns::ENV_NAME)(&s), super::is_env_name(&s), "{}", s);
            prop_assert_eq!(
                matcher(patterns::K3S_ARG)(&s),
                s.starts_with("--") && !s.contains(['\n', '\0']),
                "{}", s
            );
            prop_assert_eq!(
                matcher(patterns::IMAGE)(&s),
                !s.trim().is_empty() && !s.contains(char::is_whitespace),
                "{}", s
            );
            prop_assert_eq!(
                matcher(&patterns::tailnet())(&s),
                super::is_dns_name(&s) && s.contains('.'),
                "{}", s
            );
            prop_assert_eq!(matcher(&patterns::label_key_full())(&s), super::label_key_problem(&s).is_ok(), "{}", s);
            prop_assert_eq!(matcher(&patterns::label_value())(&s), super::is_label_value(&s), "{}", s);
            prop_assert_eq!(
                matcher(&patterns::reserved_label())(&s),
                super::is_reserved_label(&s),
                "{}", s
            );
            prop_assert_eq!(matcher(&patterns::taint())(&s), super::taint_problem(&s).is_ok(), "{}", s);
            prop_assert_eq!(
                matcher(&patterns::size())(&s),
                crate::base::sizes::ByteSize::parse_with_unit(&s).is_ok_and(|b| b.0 > 0),
                "{}", s
            );
        }
    }

    #[test]
    fn patterns_agree_on_known_cases() {
        for (pattern, yes, no) in [
            (patterns::taint(), "dedicated=gpu:NoSchedule", "x=y:Nope"),
            (
                patterns::taint(),
                "example.com/k:NoExecute",
                "k=v=w:NoSchedule",
            ),
            (
                patterns::reserved_label(),
                "exedev-k8s.io/pool",
                "exedev-k8s.io-x/y",
            ),
            (patterns::reserved_label(), "a.exedev-k8s.io/x", "team"),
            (patterns::size(), "4GB", "4096"),
            (patterns::size(), " 512 mib ", "0GB"),
            (patterns::k3s_channel(), "v1.31", "v1.31.4"),
        ] {
            assert!(matcher(&pattern)(yes), "{pattern} should accept {yes}");
            assert!(!matcher(&pattern)(no), "{pattern} should refuse {no}");
        }
    }
}
