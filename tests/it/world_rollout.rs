//! Changing a running cluster, end to end on the emulator's VM world (the
//! project's real setup and in-place change scripts, the k3s installer
//! stand-in, the Kubernetes API model): a patch upgrade of an HA fleet
//! replaces no VM and survives a reboot; a label change restarts nothing; a
//! server argument rolls one server at a time; a skipped minor is refused in
//! every format; an agent added after the channel moved gets the fleet's
//! release; a pool with `maxUnavailable: 1` never has two nodes out at once;
//! secret k3s flags changed in place reach their own nodes and nothing else;
//! agents are replaced create before destroy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::world::{K3S_TOKEN, TS_AUTHKEY, fleet_harness, log, state_blocking};
use crate::common::{Harness, ok, text};
use serde_json::Value;

/// A fleet: `k3s` lines (version or channel, args), servers, pool `web`.
fn fleet(k3s: &str, servers: u32, agents: u32, pool_extra: &str) -> String {
    format!(
        "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n{k3s}  token: {{env: K3S_TOKEN}}\nnetwork:\n  tailscale:\n    tailnet: tail1234.ts.net\n    authKey: {{env: TS_AUTHKEY}}\ncontrolPlane:\n  count: {servers}\npools:\n  - name: web\n    count: {agents}\n    labels: {{tier: web}}\n{pool_extra}"
    )
}

/// `apply --yes --wait` through the SSH tunnel, bounded.
fn apply(h: &Harness, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "apply",
        "-f",
        "fleet.yaml",
        "--yes",
        "--wait",
        "--via-ssh-tunnel",
        "--timeout",
        "60s",
    ];
    args.extend_from_slice(extra);
    h.run(&args)
}

fn plan(h: &Harness, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["plan", "-f", "fleet.yaml", "--via-ssh-tunnel"];
    args.extend_from_slice(extra);
    h.run(&args)
}

/// `(name, created_ms)` of every VM: replacing one changes both.
fn identities(h: &Harness) -> BTreeMap<String, u64> {
    h.emu
        .state()
        .vms
        .iter()
        .map(|(n, v)| (n.clone(), v.created_ms))
        .collect()
}

/// Every VM's node Ready at `version` (the process and the Node agree).
fn assert_all_at(h: &Harness, version: &str) {
    for vm in h.vm_names() {
        let k = h.k3s(&vm);
        assert_eq!(k["ready"], true, "{vm}: {k:#}");
        assert_eq!(k["version"], version, "{vm}: {k:#}");
        assert_eq!(k["kubelet_version"], version, "{vm}: {k:#}");
        assert_eq!(k["unschedulable"], false, "{vm} uncordoned: {k:#}");
        let comment = &h.emu.state().vms[&vm].comment;
        assert!(
            comment.contains(&format!("k3s={version}")),
            "{vm} records its release: {comment}"
        );
    }
}

