//! The README's main job, as a newcomer runs it: `bash examples/demo.sh`
//! against the built-in emulator and its VM world must end with every
//! node Ready, a plan with no changes, and a teardown (refused, as it must
//! be, for the protected HA fleet).

use std::process::Command;

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
}
