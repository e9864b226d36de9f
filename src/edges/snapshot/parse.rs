//! Pure: the `k3s etcd-snapshot` commands this tool runs, k3s's `ls`
//! output read back, a listing merged across servers and rendered.
//!
//! k3s's `ls` (docs/facts/disaster-recovery.md section 3, from
//! `pkg/cli/etcdsnapshot/etcd_snapshot.go:210-267` @ 1feb5ae): a tabwriter
//! table, header `Name Location Size Created`, one row per snapshot:
//! Location `file://<path>` (a snapshot on the node that ran the command)
//! or `s3://<bucket>/<key>`, Size in bytes, Created RFC 3339. Names and
//! locations hold no spaces (names are `<name>-<node>-<unix seconds>`,
//! `snapshot.go:260`), so a row is four whitespace-separated words. The
//! table is the format every release prints (`-o json` is newer), so it is
//! the one read here. The output is the VM's, so untrusted: every field is
//! checked and shown escaped.

/// Where a snapshot is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// In the fleet's S3 bucket (every server sees it).
    S3,
    /// On one server's disk.
    Local(String),
}

impl Place {
    /// `s3`, or `local (prod-cp1)`.
    pub fn shown(&self) -> String {
        match self {
            Place::S3 => "s3".to_string(),
            Place::Local(node) => format!("local ({node})"),
        }
    }
}

/// One snapshot as k3s lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    /// RFC 3339, as k3s prints it.
    pub created: String,
    /// Bytes.
    pub size: u64,
    pub place: Place,
    /// `file://...` or `s3://...`, as k3s prints it.
    pub location: String,
}

/// The longest snapshot name accepted on a command line: a name is a file
/// name on the servers and an S3 key's last part.
pub const MAX_NAME: usize = 200;

