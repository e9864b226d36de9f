//! The fleet file's data model, exactly as written by the user. Only the
//! parser, the validator and the schema see it; every later stage takes the
//! resolved `super::Fleet`.
//!
//! Every field that the validator checks is wrapped in [`Spanned`] so that a
//! semantic error (a bad size, an even control-plane count, a reserved tag)
//! can point at the offending YAML node with `file:line:column`, just like a
//! syntax error does. Values the validator does not need to locate are plain.
//!
//! Secrets never appear in this model: the file holds only references
//! ([`SecretRef`]), resolved on demand by [`SecretRef::resolve`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
pub use serde_saphyr::Spanned;

/// The only `apiVersion` this tool understands; a different value means the
/// file was written for another tool or a future format.
pub const API_VERSION: &str = "exedev-k8s/v1";
/// The only `kind` this tool understands.
pub const KIND: &str = "Fleet";

/// Image used when neither the node group nor `defaults` names one.
pub const DEFAULT_IMAGE: &str = "exeuntu";
/// vCPUs used when neither the node group nor `defaults` says.
pub const DEFAULT_CPU: u32 = 2;
/// Memory used when neither the node group nor `defaults` says.
pub const DEFAULT_MEMORY: &str = "4GB";
/// Disk used when neither the node group nor `defaults` says.
pub const DEFAULT_DISK: &str = "20GB";

/// A declarative k3s cluster on exe.dev VMs: the whole fleet file.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "exedev-k8s fleet file")]
pub struct FleetFile {
    /// Format version; must be `exedev-k8s/v1`.
    #[schemars(with = "String", extend("const" = "exedev-k8s/v1"))]
    pub api_version: Spanned<String>,
    /// Document kind; must be `Fleet`.
    #[schemars(with = "String", extend("const" = "Fleet"))]
    pub kind: Spanned<String>,
    /// Identity of the cluster.
    pub metadata: Metadata,
    /// Which k3s to install and how to configure it.
    #[schemars(with = "K3s")]
    pub k3s: Spanned<K3s>,
    /// How the nodes reach each other.
    pub network: Network,
    /// Values used by every node group that does not override them.
    #[serde(default)]
    pub defaults: Defaults,
    /// The servers' embedded etcd: scheduled snapshots, locally or to S3.
    // The schema gives this and the options below as plain objects (not
    // "object or null"): an editor then points at the bad value inside
    // rather than at the whole section; `etcd:` left empty is refused by
    // the schema only.
    #[serde(default)]
    #[schemars(with = "Etcd")]
    pub etcd: Option<Etcd>,
    /// The k3s servers (control plane, with embedded etcd when more than one).
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// Groups of k3s agents (workers), created in file order.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub pools: Vec<Pool>,
    /// Kubernetes manifests (YAML files, relative to the fleet file) that
    /// `apply --wait` and `status --wait` apply by server-side apply once
    /// every node is Ready: what the cluster serves (the HA example's
    /// ingress pool). Read and checked with the fleet file.
    #[serde(default, deserialize_with = "null_as_empty")]
    #[schemars(with = "Vec<String>")]
    pub manifests: Vec<Spanned<String>>,
}

/// Identity of the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Cluster name: the prefix of every VM name and the key of the ownership
    /// tags, so it must be short, lowercase and unique among your fleets
    /// (`[a-z][a-z0-9-]*`).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// When true, `destroy` refuses to delete this fleet: a guard for
    /// production clusters.
    #[serde(default)]
    pub protect: bool,
}

/// Which k3s to install and how to configure it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K3s {
    /// Pinned k3s release, e.g. `v1.31.4+k3s1`. Exactly one of `version`
    /// and `channel` must be given.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub version: Option<Spanned<String>>,
    /// Release channel (`stable`, `latest`, `testing` or `vX.Y`). Exactly one
    /// of `version` and `channel` must be given.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub channel: Option<Spanned<String>>,
    /// Extra flags for `k3s server`: each `--flag=value`, or a secret flag
    /// `{flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}`.
    #[serde(default)]
    #[schemars(with = "Vec<K3sArgSchema>")]
    pub server_args: Vec<Spanned<K3sArg>>,
    /// Extra flags for `k3s agent`: each `--flag=value`, or a secret flag
    /// `{flag: --some-flag, secret: {file: secrets/value}}`.
    #[serde(default)]
    #[schemars(with = "Vec<K3sArgSchema>")]
    pub agent_args: Vec<Spanned<K3sArg>>,
    /// Packaged components not to deploy: `traefik`, `servicelb`,
    /// `metrics-server`, `local-storage`, `coredns`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub disable: Vec<Spanned<String>>,
    /// k3s server token (admin-equivalent: only servers get it); generated
    /// by the tool when absent.
    #[serde(default)]
    #[schemars(with = "Option<SecretRefSchema>")]
    pub token: Option<Spanned<SecretRef>>,
    /// k3s agent token (agents join with it and get nothing more); generated
    /// by the tool when absent. Must differ from `token`.
    #[serde(default)]
    #[schemars(with = "Option<SecretRefSchema>")]
    pub agent_token: Option<Spanned<SecretRef>>,
}

