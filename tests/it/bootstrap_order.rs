//! The binary against the emulator and a stand-in `ssh` that answers with
//! each VM's bootstrap state (the emulator's VMs run no scripts): the first
//! apply orders servers by their bootstrap state, starts agents once the
//! first server is ready, stops at a failed bootstrap naming its step and
//! log, `apply --wait` on a new cluster creates it before it needs the API,
//! VMs leave the tailnet before `rm` without a failed logout blocking it,
//! and `status` shows every VM's bootstrap.

use std::path::Path;
use std::time::Duration;

use crate::common::{Harness, text};

/// The harness with this file's Tailscale key.
struct Env(Harness);

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

impl Env {
    fn new() -> Env {
        Env(crate::common::harness(|_| {}).secrets(&[("TS_AUTHKEY", "tskey-auth-x")]))
    }

    /// Makes the stand-in `ssh` answer for `vm` with this state file.
    fn bootstrap(&self, vm: &str, state: &str) {
        write_atomic(&self.path(&format!("bootstrap-{vm}")), state);
    }

    /// When the emulator received `new` for `vm`.
    fn new_at(&self, vm: &str) -> Option<u64> {
        self.emu()
            .requests()
            .into_iter()
            .find(|r| {
                r.command.as_deref() == Some("new") && r.words.iter().any(|w| w.ends_with(vm))
            })
            .map(|r| r.unix_ms)
    }

    /// (unix ms, vm, remote command) of every stand-in `ssh` call.
    fn ssh_calls(&self) -> Vec<(u64, String, String)> {
        crate::common::ssh_calls(self.dir.path())
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                Some((
                    parts.next()?.parse().ok()?,
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                ))
            })
            .collect()
    }
}

fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

const AGENTS: [&str; 6] = [
    "acme-web1",
    "acme-web2",
    "acme-web3",
    "acme-batch1",
    "acme-batch2",
    "acme-gpu1",
];

#[test]
fn first_apply_orders_servers_by_bootstrap_and_overlaps_agents() {
    let env = Env::new();
    // cp-2's bootstrap runs until the test says otherwise.
    env.bootstrap(
        "acme-cp2",
        "state: running\nstep: join the tailnet\n--- exedev-k8s bootstrap log ---\n",
    );
    let path = env.path("bootstrap-acme-cp2");
    let flip = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2500));
        let done = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        write_atomic(&path, "state: done\nstep: \n");
        done
    });
    let out = env.run(&["apply", "-f", "base.yaml", "--yes"]);
    let cp2_done = flip.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let calls = env.ssh_calls();
    let first_done_read = |vm: &str| {
        calls
            .iter()
            .find(|(_, h, c)| h == vm && c.contains("bootstrap-state"))
            .map(|(t, _, _)| *t)
            .unwrap_or_else(|| panic!("{vm}'s bootstrap state never read"))
    };
    let cp1_ready = first_done_read("acme-cp1");
    let (cp2, cp3) = (
        env.new_at("acme-cp2").unwrap(),
        env.new_at("acme-cp3").unwrap(),
    );
    // Each further server only once the previous one's bootstrap is done.
    assert!(env.new_at("acme-cp1").unwrap() < cp1_ready && cp1_ready < cp2);
    assert!(cp3 > cp2_done, "cp-3 created while cp-2 was still joining");
    // Agents: not before the first server is ready, and while cp-2 joins.
    let agents: Vec<u64> = AGENTS.iter().map(|a| env.new_at(a).unwrap()).collect();
    assert!(
        agents.iter().all(|t| *t > cp1_ready),
        "an agent before cp-1 was ready"
    );
    assert!(
        agents.iter().any(|t| *t < cp3),
        "agents waited for every server instead of overlapping the joins"
    );
    // The wait's progress names the step it saw.
    assert!(
        text(&out).contains("bootstrap running (join the tailnet)"),
        "{}",
        text(&out)
    );
    // Every joiner contacts a server that was up when it was created.
    let state = env.emu().state();
    for vm in ["acme-cp2", "acme-cp3", "acme-web1"] {
        let script = state.vms[vm].setup_script.clone().unwrap();
        assert!(script.contains("JOIN='acme-cp1.tail1234.ts.net'"), "{vm}");
    }
}

#[test]
fn a_failed_first_server_stops_the_apply_with_its_step_and_log() {
    let env = Env::new();
    env.bootstrap(
        "acme-cp1",
        "state: failed\nstep: join the tailnet\n--- exedev-k8s bootstrap log ---\nbackend error: invalid key \"tskey-...\"\n",
    );
    let out = env.run(&["apply", "-f", "base.yaml", "--yes"]);
    assert!(!out.status.success());
    let all = text(&out);
    assert!(
        all.contains("the setup script of acme-cp1 failed at step \"join the tailnet\""),
        "{all}"
    );
    assert!(all.contains("backend error: invalid key"), "{all}");
    assert!(env.new_at("acme-cp2").is_none());
    for a in AGENTS {
        assert!(
            env.new_at(a).is_none(),
            "{a} created without a server to join"
        );
    }
    assert!(all.contains("no server is up for it to join"), "{all}");
}

