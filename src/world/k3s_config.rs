//! What a k3s process would be configured with: the unit file's
//! `ExecStart` (role and arguments), its `EnvironmentFile`s (`K3S_*`),
//! `/etc/rancher/k3s/config.yaml` and the drop-ins in `config.yaml.d/`.
//! Pure: files come in through the `Files` trait.
//!
//! Precedence, from k3s's `pkg/configfilearg` (the facts file only says to
//! prefer config.yaml over installer arguments): config-file keys become
//! command-line flags placed before the unit's own arguments, so a scalar
//! given on the command line wins and list flags accumulate; drop-ins are
//! read in name order after config.yaml, a later key replaces an earlier
//! one and `key+:` appends; `K3S_*` variables fill only flags set nowhere
//! else. Which flags exist, which take no value and which accumulate is
//! `crate::base::k3s_flags`, the table validation uses: a flag k3s does not define
//! on the command line makes k3s exit ("flag provided but not defined", facts
//! "Read from source"), an unknown config-file key is warned about and
//! skipped (`pkg/configfilearg/parser.go:96`, same section).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::base::k3s_flags::{Kind, Table};

/// Default config file; `--config` / `K3S_CONFIG_FILE` move it.
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";

/// List flags whose values k3s also splits on commas.
const COMMA_FLAGS: &[&str] = &[
    "tls-san",
    "disable",
    "node-ip",
    "node-external-ip",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
];

/// `K3S_*` variables and the flags they stand for.
const ENV_FLAGS: &[(&str, &str)] = &[
    ("K3S_TOKEN", "token"),
    ("K3S_TOKEN_FILE", "token-file"),
    ("K3S_URL", "server"),
    ("K3S_AGENT_TOKEN", "agent-token"),
    ("K3S_AGENT_TOKEN_FILE", "agent-token-file"),
    ("K3S_NODE_NAME", "node-name"),
    ("K3S_CLUSTER_INIT", "cluster-init"),
    ("K3S_KUBECONFIG_MODE", "write-kubeconfig-mode"),
    ("K3S_KUBECONFIG_OUTPUT", "write-kubeconfig"),
    ("K3S_DATASTORE_ENDPOINT", "datastore-endpoint"),
    ("K3S_VPN_AUTH", "vpn-auth"),
    ("K3S_VPN_AUTH_FILE", "vpn-auth-file"),
];

/// Read access to the VM's files, as k3s (root) sees them.
pub trait Files {
    /// A file's text, `None` if absent or unreadable.
    fn read(&self, path: &str) -> Option<String>;
    /// The names of the entries of a directory, empty if absent.
    fn list(&self, dir: &str) -> Vec<String>;
}

/// Which k3s the unit runs (the one `Role`, beside the flags each takes).
pub use crate::base::k3s_flags::Role;

/// What a unit file says about how to run k3s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// `ExecStart`, split into words.
    pub exec: Vec<String>,
    /// `EnvironmentFile=` paths (a leading `-` means optional).
    pub env_files: Vec<String>,
    /// `Type=notify`: `systemctl start` returns when the service says it is
    /// ready; otherwise as soon as it runs.
    pub notify: bool,
    /// `Restart=always`: a failed start is retried (and `is-active` says
    /// `activating` in between).
    pub restart_always: bool,
}

/// Parses the `[Service]` lines a k3s unit uses; `\` continues a line.
pub fn parse_unit(text: &str) -> Result<UnitFile, String> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            joined.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        joined.push(cur);
    }
    let mut unit = UnitFile {
        exec: Vec::new(),
        env_files: Vec::new(),
        notify: false,
        restart_always: false,
    };
    for line in joined {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "ExecStart" => {
                unit.exec = crate::base::shellwords::split(v)
                    .map_err(|e| format!("ExecStart is not valid: {e}"))?;
            }
            "EnvironmentFile" => unit.env_files.push(v.to_string()),
            "Type" => unit.notify = v == "notify",
            "Restart" => unit.restart_always = v == "always",
            _ => {}
        }
    }
    if unit.exec.is_empty() {
        return Err("the unit has no ExecStart".to_string());
    }
    Ok(unit)
}

