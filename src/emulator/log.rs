//! The request log: every request the emulator answered, secrets removed,
//! so that tests (and people debugging a fleet run) can see exactly which
//! commands a tool sent and what came back, without the log itself leaking
//! setup scripts or tokens.

pub use crate::core::api::command::redact_words;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Status recorded when the emulator dropped the connection instead of
/// replying (fault injection).
pub const STATUS_DROPPED: u16 = 0;

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When the request arrived, Unix milliseconds.
    pub unix_ms: u64,
    /// SHA-256 fingerprint of the signing key, once authenticated.
    pub key_fingerprint: Option<String>,
    /// The command words, redacted by [`redact_words`]; empty when the body
    /// could not be split.
    pub words: Vec<String>,
    /// The command's full name (`share port`) when it is a known command.
    pub command: Option<String>,
    /// The HTTP status sent, or [`STATUS_DROPPED`].
    pub status: u16,
}

/// The in-memory log plus its optional JSON-lines file.
#[derive(Debug)]
pub struct RequestLog {
    records: Mutex<Vec<RequestRecord>>,
    file: Option<PathBuf>,
}

impl RequestLog {
    /// A log that also appends to `file` when given.
    pub fn new(file: Option<PathBuf>) -> Self {
        RequestLog {
            records: Mutex::new(Vec::new()),
            file,
        }
    }

    /// Records one request; a failing log file is reported on stderr and
    /// never fails the request.
    pub fn push(&self, record: RequestRecord) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.file {
            let line = serde_json::to_string(&record).unwrap_or_default();
            let res = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = res {
                eprintln!("emulator: cannot append to {}: {e}", path.display());
            }
        }
        records.push(record);
    }

    /// Every record so far, oldest first.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn redacts_scripts_and_tokens() {
        let out = redact_words(&w(&[
            "new",
            "--setup-script=echo secret",
            "--name=vm-one",
            "--setup-script",
            "echo other",
            "--registry-auth=u:p",
        ]));
        assert_eq!(
            out,
            w(&[
                "new",
                "--setup-script=<11 bytes redacted>",
                "--name=vm-one",
                "--setup-script",
                "<10 bytes redacted>",
                "--registry-auth=<3 bytes redacted>",
            ])
        );
        let out = redact_words(&w(&["exe0-to-exe1", "--vm=x", "exe0.abc.def"]));
        assert_eq!(out, w(&["exe0-to-exe1", "--vm=x", "<token>"]));
    }
}
