//! What apply tells as it goes ([`Event`], to a [`Reporter`]) and what it
//! did in the end ([`ApplyReport`]); the terminal edge (`ui`) turns events
//! into progress bars, plain lines or JSON.

use std::sync::Arc;

use serde::Serialize;

use crate::core::plan::Action;

/// What happened to one VM, as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        vm: String,
        action: Action,
    },
    Step {
        vm: String,
        step: String,
    },
    Done {
        vm: String,
        action: Action,
        seconds: f64,
    },
    Failed {
        vm: String,
        action: Action,
        error: String,
    },
    Skipped {
        vm: String,
        action: Action,
        reason: String,
    },
}

/// Receives events; must be cheap and thread-safe.
pub type Reporter = Arc<dyn Fn(Event) + Send + Sync>;

/// A change carried out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Done {
    pub vm: String,
    pub action: Action,
}

/// A change that failed, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failed {
    pub vm: String,
    pub action: Action,
    pub error: String,
}

/// A change not started, and why (interrupted, or an earlier server failed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub vm: String,
    pub action: Action,
    pub reason: String,
}

/// The outcome of an apply.
#[derive(Debug, Default, Serialize)]
pub struct ApplyReport {
    pub done: Vec<Done>,
    pub failed: Vec<Failed>,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}