/// Parses a systemd `EnvironmentFile`: `KEY=VALUE` lines, `#` comments,
/// one level of matching quotes stripped.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unq = v
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                .unwrap_or(v);
            (k.trim().to_string(), unq.to_string())
        })
        .collect()
}

/// The effective configuration of one k3s unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K3sConfig {
    /// Every flag that has a value, lists in order.
    pub flags: BTreeMap<String, Vec<String>>,
    /// What k3s warns about while reading its files (unknown keys skipped).
    pub warnings: Vec<String>,
}

impl K3sConfig {
    /// The value of a scalar flag (the last one given).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.flags
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// The values of a list flag.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.flags.get(key).cloned().unwrap_or_default()
    }

    /// A boolean flag (`true` when given without a value).
    pub fn bool(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "yes"))
    }

    fn set(&mut self, key: &str, values: Vec<String>, append: bool, list: bool) {
        let values: Vec<String> = if COMMA_FLAGS.contains(&key) {
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        } else {
            values
        };
        let slot = self.flags.entry(key.to_string()).or_default();
        if append && list {
            slot.extend(values);
        } else {
            *slot = values;
        }
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Applies one config file (config.yaml or a drop-in) on top of `cfg`.
fn apply_config_file(
    cfg: &mut K3sConfig,
    flags: &Flags,
    path: &str,
    text: &str,
) -> Result<(), String> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("{path}: not YAML: {e}"))?;
    let map = match v {
        Value::Object(m) => m,
        Value::Null => return Ok(()),
        _ => return Err(format!("{path}: not a mapping of flags")),
    };
    for (key, value) in map {
        let (key, append) = match key.strip_suffix('+') {
            Some(k) => (k.to_string(), true),
            None => (key, false),
        };
        let Some(kind) = flags.kind(&key) else {
            cfg.warnings.push(format!(
                "Unknown flag {key} found in config.yaml ({path}), skipping"
            ));
            continue;
        };
        let values: Vec<String> = match &value {
            Value::Array(items) => items.iter().filter_map(scalar_string).collect(),
            other => scalar_string(other).into_iter().collect(),
        };
        cfg.set(&key, values, append, kind == Kind::List);
    }
    Ok(())
}

/// The flags of one role in one table, as the world's k3s reads them.
struct Flags<'a> {
    table: &'a Table,
    role: Role,
}

impl Flags<'_> {
    fn kind(&self, name: &str) -> Option<Kind> {
        self.table.lookup(self.role, name).map(|f| f.kind)
    }
    fn long(&self, name: &str) -> Option<&'static str> {
        self.table.lookup(self.role, name).map(|f| f.name)
    }
}

/// Parses k3s command-line arguments (after `server`/`agent`) as urfave/cli
/// does: `-x` and `--x` alike, long names and one-letter aliases, a flag it
/// does not define is an error (k3s exits with it).
fn parse_args(flags: &Flags, args: &[String]) -> Result<Vec<(String, String, bool)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            return Err(format!(
                "unexpected argument {a:?} (k3s takes flags after server/agent)"
            ));
        };
        let (given, inline) = body
            .split_once('=')
            .map_or((body, None), |(n, v)| (n, Some(v.to_string())));
        let (Some(name), Some(kind)) = (flags.long(given), flags.kind(given)) else {
            return Err(format!("flag provided but not defined: -{given}"));
        };
        let value = match (inline, kind) {
            (Some(v), _) => v,
            (None, Kind::Bool) => "true".to_string(),
            (None, _) => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("flag needs an argument: -{given}"))?
            }
        };
        out.push((name.to_string(), value, kind == Kind::List));
        i += 1;
    }
    Ok(out)
}

