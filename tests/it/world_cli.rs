//! The CLI end to end on the emulator's VM world, with the project's own
//! setup scripts: a cluster forms, `kubeconfig` and `status` reach it
//! through the `ssh` stand-in, a reboot of every VM changes nothing, and a
//! removal's drain waits for a PodDisruptionBudget.
//!

use std::time::Duration;

use crate::common::world::{K3S_TOKEN, TS_AUTHKEY, fleet_harness, log, state_blocking};
use crate::common::{Harness, ok, text};
use serde_json::{Value, json};

/// One schedulable server, k3s pinned, the token from `K3S_TOKEN`, and a
/// pool `web` of `agents`.
fn fleet(agents: u32) -> String {
    crate::common::minimal_fleet(
        &[(
            "  channel: stable\n",
            "  version: v1.31.4+k3s1\n  token: {env: K3S_TOKEN}\n",
        )],
        &format!(
            "controlPlane:\n  count: 1\n  schedulable: true\npools:\n  - name: web\n    count: {agents}\n    labels: {{tier: web}}\n"
        ),
    )
}

/// `status --wait` through the SSH tunnel, which must succeed: its stdout.
fn status_wait(h: &Harness) -> String {
    ok(h.run(&[
        "status",
        "-f",
        "fleet.yaml",
        "--via-ssh-tunnel",
        "--wait",
        "--timeout",
        "20s",
    ]))
}

/// `status --json` through the SSH tunnel, which must succeed.
fn status_json(h: &Harness) -> Value {
    serde_json::from_str(&ok(h.run(&[
        "status",
        "-f",
        "fleet.yaml",
        "--via-ssh-tunnel",
        "--json",
    ])))
    .unwrap()
}

pub(crate) fn write_fleet(h: &Harness, agents: u32) {
    std::fs::write(h.dir.path().join("fleet.yaml"), fleet(agents)).unwrap();
}

/// Applies, waits for every setup script, fetches the kubeconfig.
pub(crate) fn up(h: &Harness, vms: &[&str]) {
    ok(h.run(&["apply", "-f", "fleet.yaml", "--yes"]));
    for vm in vms {
        let w = h.wait_setup(vm, 1);
        assert_eq!(w["setup"]["exit_code"], 0, "{vm}: {}", log(&w));
    }
    let out = ok(h.run(&["kubeconfig", "-f", "fleet.yaml"]));
    assert!(
        out.contains("server https://demo-cp1.tail1234.ts.net:6443"),
        "{out}"
    );
}

#[test]
fn a_cluster_forms_and_the_cli_sees_it_through_ssh() {
    let h = fleet_harness(|_| {});
    write_fleet(&h, 2);
    up(&h, &["demo-cp1", "demo-web1", "demo-web2"]);
    let out = status_wait(&h);
    assert!(out.contains("All 3 nodes Ready"), "{out}");
    let st: Value = status_json(&h);
    assert_eq!(st["healthy"], true, "{st:#}");
    // The stored kubeconfig is k3s's, rewritten: fleet names, tailnet server.
    let stored = std::fs::read_to_string(h.dir.path().join(".exedev-k8s/demo/kubeconfig")).unwrap();
    assert!(stored.contains("name: demo") && !stored.contains("name: default"));
    // The world agrees.
    let cp = h.world_of("demo-cp1");
    assert_eq!(cp["k3s"]["role"], "server");
    assert_eq!(cp["k3s"]["etcd_member"], true);
    assert_eq!(cp["tailscale"]["hostname"], "demo-cp1");
    let web = h.world_of("demo-web1");
    assert_eq!(web["k3s"]["labels"]["tier"], "web");
    // The straight-from-the-host kubeconfig works too (a user's kubectl).
    let client = h.kube();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let list = h.rt.block_on(nodes.list(&Default::default())).unwrap();
    assert_eq!(list.items.len(), 3);
}

