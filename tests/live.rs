//! Live end-to-end test against the real exe.dev and a real tailnet:
//! apply the minimal example, fetch the kubeconfig, wait until Ready, show
//! status, destroy. It creates and deletes a real VM, so it never runs by
//! default:
//!
//!   EXE_DEV_SSH_KEY=~/.ssh/exe_dev_api TS_AUTHKEY=tskey-auth-... \
//!     cargo test --test live -- --ignored --nocapture
//!
//! (or EXE_DEV_API_KEY instead of EXE_DEV_SSH_KEY; the SSH key is needed for
//! the kubeconfig fetch either way). This machine must be on the tailnet, or
//! pass EXEDEV_K8S_LIVE_TUNNEL=1 to reach the API through an SSH tunnel.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
}

fn run(dir: &std::path::Path, args: &[&str]) {
    let status = bin()
        .args(args)
        .current_dir(dir)
        .status()
        .expect("run exedev-k8s");
    assert!(status.success(), "exedev-k8s {args:?} failed");
}

#[test]
#[ignore = "creates real exe.dev VMs: needs EXE_DEV_API_KEY or EXE_DEV_SSH_KEY, and TS_AUTHKEY"]
fn minimal_fleet_on_real_exe_dev() {
    let creds = std::env::var_os("EXE_DEV_API_KEY").is_some()
        || std::env::var_os("EXE_DEV_SSH_KEY").is_some();
    assert!(
        creds && std::env::var_os("TS_AUTHKEY").is_some(),
        "set EXE_DEV_API_KEY or EXE_DEV_SSH_KEY, and TS_AUTHKEY, to run the live test"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix: u32 = rand::random::<u32>() % 100_000;
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/minimal.yaml"
    ))
    .expect("example");
    let fleet = src.replace("name: demo", &format!("name: live{suffix}"));
    std::fs::write(dir.path().join("fleet.yaml"), fleet).expect("write fleet");
    let d = dir.path();
    run(d, &["validate", "-f", "fleet.yaml"]);
    run(d, &["plan", "-f", "fleet.yaml"]);
    let applied = bin()
        .args(["apply", "-f", "fleet.yaml", "--yes"])
        .current_dir(d)
        .status();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(applied.as_ref().is_ok_and(|s| s.success()), "apply failed");
        let mut kc = vec!["kubeconfig", "-f", "fleet.yaml"];
        if std::env::var_os("EXEDEV_K8S_LIVE_TUNNEL").is_some() {
            kc.push("--via-ssh-tunnel");
        }
        run(d, &kc);
        run(
            d,
            &["status", "-f", "fleet.yaml", "--wait", "--timeout", "15m"],
        );
        run(d, &["plan", "-f", "fleet.yaml", "--detailed-exitcode"]);
    }));
    // Always clean up.
    run(
        d,
        &["destroy", "-f", "fleet.yaml", "--yes", "--purge-secrets"],
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
