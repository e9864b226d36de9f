//! The fleet as every later stage sees it: parsed, validated, every default
//! applied and every structured string parsed (sizes, taints, the k3s
//! release, proxy settings). Parse, don't validate: [`super::parse`] turns
//! the file model ([`FleetFile`]) into a [`Fleet`] or into located errors,
//! so nothing downstream re-parses a value, invents a default or meets a
//! value validation would have refused.

use std::collections::BTreeMap;
use std::fmt;

use super::error::{FleetError, FleetErrors};
use super::model::{
    DEFAULT_CPU, DEFAULT_DISK, DEFAULT_IMAGE, DEFAULT_MEMORY, Defaults, FleetFile, K3s, K3sArg,
    Labels, SecretRef, Share, Sizing, Spanned,
};
use super::snapshots::{ACCESS_KEY_FLAG, RETENTION_FLAG, SCHEDULE_FLAG, SECRET_KEY_FLAG};
use crate::base::release::Release;
use crate::base::sizes::ByteSize;

/// Pool name of the control plane, in VM names, tags and labels.
pub const CONTROL_PLANE_POOL: &str = "cp";
/// Taint put on servers when `controlPlane.schedulable` is false.
pub const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane=true:NoSchedule";

/// A pool's k3s role (defined with the flags each role takes).
pub use crate::base::k3s_flags::Role;

/// exe.dev HTTPS proxy settings of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareSpec {
    /// VM port exposed through the proxy.
    pub port: u16,
    /// Reachable without an exe.dev login.
    pub public: bool,
}

/// Where a value stands in the fleet file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl Location {
    fn of<T>(s: &Spanned<T>) -> Location {
        Location {
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

/// A value with its place in the fleet file, for errors found later (a
/// secret that does not resolve is reported where it is referenced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub at: Location,
}

impl<T: Clone> Located<T> {
    fn of(s: &Spanned<T>) -> Located<T> {
        Located {
            value: s.value.clone(),
            at: Location::of(s),
        }
    }
}

/// Which k3s every node runs: a pinned release, or a channel followed.
/// Either way a plan decides one concrete release (a channel is looked up
/// when planning) and every node installs that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K3sRelease {
    /// `k3s.version`, e.g. `v1.31.4+k3s1`.
    Version(Release),
    /// `k3s.channel`, e.g. `stable` or `v1.31` ([`crate::base::release::is_channel`]).
    Channel(String),
}

impl K3sRelease {
    /// The channel the fleet follows, if it follows one.
    pub fn channel(&self) -> Option<&str> {
        match self {
            K3sRelease::Channel(c) => Some(c),
            K3sRelease::Version(_) => None,
        }
    }
}

/// One extra k3s flag, as the node gets it.
#[derive(Clone, PartialEq, Eq)]
pub enum K3sFlag {
    /// `--flag=value` (or `--flag`), one argv element.
    Plain(String),
    /// A flag whose value is a secret, read at apply time and written only
    /// into the node's config.yaml.
    Secret {
        /// `--name`, without a value.
        flag: String,
        /// Where the value comes from.
        secret: Located<SecretRef>,
    },
}

impl K3sFlag {
    /// How a plan shows the flag: a secret's value as where it comes from.
    pub fn shown(&self) -> String {
        match self {
            K3sFlag::Plain(s) => s.clone(),
            K3sFlag::Secret { flag, secret } => {
                format!("{flag}=(secret from {})", secret.value.describe())
            }
        }
    }
}

impl fmt::Debug for K3sFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

/// k3s settings shared by the fleet's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sSpec {
    pub release: K3sRelease,
    pub server_args: Vec<K3sFlag>,
    pub agent_args: Vec<K3sFlag>,
    /// Packaged components not deployed; identical on every server.
    pub disable: Vec<String>,
    /// `k3s.token`, when the file names one (else a stored, generated one).
    pub token: Option<Located<SecretRef>>,
    /// `k3s.agentToken`, likewise.
    pub agent_token: Option<Located<SecretRef>>,
    /// `etcd.snapshots`: k3s's snapshot settings, servers only (they live
    /// here, beside the other k3s settings, because they change in place
    /// the same way).
    pub snapshots: Option<EtcdSnapshots>,
    /// The `k3s:` section, where errors about the tokens it omits point.
    pub at: Location,
}

