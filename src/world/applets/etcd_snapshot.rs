//! `k3s etcd-snapshot save|ls|list|l|delete|prune` and `k3s server
//! --cluster-reset [--cluster-reset-restore-path=P]` in a VM, and the
//! scheduled snapshots a Ready server takes: the files under the snapshot
//! directory (the edge's part: they are real files in the VM's root, so
//! removing `server/db` removes them, as on a real server) and the world's
//! S3 store, over the k3s model (`k3s::snapshot`). Each rule is k3s's, read
//! at 1feb5ae (`docs/facts/disaster-recovery.md`, §3 for the command, §4
//! for reset and restore):
//!
//! - the command talks to the running server on this node (it fails when
//!   k3s is not up), reads the server token from `--etcd-token` or
//!   `server/token` (root only), reads config.yaml and its drop-ins like the
//!   server (its `--s3-*` flags are the server's `etcd-s3-*` keys, flags on
//!   the command line win), and uses S3 only when `etcd-s3` is on for the
//!   command itself;
//! - `save` never prunes; scheduled snapshots apply local retention per
//!   node and S3 retention across every node's snapshots in the folder;
//! - output: logrus lines on stderr (`Snapshot NAME saved.`, `Snapshot NAME
//!   deleted.`, `Snapshot NAME not found.`), `ls`'s table on stdout
//!   (`Name Location Size Created`, or `-o json|yaml`); failures are
//!   `level=fatal msg="Error: ..."` with exit status 1.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::world::cron::rfc3339;
use crate::world::k3s::snapshot::{
    DEFAULT_RETENTION, PORTS_HELD, RESET_DONE, RESET_FLAG, ResetRequest, SNAPSHOT_DIR,
    created_secs, local_retention, managed_db_error, snapshot_name, token_hash,
};
use crate::world::k3s::{DB_DIR, TOKEN_PATH, parse_token};
use crate::world::k3s_config::{self, K3sConfig, UnitFile};
use crate::world::protocol::{Call, Output};
use crate::world::s3::S3Client;
use crate::world::{Inner, flag_table, now_ms};

/// A logrus text line, as k3s prints it when stderr is not a terminal.
fn logline(level: &str, msg: &str, now: u64) -> String {
    format!("time=\"{}\" level={level} msg={msg:?}\n", rfc3339(now))
}

/// k3s's exit on an error returned by a command (`logrus.Fatalf("Error:
/// %v")`, `cmd/server/main.go:88-89`).
fn fatal(msg: &str) -> Output {
    let now = now_ms();
    Output {
        code: 1,
        stdout: String::new(),
        stderr: logline("fatal", msg, now),
    }
}

/// What the S3 part of a request says (`etcd-s3-*`).
#[derive(Debug, Clone)]
struct S3Spec {
    client: S3Client,
    retention: i64,
    /// Why k3s cannot build a client from these settings at all.
    unset: Option<String>,
}

impl S3Spec {
    /// What k3s checks before it uses S3 (`GetClient`, `s3.go:125-258`).
    fn check(&self, store: &crate::world::s3::S3Store) -> Result<(), String> {
        match &self.unset {
            Some(why) => Err(why.clone()),
            None => store.check(&self.client),
        }
    }
}

/// Where and how a snapshot is saved or pruned.
#[derive(Debug, Clone)]
struct SaveSpec {
    prefix: String,
    dir: String,
    retention: i64,
    compress: bool,
    s3: Option<S3Spec>,
}

fn int(cfg: &K3sConfig, key: &str, default: i64) -> Result<i64, String> {
    match cfg.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("invalid value {v:?} for flag -{key}: parse error")),
    }
}