/// How the nodes reach each other.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// Nodes join this tailnet and talk to each other over it.
    pub tailscale: Tailscale,
}

/// Tailscale settings: the cluster's private network.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tailscale {
    /// The tailnet's MagicDNS suffix (e.g. `tail1234.ts.net`), used to build
    /// the nodes' stable addresses.
    #[schemars(with = "String")]
    pub tailnet: Spanned<String>,
    /// Reusable auth key that lets new VMs join the tailnet.
    #[schemars(with = "SecretRefSchema")]
    pub auth_key: Spanned<SecretRef>,
}

/// The servers' embedded etcd.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Etcd {
    /// Scheduled etcd snapshots (k3s's `etcd-snapshot-*` settings), on
    /// each server's disk and, with `s3`, in a bucket: what `restore`
    /// starts from when servers are lost.
    #[serde(default)]
    #[schemars(with = "Snapshots")]
    pub snapshots: Option<Snapshots>,
}

/// k3s's scheduled etcd snapshots, given to the servers only.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshots {
    /// When to take one: a 5-field cron expression (minute hour
    /// day-of-month month day-of-week), e.g. `0 */6 * * *`
    /// (k3s's `etcd-snapshot-schedule-cron`).
    #[schemars(with = "String")]
    pub schedule: Spanned<String>,
    /// How many scheduled snapshots to keep, at least 1
    /// (k3s's `etcd-snapshot-retention`).
    #[schemars(with = "u32")]
    pub retention: Spanned<u32>,
    /// Also upload each snapshot to an S3-compatible bucket (k3s's
    /// `etcd-s3-*` settings); without it snapshots stay on each server.
    #[serde(default)]
    #[schemars(with = "SnapshotS3")]
    pub s3: Option<SnapshotS3>,
}

/// Where k3s uploads snapshots: an S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnapshotS3 {
    /// The S3 host (and port), no scheme, e.g. `s3.amazonaws.com`
    /// (`etcd-s3-endpoint`).
    #[schemars(with = "String")]
    pub endpoint: Spanned<String>,
    /// The bucket, as S3 names buckets (3 to 63 lowercase letters, digits,
    /// hyphens and dots) (`etcd-s3-bucket`).
    #[schemars(with = "String")]
    pub bucket: Spanned<String>,
    /// A folder inside the bucket (`etcd-s3-folder`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub folder: Option<Spanned<String>>,
    /// The bucket's region (`etcd-s3-region`; k3s's default `us-east-1`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub region: Option<Spanned<String>>,
    /// Plain HTTP instead of HTTPS (`etcd-s3-insecure`).
    #[serde(default)]
    pub insecure: bool,
    /// HTTPS without checking the endpoint's certificate
    /// (`etcd-s3-skip-ssl-verify`).
    #[serde(default, rename = "skipSSLVerify")]
    pub skip_ssl_verify: bool,
    /// The access key: a secret reference, never the key itself
    /// (`etcd-s3-access-key`).
    #[schemars(with = "SecretRefSchema")]
    pub access_key: Spanned<SecretRef>,
    /// The secret key: a secret reference, never the key itself
    /// (`etcd-s3-secret-key`).
    #[schemars(with = "SecretRefSchema")]
    pub secret_key: Spanned<SecretRef>,
}

/// Values used by every node group that does not override them.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    /// exe.dev image (default `exeuntu`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub image: Option<Spanned<String>>,
    /// vCPUs per VM, 1 to 64 (default 2).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub cpu: Option<Spanned<u32>>,
    /// Memory per VM, e.g. `4GB` (default 4GB).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// Disk per VM, e.g. `20GB` (default 20GB).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub disk: Option<Spanned<String>>,
    /// exe.dev tags added to every VM (the `exk8s-` prefix is reserved).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tags: Vec<Spanned<String>>,
}

/// The k3s servers.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    /// Number of servers: 1, 3 or 5 (etcd needs an odd count for quorum).
    /// Default 1.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub count: Option<Spanned<u32>>,
    /// Overrides `defaults.image`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub image: Option<Spanned<String>>,
    /// Overrides `defaults.cpu`.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub cpu: Option<Spanned<u32>>,
    /// Overrides `defaults.memory`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// Overrides `defaults.disk`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub disk: Option<Spanned<String>>,
    /// When false, servers carry the taint
    /// `node-role.kubernetes.io/control-plane=true:NoSchedule` so ordinary
    /// workloads run on pools only. Default true.
    #[serde(default = "default_true")]
    pub schedulable: bool,
    /// Kubernetes labels for the server nodes.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub labels: Labels,
    /// Kubernetes taints for the server nodes, `key[=value]:Effect`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub taints: Vec<Spanned<String>>,
    /// exe.dev tags added to the server VMs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tags: Vec<Spanned<String>>,
    /// Expose a port of the servers through exe.dev's HTTPS proxy.
    #[serde(default)]
    pub share: Option<Share>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            count: None,
            image: None,
            cpu: None,
            memory: None,
            disk: None,
            schedulable: true,
            labels: Labels::default(),
            taints: Vec::new(),
            tags: Vec::new(),
            share: None,
        }
    }
}

