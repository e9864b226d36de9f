//! The cluster's secrets on the operator's machine: the k3s server token and
//! the k3s agent token (each from the fleet's reference, or generated on the
//! first apply of a new cluster and kept mode 0600 under
//! `.exedev-k8s/<fleet>/` beside the fleet file) and the Tailscale key
//! (always a reference).
//!
//! The server token also decrypts etcd bootstrap data: it is needed to
//! restore snapshots, so it is kept, never printed, and only removed when
//! asked. Agents get only the agent token (k3s `agent-token`), which lets a
//! node join as an agent and nothing more. Secret k3s flags are references
//! too.
//!
//! [`references`] is the one list of what a fleet references: [`resolve`]
//! (apply) reads them, [`check`] (plan) makes sure each would resolve and
//! reports every one that would not, located, without reading out a value.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::base::secret::Secret;
use crate::core::fleet::{Fleet, FleetError, FleetErrors, K3sFlag, Located, Location, SecretRef};
use crate::core::plan::spec::ClusterSecrets;

/// The stored (generated) server token's file name, also its name for
/// `--skip-secret-check`.
pub const STORED_TOKEN: &str = "k3s-token";
/// The stored agent token's file name and `--skip-secret-check` name.
pub const STORED_AGENT_TOKEN: &str = "k3s-agent-token";

/// Why secrets could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Reference(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "no {what} for fleet {cluster:?}: the fleet names none and {path} does not exist. The first apply of a new cluster generates it; if this cluster was created elsewhere, copy that file here or set k3s.{field} to {{env: {env}}}"
    )]
    Missing {
        what: &'static str,
        field: &'static str,
        env: &'static str,
        cluster: String,
        path: String,
    },
    #[error(
        "the k3s agent token equals the server token: agents would hold admin-equivalent credentials. Give k3s.agentToken another value"
    )]
    SameTokens,
    #[error(
        "the {what} file {path} of fleet {cluster:?} is empty. Nothing is generated over it: restore it from the machine the cluster was created from, or set k3s.{field} to {{env: {env}}}; if the cluster does not exist yet, delete the file and the next apply generates one"
    )]
    Empty {
        what: &'static str,
        field: &'static str,
        env: &'static str,
        cluster: String,
        path: String,
    },
}

/// A stored, generated secret of a fleet: file name and how errors name it.
struct Stored {
    file: &'static str,
    what: &'static str,
    field: &'static str,
    env: &'static str,
}

const SERVER_TOKEN: Stored = Stored {
    file: STORED_TOKEN,
    what: "k3s token",
    field: "token",
    env: "K3S_TOKEN",
};

const AGENT_TOKEN: Stored = Stored {
    file: STORED_AGENT_TOKEN,
    what: "k3s agent token",
    field: "agentToken",
    env: "K3S_AGENT_TOKEN",
};

/// Name of the directory beside the fleet file holding local state (the
/// generated tokens, the kubeconfig); git-ignored (see [`write_private`]).
pub const STATE_DIR_NAME: &str = ".exedev-k8s";

/// Directory holding a fleet's local state.
pub fn state_dir(fleet_dir: &Path, cluster: &str) -> PathBuf {
    fleet_dir.join(STATE_DIR_NAME).join(cluster)
}

/// Path of the generated k3s server token.
pub fn token_path(fleet_dir: &Path, cluster: &str) -> PathBuf {
    state_dir(fleet_dir, cluster).join(SERVER_TOKEN.file)
}

/// Path of the generated k3s agent token, next to the server token.
pub fn agent_token_path(fleet_dir: &Path, cluster: &str) -> PathBuf {
    state_dir(fleet_dir, cluster).join(AGENT_TOKEN.file)
}

/// One secret reference of a fleet, and where it is written.
pub struct SecretUse<'a> {
    /// The fleet field, e.g. `network.tailscale.authKey` or
    /// `k3s.serverArgs[2] (--etcd-s3-secret-key)`.
    pub field: String,
    /// The reference, with its place in the file.
    pub reference: &'a Located<SecretRef>,
    /// What the secret is for.
    pub kind: SecretKind,
}

/// What a referenced secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretKind {
    /// `k3s.token`.
    ServerToken,
    /// `k3s.agentToken`.
    AgentToken,
    /// A secret k3s flag's value (carried in [`ClusterSecrets::args`]).
    Flag,
    /// `network.tailscale.authKey`.
    TailscaleKey,
}

