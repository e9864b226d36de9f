//! Renders the exe.dev setup scripts that turn a fresh exeuntu VM into a k3s
//! node on the fleet's tailnet.
//!
//! exe.dev runs a VM's setup script as user `exedev` after `new` returns and
//! again at every boot, keeps at most 10 KiB of it, and stores it
//! world-readable. So the scripts rendered here add only what is missing (an
//! operator's in-place change to the k3s version, arguments or token is never
//! undone at boot), never block without a bound, log to
//! [`LOG_PATH`], record running/done/failed and the step in [`STATE_PATH`],
//! and are size-checked before any VM is created. Everything the node needs
//! travels inside the script: exe.dev's `--env` is not visible to it. Each
//! node gets the least it needs: agents carry the agent token only.
//!
//! The templates live in `templates/` and are embedded with `include_str!`,
//! so the binary works from any directory. Every interpolated value is
//! shell-quoted by the `shquote` filter; `/etc/rancher/k3s/config.yaml` is
//! rendered first (values through `yamlstr`) and embedded as one quoted
//! string, so no value can break out of the script or the YAML.

mod state;

pub use state::{
    BootstrapPhase, BootstrapReport, format_log, is_k3s_step, k3s_journal_command, k3s_reason,
    k3s_unit, report_command,
};

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tera::{Context, Kwargs, State, Tera};

use crate::base::secret::Secret;

// exe.dev refuses setup scripts larger than this; checked at render time so
// a plan fails before any VM exists rather than half-way through a fleet.
pub use crate::base::limits::MAX_SETUP_SCRIPT_BYTES;

/// Where the script records how far it got: `state: running|done|failed`
/// and `step: <step>` (world-readable, never a secret); read over SSH by
/// `apply` (server ordering) and `status`.
pub const STATE_PATH: &str = "/var/lib/exedev-k8s/bootstrap-state";

/// Where the script logs everything it does (never a secret).
pub const LOG_PATH: &str = "/var/log/exedev-k8s-bootstrap.log";

/// k3s's supervisor and API port, the one every joiner contacts.
pub const K3S_PORT: u16 = 6443;

/// k3s's config file; the installer never rewrites it, unlike its arguments.
/// Written once, at the first boot, and never again by the tool: it holds
/// the token, which an operator may rotate (facts "Tokens, again").
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";

/// The drop-in (k3s reads `config.yaml.d/*.yaml` after config.yaml, a
/// later key replacing an earlier one) holding the k3s settings the tool
/// changes in place: `disable` and the secret flags. Written at the first
/// boot with config.yaml and rewritten only by an in-place change
/// ([`render_change`]), so config.yaml and its token are never rewritten.
pub const DROPIN_PATH: &str = "/etc/rancher/k3s/config.yaml.d/exedev-k8s.yaml";

/// Where an in-place change logs (never a secret).
pub const CHANGE_LOG_PATH: &str = "/var/log/exedev-k8s-change.log";

const MANIFEST_DIR: &str = "/var/lib/rancher/k3s/server/manifests";

const TEMPLATES: [(&str, &str); 8] = [
    (
        "helpers.sh.tera",
        include_str!("../../../templates/helpers.sh.tera"),
    ),
    (
        "node-change.sh.tera",
        include_str!("../../../templates/node-change.sh.tera"),
    ),
    (
        "dropin.yaml.tera",
        include_str!("../../../templates/dropin.yaml.tera"),
    ),
    (
        "common.sh.tera",
        include_str!("../../../templates/common.sh.tera"),
    ),
    (
        "server-init.sh.tera",
        include_str!("../../../templates/server-init.sh.tera"),
    ),
    (
        "server-join.sh.tera",
        include_str!("../../../templates/server-join.sh.tera"),
    ),
    (
        "agent.sh.tera",
        include_str!("../../../templates/agent.sh.tera"),
    ),
    (
        "config.yaml.tera",
        include_str!("../../../templates/config.yaml.tera"),
    ),
];

