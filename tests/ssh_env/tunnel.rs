//! `ssh::tunnel` against a stub ssh that listens on the `-L` port (with
//! python3) or fails with 255. It sets EXEDEV_K8S_SSH for the whole
//! process (see `main.rs`).

use std::time::Duration;

use exedev_k8s::edges::ssh::{self, SshOptions};

fn stub(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("stub");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test]
async fn tunnel_comes_up_closes_on_drop_and_reports_failure() {
    let python_ok = std::process::Command::new("python3")
        .args(["-c", "pass"])
        .status()
        .is_ok_and(|s| s.success());
    if !python_ok {
        eprintln!("skipped: python3 is needed for the listening stub");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SshOptions {
        key: None,
        control_dir: dir.path().join("ctl"),
        retries: 1,
        retry_delay: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(60),
    };
    let listening = stub(
        dir.path(),
        "ssh-listen",
        &format!(
            "printf '%s\\n' \"$@\" > '{}/argv'\n\
             while [ $# -gt 0 ]; do [ \"$1\" = -L ] && port=$(echo \"$2\" | cut -d: -f2); shift; done\n\
             exec python3 -c 'import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((\"127.0.0.1\",int(sys.argv[1])))\ns.listen(5)\ntime.sleep(60)' \"$port\"\n",
            dir.path().display()
        ),
    );
    let _env = crate::ENV.lock().await;
    // SAFETY: this crate's tests hold `ENV` while they use the variable,
    // and nothing else in this binary reads the environment.
    unsafe { std::env::set_var(ssh::SSH_PROGRAM_ENV, &listening) };
    let t = ssh::tunnel("demo-cp1", "127.0.0.1:6443", &opts)
        .await
        .expect("tunnel up");
    let port = t.local_port;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    );
    let argv = std::fs::read_to_string(dir.path().join("argv")).expect("argv");
    assert!(
        argv.starts_with(&format!("-N\n-L\n127.0.0.1:{port}:127.0.0.1:6443\n")),
        "{argv}"
    );
    assert!(argv.contains("HostKeyAlias=exe.dev\n"), "{argv}");
    assert!(argv.ends_with("\ndemo-cp1.exe.xyz\n"), "{argv}");
    drop(t);
    let mut closed = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closed,
        "port {port} still open after the tunnel was dropped"
    );

    let failing = stub(
        dir.path(),
        "ssh-fail",
        &format!(
            "echo x >> '{}/calls'\necho 'Connection closed by remote host' >&2\nexit 255\n",
            dir.path().display()
        ),
    );
    // SAFETY: as above.
    unsafe { std::env::set_var(ssh::SSH_PROGRAM_ENV, &failing) };
    let err = ssh::tunnel("demo-cp1", "127.0.0.1:6443", &opts)
        .await
        .expect_err("no tunnel")
        .to_string();
    assert!(err.contains("demo-cp1.exe.xyz"), "{err}");
    assert!(err.contains("255"), "{err}");
    assert!(err.contains("Connection closed by remote host"), "{err}");
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
    assert_eq!(calls.lines().count(), 2, "one retry");
}