/// The S3 settings of a configuration, when `etcd-s3` is on
/// (`pkg/cli/server/server.go:214-236`; defaults `pkg/cli/cmds/server.go:439,494`).
fn s3_spec(cfg: &K3sConfig) -> Result<Option<S3Spec>, String> {
    if !cfg.bool("etcd-s3") {
        return Ok(None);
    }
    let get = |k: &str| cfg.get(k).unwrap_or_default().to_string();
    // With every other `etcd-s3-*` at its default, k3s reads them from the
    // `etcd-s3-config-secret` Secret, or has none (`s3.go:130-150`). The
    // world models S3 settings from config.yaml and flags only (which a
    // restore needs anyway: `etcd.go:414-416`).
    let set_elsewhere = cfg
        .flags
        .keys()
        .any(|k| k.starts_with("etcd-s3-") && k != "etcd-s3-config-secret");
    let unset = (!set_elsewhere).then(|| match cfg.get("etcd-s3-config-secret") {
        Some(name) => format!("failed to get config from etcd-s3-config-secret {name:?}: the world reads S3 settings from config.yaml and flags only (k3s cannot restore from the Secret's settings either)"),
        None => "s3 configuration was not set".to_string(),
    });
    Ok(Some(S3Spec {
        unset,
        client: S3Client {
            endpoint: cfg
                .get("etcd-s3-endpoint")
                .unwrap_or("s3.amazonaws.com")
                .to_string(),
            bucket: get("etcd-s3-bucket"),
            folder: get("etcd-s3-folder"),
            access_key: get("etcd-s3-access-key"),
            secret_key: get("etcd-s3-secret-key"),
        },
        retention: int(cfg, "etcd-s3-retention", DEFAULT_RETENTION)?,
    }))
}

/// A server's own snapshot settings (what its scheduled snapshots use).
fn server_spec(cfg: &K3sConfig) -> Result<SaveSpec, String> {
    Ok(SaveSpec {
        prefix: cfg
            .get("etcd-snapshot-name")
            .unwrap_or("etcd-snapshot")
            .to_string(),
        dir: cfg
            .get("etcd-snapshot-dir")
            .unwrap_or(SNAPSHOT_DIR)
            .to_string(),
        retention: int(cfg, "etcd-snapshot-retention", DEFAULT_RETENTION)?,
        compress: cfg.bool("etcd-snapshot-compress"),
        s3: s3_spec(cfg)?,
    })
}

/// Journal lines of the server's unit (`level=... msg="..."`).
fn journal(inner: &Inner, vm: &str, unit: &str, lines: &[(&str, String)]) {
    let now = now_ms();
    if let Some(v) = inner.model().vms.get_mut(vm) {
        for (level, msg) in lines {
            v.log(now, unit, "k3s", format!("level={level} msg={msg:?}"));
        }
    }
}

/// Saves one snapshot as the server on `vm` does (`snapshot.go:210-398`):
/// the local file, local retention, then S3 (whose failure the server
/// only logs). Returns the names created (the S3 copy has the same name).
fn save(inner: &Arc<Inner>, vm: &str, spec: &SaveSpec) -> Result<Vec<String>, String> {
    let root = inner.root(vm);
    let dir_ok = root.host_path(&spec.dir).is_ok_and(|p| p.is_dir());
    if spec.dir != SNAPSHOT_DIR && !dir_ok {
        return Err(format!(
            "failed to get etcd-snapshot-dir: stat {}: no such file or directory",
            spec.dir
        ));
    }
    if !dir_ok {
        // The default directory is created 0700 (`snapshot.go:88-92`).
        let _ = root.mkdir(&spec.dir);
    }
    let now = now_ms();
    let mut m = inner.model();
    let taken = m.take_snapshot(vm, now)?;
    let mut name = snapshot_name(&spec.prefix, &taken.node_name, now);
    if spec.compress {
        name.push_str(".zip");
    }
    let path = format!("{}/{name}", spec.dir.trim_end_matches('/'));
    let mut lines = vec![("info", format!("Saving etcd snapshot to {path}"))];
    root.write(&path, 0o600, taken.content.as_bytes())
        .map_err(|e| format!("failed to save snapshot {path}: {e}"))?;
    let mut created = vec![name.clone()];
    let names = root.list(&spec.dir);
    if spec.retention >= 1 {
        lines.push((
            "info",
            format!(
                "Applying snapshot retention={} to local snapshots with prefix {} in {}",
                spec.retention, spec.prefix, spec.dir
            ),
        ));
    }
    for gone in local_retention(&names, &spec.prefix, spec.retention) {
        let p = format!("{}/{gone}", spec.dir.trim_end_matches('/'));
        if root.remove(&p).is_ok() {
            lines.push(("info", format!("Removing local snapshot {p}")));
        }
    }
    if let Some(s3) = &spec.s3 {
        match s3.check(&m.s3) {
            Err(e) => lines.push(("warning", format!("Unable to initialize S3 client: {e}"))),
            Ok(()) => {
                lines.push(("info", format!("Saving etcd snapshot {name} to S3")));
                lines.push((
                    "info",
                    format!("Uploading snapshot to {}", s3.client.location(&name)),
                ));
                m.s3.put(
                    &s3.client,
                    &name,
                    taken.content.clone(),
                    &taken.node_name,
                    now,
                );
                lines.push(("info", format!("S3 upload complete for {name}")));
                created.push(name.clone());
                for gone in m.s3.retention(&s3.client, &spec.prefix, s3.retention) {
                    lines.push((
                        "info",
                        format!("Removing S3 snapshot: {}", s3.client.location(&gone)),
                    ));
                }
            }
        }
    }
    drop(m);
    journal(inner, vm, &taken.unit, &lines);
    Ok(created)
}