/// Every secret reference the fleet makes, in file order of their fields.
pub fn references(fleet: &Fleet) -> Vec<SecretUse<'_>> {
    let k3s = &fleet.k3s;
    let mut out = Vec::new();
    for (r, field, kind) in [
        (&k3s.token, "k3s.token", SecretKind::ServerToken),
        (&k3s.agent_token, "k3s.agentToken", SecretKind::AgentToken),
    ] {
        if let Some(t) = r {
            out.push(SecretUse {
                field: field.into(),
                reference: t,
                kind,
            });
        }
    }
    for (list, name) in [
        (&k3s.server_args, "serverArgs"),
        (&k3s.agent_args, "agentArgs"),
    ] {
        for (i, a) in list.iter().enumerate() {
            if let K3sFlag::Secret { flag, secret } = a {
                out.push(SecretUse {
                    field: format!("k3s.{name}[{i}] ({flag})"),
                    reference: secret,
                    kind: SecretKind::Flag,
                });
            }
        }
    }
    for (field, reference) in k3s.snapshots.iter().flat_map(|s| s.secrets()) {
        out.push(SecretUse {
            field: field.into(),
            reference,
            kind: SecretKind::Flag,
        });
    }
    out.push(SecretUse {
        field: "network.tailscale.authKey".into(),
        reference: &fleet.tailscale.auth_key,
        kind: SecretKind::TailscaleKey,
    });
    out
}

/// Resolves the secrets. With `generate` (a brand-new cluster only: a fresh
/// token would keep every new node out of an existing one), a missing k3s
/// token or agent token is created (48 random alphanumerics) and stored
/// 0600.
pub fn resolve(
    fleet: &Fleet,
    fleet_dir: &Path,
    generate: bool,
) -> Result<ClusterSecrets, SecretsError> {
    resolve_noting_generated(fleet, fleet_dir, generate).map(|(secrets, _)| secrets)
}

/// [`resolve`], also returning the files of the tokens this call generated
/// and stored: the user must be told (once) to keep them.
pub fn resolve_noting_generated(
    fleet: &Fleet,
    fleet_dir: &Path,
    generate: bool,
) -> Result<(ClusterSecrets, Vec<PathBuf>), SecretsError> {
    let tailscale_auth_key =
        crate::edges::workspace::resolve_secret(&fleet.tailscale.auth_key.value, fleet_dir)
            .map_err(|e| SecretsError::Reference(format!("network.tailscale.authKey: {e}")))?;
    let cluster = &fleet.name;
    let k3s = &fleet.k3s;
    let mut tokens = Vec::new();
    let mut generated = Vec::new();
    for (reference, stored) in [(&k3s.token, SERVER_TOKEN), (&k3s.agent_token, AGENT_TOKEN)] {
        tokens.push(match reference {
            Some(r) => crate::edges::workspace::resolve_secret(&r.value, fleet_dir)
                .map_err(|e| SecretsError::Reference(format!("k3s.{}: {e}", stored.field)))?,
            None => {
                let (token, made) = stored_token(fleet_dir, cluster, &stored, generate)?;
                generated.extend(made);
                token
            }
        });
    }
    let agent_token = tokens.pop().unwrap_or_default();
    let k3s_token = tokens.pop().unwrap_or_default();
    if agent_token == k3s_token {
        return Err(SecretsError::SameTokens);
    }
    let mut args = BTreeMap::new();
    for u in references(fleet)
        .into_iter()
        .filter(|u| u.kind == SecretKind::Flag)
    {
        let value = crate::edges::workspace::resolve_secret(&u.reference.value, fleet_dir)
            .map_err(|e| SecretsError::Reference(format!("{}: {e}", u.field)))?;
        args.insert(u.reference.value.describe(), value);
    }
    Ok((
        ClusterSecrets {
            k3s_token,
            agent_token,
            tailscale_auth_key,
            args,
        },
        generated,
    ))
}

/// What [`check`] looked at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SecretCheck {
    /// Names (see [`SecretRef::name`], [`STORED_TOKEN`]) found resolvable.
    pub resolved: Vec<String>,
    /// Names not looked at because `--skip-secret-check` named them.
    pub skipped: Vec<String>,
    /// Names given to skip that the fleet does not use here.
    pub unknown_skips: Vec<String>,
}

/// Checks, without showing any value, that every secret apply would need
/// resolves: each reference (an environment variable set and not empty, a
/// file readable and not empty); for a cluster that already exists, each
/// stored token the fleet names no reference for; and that the agent token
/// differs from the server token. References named in `skip` (by
/// [`SecretRef::name`], [`STORED_TOKEN`] or [`STORED_AGENT_TOKEN`]) are not
/// looked at. Every failure is reported at once, at its place in `file`.
pub fn check(
    fleet: &Fleet,
    file: &str,
    fleet_dir: &Path,
    cluster_exists: bool,
    skip: &[String],
) -> Result<SecretCheck, FleetErrors> {
    let mut c = Checking {
        file,
        fleet_dir,
        skip,
        report: SecretCheck::default(),
        errors: Vec::new(),
        seen: Vec::new(),
        tokens: BTreeMap::new(),
        agent_flags: Vec::new(),
    };
    c.references(fleet);
    if cluster_exists {
        c.stored_tokens(fleet);
    }
    c.token_clashes(fleet);
    let Checking {
        mut report,
        mut errors,
        seen,
        ..
    } = c;
    report.unknown_skips = skip.iter().filter(|s| !seen.contains(s)).cloned().collect();
    if errors.is_empty() {
        Ok(report)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(FleetErrors(errors))
    }
}

