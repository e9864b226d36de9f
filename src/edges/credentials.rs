//! Where the API token comes from: given whole (`--token`/`EXE_DEV_API_KEY`)
//! or minted on the fly from an SSH key (`--ssh-key`/`EXE_DEV_SSH_KEY`) with
//! only the commands the current operation needs and a short expiry.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::{PrivateKey, PublicKey};

use crate::base::secret::Secret;
use crate::core::token::keys::{
    PASSPHRASE_ENV, decrypt_private_key, parse_private_key, parse_public_keys,
};
use crate::core::token::{self, Permissions, TokenError};

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

/// The variable a whole API token may come from (`--token` wins over it).
pub const TOKEN_ENV: &str = "EXE_DEV_API_KEY";
/// The variable an SSH key path may come from (`--ssh-key` wins over it).
pub const KEY_ENV: &str = "EXE_DEV_SSH_KEY";

/// What the user gave, and where: flags on the command line and the
/// environment's variables, kept apart so a flag can win.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// `--token`.
    pub flag_token: Option<String>,
    /// `--ssh-key`.
    pub flag_key: Option<PathBuf>,
    /// [`TOKEN_ENV`].
    pub env_token: Option<String>,
    /// [`KEY_ENV`].
    pub env_key: Option<PathBuf>,
}

impl Given {
    /// The flags given, with the two variables read from this process's
    /// environment (empty ones count as unset).
    pub fn with_env(flag_token: Option<String>, flag_key: Option<PathBuf>) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Given {
            flag_token,
            flag_key,
            env_token: var(TOKEN_ENV),
            env_key: var(KEY_ENV).map(PathBuf::from),
        }
    }

    /// The SSH key for VMs and minting: `--ssh-key`, else [`KEY_ENV`].
    pub fn key(&self) -> Option<PathBuf> {
        self.flag_key.clone().or_else(|| self.env_key.clone())
    }
}

/// Which credentials to use, and a note to show when something given was
/// passed over. An explicit flag beats the environment: `--token` first,
/// then `--ssh-key` (a token in [`TOKEN_ENV`] is then ignored, with a note
/// that says so and whether it had expired), then [`TOKEN_ENV`] when it
/// passes [`check_token`], then [`KEY_ENV`] (a bad token in the environment
/// next to a key in the environment is ignored with a note, instead of
/// stopping a run the key can carry). A bad token that nothing replaces
/// is an error naming where it came from.
pub fn choose(given: &Given, now: i64) -> Result<(Credentials, Option<String>), String> {
    if let Some(t) = &given.flag_token {
        check_token(t.trim(), now, "the API token given with --token")?;
        return Ok((Credentials::Token(Secret::new(t.trim())), None));
    }
    let env_check = |what: &str| {
        given
            .env_token
            .as_deref()
            .map(|t| check_token(t.trim(), now, what))
    };
    // For a note, the verdict names no source (the note does); for an
    // error, it names the variable.
    let env_verdict = env_check("its token");
    if let Some(k) = &given.flag_key {
        let note = env_verdict.map(|v| {
            let state = match v {
                Ok(()) => String::new(),
                Err(why) => format!(" ({})", first_clause(&why)),
            };
            format!(
                "note: {TOKEN_ENV} is set but --ssh-key was given: minting tokens from the key, ignoring the variable{state}"
            )
        });
        return Ok((Credentials::SshKey(k.clone()), note));
    }
    match (env_verdict, &given.env_token, &given.env_key) {
        (Some(Ok(())), Some(t), _) => Ok((Credentials::Token(Secret::new(t.trim())), None)),
        (Some(Err(why)), _, Some(k)) => Ok((
            Credentials::SshKey(k.clone()),
            Some(format!(
                "note: ignoring {TOKEN_ENV} ({}): minting tokens from {KEY_ENV} instead",
                first_clause(&why)
            )),
        )),
        (Some(Err(_)), _, None) => Err(env_check(&format!("the API token in {TOKEN_ENV}"))
            .and_then(Result::err)
            .unwrap_or_default()),
        (_, _, Some(k)) => Ok((Credentials::SshKey(k.clone()), None)),
        _ => Err(format!(
            "no exe.dev credentials: pass --token (or set {TOKEN_ENV}), or --ssh-key PATH (or {KEY_ENV}) to mint tokens from a registered SSH key"
        )),
    }
}