/// The tailnet the nodes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleSpec {
    /// MagicDNS suffix, e.g. `tail1234.ts.net`.
    pub tailnet: String,
    pub auth_key: Located<SecretRef>,
}

/// A taint's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }

    fn parse(s: &str) -> Option<TaintEffect> {
        [
            TaintEffect::NoSchedule,
            TaintEffect::PreferNoSchedule,
            TaintEffect::NoExecute,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

/// A Kubernetes taint, `key[=value]:Effect`. `key=:Effect` and `key:Effect`
/// are the same taint (an empty value is no value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

impl Taint {
    /// Reads `key[=value]:Effect`; the validator has checked the key and
    /// value grammar, this only splits (so the cluster edge can read what a
    /// Node carries with the same rule).
    pub fn parse(s: &str) -> Option<Taint> {
        let (kv, effect) = s.rsplit_once(':')?;
        let effect = TaintEffect::parse(effect)?;
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, (!v.is_empty()).then(|| v.to_string())),
            None => (kv, None),
        };
        (!key.is_empty()).then(|| Taint {
            key: key.to_string(),
            value,
            effect,
        })
    }
}

impl Taint {
    /// One spelling of a taint as a Node or a fleet writes it
    /// (`a=:X` and `a:X` are one taint), so the plan and the cluster edge
    /// compare taints the same way; a text that is no taint stays as given.
    pub fn canonical(s: &str) -> String {
        Taint::parse(s).map_or_else(|| s.to_string(), |t| t.to_string())
    }
}

impl std::str::FromStr for Taint {
    type Err = String;
    fn from_str(s: &str) -> Result<Taint, String> {
        Taint::parse(s).ok_or_else(|| format!("{s:?} is not key[=value]:Effect"))
    }
}

/// Compares with the fleet-file form (`a=b:NoExecute`).
impl PartialEq<&str> for Taint {
    fn eq(&self, other: &&str) -> bool {
        Taint::parse(other).as_ref() == Some(self)
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}:{}", self.key, self.effect.as_str()),
            None => write!(f, "{}:{}", self.key, self.effect.as_str()),
        }
    }
}

/// A group of identical VMs: the control plane (pool `cp`) or a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    pub pool: String,
    pub role: Role,
    pub count: u32,
    pub image: String,
    pub cpu: u32,
    pub memory: ByteSize,
    pub disk: ByteSize,
    /// The user's labels (the tool adds its own in `desired_vms`).
    pub labels: BTreeMap<String, String>,
    /// The user's taints, plus the control-plane taint on unschedulable
    /// servers.
    pub taints: Vec<Taint>,
    /// The user's tags, `defaults.tags` first (the tool adds its own).
    pub tags: Vec<String>,
    pub share: Option<ShareSpec>,
    /// How many of the group's nodes an apply takes out of service at once
    /// (drained for an upgrade, a k3s or VM restart, a replacement or a
    /// removal): a pool's `maxUnavailable` (default 1); always 1 for the
    /// control plane (etcd quorum, one learner at a time).
    pub max_unavailable: u32,
}

/// A fleet file, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The file name as given to the parser, for located errors found later.
    pub file: String,
    /// Cluster name: prefix of every VM name, key of the ownership tags.
    pub name: String,
    /// `destroy` refuses a protected fleet.
    pub protect: bool,
    pub k3s: K3sSpec,
    pub tailscale: TailscaleSpec,
    /// The servers (pool `cp`).
    pub control_plane: NodeGroup,
    /// Agent pools, in file order.
    pub pools: Vec<NodeGroup>,
    /// Manifest files to apply once the nodes are Ready, as written
    /// (relative to the fleet file), each where it stands in the file.
    pub manifests: Vec<Located<String>>,
}

impl Fleet {
    /// The control plane, then the pools in file order.
    pub fn groups(&self) -> impl Iterator<Item = &NodeGroup> {
        std::iter::once(&self.control_plane).chain(&self.pools)
    }
}