#[test]
fn rebooting_every_vm_changes_nothing() {
    let h = fleet_harness(|_| {});
    write_fleet(&h, 1);
    let vms = ["demo-cp1", "demo-web1"];
    up(&h, &vms);
    let before: Vec<Value> = vms.iter().map(|v| h.world_of(v)).collect();
    for vm in vms {
        let (status, body) = h.exec(&["resize", vm, "--cpu", "2"]);
        assert_eq!(status, 200, "{body}");
    }
    for (vm, b) in vms.iter().zip(&before) {
        let w = h.wait_setup(vm, 2);
        assert_eq!(w["setup"]["exit_code"], 0, "{vm}: {}", log(&w));
        let w = h.wait_for(vm, Duration::from_secs(10), |w| w["k3s"]["ready"] == true);
        assert_eq!(
            w["tailscale"]["ip"], b["tailscale"]["ip"],
            "{vm} keeps its address"
        );
        assert_eq!(w["tailscale"]["hostname"], b["tailscale"]["hostname"]);
        assert_eq!(
            w["k3s"]["cluster"], b["k3s"]["cluster"],
            "{vm} stays in its cluster"
        );
        assert_eq!(w["k3s"]["version"], b["k3s"]["version"]);
    }
    assert_eq!(
        h.state()["tailnet"]["devices"].as_array().unwrap().len(),
        2,
        "no new devices"
    );
    let out = status_wait(&h);
    assert!(out.contains("All 2 nodes Ready"), "{out}");
    let plan = h.run(&["plan", "-f", "fleet.yaml", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
}

#[test]
fn a_removal_drains_and_waits_for_a_disruption_budget() {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let h = fleet_harness(|_| {});
    write_fleet(&h, 2);
    up(&h, &["demo-cp1", "demo-web1", "demo-web2"]);
    let client = h.kube();
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "default");
    let pdbs: kube::Api<PodDisruptionBudget> = kube::Api::namespaced(client, "default");
    let pod = |name: &str, node: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "shop"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "shop", "image": "shop:1"}]}
        }))
        .unwrap()
    };
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "shop"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "shop"}}}
    }))
    .unwrap();
    h.rt.block_on(pods.create(&Default::default(), &pod("shop-a", "demo-web2")))
        .unwrap();
    h.rt.block_on(pdbs.create(&Default::default(), &pdb))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Shrinking the pool removes demo-web2: its only shop replica is
    // protected, so the drain waits and gives up.
    write_fleet(&h, 1);
    let started = std::time::Instant::now();
    let out = h.run(&[
        "apply",
        "-f",
        "fleet.yaml",
        "--yes",
        "--via-ssh-tunnel",
        "--drain-timeout",
        "1s",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "--drain-timeout holds: {:?}",
        started.elapsed()
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("shop-a") && t.contains("PodDisruptionBudget"),
        "{t}"
    );
    assert!(h.world_of("demo-web2").is_object(), "the VM is kept");
    // With a longer --drain-timeout the drain waits for the budget: a
    // second replica appears elsewhere meanwhile, the eviction goes
    // through, the VM goes.
    let (dir, url, token, ssh) = (
        h.dir.path().to_path_buf(),
        h.emu.url.clone(),
        h.token.clone(),
        h.emu.ssh_program().unwrap(),
    );
    let apply = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
            .args([
                "apply",
                "-f",
                "fleet.yaml",
                "--yes",
                "--via-ssh-tunnel",
                "--drain-timeout",
                "30s",
            ])
            .current_dir(&dir)
            .env("EXE_DEV_ENDPOINT", url)
            .env("EXE_DEV_API_KEY", token)
            .env("TS_AUTHKEY", TS_AUTHKEY)
            .env("K3S_TOKEN", K3S_TOKEN)
            .env("EXEDEV_K8S_SSH", ssh)
            .env("TMPDIR", &dir)
            .env_remove("EXE_DEV_SSH_KEY")
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(h.world_of("demo-web2").is_object(), "the drain is waiting");
    assert!(!apply.is_finished());
    h.rt.block_on(pods.create(&Default::default(), &pod("shop-b", "demo-web1")))
        .unwrap();
    ok(apply.join().unwrap());
    assert!(h.world_of("demo-web2").is_null(), "demo-web2 removed");
    let shop =
        h.rt.block_on(pods.list(&kube::api::ListParams::default().labels("app=shop")))
            .unwrap();
    assert_eq!(shop.items.len(), 2, "the evicted replica was replaced");
    assert!(
        shop.items
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some("demo-web2"))
    );
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(h.kube());
    let names: Vec<String> =
        h.rt.block_on(nodes.list(&Default::default()))
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
    assert_eq!(names, ["demo-cp1", "demo-web1"]);
}

fn ha_fleet(agents: u32) -> String {
    fleet(agents).replace("controlPlane:\n  count: 1\n", "controlPlane:\n  count: 3\n")
}

#[test]
fn an_ha_cluster_forms_with_apply_wait() {
    ha_cluster_forms(fleet_harness(|_| {}));
}

