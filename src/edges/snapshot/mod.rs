//! `snapshot save|list|delete`: k3s's own `k3s etcd-snapshot` run over SSH
//! on the fleet's servers (SSH goes through exe.dev's proxy, so this works
//! from a machine off the tailnet, as every command does).
//!
//! - save: on the first server SSH reaches (as `kubeconfig` picks one);
//!   what it made is read back from that server's list before and after
//!   (k3s prints its names only as log lines, facts section 3).
//! - list: every server's list (k3s lists only the local snapshots of the
//!   node it runs on, plus the bucket), merged: each S3 snapshot once,
//!   each local one with its node. A server SSH does not reach is named.
//! - delete: every name must be listed somewhere first (none is deleted
//!   otherwise); each is deleted on each server that holds it locally
//!   (k3s deletes the S3 copy too when S3 is configured) or, held only in
//!   S3, on the first server reached.
//!
//! The commands and the reading of k3s's output (`ls -o json`, the one
//! reader `restore` uses too) are in [`crate::core::snapshot`] (pure).

use std::time::Duration;

use crate::base::hint::Hint;
use crate::core::fleet::Fleet;
use crate::edges::ssh::{self, SshError, SshOptions};

use crate::core::snapshot as parse;
pub use crate::core::snapshot::{Place, Snapshot};

/// `vm`'s `ls -o json` read, or why not, naming `vm`.
fn read_list(text: &str, vm: &str) -> Result<Vec<Snapshot>, SnapshotError> {
    parse::parse_listing(text).map_err(|e| SnapshotError::Unreadable(format!("{vm}: {e}")))
}

/// What went wrong, with the server and the command where one ran.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No server answered over SSH.
    #[error("no server of fleet {fleet:?} could be reached over SSH ({tried}): {first}")]
    NoServer {
        fleet: String,
        tried: String,
        first: String,
    },
    /// `k3s etcd-snapshot ...` ran and failed, or SSH failed on a server
    /// that answered before.
    #[error("`{command}` on {vm}: {reason}")]
    Command {
        vm: String,
        command: String,
        reason: String,
        /// k3s's words show S3 refused (bucket, keys, endpoint).
        s3: bool,
    },
    /// A server's answer is not k3s's snapshot list.
    #[error("{0}")]
    Unreadable(String),
    /// A name given is not a snapshot name.
    #[error("snapshot name {name:?} {why}")]
    BadName { name: String, why: String },
    /// Names to delete that no server lists: nothing was deleted.
    #[error("no snapshot named {}: nothing was deleted", .0.join(", "))]
    NotFound(Vec<String>),
}

impl Hint for SnapshotError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            SnapshotError::NoServer { .. } => "check that your SSH key is registered with exe.dev (`ssh exe.dev whoami`; --ssh-key PATH for another) and that the servers run (`exedev-k8s status -f FLEET`)".into(),
            SnapshotError::Command { s3: true, .. } => "S3 refused: check etcd.snapshots.s3 (endpoint, bucket: k3s never creates it, region) and the access and secret keys it references, then `exedev-k8s apply` to give the servers the corrected settings".into(),
            SnapshotError::Command { .. } => "check that k3s runs on that server (`exedev-k8s status -f FLEET`) and that its bootstrap finished; snapshots need the embedded etcd every fleet's servers run".into(),
            SnapshotError::Unreadable(_) => "the server's k3s printed something this tool cannot read: run `sudo k3s etcd-snapshot ls -o json` on it to see".into(),
            SnapshotError::BadName { .. } => "snapshot names are letters, digits, '.', '_' and '-' (as `exedev-k8s snapshot list` shows them)".into(),
            SnapshotError::NotFound(_) => "`exedev-k8s snapshot list -f FLEET` shows the names there are".into(),
        })
    }
}

/// How long one `k3s etcd-snapshot` call may take: a save writes the whole
/// datastore and may upload it (k3s's own S3 timeout is 5 minutes, facts
/// section 1).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(600);

/// Words k3s or S3 use when S3 refused (facts section 2: k3s's client
/// checks; AWS's error codes).
const S3_WORDS: &[&str] = &[
    "s3",
    "bucket",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
];

fn command_error(vm: &str, words: &[String], e: SshError) -> SnapshotError {
    let reason = e.to_string();
    let first = reason.lines().next().unwrap_or("").to_string();
    SnapshotError::Command {
        vm: vm.to_string(),
        command: words.join(" "),
        s3: S3_WORDS.iter().any(|w| first.contains(w)),
        reason: first,
    }
}

