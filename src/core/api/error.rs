//! What each exe.dev failure means and what the user should do about it.
//! Every API failure in the program is an [`ApiError`]; its `Display` names
//! the command and VM, the status and exe.dev's message; its
//! [`crate::base::hint::Hint`] is the advice.

use std::time::Duration;

use super::command::CommandError;

/// The kind of failure, by HTTP status or transport outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: exe.dev could not read the command.
    BadRequest,
    /// 401: token malformed, expired, not yet valid, unknown key or bad signature.
    Unauthorized,
    /// 403: the token's `cmds` does not grant this command.
    Forbidden,
    /// 404: unknown command.
    UnknownCommand,
    /// 405: not a POST.
    MethodNotAllowed,
    /// 413: body over 64 KiB.
    TooLarge,
    /// 422: the command ran and failed.
    CommandFailed,
    /// 429: per-key rate limit.
    RateLimited { retry_after: Option<Duration> },
    /// 500 and every other 5xx but 504, with its status (a 503 says
    /// "HTTP 503", not "HTTP 500").
    Internal(u16),
    /// 504: exceeded 30 s; the command may still have taken effect.
    Timeout,
    /// 200 with an `{"error":...}` body.
    ErrorIn200,
    /// Any other status.
    OtherStatus(u16),
    /// The request never reached exe.dev (connect failure): safe to resend.
    ConnectFailed,
    /// The connection failed after the request was sent: outcome unknown.
    ConnectionLost,
    /// The reply was not the JSON expected.
    BadReply,
    /// The command could not be built (checked before sending).
    Invalid(CommandError),
    /// `--endpoint` is not one this tool will send a token to: not HTTPS
    /// (plain HTTP only to a loopback host), or not a URL. Nothing was sent.
    BadEndpoint,
}

/// One failed `/exec` call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ApiError {
    pub kind: ErrorKind,
    /// The command, secrets redacted (see `Command::display`).
    pub command: String,
    /// The command name a token must grant (`share port`).
    pub command_name: String,
    /// exe.dev's own message, or the transport error.
    pub message: String,
}