/// A Ready server's scheduled snapshot ([`crate::world::model::Effect::ScheduledSnapshot`]).
pub fn scheduled(inner: &Arc<Inner>, vm: &str, unit: &str) {
    let cfg = inner.model().proc(vm, unit).map(|p| p.cfg.clone());
    let Some(cfg) = cfg else { return };
    let result = server_spec(&cfg).and_then(|spec| save(inner, vm, &spec));
    if let Err(e) = result {
        journal(
            inner,
            vm,
            unit,
            &[("error", format!("Failed to take scheduled snapshot: {e}"))],
        );
    }
}

/// The `etcd-snapshot` command's own flags (`pkg/cli/cmds/etcd_snapshot.go:12-165`)
/// by the server key each stands for; `""`: a flag with no setting here.
fn flag_key(flag: &str) -> Option<(&'static str, bool)> {
    Some(match flag {
        "debug" => ("", true),
        "config" | "c" => ("config", false),
        "log" | "l" => ("", false),
        "alsologtostderr" => ("", true),
        "node-name" => ("node-name", false),
        "data-dir" | "d" => ("data-dir", false),
        "etcd-token" | "t" => ("etcd-token", false),
        "etcd-server" | "s" => ("etcd-server", false),
        "dir" | "etcd-snapshot-dir" => ("etcd-snapshot-dir", false),
        "name" => ("name", false),
        "snapshot-compress" | "etcd-snapshot-compress" => ("etcd-snapshot-compress", true),
        "snapshot-retention" | "etcd-snapshot-retention" => ("etcd-snapshot-retention", false),
        "s3" | "etcd-s3" => ("etcd-s3", true),
        "s3-endpoint" | "etcd-s3-endpoint" => ("etcd-s3-endpoint", false),
        "s3-endpoint-ca" | "etcd-s3-endpoint-ca" => ("etcd-s3-endpoint-ca", false),
        "s3-skip-ssl-verify" | "etcd-s3-skip-ssl-verify" => ("etcd-s3-skip-ssl-verify", true),
        "s3-access-key" | "etcd-s3-access-key" => ("etcd-s3-access-key", false),
        "s3-secret-key" | "etcd-s3-secret-key" => ("etcd-s3-secret-key", false),
        "s3-session-token" | "etcd-s3-session-token" => ("etcd-s3-session-token", false),
        "s3-bucket" | "etcd-s3-bucket" => ("etcd-s3-bucket", false),
        "s3-bucket-lookup-type" | "etcd-s3-bucket-lookup-type" => {
            ("etcd-s3-bucket-lookup-type", false)
        }
        "s3-region" | "etcd-s3-region" => ("etcd-s3-region", false),
        "s3-retention" | "etcd-s3-retention" => ("etcd-s3-retention", false),
        "s3-folder" | "etcd-s3-folder" => ("etcd-s3-folder", false),
        "s3-proxy" | "etcd-s3-proxy" => ("etcd-s3-proxy", false),
        "s3-config-secret" | "etcd-s3-config-secret" => ("etcd-s3-config-secret", false),
        "s3-insecure" | "etcd-s3-insecure" => ("etcd-s3-insecure", true),
        "s3-timeout" | "etcd-s3-timeout" => ("etcd-s3-timeout", false),
        _ => return None,
    })
}

/// The command's settings: config.yaml and drop-ins (the keys this
/// command has, by their `etcd-*` aliases), then its flags. Go's flag
/// parsing: `-f`/`--f`, `=value` or the next word, and flags end at the
/// first argument that is not one.
struct Command {
    cfg: K3sConfig,
    output: Option<String>,
    args: Vec<String>,
}

