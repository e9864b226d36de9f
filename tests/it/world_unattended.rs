//! Unattended operation on the emulator's VM world (issue 21): a VM whose
//! SSH never answers is named within `--timeout`; `status` names each
//! broken state (cordoned node, nodes on another release, VMs SSH cannot
//! read, a kubeconfig left from a destroyed cluster) and exits 2; two
//! applies of one fleet at once change it once (the fleet's Lease); a
//! terminal's Ctrl-C mid-roll finishes the change in flight and leaves no
//! node cordoned.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use crate::common::world::fleet_harness;
use crate::common::{Harness, ok, text};
use serde_json::Value;

const V4: &str = "v1.31.4+k3s1";
const V6: &str = "v1.31.6+k3s1";

/// A fleet: a pinned release, `servers` servers, pool `web` of `agents`
/// with `maxUnavailable: 1`.
fn fleet(version: &str, servers: u32, agents: u32) -> String {
    format!(
        "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n  version: {version}\n  token: {{env: K3S_TOKEN}}\nnetwork:\n  tailscale:\n    tailnet: tail1234.ts.net\n    authKey: {{env: TS_AUTHKEY}}\ncontrolPlane:\n  count: {servers}\npools:\n  - name: web\n    count: {agents}\n    maxUnavailable: 1\n    labels: {{tier: web}}\n"
    )
}

const APPLY: &[&str] = &[
    "apply",
    "-f",
    "fleet.yaml",
    "--yes",
    "--wait",
    "--via-ssh-tunnel",
    "--timeout",
    "90s",
];

/// An `ssh` for `EXEDEV_K8S_SSH` that hangs (never answers, never fails)
/// for `vm` and is the world's own for the others.
fn hanging_ssh(h: &Harness, vm: &str) -> std::path::PathBuf {
    let real = h.emu.ssh_program().unwrap();
    let path = h.dir.path().join("ssh-hangs");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = {vm}.exe.xyz ] && exec sleep 3600; done\nexec '{}' \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `status --json`: its exit code and document.
fn status_json(h: &Harness, extra: &[&str], ssh: Option<&std::path::Path>) -> (i32, Value, String) {
    let mut args = vec!["status", "-f", "fleet.yaml", "--json", "--no-probe"];
    args.extend_from_slice(extra);
    let mut c = h.cmd(&args);
    if let Some(p) = ssh {
        c.env("EXEDEV_K8S_SSH", p);
    }
    let out = c.output().unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), doc, text(&out))
}

fn row<'a>(st: &'a Value, vm: &str) -> &'a Value {
    st["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == vm))
        .unwrap_or(&Value::Null)
}

/// A server whose SSH never answers the bootstrap-state read (apply waits
/// on each new server's bootstrap over SSH): `apply --timeout` still ends
/// on time, naming it; before, it waited with no bound. Status
/// names it as not read and is not healthy.
#[test]
fn a_vm_whose_ssh_never_answers_is_named_within_the_timeout() {
    let h = fleet_harness(|_| {});
    h.write("fleet.yaml", &fleet(V4, 3, 1));
    let hangs = hanging_ssh(&h, "demo-cp2");
    let start = Instant::now();
    let out = h
        .cmd(&[
            "apply",
            "-f",
            "fleet.yaml",
            "--yes",
            "--wait",
            "--via-ssh-tunnel",
            "--timeout",
            "25s",
        ])
        .env("EXEDEV_K8S_SSH", &hangs)
        .output()
        .unwrap();
    let took = start.elapsed();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        took < Duration::from_secs(50),
        "--timeout 25s took {took:?}:\n{t}"
    );
    assert!(t.contains("demo-cp2"), "{t}");
    assert!(
        t.contains("no answer from demo-cp2 over SSH within"),
        "named as not answering: {t}"
    );
    eprintln!("apply --timeout 25s with demo-cp2's SSH hanging ended after {took:?}");
    // Status: demo-cp2 could not be read, which is not healthy.
    h.wait_setup("demo-cp2", 1);
    let start = Instant::now();
    let (code, st, t) = status_json(&h, &[], Some(&hangs));
    let took = start.elapsed();
    assert_eq!(code, 2, "{t}");
    assert_eq!(st["healthy"], false, "{t}");
    let web1 = row(&st, "demo-cp2");
    assert!(
        web1["unknown"][0]
            .as_str()
            .is_some_and(|u| u.starts_with("bootstrap: ")),
        "{web1:#}"
    );
    assert!(took < Duration::from_secs(90), "status took {took:?}");
}