/// Turns a validated file into a [`Fleet`]. Every value is parsed again here
/// from what validation accepted; one that does not parse is a located
/// error (never a silent default), so a gap between the two is caught.
pub fn resolve(f: &FleetFile, file: &str) -> Result<Fleet, FleetErrors> {
    let mut errors = Vec::new();
    let mut bad = |at: Location, what: String| {
        errors.push(FleetError::at(
            file,
            at.line,
            at.column,
            what,
            "this is a bug in exedev-k8s's validation: please report it",
        ));
    };
    let mut k3s = resolve_k3s(&f.k3s, &mut bad);
    k3s.snapshots = f
        .etcd
        .as_ref()
        .and_then(|e| e.snapshots.as_ref())
        .map(resolve_snapshots);
    let cp = &f.control_plane;
    let control_plane = resolve_group(
        &f.defaults,
        GroupFile {
            pool: CONTROL_PLANE_POOL,
            role: Role::Server,
            count: cp.count(),
            sizing: cp.sizing(),
            labels: &cp.labels,
            taints: &cp.taints,
            unschedulable: !cp.schedulable,
            share: &cp.share,
            max_unavailable: None,
        },
        &mut bad,
    );
    let pools = f
        .pools
        .iter()
        .map(|p| {
            resolve_group(
                &f.defaults,
                GroupFile {
                    pool: &p.name.value,
                    role: Role::Agent,
                    count: p.count.value,
                    sizing: p.sizing(),
                    labels: &p.labels,
                    taints: &p.taints,
                    unschedulable: false,
                    share: &p.share,
                    max_unavailable: p.max_unavailable.as_ref(),
                },
                &mut bad,
            )
        })
        .collect();
    let fleet = Fleet {
        file: file.to_string(),
        name: f.metadata.name.value.clone(),
        protect: f.metadata.protect,
        k3s,
        tailscale: TailscaleSpec {
            tailnet: f.network.tailscale.tailnet.value.clone(),
            auth_key: Located::of(&f.network.tailscale.auth_key),
        },
        control_plane,
        pools,
        manifests: f.manifests.iter().map(Located::of).collect(),
    };
    if errors.is_empty() {
        Ok(fleet)
    } else {
        Err(FleetErrors(errors))
    }
}

/// The k3s section: its release parsed (a version or a channel) and its
/// flags, secret references located.
fn resolve_k3s(spanned: &Spanned<K3s>, bad: &mut dyn FnMut(Location, String)) -> K3sSpec {
    let k3s = &spanned.value;
    let release = match (&k3s.version, &k3s.channel) {
        (Some(v), None) => match Release::parse(&v.value) {
            Some(r) => K3sRelease::Version(r),
            None => {
                bad(
                    Location::of(v),
                    format!("k3s version {:?} did not parse", v.value),
                );
                K3sRelease::Channel(String::new())
            }
        },
        (None, Some(c)) => K3sRelease::Channel(c.value.clone()),
        _ => {
            bad(
                Location::of(spanned),
                "k3s needs exactly one of version and channel".into(),
            );
            K3sRelease::Channel(String::new())
        }
    };
    let flags = |args: &[Spanned<K3sArg>]| -> Vec<K3sFlag> {
        args.iter()
            .map(|a| match &a.value {
                K3sArg::Plain(s) => K3sFlag::Plain(s.clone()),
                K3sArg::Secret { flag, secret } => K3sFlag::Secret {
                    flag: flag.value.clone(),
                    secret: Located::of(secret),
                },
            })
            .collect()
    };
    K3sSpec {
        release,
        server_args: flags(&k3s.server_args),
        agent_args: flags(&k3s.agent_args),
        disable: k3s.disable.iter().map(|d| d.value.clone()).collect(),
        token: k3s.token.as_ref().map(Located::of),
        agent_token: k3s.agent_token.as_ref().map(Located::of),
        snapshots: None,
        at: Location::of(spanned),
    }
}

/// `etcd.snapshots`, resolved: what the servers are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSnapshots {
    /// A cron expression [`super::snapshots::check_schedule`] accepted.
    pub schedule: String,
    /// At least [`super::snapshots::MIN_RETENTION`].
    pub retention: u32,
    pub s3: Option<SnapshotS3>,
}

