//! The README's main job, as a newcomer runs it: `bash examples/demo.sh`
//! against the built-in emulator and its VM world must end with every
//! node Ready, a plan with no changes, and a teardown (refused, as it must
//! be, for the protected HA fleet).

use std::path::Path;
use std::process::{Command, Output};

fn demo(fleet: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/examples/demo.sh"))
        .arg(fleet)
        .current_dir(root)
        .env("EXEDEV_K8S_BIN", env!("CARGO_BIN_EXE_exedev-k8s"))
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo {fleet} failed:\n{text}");
    assert!(text.contains("demo complete"), "{text}");
    text
}

#[test]
fn the_main_job_ends_with_a_ready_cluster() {
    let out = demo("examples/minimal.yaml");
    assert!(
        out.contains("All 1 nodes Ready with the fleet's labels and taints; manifests present."),
        "{out}"
    );
    assert!(
        out.contains("No changes: the VMs on exe.dev match the fleet."),
        "{out}"
    );
    assert!(out.contains("Destroy complete: 1 done, 0 failed"), "{out}");
    // check ran against the cluster and passed, its namespace removed.
    assert!(
        out.contains("All paths passed.") && out.contains("namespace deleted"),
        "{out}"
    );
}

#[test]
fn the_ha_example_forms_three_servers_and_refuses_teardown() {
    let out = demo("examples/ha.yaml");
    assert!(
        out.contains("All 9 nodes Ready with the fleet's labels and taints; manifests present."),
        "{out}"
    );
    for vm in ["prod-cp1", "prod-cp2", "prod-cp3"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(vm) && l.contains("server") && l.contains("Ready")),
            "{vm} not a Ready server:\n{out}"
        );
    }
    assert!(
        out.contains("No changes: the VMs on exe.dev match the fleet."),
        "{out}"
    );
    assert!(out.contains("destroy refused"), "{out}");
    // The ingress pool serves the example's manifest through its proxy
    // URL, and check passes on all nine nodes, the share included.
    assert!(
        out.lines()
            .any(|l| l.starts_with("prod-ingress1 answers: ingress-netexec-")),
        "{out}"
    );
    assert!(
        out.contains("Applied 1 object(s) of the fleet's manifests"),
        "{out}"
    );
    assert!(
        out.contains("All paths passed.") && out.contains("namespace deleted"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("shared ports") && l.contains("2/2")),
        "{out}"
    );
}

/// Runs the demo with `PATH` set to `path` (bash itself found on the
/// test's own PATH), returning its output.
fn demo_with_path(path: &str) -> (Output, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let bash = which("bash");
    let out = Command::new(bash)
        .arg(format!("{root}/examples/demo.sh"))
        .current_dir(root)
        .env("PATH", path)
        .env("EXEDEV_K8S_BIN", env!("CARGO_BIN_EXE_exedev-k8s"))
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn which(program: &str) -> std::path::PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} on PATH"))
}

/// A machine without bubblewrap: the demo names what to install and stops
/// before starting anything, instead of running on with an empty endpoint.
#[test]
fn the_demo_names_a_missing_bwrap_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Only what the demo runs before its check: no bwrap, no ssh-keygen.
    std::os::unix::fs::symlink(which("dirname"), dir.path().join("dirname")).expect("symlink");
    let (out, text) = demo_with_path(&dir.path().display().to_string());
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("apt-get install bubblewrap"), "{text}");
    assert!(text.contains("apt-get install openssh-client"), "{text}");
    assert!(!text.contains("emulator"), "started something:\n{text}");
    assert!(!text.contains("invalid value"), "{text}");
}

/// bubblewrap present but unable to sandbox: the emulator refuses to start,
/// and the demo stops right after its error (no `--endpoint ''` error).
#[test]
fn the_demo_stops_when_the_emulator_cannot_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n",
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (out, text) = demo_with_path(&path);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("No permissions to create new namespace"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("the emulator failed to start (its error is above); the demo stops here"),
        "{text}"
    );
    assert!(!text.contains("invalid value"), "{text}");
    assert!(!text.contains("== validate"), "{text}");
}
