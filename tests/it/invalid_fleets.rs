//! Invalid fleets as data: every `tests/fleets/invalid/*.yaml` is given to
//! the real binary (`exedev-k8s validate -f FILE`, as a user would), which
//! must refuse it, and what it prints is the file's snapshot
//! (`tests/it/snapshots/it__invalid_fleets__<file>.snap`): every error's
//! `file:line:column`, message and hint.
//!
//! A case is added by adding a file; its header comments say what it
//! shows. Header lines the tests read:
//! - `# schema: ...` (required, read by `fleet::schema::tests`): where the
//!   JSON Schema refuses the file, or that it cannot;
//! - `# secret: VALUE` (optional, repeatable): a secret written in the
//!   file that the output must never show.
//!
//! Besides the snapshot, every file is held to what holds for all of them:
//! exit code 1, nothing on stdout, every error located (`file:line:column`
//! with both numbers at least 1) and carrying a hint, no secret shown.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

fn invalid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleets/invalid")
}

/// The directory's fleet files, sorted (so the run is the same everywhere).
fn fleet_files() -> Vec<PathBuf> {
    let dir = invalid_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The values of the leading `# KEY: value` comment lines.
fn header<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("# {key}: ");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// `validate -f NAME` run in the file's directory, so messages name the
/// file as a user in that directory would see it; a cleared environment
/// (no colour, no secret from the caller's shell).
fn validate(name: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
        .args(["validate", "-f", name])
        .current_dir(invalid_dir())
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("cannot run exedev-k8s: {e}"))
}

/// The errors of the output, each `name:line:column: message` then
/// `  hint: ...`, separated by blank lines after one heading line.
fn check_every_error_is_located_with_a_hint(name: &str, stderr: &str) {
    let heading = format!("error: {name} is not a valid fleet:\n");
    let Some(body) = stderr.strip_prefix(&heading) else {
        panic!("{name}: the output does not start with {heading:?}:\n{stderr}");
    };
    for error in body.trim_end().split("\n\n") {
        let located = error
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .and_then(|r| {
                let mut parts = r.splitn(3, ':');
                let line: u64 = parts.next()?.parse().ok()?;
                let column: u64 = parts.next()?.parse().ok()?;
                Some(line >= 1 && column >= 1)
            });
        assert_eq!(located, Some(true), "{name}: not located: {error:?}");
        assert!(error.contains("\n  hint: "), "{name}: no hint: {error:?}");
    }
}

fn check_one(path: &Path) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("{}: not a UTF-8 name", path.display()));
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        !header(&text, "schema").is_empty(),
        "{name}: no `# schema:` header line"
    );
    let out = validate(name);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: accepted?\n{stdout}{stderr}"
    );
    assert!(stdout.is_empty(), "{name}: printed on stdout: {stdout}");
    check_every_error_is_located_with_a_hint(name, &stderr);
    for secret in header(&text, "secret") {
        let written = text.lines().skip_while(|l| l.starts_with('#'));
        assert!(
            written.clone().any(|l| l.contains(secret)),
            "{name}: secret {secret:?} is not in the fleet, the check proves nothing"
        );
        assert!(
            !stderr.contains(secret),
            "{name}: shows {secret:?}:\n{stderr}"
        );
    }
    let snapshot = name.trim_end_matches(".yaml");
    insta::with_settings!({
        input_file => path,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(snapshot, stderr);
    });
}

/// One test for the directory: each file is checked even when an earlier
/// one fails (so one run writes every pending snapshot), and the failures
/// are listed at the end.
#[test]
fn every_invalid_fleet_is_refused_with_its_snapshot() {
    let files = fleet_files();
    assert!(files.len() >= 60, "{} files: {files:?}", files.len());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| catch_unwind(AssertUnwindSafe(|| check_one(path))).is_err())
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

/// Every snapshot belongs to a fleet file: a renamed or deleted case does
/// not leave its old expectation behind.
#[test]
fn every_snapshot_has_its_fleet_file() {
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots");
    let names: Vec<String> = fleet_files()
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
        .collect();
    let entries =
        std::fs::read_dir(&snapshots).unwrap_or_else(|e| panic!("{}: {e}", snapshots.display()));
    for entry in entries {
        let file = entry
            .unwrap_or_else(|e| panic!("{}: {e}", snapshots.display()))
            .file_name();
        let file = file.to_string_lossy();
        if let Some(stem) = file
            .strip_prefix("it__invalid_fleets__")
            .and_then(|s| s.strip_suffix(".snap"))
        {
            assert!(
                names.iter().any(|n| n == stem),
                "{file} has no tests/fleets/invalid/{stem}.yaml"
            );
        }
    }
}