/// Which script a node gets: the first server creates the cluster (embedded
/// etcd), later servers and agents join it, and each needs different k3s
/// settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// First server of a new cluster: `cluster-init: true`.
    ServerInit,
    /// Further server: joins the first with the same critical settings.
    ServerJoin,
    /// Worker: `k3s agent`, no server-only keys in its config.
    Agent,
}

impl ScriptKind {
    fn template(self) -> &'static str {
        match self {
            ScriptKind::ServerInit => "server-init.sh.tera",
            ScriptKind::ServerJoin => "server-join.sh.tera",
            ScriptKind::Agent => "agent.sh.tera",
        }
    }

    /// Name used in logs and in the state file.
    fn label(self) -> &'static str {
        match self {
            ScriptKind::ServerInit => "server-init",
            ScriptKind::ServerJoin => "server-join",
            ScriptKind::Agent => "agent",
        }
    }

    fn is_server(self) -> bool {
        !matches!(self, ScriptKind::Agent)
    }
}

/// Everything one node's setup script depends on. Secrets are [`Secret`]s so
/// that `{:?}` of an input (in logs, errors, plans) never shows them.
#[derive(Debug, Clone)]
pub struct BootstrapInput {
    /// Decides the template and the k3s role.
    pub kind: ScriptKind,
    /// Cluster name, recorded in the script header and the state file so a
    /// person on the VM can tell which fleet owns it.
    pub cluster: String,
    /// VM name; also the Tailscale host name and the k3s node name.
    pub node_name: String,
    /// MagicDNS suffix, e.g. `tail1234.ts.net`: nodes reach each other as
    /// `<vm>.<tailnet>` since exe.dev VMs share no network.
    pub tailnet: String,
    /// VM name of the server a joiner (further server, agent) contacts: one
    /// that is up at apply time. Unused by [`ScriptKind::ServerInit`]; not
    /// part of the fingerprint.
    pub join_server: String,
    /// VM names of every server the fleet may have (`tls-san` of servers),
    /// so a kubeconfig may point at any of them.
    pub server_names: Vec<String>,
    /// The k3s release the installer fetches: the fleet's, decided at plan
    /// time (never a channel followed at first boot, which would let a
    /// later node run a newer kubelet than the servers). Installed only
    /// when the node has no k3s; upgrades happen in place
    /// ([`render_change`]), never through a boot-time rerun.
    pub version: String,
    /// The admin-equivalent server token: servers only, never in an agent's
    /// script.
    pub server_token: Secret,
    /// The agent token: `agent-token` on servers, `token` on agents.
    pub agent_token: Secret,
    /// Tailscale auth key for `tailscale up`.
    pub tailscale_auth_key: Secret,
    /// The node's labels. Those a kubelet may set on itself go to
    /// `node-label`; the others ([`crate::base::node_labels`]) are applied through
    /// the API once the Node is Ready.
    pub labels: BTreeMap<String, String>,
    /// `key=value:Effect`, applied at registration only.
    pub taints: Vec<String>,
    /// Extra `k3s server` arguments, one argv element each.
    pub server_args: Vec<String>,
    /// Extra `k3s agent` arguments, one argv element each.
    pub agent_args: Vec<String>,
    /// Secret `k3s server` flags, `(--name, value)`: written into
    /// config.yaml (0600) as `name: [value]`, never on the command line
    /// (the installer persists that into the world-readable unit file).
    pub server_secret_args: Vec<(String, Secret)>,
    /// Secret `k3s agent` flags, as [`Self::server_secret_args`].
    pub agent_secret_args: Vec<(String, Secret)>,
    /// k3s's etcd snapshot settings, `(--key, value)`, servers only: written
    /// into the drop-in (0600) by a change script over SSH only; the setup
    /// script leaves them out, having no room for them under exe.dev's
    /// 10 KiB, and waits a bounded time before k3s first starts for apply
    /// to write them ([`render_before_start`], [`awaits_settings`]).
    /// Values are [`Secret`]s because the S3 keys are among them.
    pub etcd_snapshots: Vec<(String, Secret)>,
    /// Components to disable; must be identical on every server.
    pub disable: Vec<String>,
    /// `(name, YAML)` written to k3s's auto-apply directory on the first
    /// server only.
    pub manifests: Vec<(String, String)>,
}