#[test]
fn a_refused_ssh_key_stops_the_wait_at_once() {
    let env = Env::new();
    std::fs::write(env.path("ssh-denied"), "").unwrap();
    let started = std::time::Instant::now();
    let out = env.run(&["apply", "-f", "base.yaml", "--yes"]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited on a refused key"
    );
    let all = text(&out);
    assert!(
        all.contains("cannot read the bootstrap state of acme-cp1")
            && all.contains("Permission denied"),
        "{all}"
    );
    assert!(all.contains("registered with exe.dev"), "{all}");
    assert!(env.new_at("acme-cp2").is_none());
}

#[test]
fn apply_wait_on_a_new_cluster_creates_it_before_it_needs_the_api() {
    let env = Env::new();
    let out = env.run(&[
        "apply",
        "-f",
        "base.yaml",
        "--yes",
        "--wait",
        "--timeout",
        "20s",
    ]);
    // No kubeconfig can be had from the stand-in: --wait fails, but only
    // after every VM was created and every server's bootstrap seen done.
    assert_eq!(env.emu().state().vms.len(), 9, "{}", text(&out));
    assert!(!out.status.success());
    let all = text(&out);
    assert!(all.contains("cannot --wait"), "{all}");
    assert!(
        all.contains("relying on the VM's own readiness checks"),
        "{all}"
    );
}

#[test]
fn vms_leave_the_tailnet_before_rm_and_a_failed_logout_never_blocks() {
    let env = Env::new();
    let out = env.run(&["apply", "-f", "base.yaml", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(env.path("logout-fail-acme-gpu1"), "").unwrap();
    let out = env.run(&["destroy", "-f", "base.yaml", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(env.emu().state().vms.is_empty());
    let calls = env.ssh_calls();
    for r in env
        .emu()
        .requests()
        .into_iter()
        .filter(|r| r.command.as_deref() == Some("rm"))
    {
        let vm = r.words.last().unwrap().clone();
        let logout = calls
            .iter()
            .find(|(_, h, c)| *h == vm && c.contains("tailscale logout"))
            .unwrap_or_else(|| panic!("{vm} not logged out"));
        assert!(logout.0 <= r.unix_ms, "{vm}: logout after rm");
    }
    let all = text(&out);
    assert!(
        all.contains("could not log the Tailscale device out")
            && all.contains("remove device acme-gpu1"),
        "{all}"
    );
}

#[test]
fn status_shows_each_vms_bootstrap_with_the_failing_step() {
    let env = Env::new();
    assert!(
        env.run(&["apply", "-f", "base.yaml", "--yes"])
            .status
            .success()
    );
    env.bootstrap(
        "acme-web2",
        "state: failed\nstep: run the k3s installer\n--- exedev-k8s bootstrap log ---\n[ERROR] Download failed\n",
    );
    env.bootstrap(
        "acme-batch1",
        "state: running\nstep: wait for k3s-agent to be active\n",
    );
    let out = env.run(&["status", "-f", "base.yaml", "--json", "--no-probe"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |n: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(row("acme-cp1")["bootstrap"], "done");
    assert_eq!(
        row("acme-web2")["bootstrap"],
        "failed (run the k3s installer)"
    );
    assert_eq!(
        row("acme-web2")["bootstrap_log"][0],
        "[ERROR] Download failed"
    );
    assert_eq!(
        row("acme-batch1")["bootstrap"],
        "running (wait for k3s-agent to be active)"
    );
    let text_out = env.run(&["status", "-f", "base.yaml", "--no-probe"]);
    assert_eq!(text_out.status.code(), Some(2), "{}", text(&text_out));
    insta::assert_snapshot!(
        "status_bootstrap_table",
        String::from_utf8_lossy(&text_out.stdout)
    );
    // Every running VM was read, over bounded fan-out.
    let reads = env
        .ssh_calls()
        .iter()
        .filter(|(_, _, c)| c.contains("bootstrap-state"))
        .count();
    assert!(reads >= 2 * 9, "{reads}");
    // --no-ssh reads nothing.
    let before = env.ssh_calls().len();
    env.run(&[
        "status",
        "-f",
        "base.yaml",
        "--json",
        "--no-probe",
        "--no-ssh",
    ]);
    assert_eq!(env.ssh_calls().len(), before);
}
