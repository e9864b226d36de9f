//! What exactly each desired VM is given: its bootstrap input (and script
//! fingerprint), its exe.dev `new` flags and its ownership comment.
//!
//! Pure: secrets come in as values ([`ClusterSecrets`]); the plan uses
//! placeholders, since fingerprints leave secrets out.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::base::secret::Secret;
use crate::core::api::NewVm;
use crate::core::bootstrap::{self, BootstrapError, BootstrapInput, ScriptKind};
use crate::core::fleet::{DesiredVm, Fleet, K3sFlag, Role, SecretRef};

/// The secrets setup scripts carry: servers get the server token, the agent
/// token and the Tailscale key; agents the agent token and the Tailscale key;
/// each role its own secret k3s flags.
#[derive(Debug, Clone)]
pub struct ClusterSecrets {
    /// Admin-equivalent k3s server token.
    pub k3s_token: Secret,
    /// k3s agent token: lets agents join, nothing more.
    pub agent_token: Secret,
    /// Tailscale auth key for `tailscale up`.
    pub tailscale_auth_key: Secret,
    /// Values of secret k3s flags, by [`SecretRef::describe`] of their
    /// reference. Empty for placeholders.
    pub args: BTreeMap<String, Secret>,
}

/// Stand-in for a secret value at plan time: as long as a real one.
const PLACEHOLDER_LEN: usize = 96;

impl ClusterSecrets {
    /// Stand-ins as long as real secrets, for plan-time rendering and size
    /// checks; never sent anywhere.
    pub fn placeholders() -> Self {
        ClusterSecrets {
            k3s_token: Secret::new("K".repeat(PLACEHOLDER_LEN)),
            agent_token: Secret::new("A".repeat(PLACEHOLDER_LEN)),
            tailscale_auth_key: Secret::new("T".repeat(PLACEHOLDER_LEN)),
            args: BTreeMap::new(),
        }
    }

    /// The value of a secret flag. `cluster_secrets::resolve` resolves every
    /// reference of the fleet, so only placeholders lack one (and get a
    /// stand-in).
    fn arg(&self, r: &SecretRef) -> Secret {
        self.args
            .get(&r.describe())
            .cloned()
            .unwrap_or_else(|| Secret::new("S".repeat(PLACEHOLDER_LEN)))
    }
}

/// Splits a role's k3s flags into plain ones (argv) and secret ones
/// (`(--name, value)`, for config.yaml).
fn split_args(args: &[K3sFlag], secrets: &ClusterSecrets) -> SplitArgs {
    let mut plain = Vec::new();
    let mut secret = Vec::new();
    for a in args {
        match a {
            K3sFlag::Plain(s) => plain.push(s.clone()),
            K3sFlag::Secret { flag, secret: r } => {
                secret.push((flag.clone(), secrets.arg(&r.value)))
            }
        }
    }
    (plain, secret)
}

type SplitArgs = (Vec<String>, Vec<(String, Secret)>);

/// The fleet's etcd snapshot settings as `(--key, value)` for the servers'
/// drop-in: plain values as written, the S3 keys resolved like every
/// secret flag. Empty without `etcd.snapshots`.
fn snapshot_settings(fleet: &Fleet, secrets: &ClusterSecrets) -> Vec<(String, Secret)> {
    let settings = fleet.k3s.snapshots.iter().flat_map(|s| s.settings());
    settings
        .filter_map(|f| match f {
            K3sFlag::Plain(s) => {
                let (k, v) = s.split_once('=')?;
                Some((k.to_string(), Secret::new(v.to_string())))
            }
            K3sFlag::Secret { flag, secret } => Some((flag, secrets.arg(&secret.value))),
        })
        .collect()
}

/// Whether a new `role` VM's setup script leaves settings to a change over
/// SSH: the etcd snapshot settings, which the setup script has no room for
/// (10 KiB, `bootstrap::render`) and must not carry (S3 keys). Its setup
/// script waits a bounded time for them before k3s first starts
/// ([`before_start_script`]); when they come later, a restart gives them.
pub fn settles_after_boot(fleet: &Fleet, role: Role) -> bool {
    role == Role::Server && fleet.k3s.snapshots.is_some()
}