impl BootstrapInput {
    /// The labels that go to `node-label` (the kubelet sets them at
    /// registration); the rest wait for the API.
    pub fn registration_labels(&self) -> impl Iterator<Item = (&String, &String)> {
        self.labels
            .iter()
            .filter(|(k, _)| crate::base::node_labels::kubelet_may_set(k))
    }
}

/// Why a script could not be rendered. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The embedded templates failed to parse or render: a bug, not bad input.
    #[error("bootstrap template error: {0}")]
    Template(String),
    #[error("{}", too_large_message(.node, *.size, *.limit, *.secret_bytes, *.manifest_bytes, *.label_bytes))]
    /// exe.dev would refuse the script; says where the bytes went and
    /// blames the biggest part.
    TooLarge {
        /// Node whose script is too big.
        node: String,
        /// Rendered script size in bytes.
        size: usize,
        /// [`MAX_SETUP_SCRIPT_BYTES`].
        limit: usize,
        /// Bytes spent on the k3s token and the Tailscale key (the lengths
        /// only: never the values).
        secret_bytes: usize,
        /// Bytes spent on manifests.
        manifest_bytes: usize,
        /// Bytes spent on labels, taints and extra arguments.
        label_bytes: usize,
    },
    /// A value the script cannot carry safely; secret values are not shown.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// Which input field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a too-large script's bytes went, and advice about the biggest part.
fn too_large_message(
    node: &str,
    size: usize,
    limit: usize,
    secret_bytes: usize,
    manifest_bytes: usize,
    label_bytes: usize,
) -> String {
    let advice = if secret_bytes >= manifest_bytes && secret_bytes >= label_bytes {
        "the secrets are the largest part: use a shorter k3s token (k3s.token; a generated one is 48 characters) or Tailscale auth key"
    } else if manifest_bytes >= label_bytes {
        "apply large manifests after the cluster is up instead of through the bootstrap"
    } else {
        "shorten labels, taints and arguments"
    };
    format!(
        "setup script for node {node:?} is {size} bytes, over exe.dev's limit of {limit} bytes; \
         the k3s token and Tailscale key take {secret_bytes} bytes, manifests {manifest_bytes} bytes \
         and labels/taints/args {label_bytes} bytes: {advice}"
    )
}

/// Renders the setup script for one node. Fails on an invalid value (NUL
/// anywhere, a newline in a single-line field, a manifest name that is not a
/// plain file name) and on a script over [`MAX_SETUP_SCRIPT_BYTES`].
pub fn render(input: &BootstrapInput) -> Result<String, BootstrapError> {
    validate(input)?;
    let script = render_unchecked(input)?;
    if script.len() > MAX_SETUP_SCRIPT_BYTES {
        let manifest_bytes = input.manifests.iter().map(|(n, c)| n.len() + c.len()).sum();
        let label_bytes = input
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .chain(input.taints.iter().map(String::len))
            .chain(input.server_args.iter().map(String::len))
            .chain(input.agent_args.iter().map(String::len))
            .chain(
                input
                    .server_secret_args
                    .iter()
                    .chain(&input.agent_secret_args)
                    .map(|(f, v)| f.len() + v.expose().len()),
            )
            .sum();
        // Each secret the node holds appears once in its script; agents
        // hold no server token.
        let server_token = if input.kind.is_server() {
            input.server_token.expose().len()
        } else {
            0
        };
        let secret_bytes = server_token
            + input.agent_token.expose().len()
            + input.tailscale_auth_key.expose().len();
        return Err(BootstrapError::TooLarge {
            node: input.node_name.clone(),
            size: script.len(),
            limit: MAX_SETUP_SCRIPT_BYTES,
            secret_bytes,
            manifest_bytes,
            label_bytes,
        });
    }
    Ok(script)
}