/// The bucket k3s uploads snapshots to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotS3 {
    pub endpoint: String,
    /// A name [`super::snapshots::check_bucket`] accepted.
    pub bucket: String,
    pub folder: Option<String>,
    pub region: Option<String>,
    pub insecure: bool,
    pub skip_ssl_verify: bool,
    pub access_key: Located<SecretRef>,
    pub secret_key: Located<SecretRef>,
}

impl EtcdSnapshots {
    /// The k3s server settings, as flags: plain ones `--name=value`, the
    /// keys as secret flags (their values resolved at apply time like every
    /// secret flag's, shown in plans as where they come from).
    pub fn settings(&self) -> Vec<K3sFlag> {
        let plain = |name: &str, value: &str| K3sFlag::Plain(format!("--{name}={value}"));
        let mut out = vec![
            plain(SCHEDULE_FLAG, &self.schedule),
            plain(RETENTION_FLAG, &self.retention.to_string()),
        ];
        if let Some(s3) = &self.s3 {
            out.push(plain("etcd-s3", "true"));
            out.push(plain("etcd-s3-endpoint", &s3.endpoint));
            out.push(plain("etcd-s3-bucket", &s3.bucket));
            if let Some(f) = &s3.folder {
                out.push(plain("etcd-s3-folder", f));
            }
            if let Some(r) = &s3.region {
                out.push(plain("etcd-s3-region", r));
            }
            if s3.insecure {
                out.push(plain("etcd-s3-insecure", "true"));
            }
            if s3.skip_ssl_verify {
                out.push(plain("etcd-s3-skip-ssl-verify", "true"));
            }
            // k3s keeps S3's retention apart (default 5) and counts every
            // server's snapshots in the bucket together
            // (docs/facts/disaster-recovery.md, section 2): one number in
            // the fleet governs both.
            out.push(plain("etcd-s3-retention", &self.retention.to_string()));
            for (name, secret) in [
                (ACCESS_KEY_FLAG, &s3.access_key),
                (SECRET_KEY_FLAG, &s3.secret_key),
            ] {
                out.push(K3sFlag::Secret {
                    flag: format!("--{name}"),
                    secret: secret.clone(),
                });
            }
        }
        out
    }

    /// The secret references the section makes, with the field each is
    /// written in.
    pub fn secrets(&self) -> Vec<(&'static str, &Located<SecretRef>)> {
        self.s3
            .iter()
            .flat_map(|s3| {
                [
                    ("etcd.snapshots.s3.accessKey", &s3.access_key),
                    ("etcd.snapshots.s3.secretKey", &s3.secret_key),
                ]
            })
            .collect()
    }
}

/// `etcd.snapshots` as the servers get it (validated before: nothing here
/// can fail).
fn resolve_snapshots(s: &super::model::Snapshots) -> EtcdSnapshots {
    EtcdSnapshots {
        schedule: s.schedule.value.trim().to_string(),
        retention: s.retention.value,
        s3: s.s3.as_ref().map(|b| SnapshotS3 {
            endpoint: b.endpoint.value.clone(),
            bucket: b.bucket.value.clone(),
            folder: b.folder.as_ref().map(|f| f.value.clone()),
            region: b.region.as_ref().map(|r| r.value.clone()),
            insecure: b.insecure,
            skip_ssl_verify: b.skip_ssl_verify,
            access_key: Located::of(&b.access_key),
            secret_key: Located::of(&b.secret_key),
        }),
    }
}