/// Samples the world every 20 ms while `f` runs; returns `f`'s result and
/// the samples (each: VM name → its `world.k3s`).
fn watching<T>(h: &Harness, f: impl FnOnce() -> T) -> (T, Vec<BTreeMap<String, Value>>) {
    let on = Arc::new(AtomicBool::new(true));
    let (base, flag) = (h.emu.base_url.clone(), on.clone());
    let watcher = std::thread::spawn(move || {
        let mut samples = Vec::new();
        while flag.load(Ordering::Relaxed) {
            let s = state_blocking(&base);
            let one: BTreeMap<String, Value> = s["vms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| Some((v["name"].as_str()?.to_string(), v["world"]["k3s"].clone())))
                .collect();
            samples.push(one);
            std::thread::sleep(Duration::from_millis(20));
        }
        samples
    });
    let out = f();
    on.store(false, Ordering::Relaxed);
    (out, watcher.join().unwrap())
}

/// A node out of service in a sample: not Ready, or cordoned.
fn out_of_service(k: &Value) -> bool {
    k["ready"] != true || k["unschedulable"] == true
}

const V4: &str = "v1.31.4+k3s1";
const V6: &str = "v1.31.6+k3s1";

/// A patch release on 3 servers and 2 agents: upgraded in place, servers
/// one at a time and first, etcd never below quorum, no VM replaced (same
/// names, same creation times, same tailnet addresses), every node Ready at
/// the new release and uncordoned, the release recorded in each comment.
/// Then every VM reboots: exe.dev reruns the setup script (which still says
/// v1.31.4), and nothing goes back.
#[test]
fn a_patch_upgrade_of_an_ha_fleet_replaces_no_vm_and_survives_a_reboot() {
    let h = fleet_harness(|_| {});
    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V4}\n"), 3, 2, ""),
    );
    ok(apply(&h, &[]));
    assert_all_at(&h, V4);
    let before = identities(&h);
    let ips: BTreeMap<String, Value> = before
        .keys()
        .map(|vm| (vm.clone(), h.world_of(vm)["tailscale"]["ip"].clone()))
        .collect();
    let new_before = h.emu.count("new");

    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V6}\n"), 3, 2, ""),
    );
    let shown = ok(plan(&h, &[]));
    assert!(
        shown.contains("0 to create, 0 to update, 5 to upgrade, 0 to replace, 0 to delete"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("~ k3s.version    {V4} → {V6}")),
        "{shown}"
    );
    let (out, samples) = watching(&h, || apply(&h, &[]));
    let t = ok(out);
    assert_all_at(&h, V6);
    assert_eq!(identities(&h), before, "same VMs, same creation times\n{t}");
    for (vm, ip) in &ips {
        assert_eq!(
            &h.world_of(vm)["tailscale"]["ip"],
            ip,
            "{vm} kept its address"
        );
    }
    assert_eq!(h.emu.count("new"), new_before, "nothing created");
    assert_eq!(h.emu.count("rm"), 0, "nothing removed");
    // Servers one at a time, never below quorum; agents after the servers.
    let servers = ["demo-cp1", "demo-cp2", "demo-cp3"];
    for s in &samples {
        let down = servers
            .iter()
            .filter(|vm| s.get(**vm).is_some_and(out_of_service))
            .count();
        assert!(down <= 1, "two servers out at once: {s:#?}");
        let agents_upgraded = ["demo-web1", "demo-web2"]
            .iter()
            .any(|vm| s.get(*vm).is_some_and(|k| k["version"] == V6));
        if agents_upgraded {
            assert!(
                servers.iter().all(|vm| s[*vm]["version"] == V6),
                "an agent ran {V6} before every server did: {s:#?}"
            );
        }
    }
    let plan_after = plan(&h, &["--detailed-exitcode"]);
    assert_eq!(plan_after.status.code(), Some(0), "{}", text(&plan_after));

    // Every VM reboots: the setup script reruns and keeps the upgrade.
    for vm in before.keys() {
        let (status, body) = h.exec(&["resize", vm, "--cpu", "2"]);
        assert_eq!(status, 200, "{body}");
    }
    for vm in before.keys() {
        let w = h.wait_setup(vm, 2);
        assert_eq!(w["setup"]["exit_code"], 0, "{vm}: {}", log(&w));
        assert!(
            log(&w).contains(&format!("k3s {V6} is installed: kept")),
            "{vm}: {}",
            log(&w)
        );
        let w = h.wait_for(vm, Duration::from_secs(20), |w| w["k3s"]["ready"] == true);
        assert_eq!(w["k3s"]["version"], V6, "{vm} after the reboot");
    }
    let plan_after = plan(&h, &["--detailed-exitcode"]);
    assert_eq!(plan_after.status.code(), Some(0), "{}", text(&plan_after));
}