/// [`check`]'s state across its passes: what it found so far.
struct Checking<'a> {
    file: &'a str,
    fleet_dir: &'a Path,
    skip: &'a [String],
    report: SecretCheck,
    errors: Vec<FleetError>,
    /// Every name the fleet uses here, to tell which skips name nothing.
    seen: Vec<String>,
    /// The two tokens' values, when both could be read: they must differ.
    tokens: BTreeMap<SecretKind, Secret>,
    /// Secret flags of agents: never the server token's value.
    agent_flags: Vec<(Location, String, Secret)>,
}

impl Checking<'_> {
    /// Whether `--skip-secret-check` names `name` (then it is recorded as
    /// skipped, once).
    fn skipped(&mut self, name: &str) -> bool {
        self.seen.push(name.to_string());
        if !self.skip.iter().any(|s| s == name) {
            return false;
        }
        if !self.report.skipped.iter().any(|s| s == name) {
            self.report.skipped.push(name.to_string());
        }
        true
    }

    /// Each reference resolves, and holds none of the tool's own
    /// credentials.
    fn references(&mut self, fleet: &Fleet) {
        // The API token this run holds (the GitOps job's environment).
        let api_key = std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty());
        for u in references(fleet) {
            let name = u.reference.value.name();
            if self.skipped(&name) {
                continue;
            }
            let loc = u.reference.at;
            let value =
                match crate::edges::workspace::resolve_secret(&u.reference.value, self.fleet_dir) {
                    Ok(value) => value,
                    Err(e) => {
                        self.errors.push(FleetError {
                            file: self.file.to_string(),
                            line: loc.line,
                            column: loc.column,
                            message: format!("{}: {}", u.field, e.message),
                            hint: e.hint,
                        });
                        continue;
                    }
                };
            if let Some(what) = own_credential(value.expose(), api_key.as_deref()) {
                self.errors.push(FleetError::at(
                    self.file,
                    loc.line,
                    loc.column,
                    format!(
                        "{}: {} holds {what}: the nodes would receive it",
                        u.field,
                        u.reference.value.describe()
                    ),
                    "reference a secret meant for the nodes, never the tool's own credentials",
                ));
                continue;
            }
            if u.kind == SecretKind::Flag && u.field.starts_with("k3s.agentArgs") {
                self.agent_flags.push((loc, u.field.clone(), value.clone()));
            }
            if matches!(u.kind, SecretKind::ServerToken | SecretKind::AgentToken) {
                self.tokens.insert(u.kind, value);
            }
            self.report.resolved.push(name);
        }
    }

    /// For a cluster that exists, each token the fleet names no reference
    /// for is stored here (a new cluster's are generated by its first
    /// apply).
    fn stored_tokens(&mut self, fleet: &Fleet) {
        let cluster = &fleet.name;
        let k3s = &fleet.k3s;
        for (reference, stored, key) in [
            (&k3s.token, SERVER_TOKEN, SecretKind::ServerToken),
            (&k3s.agent_token, AGENT_TOKEN, SecretKind::AgentToken),
        ] {
            if reference.is_some() || self.skipped(stored.file) {
                continue;
            }
            match stored_token(self.fleet_dir, cluster, &stored, false) {
                Ok((value, _)) => {
                    self.tokens.insert(key, value);
                    self.report.resolved.push(stored.file.to_string());
                }
                Err(e) => {
                    let path = state_dir(self.fleet_dir, cluster).join(stored.file);
                    let why = match e {
                        SecretsError::Missing { .. } => format!(
                            "k3s.{} is not set and the cluster's stored {} {} does not exist (or is empty); the cluster exists, so a new one would keep new nodes out of it",
                            stored.field,
                            stored.what,
                            path.display()
                        ),
                        other => format!("k3s.{} is not set and {other}", stored.field),
                    };
                    let loc = fleet.k3s.at;
                    self.errors.push(FleetError::at(
                        self.file,
                        loc.line,
                        loc.column,
                        why,
                        format!(
                            "copy it from where the cluster was created to {}, or keep it as a secret and write {}: {{env: {}}} under k3s (the way for CI); a job without it on purpose names {} in --skip-secret-check",
                            path.display(),
                            stored.field,
                            stored.env,
                            stored.file
                        ),
                    ));
                }
            }
        }
    }

    /// The agent token differs from the server token, and no agent's
    /// secret flag holds the server token.
    fn token_clashes(&mut self, fleet: &Fleet) {
        let k3s = &fleet.k3s;
        if let (Some(server), Some(agent)) = (
            self.tokens.get(&SecretKind::ServerToken),
            self.tokens.get(&SecretKind::AgentToken),
        ) && server == agent
        {
            let at = k3s.agent_token.as_ref().map_or(k3s.at, |t| t.at);
            self.errors.push(FleetError::at(
                self.file,
                at.line,
                at.column,
                SecretsError::SameTokens.to_string(),
                "generate a separate random value for k3s.agentToken",
            ));
        }
        if let Some(server) = self.tokens.get(&SecretKind::ServerToken) {
            for (at, field, value) in &self.agent_flags {
                if value == server {
                    self.errors.push(FleetError::at(
                        self.file,
                        at.line,
                        at.column,
                        format!("{field}: its value is the server token: agents would receive the admin-equivalent server token"),
                        "agents get only the agent token: reference another secret here",
                    ));
                }
            }
        }
    }
}

