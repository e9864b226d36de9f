//! Pure: k3s's etcd snapshot list, read once for every command that needs
//! it (`snapshot list|save|delete` through `edges::snapshot`, `restore`
//! and the drill through `core::restore` and `engine::restore`), the
//! `k3s etcd-snapshot` commands this tool runs, lists merged across
//! servers and rendered.
//!
//! One listing, one reader: `k3s etcd-snapshot ls -o json`. Why JSON and
//! not the table (`Name Location Size Created`):
//! - `-o json|yaml` exists in every release the fleet installs: it came
//!   with k3s PR #5132 (2022-02, "add ability to specify etcd snapshot list
//!   output format", backports #5178/#5179/#5181), long before v1.30, the
//!   oldest minor `base::k3s_flags::MINORS` covers.
//! - Only the JSON carries the token hash (`metadata.annotations`
//!   `etcd.k3s.cattle.io/snapshot-token-hash`, on S3 entries; a local entry
//!   is read from disk and has none, `pkg/etcd/snapshot.go:401-450`), which
//!   `restore` compares before anything stops, and `status.readyToUse`.
//! - Its shape, an `ETCDSnapshotFileList` (`k3s.cattle.io/v1`
//!   `ETCDSnapshotFile` items, `pkg/etcd/snapshot/types.go:183-250`,
//!   printed by `pkg/cli/etcdsnapshot/etcd_snapshot.go:243-249` @ 1feb5ae),
//!   dates from k3s PR #9816 ("Move etcd snapshot management CLI to
//!   request/response", 2024-03/04); k3s issue #10513 shows v1.30.2 (and the
//!   1.27-1.29 backports) already on that path. Whether v1.30.0 and v1.30.1
//!   print it is not in the sources read here: before #9816 `-o json`
//!   printed the CLI's own map of snapshot files (k3s-io/k3s
//!   `pkg/cli/etcdsnapshot/etcd_snapshot.go` of that time: `Encode(sf)`),
//!   which this reader refuses as "no `items` list" rather than guesses.
//!   The table is no safer there: those releases printed `Name Size
//!   Created` without a Location column when S3 was set.
//!
//! The output comes from a VM, so it is untrusted: names are checked
//! ([`check_name`]; they go into remote commands) and everything shown is
//! escaped by the renderers' callers.

use serde::Serialize;

/// Where k3s keeps local snapshots under its data directory
/// (`${data-dir}/server/db/snapshots`, the default `etcd-snapshot-dir`,
/// `pkg/etcd/snapshot.go` `snapshotDir`).
pub const LOCAL_SNAPSHOT_DIR: &str = "/var/lib/rancher/k3s/server/db/snapshots";

/// `snapshot.AnnotationTokenHash` (`pkg/etcd/snapshot/types.go:40`).
pub const TOKEN_HASH_ANNOTATION: &str = "etcd.k3s.cattle.io/snapshot-token-hash";

/// The node name k3s gives S3 entries in its list (`spec.nodeName` of a
/// listed S3 object is its uploader, the storage label says `s3`,
/// `snapshot/types.go:160-176`); this tool keeps `s3` as the node of
/// every S3 copy.
pub const S3_NODE: &str = "s3";

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

/// One snapshot as `k3s etcd-snapshot ls -o json` lists it (an
/// `ETCDSnapshotFile`, `pkg/etcd/snapshot/types.go:183-250`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub name: String,
    /// [`S3_NODE`] for a snapshot in S3, else the node whose disk holds it
    /// (k3s's node name, which the fleet's config.yaml sets to the VM's
    /// name: `templates/config.yaml.tera` `node-name`).
    pub node: String,
    /// `file:///…` for a local snapshot, `s3://bucket/…` for S3.
    pub location: String,
    pub size: u64,
    /// RFC 3339, as k3s prints it.
    pub created: String,
    /// The first 12 hex digits of SHA-256 of the token it was taken with.
    #[serde(skip)]
    pub token_hash: Option<String>,
    /// False for a snapshot k3s recorded as failed.
    pub ready: bool,
}

impl Snapshot {
    pub fn in_s3(&self) -> bool {
        self.node == S3_NODE
    }

    /// S3, or the node's disk.
    pub fn place(&self) -> Place {
        if self.in_s3() {
            Place::S3
        } else {
            Place::Local(self.node.clone())
        }
    }