/// Size of the script for `input`, whatever its size (tests compare it with
/// the limit [`render`] enforces).
#[cfg(test)]
pub(crate) fn render_unchecked_len(input: &BootstrapInput) -> usize {
    render_unchecked(input).map_or(usize::MAX, |s| s.len())
}

/// A double-quoted YAML scalar whose value is `s`: escapes backslash, quote
/// and everything YAML does not allow printed or could read as a line break.
fn yamlstr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The parsed templates, built once per process: parsing them on every render
/// dominated plan time for large fleets.
fn tera() -> Result<&'static Tera, BootstrapError> {
    static TERA: std::sync::OnceLock<Result<Tera, String>> = std::sync::OnceLock::new();
    TERA.get_or_init(|| build_tera().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| BootstrapError::Template(e.clone()))
}

fn build_tera() -> Result<Tera, BootstrapError> {
    let mut tera = Tera::new();
    // Shell and YAML, not HTML: escaping is done by the filters below.
    tera.autoescape_on(Vec::<&str>::new());
    tera.register_filter("shquote", |v: &str, _: Kwargs, _: &State| {
        crate::base::shellwords::single_quote(v)
    });
    tera.register_filter("yamlstr", |v: &str, _: Kwargs, _: &State| yamlstr(v));
    tera.add_raw_templates(TEMPLATES).map_err(template_error)?;
    Ok(tera)
}

fn template_error(e: tera::Error) -> BootstrapError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    BootstrapError::Template(msg)
}

/// One config.yaml key carrying secret flag values.
#[derive(Serialize)]
struct SecretArgCtx<'a> {
    key: &'a str,
    values: Vec<&'a str>,
}

/// Groups secret flags by key, in first-seen order: k3s turns each list item
/// into one `--key=value` (a repeated flag simply has several items). The
/// k3s facts file is silent on how config.yaml maps to flags; this follows
/// k3s's own reader (`pkg/configfilearg/parser.go`: key `k` with a list
/// value gives `--k=item` per item, placed before the command-line flags).
fn secret_arg_keys(args: &[(String, Secret)]) -> Vec<SecretArgCtx<'_>> {
    let mut out: Vec<SecretArgCtx<'_>> = Vec::new();
    for (flag, value) in args {
        let key = flag.trim_start_matches('-');
        match out.iter_mut().find(|c| c.key == key) {
            Some(c) => c.values.push(value.expose()),
            None => out.push(SecretArgCtx {
                key,
                values: vec![value.expose()],
            }),
        }
    }
    out
}

/// Keys the setup script appends to config.yaml on the VM, once it knows
/// the node's Tailscale IPv4 (templates/common.sh.tera).
const SCRIPT_CONFIG_KEYS: [&str; 3] = ["node-ip", "advertise-address", "server"];

/// Top-level keys of a rendered config.yaml (lines `key: ...` or `key:`).
fn config_keys(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect()
}

#[derive(Serialize)]
struct ManifestCtx<'a> {
    path: String,
    content: &'a str,
}

/// config.yaml and the drop-in of a node, rendered (values through
/// `yamlstr`). config.yaml's `tls-san` list comes last on servers: the
/// script appends the node's Tailscale IPv4 to it, then `node-ip`.
struct ConfigFiles {
    config_yaml: String,
    dropin_yaml: String,
}