async fn run(vm: &str, words: &[String], ssh: &SshOptions) -> Result<String, SnapshotError> {
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let opts = SshOptions {
        deadline: COMMAND_DEADLINE,
        ..ssh.clone()
    };
    ssh::run(vm, &refs, &opts)
        .await
        .map_err(|e| command_error(vm, words, e))
}

/// The fleet's servers, `cp1` first.
fn servers(fleet: &Fleet) -> Vec<String> {
    crate::edges::kubeaccess::servers(fleet)
}

/// `ls` on the first server that answers: the server and its list. Only a
/// connection failure moves on to the next.
async fn first_list(
    fleet: &Fleet,
    ssh: &SshOptions,
) -> Result<(String, Vec<Snapshot>), SnapshotError> {
    let all = servers(fleet);
    let mut first_error = None;
    for vm in &all {
        let words = parse::ls_command();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let opts = SshOptions {
            deadline: COMMAND_DEADLINE,
            ..ssh.clone()
        };
        match ssh::run(vm, &refs, &opts).await {
            Ok(text) => {
                let list = read_list(&text, vm)?;
                return Ok((vm.clone(), list));
            }
            Err(e @ (SshError::Connect { .. } | SshError::Deadline { .. })) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => return Err(command_error(vm, &words, e)),
        }
    }
    Err(SnapshotError::NoServer {
        fleet: fleet.name.clone(),
        tried: all.join(", "),
        first: first_error
            .unwrap_or_else(|| "it has no server".into())
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    })
}

/// What `save` did.
#[derive(Debug)]
pub struct Saved {
    /// The server it ran on.
    pub server: String,
    /// The snapshots it made (a local one, and its S3 copy with S3).
    pub made: Vec<Snapshot>,
}

/// Takes a snapshot now on the first server SSH reaches.
pub async fn save(
    fleet: &Fleet,
    ssh: &SshOptions,
    name: Option<&str>,
) -> Result<Saved, SnapshotError> {
    if let Some(n) = name {
        parse::check_name(n).map_err(|why| SnapshotError::BadName {
            name: n.to_string(),
            why,
        })?;
    }
    let (server, before) = first_list(fleet, ssh).await?;
    run(&server, &parse::save_command(name), ssh).await?;
    let after = run(&server, &parse::ls_command(), ssh).await?;
    let after = read_list(&after, &server)?;
    Ok(Saved {
        made: parse::new_since(&before, &after),
        server,
    })
}

/// Every server's snapshots, merged; with the servers not reached and why.
#[derive(Debug)]
pub struct Listing {
    pub snapshots: Vec<Snapshot>,
    /// `(server, why)` for each server SSH did not reach.
    pub unreached: Vec<(String, String)>,
}

/// Lists the snapshots of every server (at most 3 at once, each bounded).
/// Fails only when no server answers; a server's failed `k3s` fails it.
pub async fn list(fleet: &Fleet, ssh: &SshOptions) -> Result<Listing, SnapshotError> {
    let all = servers(fleet);
    let opts = ssh.clone();
    let results =
        crate::edges::remote::bounded(all.clone(), 3, COMMAND_DEADLINE, move |vm: String| {
            let opts = opts.clone();
            async move {
                let words = parse::ls_command();
                let refs: Vec<&str> = words.iter().map(String::as_str).collect();
                match ssh::run(&vm, &refs, &opts).await {
                    Ok(text) => Ok(Ok(text)),
                    Err(e @ (SshError::Connect { .. } | SshError::Deadline { .. })) => {
                        Err(e.to_string().lines().next().unwrap_or("").to_string())
                    }
                    Err(e) => Ok(Err(command_error(&vm, &words, e))),
                }
            }
        })
        .await;
    let mut lists = Vec::new();
    let mut unreached = Vec::new();
    for (vm, r) in all.iter().zip(results) {
        match r {
            Ok(Ok(text)) => lists.push(read_list(&text, vm)?),
            Ok(Err(e)) => return Err(e),
            Err(why) => unreached.push((vm.clone(), why)),
        }
    }
    if lists.is_empty() {
        let first = unreached
            .first()
            .map(|(_, w)| w.clone())
            .unwrap_or_default();
        return Err(SnapshotError::NoServer {
            fleet: fleet.name.clone(),
            tried: all.join(", "),
            first,
        });
    }
    Ok(Listing {
        snapshots: parse::merge(lists),
        unreached,
    })
}

