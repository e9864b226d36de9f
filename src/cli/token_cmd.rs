//! `exedev-k8s token mint|inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{CliResult, fail};
use crate::core::token::{self, Exe0Token, Permissions};
use crate::edges::credentials::now_unix;

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Sign a permissions JSON with an SSH key and print the exe0 token.
    Mint(MintArgs),
    /// Decode a token and show its permissions, expiry and signing key.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct MintArgs {
    /// OpenSSH private key (ed25519 or ECDSA) registered with exe.dev.
    #[arg(long, env = "EXE_DEV_SSH_KEY", hide_env_values = true)]
    pub ssh_key: PathBuf,
    /// Commands the token may run, comma-separated; names with spaces are
    /// given whole: --cmds 'ls,new,share port'. Default: exe.dev's defaults.
    #[arg(long, value_delimiter = ',')]
    pub cmds: Option<Vec<String>>,
    /// Expiry: a duration from now (30m, 1h, 7d), an RFC 3339 time, or a Unix timestamp.
    #[arg(long, default_value = "1h")]
    pub exp: String,
    /// Not valid before: same forms as --exp.
    #[arg(long)]
    pub nbf: Option<String>,
    /// JSON passed verbatim to VM servers (X-ExeDev-Token-Ctx).
    #[arg(long)]
    pub ctx: Option<String>,
    /// Scope the token to one VM's HTTPS proxy (namespace v0@VM.exe.xyz).
    #[arg(long)]
    pub vm: Option<String>,
    /// Grant exactly the commands plan, apply and destroy of this fleet need.
    #[arg(long, conflicts_with = "cmds", value_name = "FLEET")]
    pub for_fleet: Option<PathBuf>,
    /// With --for-fleet: grant only what `plan` and `status` need (they read,
    /// never change): the token for a pull-request job.
    #[arg(long, requires = "for_fleet")]
    pub read_only: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The exe0 token (or set EXE_DEV_API_KEY).
    #[arg(env = "EXE_DEV_API_KEY", hide_env_values = true)]
    pub token: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: TokenCmd) -> CliResult {
    match cmd {
        TokenCmd::Mint(a) => mint(a),
        TokenCmd::Inspect(a) => inspect(a),
    }
}

/// Parses `--exp`/`--nbf`: a duration from now, RFC 3339, or Unix seconds.
pub fn parse_time(flag: &str, value: &str, now: i64) -> CliResult<i64> {
    let v = value.trim();
    if let Ok(unix) = v.parse::<i64>() {
        return Ok(unix);
    }
    if let Ok(d) = humantime::parse_duration(v) {
        return Ok(now + d.as_secs() as i64);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| fail(format!("--{flag} {v:?} is before 1970")))?;
        return Ok(secs.as_secs() as i64);
    }
    Err(fail(format!(
        "--{flag} {v:?} is not a time: write a duration from now (30m, 1h, 7d), an RFC 3339 time (2030-01-01T00:00:00Z) or a Unix timestamp"
    )))
}

/// A token already expired, or never valid, is refused before signing:
/// exe.dev would answer 401 to every use.
fn check_window(exp: i64, nbf: Option<i64>, now: i64) -> CliResult<()> {
    if exp <= now {
        return Err(fail(format!(
            "--exp is in the past ({}, {}): exe.dev refuses an expired token. Give a duration from now (30m, 1h, 30d) or a future time",
            token::format_unix(exp),
            token::relative_time(exp - now)
        )));
    }
    if let Some(n) = nbf
        && n >= exp
    {
        return Err(fail(format!(
            "--nbf ({}) is not before --exp ({}): the token would never be valid",
            token::format_unix(n),
            token::format_unix(exp)
        )));
    }
    Ok(())
}

fn mint(a: MintArgs) -> CliResult {
    let now = now_unix();
    let exp = parse_time("exp", &a.exp, now)?;
    let nbf = a
        .nbf
        .as_deref()
        .map(|n| parse_time("nbf", n, now))
        .transpose()?;
    check_window(exp, nbf, now)?;
    let ctx = match &a.ctx {
        None => None,
        Some(c) => {
            // Check the ctx text itself (duplicate keys, newlines) before
            // serde_json would silently normalise it.
            Permissions::parse(format!("{{\"ctx\":{c}}}").as_bytes())
                .map_err(|e| fail(format!("--ctx: {e}")))?;
            Some(serde_json::from_str(c).map_err(|e| fail(format!("--ctx is not JSON: {e}")))?)
        }
    };
    let cmds = match (&a.for_fleet, a.cmds) {
        (Some(path), _) => {
            crate::engine::Session::load(path)?;
            let op = if a.read_only {
                crate::core::api::command::FleetOp::Plan
            } else {
                crate::core::api::command::FleetOp::Apply
            };
            Some(
                crate::engine::cmds(op)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            )
        }
        (None, c) => c.map(|c| {
            c.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        }),
    };
    let perms = Permissions {
        exp: Some(exp),
        nbf,
        cmds,
        ctx,
    };
    // Validate exactly as exe.dev will before signing anything.
    Permissions::parse(perms.to_compact_json().as_bytes())?;
    let key = crate::edges::credentials::load_private_key(&a.ssh_key)?;
    let namespace = match &a.vm {
        Some(vm) => {
            crate::base::names::check_vm_name(vm)?;
            token::vm_namespace(vm)
        }
        None => token::API_NAMESPACE.to_string(),
    };
    let tok = token::mint(&key, &perms, &namespace)?;
    println!("{}", tok.expose());
    Ok(ExitCode::SUCCESS)
}