/// A label changes through the API: no k3s restarts, no drain. A server
/// argument rolls: every server restarted exactly once, one at a time, the
/// agents untouched, the unit carrying the new argument.
#[test]
fn labels_change_without_a_restart_and_server_arguments_roll_one_server_at_a_time() {
    let h = fleet_harness(|_| {});
    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V4}\n"), 3, 2, ""),
    );
    ok(apply(&h, &[]));
    let starts = |h: &Harness| -> BTreeMap<String, u64> {
        h.vm_names()
            .into_iter()
            .map(|vm| {
                let n = h.k3s(&vm)["starts"].as_u64().unwrap_or(0);
                (vm, n)
            })
            .collect()
    };
    let before = starts(&h);

    let relabelled =
        fleet(&format!("  version: {V4}\n"), 3, 2, "").replace("tier: web", "tier: batch");
    h.write("fleet.yaml", &relabelled);
    let shown = ok(plan(&h, &[]));
    assert!(shown.contains("~ labels.tier    web → batch"), "{shown}");
    assert!(!shown.contains("restarts"), "{shown}");
    let (out, samples) = watching(&h, || apply(&h, &[]));
    ok(out);
    for vm in ["demo-web1", "demo-web2"] {
        assert_eq!(h.k3s(vm)["labels"]["tier"], "batch", "{vm}");
    }
    assert_eq!(starts(&h), before, "no k3s restarted for a label");
    assert!(
        samples
            .iter()
            .all(|s| s.values().all(|k| !out_of_service(k))),
        "no node went out of service"
    );

    let with_arg = relabelled.replace(
        "  token:",
        "  serverArgs: [\"--etcd-snapshot-retention=7\"]\n  token:",
    );
    h.write("fleet.yaml", &with_arg);
    let shown = ok(plan(&h, &[]));
    assert!(
        shown.contains("~ k3s.serverArgs") && shown.contains("--etcd-snapshot-retention=7"),
        "{shown}"
    );
    let (out, samples) = watching(&h, || apply(&h, &[]));
    let t = ok(out);
    let after = starts(&h);
    for vm in ["demo-cp1", "demo-cp2", "demo-cp3"] {
        assert_eq!(after[vm], before[vm] + 1, "{vm} restarted once\n{t}");
        let unit = h.ssh(vm, "cat /etc/systemd/system/k3s.service");
        assert!(
            String::from_utf8_lossy(&unit.stdout).contains("--etcd-snapshot-retention=7"),
            "{vm}: {}",
            String::from_utf8_lossy(&unit.stdout)
        );
        assert_eq!(h.k3s(vm)["etcd_member"], true);
    }
    for vm in ["demo-web1", "demo-web2"] {
        assert_eq!(after[vm], before[vm], "{vm}: agents are not touched");
    }
    for s in &samples {
        let down = ["demo-cp1", "demo-cp2", "demo-cp3"]
            .iter()
            .filter(|vm| s.get(**vm).is_some_and(out_of_service))
            .count();
        assert!(down <= 1, "two servers out at once: {s:#?}");
    }
    let restarts_seen = ["demo-cp1", "demo-cp2", "demo-cp3"]
        .iter()
        .filter(|vm| {
            samples
                .iter()
                .any(|s| s.get(**vm).is_some_and(out_of_service))
        })
        .count();
    assert!(restarts_seen >= 1, "the watcher saw the roll");
    let again = plan(&h, &["--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

/// Two minors at once is refused: the plan is still shown (human, JSON,
/// markdown) with what to do instead, and nothing is changed.
#[test]
fn a_skipped_minor_is_refused_in_every_format_and_nothing_changes() {
    let h = fleet_harness(|_| {});
    h.write("fleet.yaml", &fleet("  version: v1.30.2+k3s1\n", 1, 1, ""));
    ok(apply(&h, &[]));
    let calls = h.emu.requests().len();
    h.write("fleet.yaml", &fleet("  version: v1.32.1+k3s1\n", 1, 1, ""));
    for format in [&[][..], &["--json"][..], &["--format", "markdown"][..]] {
        let out = plan(&h, format);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("demo-cp1") && stdout.contains("demo-web1"),
            "{format:?}: {stdout}"
        );
        assert!(
            stdout.contains("one minor version at a time") && stdout.contains("v1.31"),
            "{format:?}: {stdout}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refused"), "{stderr}");
    }
    let out = apply(&h, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("one minor version at a time"));
    let mutating = h.emu.requests()[calls..]
        .iter()
        .filter(|r| {
            matches!(
                r.command.as_deref(),
                Some("new" | "rm" | "resize" | "comment" | "tag")
            )
        })
        .count();
    assert_eq!(mutating, 0, "nothing changed");
    for vm in ["demo-cp1", "demo-web1"] {
        assert_eq!(h.k3s(vm)["version"], "v1.30.2+k3s1");
    }
}