/// The part of a token verdict before its advice (`... expired 3 hours ago
/// (...)`), for a note.
fn first_clause(why: &str) -> &str {
    why.split(": ").next().unwrap_or(why)
}

/// Checks a token given whole (`--token`/`EXE_DEV_API_KEY`) before anything
/// is sent: an exe0 token's expiry and shape are readable here, so an
/// expired token and a garbled one each get their own message instead of
/// exe.dev's one 401. exe1 tokens are opaque handles: only exe.dev can
/// judge them.
pub fn check_given_token(token: &str, now: i64) -> Result<(), String> {
    check_token(token, now, "the API token (--token / EXE_DEV_API_KEY)")
}

/// [`check_given_token`], naming the token's source as `what`.
pub fn check_token(token: &str, now: i64, what: &str) -> Result<(), String> {
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

    /// An explicit flag beats the environment; a bad token in the
    /// environment gives way to a key, with a note; a bad token nothing
    /// replaces is an error naming where it came from.
    #[test]
    fn flags_beat_the_environment() {
        let now = 2_000_000_000;
        let tok = |exp| {
            mint(&Permissions {
                exp: Some(exp),
                ..Default::default()
            })
        };
        let (good, expired) = (tok(now + 600), tok(now - 3 * 3600));
        let key = || Some(PathBuf::from("/k/id"));
        let env_key = || Some(PathBuf::from("/k/env"));
        let kind = |r: &Result<(Credentials, Option<String>), String>| match r {
            Ok((Credentials::Token(_), n)) => format!("token {}", n.is_some()),
            Ok((Credentials::SshKey(p), n)) => format!("key {} {}", p.display(), n.is_some()),
            Err(e) => format!("error {e}"),
        };
        let case = |g: Given| choose(&g, now);
        // The case: an expired token in the environment, --ssh-key given.
        let r = case(Given {
            flag_key: key(),
            env_token: Some(expired.clone()),
            ..Default::default()
        });
        assert_eq!(kind(&r), "key /k/id true");
        let note = r.map(|(_, n)| n.unwrap_or_default()).unwrap_or_default();
        assert!(
            note.contains("EXE_DEV_API_KEY is set but --ssh-key was given")
                && note.contains("its token expired 3 hours ago"),
            "{note}"
        );
        assert!(!note.contains(&expired), "the token is never shown");
        // --ssh-key beats even a good token in the environment (said once).
        let r = case(Given {
            flag_key: key(),
            env_token: Some(good.clone()),
            ..Default::default()
        });
        assert_eq!(kind(&r), "key /k/id true");
        // --token beats a key in the environment and on the command line.
        let r = case(Given {
            flag_token: Some(good.clone()),
            flag_key: key(),
            env_key: env_key(),
            ..Default::default()
        });
        assert_eq!(kind(&r), "token false");
        // An expired --token is an error naming the flag, whatever else is set.
        let r = case(Given {
            flag_token: Some(expired.clone()),
            env_key: env_key(),
            ..Default::default()
        });
        assert!(
            kind(&r).contains("given with --token expired"),
            "{}",
            kind(&r)
        );
        // Both from the environment: the token while it is good ...
        let both = |t: &str| Given {
            env_token: Some(t.to_string()),
            env_key: env_key(),
            ..Default::default()
        };
        assert_eq!(kind(&case(both(&good))), "token false");
        // ... the key, with a note, once it is not.
        let r = case(both(&expired));
        assert_eq!(kind(&r), "key /k/env true");
        // A bad token alone in the environment: an error naming the variable.
        let r = case(Given {
            env_token: Some(expired),
            ..Default::default()
        });
        assert!(
            kind(&r).contains("the API token in EXE_DEV_API_KEY expired"),
            "{}",
            kind(&r)
        );
        // Nothing at all: says both ways.
        let r = case(Given::default());
        assert!(kind(&r).contains("--ssh-key PATH (or EXE_DEV_SSH_KEY)"));
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