/// With MagicDNS off (`emulator --no-magic-dns`) the HA example still
/// forms: joiners find their server in tailscaled's peer list (`tailscale
/// ip -4 <server>`, no DNS) and join it by address; the tool reaches the
/// cluster over SSH tunnels.
#[test]
fn an_ha_cluster_forms_without_magicdns() {
    ha_cluster_forms(fleet_harness(|w| w.tailnet.magic_dns = false));
}

fn ha_cluster_forms(h: Harness) {
    std::fs::write(h.dir.path().join("fleet.yaml"), ha_fleet(2)).unwrap();
    let started = std::time::Instant::now();
    let out = h.run(&[
        "apply",
        "-f",
        "fleet.yaml",
        "--yes",
        "--wait",
        "--via-ssh-tunnel",
        "--timeout",
        "60s",
    ]);
    let t = text(&out);
    eprintln!("{t}\n{:?}", started.elapsed());
    assert!(out.status.success(), "{t}");
    for vm in ["demo-cp1", "demo-cp2", "demo-cp3"] {
        let w = h.world_of(vm);
        assert_eq!(w["k3s"]["ready"], true, "{vm}: {w:#}");
        assert_eq!(w["k3s"]["etcd_member"], true);
        assert_eq!(w["k3s"]["etcd_learner"], false);
        assert!(
            w["k3s"]["etcd_peer_ip"]
                .as_str()
                .unwrap()
                .starts_with("100.64."),
            "{w:#}"
        );
    }
}