/// `with_snapshots`: the drop-in also carries the etcd snapshot settings
/// (the change script's drop-in; never the setup script's).
fn render_configs(
    input: &BootstrapInput,
    with_snapshots: bool,
) -> Result<ConfigFiles, BootstrapError> {
    let tera = tera()?;
    let kind = input.kind;
    let labels: Vec<String> = input
        .registration_labels()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let tls_san: Vec<String> = input
        .server_names
        .iter()
        .map(|s| format!("{s}.{}", input.tailnet))
        .collect();
    let mut cfg = Context::new();
    // Least privilege: an agent's script never holds the server token.
    let token = if kind.is_server() {
        input.server_token.expose()
    } else {
        input.agent_token.expose()
    };
    cfg.insert("token", token);
    cfg.insert("agent_token", input.agent_token.expose());
    cfg.insert("node_name", &input.node_name);
    cfg.insert("cluster_init", &(kind == ScriptKind::ServerInit));
    cfg.insert("labels", &labels);
    cfg.insert("taints", &input.taints);
    cfg.insert("is_server", &kind.is_server());
    cfg.insert("tls_san", &tls_san);
    cfg.insert("disable", &input.disable);
    let mut secret_args = secret_arg_keys(if kind.is_server() {
        &input.server_secret_args
    } else {
        &input.agent_secret_args
    });
    if with_snapshots && kind.is_server() {
        // Rendered like secret flags (a one-item list per key: k3s's
        // reader gives `--key=value` for it); a key serverArgs also sets
        // is refused by the fleet's validation.
        secret_args.extend(secret_arg_keys(&input.etcd_snapshots));
    }
    cfg.insert("secret_args", &secret_args);
    let mut config_yaml = tera
        .render("config.yaml.tera", &cfg)
        .map_err(template_error)?;
    if !config_yaml.ends_with('\n') {
        config_yaml.push('\n');
    }
    // Secret flags never take a key exedev-k8s already writes (two values
    // for one key: which wins is k3s's business).
    let mut own = config_keys(&config_yaml);
    own.extend(SCRIPT_CONFIG_KEYS);
    own.push("disable");
    if let Some(clash) = secret_args.iter().find(|a| own.contains(&a.key)) {
        return Err(invalid(
            "secret k3s flag",
            format!(
                "--{} is a setting exedev-k8s writes itself; set it through its own field of the fleet file",
                clash.key
            ),
        ));
    }
    let has_dropin = !secret_args.is_empty() || (kind.is_server() && !input.disable.is_empty());
    let dropin_yaml = if has_dropin {
        let mut d = tera
            .render("dropin.yaml.tera", &cfg)
            .map_err(template_error)?;
        if !d.ends_with('\n') {
            d.push('\n');
        }
        d
    } else {
        String::new()
    };
    Ok(ConfigFiles {
        config_yaml,
        dropin_yaml,
    })
}

/// The host a joiner contacts, `<server>.<tailnet>` (empty for the first
/// server of a new cluster).
fn join_host(input: &BootstrapInput) -> String {
    match input.kind {
        ScriptKind::ServerInit => String::new(),
        _ => format!("{}.{}", input.join_server, input.tailnet),
    }
}

/// `server|agent` and the plain extra flags: the installer's arguments,
/// which it writes into the unit's `ExecStart`.
fn install_args(input: &BootstrapInput) -> Vec<String> {
    let mut args = Vec::new();
    if input.kind.is_server() {
        args.push("server".to_string());
        args.extend(input.server_args.iter().cloned());
    } else {
        args.push("agent".to_string());
        args.extend(input.agent_args.iter().cloned());
    }
    args
}

fn render_unchecked(input: &BootstrapInput) -> Result<String, BootstrapError> {
    let tera = tera()?;
    let kind = input.kind;
    let files = render_configs(input, false)?;
    let manifests: Vec<ManifestCtx<'_>> = if kind.is_server() {
        input
            .manifests
            .iter()
            .map(|(name, content)| ManifestCtx {
                path: format!("{MANIFEST_DIR}/exedev-k8s-{name}.yaml"),
                content,
            })
            .collect()
    } else {
        Vec::new()
    };
    // What the state file says besides state and step: no secret.
    let state_tail = format!(
        "role: {}\nnode: {}\ncluster: {}\nk3s-version: {}\n",
        kind.label(),
        input.node_name,
        input.cluster,
        input.version
    );

    let mut ctx = Context::new();
    ctx.insert("kind", kind.label());
    ctx.insert("node_name", &input.node_name);
    ctx.insert("cluster", &input.cluster);
    ctx.insert("unit", k3s_unit(input.kind.is_server()));
    ctx.insert("version", &input.version);
    ctx.insert("install_args", &install_args(input));
    ctx.insert("tailscale_auth_key", input.tailscale_auth_key.expose());
    ctx.insert("join_host", &join_host(input));
    ctx.insert("tailnet", &input.tailnet);
    ctx.insert("config_yaml", &files.config_yaml);
    ctx.insert("dropin_yaml", &files.dropin_yaml);
    ctx.insert("dropin_path", DROPIN_PATH);
    ctx.insert("state_tail", &state_tail);
    ctx.insert("log_path", LOG_PATH);
    ctx.insert("state_path", STATE_PATH);
    ctx.insert("is_server", &kind.is_server());
    ctx.insert("await_settings", &awaits_settings(input));
    ctx.insert("manifests", &manifests);
    let mut script = tera.render(kind.template(), &ctx).map_err(template_error)?;
    if !script.ends_with('\n') {
        script.push('\n');
    }
    Ok(script)
}

