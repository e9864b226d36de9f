//! Disaster recovery in the VM world (issue 23): k3s's `etcd-snapshot`
//! commands run by hand on a server, scheduled snapshots and their
//! retention, the world's S3 store and its key checks, and `k3s server
//! --cluster-reset --cluster-reset-restore-path` onto the same servers and
//! onto a fresh VM, with k3s's refusals (`docs/facts/disaster-recovery.md`).

use std::process::Output;
use std::time::Duration;

use crate::common::Harness;
use crate::common::world::{harness, log};
use serde_json::Value;

const TOKEN: &str = "secret-token";
const AGENT_TOKEN: &str = "agent-token";

/// The world's S3: keys checked, one bucket.
fn s3_world(w: &mut exedev_k8s::world::WorldConfig) {
    crate::common::world::s3(w, "AKTEST", "SKTEST", "dr-snapshots");
}

/// config.yaml keys for the world's S3 (what a fleet's `etcd.snapshots.s3`
/// renders into).
const S3: &str = "etcd-s3: true\netcd-s3-endpoint: s3.emulator.internal\netcd-s3-bucket: dr-snapshots\netcd-s3-folder: prod\netcd-s3-access-key: AKTEST\netcd-s3-secret-key: SKTEST\n";

/// A node's setup: Tailscale up, config.yaml (0600, `$TS_IP` expanded),
/// the installer with INSTALL_K3S_SKIP_START, then (if `start`) a
/// non-blocking start and a bounded wait.
fn script(role: &str, config: &str, start: bool) -> String {
    let unit = if role == "server" { "k3s" } else { "k3s-agent" };
    let start = if start {
        format!(
            r#"sudo -n systemctl start --no-block {unit}
for _ in $(seq 1 50); do
  if systemctl is-active --quiet {unit}; then echo "{unit} active"; exit 0; fi
  sleep 5
done
journalctl -u {unit} -n 2 -o cat
exit 1
"#
        )
    } else {
        String::new()
    };
    format!(
        r#"#!/bin/bash
set -euo pipefail
sudo -n systemctl start tailscaled
sudo -n tailscale up --auth-key=tskey-auth-test --hostname="$(hostname)"
TS_IP=$(tailscale ip -4)
sudo -n mkdir -p /etc/rancher/k3s
sudo -n install -m 600 /dev/stdin /etc/rancher/k3s/config.yaml <<EOF
{config}
EOF
curl -sfL https://get.k3s.io -o /tmp/install.sh
sudo -n env INSTALL_K3S_VERSION=v1.31.4+k3s1 INSTALL_K3S_SKIP_START=true sh /tmp/install.sh {role}
{start}"#
    )
}

fn first_server(extra: &str) -> String {
    script(
        "server",
        &format!(
            "cluster-init: true\ntoken: {TOKEN}\nagent-token: {AGENT_TOKEN}\nnode-ip: $TS_IP\ntls-san:\n  - $(hostname).tail1234.ts.net\n{extra}"
        ),
        true,
    )
}

fn up(h: &Harness, vm: &str) {
    let w = h.wait_setup(vm, 1);
    assert_eq!(
        w["setup"]["exit_code"],
        0,
        "{vm}: {}\n{:#}",
        log(&w),
        w["k3s"]
    );
}

/// Runs a command in `vm`; (success, stdout, stderr).
fn run(h: &Harness, vm: &str, cmd: &str) -> (bool, String, String) {
    let o: Output = h.ssh(vm, cmd);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(h: &Harness, vm: &str, cmd: &str) -> (String, String) {
    let (success, out, err) = run(h, vm, cmd);
    assert!(success, "{vm}: `{cmd}` failed:\n{out}\n{err}");
    (out, err)
}

fn refused(h: &Harness, vm: &str, cmd: &str, why: &str) {
    let (success, out, err) = run(h, vm, cmd);
    assert!(!success, "{vm}: `{cmd}` should fail:\n{out}\n{err}");
    assert!(
        err.contains(why),
        "{vm}: `{cmd}` should say {why:?}; got:\n{err}"
    );
}

/// The names in `Snapshot NAME saved.` lines.
fn saved(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split("msg=\"Snapshot ").nth(1))
        .filter_map(|r| r.strip_suffix(" saved.\""))
        .map(str::to_string)
        .collect()
}