/// The environment variable holding the API token the tool runs with
/// (`--token`'s, `cli`).
const API_KEY_ENV: &str = "EXE_DEV_API_KEY";

/// What a resolved secret is when it is one of the tool's own credentials,
/// whatever the reference's name (validation refuses the names:
/// `fleet::validate`): a private key (the SSH key tokens are minted with
/// is one; no k3s flag takes a key inline, only a key file's path), or the
/// API token this run holds.
fn own_credential(value: &str, api_key: Option<&str>) -> Option<&'static str> {
    if value.contains("PRIVATE KEY-----") {
        Some("a private key (the tool's SSH key?)")
    } else if api_key.is_some_and(|k| k.trim() == value.trim()) {
        Some("the exe.dev API token this run uses")
    } else {
        None
    }
}

fn stored_token(
    fleet_dir: &Path,
    cluster: &str,
    stored: &Stored,
    generate: bool,
) -> Result<(Secret, Option<PathBuf>), SecretsError> {
    let path = state_dir(fleet_dir, cluster).join(stored.file);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((Secret::new(t.trim()), None)),
        Ok(_) => {
            return Err(SecretsError::Empty {
                what: stored.what,
                field: stored.field,
                env: stored.env,
                cluster: cluster.into(),
                path: path.display().to_string(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SecretsError::Io {
                what: "read",
                path: path.display().to_string(),
                source,
            });
        }
    }
    if !generate {
        return Err(SecretsError::Missing {
            what: stored.what,
            field: stored.field,
            env: stored.env,
            cluster: cluster.into(),
            path: path.display().to_string(),
        });
    }
    let token: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(48)
        .map(char::from)
        .collect();
    write_private(&path, &token)?;
    Ok((Secret::new(token), Some(path)))
}

/// The fleet's server token as apply would give it to a new server
/// (`k3s.token`'s reference, else the stored one), never generated: a
/// restore needs the token the snapshot was taken with. `Err` says where
/// it was looked for.
pub fn server_token(fleet: &Fleet, fleet_dir: &Path) -> Result<Secret, SecretsError> {
    match &fleet.k3s.token {
        Some(r) => crate::edges::workspace::resolve_secret(&r.value, fleet_dir)
            .map_err(|e| SecretsError::Reference(format!("k3s.{}: {e}", SERVER_TOKEN.field))),
        None => stored_token(fleet_dir, &fleet.name, &SERVER_TOKEN, false).map(|(t, _)| t),
    }
}

/// Makes the state directory `root` ignored by git (a `.gitignore` holding
/// `*` inside it), so tokens and kubeconfigs are never committed with the
/// fleet file. A `.gitignore` the user wrote there is left alone.
fn ignore_in_git(root: &Path) -> Result<(), SecretsError> {
    let file = root.join(".gitignore");
    if file.exists() {
        return Ok(());
    }
    std::fs::write(&file, "*\n").map_err(|source| SecretsError::Io {
        what: "write",
        path: file.display().to_string(),
        source,
    })
}

/// Writes `content` to `path` with mode 0600 (directory 0700), atomically.
pub fn write_private(path: &Path, content: &str) -> Result<(), SecretsError> {
    let io = |what, source| SecretsError::Io {
        what,
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
        // Anything written under `.exedev-k8s/` is local state: never in git.
        if let Some(root) = dir
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == STATE_DIR_NAME))
        {
            ignore_in_git(root)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| io("write", e))?;
    f.write_all(content.as_bytes())
        .map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename into", e))
}