/// A snapshot name (`--name` of `save`, or a name to delete) as this tool
/// passes it to k3s: letters, digits, `.`, `_`, `-`, not starting with `-`
/// or `.` (never read as a flag, never a hidden file or `..`). k3s's own
/// names are of this form (`<name>-<node>-<unix seconds>`).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters"));
    }
    if name.starts_with(['-', '.']) {
        return Err("must not start with '-' or '.'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; snapshot names are letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// `k3s etcd-snapshot ...` as root (the command reads the 0600 token and
/// config.yaml, facts section 3), without a password prompt.
fn k3s(words: &[&str]) -> Vec<String> {
    ["sudo", "-n", "k3s", "etcd-snapshot"]
        .iter()
        .chain(words)
        .map(|w| w.to_string())
        .collect()
}

/// Lists this server's local snapshots and, with S3 configured, the
/// bucket's.
pub fn ls_command() -> Vec<String> {
    k3s(&["ls"])
}

/// Saves a snapshot now; `name` (checked) is k3s's `--name` prefix
/// (default `on-demand`).
pub fn save_command(name: Option<&str>) -> Vec<String> {
    match name {
        Some(n) => k3s(&["save", "--name", n]),
        None => k3s(&["save"]),
    }
}

/// Deletes snapshots by name from this server's disk and, with S3
/// configured, from the bucket.
pub fn delete_command(names: &[&str]) -> Vec<String> {
    let mut words = vec!["delete"];
    words.extend(names);
    k3s(&words)
}

/// Reads `k3s etcd-snapshot ls` as run on `node`. Log lines k3s may print
/// around the table (logrus `time="..." level=...`) are skipped; a row
/// that does not read is an error naming it.
pub fn parse_ls(text: &str, node: &str) -> Result<Vec<Snapshot>, String> {
    let mut out = Vec::new();
    let mut header = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || line.starts_with("time=") {
            continue;
        }
        if words == ["Name", "Location", "Size", "Created"] {
            header = true;
            continue;
        }
        if !header {
            continue;
        }
        let row = || crate::base::text::one_line(line).into_owned();
        let [name, location, size, created] = words[..] else {
            return Err(format!("a row of {node}'s list does not read: {}", row()));
        };
        check_name(name).map_err(|e| format!("snapshot name in {node}'s list {e}: {}", row()))?;
        let size = size
            .parse::<u64>()
            .map_err(|_| format!("size {size:?} in {node}'s list is not a number"))?;
        let place = if location.starts_with("s3://") {
            Place::S3
        } else if location.starts_with("file://") {
            Place::Local(node.to_string())
        } else {
            return Err(format!(
                "location in {node}'s list is neither file:// nor s3://: {}",
                row()
            ));
        };
        out.push(Snapshot {
            name: name.to_string(),
            created: crate::base::text::one_line(created).into_owned(),
            size,
            place,
            location: crate::base::text::one_line(location).into_owned(),
        });
    }
    if !header && !text.trim().is_empty() && out.is_empty() {
        // k3s printed no table: not its `ls`.
        let first = text.lines().next().unwrap_or("");
        return Err(format!(
            "{node}'s answer is not k3s's snapshot list: {}",
            crate::base::text::one_line(first)
        ));
    }
    Ok(out)
}

/// Lists from several servers as one: each S3 snapshot once (every server
/// lists the bucket), each local one with its node; oldest first, then by
/// name, then place.
pub fn merge(lists: Vec<Vec<Snapshot>>) -> Vec<Snapshot> {
    let mut all: Vec<Snapshot> = Vec::new();
    for s in lists.into_iter().flatten() {
        if !all.iter().any(|a| a.name == s.name && a.place == s.place) {
            all.push(s);
        }
    }
    all.sort_by(|a, b| (&a.created, &a.name, &a.place).cmp(&(&b.created, &b.name, &b.place)));
    all
}

/// The snapshots in `after` that `before` did not hold: what a `save` made.
pub fn new_since(before: &[Snapshot], after: &[Snapshot]) -> Vec<Snapshot> {
    after
        .iter()
        .filter(|s| {
            !before
                .iter()
                .any(|b| b.name == s.name && b.place == s.place)
        })
        .cloned()
        .collect()
}

/// The table `snapshot list` prints: name, created, size, where.
pub fn render_table(snapshots: &[Snapshot]) -> String {
    let rows: Vec<[String; 4]> = snapshots
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.created.clone(),
                s.size.to_string(),
                s.place.shown(),
            ]
        })
        .collect();
    let head = ["NAME", "CREATED", "SIZE", "WHERE"].map(str::to_string);
    let mut width = [0usize; 4];
    for r in std::iter::once(&head).chain(&rows) {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `snapshot list --json`: an array of `{name, created, size, where,
/// node, location}`, `node` null for S3.
pub fn render_json(snapshots: &[Snapshot]) -> String {
    let items: Vec<serde_json::Value> = snapshots
        .iter()
        .map(|s| {
            let (place, node) = match &s.place {
                Place::S3 => ("s3", None),
                Place::Local(n) => ("local", Some(n.as_str())),
            };
            serde_json::json!({
                "name": s.name,
                "created": s.created,
                "size": s.size,
                "where": place,
                "node": node,
                "location": s.location,
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// k3s's `ls` as section 3 of the facts shows it (tabwriter, padding 1),
    /// with a log line before it.
    const LS: &str = "time=\"2026-12-07T10:13:21Z\" level=info msg=\"Managed etcd cluster initializing\"
Name                                Location                                                                            Size    Created
on-demand-prod-cp1-1765100000       file:///var/lib/rancher/k3s/server/db/snapshots/on-demand-prod-cp1-1765100000       2097184 2025-12-07T10:13:20Z
on-demand-prod-cp1-1765100000       s3://prod-k3s-snapshots/prod/on-demand-prod-cp1-1765100000                          2097184 2025-12-07T10:13:20Z
etcd-snapshot-prod-cp1-1765080000   file:///var/lib/rancher/k3s/server/db/snapshots/etcd-snapshot-prod-cp1-1765080000   1048608 2025-12-07T04:00:00Z
";

    #[test]
    fn k3s_ls_reads_into_places() {
        let got = parse_ls(LS, "prod-cp1").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name, "on-demand-prod-cp1-1765100000");
        assert_eq!(got[0].place, Place::Local("prod-cp1".into()));
        assert_eq!(got[0].size, 2_097_184);
        assert_eq!(got[0].created, "2025-12-07T10:13:20Z");
        assert_eq!(got[1].place, Place::S3);
        assert!(got[1].location.starts_with("s3://prod-k3s-snapshots/prod/"));
        assert_eq!(parse_ls("", "prod-cp1").unwrap(), []);
        assert_eq!(
            parse_ls("Name Location Size Created\n", "prod-cp1").unwrap(),
            []
        );
    }

    #[test]
    fn what_is_not_k3s_ls_is_refused_by_row() {
        for (text, says) in [
            ("Name Location Size Created\nx file:///x\n", "does not read"),
            (
                "Name Location Size Created\nx file:///x big 2025\n",
                "\"big\"",
            ),
            ("Name Location Size Created\nx ftp://x 1 2025\n", "neither"),
            (
                "Name Location Size Created\n-rf file:///x 1 2025\n",
                "must not start",
            ),
            ("bash: k3s: command not found\n", "not k3s's snapshot list"),
        ] {
            let e = parse_ls(text, "prod-cp2").expect_err(text);
            assert!(e.contains(says) && e.contains("prod-cp2"), "{e}");
        }
    }

    #[test]
    fn names_reach_k3s_only_as_names() {
        for ok in [
            "on-demand",
            "before-upgrade.1",
            "etcd-snapshot-prod-cp1-1765080000",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-rf",
            ".hidden",
            "a b",
            "a/b",
            "a;b",
            "x\n",
            &"a".repeat(201),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            save_command(Some("pre")),
            [
                "sudo",
                "-n",
                "k3s",
                "etcd-snapshot",
                "save",
                "--name",
                "pre"
            ]
        );
        assert_eq!(
            delete_command(&["a", "b"]),
            ["sudo", "-n", "k3s", "etcd-snapshot", "delete", "a", "b"]
        );
    }

    #[test]
    fn lists_merge_s3_once_and_locals_per_node() {
        let cp1 = parse_ls(LS, "prod-cp1").unwrap();
        let cp2 = parse_ls(
            &LS.replace("file:///var", "s3://b/prod/x")
                .replace("prod-cp1", "prod-cp2"),
            "prod-cp2",
        )
        .unwrap();
        let again = parse_ls(LS, "prod-cp1").unwrap();
        let all = merge(vec![cp1.clone(), cp2, again]);
        assert_eq!(all.len(), 5, "{all:#?}");
        assert_eq!(all[0].name, "etcd-snapshot-prod-cp1-1765080000");
        let before = &cp1[2..];
        let made = new_since(before, &cp1);
        assert_eq!(made.len(), 2);
    }

    #[test]
    fn table_and_json() {
        let all = merge(vec![parse_ls(LS, "prod-cp1").unwrap()]);
        insta::assert_snapshot!(render_table(&all), @r"
        NAME                               CREATED                  SIZE  WHERE
        etcd-snapshot-prod-cp1-1765080000  2025-12-07T04:00:00Z  1048608  local (prod-cp1)
        on-demand-prod-cp1-1765100000      2025-12-07T10:13:20Z  2097184  s3
        on-demand-prod-cp1-1765100000      2025-12-07T10:13:20Z  2097184  local (prod-cp1)
        ");
        insta::assert_snapshot!(render_json(&all[1..]), @r#"
        [
          {
            "name": "on-demand-prod-cp1-1765100000",
            "created": "2025-12-07T10:13:20Z",
            "size": 2097184,
            "where": "s3",
            "node": null,
            "location": "s3://prod-k3s-snapshots/prod/on-demand-prod-cp1-1765100000"
          },
          {
            "name": "on-demand-prod-cp1-1765100000",
            "created": "2025-12-07T10:13:20Z",
            "size": 2097184,
            "where": "local",
            "node": "prod-cp1",
            "location": "file:///var/lib/rancher/k3s/server/db/snapshots/on-demand-prod-cp1-1765100000"
          }
        ]
        "#);
    }
}