/// The role and effective configuration of a unit, reading its files
/// (environment files, config.yaml, drop-ins) through `files`.
/// `table` is the k3s flag table of the installed release.
pub fn resolve(
    unit: &UnitFile,
    files: &dyn Files,
    table: &Table,
) -> Result<(Role, K3sConfig), String> {
    let role = match unit.exec.get(1).map(String::as_str) {
        Some("server") => Role::Server,
        Some("agent") => Role::Agent,
        other => {
            return Err(format!(
                "ExecStart runs {:?} {:?}: expected `k3s server` or `k3s agent`",
                unit.exec[0], other
            ));
        }
    };
    let mut env = BTreeMap::new();
    for f in &unit.env_files {
        let (optional, path) = f
            .strip_prefix('-')
            .map_or((false, f.as_str()), |p| (true, p));
        // `%N` is the unit name without suffix: the installer's
        // /etc/default/%N and /etc/sysconfig/%N are optional and unused.
        if path.contains('%') {
            continue;
        }
        match files.read(path) {
            Some(text) => env.extend(parse_env_file(&text)),
            None if optional => {}
            None => return Err(format!("failed to load environment file {path}")),
        }
    }
    let flags = Flags { table, role };
    let cli = parse_args(&flags, &unit.exec[2..])?;
    let config_path = cli
        .iter()
        .rev()
        .find(|(k, _, _)| k == "config")
        .map(|(_, v, _)| v.clone())
        .or_else(|| env.get("K3S_CONFIG_FILE").cloned())
        .unwrap_or_else(|| CONFIG_PATH.to_string());
    let mut cfg = K3sConfig::default();
    if let Some(text) = files.read(&config_path) {
        apply_config_file(&mut cfg, &flags, &config_path, &text)?;
    }
    let dropin_dir = format!("{config_path}.d");
    let mut names: Vec<String> = files
        .list(&dropin_dir)
        .into_iter()
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    for n in names {
        let path = format!("{dropin_dir}/{n}");
        if let Some(text) = files.read(&path) {
            apply_config_file(&mut cfg, &flags, &path, &text)?;
        }
    }
    // Command line: scalars replace, lists accumulate after the file's.
    for (k, v, list) in cli {
        cfg.set(&k, vec![v], true, list);
    }
    for (var, flag) in ENV_FLAGS {
        if let Some(v) = env.get(*var)
            && !cfg.flags.contains_key(*flag)
            && !v.is_empty()
        {
            cfg.set(flag, vec![v.clone()], false, false);
        }
    }
    Ok((role, cfg))
}