    /// What `--cluster-reset-restore-path` takes: the name alone for S3
    /// (downloaded into the snapshot directory first), the file's path for
    /// a local snapshot (`etcd.go:409-437`).
    pub fn restore_path(&self) -> String {
        match self.location.strip_prefix("file://") {
            Some(path) if !self.in_s3() => path.to_string(),
            _ if self.in_s3() => self.name.clone(),
            _ => format!("{LOCAL_SNAPSHOT_DIR}/{}", self.name),
        }
    }
}

/// Why `k3s etcd-snapshot ls -o json`'s output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read k3s's snapshot list: {0}")]
pub struct ListingError(String);

/// The longest snapshot name accepted: a name is a file name on the
/// servers (255 bytes on ext4) and an S3 key's last part.
pub const MAX_NAME: usize = 253;

/// A snapshot name (`--name` of `save`, a name to delete or restore, a
/// name k3s lists) as this tool passes it to k3s: letters, digits, `.`,
/// `_`, `-`, not starting with `-` or `.` (never read as a flag, never a
/// hidden file or `..`). k3s's own names are of this form
/// (`<name>-<node>-<unix seconds>`, `pkg/etcd/snapshot.go:260`).
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

/// [`check_name`] as a yes/no.
pub fn is_snapshot_name(s: &str) -> bool {
    check_name(s).is_ok()
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
/// bucket's, as the JSON [`parse_listing`] reads.
pub fn ls_command() -> Vec<String> {
    k3s(&["ls", "-o", "json"])
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

/// Reads `k3s etcd-snapshot ls -o json` (an `ETCDSnapshotFileList`,
/// `pkg/cli/etcdsnapshot/etcd_snapshot.go:243-249`). Lines before the
/// JSON (logrus `time="..."` lines, should a wrapper merge stderr) are
/// skipped. Names are kept only when [`check_name`] accepts them: a name
/// goes into a remote command. A local entry must name its node (it says
/// which server's disk holds it, where `delete` and `restore` run).
pub fn parse_listing(text: &str) -> Result<Vec<Snapshot>, ListingError> {
    let json = text
        .find("\n{")
        .map(|i| &text[i + 1..])
        .filter(|_| !text.trim_start().starts_with('{'))
        .unwrap_or(text);
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| ListingError(format!("not JSON ({e})")))?;
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| ListingError("no `items` list".to_string()))?;
    items.iter().map(read_item).collect()
}

/// One `ETCDSnapshotFile` of the list.
fn read_item(item: &serde_json::Value) -> Result<Snapshot, ListingError> {
    let spec = item.get("spec").unwrap_or(&serde_json::Value::Null);
    let status = item.get("status").unwrap_or(&serde_json::Value::Null);
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let name = text(spec, "snapshotName");
    check_name(&name).map_err(|why| {
        ListingError(format!(
            "a snapshot name {:?} is not one k3s makes: it {why}",
            crate::base::text::one_line(&name)
        ))
    })?;
    // k3s marks an S3 copy three ways (`spec.s3`, node name `s3`, an
    // `s3://` location: `snapshot/types.go:160-176,200-250`).
    let location = text(spec, "location");
    let in_s3 = spec.get("s3").is_some_and(|s| !s.is_null())
        || text(spec, "nodeName") == S3_NODE
        || location.starts_with("s3://");
    let node = if in_s3 {
        S3_NODE.to_string()
    } else {
        let node = text(spec, "nodeName");
        if !location.starts_with("file://") {
            return Err(ListingError(format!(
                "snapshot {name}'s location is neither file:// nor s3://: {}",
                crate::base::text::one_line(&location)
            )));
        }
        if check_name(&node).is_err() {
            return Err(ListingError(format!(
                "local snapshot {name} names no node k3s could run as: {:?}",
                crate::base::text::one_line(&node)
            )));
        }
        node
    };
    // A Quantity: a number or a string of digits (DecimalSI).
    let size = match status.get("size") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        None | Some(serde_json::Value::Null) => Some(0),
        _ => None,
    }
    .ok_or_else(|| ListingError(format!("snapshot {name}'s size is not a number")))?;
    let token_hash = item
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(TOKEN_HASH_ANNOTATION))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .map(|h| crate::base::text::one_line(h).into_owned());
    Ok(Snapshot {
        name,
        node,
        location: crate::base::text::one_line(&location).into_owned(),
        size,
        created: crate::base::text::one_line(&text(status, "creationTime")).into_owned(),
        token_hash,
        // Absent on releases without the field: not known to have failed.
        ready: status
            .get("readyToUse")
            .and_then(|r| r.as_bool())
            .unwrap_or(true),
    })
}

