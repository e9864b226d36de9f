//! Reading SSH private keys for token signing, passphrases included.
//!
//! ed25519 and ECDSA keys sign in-process. RSA keys are refused for signing:
//! ssh-key 0.6.7's RSA sshsig output is not reliably accepted by exe.dev, and
//! a token that fails with a generic 401 is worse than a clear refusal that
//! names the alternatives.

use std::path::Path;

use ssh_key::{Algorithm, PrivateKey, PublicKey};

use super::TokenError;
use crate::secret::Secret;

/// Environment variable read for an encrypted key's passphrase.
pub const PASSPHRASE_ENV: &str = "EXE_DEV_SSH_KEY_PASSPHRASE";

/// Refuses key types this tool cannot sign tokens with, saying what to do.
pub fn check_signable(key: &PrivateKey) -> Result<(), TokenError> {
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(()),
        Algorithm::Rsa { .. } => Err(TokenError::Key(
            "RSA keys are not supported for minting tokens (the signing library produces RSA \
             signatures exe.dev may reject). Use an ed25519 key: `ssh-keygen -t ed25519 -f \
             ~/.ssh/exe_dev_api`, register it with `ssh exe.dev ssh-key add`, and pass it with \
             --ssh-key; or sign with `ssh-keygen -Y sign -n v0@exe.dev` and pass the token with \
             --token"
                .into(),
        )),
        other => Err(TokenError::Key(format!(
            "{other} keys cannot sign exe.dev tokens here; use an ed25519 or ECDSA key"
        ))),
    }
}

/// Reads a private key file, decrypting it with the passphrase from
/// [`PASSPHRASE_ENV`] or, on a terminal, a prompt.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        TokenError::Key(format!(
            "cannot read SSH key {}: {e}. Pass the private key file (not the .pub); a key held only \
             by ssh-agent must be exported to a file or used via `ssh-keygen -Y sign`",
            path.display()
        ))
    })?;
    if text.contains("BEGIN RSA PRIVATE KEY") || text.contains("BEGIN PRIVATE KEY") {
        return Err(TokenError::Key(format!(
            "{} is a PEM/PKCS#8 key; convert it to OpenSSH format with `ssh-keygen -p -f {}` or use an ed25519 key",
            path.display(),
            path.display()
        )));
    }
    let key = PrivateKey::from_openssh(&text).map_err(|e| {
        TokenError::Key(format!(
            "{} is not an OpenSSH private key ({e})",
            path.display()
        ))
    })?;
    if !key.is_encrypted() {
        return Ok(key);
    }
    let passphrase = passphrase_for(path)?;
    key.decrypt(passphrase.expose().as_bytes()).map_err(|_| {
        TokenError::Key(format!(
            "wrong passphrase for {} (from {PASSPHRASE_ENV} or the prompt)",
            path.display()
        ))
    })
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

/// Parses `authorized_keys` text: one key per line, comments and blank lines
/// skipped, leading options allowed.
pub fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = line
            .parse::<ssh_key::authorized_keys::Entry>()
            .map_err(|e| format!("line {}: not an SSH public key ({e})", n + 1))?;
        keys.push(entry.public_key().clone());
    }
    Ok(keys)
}
