//! The command-line flags k3s defines, per role and per k3s minor: the one
//! place for that fact. Validation refuses a fleet's `serverArgs` /
//! `agentArgs` naming a flag k3s does not define (k3s would exit on it and
//! systemd restart it forever: facts "Read from source", "Unknown flags on
//! the command line (`ExecStart`) make k3s exit"), and the VM world's k3s
//! refuses the same flags from the same table.
//!
//! The tables are data (`flags-*.txt`, beside this file), read from k3s's
//! `pkg/cli/cmds` at the commit each file names. Only one k3s source
//! version could be read when the table was made, so the minors below all
//! stand on that one file: a flag added later in a minor's patch releases
//! is accepted for every patch of it (a live k3s older than the flag would
//! still refuse it); a minor outside [`MINORS`] is refused with "the table
//! needs updating" rather than guessed.

use std::sync::OnceLock;

/// A k3s node's role: which k3s command runs it, and so which flags it
/// takes. The one definition: the fleet's pools (`fleet::Role`) and the VM
/// world's k3s unit (`world::k3s_config::Role`) re-export it, so both sides
/// of the emulator agree on it without the world depending on the fleet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `k3s server` (control plane and etcd).
    Server,
    /// `k3s agent` (worker).
    Agent,
}

impl Role {
    /// The word used in tags, logs, the plan JSON and the world's state.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// How a flag takes its value (urfave/cli's flag types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BoolFlag`: no value (`--flag` or `--flag=false`).
    Bool,
    /// String, int, duration: one value, the last one given wins.
    Value,
    /// `StringSliceFlag`: repeatable, values accumulate.
    List,
}

/// One flag of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    pub server: bool,
    pub agent: bool,
    /// One-letter aliases (`-t` for `--token`).
    pub aliases: Vec<&'static str>,
}

impl Flag {
    pub fn has_role(&self, role: Role) -> bool {
        match role {
            Role::Server => self.server,
            Role::Agent => self.agent,
        }
    }
}

/// The flags of one k3s source version.
#[derive(Debug)]
pub struct Table {
    /// Where the table was read: the data file's header comment.
    pub source: String,
    pub flags: Vec<Flag>,
}

/// The data files, by the k3s commit they were read at.
const DATA_1FEB5AE: &str = include_str!("flags-1feb5ae.txt");

/// The k3s minors (`major`, `minor`) the tables cover, each with its data
/// file: the lines this project's fleets, examples and tests run (v1.30 to
/// v1.33). All four stand on the one source version that could be read
/// (see the module comment).
pub const MINORS: &[((u32, u32), &str)] = &[
    ((1, 30), DATA_1FEB5AE),
    ((1, 31), DATA_1FEB5AE),
    ((1, 32), DATA_1FEB5AE),
    ((1, 33), DATA_1FEB5AE),
];

fn parse_table(data: &'static str) -> Table {
    let source = data
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join(" ");
    let flags = data
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let name = cols.next()?;
            let kind = match cols.next()? {
                "bool" => Kind::Bool,
                "list" => Kind::List,
                _ => Kind::Value,
            };
            let roles = cols.next()?;
            Some(Flag {
                name,
                kind,
                server: roles.split(',').any(|r| r == "s"),
                agent: roles.split(',').any(|r| r == "a" || r == "~"),
                aliases: cols.collect(),
            })
        })
        .collect();
    Table { source, flags }
}

/// The parsed table of a data file (parsed once; the data is compiled in).
fn table_of(data: &'static str) -> &'static Table {
    static TABLES: OnceLock<Vec<(usize, Table)>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let mut seen: Vec<(usize, Table)> = Vec::new();
        for (_, d) in MINORS {
            let key = d.as_ptr() as usize;
            if !seen.iter().any(|(k, _)| *k == key) {
                seen.push((key, parse_table(d)));
            }
        }
        seen
    });
    let key = data.as_ptr() as usize;
    tables
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, t)| t)
        .unwrap_or_else(|| &tables[0].1)
}

/// The minors covered, as `v1.30, v1.31, …` for messages.
pub fn covered() -> String {
    MINORS
        .iter()
        .map(|((a, b), _)| format!("v{a}.{b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table of a k3s minor; `Err` says the table needs updating.
pub fn for_minor(major: u32, minor: u32) -> Result<&'static Table, String> {
    MINORS
        .iter()
        .find(|(m, _)| *m == (major, minor))
        .map(|(_, d)| table_of(d))
        .ok_or_else(|| {
            format!(
                "exedev-k8s's table of k3s flags does not cover v{major}.{minor} (it covers {}): the table needs updating",
                covered()
            )
        })
}

/// Every table, for a fleet that follows a named channel (its minor is not
/// known before the channel is asked).
pub fn all() -> Vec<&'static Table> {
    let mut out: Vec<&'static Table> = Vec::new();
    for (_, d) in MINORS {
        let t = table_of(d);
        if !out.iter().any(|o| std::ptr::eq(*o, t)) {
            out.push(t);
        }
    }
    out
}

impl Table {
    /// The flag `name` (long name or one-letter alias) for `role`.
    pub fn lookup(&self, role: Role, name: &str) -> Option<&Flag> {
        self.flags
            .iter()
            .find(|f| f.has_role(role) && (f.name == name || f.aliases.contains(&name)))
    }

    /// The defined flag nearest to `name` for `role` (edit distance, at
    /// most a third of the name's length, at least 2), for the hint.
    pub fn nearest(&self, role: Role, name: &str) -> Option<&'static str> {
        let limit = (name.len() / 3).max(2);
        self.flags
            .iter()
            .filter(|f| f.has_role(role))
            .map(|f| (distance(name, f.name), f.name))
            .filter(|(d, _)| *d <= limit)
            .min()
            .map(|(_, n)| n)
    }

    /// The names of every flag of a kind for `role`.
    pub fn names_of(&self, kind: Kind) -> impl Iterator<Item = &'static str> + '_ {
        self.flags
            .iter()
            .filter(move |f| f.kind == kind)
            .map(|f| f.name)
    }
}