impl ControlPlane {
    /// The number of servers, 1 when not written.
    pub fn count(&self) -> u32 {
        self.count.as_ref().map_or(1, |c| c.value)
    }
}

/// The sizing fields every node group (and `defaults`) shares, borrowed:
/// the file model repeats them in three places (serde's `flatten` does not
/// combine with `deny_unknown_fields`), the validator checks them once.
pub struct Sizing<'a> {
    pub image: &'a Option<Spanned<String>>,
    pub cpu: &'a Option<Spanned<u32>>,
    pub memory: &'a Option<Spanned<String>>,
    pub disk: &'a Option<Spanned<String>>,
    pub tags: &'a [Spanned<String>],
}

macro_rules! sizing {
    ($($t:ty),*) => {$(
        impl $t {
            /// Its sizing fields, for checks shared by every group.
            pub fn sizing(&self) -> Sizing<'_> {
                Sizing {
                    image: &self.image,
                    cpu: &self.cpu,
                    memory: &self.memory,
                    disk: &self.disk,
                    tags: &self.tags,
                }
            }
        }
    )*};
}
sizing!(Defaults, ControlPlane, Pool);

/// Reads `pools:` with nothing after it (every pool commented out) as an
/// empty list rather than a type error.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

fn default_true() -> bool {
    true
}

/// A group of identical k3s agents.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pool {
    /// Pool name, part of every VM name: lowercase letters and digits,
    /// starting and ending with a letter (no hyphen), unique, not `cp`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Number of agents, 0 to 100.
    #[schemars(with = "u32")]
    pub count: Spanned<u32>,
    /// Overrides `defaults.image`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub image: Option<Spanned<String>>,
    /// Overrides `defaults.cpu`.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub cpu: Option<Spanned<u32>>,
    /// Overrides `defaults.memory`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// Overrides `defaults.disk`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub disk: Option<Spanned<String>>,
    /// Kubernetes labels for this pool's nodes.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub labels: Labels,
    /// Kubernetes taints for this pool's nodes, `key[=value]:Effect`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub taints: Vec<Spanned<String>>,
    /// exe.dev tags added to this pool's VMs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tags: Vec<Spanned<String>>,
    /// Expose a port of this pool's VMs through exe.dev's HTTPS proxy.
    #[serde(default)]
    pub share: Option<Share>,
    /// How many of this pool's agents an apply takes out of service at
    /// once (drained for an upgrade, a k3s or VM restart, a replacement,
    /// or a removal). Default 1. Servers always change one at a time.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub max_unavailable: Option<Spanned<u32>>,
}

/// exe.dev HTTPS proxy settings for a node group.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Share {
    /// VM port to proxy, 3000 to 9999 (exe.dev's allowed range).
    #[schemars(with = "u32")]
    pub port: Spanned<u32>,
    /// When true the URL is reachable without an exe.dev login.
    #[serde(default)]
    pub public: bool,
}

/// Kubernetes labels in file order, each key and value with its location so
/// the validator can point at a bad one. Duplicate keys are refused by the
/// YAML reader.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Labels(pub Vec<(Spanned<String>, Spanned<String>)>);

impl Labels {
    /// The labels as plain strings, sorted by key.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of label keys to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Spanned<String>, Spanned<String>>()? {
                    out.push((k, v));
                }
                Ok(Labels(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Labels, E> {
                Ok(Labels::default())
            }
        }
        deserializer.deserialize_map(LabelsVisitor)
    }
}

/// Where a secret comes from. The fleet file never holds a secret itself,
/// so that it can be committed and shared; it names an environment variable
/// or a file instead.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `{env: NAME}`: read the environment variable `NAME`.
    Env(String),
    /// `{file: path}`: read the file (relative to the fleet file's directory).
    File(PathBuf),
    /// A plain string was written where a reference belongs. The value is
    /// dropped while reading, so it cannot leak; the validator refuses it.
    Literal,
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "{{env: {name}}}"),
            SecretRef::File(path) => write!(f, "{{file: {}}}", path.display()),
            SecretRef::Literal => f.write_str("[literal refused]"),
        }
    }
}

