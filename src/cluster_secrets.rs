//! The cluster's secrets on the operator's machine: the k3s token (from the
//! fleet's reference, or generated on the first apply and kept mode 0600
//! under `.exedev-k8s/<fleet>/` beside the fleet file) and the Tailscale key
//! (always a reference).
//!
//! The k3s token also decrypts etcd bootstrap data: it is needed to restore
//! snapshots, so it is kept, never printed, and only removed when asked.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::fleet::Fleet;
use crate::plan::spec::ClusterSecrets;
use crate::secret::Secret;

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
        "no k3s token for fleet {cluster:?}: the fleet names none and {path} does not exist. The first apply generates it; if this cluster was created elsewhere, copy that file here or set k3s.token to {{env: K3S_TOKEN}}"
    )]
    Missing { cluster: String, path: String },
    #[error(
        "the k3s token file {path} of fleet {cluster:?} is empty. Nothing is generated over it: restore it from the machine the cluster was created from, or set k3s.token to {{env: K3S_TOKEN}}; if the cluster does not exist yet, delete the file and the next apply generates a token"
    )]
    Empty { cluster: String, path: String },
}

/// Directory holding a fleet's local state.
pub fn state_dir(fleet_dir: &Path, cluster: &str) -> PathBuf {
    fleet_dir.join(".exedev-k8s").join(cluster)
}

/// Path of the generated k3s token.
pub fn token_path(fleet_dir: &Path, cluster: &str) -> PathBuf {
    state_dir(fleet_dir, cluster).join("k3s-token")
}

/// Resolves both secrets. With `generate`, a missing k3s token is created
/// (48 random alphanumerics) and stored 0600.
pub fn resolve(
    fleet: &Fleet,
    fleet_dir: &Path,
    generate: bool,
) -> Result<ClusterSecrets, SecretsError> {
    let tailscale_auth_key =
        crate::workspace::resolve_secret(&fleet.network.tailscale.auth_key.value, fleet_dir)
            .map_err(|e| SecretsError::Reference(format!("network.tailscale.authKey: {e}")))?;
    let k3s_token = match &fleet.k3s.value.token {
        Some(r) => crate::workspace::resolve_secret(&r.value, fleet_dir)
            .map_err(|e| SecretsError::Reference(format!("k3s.token: {e}")))?,
        None => stored_token(fleet_dir, &fleet.metadata.name.value, generate)?,
    };
    Ok(ClusterSecrets {
        k3s_token,
        tailscale_auth_key,
    })
}

fn stored_token(fleet_dir: &Path, cluster: &str, generate: bool) -> Result<Secret, SecretsError> {
    let path = token_path(fleet_dir, cluster);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(Secret::new(t.trim())),
        Ok(_) => {
            return Err(SecretsError::Empty {
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
    Ok(Secret::new(token))
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

/// Removes the fleet's stored secrets (`destroy --purge-secrets`).
pub fn purge(fleet_dir: &Path, cluster: &str) -> Result<bool, SecretsError> {
    let dir = state_dir(fleet_dir, cluster);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SecretsError::Io {
            what: "remove",
            path: dir.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let src = "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n  channel: stable\nnetwork:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {file: ts.key}\n";
        std::fs::write(dir.path().join("ts.key"), "tskey-auth-xyz\n").unwrap();
        let f = crate::fleet::parse(src, "f.yaml").unwrap();
        assert!(matches!(
            resolve(&f, dir.path(), false),
            Err(SecretsError::Missing { .. })
        ));
        let a = resolve(&f, dir.path(), true).unwrap();
        assert_eq!(a.tailscale_auth_key.expose(), "tskey-auth-xyz");
        assert_eq!(a.k3s_token.expose().len(), 48);
        let b = resolve(&f, dir.path(), false).unwrap();
        assert_eq!(a.k3s_token, b.k3s_token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path(), "demo"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(purge(dir.path(), "demo").unwrap());
        assert!(!purge(dir.path(), "demo").unwrap());
    }

    /// An empty token file is not a missing one: said so, and never
    /// silently replaced by a generated token.
    #[test]
    fn an_empty_token_file_is_reported_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let src = "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n  channel: stable\nnetwork:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {file: ts.key}\n";
        std::fs::write(dir.path().join("ts.key"), "tskey-auth-xyz\n").unwrap();
        let f = crate::fleet::parse(src, "f.yaml").unwrap();
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
