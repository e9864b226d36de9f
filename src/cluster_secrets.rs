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
}

/// Name of the directory beside the fleet file holding local state (the
/// generated k3s token, the kubeconfig).
pub const STATE_DIR_NAME: &str = ".exedev-k8s";

/// Directory holding a fleet's local state.
pub fn state_dir(fleet_dir: &Path, cluster: &str) -> PathBuf {
    fleet_dir.join(STATE_DIR_NAME).join(cluster)
}

/// Path of the generated k3s token.
pub fn token_path(fleet_dir: &Path, cluster: &str) -> PathBuf {
    state_dir(fleet_dir, cluster).join("k3s-token")
}

/// Both secrets, and where a k3s token was generated (and stored) by this
/// call, if one was: the caller tells the user, who must keep it.
pub struct Resolved {
    pub secrets: ClusterSecrets,
    pub generated_token: Option<PathBuf>,
}

/// Resolves both secrets. With `generate`, a missing k3s token is created
/// (48 random alphanumerics) and stored 0600.
pub fn resolve(fleet: &Fleet, fleet_dir: &Path, generate: bool) -> Result<Resolved, SecretsError> {
    let tailscale_auth_key = fleet
        .network
        .tailscale
        .auth_key
        .value
        .resolve(fleet_dir)
        .map_err(|e| SecretsError::Reference(format!("network.tailscale.authKey: {e}")))?;
    let (k3s_token, generated_token) = match &fleet.k3s.value.token {
        Some(r) => (
            r.value
                .resolve(fleet_dir)
                .map_err(|e| SecretsError::Reference(format!("k3s.token: {e}")))?,
            None,
        ),
        None => stored_token(fleet_dir, &fleet.metadata.name.value, generate)?,
    };
    Ok(Resolved {
        secrets: ClusterSecrets {
            k3s_token,
            tailscale_auth_key,
        },
        generated_token,
    })
}

fn stored_token(
    fleet_dir: &Path,
    cluster: &str,
    generate: bool,
) -> Result<(Secret, Option<PathBuf>), SecretsError> {
    let path = token_path(fleet_dir, cluster);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((Secret::new(t.trim()), None)),
        Ok(_) => {}
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
    Ok((Secret::new(token), Some(path)))
}

/// Makes the state directory `root` ignored by git (a `.gitignore` holding
/// `*` inside it), so the k3s token and kubeconfig are never committed with
/// the fleet file. An existing `.gitignore` is left as the user made it.
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
        assert_eq!(a.generated_token, Some(token_path(dir.path(), "demo")));
        let a = a.secrets;
        assert_eq!(a.tailscale_auth_key.expose(), "tskey-auth-xyz");
        assert_eq!(a.k3s_token.expose().len(), 48);
        let b = resolve(&f, dir.path(), true).unwrap();
        assert_eq!(b.generated_token, None, "generated once");
        assert_eq!(a.k3s_token, b.secrets.k3s_token);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".exedev-k8s/.gitignore")).unwrap(),
            "*\n"
        );
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
}
