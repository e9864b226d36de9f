//! Fleet texts the unit tests share: the smallest valid fleet is written
//! once, in `tests/fleets/minimal.yaml` (which the integration tests read
//! too), and each test adds or changes only what it is about.

use super::{Fleet, parse};

/// The smallest valid fleet: cluster `demo`, k3s channel `stable`, one
/// server, no pools, the Tailscale key from `TS_AUTHKEY`. Ten lines, so
/// what a test appends starts on line 11.
pub const MINIMAL: &str = include_str!("../../../tests/fleets/minimal.yaml");

/// [`MINIMAL`] followed by `extra` (top-level keys: `defaults:`,
/// `controlPlane:`, `pools:`).
pub fn minimal_with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// [`MINIMAL`] with `from` replaced by `to`; panics when `from` is not in
/// it (an edit that changes nothing would test the minimal fleet instead).
pub fn minimal_replacing(from: &str, to: &str) -> String {
    assert!(
        MINIMAL.contains(from),
        "{from:?} is not in the minimal fleet"
    );
    MINIMAL.replace(from, to)
}

/// `text` parsed; a test fleet that does not parse is a broken test, so
/// this panics with every error.
pub fn parsed(text: &str) -> Fleet {
    match parse(text, "fleet.yaml") {
        Ok(f) => f,
        Err(e) => panic!("the test fleet is invalid:\n{e}\n{text}"),
    }
}

/// [`minimal_with`] parsed.
pub fn fleet_with(extra: &str) -> Fleet {
    parsed(&minimal_with(extra))
}