/// Whether `input`'s setup script waits, before k3s's first start, for the
/// drop-in apply pushes over SSH ([`render_before_start`]): servers of a
/// fleet with etcd snapshots, whose settings (S3 keys) the setup script
/// cannot carry, so k3s starts once with them instead of twice.
pub fn awaits_settings(input: &BootstrapInput) -> bool {
    input.kind.is_server() && !input.etcd_snapshots.is_empty()
}

/// The script that changes a running node in place, run over SSH (as the
/// VM's `exedev` user, like the setup script, its text on stdin: it holds
/// the secret flag values, which never go on a command line): writes the
/// drop-in ([`DROPIN_PATH`]; removed when the fleet has nothing for it),
/// re-runs the k3s installer with `INSTALL_K3S_VERSION` and
/// `INSTALL_K3S_SKIP_START=true` (facts "The installer": a restart by the
/// installer would block without a bound) with the node's arguments, which
/// rewrites the unit, then stops and starts the unit and waits a bounded
/// time for it to be active (servers: `/readyz` too). It refuses to
/// downgrade (facts "Versions": a pinned installer run downgrades a node
/// upgraded by other means) and never touches config.yaml (the token).
/// Idempotent: re-running it converges on the same node.
pub fn render_change(input: &BootstrapInput) -> Result<String, BootstrapError> {
    render_change_script(input, Mode::Restart)
}

/// [`render_change`] without its installer run and restart: the k3s
/// settings (the drop-in) written for k3s's next start, which the caller
/// makes itself. For `restore`'s new first server: its reset (`k3s server
/// --cluster-reset`) and the start after it read the drop-in like any k3s
/// start, and `k3s etcd-snapshot ls` before them reads it too
/// (docs/facts/disaster-recovery.md sections 3 and 4), so a restart of
/// its own would only cost a `server_ready`.
pub fn render_settings_only(input: &BootstrapInput) -> Result<String, BootstrapError> {
    render_change_script(input, Mode::SettingsOnly)
}

/// The drop-in written on a new server before k3s first starts, while its
/// setup script waits for it ([`awaits_settings`]): no installed k3s
/// needed, no restart, and linked into place so it never replaces the
/// drop-in the setup script writes once it stops waiting. It fails when
/// the drop-in or k3s's etcd data is already there (k3s started, or is
/// about to, without these settings): the caller then gives them with
/// [`render_change`].
pub fn render_before_start(input: &BootstrapInput) -> Result<String, BootstrapError> {
    render_change_script(input, Mode::BeforeStart)
}

/// What the change script does besides writing the drop-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Installs the fleet's k3s and restarts the unit.
    Restart,
    /// Nothing: the caller restarts k3s.
    SettingsOnly,
    /// Nothing, and only before k3s's first start.
    BeforeStart,
}