/// A fleet that follows `stable`: the channel moves after the cluster was
/// made; adding an agent plans the fleet's release, looked up now, for
/// every node (servers first), and the new agent installs exactly it (its
/// setup script pins it), never what the channel says when it boots.
#[test]
fn an_agent_added_after_the_channel_moved_gets_the_fleets_release() {
    let h = fleet_harness(|_| {});
    h.write("fleet.yaml", &fleet("  channel: stable\n", 1, 1, ""));
    ok(apply(&h, &[]));
    assert_all_at(&h, V4);
    let script = h.emu.state().vms["demo-web1"].setup_script.clone().unwrap();
    assert!(script.contains(&format!("K3S_VERSION='{V4}'")));

    h.set_channel("stable", V6);
    h.write("fleet.yaml", &fleet("  channel: stable\n", 1, 2, ""));
    let shown = ok(plan(&h, &[]));
    assert!(
        shown.contains(&format!("k3s {V6} (channel stable")),
        "{shown}"
    );
    assert!(
        shown.contains("1 to create, 0 to update, 2 to upgrade"),
        "{shown}"
    );
    ok(apply(&h, &[]));
    assert_all_at(&h, V6);
    let script = h.emu.state().vms["demo-web2"].setup_script.clone().unwrap();
    assert!(script.contains(&format!("K3S_VERSION='{V6}'")), "pinned");
    assert!(!script.contains("INSTALL_K3S_CHANNEL"));

    // A saved plan made before the channel moved again is stale: apply
    // re-resolves the channel and refuses it, changing nothing (a plan
    // never installs a release the channel no longer names, nor one that
    // was edited in).
    h.write("fleet.yaml", &fleet("  channel: stable\n", 1, 3, ""));
    ok(h.run(&[
        "plan",
        "-f",
        "fleet.yaml",
        "--via-ssh-tunnel",
        "--out",
        "plan.json",
    ]));
    h.set_channel("stable", "v1.31.7+k3s1");
    let out = h.run(&[
        "apply",
        "plan.json",
        "--via-ssh-tunnel",
        "--wait",
        "--timeout",
        "60s",
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "it installs k3s {V6} from channel stable, which now resolves to v1.31.7+k3s1"
        )) && t.contains("Nothing was changed"),
        "{t}"
    );
    assert!(!h.emu.state().vms.contains_key("demo-web3"));
    assert_all_at(&h, V6);
}