/// What an interrupted upgrade leaves, and what an operator meets after
/// it, each named by status with exit 2: a cordoned node, nodes on
/// another release than the fleet's, every VM unreadable over SSH, a
/// kubeconfig left from a destroyed cluster.
#[test]
fn status_names_each_broken_state_and_never_calls_it_healthy() {
    let h = fleet_harness(|_| {});
    h.write("fleet.yaml", &fleet(V4, 1, 2));
    ok(h.run(APPLY));
    // Off the tailnet, status takes the SSH tunnel on its own, and says so.
    let (code, st, t) = status_json(&h, &[], None);
    assert_eq!((code, &st["healthy"]), (0, &Value::Bool(true)), "{t}");
    assert!(
        t.contains("does not answer from this machine")
            && t.contains("through an SSH tunnel to demo-cp1"),
        "{t}"
    );
    assert_eq!(
        row(&st, "demo-web1")["checked"],
        serde_json::json!([
            "vm",
            "node",
            "labels_taints",
            "schedulable",
            "bootstrap",
            "release"
        ])
    );

    // A cordoned node (as an interrupted drain leaves it).
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(h.kube());
    h.rt.block_on(nodes.cordon("demo-web1")).unwrap();
    let (code, st, t) = status_json(&h, &[], None);
    assert_eq!(code, 2, "{t}");
    let p = row(&st, "demo-web1")["problems"].to_string();
    assert!(
        p.contains("cordoned (SchedulingDisabled)") && p.contains("kubectl uncordon demo-web1"),
        "{p}"
    );
    h.rt.block_on(nodes.uncordon("demo-web1")).unwrap();

    // The fleet moved on to V6; the nodes are still on V4.
    h.write("fleet.yaml", &fleet(V6, 1, 2));
    let (code, st, t) = status_json(&h, &[], None);
    assert_eq!(code, 2, "{t}");
    for vm in ["demo-cp1", "demo-web1", "demo-web2"] {
        let p = row(&st, vm)["problems"].to_string();
        assert!(
            p.contains(&format!("on k3s {V4}, not on the fleet's release {V6}")),
            "{vm}: {p}"
        );
    }
    h.write("fleet.yaml", &fleet(V4, 1, 2));

    // SSH fails for every VM: nothing read is not "healthy".
    let refuses = h.dir.path().join("ssh-refuses");
    std::fs::write(
        &refuses,
        "#!/bin/sh\necho 'Connection closed by 203.0.113.9 port 22' >&2\nexit 255\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&refuses, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, st, t) = status_json(&h, &[], Some(&refuses));
    assert_eq!(code, 2, "{t}");
    assert_eq!(st["healthy"], false, "{t}");
    for vm in ["demo-cp1", "demo-web1", "demo-web2"] {
        assert!(
            row(&st, vm)["unknown"].to_string().contains("bootstrap: "),
            "{vm}: {st:#}"
        );
    }
    let human = cli_ssh(&h, &["status", "-f", "fleet.yaml", "--no-probe"], &refuses);
    assert_eq!(human.status.code(), Some(2), "{}", text(&human));
    assert!(!text(&human).contains("healthy."), "{}", text(&human));

    // A kubeconfig left from a destroyed cluster: found by its CA.
    ok(h.run(&["destroy", "-f", "fleet.yaml", "--yes"]));
    assert!(h.dir.path().join(".exedev-k8s/demo/kubeconfig").exists());
    ok(h.run(&["apply", "-f", "fleet.yaml", "--yes"]));
    for vm in ["demo-cp1", "demo-web1", "demo-web2"] {
        h.wait_setup(vm, 1);
    }
    let (code, st, t) = status_json(&h, &["--via-ssh-tunnel"], None);
    assert_eq!(code, 2, "{t}");
    assert_eq!(st["healthy"], false, "{t}");
    let why = st["cluster_api_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("is from another cluster") && why.contains("exedev-k8s kubeconfig -f FLEET"),
        "{t}"
    );
    // Following the advice mends it.
    ok(h.run(&["kubeconfig", "-f", "fleet.yaml"]));
    let (code, _, t) = status_json(&h, &["--via-ssh-tunnel"], None);
    assert_eq!(code, 0, "{t}");
}

fn cli_ssh(h: &Harness, args: &[&str], ssh: &std::path::Path) -> std::process::Output {
    h.cmd(args).env("EXEDEV_K8S_SSH", ssh).output().unwrap()
}

/// Lines of a child's stdout, read on a thread, until it ends.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// Two applies of one upgrade 0.3 s apart: one holds the fleet's Lease and
/// upgrades every node once; the other waits for it, plans again and has
/// nothing to do. A third that will not wait is refused, naming the holder
/// and how to break a stale lease.
#[test]
fn two_applies_at_once_change_the_fleet_once() {
    let h = fleet_harness(|_| {});
    h.write("fleet.yaml", &fleet(V4, 1, 2));
    ok(h.run(APPLY));
    h.write("fleet.yaml", &fleet(V6, 1, 2));
    let spawn = |h: &Harness| {
        h.cmd(APPLY)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut a = spawn(&h);
    std::thread::sleep(Duration::from_millis(300));
    let b = spawn(&h);
    // Once one of them upgrades, a third with a short --lock-timeout is
    // refused.
    let lines = lines_of(&mut a);
    let mut seen_a = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let any_cordoned = h
            .vm_names()
            .iter()
            .any(|vm| h.k3s(vm)["unschedulable"] == true);
        if any_cordoned {
            break;
        }
        while let Ok(l) = lines.try_recv() {
            seen_a.push(l);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let third = h.run(&[
        "apply",
        "-f",
        "fleet.yaml",
        "--yes",
        "--via-ssh-tunnel",
        "--lock-timeout",
        "1s",
    ]);
    let t3 = text(&third);
    assert_eq!(third.status.code(), Some(1), "{t3}");
    assert!(t3.contains("is being changed by another run"), "{t3}");
    assert!(
        t3.contains(" pid ") && t3.contains("--force-unlock "),
        "{t3}"
    );
    let id = t3
        .split("--force-unlock ")
        .nth(1)
        .map(|s| s.chars().take(8).collect::<String>())
        .unwrap_or_default();
    // --force-unlock with another ID breaks nothing.
    let wrong = h.run(&[
        "apply",
        "-f",
        "fleet.yaml",
        "--yes",
        "--via-ssh-tunnel",
        "--lock-timeout",
        "1s",
        "--force-unlock",
        "00000000",
    ]);
    assert!(
        text(&wrong).contains(&format!("held under ID {id}")),
        "{}",
        text(&wrong)
    );

    let a_status = a.wait().unwrap();
    seen_a.extend(lines.iter());
    let a_err = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut a.stderr.take().unwrap(), &mut s).unwrap();
        s
    };
    let b_out = b.wait_with_output().unwrap();
    let a_text = seen_a.join("\n") + "\n" + &a_err;
    let b_text = text(&b_out);
    assert!(a_status.success(), "{a_text}");
    assert!(b_out.status.success(), "{b_text}");
    // Every node upgraded exactly once, by one of the two.
    let upgrades = |t: &str| {
        t.lines()
            .filter(|l| l.ends_with(": upgrade started"))
            .count()
    };
    assert_eq!(
        upgrades(&a_text) + upgrades(&b_text),
        3,
        "A:\n{a_text}\nB:\n{b_text}"
    );
    let (waited, _) = if upgrades(&a_text) == 3 {
        (&b_text, &a_text)
    } else {
        (&a_text, &b_text)
    };
    assert!(
        waited.contains("waiting for lease kube-system/exedev-k8s-demo"),
        "{waited}"
    );
    assert!(waited.contains("Nothing to do."), "{waited}");
    for vm in h.vm_names() {
        let k = h.k3s(&vm);
        assert_eq!(
            (k["version"].as_str(), k["unschedulable"].as_bool()),
            (Some(V6), Some(false)),
            "{vm}: {k:#}"
        );
    }
}

/// Ctrl-C typed on the terminal (`script` gives apply a pseudo-terminal;
/// ^C on it is SIGINT to the foreground process group) in the middle of a
/// rolling upgrade: the change in flight finishes (its ssh sessions and
/// tunnel are not in that group), nothing new starts, and no node is left
/// cordoned or down.
#[test]
fn ctrl_c_on_a_terminal_mid_roll_finishes_the_change_in_flight() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: `script` (util-linux) is needed for a pseudo-terminal");
        return;
    }
    let h = fleet_harness(|w| {
        // Each restart slow enough to be caught in flight.
        w.timings.restart_ms = 1500;
    });
    h.write("fleet.yaml", &fleet(V4, 1, 3));
    ok(h.run(APPLY));
    h.write("fleet.yaml", &fleet(V6, 1, 3));
    let line = APPLY.join(" ");
    let mut child = h.cmd(&[]).spawn_script(&line);
    // Wait until an agent is out of service mid-roll (cordoned), then type
    // Ctrl-C on the terminal.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut caught = None;
    while Instant::now() < deadline && caught.is_none() {
        caught = ["demo-web1", "demo-web2", "demo-web3"]
            .into_iter()
            .find(|vm| h.k3s(vm)["unschedulable"] == true);
        std::thread::sleep(Duration::from_millis(20));
    }
    let caught = caught.expect("an agent was cordoned mid-roll");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let t = text(&out);
    assert!(t.contains("Ctrl-C: finishing the changes in flight"), "{t}");
    assert!(
        !t.contains("exit code -1"),
        "an ssh session was killed: {t}"
    );
    // The node caught in flight finished its upgrade and is back in
    // service; no node anywhere is cordoned or down; the rest were skipped
    // and are still on V4.
    let k = h.k3s(caught);
    assert_eq!(k["version"], V6, "{caught}: {k:#}\n{t}");
    let mut skipped = 0;
    for vm in h.vm_names() {
        let k = h.k3s(&vm);
        assert_eq!(k["ready"], true, "{vm}: {k:#}\n{t}");
        assert_eq!(k["unschedulable"], false, "{vm} left cordoned: {k:#}\n{t}");
        if k["version"] == V4 {
            skipped += 1;
        }
    }
    assert!(skipped >= 1, "the roll stopped: {t}");
    // Re-running finishes it.
    ok(h.run(APPLY));
}

