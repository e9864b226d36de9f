//! What exactly each desired VM is given: its bootstrap input (and script
//! fingerprint), its exe.dev `new` flags and its ownership comment.
//!
//! Pure: secrets come in as values ([`ClusterSecrets`]); the plan uses
//! placeholders, since fingerprints leave secrets out.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::api::NewVm;
use crate::bootstrap::{self, BootstrapError, BootstrapInput, ScriptKind};
use crate::fleet::{DesiredVm, Fleet, K3sFlag, Role, SecretRef};
use crate::secret::Secret;

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

/// Prefix of the comment that fingerprints a VM's immutable spec (one of
/// the marks of ownership, so it lives with the others in `fleet`).
pub const COMMENT_PREFIX: &str = crate::fleet::SPEC_COMMENT_PREFIX;

/// The kubernetes manifests the first server auto-applies (`manifests/`).
pub const MANIFESTS: &[(&str, &str)] = &[(
    "system",
    include_str!("../../manifests/exedev-k8s-system.yaml"),
)];

/// Builds the bootstrap input of one VM. `join_via` is the server a joiner
/// contacts: one that is up at apply time (default: the first server). Given
/// for the first server, it makes a replacement first server join the
/// surviving servers instead of initialising a new cluster.
pub fn bootstrap_input(
    fleet: &Fleet,
    vm: &DesiredVm,
    secrets: &ClusterSecrets,
    join_via: Option<&str>,
) -> BootstrapInput {
    let cluster = fleet.name.clone();
    let first = crate::names::fleet_vm_name(&cluster, crate::fleet::CONTROL_PLANE_POOL, 1);
    let kind = match (vm.role, vm.is_first_server(), join_via) {
        (Role::Agent, _, _) => ScriptKind::Agent,
        (Role::Server, true, None) => ScriptKind::ServerInit,
        (Role::Server, _, _) => ScriptKind::ServerJoin,
    };
    let k3s = &fleet.k3s;
    let (server_args, server_secret_args) = split_args(&k3s.server_args, secrets);
    let (agent_args, agent_secret_args) = split_args(&k3s.agent_args, secrets);
    BootstrapInput {
        kind,
        cluster,
        node_name: vm.name.clone(),
        tailnet: fleet.tailscale.tailnet.clone(),
        join_server: join_via.map(str::to_string).unwrap_or(first),
        // Every server the fleet could ever have, not just today's count:
        // scaling 3 -> 5 then needs no new certificate, and the fingerprint
        // (hence the VMs) does not depend on the server count.
        server_names: (1..=crate::fleet::MAX_SERVERS)
            .map(|i| crate::names::fleet_vm_name(&fleet.name, crate::fleet::CONTROL_PLANE_POOL, i))
            .collect(),
        release: k3s.release.clone(),
        server_token: secrets.k3s_token.clone(),
        agent_token: secrets.agent_token.clone(),
        tailscale_auth_key: secrets.tailscale_auth_key.clone(),
        labels: vm.labels.clone(),
        taints: vm.taints.iter().map(|t| t.to_string()).collect(),
        server_args,
        agent_args,
        server_secret_args,
        agent_secret_args,
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

/// The immutable part of a VM's spec, fingerprinted: image and bootstrap
/// script (as its normal role renders it, secrets excluded). A VM whose
/// comment carries another fingerprint must be replaced.
pub fn spec_fingerprint(fleet: &Fleet, vm: &DesiredVm) -> String {
    with_image(&script_fingerprint(fleet, vm), &vm.image)
}

/// The fingerprint of `vm`'s bootstrap script alone (secrets excluded): the
/// costly part (one template render), so the diff computes it once per VM
/// and combines it with images through [`with_image`] (with the observed
/// image it tells a script change apart from an image change).
pub fn script_fingerprint(fleet: &Fleet, vm: &DesiredVm) -> String {
    let input = bootstrap_input(fleet, vm, &ClusterSecrets::placeholders(), None);
    bootstrap::fingerprint(&input)
}

/// A spec fingerprint from a script fingerprint and an image.
pub fn with_image(script_fingerprint: &str, image: &str) -> String {
    let digest = Sha256::digest(format!("image={image}\nscript={script_fingerprint}").as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The comment a VM carries: `exedev-k8s spec=<fingerprint>`.
pub fn comment_for(fingerprint: &str) -> String {
    format!("{COMMENT_PREFIX}{fingerprint}")
}

/// The fingerprint in a VM's comment, if it has one.
pub fn fingerprint_in(comment: &str) -> Option<&str> {
    comment
        .strip_prefix(COMMENT_PREFIX)
        .map(|s| s.split_whitespace().next().unwrap_or(""))
}

/// Renders the real setup script (with the secrets) and the `new` flags.
pub fn new_vm(
    fleet: &Fleet,
    vm: &DesiredVm,
    secrets: &ClusterSecrets,
    join_via: Option<&str>,
) -> Result<NewVm, BootstrapError> {
    let script = bootstrap::render(&bootstrap_input(fleet, vm, secrets, join_via))?;
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
        comment: Some(comment_for(&spec_fingerprint(fleet, vm))),
        no_email: true,
    })
}

/// Checks at plan time that every VM's script renders and fits in 10 KiB.
///
/// Within one group (pool and script kind) scripts differ only in the node
/// name, a `[a-z0-9-]` word that no filter escapes; so the VM with the
/// longest name has the largest script and the same values otherwise, and
/// rendering it alone checks the whole group (a 1000-VM plan renders a
/// dozen scripts, not a thousand). Ties go to the last VM, the highest index.
pub fn check_scripts(fleet: &Fleet, vms: &[DesiredVm]) -> Result<(), BootstrapError> {
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
        ))?;
    }
    Ok(())
}