fn parse_command(
    inner: &Inner,
    call: &Call,
    words: &[String],
    ls: bool,
) -> Result<Command, String> {
    let mut cli: Vec<(String, String)> = Vec::new();
    let mut output = None;
    let mut args = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w == "--" {
            args.extend(words[i + 1..].iter().cloned());
            break;
        }
        if !w.starts_with('-') || w == "-" {
            args.extend(words[i..].iter().cloned());
            break;
        }
        let body = w.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if ls && (name == "output" || name == "o") {
            let v = inline.or_else(|| {
                i += 1;
                words.get(i).cloned()
            });
            output = Some(v.ok_or_else(|| format!("flag needs an argument: -{name}"))?);
            i += 1;
            continue;
        }
        let (key, is_bool) =
            flag_key(name).ok_or_else(|| format!("flag provided but not defined: -{name}"))?;
        let value = if is_bool {
            inline.unwrap_or_else(|| "true".to_string())
        } else {
            match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    words
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("flag needs an argument: -{name}"))?
                }
            }
        };
        if !key.is_empty() {
            cli.push((key.to_string(), value));
        }
        i += 1;
    }
    // config.yaml as the server reads it (the server's flag table holds the
    // `etcd-*` names); only the keys this command has are kept.
    let config_args: Vec<String> = cli
        .iter()
        .filter(|(k, _)| k == "config")
        .flat_map(|(_, v)| ["--config".to_string(), v.clone()])
        .collect();
    let unit = UnitFile {
        exec: ["/usr/local/bin/k3s", "server"]
            .iter()
            .map(|s| s.to_string())
            .chain(config_args)
            .collect(),
        env_files: Vec::new(),
        notify: false,
        restart_always: false,
    };
    let table = flag_table(call.env.get("EXEDEV_WORLD_K3S_VERSION").map(String::as_str))?;
    let (_, file) = k3s_config::resolve(&unit, &inner.root(&call.vm), table)?;
    let mut cfg = K3sConfig::default();
    for (k, v) in file.flags {
        let mine = k.starts_with("etcd-s3")
            || matches!(
                k.as_str(),
                "etcd-snapshot-dir"
                    | "etcd-snapshot-compress"
                    | "etcd-snapshot-retention"
                    | "node-name"
                    | "data-dir"
            );
        if mine {
            cfg.flags.insert(k, v);
        }
    }
    for (k, v) in cli {
        cfg.flags.insert(k, vec![v]);
    }
    Ok(Command { cfg, output, args })
}

/// The token the command authenticates with (`etcd_snapshot.go:80-89`).
fn command_token(inner: &Inner, call: &Call, cfg: &K3sConfig) -> Result<String, String> {
    if let Some(t) = cfg.get("etcd-token") {
        return Ok(t.to_string());
    }
    if call.uid != 0 {
        return Err(format!("open {TOKEN_PATH}: permission denied"));
    }
    inner
        .root(&call.vm)
        .read(TOKEN_PATH)
        .map(|t| t.trim_end().to_string())
        .ok_or_else(|| format!("open {TOKEN_PATH}: no such file or directory"))
}

/// The running server's cluster on this node and its snapshot directory,
/// with the command's token checked against it (the command's POST to
/// `/db/snapshot` authenticates as `server`).
fn server_for(inner: &Inner, call: &Call, cmd: &Command) -> Result<(K3sConfig, String), String> {
    let token = command_token(inner, call, &cmd.cfg)?;
    if let Some(s) = cmd.cfg.get("etcd-server")
        && !matches!(
            s.trim_end_matches('/'),
            "https://127.0.0.1:6443" | "https://localhost:6443"
        )
    {
        // Facts silent on other servers: the world's command reaches the
        // server on its own node only.
        return Err(format!(
            "the world's etcd-snapshot reaches the server on this node only (https://127.0.0.1:6443), not {s}"
        ));
    }
    let m = inner.model();
    let refused = "Get \"https://127.0.0.1:6443/cacerts\": dial tcp 127.0.0.1:6443: connect: connection refused";
    let (p, cid) = m.ready_server(&call.vm).ok_or(refused)?;
    let c = m.clusters.get(cid).ok_or(refused)?;
    let t = parse_token(&token);
    if t.secret != c.token || t.ca_hash.is_some_and(|h| h != c.pki.ca_hash) {
        return Err("https://127.0.0.1:6443/db/snapshot: 401 Unauthorized".to_string());
    }
    Ok((p.cfg.clone(), p.node_name.clone()))
}

