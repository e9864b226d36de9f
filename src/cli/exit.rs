//! Exit codes: the contract with scripts and pipelines, in one place.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (with `plan --detailed-exitcode`: no changes) |
//! | 1 | any failure: a usage error, an invalid fleet, an API error, a stale plan, a missing secret, a path `check` found broken, a bug (panic) |
//! | 2 | `plan --detailed-exitcode`: the plan has changes; `status`: something differs from the fleet |
//! | 130 | interrupted twice (Ctrl-C or SIGTERM) |
//!
//! Nothing that failed ever exits 2, so `--detailed-exitcode` can be
//! trusted: clap's own usage-error code (2) is mapped to 1, as Terraform
//! does, and a panic (Rust's 101) to 1.

use std::process::ExitCode;

/// Every exit code and what it means, for the man pages' EXIT STATUS
/// section (the table above says the same for readers of the code).
pub const MEANINGS: &[(i32, &str)] = &[
    (
        0,
        "Success. With plan --detailed-exitcode: success and no changes.",
    ),
    (
        1,
        "Any failure: a usage error, an invalid fleet, an API error, a refused or stale plan, a missing secret, a path check found broken, a bug (a panic).",
    ),
    (
        2,
        "plan --detailed-exitcode: success, and the plan has changes. status: something differs from the fleet. Nothing that failed exits 2.",
    ),
    (130, "Interrupted twice (Ctrl-C)."),
];

/// Every failure.
pub const FAILURE: u8 = 1;
/// `plan --detailed-exitcode` with changes; `status` with a difference.
pub const CHANGES: u8 = 2;
/// Quit by a second Ctrl-C.
pub const INTERRUPTED: i32 = 130;

/// Debug builds panic on purpose when this is `main` (before parsing) or
/// `task` (in a spawned task whose failure is ignored), so the integration
/// tests can check what a panic exits with. Release builds ignore it.
pub const TEST_PANIC_ENV: &str = "EXEDEV_K8S_TEST_PANIC";

/// Prints clap's message (help and version on stdout, exit 0; anything else
/// on stderr, exit 1).
pub fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(usage_code(e))
}

/// 0 for `--help` and `--version`, [`FAILURE`] for every usage error
/// (clap itself would exit 2, which reads as "changes").
pub fn usage_code(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        _ => FAILURE,
    }
}

/// After Rust's usual panic message, says what it means and exits
/// [`FAILURE`] at once, on whichever thread panicked: a panic must never be
/// passed over (a task's `JoinError` ignored) and never exit 101. An apply
/// cut short converges when re-run, as after `kill -9`.
pub fn install_panic_report() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!(
            "error: exedev-k8s crashed (a bug: please report it with the message above); exit code {FAILURE}. If it crashed during apply, re-run apply: it re-reads exe.dev first"
        );
        std::process::exit(i32::from(FAILURE));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_1_and_help_exits_0() {
        use clap::Parser;
        let e = super::super::Cli::try_parse_from(["exedev-k8s", "plan", "--taget", "x"])
            .expect_err("unknown flag");
        assert_eq!(e.exit_code(), 2, "clap's own code, which we replace");
        assert_eq!(usage_code(&e), FAILURE);
        let e = super::super::Cli::try_parse_from(["exedev-k8s", "--help"]).expect_err("help");
        assert_eq!(usage_code(&e), 0);
        let e = super::super::Cli::try_parse_from(["exedev-k8s"]).expect_err("no command");
        assert_eq!(usage_code(&e), FAILURE);
    }

    /// The man pages' table names every code this module defines.
    #[test]
    fn every_code_has_a_meaning() {
        let codes: Vec<i32> = MEANINGS.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codes,
            [0, i32::from(FAILURE), i32::from(CHANGES), INTERRUPTED]
        );
    }
}