/// One deletion: which names, on which server.
#[derive(Debug, PartialEq, Eq)]
pub struct Deletion {
    pub server: String,
    pub names: Vec<String>,
}

/// Where each name is deleted: on each server that holds it locally, and
/// for a name held only in S3, on `fallback`. Names nobody lists are
/// returned apart (pure).
pub fn deletions(
    names: &[String],
    listed: &[Snapshot],
    fallback: &str,
) -> (Vec<Deletion>, Vec<String>) {
    let mut plan: Vec<Deletion> = Vec::new();
    let mut missing = Vec::new();
    let mut add = |server: &str, name: &str| match plan.iter_mut().find(|d| d.server == server) {
        Some(d) if !d.names.iter().any(|n| n == name) => d.names.push(name.to_string()),
        Some(_) => {}
        None => plan.push(Deletion {
            server: server.to_string(),
            names: vec![name.to_string()],
        }),
    };
    for name in names {
        let places: Vec<Place> = listed
            .iter()
            .filter(|s| &s.name == name)
            .map(Snapshot::place)
            .collect();
        if places.is_empty() {
            missing.push(name.clone());
            continue;
        }
        let mut local = false;
        for p in &places {
            if let Place::Local(node) = p {
                add(node, name);
                local = true;
            }
        }
        if !local {
            add(fallback, name);
        }
    }
    (plan, missing)
}

/// Deletes snapshots by name, everywhere they are listed; refuses (before
/// deleting any) when a name is listed nowhere or a server is not reached
/// (it could hold one).
pub async fn delete(
    fleet: &Fleet,
    ssh: &SshOptions,
    names: &[String],
) -> Result<Vec<Deletion>, SnapshotError> {
    for n in names {
        parse::check_name(n).map_err(|why| SnapshotError::BadName {
            name: n.clone(),
            why,
        })?;
    }
    let listing = list(fleet, ssh).await?;
    let reached: Vec<String> = servers(fleet)
        .into_iter()
        .filter(|s| !listing.unreached.iter().any(|(u, _)| u == s))
        .collect();
    let fallback = reached.first().cloned().unwrap_or_default();
    let (plan, missing) = deletions(names, &listing.snapshots, &fallback);
    if !missing.is_empty() {
        return Err(SnapshotError::NotFound(missing));
    }
    for d in &plan {
        let refs: Vec<&str> = d.names.iter().map(String::as_str).collect();
        run(&d.server, &parse::delete_command(&refs), ssh).await?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, place: Place) -> Snapshot {
        Snapshot {
            name: name.into(),
            created: "2025-12-07T10:13:20Z".into(),
            size: 1,
            node: match place {
                Place::S3 => crate::core::snapshot::S3_NODE.into(),
                Place::Local(node) => node,
            },
            location: String::new(),
            token_hash: None,
            ready: true,
        }
    }

    #[test]
    fn deletions_go_where_each_snapshot_is() {
        let listed = [
            snap("a", Place::Local("p-cp1".into())),
            snap("a", Place::S3),
            snap("b", Place::Local("p-cp2".into())),
            snap("c", Place::S3),
        ];
        let names: Vec<String> = ["a", "b", "c", "zz"].map(String::from).to_vec();
        let (plan, missing) = deletions(&names, &listed, "p-cp1");
        assert_eq!(missing, ["zz"]);
        assert_eq!(
            plan,
            [
                Deletion {
                    server: "p-cp1".into(),
                    names: vec!["a".into(), "c".into()]
                },
                Deletion {
                    server: "p-cp2".into(),
                    names: vec!["b".into()]
                },
            ]
        );
    }

    #[test]
    fn s3_refusals_say_so() {
        let e = command_error(
            "p-cp1",
            &parse::ls_command(),
            SshError::Remote {
                vm: "p-cp1".into(),
                command: "sudo -n k3s etcd-snapshot ls".into(),
                code: 1,
                stderr: "level=fatal msg=\"failed to test for existence of bucket prod: InvalidAccessKeyId\"".into(),
            },
        );
        assert!(matches!(e, SnapshotError::Command { s3: true, .. }));
        assert!(e.hint().unwrap().contains("etcd.snapshots.s3"));
        assert!(e.to_string().contains("p-cp1"));
        assert!(e.to_string().contains("k3s etcd-snapshot ls"));
    }
}