/// `k3s etcd-snapshot ...`.
pub fn etcd_snapshot(inner: &Arc<Inner>, call: &Call) -> Output {
    let words = &call.args[1..];
    let sub = words.first().map(String::as_str);
    let run = || -> Result<Output, String> {
        let rest = words.get(1..).unwrap_or_default();
        match sub {
            Some("save") => {
                let cmd = parse_command(inner, call, rest, false)?;
                if !cmd.args.is_empty() {
                    return Err("this command does not take any arguments".into());
                }
                let (server_cfg, _) = server_for(inner, call, &cmd)?;
                // Save never prunes (`etcd_snapshot.go:116`); the directory
                // and compression come from the command when it sets them,
                // else from the server (`commandSetup`, `withRequest`).
                let spec = SaveSpec {
                    prefix: cmd.cfg.get("name").unwrap_or("on-demand").to_string(),
                    dir: cmd
                        .cfg
                        .get("etcd-snapshot-dir")
                        .or(server_cfg.get("etcd-snapshot-dir"))
                        .unwrap_or(SNAPSHOT_DIR)
                        .to_string(),
                    retention: 0,
                    compress: cmd
                        .cfg
                        .get("etcd-snapshot-compress")
                        .map_or(server_cfg.bool("etcd-snapshot-compress"), |_| {
                            cmd.cfg.bool("etcd-snapshot-compress")
                        }),
                    s3: s3_spec(&cmd.cfg)?,
                };
                let created = save(inner, &call.vm, &spec).map_err(|e| server_error(&e))?;
                let now = now_ms();
                Ok(Output {
                    code: 0,
                    stdout: String::new(),
                    stderr: created
                        .iter()
                        .map(|n| logline("info", &format!("Snapshot {n} saved."), now))
                        .collect(),
                })
            }
            Some("ls" | "list" | "l") => {
                let cmd = parse_command(inner, call, rest, true)?;
                if let Some(o) = &cmd.output
                    && !matches!(o.as_str(), "json" | "yaml" | "table")
                {
                    return Err(format!("invalid output format: {o}"));
                }
                let (server_cfg, node) = server_for(inner, call, &cmd)?;
                let rows =
                    list(inner, call, &cmd, &server_cfg, &node).map_err(|e| server_error(&e))?;
                Ok(Output::ok(render(&rows, cmd.output.as_deref())))
            }
            Some("delete") => {
                let cmd = parse_command(inner, call, rest, false)?;
                if cmd.args.is_empty() {
                    return Err("no snapshots given for removal".into());
                }
                let (server_cfg, _) = server_for(inner, call, &cmd)?;
                delete(inner, call, &cmd, &server_cfg).map_err(|e| server_error(&e))
            }
            Some("prune") => {
                let cmd = parse_command(inner, call, rest, false)?;
                let (server_cfg, _) = server_for(inner, call, &cmd)?;
                prune(inner, call, &cmd, &server_cfg).map_err(|e| server_error(&e))
            }
            None | Some("-h" | "--help" | "help") => Ok(Output::ok(
                "NAME:\n   k3s etcd-snapshot - Manage etcd snapshots\n\nCOMMANDS:\n   save     Trigger an immediate etcd snapshot\n   delete   Delete given snapshot(s)\n   ls, list, l  List snapshots\n   prune    Remove snapshots that match the name prefix that exceed the configured retention count\n",
            )),
            Some(other) => Err(format!(
                "flag provided but not defined: {other} (the subcommands are save, delete, ls, prune)"
            )),
        }
    };
    match run() {
        Ok(out) => out,
        Err(e) => fatal(&format!("Error: {e}")),
    }
}

/// An error the server returned to the command (`wrapServerError`,
/// `etcd_snapshot.go:92-99`); connection failures pass as they are.
fn server_error(e: &str) -> String {
    if e.contains("connection refused") || e.contains("Unauthorized") {
        e.to_string()
    } else {
        format!("see server log for details: {e}")
    }
}

/// One row of `ls`.
struct Row {
    name: String,
    location: String,
    size: u64,
    created: i64,
    node: String,
    /// The S3 settings it was listed with (`None`: a local file).
    s3: Option<S3Client>,
    token_hash: Option<String>,
}

