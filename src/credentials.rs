//! Where the API token comes from: given whole (`--token`/`EXE_DEV_API_KEY`)
//! or minted on the fly from an SSH key (`--ssh-key`/`EXE_DEV_SSH_KEY`) with
//! only the commands the current operation needs and a short expiry.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::{PrivateKey, PublicKey};

use crate::secret::Secret;
use crate::token::keys::{
    PASSPHRASE_ENV, decrypt_private_key, parse_private_key, parse_public_keys,
};
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
                let key = load_private_key(path)?;
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

/// Checks a token given whole (`--token`/`EXE_DEV_API_KEY`) before anything
/// is sent: an exe0 token's expiry and shape are readable here, so an
/// expired token and a garbled one each get their own message instead of
/// exe.dev's one 401. exe1 tokens are opaque handles: only exe.dev can
/// judge them.
pub fn check_given_token(token: &str, now: i64) -> Result<(), String> {
    let what = "the API token (--token / EXE_DEV_API_KEY)";
    if token.starts_with("exe1.") {
        return Ok(());
    }
    if !token.starts_with("exe0.") {
        return Err(format!(
            "{what} is not an exe.dev token: tokens start with exe0. or exe1. (check the variable holds the whole token; an SSH key file goes to --ssh-key)"
        ));
    }
    let t = token::Exe0Token::parse(token)
        .map_err(|e| format!("{what} is damaged: {e}. Copy it again whole, or mint a new one with `exedev-k8s token mint`"))?;
    let perms = t
        .permissions()
        .map_err(|e| format!("{what} carries invalid permissions ({e}): exe.dev will refuse it; mint a new one with `exedev-k8s token mint`"))?;
    if let Some(exp) = perms.exp
        && now > exp
    {
        return Err(format!(
            "{what} expired {} ({}): mint a new one (`exedev-k8s token mint --for-fleet FLEET --exp 30d`), or pass --ssh-key to mint one per command",
            token::relative_time(exp - now),
            token::format_unix(exp)
        ));
    }
    if let Some(nbf) = perms.nbf
        && now < nbf
    {
        return Err(format!(
            "{what} is not valid until {} ({}): wait, or mint one without --nbf",
            token::format_unix(nbf),
            token::relative_time(nbf - now)
        ));
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reads a private key file, decrypting it with the passphrase from
/// [`PASSPHRASE_ENV`] or, on a terminal, a prompt (never off a terminal).
pub fn load_private_key(path: &Path) -> Result<PrivateKey, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        TokenError::Key(format!(
            "cannot read SSH key {}: {e}. Pass the private key file (not the .pub); a key held only \
             by ssh-agent must be exported to a file or used via `ssh-keygen -Y sign`",
            path.display()
        ))
    })?;
    let label = path.display().to_string();
    let key = parse_private_key(&text, &label)?;
    if !key.is_encrypted() {
        return Ok(key);
    }
    decrypt_private_key(&key, &passphrase_for(path)?, &label)
}

fn passphrase_for(path: &Path) -> Result<Secret, TokenError> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Secret::new(p));
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let prompt = format!("Passphrase for {}: ", path.display());
        return rpassword::prompt_password(prompt)
            .map(Secret::new)
            .map_err(|e| TokenError::Key(format!("cannot read passphrase: {e}")));
    }
    Err(TokenError::Key(format!(
        "{} is passphrase-protected and there is no terminal to ask on; set {PASSPHRASE_ENV}",
        path.display()
    )))
}

/// Reads public keys from an `authorized_keys` file or a `.pub` file.
pub fn load_public_keys(path: &Path) -> Result<Vec<PublicKey>, TokenError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TokenError::Key(format!("cannot read {}: {e}", path.display())))?;
    parse_public_keys(&text).map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mint(perms: &Permissions) -> String {
        let key = ssh_key::PrivateKey::random(
            &mut ssh_key::rand_core::OsRng,
            ssh_key::Algorithm::Ed25519,
        )
        .unwrap();
        token::mint(&key, perms, token::API_NAMESPACE)
            .unwrap()
            .expose()
            .to_string()
    }

    /// Expired, not yet valid, damaged and foreign tokens each say what they
    /// are, before any request; a valid one and an exe1 handle pass.
    #[test]
    fn given_tokens_are_judged_locally() {
        let now = 2_000_000_000;
        let at = |exp, nbf| {
            mint(&Permissions {
                exp,
                nbf,
                ..Default::default()
            })
        };
        assert_eq!(check_given_token(&at(Some(now + 60), None), now), Ok(()));
        assert_eq!(check_given_token(&at(None, None), now), Ok(()));
        assert_eq!(check_given_token("exe1.opaque-handle", now), Ok(()));
        let expired = check_given_token(&at(Some(now - 3 * 3600), None), now).unwrap_err();
        assert!(
            expired.contains("expired 3 hours ago") && expired.contains("token mint"),
            "{expired}"
        );
        let early = check_given_token(&at(Some(now + 99), Some(now + 60)), now).unwrap_err();
        assert!(early.contains("not valid until"), "{early}");
        let damaged = check_given_token("exe0.bm90LWpzb24.!!!", now).unwrap_err();
        assert!(damaged.contains("is damaged"), "{damaged}");
        let foreign = check_given_token("ghp_abcdef", now).unwrap_err();
        assert!(foreign.contains("not an exe.dev token"), "{foreign}");
        for e in [expired, early, damaged, foreign] {
            assert!(e.contains("EXE_DEV_API_KEY"), "{e}");
        }
    }
}