/// The schema's view of a secret reference: exactly one of `env` or `file`.
#[derive(JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
#[schemars(rename = "SecretRef")]
#[allow(dead_code)] // only used to describe the format in the JSON schema
enum SecretRefSchema {
    /// Read the secret from this environment variable.
    Env {
        /// Environment variable name.
        env: String,
    },
    /// Read the secret from this file (relative to the fleet file).
    File {
        /// Path to the file holding the secret.
        file: String,
    },
}

/// One extra k3s flag: written out as given, or a flag whose value is a
/// secret. A secret flag's value is read at apply time, goes into the node's
/// `/etc/rancher/k3s/config.yaml` (mode 0600), never into the k3s command
/// line, a plan, a plan file or an error, and is left out of the spec
/// fingerprint (rotating it does not replace VMs).
#[derive(Clone, PartialEq, Eq)]
pub enum K3sArg {
    /// `--flag=value` (or `--flag`), one argv element.
    Plain(String),
    /// `{flag: --name, secret: {env: NAME}}`.
    Secret {
        /// The flag, `--name` (no `=value`).
        flag: Spanned<String>,
        /// Where its value comes from.
        secret: Spanned<SecretRef>,
    },
}

impl K3sArg {
    /// How a plan shows the flag: a secret's value as where it comes from.
    pub fn shown(&self) -> String {
        match self {
            K3sArg::Plain(s) => s.clone(),
            K3sArg::Secret { flag, secret } => {
                format!("{}=(secret from {})", flag.value, secret.value.describe())
            }
        }
    }
}

impl fmt::Debug for K3sArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

/// The schema's view of a k3s flag: a string, or a secret flag.
#[derive(JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
#[schemars(rename = "K3sArg")]
#[allow(dead_code)] // only used to describe the format in the JSON schema
enum K3sArgSchema {
    /// A flag as k3s takes it, e.g. `--kubelet-arg=max-pods=200`.
    Plain(String),
    /// A flag whose value is a secret, e.g.
    /// `{flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}`: the
    /// value reaches the node's config.yaml and nothing else.
    Secret {
        /// The flag name with its leading `--` and no value.
        flag: String,
        /// Where the value comes from.
        secret: SecretRefSchema,
    },
}

impl<'de> Deserialize<'de> for K3sArg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgVisitor;
        impl<'de> Visitor<'de> for ArgVisitor {
            type Value = K3sArg;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a flag such as --kubelet-arg=max-pods=200, or {flag: --name, secret: {env: NAME}}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<K3sArg, E> {
                Ok(K3sArg::Plain(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<K3sArg, A::Error> {
                let mut flag: Option<Spanned<String>> = None;
                let mut secret: Option<Spanned<SecretRef>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "flag" if flag.is_none() => flag = Some(map.next_value()?),
                        "secret" if secret.is_none() => secret = Some(map.next_value()?),
                        "flag" => return Err(de::Error::duplicate_field("flag")),
                        "secret" => return Err(de::Error::duplicate_field("secret")),
                        other => return Err(de::Error::unknown_field(other, &["flag", "secret"])),
                    }
                }
                match (flag, secret) {
                    (Some(flag), Some(secret)) => Ok(K3sArg::Secret { flag, secret }),
                    _ => Err(de::Error::custom(
                        "a secret k3s flag needs both `flag` and `secret`",
                    )),
                }
            }
        }
        deserializer.deserialize_any(ArgVisitor)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RefVisitor;
        impl<'de> Visitor<'de> for RefVisitor {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret reference such as {env: NAME} or {file: path}")
            }
            fn visit_str<E: de::Error>(self, _literal: &str) -> Result<SecretRef, E> {
                Ok(SecretRef::Literal)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut found: Option<SecretRef> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    let next = match key.as_str() {
                        "env" => SecretRef::Env(value),
                        "file" => SecretRef::File(PathBuf::from(value)),
                        other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                    };
                    if found.is_some() {
                        return Err(de::Error::custom(
                            "a secret reference takes exactly one of `env` or `file`",
                        ));
                    }
                    found = Some(next);
                }
                found.ok_or_else(|| de::Error::custom("a secret reference needs `env` or `file`"))
            }
        }
        deserializer.deserialize_any(RefVisitor)
    }
}

impl SecretRef {
    /// Where the secret comes from, for messages and plans: `env NAME` or
    /// `file PATH`. Never the value.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("env {name}"),
            SecretRef::File(path) => format!("file {}", path.display()),
            SecretRef::Literal => "a literal (refused)".to_string(),
        }
    }

    /// The name `--skip-secret-check` knows it by: the environment
    /// variable's name, or the file path as written.
    pub fn name(&self) -> String {
        match self {
            SecretRef::Env(name) => name.clone(),
            SecretRef::File(path) => path.display().to_string(),
            SecretRef::Literal => String::new(),
        }
    }
}