/// Secret k3s flags added in place, then an upgrade carried out from a
/// saved plan: each node's drop-in holds its own role's values (servers the
/// S3 key, agents the kubelet argument, never the other's), and no secret
/// and no token reaches a plan (every format, the saved file), apply's
/// progress (human and JSON), exe.dev's request log, the world-readable
/// change log or a k3s unit's command line.
#[test]
fn secret_flags_changed_in_place_reach_their_nodes_and_nothing_else() {
    const S3: &str = "s3-SECRETVALUE-rollout";
    const KUBELET: &str = "eviction-hard=memory.available<SECRETVALUE";
    let env = [("S3_SECRET", S3), ("KUBELET_SECRET", KUBELET)];
    let h = fleet_harness(|_| {});
    let run = |args: &[&str]| h.run_with(args, &env);
    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V4}\n"), 1, 1, ""),
    );
    ok(apply(&h, &[]));
    let flags = "  serverArgs:\n    - {flag: --etcd-s3-secret-key, secret: {env: S3_SECRET}}\n  agentArgs:\n    - {flag: --kubelet-arg, secret: {env: KUBELET_SECRET}}\n";
    let tunnel = ["--via-ssh-tunnel"];
    let mut shown = String::new();

    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V4}\n{flags}"), 1, 1, ""),
    );
    for format in [&[][..], &["--json"][..], &["--format", "markdown"][..]] {
        shown.push_str(&ok(run(&[
            &["plan", "-f", "fleet.yaml"][..],
            &tunnel,
            format,
        ]
        .concat())));
    }
    assert!(shown.contains("(secret from env S3_SECRET)"), "{shown}");
    let wait = ["--wait", "--timeout", "60s"];
    shown.push_str(&ok(run(&[
        &["apply", "-f", "fleet.yaml", "--yes"][..],
        &tunnel,
        &wait,
    ]
    .concat())));

    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V6}\n{flags}"), 1, 1, ""),
    );
    shown.push_str(&ok(run(&[
        &["plan", "-f", "fleet.yaml", "--out", "plan.json"][..],
        &tunnel,
    ]
    .concat())));
    shown.push_str(&std::fs::read_to_string(h.dir.path().join("plan.json")).unwrap());
    let progress = ok(run(&[
        &["apply", "plan.json", "--json"][..],
        &tunnel,
        &wait,
    ]
    .concat()));
    assert!(progress.contains("\"event\""), "JSON progress: {progress}");
    shown.push_str(&progress);
    assert_all_at(&h, V6);

    let requests: String = h
        .emu
        .requests()
        .iter()
        .map(|r| r.words.join(" ") + "\n")
        .collect();
    let on_vm = |vm: &str, path: &str| {
        let out = h.ssh(vm, &format!("sudo -n cat {path}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && !text.is_empty(),
            "{vm}:{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let dropin = "/etc/rancher/k3s/config.yaml.d/exedev-k8s.yaml";
    let (server, agent) = (on_vm("demo-cp1", dropin), on_vm("demo-web1", dropin));
    assert!(server.contains(S3) && !server.contains(KUBELET), "{server}");
    assert!(agent.contains(KUBELET) && !agent.contains(S3), "{agent}");
    let mut elsewhere = vec![
        ("plans and progress", shown),
        ("exe.dev requests", requests),
    ];
    for (vm, unit) in [("demo-cp1", "k3s"), ("demo-web1", "k3s-agent")] {
        for path in [
            "/var/log/exedev-k8s-change.log".to_string(),
            format!("/etc/systemd/system/{unit}.service"),
        ] {
            elsewhere.push((vm, on_vm(vm, &path)));
        }
    }
    for (what, text) in elsewhere {
        for secret in ["SECRETVALUE", K3S_TOKEN, TS_AUTHKEY] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
}

/// The most changes of `vms` in flight at once, from `apply --json`'s
/// events (start … done/failed), in the order they were printed.
fn peak_in_flight(events: &str, vms: &[&str]) -> usize {
    let mut in_flight: Vec<String> = Vec::new();
    let mut peak = 0;
    for line in events.lines().filter(|l| l.starts_with('{')) {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let vm = e["vm"].as_str().unwrap_or_default().to_string();
        if !vms.contains(&vm.as_str()) {
            continue;
        }
        match e["event"].as_str() {
            Some("start") => in_flight.push(vm),
            Some("done" | "failed") => in_flight.retain(|v| *v != vm),
            _ => {}
        }
        peak = peak.max(in_flight.len());
    }
    peak
}

/// A pool of three with `maxUnavailable: 1` upgraded: the tool's own events
/// show no two of its changes in flight at once, and the world never saw
/// two of its nodes out of service at once.
#[test]
fn a_pool_with_max_unavailable_one_never_has_two_nodes_out() {
    let h = fleet_harness(|_| {});
    let pool = "    maxUnavailable: 1\n";
    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V4}\n"), 1, 3, pool),
    );
    ok(apply(&h, &[]));
    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V6}\n"), 1, 3, pool),
    );
    let (out, samples) = watching(&h, || apply(&h, &["--json"]));
    let t = ok(out);
    assert_all_at(&h, V6);
    let web = ["demo-web1", "demo-web2", "demo-web3"];
    for s in &samples {
        let down = web
            .iter()
            .filter(|vm| s.get(**vm).is_some_and(out_of_service))
            .count();
        assert!(down <= 1, "two web nodes out at once: {s:#?}");
    }
    // The tool's events, in the order they happened: each web change
    // starts after the previous one is done.
    assert_eq!(peak_in_flight(&t, &web), 1, "{t}");
    // The budget is what holds them back: with maxUnavailable 3 the three
    // change at once.
    let v7 = "v1.31.7+k3s1";
    h.write(
        "fleet.yaml",
        &fleet(
            &format!("  version: {v7}\n"),
            1,
            3,
            "    maxUnavailable: 3\n",
        ),
    );
    let t = ok(apply(&h, &["--json"]));
    assert_all_at(&h, v7);
    assert_eq!(peak_in_flight(&t, &web), 3, "{t}");
}

/// The index in `events` (apply --json lines) of the first step of `vm`
/// that starts with `step`.
fn step_at(events: &str, vm: &str, step: &str) -> Option<usize> {
    events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .position(|e| {
            e["event"] == "step"
                && e["vm"] == vm
                && e["step"].as_str().is_some_and(|s| s.starts_with(step))
        })
}