/// Prefix of the comment that fingerprints a VM's immutable spec (one of
/// the marks of ownership, so it lives with the others in `fleet`).
pub const COMMENT_PREFIX: &str = crate::core::fleet::SPEC_COMMENT_PREFIX;

/// The kubernetes manifests the first server auto-applies (`manifests/`):
/// the first server's setup script writes them to
/// `/var/lib/rancher/k3s/server/manifests/`, where k3s applies them. They
/// travel inside the setup script, which must stay under 10 KiB, so they
/// are kept small and carry no comments (`fleet-label` names the label
/// that holds the fleet's name on every node).
pub const MANIFESTS: &[(&str, &str)] = &[(
    "system",
    include_str!("../../../manifests/exedev-k8s-system.yaml"),
)];

/// Builds the bootstrap input of one VM. `join_via` is the server a joiner
/// contacts: one that is up at apply time (default: the first server). Given
/// for the first server, it makes a replacement first server join the
/// surviving servers instead of initialising a new cluster. `version` is
/// the fleet's release, decided at plan time: a node never installs
/// whatever a channel says at its first boot.
pub fn bootstrap_input(
    fleet: &Fleet,
    vm: &DesiredVm,
    secrets: &ClusterSecrets,
    join_via: Option<&str>,
    version: &str,
) -> BootstrapInput {
    let cluster = fleet.name.clone();
    let first =
        crate::base::names::fleet_vm_name(&cluster, crate::core::fleet::CONTROL_PLANE_POOL, 1);
    let kind = match (vm.role, vm.is_first_server(), join_via) {
        (Role::Agent, _, _) => ScriptKind::Agent,
        (Role::Server, true, None) => ScriptKind::ServerInit,
        (Role::Server, _, _) => ScriptKind::ServerJoin,
    };
    let k3s = &fleet.k3s;
    let (server_args, server_secret_args) = split_args(&k3s.server_args, secrets);
    let (agent_args, agent_secret_args) = split_args(&k3s.agent_args, secrets);
    let etcd_snapshots = match vm.role {
        Role::Server => snapshot_settings(fleet, secrets),
        Role::Agent => Vec::new(),
    };
    BootstrapInput {
        kind,
        cluster,
        node_name: vm.name.clone(),
        tailnet: fleet.tailscale.tailnet.clone(),
        join_server: join_via.map(str::to_string).unwrap_or(first),
        // Every server the fleet could ever have, not just today's count:
        // scaling 3 -> 5 then needs no new certificate.
        server_names: (1..=crate::core::fleet::MAX_SERVERS)
            .map(|i| {
                crate::base::names::fleet_vm_name(
                    &fleet.name,
                    crate::core::fleet::CONTROL_PLANE_POOL,
                    i,
                )
            })
            .collect(),
        version: version.to_string(),
        server_token: secrets.k3s_token.clone(),
        agent_token: secrets.agent_token.clone(),
        tailscale_auth_key: secrets.tailscale_auth_key.clone(),
        labels: vm.labels.clone(),
        taints: vm.taints.iter().map(|t| t.to_string()).collect(),
        server_args,
        agent_args,
        server_secret_args,
        agent_secret_args,
        etcd_snapshots,
        disable: k3s.disable.clone(),
        // The first server carries the manifests, also when it is a
        // replacement that joins the surviving servers.
        manifests: if vm.is_first_server() {
            MANIFESTS
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// The scheme of the spec comment this version writes. Scheme 1 (`spec=`
/// and twelve hex digits, nothing else) fingerprinted the whole setup
/// script, k3s version and arguments included; scheme 2 fingerprints only
/// what needs a new VM and records the release and k3s settings beside it;
/// scheme 3 also records the node's labels and taints (`lbl=`), so a plan
/// made with only `ls` (a pull request's, without the cluster) sees a
/// label or taint change. A VM keeps scheme 2 until its labels are known
/// (read from its Node, or set by apply): an unverified `lbl=` would hide a
/// change.
pub const SPEC_SCHEME: u32 = 3;

/// The scheme whose identity fingerprint this version computes: scheme 3
/// only added a field, so scheme-2 and scheme-3 fingerprints compare.
pub const IDENTITY_SCHEME: u32 = 2;

/// What a VM's comment records: `exedev-k8s spec=3.<fingerprint>
/// k3s=<release> cfg=<args>.<disable> lbl=<labels>` (scheme 3; scheme 2
/// without `lbl=`), or `exedev-k8s spec=<fingerprint>` (scheme 1, VMs
/// created before in-place changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecComment {
    /// 1, 2 or 3.
    pub scheme: u32,
    /// The identity fingerprint (what it means depends on the scheme).
    pub fingerprint: String,
    /// The k3s release the tool installed or last upgraded the VM to.
    pub k3s: Option<String>,
    /// [`config_fingerprint`] of the k3s settings the VM was last given.
    pub cfg: Option<String>,
    /// [`labels_fingerprint`] of the labels and taints the node was last
    /// given or seen with.
    pub lbl: Option<String>,
}

impl SpecComment {
    /// Reads a comment the tool wrote; `None` for any other comment.
    pub fn parse(comment: &str) -> Option<SpecComment> {
        let rest = comment.strip_prefix(COMMENT_PREFIX)?;
        let mut words = rest.split_whitespace();
        let spec = words.next().unwrap_or("");
        let (scheme, fingerprint) = match spec.split_once('.') {
            Some((n, fp)) => (n.parse().ok()?, fp.to_string()),
            None => (1, spec.to_string()),
        };
        let mut out = SpecComment {
            scheme,
            fingerprint,
            k3s: None,
            cfg: None,
            lbl: None,
        };
        for w in words {
            match w.split_once('=') {
                Some(("k3s", v)) => out.k3s = Some(v.to_string()),
                Some(("cfg", v)) => out.cfg = Some(v.to_string()),
                Some(("lbl", v)) => out.lbl = Some(v.to_string()),
                _ => {}
            }
        }
        Some(out)
    }

    /// The comment text (at most [`crate::base::limits::MAX_COMMENT_BYTES`]:
    /// fingerprints are 12, 17 and 8 characters, releases at most 45).
    pub fn render(&self) -> String {
        let mut s = if self.scheme == 1 {
            format!("{COMMENT_PREFIX}{}", self.fingerprint)
        } else {
            format!("{COMMENT_PREFIX}{}.{}", self.scheme, self.fingerprint)
        };
        if let Some(v) = &self.k3s {
            s.push_str(&format!(" k3s={v}"));
        }
        if let Some(c) = &self.cfg {
            s.push_str(&format!(" cfg={c}"));
        }
        if let Some(l) = &self.lbl {
            s.push_str(&format!(" lbl={l}"));
        }
        s
    }
}

fn hex8(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// What needs a new VM, fingerprinted (scheme 2): the image, the role and
/// the tailnet (the setup script stored at `new` joins that tailnet at
/// every boot and cannot be changed afterwards). Disk shrinks are a diff
/// rule (exe.dev reports the disk). The k3s release, arguments, labels and
/// taints are not identity: they change in place.
pub fn spec_fingerprint(fleet: &Fleet, vm: &DesiredVm) -> String {
    spec_fingerprint_with_image(fleet, vm, &vm.image)
}

/// The fingerprint `vm` would have with another image: tells an image
/// change apart from a role or tailnet change when explaining a
/// replacement.
pub fn spec_fingerprint_with_image(fleet: &Fleet, vm: &DesiredVm, image: &str) -> String {
    super::hex12(
        format!(
            "scheme={IDENTITY_SCHEME}\nimage={image}\nrole={}\ntailnet={}\n",
            vm.role.as_str(),
            fleet.tailscale.tailnet
        )
        .as_bytes(),
    )
}

/// The k3s settings a node of `role` is given that change in place, as
/// shown in plans (a secret flag as where its value comes from, never the
/// value): its extra arguments, and on servers `disable`.
pub fn k3s_settings(fleet: &Fleet, role: Role) -> (Vec<String>, Vec<String>) {
    let k3s = &fleet.k3s;
    let args = match role {
        Role::Server => &k3s.server_args,
        Role::Agent => &k3s.agent_args,
    };
    let mut shown: Vec<String> = args.iter().map(|a| a.shown()).collect();
    // The etcd snapshot settings are server settings like `serverArgs`
    // (keys shown as where they come from): changing them is a k3s change
    // in place. Without them the list, and so every VM's recorded `cfg=`,
    // is what it was before they existed.
    if role == Role::Server {
        let settings = k3s.snapshots.iter().flat_map(|s| s.settings());
        shown.extend(settings.map(|f| f.shown()));
    }
    let disable = match role {
        Role::Server => k3s.disable.clone(),
        Role::Agent => Vec::new(),
    };
    (shown, disable)
}

/// Fingerprint of [`k3s_settings`]: `<arguments>.<disable>`, eight hex
/// digits each, so a plan can say which of the two changed. Secret values
/// are left out (a rotated secret flag value is not seen: re-apply it with
/// a new reference name, or on the node).
pub fn config_fingerprint(fleet: &Fleet, role: Role) -> String {
    let (args, disable) = k3s_settings(fleet, role);
    format!(
        "{}.{}",
        hex8(&format!("args\n{}", args.join("\n"))),
        hex8(&format!("disable\n{}", disable.join("\n")))
    )
}

/// Fingerprint of the labels and taints the fleet gives `vm`, eight hex
/// digits (values are not secrets, but a comment has no room for them; the
/// plan shows the fleet's values as the "after").
pub fn labels_fingerprint(vm: &DesiredVm) -> String {
    let mut text = String::from("labels\n");
    for (k, v) in &vm.labels {
        text.push_str(&format!("{k}={v}\n"));
    }
    let mut taints: Vec<String> = vm.taints.iter().map(|t| t.to_string()).collect();
    taints.sort();
    text.push_str("taints\n");
    text.push_str(&taints.join("\n"));
    hex8(&text)
}

/// The comment a VM carries once it runs `k3s` (unknown: `None`) with the
/// fleet's labels and taints.
pub fn comment_for(fleet: &Fleet, vm: &DesiredVm, k3s: Option<&str>) -> String {
    comment_with(fleet, vm, k3s, Some(labels_fingerprint(vm)))
}

/// The comment a VM carries, recording `lbl` as its labels' fingerprint;
/// `None` (labels not known) writes scheme 2, which has no such field.
pub fn comment_with(
    fleet: &Fleet,
    vm: &DesiredVm,
    k3s: Option<&str>,
    lbl: Option<String>,
) -> String {
    SpecComment {
        scheme: if lbl.is_some() { SPEC_SCHEME } else { 2 },
        fingerprint: spec_fingerprint(fleet, vm),
        k3s: k3s.map(str::to_string),
        cfg: Some(config_fingerprint(fleet, vm.role)),
        lbl,
    }
    .render()
}

/// Renders the real setup script (with the secrets) and the `new` flags.
pub fn new_vm(
    fleet: &Fleet,
    vm: &DesiredVm,
    secrets: &ClusterSecrets,
    join_via: Option<&str>,
    version: &str,
) -> Result<NewVm, BootstrapError> {
    let script = bootstrap::render(&bootstrap_input(fleet, vm, secrets, join_via, version))?;
    Ok(NewVm {
        name: Some(vm.name.clone()),
        image: Some(vm.image.clone()),
        cpu: Some(vm.cpu),
        memory: Some(vm.memory.to_string()),
        disk: Some(vm.disk.to_string()),
        tags: vm.tags.clone(),
        env: Vec::new(),
        setup_script: Some(Secret::new(script)),
        command: None,
        comment: Some(comment_for(&booted_as(fleet, vm), vm, Some(version))),
        no_email: true,
    })
}

/// The fleet as a new `vm`'s setup script configures it: without the
/// settings it leaves to a change after boot ([`settles_after_boot`]), so
/// its comment records what it really runs with until that change (a
/// failed one shows in the next plan as a k3s change).
fn booted_as(fleet: &Fleet, vm: &DesiredVm) -> Fleet {
    let mut f = fleet.clone();
    if settles_after_boot(fleet, vm.role) {
        f.k3s.snapshots = None;
    }
    f
}

/// The script that changes `vm` in place to `version` and the fleet's k3s
/// settings ([`bootstrap::render_change`]): a [`Secret`], since it carries
/// the secret flags' values.
pub fn change_script(
    fleet: &Fleet,
    vm: &DesiredVm,
    secrets: &ClusterSecrets,
    version: &str,
) -> Result<Secret, BootstrapError> {
    bootstrap::render_change(&bootstrap_input(fleet, vm, secrets, None, version)).map(Secret::new)
}

/// [`change_script`] that only writes the settings, for k3s's next start
/// ([`bootstrap::render_settings_only`]).
pub fn settings_script(
    fleet: &Fleet,
    vm: &DesiredVm,
    secrets: &ClusterSecrets,
    version: &str,
) -> Result<Secret, BootstrapError> {
    bootstrap::render_settings_only(&bootstrap_input(fleet, vm, secrets, None, version))
        .map(Secret::new)
}

/// The settings a new server's setup script waits for, written before k3s
/// first starts ([`bootstrap::render_before_start`]): what
/// [`settings_script`] writes, refused once k3s has started.
pub fn before_start_script(
    fleet: &Fleet,
    vm: &DesiredVm,
    secrets: &ClusterSecrets,
    version: &str,
) -> Result<Secret, BootstrapError> {
    bootstrap::render_before_start(&bootstrap_input(fleet, vm, secrets, None, version))
        .map(Secret::new)
}

/// The release a fleet's scripts are sized at before a plan decides one
/// (`validate`, which makes no call): `k3s.version`, or, for a fleet that
/// follows a channel (looked up only when planning),
/// [`crate::base::release::SIZING_RELEASE`].
pub fn sizing_release(fleet: &Fleet) -> String {
    match &fleet.k3s.release {
        crate::core::fleet::K3sRelease::Version(r) => r.to_string(),
        crate::core::fleet::K3sRelease::Channel(_) => {
            crate::base::release::SIZING_RELEASE.to_string()
        }
    }
}

/// Checks at plan time that every VM's script renders and fits in 10 KiB.
///
/// Within one group (pool and script kind) scripts differ only in the node
/// name, a `[a-z0-9-]` word that no filter escapes; so the VM with the
/// longest name has the largest script and the same values otherwise, and
/// rendering it alone checks the whole group (a 1000-VM plan renders a
/// dozen scripts, not a thousand). Ties go to the last VM, the highest index.
pub fn check_scripts(
    fleet: &Fleet,
    vms: &[DesiredVm],
    version: &str,
) -> Result<(), BootstrapError> {
    let mut worst: std::collections::BTreeMap<(&str, bool), &DesiredVm> = Default::default();
    for vm in vms {
        let key = (vm.pool.as_str(), vm.is_first_server());
        match worst.get(&key) {
            Some(w) if w.name.len() > vm.name.len() => {}
            _ => {
                worst.insert(key, vm);
            }
        }
    }
    for vm in worst.into_values() {
        bootstrap::render(&bootstrap_input(
            fleet,
            vm,
            &ClusterSecrets::placeholders(),
            None,
            version,
        ))?;
    }
    Ok(())
}
