//! Where the API token comes from: given whole (`--token`/`EXE_DEV_API_KEY`)
//! or minted on the fly from an SSH key (`--ssh-key`/`EXE_DEV_SSH_KEY`) with
//! only the commands the current operation needs and a short expiry.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::secret::Secret;
use crate::token::{self, Permissions, TokenError};

/// Lifetime of tokens minted on the fly for a quick operation (plan,
/// status, exec).
pub const ON_THE_FLY_TTL: Duration = Duration::from_secs(3600);
/// Lifetime for apply and destroy, which may wait on drains, boots and
/// readiness for a long time: still short, but longer than any sane run.
pub const LONG_OPERATION_TTL: Duration = Duration::from_secs(4 * 3600);

/// The user's credentials, as configured.
#[derive(Debug, Clone)]
pub enum Credentials {
    Token(Secret),
    SshKey(PathBuf),
}

impl Credentials {
    /// A token good for `cmds`. A given token is used as is (exe.dev will
    /// answer 403 naming a missing command); a key mints a least-privilege
    /// token that expires in an hour.
    pub fn token_for(&self, cmds: &[&str], ttl: Duration) -> Result<Secret, TokenError> {
        match self {
            Credentials::Token(t) => Ok(t.clone()),
            Credentials::SshKey(path) => {
                let key = token::keys::load_private_key(path)?;
                let mut cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
                cmds.sort();
                cmds.dedup();
                let perms = Permissions {
                    exp: Some(now_unix() + ttl.as_secs() as i64),
                    nbf: None,
                    cmds: Some(cmds),
                    ctx: None,
                };
                token::mint(&key, &perms, token::API_NAMESPACE)
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
