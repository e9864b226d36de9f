//! `ssh::run` against a malicious VM: a stub `ssh` that answers with
//! endless output. It sets EXEDEV_K8S_SSH for the whole process (see
//! `main.rs`).

use std::time::{Duration, Instant};

use exedev_k8s::edges::ssh::{self, SshError, SshOptions};

/// Issue 22, finding 7 (SSH). Repro: an `ssh` wrapper answering for one VM
/// with a 1 GB "bootstrap state" made `ssh::run` read it whole (2.9 GB of
/// memory). Output past `ssh::MAX_OUTPUT_BYTES` (16 MiB) is cut off: the
/// command is stopped and the error names the VM, the command and the
/// limit. An endless stream ends the same way, and a flood on stderr is
/// kept to its tail while the answer still arrives.
#[tokio::test]
async fn a_vm_printing_without_end_is_cut_off_at_the_limit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = dir.path().join("ssh-evil");
    std::fs::write(
        &stub,
        "#!/bin/sh\n\
         case \"$*\" in\n\
           *endless*) exec cat /dev/zero ;;\n\
           *noisy*) head -c 50000000 /dev/zero >&2; echo fine ;;\n\
           *) echo small ;;\n\
         esac\n",
    )
    .expect("stub");
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _env = crate::ENV.lock().await;
    // SAFETY: this crate's tests hold `ENV` while they use the variable,
    // and nothing else in this binary reads the environment.
    unsafe { std::env::set_var(ssh::SSH_PROGRAM_ENV, &stub) };
    let opts = SshOptions {
        key: None,
        control_dir: dir.path().join("ctl"),
        retries: 0,
        retry_delay: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(60),
    };
    assert_eq!(
        ssh::run("demo-cp1", &["cat", "small"], &opts)
            .await
            .expect("small"),
        "small\n"
    );
    let started = Instant::now();
    let e = ssh::run("demo-cp1", &["cat", "endless"], &opts)
        .await
        .expect_err("cut off");
    assert!(matches!(e, SshError::TooMuchOutput { .. }), "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("demo-cp1") && shown.contains("16 MiB"),
        "{shown}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped promptly"
    );
    assert_eq!(
        ssh::MAX_OUTPUT_BYTES,
        16 << 20,
        "the message states the limit"
    );
    assert_eq!(
        ssh::run("demo-cp1", &["noisy"], &opts)
            .await
            .expect("noisy"),
        "fine\n"
    );
}