/// Removes the fleet's local state directory (`destroy --purge-secrets`):
/// the stored k3s tokens and kubeconfig. Returns the directory and the
/// names of the files it held (its `.gitignore` aside), so the command can
/// say exactly what went; `None` when there was nothing to remove.
pub fn purge(
    fleet_dir: &Path,
    cluster: &str,
) -> Result<Option<(PathBuf, Vec<String>)>, SecretsError> {
    let dir = state_dir(fleet_dir, cluster);
    let io = |what, source| SecretsError::Io {
        what,
        path: dir.display().to_string(),
        source,
    };
    let mut held: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".gitignore")
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", e)),
    };
    held.sort();
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(Some((dir, held))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("remove", e)),
    }
}

/// What `destroy --purge-secrets` removed, in one sentence.
pub fn purged_note(cluster: &str, dir: &Path, held: &[String]) -> String {
    let what = match held {
        [] => "it was empty".to_string(),
        [one] => format!("its {one}"),
        [init @ .., last] => format!("its {} and {last}", init.join(", ")),
    };
    format!(
        "Removed the local state of fleet {cluster:?}: {} ({what}).",
        dir.display()
    )
}

/// What an apply that generated tokens says once (stderr): which token(s),
/// where they are stored, why to keep them, and how CI references them.
/// Names only the tokens in `generated` (a fleet that sets one of them
/// gets only the other generated). `None` when nothing was generated.
pub fn generated_note(cluster: &str, generated: &[PathBuf]) -> Option<String> {
    let kinds: Vec<&Stored> = [&SERVER_TOKEN, &AGENT_TOKEN]
        .into_iter()
        .filter(|k| {
            generated
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == k.file))
        })
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let files: Vec<String> = generated.iter().map(|p| p.display().to_string()).collect();
    let refs: Vec<String> = kinds
        .iter()
        .map(|k| format!("k3s.{}: {{env: {}}}", k.field, k.env))
        .collect();
    let server = kinds.iter().any(|k| k.file == SERVER_TOKEN.file);
    let need = if server {
        "restoring etcd snapshots and adding nodes later need"
    } else {
        "adding nodes later needs"
    };
    Some(if kinds.len() == 1 {
        format!(
            "Generated the {} of fleet {cluster:?} and stored it in {} (mode 0600, ignored by git). Keep a copy somewhere safe: {need} it. In CI, store it as a secret and write {}.",
            kinds[0].what,
            files.join(" and "),
            refs[0]
        )
    } else {
        format!(
            "Generated the k3s tokens of fleet {cluster:?} (server and agent) and stored them in {} (mode 0600, ignored by git). Keep a copy somewhere safe: {need} them. In CI, store them as secrets and write {}.",
            files.join(" and "),
            refs.join(" and ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::fixtures;

    /// The minimal fleet with the Tailscale key in the file `ts.key` and
    /// `k3s_lines` under `k3s:` after the channel (line 6).
    fn fleet_reading_ts_key(k3s_lines: &str) -> crate::core::fleet::Fleet {
        fixtures::parsed(
            &fixtures::minimal_replacing("{env: TS_AUTHKEY}", "{file: ts.key}").replace(
                "  channel: stable\n",
                &format!("  channel: stable\n{k3s_lines}"),
            ),
        )
    }

    /// Generated tokens are reported once, when made; later calls read them.
    #[test]
    fn generated_tokens_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ts.key"), "tskey-auth-xyz\n").unwrap();
        let f = fleet_reading_ts_key("");
        let (_, made) = resolve_noting_generated(&f, dir.path(), true).unwrap();
        assert_eq!(
            made,
            [
                token_path(dir.path(), "demo"),
                agent_token_path(dir.path(), "demo")
            ]
        );
        let (_, made) = resolve_noting_generated(&f, dir.path(), true).unwrap();
        assert!(made.is_empty());
    }

    /// A `.gitignore` the user wrote is kept; files outside the state
    /// directory get none.
    #[test]
    fn the_state_directory_is_git_ignored_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(STATE_DIR_NAME);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(".gitignore"), "k3s-token\n").unwrap();
        write_private(&root.join("demo/kubeconfig"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(".gitignore")).unwrap(),
            "k3s-token\n"
        );
        write_private(&dir.path().join("out/kubeconfig"), "x").unwrap();
        assert!(!dir.path().join("out/.gitignore").exists());
    }

    /// Lines 1-16; the references sit on lines 7, 10, 12 and 16.
    const FLEET: &str = "apiVersion: exedev-k8s/v1
kind: Fleet
metadata:
  name: demo
k3s:
  channel: stable
  token: {file: secrets/k3s}
  serverArgs:
    - --etcd-s3
    - {flag: --etcd-s3-secret-key, secret: {file: secrets/empty}}
  agentArgs:
    - {flag: --kubelet-arg, secret: {file: secrets}}
network:
  tailscale:
    tailnet: t.ts.net
    authKey: {env: EXK8S_TEST_SURELY_UNSET_TS_KEY}
";

    #[test]
    fn check_reports_every_unresolvable_reference_at_its_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/empty"), "\n").unwrap();
        let f = crate::core::fleet::parse(FLEET, "fleet.yaml").unwrap();
        // A new cluster (false): its tokens are generated, not looked for.
        let err = check(&f, "fleet.yaml", dir.path(), false, &[]).unwrap_err();
        let places: Vec<(u64, u64)> = err.errors().iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(places, [(7, 10), (10, 44), (12, 37), (16, 14)], "{err}");
        let text = err.to_string();
        assert!(
            text.contains("fleet.yaml:7:10: k3s.token: cannot read secret file"),
            "{text}"
        );
        assert!(
            text.contains("k3s.serverArgs[1] (--etcd-s3-secret-key): secret file"),
            "{text}"
        );
        assert!(text.contains("is empty"), "{text}");
        assert!(text.contains("k3s.agentArgs[0] (--kubelet-arg)"), "{text}");
        assert!(
            text.contains("EXK8S_TEST_SURELY_UNSET_TS_KEY is not set"),
            "{text}"
        );

        // Resolvable ones pass and are never read out; skipped ones are
        // named; unknown skip names are reported.
        std::fs::write(dir.path().join("secrets/k3s"), "k3s-SECRETVALUE\n").unwrap();
        std::fs::write(dir.path().join("secrets/empty"), "s3-SECRETVALUE").unwrap();
        let skip: Vec<String> = ["secrets", "EXK8S_TEST_SURELY_UNSET_TS_KEY", "NOPE"]
            .map(String::from)
            .to_vec();
        let ok = check(&f, "fleet.yaml", dir.path(), false, &skip).unwrap();
        assert_eq!(ok.resolved, ["secrets/k3s", "secrets/empty"]);
        assert_eq!(ok.skipped, ["secrets", "EXK8S_TEST_SURELY_UNSET_TS_KEY"]);
        assert_eq!(ok.unknown_skips, ["NOPE"]);
        assert!(!format!("{ok:?}").contains("SECRETVALUE"));
    }

    /// Issue 22, finding 3, by value: a reference whose name validation
    /// lets through can still hold the tool's own credentials or the
    /// server token. Repro: `{file: deploy_key}` (the SSH key tokens are
    /// minted with, copied beside the fleet) in `serverArgs`, and
    /// `agentArgs` `{file: copy}` holding the server token's value. Both
    /// are refused at plan time, at the reference, without the value.
    #[test]
    fn check_refuses_a_private_key_and_the_server_token_for_agents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("deploy_key"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktSECRET\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("k3s"), "k3s-SECRETVALUE\n").unwrap();
        std::fs::write(dir.path().join("copy"), "k3s-SECRETVALUE").unwrap();
        std::fs::write(dir.path().join("ts"), "tskey-auth-x").unwrap();
        let f = crate::core::fleet::parse(
            &FLEET
                .replace("secrets/k3s", "k3s")
                .replace("secrets/empty", "deploy_key")
                .replace("{file: secrets}", "{file: copy}")
                .replace("{env: EXK8S_TEST_SURELY_UNSET_TS_KEY}", "{file: ts}"),
            "fleet.yaml",
        )
        .unwrap();
        let err = check(&f, "fleet.yaml", dir.path(), false, &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("fleet.yaml:10:44: k3s.serverArgs[1] (--etcd-s3-secret-key): file deploy_key holds a private key"),
            "{text}"
        );
        assert!(
            text.contains(
                "fleet.yaml:12:37: k3s.agentArgs[0] (--kubelet-arg): its value is the server token"
            ),
            "{text}"
        );
        assert!(!text.contains("SECRET"), "{text}");
        assert_eq!(
            own_credential("exe0.abc", Some("exe0.abc\n")),
            Some("the exe.dev API token this run uses")
        );
        assert_eq!(own_credential("exe0.abc", None), None);
    }

    #[test]
    fn check_wants_the_stored_tokens_only_for_an_existing_cluster() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ts.key"), "tskey").unwrap();
        let f = fleet_reading_ts_key("");
        // A new cluster: the first apply generates them.
        assert!(check(&f, "f.yaml", dir.path(), false, &[]).is_ok());
        let err = check(&f, "f.yaml", dir.path(), true, &[]).unwrap_err();
        assert_eq!(err.errors().len(), 2, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("f.yaml:6:3: k3s.token is not set"),
            "{text}"
        );
        assert!(
            text.contains("f.yaml:6:3: k3s.agentToken is not set"),
            "{text}"
        );
        assert!(
            text.contains("k3s-token") && text.contains("{env: K3S_TOKEN}"),
            "{text}"
        );
        assert!(text.contains("{env: K3S_AGENT_TOKEN}"), "{text}");
        let both = [STORED_TOKEN.to_string(), STORED_AGENT_TOKEN.to_string()];
        let skipped = check(&f, "f.yaml", dir.path(), true, &both).unwrap();
        assert_eq!(skipped.skipped, both);
        write_private(&token_path(dir.path(), "demo"), "SAME-VALUE-xyz").unwrap();
        write_private(&agent_token_path(dir.path(), "demo"), "SAME-VALUE-xyz").unwrap();
        let err = check(&f, "f.yaml", dir.path(), true, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("agent token equals the server token"),
            "{err}"
        );
        assert!(
            !format!("{err}{err:?}").contains("SAME-VALUE"),
            "no value shown"
        );
        write_private(&agent_token_path(dir.path(), "demo"), "another").unwrap();
        let ok = check(&f, "f.yaml", dir.path(), true, &[]).unwrap();
        assert_eq!(ok.resolved, ["ts.key", STORED_TOKEN, STORED_AGENT_TOKEN]);
    }

    #[test]
    fn resolve_reads_secret_flags_for_the_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/k3s"), "tok").unwrap();
        std::fs::write(dir.path().join("secrets/empty"), "s3-value\n").unwrap();
        let src = FLEET.replace(
            "{env: EXK8S_TEST_SURELY_UNSET_TS_KEY}",
            "{file: secrets/k3s}",
        );
        let f = crate::core::fleet::parse(&src, "f.yaml").unwrap();
        // secrets/ is a directory: the agent flag cannot be read.
        let e = resolve(&f, dir.path(), true).unwrap_err().to_string();
        assert!(
            e.starts_with("k3s.agentArgs[0] (--kubelet-arg): cannot read"),
            "{e}"
        );
        std::fs::remove_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/k3s"), "tok").unwrap();
        std::fs::write(dir.path().join("secrets/empty"), "s3-value\n").unwrap();
        std::fs::write(dir.path().join("secrets/kubelet"), "kubelet-value").unwrap();
        // (Not the server token's file: validation refuses that for agents.)
        let src = src.replace("{file: secrets}", "{file: secrets/kubelet}");
        let f = crate::core::fleet::parse(&src, "f.yaml").unwrap();
        let s = resolve(&f, dir.path(), true).unwrap();
        assert_eq!(s.args["file secrets/empty"].expose(), "s3-value");
        assert_eq!(s.args["file secrets/kubelet"].expose(), "kubelet-value");
    }

    #[test]
    fn generated_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ts.key"), "tskey-auth-xyz\n").unwrap();
        let f = fleet_reading_ts_key("");
        assert!(matches!(
            resolve(&f, dir.path(), false),
            Err(SecretsError::Missing { .. })
        ));
        let a = resolve(&f, dir.path(), true).unwrap();
        assert_eq!(a.tailscale_auth_key.expose(), "tskey-auth-xyz");
        assert_eq!(a.k3s_token.expose().len(), 48);
        assert_eq!(a.agent_token.expose().len(), 48);
        assert_ne!(a.k3s_token, a.agent_token);
        let b = resolve(&f, dir.path(), false).unwrap();
        assert_eq!(a.k3s_token, b.k3s_token);
        assert_eq!(a.agent_token, b.agent_token);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".exedev-k8s/.gitignore")).unwrap(),
            "*\n"
        );
        #[cfg(unix)]
        for path in [
            token_path(dir.path(), "demo"),
            agent_token_path(dir.path(), "demo"),
        ] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(state_dir(dir.path(), "demo").join("kubeconfig"), "x").unwrap();
        let (gone, held) = purge(dir.path(), "demo").unwrap().expect("removed");
        assert_eq!(gone, state_dir(dir.path(), "demo"));
        assert_eq!(held, ["k3s-agent-token", "k3s-token", "kubeconfig"]);
        assert!(!gone.exists());
        assert_eq!(purge(dir.path(), "demo").unwrap(), None);
        insta::assert_snapshot!(
            purged_note("demo", Path::new(".exedev-k8s/demo"), &held),
            @r#"Removed the local state of fleet "demo": .exedev-k8s/demo (its k3s-agent-token, k3s-token and kubeconfig)."#
        );
    }

    /// The note names only the tokens generated: both, or the one the fleet
    /// does not set (with only its CI reference).
    #[test]
    fn generated_note_names_only_the_generated_tokens() {
        let dir = Path::new("./.exedev-k8s/acme");
        let server = dir.join(STORED_TOKEN);
        let agent = dir.join(STORED_AGENT_TOKEN);
        assert_eq!(generated_note("acme", &[]), None);
        insta::assert_snapshot!(
            generated_note("acme", &[server.clone(), agent.clone()]).unwrap(),
            @r#"Generated the k3s tokens of fleet "acme" (server and agent) and stored them in ./.exedev-k8s/acme/k3s-token and ./.exedev-k8s/acme/k3s-agent-token (mode 0600, ignored by git). Keep a copy somewhere safe: restoring etcd snapshots and adding nodes later need them. In CI, store them as secrets and write k3s.token: {env: K3S_TOKEN} and k3s.agentToken: {env: K3S_AGENT_TOKEN}."#
        );
        insta::assert_snapshot!(
            generated_note("acme", &[agent]).unwrap(),
            @r#"Generated the k3s agent token of fleet "acme" and stored it in ./.exedev-k8s/acme/k3s-agent-token (mode 0600, ignored by git). Keep a copy somewhere safe: adding nodes later needs it. In CI, store it as a secret and write k3s.agentToken: {env: K3S_AGENT_TOKEN}."#
        );
        insta::assert_snapshot!(
            generated_note("acme", &[server]).unwrap(),
            @r#"Generated the k3s token of fleet "acme" and stored it in ./.exedev-k8s/acme/k3s-token (mode 0600, ignored by git). Keep a copy somewhere safe: restoring etcd snapshots and adding nodes later need it. In CI, store it as a secret and write k3s.token: {env: K3S_TOKEN}."#
        );
    }

    #[test]
    fn agent_token_comes_from_the_fleet_like_the_server_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ts.key"), "tskey-auth-xyz\n").unwrap();
        std::fs::write(dir.path().join("server.token"), "server-secret\n").unwrap();
        std::fs::write(dir.path().join("agent.token"), "agent-secret\n").unwrap();
        let f = fleet_reading_ts_key(
            "  token: {file: server.token}\n  agentToken: {file: agent.token}\n",
        );
        let s = resolve(&f, dir.path(), false).unwrap();
        assert_eq!(s.k3s_token.expose(), "server-secret");
        assert_eq!(s.agent_token.expose(), "agent-secret");
        assert!(!agent_token_path(dir.path(), "demo").exists());

        std::fs::write(dir.path().join("agent.token"), "server-secret\n").unwrap();
        let e = resolve(&f, dir.path(), false).unwrap_err().to_string();
        assert!(
            e.contains("agentToken") && !e.contains("server-secret"),
            "{e}"
        );
    }

    #[test]
    fn an_existing_cluster_without_an_agent_token_is_told_where_to_put_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ts.key"), "tskey-auth-xyz\n").unwrap();
        std::fs::write(dir.path().join("server.token"), "server-secret\n").unwrap();
        let f = fleet_reading_ts_key("  token: {file: server.token}\n");
        let e = resolve(&f, dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("no k3s agent token"), "{e}");
        assert!(
            e.contains("k3s-agent-token") && e.contains("k3s.agentToken"),
            "{e}"
        );
        assert!(e.contains("{env: K3S_AGENT_TOKEN}"), "{e}");
        // A new cluster gets one generated next to the server token.
        let s = resolve(&f, dir.path(), true).unwrap();
        assert_eq!(s.k3s_token.expose(), "server-secret");
        assert!(agent_token_path(dir.path(), "demo").exists());
    }

    /// An empty token file is not a missing one: said so, and never
    /// silently replaced by a generated token.
    #[test]
    fn an_empty_token_file_is_reported_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ts.key"), "tskey-auth-xyz\n").unwrap();
        let f = fleet_reading_ts_key("");
        std::fs::create_dir_all(state_dir(dir.path(), "demo")).unwrap();
        std::fs::write(token_path(dir.path(), "demo"), " \n").unwrap();
        for generate in [false, true] {
            let e = resolve(&f, dir.path(), generate).unwrap_err();
            assert!(matches!(e, SecretsError::Empty { .. }), "{e:?}");
            let shown = e.to_string();
            assert!(
                shown.contains("is empty") && shown.contains("k3s-token"),
                "{shown}"
            );
            assert!(!shown.contains("no k3s token"), "{shown}");
        }
        assert_eq!(
            std::fs::read_to_string(token_path(dir.path(), "demo")).unwrap(),
            " \n",
            "left as it was"
        );
    }
}