impl ApiError {
    /// The HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        Some(match self.kind {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::UnknownCommand => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::TooLarge => 413,
            ErrorKind::CommandFailed => 422,
            ErrorKind::RateLimited { .. } => 429,
            ErrorKind::Internal(s) => s,
            ErrorKind::Timeout => 504,
            ErrorKind::ErrorIn200 => 200,
            ErrorKind::OtherStatus(s) => s,
            _ => return None,
        })
    }

    /// A short name of what went wrong: `HTTP 504`, `connection lost`.
    pub fn kind_name(&self) -> String {
        match (&self.kind, self.status()) {
            (_, Some(s)) => format!("HTTP {s}"),
            (ErrorKind::ConnectFailed, _) => "connection refused".into(),
            (ErrorKind::ConnectionLost, _) => "connection lost".into(),
            (ErrorKind::BadReply, _) => "bad reply".into(),
            (ErrorKind::BadEndpoint, _) => "bad endpoint".into(),
            _ => "invalid command".into(),
        }
    }

    /// Maps a status code to its kind.
    pub fn kind_for_status(status: u16, retry_after: Option<Duration>) -> ErrorKind {
        match status {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::UnknownCommand,
            405 => ErrorKind::MethodNotAllowed,
            413 => ErrorKind::TooLarge,
            422 => ErrorKind::CommandFailed,
            429 => ErrorKind::RateLimited { retry_after },
            504 => ErrorKind::Timeout,
            500..=599 => ErrorKind::Internal(status),
            other => ErrorKind::OtherStatus(other),
        }
    }

    /// Whether exe.dev's message says the VM does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::CommandFailed | ErrorKind::ErrorIn200)
            && self.message.contains("not found")
    }

    /// Whether a `share` command failed only because the VM is still booting.
    pub fn is_vm_not_ready(&self) -> bool {
        self.kind == ErrorKind::CommandFailed
            && (self.message.contains("failed to connect")
                || self.message.contains("handshake failed"))
    }

    /// What the user should do.
    pub fn advice(&self) -> String {
        match &self.kind {
            ErrorKind::BadRequest => "exe.dev could not parse the command; this is a bug in exedev-k8s if it built the command, please report it".into(),
            ErrorKind::Unauthorized => "the token was refused. Check that the signing key is registered (`ssh exe.dev ssh-key list`), that `exp` is not past and `nbf` not future (`exedev-k8s token inspect`), and that the exact compact JSON was signed (no whitespace or newline). A key held only by ssh-agent cannot sign: export it to a file".into(),
            ErrorKind::Forbidden => format!(
                "the token's `cmds` does not grant \"{}\" (grants are exact: \"share\" does not grant \"share port\"). Re-mint it with that command added, e.g. `exedev-k8s token mint --ssh-key KEY --cmds '...,{}'` or `token mint --for-fleet FLEET`",
                self.command_name, self.command_name
            ),
            ErrorKind::UnknownCommand => "exe.dev does not know this command; check `exedev-k8s exec -- help`, and that --endpoint is exe.dev's /exec URL (another URL answers 404 too)".into(),
            ErrorKind::MethodNotAllowed => "only POST is accepted; check --endpoint points at the /exec URL".into(),
            ErrorKind::TooLarge => "the request exceeds 64 KiB; shorten the setup script or values".into(),
            ErrorKind::CommandFailed => "the command ran and failed; the message above is exe.dev's".into(),
            ErrorKind::RateLimited { .. } => "rate limited. The limit is per signing key: lower --parallelism, wait, or sign independent workloads with separate SSH keys".into(),
            ErrorKind::Internal(_) => "exe.dev had an internal error; retry later, and contact support@exe.dev if it persists".into(),
            ErrorKind::Timeout => "the command exceeded exe.dev's 30 s limit but MAY STILL HAVE TAKEN EFFECT: re-read state (`exedev-k8s plan`) before retrying".into(),
            ErrorKind::ErrorIn200 => "exe.dev reported an error in a 200 reply; the command did not do what was asked".into(),
            ErrorKind::OtherStatus(300..=399) => "redirects are never followed: the request carries the API token (and a `new` carries setup scripts with secrets). Point --endpoint at the final URL if you trust it".into(),
            ErrorKind::OtherStatus(_) => "unexpected status from exe.dev; check --endpoint".into(),
            ErrorKind::ConnectFailed => "could not reach exe.dev; check the network and --endpoint".into(),
            ErrorKind::ConnectionLost => "the connection dropped after the request was sent: the command may or may not have run; re-read state before retrying".into(),
            ErrorKind::BadReply => "exe.dev's reply was not the JSON expected; check --endpoint, or report it if the API changed".into(),
            ErrorKind::Invalid(_) => "nothing was sent".into(),
            ErrorKind::BadEndpoint => "nothing was sent. Pass --endpoint (or EXE_DEV_ENDPOINT) as an https:// URL such as https://exe.dev/exec; plain http:// is accepted only for 127.0.0.1, [::1] or localhost (the emulator)".into(),
        }
    }

    fn render(&self) -> String {
        match (&self.kind, self.status()) {
            (ErrorKind::Invalid(e), _) => format!("cannot send `{}`: {e}", self.command),
            (ErrorKind::BadEndpoint, _) => format!("cannot use endpoint {}", self.message),
            (_, Some(status)) => format!(
                "`{}` failed with HTTP {status}: {}",
                self.command, self.message
            ),
            (_, None) => format!("`{}` failed: {}", self.command, self.message),
        }
    }
}

/// The advice goes beside the message, not inside it (see `crate::base::hint`).
impl crate::base::hint::Hint for ApiError {
    fn hint(&self) -> Option<String> {
        Some(self.advice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16) -> ApiError {
        ApiError {
            kind: ApiError::kind_for_status(status, None),
            command: "share port demo-web1 8080".into(),
            command_name: "share port".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn each_status_has_its_own_advice() {
        let codes = [307, 400, 401, 403, 404, 405, 413, 422, 429, 500, 504];
        let advice: std::collections::HashSet<String> =
            codes.iter().map(|&c| err(c).advice()).collect();
        assert_eq!(advice.len(), codes.len());
        assert!(err(401).advice().contains("ssh-key list"));
        assert!(err(403).advice().contains("share port"));
        assert!(err(429).advice().contains("per signing key"));
        assert!(err(504).advice().contains("MAY STILL HAVE TAKEN EFFECT"));
        for c in codes {
            assert_eq!(err(c).status(), Some(c));
            let shown = err(c).to_string();
            assert!(
                shown.contains(&c.to_string()) && shown.contains("demo-web1"),
                "{shown}"
            );
        }
    }
}