/// A disk shrink needs new VMs: each agent is replaced create before
/// destroy, one at a time (`maxUnavailable` 1): its successor, under the
/// pool's lowest free index, is a Ready node at the fleet's release before
/// the old one is cordoned, drained and removed, so the pool never serves
/// with fewer nodes than it asks for. The next plan is empty.
#[test]
fn agent_replacements_create_before_they_destroy() {
    let h = fleet_harness(|_| {});
    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V4}\n"), 1, 2, ""),
    );
    ok(apply(&h, &[]));
    let smaller = fleet(&format!("  version: {V4}\n"), 1, 2, "    disk: 10GB\n");
    h.write("fleet.yaml", &smaller);
    let shown = ok(plan(&h, &[]));
    for (old, new) in [("demo-web1", "demo-web3"), ("demo-web2", "demo-web4")] {
        assert!(
            shown.contains(&format!(
                "create before destroy: {new} is created and Ready before {old} is drained and removed"
            )),
            "{shown}"
        );
    }
    let (out, samples) = watching(&h, || apply(&h, &["--json"]));
    let t = ok(out);
    assert_eq!(h.vm_names(), ["demo-cp1", "demo-web3", "demo-web4"]);
    assert_all_at(&h, V4);
    for (old, new) in [("demo-web1", "demo-web3"), ("demo-web2", "demo-web4")] {
        let ready = step_at(&t, new, "node Ready at k3s");
        let drained = step_at(&t, old, "cordon + drain + delete node");
        assert!(
            ready.is_some() && drained.is_some() && ready < drained,
            "{new} Ready ({ready:?}) before {old} drained ({drained:?}):\n{t}"
        );
    }
    for s in &samples {
        let serving = s
            .iter()
            .filter(|(vm, k)| vm.starts_with("demo-web") && !out_of_service(k))
            .count();
        assert!(serving >= 2, "fewer than 2 web nodes serving: {s:#?}");
    }
    assert_eq!(peak_in_flight(&t, &["demo-web1", "demo-web2"]), 1, "{t}");
    let again = plan(&h, &["--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

/// The only replica of a workload sits on demo-web2 behind a
/// PodDisruptionBudget: the roll upgrades the servers and demo-web1, then
/// stops at demo-web2 (the drain is refused), with the cluster serving and
/// a message that says how to resume. Once a second replica runs, the same
/// apply resumes: only demo-web2 is left to change.
#[test]
fn a_failed_drain_stops_the_roll_and_a_rerun_resumes() {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let h = fleet_harness(|_| {});
    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V4}\n"), 3, 2, ""),
    );
    ok(apply(&h, &[]));
    let client = h.kube();
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "default");
    let pdbs: kube::Api<PodDisruptionBudget> = kube::Api::namespaced(client, "default");
    let pod = |name: &str, node: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"app": "shop"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "shop", "image": "shop:1"}]}
        }))
        .unwrap()
    };
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shop"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "shop"}}}
    }))
    .unwrap();
    h.rt.block_on(pods.create(&Default::default(), &pod("shop-a", "demo-web2")))
        .unwrap();
    h.rt.block_on(pdbs.create(&Default::default(), &pdb))
        .unwrap();

    h.write(
        "fleet.yaml",
        &fleet(&format!("  version: {V6}\n"), 3, 2, ""),
    );
    let out = apply(&h, &["--drain-timeout", "1s"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("demo-web2") && t.contains("PodDisruptionBudget"),
        "says what stopped it: {t}"
    );
    assert!(
        t.contains("Re-run apply once it can be drained: it resumes here"),
        "says how to resume: {t}"
    );
    for vm in ["demo-cp1", "demo-cp2", "demo-cp3", "demo-web1"] {
        let k = h.k3s(vm);
        assert_eq!(
            (k["version"].clone(), k["ready"].clone()),
            (V6.into(), true.into()),
            "{vm}"
        );
        assert_eq!(k["unschedulable"], false, "{vm}");
    }
    let web2 = h.k3s("demo-web2");
    assert_eq!(web2["version"], V4, "not changed");
    assert_eq!(web2["ready"], true, "still serving");
    assert_eq!(
        web2["unschedulable"], true,
        "left cordoned, as the message says"
    );

    // A second replica elsewhere: the budget allows the eviction now. (The
    // first server restarted: its API listens on a new host port.)
    let pods: kube::Api<Pod> = kube::Api::namespaced(h.kube(), "default");
    h.rt.block_on(pods.create(&Default::default(), &pod("shop-b", "demo-web1")))
        .unwrap();
    let shown = ok(plan(&h, &[]));
    assert!(
        shown.contains("0 to create, 0 to update, 1 to upgrade") && shown.contains("demo-web2"),
        "only what is left: {shown}"
    );
    ok(apply(&h, &["--drain-timeout", "20s"]));
    assert_all_at(&h, V6);
}