/// k3s's token hash (`util.GetTokenHash`: SHA-256 of the normalised token,
/// its first 12 hex digits, `pkg/util/token.go:58-77`). A full token
/// `K10<ca-hash>::<user>:<password>` normalises to its password
/// (`token.go:40-55`); a plain one is itself.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let normalised = match token.split_once("::") {
        Some((prefix, creds)) if prefix.starts_with("K10") => creds
            .split_once(':')
            .map_or(creds, |(_, password)| password),
        _ => token,
    };
    Sha256::digest(normalised.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lists from several servers as one: each S3 snapshot once (every server
/// lists the bucket), each local one with its node; oldest first, then by
/// name, then place.
pub fn merge(lists: Vec<Vec<Snapshot>>) -> Vec<Snapshot> {
    let mut all: Vec<Snapshot> = Vec::new();
    for s in lists.into_iter().flatten() {
        if !all.iter().any(|a| a.name == s.name && a.node == s.node) {
            all.push(s);
        }
    }
    all.sort_by(|a, b| (&a.created, &a.name, a.place()).cmp(&(&b.created, &b.name, b.place())));
    all
}

/// The snapshots in `after` that `before` did not hold: what a `save` made.
pub fn new_since(before: &[Snapshot], after: &[Snapshot]) -> Vec<Snapshot> {
    after
        .iter()
        .filter(|s| !before.iter().any(|b| b.name == s.name && b.node == s.node))
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
                s.place().shown(),
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
            let (place, node) = match s.place() {
                Place::S3 => ("s3", None),
                Place::Local(n) => ("local", Some(n)),
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

    /// One `ETCDSnapshotFile` as k3s prints it in `ls -o json`.
    fn item(name: &str, node: &str, location: &str, size: &str, created: &str) -> String {
        let s3 = if location.starts_with("s3://") {
            r#","s3":{"endpoint":"s3.emulator.internal","bucket":"prod-k3s-snapshots","prefix":"prod"}"#
        } else {
            ""
        };
        format!(
            r#"{{"apiVersion":"k3s.cattle.io/v1","kind":"ETCDSnapshotFile","metadata":{{"name":"x"}},"spec":{{"snapshotName":"{name}","nodeName":"{node}","location":"{location}"{s3}}},"status":{{"creationTime":"{created}","readyToUse":true,"size":"{size}"}}}}"#
        )
    }

    fn list(items: &[String]) -> String {
        format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{}],"metadata":{{"resourceVersion":""}}}}"#,
            items.join(",")
        )
    }

    /// prod-cp1's list: a local on-demand snapshot, its S3 copy, an older
    /// scheduled one.
    fn cp1() -> String {
        list(&[
            item(
                "on-demand-prod-cp1-1765100000",
                "prod-cp1",
                "file:///var/lib/rancher/k3s/server/db/snapshots/on-demand-prod-cp1-1765100000",
                "2097184",
                "2025-12-07T10:13:20Z",
            ),
            item(
                "on-demand-prod-cp1-1765100000",
                "prod-cp1",
                "s3://prod-k3s-snapshots/prod/on-demand-prod-cp1-1765100000",
                "2097184",
                "2025-12-07T10:13:20Z",
            ),
            item(
                "etcd-snapshot-prod-cp1-1765080000",
                "prod-cp1",
                "file:///var/lib/rancher/k3s/server/db/snapshots/etcd-snapshot-prod-cp1-1765080000",
                "1048608",
                "2025-12-07T04:00:00Z",
            ),
        ])
    }

    #[test]
    fn k3s_list_reads_into_places() {
        let got = parse_listing(&cp1()).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name, "on-demand-prod-cp1-1765100000");
        assert_eq!(got[0].place(), Place::Local("prod-cp1".into()));
        assert_eq!(got[0].size, 2_097_184);
        assert_eq!(got[0].created, "2025-12-07T10:13:20Z");
        // The S3 copy's nodeName is its uploader; the place is S3.
        assert_eq!(got[1].place(), Place::S3);
        assert!(got[1].location.starts_with("s3://prod-k3s-snapshots/prod/"));
        assert_eq!(parse_listing(&list(&[])).unwrap(), []);
        // A log line before the JSON does not hide it.
        let logged = format!(
            "time=\"2026-12-07T10:13:21Z\" level=info msg=\"x\"\n{}",
            cp1()
        );
        assert_eq!(parse_listing(&logged).unwrap(), got);
    }

    /// k3s's own form of the list, names that would not be safe in a
    /// command refused, the token hash and failure flag kept.
    #[test]
    fn the_listing_is_read_as_k3s_prints_it() {
        let json = r#"{"apiVersion":"v1","items":[
          {"metadata":{"name":"s3-etcd-snapshot-x","annotations":{"etcd.k3s.cattle.io/snapshot-token-hash":"abc123def456"}},
           "spec":{"snapshotName":"etcd-snapshot-demo-cp1-1765108800","nodeName":"s3","location":"s3://b/f/etcd-snapshot-demo-cp1-1765108800","s3":{"endpoint":"s3.emulator.internal","bucket":"b"}},
           "status":{"creationTime":"2026-12-07T12:00:00Z","readyToUse":true,"size":"4096"}},
          {"metadata":{"name":"local-x"},
           "spec":{"snapshotName":"nightly","nodeName":"demo-cp1","location":"file:///var/lib/rancher/k3s/server/db/snapshots/nightly"},
           "status":{"creationTime":"2026-12-07T11:00:00Z","readyToUse":false,"size":2048}}],"kind":"List"}"#;
        let l = parse_listing(json).unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].in_s3());
        assert_eq!(l[0].token_hash.as_deref(), Some("abc123def456"));
        assert_eq!(l[0].size, 4096);
        assert_eq!(l[0].restore_path(), "etcd-snapshot-demo-cp1-1765108800");
        assert_eq!(l[1].place(), Place::Local("demo-cp1".into()));
        assert_eq!(l[1].restore_path(), format!("{LOCAL_SNAPSHOT_DIR}/nightly"));
        assert_eq!(l[1].size, 2048);
        assert!(!l[1].ready);
        assert!(l[1].token_hash.is_none());
    }

    #[test]
    fn what_is_not_k3s_list_is_refused_saying_why() {
        let local = |name: &str, node: &str, loc: &str, size: &str| {
            list(&[item(name, node, loc, size, "2025-12-07T04:00:00Z")])
        };
        for (text, says) in [
            ("Name Location Size Created\n".to_string(), "not JSON"),
            ("bash: k3s: command not found\n".to_string(), "not JSON"),
            (
                r#"{"on-demand-x":{"name":"on-demand-x"}}"#.to_string(),
                "no `items`",
            ),
            (
                local("x", "prod-cp2", "file:///x", "big"),
                "size is not a number",
            ),
            (
                local("x", "prod-cp2", "ftp://x", "1"),
                "neither file:// nor s3://",
            ),
            (local("-rf", "prod-cp2", "file:///x", "1"), "must not start"),
            (
                local("x; rm -rf /", "prod-cp2", "file:///x", "1"),
                "contains ';'",
            ),
            (local("x", "", "file:///x", "1"), "names no node"),
            (local("x", "a;b", "file:///x", "1"), "names no node"),
        ] {
            let e = parse_listing(&text).expect_err(&text).to_string();
            assert!(e.contains(says), "{e} (wanted {says})");
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
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
            assert!(!is_snapshot_name(bad), "{bad:?}");
        }
        assert_eq!(
            ls_command(),
            ["sudo", "-n", "k3s", "etcd-snapshot", "ls", "-o", "json"]
        );
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

    /// `util.ShortHash(NormalizeToken(t), 12)`: a full `K10…::server:pw`
    /// token hashes as its password.
    #[test]
    fn token_hash_is_k3s_short_hash_of_the_normalised_token() {
        assert_eq!(token_hash("abc"), "ba7816bf8f01");
        assert_eq!(token_hash("K10deadbeef::server:abc"), "ba7816bf8f01");
    }

    #[test]
    fn lists_merge_s3_once_and_locals_per_node() {
        let cp1 = parse_listing(&cp1()).unwrap();
        let cp2 = parse_listing(
            &self::cp1()
                .replace("file:///var", "s3://b/prod/x")
                .replace("prod-cp1", "prod-cp2"),
        )
        .unwrap();
        let again = parse_listing(&self::cp1()).unwrap();
        let all = merge(vec![cp1.clone(), cp2, again]);
        assert_eq!(all.len(), 5, "{all:#?}");
        assert_eq!(all[0].name, "etcd-snapshot-prod-cp1-1765080000");
        let before = &cp1[2..];
        let made = new_since(before, &cp1);
        assert_eq!(made.len(), 2);
    }

    #[test]
    fn table_and_json() {
        let all = merge(vec![parse_listing(&cp1()).unwrap()]);
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
