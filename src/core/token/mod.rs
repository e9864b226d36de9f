//! exe0 tokens: `exe0.<base64url(permissions JSON)>.<base64url(sshsig blob)>`.
//!
//! Minting (client side) and verification (emulator side) live here together
//! so that the two can never disagree about the format. Signing keys are read
//! in [`keys`]; the permission rules are in [`permissions`].

mod ecdsa_scalar;
pub mod keys;
pub mod permissions;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

pub use permissions::{PermissionError, Permissions, raw_field};

use crate::base::secret::Secret;

/// Namespace of tokens for the `/exec` API.
pub const API_NAMESPACE: &str = "v0@exe.dev";
/// Whole-token size limit exe.dev enforces.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Namespace of a token scoped to one VM's HTTPS proxy.
pub fn vm_namespace(vm: &str) -> String {
    format!("v0@{vm}.exe.xyz")
}

/// Why a token could not be made, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("not an exe0 token: expected exe0.<payload>.<signature>")]
    Malformed,
    #[error("token is {0} bytes; exe.dev accepts at most 8192")]
    TooLarge(usize),
    #[error("token payload or signature is not valid base64url")]
    Base64,
    #[error("token signature is not an SSH signature: {0}")]
    Signature(String),
    #[error(transparent)]
    Permissions(#[from] PermissionError),
    #[error("token was signed for namespace {found:?}, expected {expected:?}")]
    Namespace { expected: String, found: String },
    #[error("token was signed by a key that is not registered ({0})")]
    UnknownKey(String),
    #[error("token signature does not verify over its payload")]
    BadSignature,
    #[error("token expired at {0} (exp)")]
    Expired(i64),
    #[error("token is not valid before {0} (nbf)")]
    NotYetValid(i64),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("{0}")]
    Key(String),
}

/// A structurally valid exe0 token (not yet verified).
#[derive(Clone)]
pub struct Exe0Token {
    /// The exact signed permission bytes.
    pub payload: Vec<u8>,
    pub signature: SshSig,
}

impl std::fmt::Debug for Exe0Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A token is a credential: show only who signed it.
        f.debug_struct("Exe0Token")
            .field("signer", &self.signer_fingerprint())
            .finish_non_exhaustive()
    }
}

impl Exe0Token {
    /// Splits and decodes a token string; checks size and shape only.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        let mut parts = token.split('.');
        let (Some("exe0"), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Base64)?;
        let blob = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Base64)?;
        let signature = sig_from_blob(&blob)?;
        Ok(Exe0Token { payload, signature })
    }

    /// The permission JSON, validated against every documented rule.
    pub fn permissions(&self) -> Result<Permissions, PermissionError> {
        Permissions::parse(&self.payload)
    }

    /// SHA-256 fingerprint of the key that made the signature.
    pub fn signer_fingerprint(&self) -> String {
        PublicKey::from(self.signature.public_key().clone())
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// Verifies the signature under `namespace` against `keys`; returns the
    /// fingerprint of the matching key.
    pub fn verify(&self, namespace: &str, keys: &[PublicKey]) -> Result<String, TokenError> {
        if self.signature.namespace() != namespace {
            return Err(TokenError::Namespace {
                expected: namespace.into(),
                found: self.signature.namespace().into(),
            });
        }
        let signer = self.signature.public_key();
        let key = keys
            .iter()
            .find(|k| k.key_data() == signer)
            .ok_or_else(|| TokenError::UnknownKey(self.signer_fingerprint()))?;
        key.verify(namespace, &self.payload, &self.signature)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(key.fingerprint(HashAlg::Sha256).to_string())
    }

    /// Everything a server checks: signature, permission rules, time window.
    pub fn validate(
        &self,
        namespace: &str,
        keys: &[PublicKey],
        now: i64,
    ) -> Result<(String, Permissions), TokenError> {
        let fingerprint = self.verify(namespace, keys)?;
        let perms = self.permissions()?;
        check_time(&perms, now)?;
        Ok((fingerprint, perms))
    }
}

/// Checks `exp` and `nbf` against `now` (Unix seconds).
pub fn check_time(p: &Permissions, now: i64) -> Result<(), TokenError> {
    if let Some(exp) = p.exp
        && now > exp
    {
        return Err(TokenError::Expired(exp));
    }
    if let Some(nbf) = p.nbf
        && now < nbf
    {
        return Err(TokenError::NotYetValid(nbf));
    }
    Ok(())
}

/// A Unix time as RFC 3339 (UTC, seconds).
pub fn format_unix(t: i64) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(st).to_string()
}

/// `delta` seconds from now, for people: "in 30 days", "1 hour 5 minutes
/// ago", "now". Two units at most, rounded to the smaller one, so a token
/// minted for 30 days reads "in 30 days", not "in 29 days 23 hours".
pub fn relative_time(delta: i64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut secs = delta.unsigned_abs();
    if secs == 0 {
        return "now".into();
    }
    let largest = |s: u64| UNITS.iter().position(|(u, _)| s >= *u).unwrap_or(3);
    let precision = UNITS[(largest(secs) + 1).min(3)].0;
    secs = (secs + precision / 2) / precision * precision;
    let i = largest(secs);
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let (big, name) = UNITS[i];
    let mut text = plural(secs / big, name);
    if i < 3 {
        let (small, small_name) = UNITS[i + 1];
        let rest = secs % big / small;
        if rest > 0 {
            text = format!("{text} {}", plural(rest, small_name));
        }
    }
    if delta >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Signs `perms` with `key` under `namespace` and assembles the token.
pub fn mint(key: &PrivateKey, perms: &Permissions, namespace: &str) -> Result<Secret, TokenError> {
    keys::check_signable(key)?;
    let payload = perms.to_compact_json();
    let sig = key
        .sign(namespace, HashAlg::Sha512, payload.as_bytes())
        .map_err(|e| TokenError::Sign(e.to_string()))?;
    let token = format!(
        "exe0.{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(sig_to_blob(&sig)?)
    );
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(token.len()));
    }
    Ok(Secret::new(token))
}

/// The binary sshsig blob (what `ssh-keygen -Y sign` armors).
pub fn sig_to_blob(sig: &SshSig) -> Result<Vec<u8>, TokenError> {
    let pem = sig
        .to_pem(LineEnding::LF)
        .map_err(|e| TokenError::Signature(e.to_string()))?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).map_err(|_| TokenError::Base64)
}

/// Reads a binary sshsig blob.
pub fn sig_from_blob(blob: &[u8]) -> Result<SshSig, TokenError> {
    let b64 = STANDARD.encode(blob);
    let mut pem = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        pem.push_str(std::str::from_utf8(chunk).map_err(|_| TokenError::Base64)?);
        pem.push('\n');
    }
    pem.push_str("-----END SSH SIGNATURE-----\n");
    SshSig::from_pem(pem).map_err(|e| TokenError::Signature(e.to_string()))
}

/// Builds a token from an armored signature, as the documented shell recipe
/// does (`ssh-keygen -Y sign` output with armor stripped).
pub fn from_armored(payload: &[u8], armored_sig: &str) -> Result<Secret, TokenError> {
    let sig = SshSig::from_pem(armored_sig).map_err(|e| TokenError::Signature(e.to_string()))?;
    Ok(Secret::new(format!(
        "exe0.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(sig_to_blob(&sig)?)
    )))
}
