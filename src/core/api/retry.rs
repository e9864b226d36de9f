//! The retry rules, in one place.
//!
//! - Reads and idempotent writes retry 429, 500/502/503 and connection
//!   failures with jittered exponential backoff, honouring `Retry-After`.
//! - `new` and `rm` are never re-sent blindly: a 429 or a refused connection
//!   means nothing ran and is retried, but when the outcome is unknown (504,
//!   500, connection lost after sending) the caller must re-read `ls`.
//! - `share` commands also retry 422 "failed to connect"/"handshake failed"
//!   (a VM still booting) for a bounded time.

use std::time::Duration;

use backon::ExponentialBuilder;

// The class is a fact of each command's catalogue entry, so it lives in
// `command`; these rules only read it.
use super::command::Command;
pub use super::command::RetryClass;
use super::error::{ApiError, ErrorKind};

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send again, after at least this long if given.
    Retry(Option<Duration>),
    /// The failure is final.
    Fail,
    /// The command may or may not have run: re-read state, do not resend.
    Unknown,
}

/// Classifies a command by its catalogue entry; an unknown raw command is
/// never re-sent blindly.
pub fn class_of(cmd: &Command) -> RetryClass {
    super::command::spec(cmd.name()).map_or(RetryClass::NotIdempotent, |s| s.retry)
}

/// Decides what a failure means for a command of `class`.
pub fn decide(class: RetryClass, err: &ApiError) -> Decision {
    match (&err.kind, class) {
        // Refused before running: always safe to send again.
        (ErrorKind::RateLimited { retry_after }, _) => Decision::Retry(*retry_after),
        (ErrorKind::ConnectFailed, _) => Decision::Retry(None),
        (
            ErrorKind::Timeout | ErrorKind::ConnectionLost | ErrorKind::Internal(_),
            RetryClass::NotIdempotent,
        ) => Decision::Unknown,
        (ErrorKind::Internal(_) | ErrorKind::ConnectionLost | ErrorKind::Timeout, _) => {
            Decision::Retry(None)
        }
        (ErrorKind::CommandFailed, RetryClass::Share) if err.is_vm_not_ready() => {
            Decision::Retry(None)
        }
        _ => Decision::Fail,
    }
}

/// Whether an error from a `new` or `rm` leaves the outcome unknown.
pub fn outcome_unknown(err: &ApiError) -> bool {
    decide(RetryClass::NotIdempotent, err) == Decision::Unknown
}

/// Timing of retries. Defaults suit exe.dev; tests shrink them.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Attempts after the first, for transient failures.
    pub max_retries: usize,
    /// How long `share` commands keep retrying a booting VM.
    pub share_window: Duration,
    /// Per-request timeout: a little above exe.dev's 30 s deadline.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            max_retries: 6,
            share_window: Duration::from_secs(180),
            request_timeout: Duration::from_secs(35),
        }
    }
}

impl RetryPolicy {
    /// The backoff for a command class (backon).
    pub fn backoff(&self, class: RetryClass) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay);
        match class {
            RetryClass::Share => b
                .without_max_times()
                .with_total_delay(Some(self.share_window)),
            _ => b.with_max_times(self.max_retries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: ErrorKind, msg: &str) -> ApiError {
        ApiError {
            kind,
            command: "x".into(),
            command_name: "x".into(),
            message: msg.into(),
        }
    }

    #[test]
    fn rules() {
        use Decision::*;
        use RetryClass::*;
        let ra = Some(Duration::from_secs(2));
        assert_eq!(
            decide(Read, &e(ErrorKind::RateLimited { retry_after: ra }, "")),
            Retry(ra)
        );
        assert_eq!(
            decide(
                NotIdempotent,
                &e(ErrorKind::RateLimited { retry_after: None }, "")
            ),
            Retry(None)
        );
        assert_eq!(
            decide(NotIdempotent, &e(ErrorKind::ConnectFailed, "")),
            Retry(None)
        );
        assert_eq!(decide(NotIdempotent, &e(ErrorKind::Timeout, "")), Unknown);
        assert_eq!(
            decide(NotIdempotent, &e(ErrorKind::ConnectionLost, "")),
            Unknown
        );
        assert_eq!(
            decide(NotIdempotent, &e(ErrorKind::Internal(500), "")),
            Unknown
        );
        assert_eq!(decide(Read, &e(ErrorKind::Internal(500), "")), Retry(None));
        // 502 and 503 arrive as Internal (every 5xx but 504 does).
        assert_eq!(
            ApiError::kind_for_status(503, None),
            ErrorKind::Internal(503)
        );
        assert_eq!(
            decide(
                IdempotentWrite,
                &e(ApiError::kind_for_status(502, None), "")
            ),
            Retry(None)
        );
        assert_eq!(
            decide(NotIdempotent, &e(ApiError::kind_for_status(503, None), "")),
            Unknown
        );
        assert_eq!(decide(Read, &e(ErrorKind::ConnectionLost, "")), Retry(None));
        assert_eq!(
            decide(Share, &e(ErrorKind::CommandFailed, "failed to connect")),
            Retry(None)
        );
        assert_eq!(
            decide(Share, &e(ErrorKind::CommandFailed, "handshake failed")),
            Retry(None)
        );
        assert_eq!(
            decide(Share, &e(ErrorKind::CommandFailed, "VM not found")),
            Fail
        );
        assert_eq!(
            decide(
                IdempotentWrite,
                &e(ErrorKind::CommandFailed, "failed to connect")
            ),
            Fail
        );
        for k in [
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::BadRequest,
            ErrorKind::UnknownCommand,
        ] {
            assert_eq!(decide(Read, &e(k, "")), Fail);
        }
    }

    #[test]
    fn classes() {
        assert_eq!(
            class_of(&Command::New(Box::default())),
            RetryClass::NotIdempotent
        );
        assert_eq!(
            class_of(&Command::Rm { vms: vec![] }),
            RetryClass::NotIdempotent
        );
        assert_eq!(class_of(&Command::Ls { pattern: None }), RetryClass::Read);
        assert_eq!(
            class_of(&Command::SharePort {
                vm: "a".into(),
                port: 8000
            }),
            RetryClass::Share
        );
        assert_eq!(
            class_of(&Command::Raw(vec!["share".into(), "show".into()])),
            RetryClass::Read
        );
        assert_eq!(
            class_of(&Command::Raw(vec!["new".into()])),
            RetryClass::NotIdempotent
        );
    }
}