fn inspect(a: InspectArgs) -> CliResult {
    let t = Exe0Token::parse(a.token.trim()).map_err(|e| {
        fail(format!(
            "{e}. exe1 tokens are opaque handles: only exe.dev can resolve them"
        ))
    })?;
    let payload = String::from_utf8_lossy(&t.payload).to_string();
    let perms = t.permissions();
    let now = now_unix();
    let namespace = t.signature.namespace().to_string();
    let fingerprint = t.signer_fingerprint();
    let (exp, nbf, cmds, ctx, problem) = match &perms {
        Ok(p) => (
            p.exp,
            p.nbf,
            Some(
                p.allowed_cmds()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            ),
            p.ctx.clone(),
            None,
        ),
        Err(e) => (None, None, None, None, Some(e.to_string())),
    };
    let expired = exp.is_some_and(|e| now > e);
    let not_yet = nbf.is_some_and(|n| now < n);
    if a.json {
        let out = json!({
            "payload": payload,
            "namespace": namespace,
            "signer_fingerprint": fingerprint,
            "algorithm": t.signature.algorithm().to_string(),
            "exp": exp, "nbf": nbf,
            "cmds": cmds,
            "default_cmds": perms.as_ref().map(|p| p.cmds.is_none()).unwrap_or(false),
            "ctx": ctx,
            "expired": expired,
            "not_yet_valid": not_yet,
            "valid_permissions": problem.is_none(),
            "problem": problem,
        });
        println!(
            "{}",
            crate::base::text::json_safe(&serde_json::to_string_pretty(&out)?)
        );
        return Ok(ExitCode::SUCCESS);
    }
    // A token to inspect may come from anywhere: nothing in it reaches the
    // terminal raw.
    let show = |s: &str| crate::base::text::one_line(s).into_owned();
    let payload = show(&payload);
    println!("payload:     {payload}");
    println!("namespace:   {namespace}");
    println!("signed by:   {fingerprint} ({})", t.signature.algorithm());
    match exp {
        Some(e) => println!(
            "expires:     {} ({})",
            token::format_unix(e),
            token::relative_time(e - now)
        ),
        None => println!("expires:     never (set --exp: there is no replay protection)"),
    }
    if let Some(n) = nbf {
        println!(
            "not before:  {} ({})",
            token::format_unix(n),
            token::relative_time(n - now)
        );
    }
    if let Some(c) = &cmds {
        let default = perms.as_ref().map(|p| p.cmds.is_none()).unwrap_or(false);
        println!(
            "commands:    {}{}",
            show(&c.join(", ")),
            if default { " (exe.dev defaults)" } else { "" }
        );
    }
    if let Some(c) = ctx {
        println!("ctx:         {}", show(&c.to_string()));
    }
    if let Some(p) = problem {
        println!("INVALID:     {} (exe.dev will answer 401)", show(&p));
    } else if expired {
        println!("EXPIRED:     exe.dev will answer 401; mint a new token");
    } else if not_yet {
        println!("NOT YET VALID: exe.dev will answer 401 until nbf");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_forms() {
        let now = 2_000_000_000;
        assert_eq!(parse_time("exp", "1h", now).unwrap(), now + 3600);
        assert_eq!(parse_time("exp", "30m", now).unwrap(), now + 1800);
        assert_eq!(parse_time("exp", "1798761600", now).unwrap(), 1_798_761_600);
        assert_eq!(
            parse_time("exp", "2027-01-01T00:00:00Z", now).unwrap(),
            1_798_761_600
        );
        assert!(
            parse_time("exp", "soon", now)
                .unwrap_err()
                .message
                .contains("duration")
        );
    }

    /// Words, not humantime's `30days`; rounded so that a token minted for
    /// 30 days and inspected a second later still reads "in 30 days".
    #[test]
    fn relative_times() {
        for (delta, want) in [
            (3600, "in 1 hour"),
            (-90, "1 minute 30 seconds ago"),
            (30 * 86_400, "in 30 days"),
            (30 * 86_400 - 1, "in 30 days"),
            (86_400 + 3600 + 61, "in 1 day 1 hour"),
            (59, "in 59 seconds"),
            (0, "now"),
            (-7200, "2 hours ago"),
        ] {
            assert_eq!(token::relative_time(delta), want, "{delta}");
        }
    }

    #[test]
    fn an_exp_in_the_past_is_refused() {
        let now = 2_000_000_000;
        for past in ["1999-01-01T00:00:00Z", "1000", &now.to_string()] {
            let e = check_window(parse_time("exp", past, now).unwrap(), None, now)
                .unwrap_err()
                .message;
            assert!(e.contains("--exp") && e.contains("past"), "{e}");
        }
        let e = check_window(now + 60, Some(now + 120), now)
            .unwrap_err()
            .message;
        assert!(e.contains("--nbf") && e.contains("not before --exp"), "{e}");
        assert!(check_window(now + 60, Some(now + 30), now).is_ok());
    }
}