fn ls_json(h: &Harness, vm: &str, extra: &str) -> Vec<Value> {
    let (out, _) = ok(
        h,
        vm,
        &format!("sudo -n k3s etcd-snapshot ls -o json {extra}"),
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

fn locations(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            i["spec"]["location"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn ready(h: &Harness, vm: &str) -> Value {
    h.wait_for(vm, Duration::from_secs(20), |w| w["k3s"]["ready"] == true)["k3s"].clone()
}

#[test]
fn snapshots_are_saved_listed_and_deleted_locally_and_in_s3_with_the_keys_checked() {
    let h = harness(s3_world);
    // A yearly schedule: no scheduled snapshot gets in the way.
    h.new_vm(
        "dr-one",
        &first_server(&format!("etcd-snapshot-schedule-cron: \"0 0 1 1 *\"\n{S3}")),
    );
    up(&h, "dr-one");
    // The command reads the server token: root's.
    refused(&h, "dr-one", "k3s etcd-snapshot ls", "permission denied");

    let (_, err) = ok(&h, "dr-one", "sudo -n k3s etcd-snapshot save");
    let names = saved(&err);
    assert_eq!(names.len(), 2, "saved locally and to S3, one name: {err}");
    assert_eq!(names[0], names[1]);
    let name = names[0].clone();
    assert!(name.starts_with("on-demand-dr-one-"), "{name}");
    let (table, _) = ok(&h, "dr-one", "sudo -n k3s etcd-snapshot ls");
    let mut rows = table.lines();
    let head: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(head, ["Name", "Location", "Size", "Created"]);
    assert!(
        table.contains(&format!(
            "file:///var/lib/rancher/k3s/server/db/snapshots/{name}"
        )) && table.contains(&format!("s3://dr-snapshots/prod/{name}")),
        "{table}"
    );
    let items = ls_json(&h, "dr-one", "");
    assert_eq!(items.len(), 2, "{items:#?}");
    assert!(items.iter().all(|i| {
        i["spec"]["snapshotName"] == name.as_str()
            && i["status"]["size"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                > 0
    }));
    // S3 entries carry the token hash k3s stores with the upload (sha256 of
    // the token's secret, 12 hex digits); local files are listed without.
    let hash: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(TOKEN.as_bytes())
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for i in &items {
        let s3 = i["spec"]["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("s3://"));
        let annotated = &i["metadata"]["annotations"]["etcd.k3s.cattle.io/snapshot-token-hash"];
        assert_eq!(annotated.as_str(), s3.then_some(hash.as_str()), "{i:#}");
        let storage = &i["metadata"]["labels"]["etcd.k3s.cattle.io/snapshot-storage-node"];
        assert_eq!(storage, if s3 { "s3" } else { "dr-one" });
        assert_eq!(
            i["spec"]["nodeName"], "dr-one",
            "S3 entries name the uploading node"
        );
    }
    let state = h.state();
    let objects = state["s3"]["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        objects
            .iter()
            .any(|o| o["bucket"] == "dr-snapshots" && o["key"] == format!("prod/{name}").as_str()),
        "{:#}",
        state["s3"]
    );
    // (The state shows setup scripts, secrets included; the store's own
    // view never shows its keys.)
    assert!(
        !state["s3"].to_string().contains("SKTEST") && state["s3"]["keys_checked"] == true,
        "{:#}",
        state["s3"]
    );

    // A named one; the first deleted everywhere; an unknown name.
    let (_, err) = ok(
        &h,
        "dr-one",
        "sudo -n k3s etcd-snapshot save --name pre-upgrade",
    );
    assert!(
        saved(&err)
            .iter()
            .all(|n| n.starts_with("pre-upgrade-dr-one-")),
        "{err}"
    );
    let (_, err) = ok(
        &h,
        "dr-one",
        &format!("sudo -n k3s etcd-snapshot delete {name}"),
    );
    assert_eq!(
        err.matches(&format!("Snapshot {name} deleted.")).count(),
        2,
        "{err}"
    );
    let (_, err) = ok(&h, "dr-one", "sudo -n k3s etcd-snapshot delete nope");
    assert!(
        err.contains("level=warning msg=\"Snapshot nope not found.\""),
        "{err}"
    );
    let left = locations(&ls_json(&h, "dr-one", ""));
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().all(|l| l.contains("pre-upgrade-dr-one-")),
        "{left:?}"
    );

    // Prune keeps the newest of a name prefix, here and in S3 (a save
    // itself never prunes); save takes no names.
    let (_, err) = ok(&h, "dr-one", "sudo -n k3s etcd-snapshot save --name keep");
    let older = saved(&err).pop().expect("a snapshot");
    std::thread::sleep(Duration::from_millis(1100));
    let (_, err) = ok(&h, "dr-one", "sudo -n k3s etcd-snapshot save --name keep");
    let newer = saved(&err).pop().expect("a snapshot");
    assert_ne!(older, newer);
    let (_, err) = ok(
        &h,
        "dr-one",
        "sudo -n k3s etcd-snapshot prune --name keep --snapshot-retention 1 --s3-retention 1",
    );
    assert_eq!(
        err.matches(&format!("Snapshot {older} deleted.")).count(),
        2,
        "{err}"
    );
    assert!(!err.contains(&newer), "{err}");
    refused(
        &h,
        "dr-one",
        "sudo -n k3s etcd-snapshot save extra",
        "this command does not take any arguments",
    );
    refused(
        &h,
        "dr-one",
        "sudo -n k3s etcd-snapshot ls -o wide",
        "invalid output format: wide",
    );

    // S3 refuses wrong keys and unknown buckets; a save still keeps its
    // local file and the server logs why the upload did not happen.
    for (flag, why) in [
        (
            "--s3-secret-key wrong",
            "signature we calculated does not match",
        ),
        (
            "--s3-access-key wrong",
            "Access Key Id you provided does not exist",
        ),
        ("--s3-bucket missing", "bucket missing does not exist"),
        (
            "--s3-endpoint s3.amazonaws.com",
            "lookup s3.amazonaws.com: no such host",
        ),
    ] {
        refused(
            &h,
            "dr-one",
            &format!("sudo -n k3s etcd-snapshot ls {flag}"),
            why,
        );
    }
    let (_, err) = ok(
        &h,
        "dr-one",
        "sudo -n k3s etcd-snapshot save --s3-access-key wrong",
    );
    assert_eq!(saved(&err).len(), 1, "only the local file: {err}");
    let (journal, _) = ok(&h, "dr-one", "journalctl -u k3s -o cat");
    assert!(
        journal.contains(
            "Unable to initialize S3 client: failed to test for existence of bucket dr-snapshots"
        ),
        "{journal}"
    );
    refused(
        &h,
        "dr-one",
        "sudo -n k3s etcd-snapshot ls --config /dev/null --s3",
        "s3 configuration was not set",
    );
    // Without S3 for the command, only this node's files are listed.
    let (_, err) = ok(&h, "dr-one", "sudo -n k3s etcd-snapshot save --s3=false");
    assert_eq!(saved(&err).len(), 1, "{err}");

    // The command needs the running server.
    ok(&h, "dr-one", "sudo -n systemctl stop k3s");
    refused(
        &h,
        "dr-one",
        "sudo -n k3s etcd-snapshot save",
        "connection refused",
    );
}

#[test]
fn scheduled_snapshots_follow_the_cron_and_keep_the_retention_locally_and_in_s3() {
    let h = harness(s3_world);
    h.new_vm(
        "dr-cron",
        &first_server(&format!(
            "etcd-snapshot-schedule-cron: \"@every 1s\"\netcd-snapshot-retention: 2\netcd-s3-retention: 3\n{S3}"
        )),
    );
    up(&h, "dr-cron");
    std::thread::sleep(Duration::from_millis(5500));
    let items = ls_json(&h, "dr-cron", "");
    let local: Vec<String> = locations(&items)
        .into_iter()
        .filter(|l| l.starts_with("file://"))
        .collect();
    let s3: Vec<String> = locations(&items)
        .into_iter()
        .filter(|l| l.starts_with("s3://dr-snapshots/prod/etcd-snapshot-dr-cron-"))
        .collect();
    assert_eq!(local.len(), 2, "local retention 2: {local:?}");
    assert!(
        local.iter().all(|l| l.contains("/etcd-snapshot-dr-cron-")),
        "{local:?}"
    );
    assert_eq!(s3.len(), 3, "S3 retention 3: {s3:?}");
    let (journal, _) = ok(&h, "dr-cron", "journalctl -u k3s -o cat");
    assert!(journal.contains("Removing local snapshot /var/lib/rancher/k3s/server/db/snapshots/etcd-snapshot-dr-cron-"), "{journal}");
    assert!(
        journal.contains("Removing S3 snapshot: s3://dr-snapshots/prod/etcd-snapshot-dr-cron-"),
        "{journal}"
    );
}

#[test]
fn a_restore_onto_the_same_servers_brings_back_what_came_before_the_snapshot() {
    let h = harness(|_| {});
    h.new_vm("dr-s1", &first_server(""));
    up(&h, "dr-s1");
    h.new_vm(
        "dr-s2",
        &script(
            "server",
            &format!("server: https://dr-s1.tail1234.ts.net:6443\ntoken: {TOKEN}\nagent-token: {AGENT_TOKEN}\nnode-ip: $TS_IP\ntls-san:\n  - $(hostname).tail1234.ts.net\n"),
            true,
        ),
    );
    h.new_vm(
        "dr-a1",
        &script(
            "agent",
            &format!("server: https://dr-s1.tail1234.ts.net:6443\ntoken: {AGENT_TOKEN}\n"),
            true,
        ),
    );
    up(&h, "dr-s2");
    up(&h, "dr-a1");
    let kubectl = |vm: &str, args: &str| ok(&h, vm, &format!("sudo -n k3s kubectl {args}")).0;
    kubectl("dr-s1", "create namespace made-before");
    let (_, err) = ok(&h, "dr-s1", "sudo -n k3s etcd-snapshot save");
    let name = saved(&err).pop().expect("a snapshot");
    let path = format!("/var/lib/rancher/k3s/server/db/snapshots/{name}");
    kubectl("dr-s1", "create namespace made-after");
    let reset = format!("sudo -n k3s server --cluster-reset --cluster-reset-restore-path={path}");

    // k3s runs: its ports are taken.
    refused(&h, "dr-s1", &reset, "bind: address already in use");
    refused(
        &h,
        "dr-s1",
        &format!("sudo -n k3s server --cluster-reset-restore-path={path}"),
        "--cluster-reset required with --cluster-reset-restore-path",
    );
    for vm in ["dr-s1", "dr-s2"] {
        ok(&h, vm, "sudo -n systemctl stop k3s");
    }
    // A joined server cannot be the one reset.
    refused(
        &h,
        "dr-s2",
        "sudo -n k3s server --cluster-reset",
        "cannot perform cluster-reset while server URL is set",
    );
    refused(
        &h,
        "dr-s1",
        "sudo -n k3s server --cluster-reset --cluster-reset-restore-path=/tmp/none",
        "etcd: snapshot path does not exist: /tmp/none",
    );
    let (_, err) = ok(&h, "dr-s1", &reset);
    assert!(
        err.contains("Managed etcd cluster membership has been reset, restart without --cluster-reset flag now"),
        "{err}"
    );
    ok(&h, "dr-s1", "sudo -n systemctl start --no-block k3s");
    let s1 = ready(&h, "dr-s1");
    let names = kubectl("dr-s1", "get namespaces -o name");
    assert!(names.contains("namespace/made-before"), "{names}");
    assert!(!names.contains("namespace/made-after"), "{names}");

    // dr-s2 on its old data waits for a membership that is gone.
    ok(&h, "dr-s2", "sudo -n systemctl start --no-block k3s");
    let w = h.wait_for("dr-s2", Duration::from_secs(10), |w| {
        w["k3s"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cluster ID mismatch"))
    });
    assert_eq!(w["k3s"]["ready"], false);
    // Removed, it joins the restored cluster; the agent reports there.
    ok(
        &h,
        "dr-s2",
        "sudo -n systemctl stop k3s && sudo -n rm -rf /var/lib/rancher/k3s/server/db && sudo -n systemctl start --no-block k3s",
    );
    let s2 = ready(&h, "dr-s2");
    assert_eq!(s2["cluster"], s1["cluster"]);
    assert_eq!(s2["etcd_member"], true);
    let a1 = h.wait_for("dr-a1", Duration::from_secs(10), |w| {
        w["k3s"]["cluster"] == s1["cluster"] && w["k3s"]["ready"] == true
    });
    assert_eq!(a1["k3s"]["role"], "agent");
    let nodes = kubectl("dr-s1", "get nodes");
    for n in ["dr-s1", "dr-s2", "dr-a1"] {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(n) && l.contains(" Ready ")),
            "{n} Ready:\n{nodes}"
        );
    }
}

#[test]
fn a_restore_onto_a_fresh_vm_from_s3_needs_the_token_the_snapshot_was_taken_with() {
    let h = harness(s3_world);
    h.new_vm("dr-old", &first_server(S3));
    up(&h, "dr-old");
    ok(&h, "dr-old", "sudo -n k3s kubectl create namespace kept");
    let (_, err) = ok(&h, "dr-old", "sudo -n k3s etcd-snapshot save");
    let name = saved(&err).pop().expect("a snapshot");
    h.rm_behind_the_tools_back(&["dr-old"]);

    // A fresh server VM with k3s installed, not started, and a wrong token.
    h.new_vm(
        "dr-new",
        &script(
            "server",
            &format!("cluster-init: true\ntoken: not-the-token\nnode-ip: $TS_IP\n{S3}"),
            false,
        ),
    );
    up(&h, "dr-new");
    let reset = |snapshot: &str| {
        format!("sudo -n k3s server --cluster-reset --cluster-reset-restore-path={snapshot}")
    };
    refused(
        &h,
        "dr-new",
        &reset("on-demand-gone-1"),
        "failed to download snapshot from S3: The specified key does not exist.",
    );
    refused(
        &h,
        "dr-new",
        &reset(&name),
        "bootstrap data already found and encrypted with different token",
    );
    ok(
        &h,
        "dr-new",
        "sudo -n sed -i /^token:/d /etc/rancher/k3s/config.yaml",
    );
    refused(
        &h,
        "dr-new",
        &reset(&name),
        "/var/lib/rancher/k3s/server/token does not exist, please pass --token to complete the restoration",
    );
    let (_, err) = ok(&h, "dr-new", &format!("{} --token {TOKEN}", reset(&name)));
    assert!(
        err.contains(&format!("Retrieving etcd snapshot {name} from S3"))
            && err.contains("restart without --cluster-reset flag now"),
        "{err}"
    );
    ok(
        &h,
        "dr-new",
        &format!(
            "echo 'token: {TOKEN}' | sudo -n tee -a /etc/rancher/k3s/config.yaml >/dev/null && sudo -n systemctl start --no-block k3s"
        ),
    );
    ready(&h, "dr-new");
    let (names, _) = ok(&h, "dr-new", "sudo -n k3s kubectl get namespaces -o name");
    assert!(names.contains("namespace/kept"), "{names}");
    let (nodes, _) = ok(&h, "dr-new", "sudo -n k3s kubectl get nodes");
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("dr-new") && l.contains(" Ready ")),
        "{nodes}"
    );
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("dr-old") && l.contains("NotReady")),
        "the lost server's Node comes back from the snapshot, NotReady: {nodes}"
    );
}