fn list(
    inner: &Inner,
    call: &Call,
    cmd: &Command,
    server_cfg: &K3sConfig,
    node: &str,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    if let Some(s3) = s3_spec(&cmd.cfg)? {
        let m = inner.model();
        s3.check(&m.s3)
            .map_err(|e| format!("failed to initialize S3 client: {e}"))?;
        for (name, o) in m.s3.list(&s3.client, "") {
            rows.push(Row {
                location: s3.client.location(&name),
                size: o.body.len() as u64,
                created: created_secs(&name).unwrap_or((o.last_modified_ms / 1000) as i64),
                node: o.node.clone(),
                s3: Some(s3.client.clone()),
                token_hash: m.snapshot_in(&o.body).ok().map(|d| token_hash(&d.token)),
                name,
            });
        }
    }
    let dir = cmd
        .cfg
        .get("etcd-snapshot-dir")
        .or(server_cfg.get("etcd-snapshot-dir"))
        .unwrap_or(SNAPSHOT_DIR)
        .trim_end_matches('/')
        .to_string();
    let root = inner.root(&call.vm);
    for name in root.list(&dir) {
        let Ok(host) = root.host_path(&format!("{dir}/{name}")) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&host) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        rows.push(Row {
            location: format!("file://{dir}/{name}"),
            size: meta.len(),
            created: created_secs(&name).unwrap_or(mtime),
            node: node.to_string(),
            s3: None,
            token_hash: None,
            name,
        });
    }
    rows.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    Ok(rows)
}