#[test]
fn replacing_every_server_keeps_quorum() {
    let h = fleet_harness(|_| {});
    std::fs::write(h.dir.path().join("fleet.yaml"), ha_fleet(1)).unwrap();
    ok(h.run(&[
        "apply",
        "-f",
        "fleet.yaml",
        "--yes",
        "--wait",
        "--via-ssh-tunnel",
        "--timeout",
        "60s",
    ]));
    let before: Vec<String> = ["demo-cp1", "demo-cp2", "demo-cp3"]
        .iter()
        .map(|vm| {
            h.world_of(vm)["tailscale"]["ip"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // A smaller disk (exe.dev disks only grow): every server needs a new
    // VM, replaced one at a time.
    let changed = ha_fleet(1).replace(
        "controlPlane:\n  count: 3\n",
        "controlPlane:\n  count: 3\n  disk: 10GB\n",
    );
    std::fs::write(h.dir.path().join("fleet.yaml"), changed).unwrap();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let base = h.emu.base_url.clone();
    let w2 = watching.clone();
    let watcher = std::thread::spawn(move || {
        let mut worst = usize::MAX;
        while w2.load(std::sync::atomic::Ordering::Relaxed) {
            let s: Value = state_blocking(&base);
            let voters = s["vms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| {
                    let k = &v["world"]["k3s"];
                    k["role"] == "server"
                        && k["ready"] == true
                        && k["etcd_member"] == true
                        && k["etcd_learner"] == false
                })
                .count();
            worst = worst.min(voters);
            std::thread::sleep(Duration::from_millis(30));
        }
        worst
    });
    let out = h.run(&[
        "apply",
        "-f",
        "fleet.yaml",
        "--yes",
        "--via-ssh-tunnel",
        "--timeout",
        "60s",
    ]);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let worst = watcher.join().unwrap();
    let t = ok(&out);
    assert!(t.contains("3 to replace"), "{t}");
    assert!(
        worst >= 2,
        "etcd kept a quorum of Ready voters (worst: {worst})\n{t}"
    );
    for (vm, old_ip) in ["demo-cp1", "demo-cp2", "demo-cp3"].iter().zip(&before) {
        let w = h.world_of(vm);
        assert_eq!(w["k3s"]["ready"], true, "{vm}: {w:#}");
        assert_eq!(
            w["tailscale"]["hostname"], *vm,
            "the old device was logged out: no -1 name"
        );
        assert_ne!(
            w["tailscale"]["ip"],
            old_ip.as_str(),
            "{vm} is a new machine"
        );
        assert_eq!(
            w["k3s"]["cluster"], "cluster-1",
            "{vm} joined the same cluster"
        );
    }
    let plan = h.run(&["plan", "-f", "fleet.yaml", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
}

#[test]
fn bootstrap_failures_surface_in_status() {
    for (fault, step) in [
        ("download", "download the k3s installer"),
        ("key", "join the tailnet"),
        ("never-ready", "wait for k3s to be active"),
    ] {
        let h = fleet_harness(|w| match fault {
            "download" => w.faults.download_failures = 100,
            "never-ready" => {
                w.faults.server_never_ready = vec!["demo-cp*".into()];
                // The script's bounded waits, shortened.
                w.sleep_scale = 0.004;
            }
            _ => w.tailnet.refuse_all_keys = true,
        });
        write_fleet(&h, 1);
        let out = h.run(&["apply", "-f", "fleet.yaml", "--yes"]);
        assert!(!out.status.success(), "{}", text(&out));
        let w = h.wait_setup("demo-cp1", 1);
        assert_ne!(w["setup"]["exit_code"], 0);
        let st = h.run(&["status", "-f", "fleet.yaml"]);
        let t = text(&st);
        assert_eq!(st.status.code(), Some(2), "{t}");
        assert!(
            t.contains(&format!("demo-cp1: bootstrap failed at step \"{step}\"")),
            "{fault}: status names the step {step:?}:\n{t}"
        );
    }
}

/// A VM that reboots while its setup script downloads k3s: exe.dev reruns
/// the script at boot, it finishes, and status shows nothing stale.
#[test]
fn a_reboot_mid_bootstrap_recovers_and_status_shows_it_done() {
    let h = fleet_harness(|w| w.faults.reboot_mid_setup = vec!["demo-web1".into()]);
    write_fleet(&h, 1);
    ok(h.run(&["apply", "-f", "fleet.yaml", "--yes"]));
    let w = h.wait_setup("demo-web1", 2);
    assert_eq!(w["setup"]["exit_code"], 0, "{}", log(&w));
    assert_eq!(w["setup"]["runs"], 2, "the fault rebooted it once: {w:#}");
    let out = status_wait(&h);
    assert!(out.contains("All 2 nodes Ready"), "{out}");
    let st: Value = status_json(&h);
    assert_eq!(st["healthy"], true, "{st:#}");
    let web = st["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "demo-web1")
        .unwrap();
    assert_eq!(web["bootstrap"], "done", "{web:#}");
}

/// An agent given an agent token the cluster does not have (a CI secret
/// changed between two applies): k3s refuses it, and status says so in
/// k3s's own words, not only the script's step.
#[test]
fn status_shows_k3s_s_own_refusal() {
    let h = fleet_harness(|w| w.sleep_scale = 0.004);
    let with_agent_token = |agents| {
        fleet(agents).replace(
            "  token: {env: K3S_TOKEN}\n",
            "  token: {env: K3S_TOKEN}\n  agentToken: {env: K3S_AGENT_TOKEN}\n",
        )
    };
    std::fs::write(h.dir.path().join("fleet.yaml"), with_agent_token(1)).unwrap();
    let right = [("K3S_AGENT_TOKEN", "agent-token-one")];
    ok(h.run_with(&["apply", "-f", "fleet.yaml", "--yes"], &right));
    for vm in ["demo-cp1", "demo-web1"] {
        let w = h.wait_setup(vm, 1);
        assert_eq!(w["setup"]["exit_code"], 0, "{vm}: {}", log(&w));
    }
    std::fs::write(h.dir.path().join("fleet.yaml"), with_agent_token(2)).unwrap();
    let wrong = [("K3S_AGENT_TOKEN", "agent-token-two")];
    ok(h.run_with(&["apply", "-f", "fleet.yaml", "--yes"], &wrong));
    let w = h.wait_setup("demo-web2", 1);
    assert_ne!(w["setup"]["exit_code"], 0, "{}", log(&w));
    let st = h.run_with(&["status", "-f", "fleet.yaml"], &wrong);
    let t = text(&st);
    assert_eq!(st.status.code(), Some(2), "{t}");
    assert!(
        t.contains(
            "demo-web2: bootstrap failed at step \"wait for k3s-agent to be active\"; k3s says: failed to validate token"
        ),
        "{t}"
    );
    // The token itself never shows.
    assert!(
        !t.contains("agent-token-two") && !t.contains("agent-token-one"),
        "{t}"
    );
    let st: Value = serde_json::from_str(&ok_or_changes(
        &h.run_with(&["status", "-f", "fleet.yaml", "--json"], &wrong),
    ))
    .unwrap();
    let web2 = st["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "demo-web2")
        .unwrap();
    assert!(
        web2["k3s_reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not match the cluster's")),
        "{web2:#}"
    );
}

/// The output of a command that exits 0 or 2 (changes/problems).
fn ok_or_changes(o: &std::process::Output) -> String {
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A tailnet whose policy lets the fleet's tag reach itself on 6443 and
/// etcd but not on the kubelet's 10250: the cluster forms, status names
/// every dropped pair and prints the entry to add; with that entry in the
/// policy (an admin pasting it), status finds nothing wrong.
#[test]
fn status_names_ports_the_tailnet_policy_drops_and_the_entry_to_add() {
    use exedev_k8s::world::tailnet::{DeclaredKey, Policy};
    let policy = r#"{"tagOwners": {"tag:k8s": []},
        "acls": [{"action": "accept", "src": ["tag:k8s"], "dst": ["tag:k8s:6443,2379-2380"]},
                 {"action": "accept", "src": ["tag:k8s"], "proto": "udp", "dst": ["tag:k8s:8472"]}]}"#;
    let h = fleet_harness(|w| {
        w.tailnet.keys = vec![
            DeclaredKey::parse(&format!("{TS_AUTHKEY}:reusable,preauthorized,tag=k8s")).unwrap(),
        ];
        w.tailnet.policy = Some(Policy::parse(policy).unwrap());
    });
    write_fleet(&h, 1);
    up(&h, &["demo-cp1", "demo-web1"]);
    let ip = |vm: &str| {
        h.world_of(vm)["tailscale"]["ip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (cp, web) = (ip("demo-cp1"), ip("demo-web1"));
    let st = h.run(&["status", "-f", "fleet.yaml", "--via-ssh-tunnel"]);
    let t = text(&st);
    assert_eq!(st.status.code(), Some(2), "{t}");
    for dropped in [
        format!("demo-web1: the tailnet drops demo-web1 -> demo-cp1 ({cp}) on 10250/tcp (kubelet)"),
        format!("demo-cp1: the tailnet drops demo-cp1 -> demo-web1 ({web}) on 10250/tcp (kubelet)"),
    ] {
        assert!(t.contains(&dropped), "{dropped}\n{t}");
    }
    assert!(
        !t.contains("on 6443/tcp") && !t.contains("on 2380/tcp"),
        "{t}"
    );
    let entry =
        r#"{"action": "accept", "src": ["tag:k8s"], "dst": ["tag:k8s:6443,2379-2380,8472,10250"]}"#;
    assert!(
        t.contains(&format!("add this entry to \"acls\" in the tailnet policy file (admin console, Access controls):\n  {entry}")),
        "{t}"
    );
    assert!(t.contains("8472/udp (flannel VXLAN)"), "{t}");
    // The admin adds exactly that entry.
    let fixed: Value = {
        let mut p: Value = serde_json::from_str(policy).unwrap();
        p["acls"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::from_str(entry).unwrap());
        p
    };
    h.emu.world().unwrap().model().tailnet.config.policy =
        Some(Policy::parse(&fixed.to_string()).unwrap());
    let st = h.run(&["status", "-f", "fleet.yaml", "--via-ssh-tunnel"]);
    let t = text(&st);
    assert_eq!(st.status.code(), Some(0), "{t}");
    assert!(
        t.contains("Tailnet: 0 of 3 connections between 2 nodes dropped"),
        "{t}"
    );
    assert!(!t.contains("Tailnet policy:"), "{t}");
}

/// A tailnet whose policy drops the API port: an agent cannot join (the
/// world's k3s honours the policy too), and status says which flow and what
/// to add, naming untagged devices by their addresses.
#[test]
fn a_dropped_api_port_stops_the_join_and_status_says_why() {
    use exedev_k8s::world::tailnet::Policy;
    let h = fleet_harness(|w| {
        w.sleep_scale = 0.004;
        w.tailnet.policy = Some(
            Policy::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:10250"]}]}"#)
                .unwrap(),
        );
    });
    write_fleet(&h, 1);
    ok(h.run(&["apply", "-f", "fleet.yaml", "--yes"]));
    let w = h.wait_setup("demo-web1", 1);
    assert_ne!(w["setup"]["exit_code"], 0, "{}", log(&w));
    assert!(log(&w).contains("6443"), "{}", log(&w));
    let cp = h.world_of("demo-cp1")["tailscale"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let web = h.world_of("demo-web1")["tailscale"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let st = h.run(&["status", "-f", "fleet.yaml"]);
    let t = text(&st);
    assert_eq!(st.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!(
            "the tailnet drops demo-web1 -> demo-cp1 ({cp}) on 6443/tcp (API server and supervisor)"
        )),
        "{t}"
    );
    let (a, b) = if cp < web { (&cp, &web) } else { (&web, &cp) };
    let entry = format!(
        r#"{{"action": "accept", "src": ["{a}", "{b}"], "dst": ["{a}:6443,2379-2380,8472,10250", "{b}:6443,2379-2380,8472,10250"]}}"#
    );
    assert!(t.contains(&entry), "{entry}\n{t}");
    assert!(t.contains("Some devices have no ACL tag"), "{t}");
}
