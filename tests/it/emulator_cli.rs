//! `exedev-k8s emulator` as a user runs it (a separate process printing its
//! URL, persisting state across restarts), `exec` against it, and `schema`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
}

/// The emulator process, killed when dropped: a failing test leaves no
/// emulator behind.
struct Emu(Child);

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the emulator and returns it with the URL it printed first.
fn start(dir: &std::path::Path) -> (Emu, String) {
    let mut child = bin()
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--boot-ms",
            "20",
            "--state",
        ])
        .arg(dir.join("state.json"))
        .arg("--authorized-keys")
        .arg(dir.join("k.pub"))
        .arg("--log")
        .arg(dir.join("requests.jsonl"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("http://127.0.0.1:") && line.trim_end().ends_with("/exec"),
        "{line}"
    );
    (Emu(child), line.trim().to_string())
}

fn exec(url: &str, key: &std::path::Path, words: &[&str]) -> std::process::Output {
    bin()
        .args(["exec", "--endpoint", url, "--ssh-key"])
        .arg(key)
        .arg("--")
        .args(words)
        .env_remove("EXE_DEV_API_KEY")
        .output()
        .unwrap()
}

#[test]
fn emulator_process_serves_exec_and_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::common::keygen(dir.path(), "k", "ed25519", &[], "");
    let (emu, url) = start(dir.path());
    let out = exec(&url, &key, &["new", "--name=persist-me", "--tag=keep"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["ssh_dest"], "persist-me.exe.xyz");

    // A failing command: non-zero exit, status and advice named.
    let out = exec(&url, &key, &["new", "--name=persist-me"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("422") && err.contains("not available") && err.contains("hint:"),
        "{err}"
    );
    let out = exec(&url, &key, &["frobnicate"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("unknown lobby command")
    );

    drop(emu);
    let (emu, url) = start(dir.path());
    let out = exec(&url, &key, &["ls"]);
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ls["vms"][0]["vm_name"], "persist-me");
    assert_eq!(ls["vms"][0]["tags"][0], "keep");
    drop(emu);

    // The request log has one JSON line per request and no token.
    let log = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    assert_eq!(
        log.lines().count(),
        3,
        "new, new (422), ls: the unknown command never left the CLI"
    );
    assert!(!log.contains("exe0."));
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["status"].is_u64());
    }
}

/// `exedev-k8s exec -- ls | true`: a reader that goes away (here before
/// the reply arrives) cuts the output, as with any Unix tool; it is not a
/// panic (exit 101).
#[test]
fn a_reader_that_goes_away_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::common::keygen(dir.path(), "k", "ed25519", &[], "");
    let (emu, url) = start(dir.path());
    let out = exec(&url, &key, &["new", "--name=pipe-vm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shell = format!(
        "set -o pipefail; {:?} exec --endpoint {url} --ssh-key {:?} -- ls --json | true",
        env!("CARGO_BIN_EXE_exedev-k8s"),
        key
    );
    let out = Command::new("bash")
        .args(["-c", &shell])
        .env_remove("EXE_DEV_API_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status.code());
    assert!(!err.contains("panicked"), "{err}");
    drop(emu);
}

#[test]
fn schema_describes_the_fleet_file() {
    let out = bin().arg("schema").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    for field in [
        "apiVersion",
        "controlPlane",
        "pools",
        "share",
        "authKey",
        "tailnet",
    ] {
        assert!(text.contains(field), "schema lacks {field}");
    }
}

/// A script reads the emulator's URL from its first line of stdout: the
/// URL is printed only once the state has loaded, so a corrupt `--state`
/// exits with nothing on stdout and the file named on stderr.
#[test]
fn a_corrupt_state_file_fails_before_the_url_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::keygen(dir.path(), "k", "ed25519", &[], "");
    std::fs::write(dir.path().join("state.json"), "{ not json").unwrap();
    let out = bin()
        .args(["emulator", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("state.json"))
        .arg("--authorized-keys")
        .arg(dir.path().join("k.pub"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no URL printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("state.json"), "{err}");
}

/// Issue 22, finding 9. Repro: `emulator --listen 0.0.0.0:PORT` printed no
/// warning, though other machines then reach `/exec` and the VM proxies
/// over plain HTTP. It says, on stderr (stdout's first line stays the URL),
/// what is exposed and what is not; on 127.0.0.1 it says nothing.
#[test]
fn listening_beyond_loopback_says_what_is_exposed() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::keygen(dir.path(), "k", "ed25519", &[], "");
    for (listen, warned) in [("0.0.0.0:0", true), ("127.0.0.1:0", false)] {
        let mut child = bin()
            .args(["emulator", "--listen", listen, "--authorized-keys"])
            .arg(dir.path().join("k.pub"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.trim_end().ends_with("/exec"), "{line}");
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if warned {
            for what in [
                "warning:",
                "plain HTTP",
                "/exec",
                "/_proxy/",
                "loopback peers only",
            ] {
                assert!(err.contains(what), "{what}: {err}");
            }
        } else {
            assert!(!err.contains("warning"), "{err}");
        }
    }
}