/// `ls`'s output: tabwriter with padding 1 (`etcd_snapshot.go:257-263`),
/// or the `ETCDSnapshotFileList` as JSON/YAML.
fn render(rows: &[Row], output: Option<&str>) -> String {
    if matches!(output, Some("json" | "yaml")) {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                let key: String = r
                    .name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "-._".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let storage = if r.s3.is_some() {
                    "s3"
                } else {
                    r.node.as_str()
                };
                let mut item = json!({
                    "apiVersion": "k3s.cattle.io/v1",
                    "kind": "ETCDSnapshotFile",
                    "metadata": {
                        "name": format!("{}-{key}", if r.s3.is_some() { "s3" } else { "local" }),
                        "labels": {"etcd.k3s.cattle.io/snapshot-storage-node": storage},
                    },
                    "spec": {"snapshotName": r.name, "nodeName": r.node, "location": r.location},
                    "status": {"creationTime": rfc3339(r.created.max(0) as u64 * 1000),
                               "readyToUse": true, "size": r.size.to_string()},
                });
                if let Some(c) = &r.s3 {
                    item["spec"]["s3"] =
                        json!({"endpoint": c.endpoint, "bucket": c.bucket, "prefix": c.folder});
                }
                if let Some(h) = &r.token_hash {
                    item["metadata"]["annotations"] =
                        json!({"etcd.k3s.cattle.io/snapshot-token-hash": h});
                }
                item
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}});
        return if output == Some("json") {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            )
        } else {
            serde_saphyr::to_string(&list).unwrap_or_default()
        };
    }
    let mut table = vec![[
        "Name".to_string(),
        "Location".into(),
        "Size".into(),
        "Created".into(),
    ]];
    for r in rows {
        table.push([
            r.name.clone(),
            r.location.clone(),
            r.size.to_string(),
            rfc3339(r.created.max(0) as u64 * 1000),
        ]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0) + 1)
        .collect();
    table
        .iter()
        .map(|r| {
            format!(
                "{:<w0$}{:<w1$}{:<w2$}{}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        })
        .collect()
}

fn delete(
    inner: &Inner,
    call: &Call,
    cmd: &Command,
    server_cfg: &K3sConfig,
) -> Result<Output, String> {
    let s3 = s3_spec(&cmd.cfg)?;
    let mut m = inner.model();
    if let Some(s) = &s3 {
        s.check(&m.s3)
            .map_err(|e| format!("failed to initialize S3 client: {e}"))?;
    }
    let dir = cmd
        .cfg
        .get("etcd-snapshot-dir")
        .or(server_cfg.get("etcd-snapshot-dir"))
        .unwrap_or(SNAPSHOT_DIR)
        .trim_end_matches('/')
        .to_string();
    let root = inner.root(&call.vm);
    let now = now_ms();
    let mut err = String::new();
    let mut deleted = Vec::new();
    for name in &cmd.args {
        // k3s joins the name to the directory (`snapshot.go:562`); a name
        // with a `/` is not a snapshot of this directory.
        let path = format!("{dir}/{name}");
        if !name.contains('/')
            && root.host_path(&path).is_ok_and(|p| p.is_file())
            && root.remove(&path).is_ok()
        {
            deleted.push(name.clone());
        }
        if let Some(s) = &s3
            && m.s3.delete(&s.client, name)
        {
            deleted.push(name.clone());
        }
    }
    drop(m);
    for n in &deleted {
        err.push_str(&logline("info", &format!("Snapshot {n} deleted."), now));
    }
    for n in &cmd.args {
        if !deleted.contains(n) {
            err.push_str(&logline(
                "warning",
                &format!("Snapshot {n} not found."),
                now,
            ));
        }
    }
    Ok(Output {
        code: 0,
        stdout: String::new(),
        stderr: err,
    })
}

fn prune(
    inner: &Inner,
    call: &Call,
    cmd: &Command,
    server_cfg: &K3sConfig,
) -> Result<Output, String> {
    let prefix = cmd.cfg.get("name").unwrap_or("on-demand").to_string();
    let retention = match cmd.cfg.get("etcd-snapshot-retention") {
        Some(_) => int(&cmd.cfg, "etcd-snapshot-retention", DEFAULT_RETENTION)?,
        None => int(server_cfg, "etcd-snapshot-retention", DEFAULT_RETENTION)?,
    };
    let dir = cmd
        .cfg
        .get("etcd-snapshot-dir")
        .or(server_cfg.get("etcd-snapshot-dir"))
        .unwrap_or(SNAPSHOT_DIR)
        .trim_end_matches('/')
        .to_string();
    let root = inner.root(&call.vm);
    let mut deleted = Vec::new();
    for gone in local_retention(&root.list(&dir), &prefix, retention) {
        if root.remove(&format!("{dir}/{gone}")).is_ok() {
            deleted.push(gone);
        }
    }
    if let Some(s3) = s3_spec(&cmd.cfg)? {
        let mut m = inner.model();
        // Prune only warns when S3 cannot be used (`snapshot.go:485-487`).
        if s3.check(&m.s3).is_ok() {
            deleted.extend(m.s3.retention(&s3.client, &prefix, s3.retention));
        }
    }
    let now = now_ms();
    Ok(Output {
        code: 0,
        stdout: String::new(),
        stderr: deleted
            .iter()
            .map(|n| logline("info", &format!("Snapshot {n} deleted."), now))
            .collect(),
    })
}

/// `k3s server ...` run by hand: only a cluster reset (with or without a
/// restore) is modelled; k3s itself runs as its unit.
pub fn server(inner: &Arc<Inner>, call: &Call) -> Output {
    let cfg = match reset_config(inner, call) {
        Ok(c) => c,
        Err(out) => return out,
    };
    let root = inner.root(&call.vm);
    let restore = cfg.get("cluster-reset-restore-path").map(str::to_string);
    let mut token = cfg.get("token").map(str::to_string);
    if let Some(p) = cfg.get("token-file") {
        token = root.read(p).map(|t| t.trim().to_string());
    }
    let token_file = root.read(TOKEN_PATH).map(|t| t.trim().to_string());
    if restore.is_some() && token.is_none() && token_file.is_none() {
        return fatal(&format!(
            "Error: {TOKEN_PATH} does not exist, please pass --token to complete the restoration"
        ));
    }
    let now = now_ms();
    let version = call
        .env
        .get("EXEDEV_WORLD_K3S_VERSION")
        .cloned()
        .unwrap_or_default();
    let mut lines = vec![logline("info", &format!("Starting k3s {version}"), now)];
    let node_name = cfg
        .get("node-name")
        .map(str::to_string)
        .unwrap_or_else(|| call.vm.clone());
    let mut req = ResetRequest {
        node_name,
        token: token.or(token_file),
        snapshot: None,
        has_data_dir: root.exists(DB_DIR),
        reset_flag: root.exists(RESET_FLAG),
    };
    if inner.model().k3s_server_running(&call.vm) {
        return fatal(PORTS_HELD);
    }
    if let Some(path) = &restore {
        match restore_text(inner, &call.vm, &cfg, path, now, &mut lines) {
            Ok(text) => req.snapshot = Some(text),
            Err(e) => return fatal(&e),
        }
    }
    reset(inner, &call.vm, &req, now, lines)
}

/// The settings of a `k3s server` run by hand: its command line resolved
/// with config.yaml and its drop-ins as a unit's would be, after the
/// world's own limits (a reset only, as root) and before the checks of
/// `pkg/cli/server/server.go` that come before anything starts. Its own
/// function because all of these refuse before the reset reads a token,
/// a snapshot or the model; the error is the whole output.
fn reset_config(inner: &Inner, call: &Call) -> Result<K3sConfig, Output> {
    let args = &call.args[1..];
    let unit = UnitFile {
        exec: ["/usr/local/bin/k3s", "server"]
            .iter()
            .map(|s| s.to_string())
            .chain(args.iter().cloned())
            .collect(),
        env_files: Vec::new(),
        notify: false,
        restart_always: false,
    };
    let table = flag_table(call.env.get("EXEDEV_WORLD_K3S_VERSION").map(String::as_str))
        .map_err(|e| fatal(&e))?;
    let given = |f: &str| {
        args.iter()
            .any(|a| a.trim_start_matches('-').split('=').next() == Some(f))
    };
    if !given("cluster-reset") && !given("cluster-reset-restore-path") {
        return Err(Output::fail(
            1,
            "k3s server: the world runs k3s only as its systemd unit (write the unit with the installer, then `systemctl start`); by hand it models `k3s server --cluster-reset [--cluster-reset-restore-path=PATH]`",
        ));
    }
    if call.uid != 0 {
        // Facts silent: k3s needs root for its data directory.
        return Err(fatal(&format!(
            "Error: open {TOKEN_PATH}: permission denied"
        )));
    }
    let (_, cfg) =
        k3s_config::resolve(&unit, &inner.root(&call.vm), table).map_err(|e| fatal(&e))?;
    if cfg.get("cluster-reset-restore-path").is_some() && !cfg.bool("cluster-reset") {
        return Err(fatal(
            "Error: invalid flag use; --cluster-reset required with --cluster-reset-restore-path",
        ));
    }
    if cfg.get("server").is_some() {
        return Err(fatal(
            "Error: cannot perform cluster-reset while server URL is set - remove server from configuration before resetting",
        ));
    }
    Ok(cfg)
}

/// The text of the snapshot a restore reads, from S3 when `etcd-s3` is on
/// (then `path` is the snapshot's name), else from the VM's files. Its own
/// function because finding the snapshot is one job with its own
/// failures, all before the model changes; the error is the `msg` of
/// k3s's fatal line, and `lines` gets the download's log lines.
fn restore_text(
    inner: &Inner,
    vm: &str,
    cfg: &K3sConfig,
    path: &str,
    now: u64,
    lines: &mut Vec<String>,
) -> Result<String, String> {
    let root = inner.root(vm);
    let Some(s3) = s3_spec(cfg).map_err(|e| format!("Error: {e}"))? else {
        // The world cannot know the caller's working directory: a
        // relative path is read from `/`.
        let abs = format!("/{}", path.trim_start_matches('/'));
        if root.host_path(&abs).is_ok_and(|p| p.is_dir()) {
            return Err(managed_db_error(&format!(
                "etcd: snapshot path must be a file, not a directory: {path}"
            )));
        }
        return root.read(&abs).ok_or_else(|| {
            managed_db_error(&format!("etcd: snapshot path does not exist: {path}"))
        });
    };
    // From S3: the path is the snapshot's name, downloaded into the
    // snapshot directory first (`etcd.go:409-429`).
    lines.push(logline(
        "info",
        &format!("Retrieving etcd snapshot {path} from S3"),
        now,
    ));
    let m = inner.model();
    s3.check(&m.s3)
        .map_err(|e| managed_db_error(&format!("failed to initialize S3 client: {e}")))?;
    let body =
        m.s3.get(&s3.client, path)
            .map_err(|e| managed_db_error(&format!("failed to download snapshot from S3: {e}")))?
            .body
            .clone();
    drop(m);
    let local = format!("{SNAPSHOT_DIR}/{}", path.rsplit('/').next().unwrap_or(path));
    root.write(&local, 0o600, body.as_bytes())
        .map_err(|e| managed_db_error(&format!("failed to download snapshot from S3: {e}")))?;
    lines.push(logline(
        "info",
        &format!("S3 download complete for {local}"),
        now,
    ));
    Ok(body)
}

/// The reset itself on the model
/// ([`crate::world::model::Model::cluster_reset`]) and k3s's output: the
/// `lines` logged so far, then the reset's log and its exit, or its fatal
/// line. Its own function because only here the model changes.
fn reset(
    inner: &Arc<Inner>,
    vm: &str,
    req: &ResetRequest,
    now: u64,
    mut lines: Vec<String>,
) -> Output {
    let mut m = inner.model();
    match m.cluster_reset(vm, req, now) {
        Ok((log, fx)) => {
            inner.settle(m, fx);
            for l in log {
                lines.push(logline("info", &l, now));
            }
            lines.push(logline(
                "error",
                &format!("Shutdown request received: {RESET_DONE:?}"),
                now,
            ));
            Output {
                code: 0,
                stdout: String::new(),
                stderr: lines.concat(),
            }
        }
        Err(e) => {
            drop(m);
            let mut out = fatal(&e);
            out.stderr = format!("{}{}", lines.concat(), out.stderr);
            out
        }
    }
}