/// The settings every server must share ("critical configuration value
/// mismatch" otherwise): k3s's `CriticalControlArgs`
/// (`pkg/daemons/config/types.go`, facts "Read from source"; the field list
/// read at hilmoo/k3s@1feb5ae), by their `cli` names, with k3s's defaults
/// filled in. Not `disable` as a whole (only servicelb, as
/// `disable-service-lb`) and not `agent-token`.
pub fn critical(cfg: &K3sConfig) -> BTreeMap<&'static str, String> {
    let or = |k: &str, d: &str| {
        let v = cfg.list(k);
        if v.is_empty() {
            d.to_string()
        } else {
            v.join(",")
        }
    };
    let flag = |k: &str| cfg.bool(k).to_string();
    let value = |k: &str, d: &str| cfg.get(k).unwrap_or(d).to_string();
    let servicelb = cfg.list("disable").iter().any(|d| d == "servicelb");
    BTreeMap::from([
        ("cluster-cidr", or("cluster-cidr", "10.42.0.0/16")),
        ("service-cidr", or("service-cidr", "10.43.0.0/16")),
        ("cluster-dns", or("cluster-dns", "10.43.0.10")),
        ("cluster-domain", value("cluster-domain", "cluster.local")),
        ("disable-cloud-controller", flag("disable-cloud-controller")),
        ("disable-helm-controller", flag("disable-helm-controller")),
        ("disable-network-policy", flag("disable-network-policy")),
        ("disable-service-lb", servicelb.to_string()),
        ("secrets-encryption", flag("secrets-encryption")),
        (
            "secrets-encryption-provider",
            value("secrets-encryption-provider", "aescbc"),
        ),
        ("embedded-registry", flag("embedded-registry")),
        ("flannel-backend", value("flannel-backend", "vxlan")),
        ("flannel-ipv6-masq", flag("flannel-ipv6-masq")),
        (
            "flannel-ip-masq-disable-random-fully",
            flag("flannel-ip-masq-disable-random-fully"),
        ),
        ("flannel-external-ip", flag("flannel-external-ip")),
        (
            "egress-selector-mode",
            value("egress-selector-mode", "agent"),
        ),
        ("supervisor-metrics", flag("supervisor-metrics")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(BTreeMap<&'static str, &'static str>);

    fn table() -> &'static Table {
        crate::base::k3s_flags::for_minor(1, 31).unwrap()
    }

    impl Files for Mem {
        fn read(&self, path: &str) -> Option<String> {
            self.0.get(path).map(|s| s.to_string())
        }
        fn list(&self, dir: &str) -> Vec<String> {
            self.0
                .keys()
                .filter_map(|p| p.strip_prefix(dir)?.strip_prefix('/'))
                .map(str::to_string)
                .collect()
        }
    }

    const UNIT: &str = "[Unit]\nDescription=Lightweight Kubernetes\n[Service]\nType=notify\nEnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/systemd/system/k3s.service.env\nRestart=always\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--node-label' \\\n\t'cli=1' \\\n\t'--node-name=from-cli' \\\n";

    #[test]
    fn units_parse() {
        let u = parse_unit(UNIT).unwrap();
        assert!(u.notify && u.restart_always);
        assert_eq!(
            u.exec,
            [
                "/usr/local/bin/k3s",
                "server",
                "--node-label",
                "cli=1",
                "--node-name=from-cli"
            ]
        );
        assert_eq!(u.env_files.len(), 2);
        assert!(parse_unit("[Service]\nType=exec\n").is_err());
    }

    #[test]
    fn files_flags_and_env_in_k3s_order() {
        let files = Mem(BTreeMap::from([
            (
                "/etc/rancher/k3s/config.yaml",
                "token: from-file\nnode-label: [a=1]\nnode-name: from-file\ndisable: traefik,servicelb\ncluster-init: true\n",
            ),
            (
                "/etc/rancher/k3s/config.yaml.d/10-extra.yaml",
                "node-label+: [b=2]\ntls-san: [x.ts.net]\n",
            ),
            (
                "/etc/rancher/k3s/config.yaml.d/20-more.yaml",
                "tls-san: [y.ts.net]\n",
            ),
            (
                "/etc/systemd/system/k3s.service.env",
                "K3S_TOKEN='from-env'\nK3S_URL=https://env:6443\n",
            ),
        ]));
        let (role, cfg) = resolve(&parse_unit(UNIT).unwrap(), &files, table()).unwrap();
        assert_eq!(role, Role::Server);
        assert_eq!(
            cfg.get("token"),
            Some("from-file"),
            "the file beats the env"
        );
        assert_eq!(
            cfg.get("server"),
            Some("https://env:6443"),
            "env fills gaps"
        );
        assert_eq!(
            cfg.get("node-name"),
            Some("from-cli"),
            "the command line wins"
        );
        assert_eq!(cfg.list("node-label"), ["a=1", "b=2", "cli=1"]);
        assert_eq!(
            cfg.list("tls-san"),
            ["y.ts.net"],
            "a later drop-in replaces"
        );
        assert_eq!(cfg.list("disable"), ["traefik", "servicelb"]);
        assert!(cfg.bool("cluster-init"));
        let c = critical(&cfg);
        assert_eq!(c["disable-service-lb"], "true");
        assert!(!c.contains_key("disable") && !c.contains_key("agent-token"));
        assert_eq!(c["cluster-cidr"], "10.42.0.0/16");
        assert_eq!(c["egress-selector-mode"], "agent");
    }

    #[test]
    fn bad_inputs_name_the_problem() {
        let files = Mem(BTreeMap::from([(
            "/etc/rancher/k3s/config.yaml",
            "- not\n- a map\n",
        )]));
        let e = resolve(&parse_unit(UNIT).unwrap(), &files, table()).unwrap_err();
        assert!(e.contains("config.yaml"), "{e}");
        let unit = parse_unit("ExecStart=/usr/local/bin/k3s bogus\n").unwrap();
        assert!(resolve(&unit, &Mem(BTreeMap::new()), table()).is_err());
        let unit = parse_unit("ExecStart=/usr/local/bin/k3s agent --token\n").unwrap();
        assert!(resolve(&unit, &Mem(BTreeMap::new()), table()).is_err());
        let unit =
            parse_unit("ExecStart=/usr/local/bin/k3s agent -t tok -s https://a:6443 --debug\n")
                .unwrap();
        let (role, cfg) = resolve(&unit, &Mem(BTreeMap::new()), table()).unwrap();
        assert_eq!(role, Role::Agent);
        assert_eq!(cfg.get("token"), Some("tok"));
        assert!(cfg.bool("debug"));
        assert_eq!(
            parse_env_file("# c\nA=1\nB=\"two words\"\n"),
            [("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
    }

    #[test]
    fn flags_k3s_does_not_define_stop_it_and_config_keys_it_does_not_know_are_skipped() {
        // A typo on the command line: k3s exits (urfave/cli).
        let unit =
            parse_unit("ExecStart=/usr/local/bin/k3s server --etcd-snapshot-schedule-crn=0\n")
                .unwrap();
        let e = resolve(&unit, &Mem(BTreeMap::new()), table()).unwrap_err();
        assert_eq!(
            e,
            "flag provided but not defined: -etcd-snapshot-schedule-crn"
        );
        // A server flag given to an agent is not defined there either.
        let unit = parse_unit("ExecStart=/usr/local/bin/k3s agent --cluster-init\n").unwrap();
        let e = resolve(&unit, &Mem(BTreeMap::new()), table()).unwrap_err();
        assert!(e.contains("-cluster-init"), "{e}");
        // Go's flag syntax: one dash or two, aliases, bools without a value.
        let unit = parse_unit(
            "ExecStart=/usr/local/bin/k3s agent -node-label a=1 --i=100.64.0.9 -t tok --with-node-id\n",
        )
        .unwrap();
        let (_, cfg) = resolve(&unit, &Mem(BTreeMap::new()), table()).unwrap();
        assert_eq!(cfg.list("node-label"), ["a=1"]);
        assert_eq!(cfg.list("node-ip"), ["100.64.0.9"]);
        assert_eq!(cfg.get("token"), Some("tok"));
        assert!(cfg.bool("with-node-id"));
        // In config.yaml an unknown key is a warning, and skipped.
        let files = Mem(BTreeMap::from([(
            "/etc/rancher/k3s/config.yaml",
            "node-lable: [a=1]\ntoken: x\n",
        )]));
        let (_, cfg) = resolve(&parse_unit(UNIT).unwrap(), &files, table()).unwrap();
        assert!(!cfg.flags.contains_key("node-lable"));
        assert_eq!(cfg.list("node-label"), ["cli=1"]);
        assert_eq!(cfg.warnings.len(), 1);
        assert!(
            cfg.warnings[0].contains("Unknown flag node-lable"),
            "{:?}",
            cfg.warnings
        );
    }
}