/// Runs a command line under `script`, which gives it a pseudo-terminal
/// and copies its stdin to the terminal (so a `\x03` written to it is a
/// Ctrl-C typed there).
trait SpawnScript {
    fn spawn_script(&mut self, line: &str) -> std::process::Child;
}

impl SpawnScript for std::process::Command {
    fn spawn_script(&mut self, line: &str) -> std::process::Child {
        let bin = env!("CARGO_BIN_EXE_exedev-k8s");
        let cmd = std::process::Command::new("script");
        let mut c = cmd;
        c.args(["-q", "-e", "-c", &format!("'{bin}' {line}"), "/dev/null"]);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = self.get_current_dir() {
            c.current_dir(d);
        }
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// SIGTERM (a CI runner cancelling the job) mid-roll is a first Ctrl-C:
/// the change in flight goes on. A second one quits at once (exit 130),
/// naming the change it left in flight with its last step, and how to
/// resume (with the lease's ID); resuming with it converges.
#[test]
fn sigterm_finishes_in_flight_and_a_second_names_what_it_left() {
    let h = fleet_harness(|w| w.timings.restart_ms = 3000);
    h.write("fleet.yaml", &fleet(V4, 1, 2));
    ok(h.run(APPLY));
    h.write("fleet.yaml", &fleet(V6, 1, 2));
    let child = h
        .cmd(APPLY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut caught = None;
    while Instant::now() < deadline && caught.is_none() {
        caught = ["demo-web1", "demo-web2"]
            .into_iter()
            .find(|vm| h.k3s(vm)["unschedulable"] == true);
        std::thread::sleep(Duration::from_millis(20));
    }
    let caught = caught.expect("an agent was cordoned mid-roll");
    let term = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(term(child.id()).success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(term(child.id()).success());
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(130), "{t}");
    assert!(
        t.contains("SIGTERM: finishing the changes in flight"),
        "{t}"
    );
    assert!(
        t.contains("SIGTERM again: quitting now. Left in flight (1)"),
        "{t}"
    );
    assert!(
        t.contains(&format!("{caught} (upgrade): stopped after")),
        "{t}"
    );
    let resume = t
        .lines()
        .find_map(|l| l.split("then `").nth(1))
        .and_then(|l| l.split('`').next())
        .unwrap_or_default()
        .to_string();
    assert!(resume.contains("--force-unlock "), "{t}");
    // Running the printed command (through the tunnel) converges at once,
    // without waiting for the lease to expire.
    let mut args: Vec<&str> = resume.split_whitespace().skip(1).collect();
    args.extend(["--yes", "--wait", "--via-ssh-tunnel", "--timeout", "90s"]);
    let start = Instant::now();
    let again = ok(h.run(&args));
    assert!(start.elapsed() < Duration::from_secs(55), "{again}");
    assert!(again.contains("breaking lease"), "{again}");
    for vm in h.vm_names() {
        let k = h.k3s(&vm);
        assert_eq!(
            (k["version"].as_str(), k["unschedulable"].as_bool()),
            (Some(V6), Some(false)),
            "{vm}: {k:#}"
        );
    }
}