/// Why a flag given to k3s would make it exit: the problem and the hint.
pub fn check_flag(
    tables: &[&Table],
    role: Role,
    flag: &str,
    has_value: bool,
) -> Result<(), (String, String)> {
    let found: Vec<&Flag> = tables.iter().filter_map(|t| t.lookup(role, flag)).collect();
    let Some(f) = found.first() else {
        let other = match role {
            Role::Server => Role::Agent,
            Role::Agent => Role::Server,
        };
        let message = format!("--{flag} is not a flag of k3s {}", role.as_str());
        let hint = if tables.iter().any(|t| t.lookup(other, flag).is_some()) {
            format!(
                "--{flag} is a k3s {} flag: move it to {}",
                other.as_str(),
                match other {
                    Role::Server => "serverArgs",
                    Role::Agent => "agentArgs",
                }
            )
        } else if let Some(n) = tables.iter().find_map(|t| t.nearest(role, flag)) {
            format!("did you mean --{n}? (k3s exits on a flag it does not define)")
        } else {
            format!(
                "see `k3s {} --help` for the flags it defines (k3s exits on any other)",
                role.as_str()
            )
        };
        return Err((message, hint));
    };
    if f.kind != Kind::Bool && !has_value {
        return Err((
            format!("--{flag} needs a value"),
            format!("write --{flag}=VALUE as one item"),
        ));
    }
    Ok(())
}

/// Levenshtein distance over bytes (flag and snapshot names are ASCII),
/// for "did you mean" hints.
pub fn distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> &'static Table {
        for_minor(1, 31).unwrap()
    }

    #[test]
    fn the_table_names_its_source_commit_and_knows_both_roles() {
        let t = t();
        assert!(
            t.source
                .contains("1feb5aeeda0a37ce9904fba85893c3f085015af2")
        );
        assert!(t.flags.len() > 100, "{}", t.flags.len());
        assert_eq!(
            t.lookup(Role::Server, "cluster-init").unwrap().kind,
            Kind::Bool
        );
        assert!(t.lookup(Role::Agent, "cluster-init").is_none());
        assert_eq!(t.lookup(Role::Agent, "t").unwrap().name, "token");
        assert_eq!(t.lookup(Role::Server, "i").unwrap().name, "node-ip");
        assert_eq!(
            t.lookup(Role::Agent, "node-label").unwrap().kind,
            Kind::List
        );
        // Every flag the project's own config.yaml writes exists for its role.
        for f in [
            "token",
            "node-name",
            "flannel-iface",
            "server",
            "node-label",
            "node-taint",
            "node-ip",
        ] {
            assert!(t.lookup(Role::Agent, f).is_some(), "{f}");
        }
        for f in [
            "agent-token",
            "cluster-init",
            "write-kubeconfig-mode",
            "tls-san",
            "advertise-address",
            "disable",
        ] {
            assert!(t.lookup(Role::Server, f).is_some(), "{f}");
        }
    }

    #[test]
    fn unknown_minors_say_the_table_needs_updating() {
        let e = for_minor(1, 99).unwrap_err();
        assert!(e.contains("v1.99") && e.contains("needs updating"), "{e}");
        assert!(for_minor(1, 30).is_ok() && for_minor(1, 33).is_ok());
    }

    #[test]
    fn typos_name_the_nearest_flag_and_misplaced_flags_the_other_role() {
        let (m, h) =
            check_flag(&[t()], Role::Server, "etcd-snapshot-schedule-crn", true).unwrap_err();
        assert!(
            m.contains("--etcd-snapshot-schedule-crn is not a flag of k3s server"),
            "{m}"
        );
        assert!(h.contains("--etcd-snapshot-schedule-cron"), "{h}");
        let (_, h) = check_flag(&[t()], Role::Agent, "cluster-init", false).unwrap_err();
        assert!(h.contains("server flag") && h.contains("serverArgs"), "{h}");
        let (_, h) = check_flag(&[t()], Role::Agent, "zzzz-qqqq", true).unwrap_err();
        assert!(h.contains("k3s agent --help"), "{h}");
        let (m, _) = check_flag(&[t()], Role::Server, "etcd-snapshot-dir", false).unwrap_err();
        assert!(m.contains("needs a value"), "{m}");
        assert!(check_flag(&[t()], Role::Server, "etcd-s3", false).is_ok());
        assert!(check_flag(&[t()], Role::Agent, "kubelet-arg", true).is_ok());
    }

    #[test]
    fn distance_is_levenshtein() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("tls-san", "tls-san"), 0);
    }
}