fn render_change_script(input: &BootstrapInput, mode: Mode) -> Result<String, BootstrapError> {
    validate(input)?;
    let tera = tera()?;
    let files = render_configs(input, true)?;
    let mut ctx = Context::new();
    ctx.insert("node_name", &input.node_name);
    ctx.insert("cluster", &input.cluster);
    ctx.insert("unit", k3s_unit(input.kind.is_server()));
    ctx.insert("version", &input.version);
    ctx.insert("install_args", &install_args(input));
    ctx.insert("dropin_yaml", &files.dropin_yaml);
    ctx.insert("dropin_path", DROPIN_PATH);
    ctx.insert("log_path", CHANGE_LOG_PATH);
    ctx.insert("is_server", &input.kind.is_server());
    ctx.insert("restart", &(mode == Mode::Restart));
    ctx.insert("before_start", &(mode == Mode::BeforeStart));
    let mut script = tera
        .render("node-change.sh.tera", &ctx)
        .map_err(template_error)?;
    if !script.ends_with('\n') {
        script.push('\n');
    }
    Ok(script)
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> BootstrapError {
    BootstrapError::InvalidValue {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A value that becomes one line of config.yaml, one argv element or part of
/// a path: NUL cannot be passed through bash at all, a newline would be
/// quoted safely but is never what the user meant.
fn single_line(field: &str, value: &str, secret: bool) -> Result<(), BootstrapError> {
    let shown = |v: &str| {
        if secret {
            String::new()
        } else {
            format!(" (got {v:?})")
        }
    };
    if value.contains('\0') {
        return Err(invalid(
            field,
            format!("contains a NUL character{}", shown(value)),
        ));
    }
    if value.contains(['\n', '\r']) {
        return Err(invalid(
            field,
            format!("must be a single line{}", shown(value)),
        ));
    }
    Ok(())
}

fn non_empty(field: &str, value: &str) -> Result<(), BootstrapError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

fn validate(input: &BootstrapInput) -> Result<(), BootstrapError> {
    for (field, value) in [
        ("cluster", &input.cluster),
        ("node_name", &input.node_name),
        ("tailnet", &input.tailnet),
        ("join_server", &input.join_server),
    ] {
        non_empty(field, value)?;
        single_line(field, value, false)?;
    }
    for name in &input.server_names {
        non_empty("server name", name)?;
        single_line("server name", name, false)?;
    }
    if !crate::base::release::is_release(&input.version) {
        return Err(invalid(
            "k3s version",
            format!(
                "{:?} is not a k3s release (v1.31.4+k3s1)",
                crate::base::text::one_line(&input.version)
            ),
        ));
    }
    for (field, secret) in [
        ("server token", &input.server_token),
        ("agent token", &input.agent_token),
        ("tailscale_auth_key", &input.tailscale_auth_key),
    ] {
        non_empty(field, secret.expose())?;
        single_line(field, secret.expose(), true)?;
    }
    // The agent token is visible to every agent: if it were the server
    // token, agents would hold admin-equivalent credentials after all.
    if input.agent_token == input.server_token {
        return Err(invalid(
            "agent token",
            "must differ from the server token (agents must never hold the server token)",
        ));
    }
    for (k, v) in &input.labels {
        non_empty("label key", k)?;
        single_line("label key", k, false)?;
        if k.contains('=') {
            return Err(invalid(
                "label key",
                format!("must not contain '=' (got {k:?})"),
            ));
        }
        single_line(&format!("value of label {k:?}"), v, false)?;
    }
    for (field, list) in [
        ("taint", &input.taints),
        ("server arg", &input.server_args),
        ("agent arg", &input.agent_args),
        ("disable entry", &input.disable),
    ] {
        for value in list {
            single_line(field, value, false)?;
        }
    }
    for (field, list) in [
        ("secret server flag", &input.server_secret_args),
        ("secret agent flag", &input.agent_secret_args),
        ("etcd snapshot setting", &input.etcd_snapshots),
    ] {
        for (flag, value) in list {
            let name = flag.strip_prefix("--").unwrap_or("");
            let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
            if !plain {
                return Err(invalid(
                    field,
                    format!("{flag:?} must be --name: lowercase letters, digits and '-'"),
                ));
            }
            single_line(&format!("value of {flag}"), value.expose(), true)?;
        }
    }
    for (name, content) in &input.manifests {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(invalid(
                "manifest name",
                format!("{name:?} must be a plain file name: letters, digits, '-', '_', '.'"),
            ));
        }
        if content.contains('\0') {
            return Err(invalid(
                format!("manifest {name:?}"),
                "contains a NUL character",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