/// One node group (the control plane or a pool) with the file's
/// defaults applied and its sizes, taints, share and `maxUnavailable`
/// parsed.
fn resolve_group(
    d: &Defaults,
    g: GroupFile<'_>,
    bad: &mut dyn FnMut(Location, String),
) -> NodeGroup {
    let size = |own: &Option<Spanned<String>>,
                def: &Option<Spanned<String>>,
                fallback: &str,
                bad: &mut dyn FnMut(Location, String)| {
        match own.as_ref().or(def.as_ref()) {
            Some(s) => ByteSize::parse_with_unit(&s.value).unwrap_or_else(|_| {
                bad(Location::of(s), format!("size {:?} did not parse", s.value));
                ByteSize(0)
            }),
            None => ByteSize::parse_with_unit(fallback).unwrap_or(ByteSize(0)),
        }
    };
    let memory = size(g.sizing.memory, &d.memory, DEFAULT_MEMORY, bad);
    let disk = size(g.sizing.disk, &d.disk, DEFAULT_DISK, bad);
    let mut taints = Vec::new();
    for t in g.taints {
        match Taint::parse(&t.value) {
            Some(taint) => taints.push(taint),
            None => bad(
                Location::of(t),
                format!("taint {:?} did not parse", t.value),
            ),
        }
    }
    if g.unschedulable
        && let Some(cp) = Taint::parse(CONTROL_PLANE_TAINT)
        && !taints.contains(&cp)
    {
        taints.push(cp);
    }
    let share = g
        .share
        .as_ref()
        .and_then(|s| match u16::try_from(s.port.value) {
            Ok(port) => Some(ShareSpec {
                port,
                public: s.public,
            }),
            Err(_) => {
                bad(
                    Location::of(&s.port),
                    format!("port {} did not parse", s.port.value),
                );
                None
            }
        });
    let max_unavailable = match g.max_unavailable {
        None => 1,
        Some(m) if m.value >= 1 => m.value,
        Some(m) => {
            bad(
                Location::of(m),
                format!("maxUnavailable {} is not at least 1", m.value),
            );
            1
        }
    };
    NodeGroup {
        pool: g.pool.to_string(),
        role: g.role,
        count: g.count,
        image: g
            .sizing
            .image
            .as_ref()
            .or(d.image.as_ref())
            .map_or(DEFAULT_IMAGE, |s| s.value.as_str())
            .to_string(),
        cpu: g
            .sizing
            .cpu
            .as_ref()
            .or(d.cpu.as_ref())
            .map_or(DEFAULT_CPU, |c| c.value),
        memory,
        disk,
        labels: g.labels.to_map(),
        taints,
        tags: d
            .tags
            .iter()
            .chain(g.sizing.tags)
            .map(|t| t.value.clone())
            .collect(),
        share,
        max_unavailable,
    }
}

/// One node group as written in the file.
struct GroupFile<'a> {
    pool: &'a str,
    role: Role,
    count: u32,
    sizing: Sizing<'a>,
    labels: &'a Labels,
    taints: &'a [Spanned<String>],
    unschedulable: bool,
    share: &'a Option<Share>,
    /// A pool's `maxUnavailable`, when written (servers: none, always 1).
    max_unavailable: Option<&'a Spanned<u32>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::validate::TAINT_EFFECTS;
    use proptest::prelude::*;

    #[test]
    fn taints_read_and_print_the_fleet_form() {
        let t = Taint::parse("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(t.key, "dedicated");
        assert_eq!(t.value.as_deref(), Some("gpu"));
        assert_eq!(t.effect, TaintEffect::NoSchedule);
        assert_eq!(t.to_string(), "dedicated=gpu:NoSchedule");
        assert_eq!(
            Taint::parse("a=:NoExecute"),
            Taint::parse("a:NoExecute"),
            "an empty value is no value"
        );
        for bad in ["a", "a:Nope", ":NoSchedule", "=x:NoSchedule"] {
            assert_eq!(Taint::parse(bad), None, "{bad}");
        }
        assert_eq!(TAINT_EFFECTS.len(), 3);
        for e in TAINT_EFFECTS {
            assert_eq!(TaintEffect::parse(e).map(TaintEffect::as_str), Some(*e));
        }
    }

    proptest! {
        #[test]
        fn taints_round_trip(
            key in "[a-z]([a-z0-9.-]{0,10}/)?[a-z][a-z0-9]{0,8}",
            value in proptest::option::of("[a-z0-9]{1,8}"),
            e in 0usize..3,
        ) {
            let t = Taint { key, value, effect: TaintEffect::parse(TAINT_EFFECTS[e]).unwrap() };
            prop_assert_eq!(Taint::parse(&t.to_string()), Some(t));
        }
    }
}
