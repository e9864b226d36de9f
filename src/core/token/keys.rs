//! Reading SSH private keys for token signing, passphrases included.
//!
//! ed25519 and ECDSA keys sign in-process (ECDSA keys whose private scalar
//! OpenSSH wrote short are read through [`super::ecdsa_scalar`]). RSA keys are refused for signing:
//! ssh-key 0.6.7's RSA sshsig output is not reliably accepted by exe.dev, and
//! a token that fails with a generic 401 is worse than a clear refusal that
//! names the alternatives.

use ssh_key::{Algorithm, PrivateKey, PublicKey};

use super::TokenError;
use crate::base::secret::Secret;

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

/// Parses an OpenSSH private key's text; `label` (the file) names it in
/// errors. PEM/PKCS#8 keys are refused with the conversion command.
pub fn parse_private_key(text: &str, label: &str) -> Result<PrivateKey, TokenError> {
    if text.contains("BEGIN RSA PRIVATE KEY") || text.contains("BEGIN PRIVATE KEY") {
        return Err(TokenError::Key(format!(
            "{label} is a PEM/PKCS#8 key; convert it to OpenSSH format with `ssh-keygen -p -f {label}` or use an ed25519 key"
        )));
    }
    PrivateKey::from_openssh(text)
        .or_else(|e| super::ecdsa_scalar::repaired(text).ok_or(e))
        .map_err(|e| TokenError::Key(format!("{label} is not an OpenSSH private key ({e})")))
}

/// Decrypts a passphrase-protected key.
pub fn decrypt_private_key(
    key: &PrivateKey,
    passphrase: &Secret,
    label: &str,
) -> Result<PrivateKey, TokenError> {
    let bytes = passphrase.expose().as_bytes();
    key.decrypt(bytes)
        .or_else(|e| super::ecdsa_scalar::repaired_decrypted(key, bytes).ok_or(e))
        .map_err(|_| {
            TokenError::Key(format!(
                "wrong passphrase for {label} (from {PASSPHRASE_ENV} or the prompt)"
            ))
        })
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
