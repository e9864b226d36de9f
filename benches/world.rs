//! `apply --wait` of 3 servers + 20 agents against the in-process emulator
//! with its VM world (the project's own setup scripts run in it), as a
//! ratio to the critical path the world's timings allow:
//!
//!   first server  = boot + install + server_ready
//!   each further server, created once the previous is Ready
//!                 = boot + install + join            (two of them)
//!   agents        = boot + install + agent_ready, overlapping the joins
//!
//! Run: `cargo bench --bench world [-- FILTER]` (FILTER: run only the
//! measurements whose name contains it, e.g. `rolling`). Also measures the single-server
//! fleet (1 server + 20 agents), whose critical path is the first server
//! plus one agent. Where the cluster does not form or `--wait` cannot
//! wait, it says why (from the world's view of each VM).
//!
//! And a rolling upgrade (a patch release) of 3 servers + 10 agents, in
//! place, against its critical path: servers one at a time, each
//! `install + server_ready` (the installer's download, then a restart on
//! its own etcd data), then the agents `maxUnavailable` at a time, each
//! batch `install + agent_ready`. Measured with the default
//! `maxUnavailable: 1` and with the whole pool at once.
//!
//! And `restore` of 3 servers + 10 agents from a local snapshot, every
//! server still running, against its critical path: the reset server
//! restarting on the restored data (`server_ready`), the two others
//! rejoining one at a time (`join` each), the agents at once
//! (`agent_ready`).
//!
//! And issue 23's case: `restore` after all three server VMs of the HA
//! example's size (3 servers + 6 agents) were removed, from an S3 snapshot,
//! to every node Ready, against [`restore_all_gone_critical_path`] (target:
//! within 1.3x). `WORLD_BENCH_TRACE=1` prints both restores' timelines
//! (each VM's state changes, the exe.dev requests, the restore's own
//! output), which is where the README's breakdown comes from.
//!
//! And `check` on a formed cluster (3 servers + 6 agents, the HA example's
//! size, and 3 + 57 = 60 nodes; `CHECK_BENCH_AGENTS` picks others): its
//! wall time against its own slowest path (deploy + wait for the pods +
//! the slowest single probe, or the shares probed alongside when they
//! take longer), run twice in a row, with the probe counts.

use std::path::Path;
use std::time::{Duration, Instant};

use exedev_k8s::core::token::{self, API_NAMESPACE, Permissions};
use exedev_k8s::emulator::{self, EmulatorConfig};
use exedev_k8s::world::{Timings, WorldConfig};
use serde_json::Value;
use ssh_key::{Algorithm, PrivateKey};

/// Timings a tenth of a real bootstrap's or so: long enough that the CLI's
/// polling (at most every 3 s, as against exe.dev) is not the whole story.
const BOOT_MS: u64 = 1000;
/// A pod's start (`ContainerCreating` until Running and Ready): a fifth
/// of the 5 s that Kubernetes' pod startup latency SLO allows at the 99th
/// percentile (kubernetes/community
/// sig-scalability/slos/pod_startup_latency.md, image pulls excluded),
/// as for a small cluster well inside its SLO with the image cached. The
/// bench's choice; `check`'s ratio without it (pods Running at once) was
/// 2.9-3.9x on 3 + 6 (README).
const POD_START_MS: u64 = 1000;
const TIMINGS: Timings = Timings {
    install_ms: 1000,
    server_ready_ms: 10_000,
    join_ms: 8000,
    agent_ready_ms: 5000,
    restart_ms: 5000,
    tailscale_up_ms: 1000,
    pod_start_ms: POD_START_MS,
};

fn fleet(servers: u32, agents: u32) -> String {
    fleet_at("v1.31.4+k3s1", servers, agents, 1)
}

/// The tests' shared minimal fleet, renamed, pinned to `version`, with a
/// token, and pool `web` of `agents` with its `maxUnavailable`.
fn fleet_at(version: &str, servers: u32, agents: u32, max_unavailable: u32) -> String {
    include_str!("../tests/fleets/minimal.yaml")
        .replace("name: demo", "name: bench")
        .replace(
            "  channel: stable\n",
            &format!("  version: {version}\n  token: {{env: K3S_TOKEN}}\n"),
        )
        + &format!(
            "controlPlane:\n  count: {servers}\npools:\n  - name: web\n    count: {agents}\n    maxUnavailable: {max_unavailable}\n"
        )
}

/// `apply --wait` of `fleet.yaml`: how every measurement forms its cluster.
const APPLY_WAIT: [&str; 8] = [
    "apply",
    "-f",
    "fleet.yaml",
    "--yes",
    "--wait",
    "--via-ssh-tunnel",
    "--timeout",
    "300s",
];

/// What one run found.
struct Run {
    /// Wall time of the command (or until every node was Ready).
    wall: Duration,
    ok: bool,
    tail: String,
    ready: usize,
    total: usize,
    why: Vec<String>,
}

fn cli(
    dir: &Path,
    emu: &emulator::RunningEmulator,
    tok: &str,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
        .args(args)
        .current_dir(dir)
        .env("EXE_DEV_ENDPOINT", &emu.url)
        .env("EXE_DEV_API_KEY", tok)
        .env("TS_AUTHKEY", "tskey-auth-bench")
        .env("K3S_TOKEN", "bench-token")
        // The keys [`s3_fleet`] names (and [`all_gone_world`]'s S3 takes).
        .env("S3_ACCESS_KEY", "AKBENCH")
        .env("S3_SECRET_KEY", "SKBENCH")
        .env("EXEDEV_K8S_SSH", emu.ssh_program().expect("world"))
        .env("TMPDIR", dir)
        .env_remove("EXE_DEV_SSH_KEY")
        .output()
        .expect("run exedev-k8s")
}

fn tail(o: &std::process::Output) -> String {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    t.lines()
        .filter(|l| l.starts_with("error"))
        .take(1)
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn state(emu: &emulator::RunningEmulator) -> Value {
    reqwest::get(format!("{}/_emulator/state", emu.base_url))
        .await
        .expect("state")
        .json()
        .await
        .expect("json")
}

/// Ready nodes, and whether every setup script has finished.
fn progress(s: &Value) -> (usize, bool) {
    let vms = s["vms"].as_array().cloned().unwrap_or_default();
    let ready = vms
        .iter()
        .filter(|v| v["world"]["k3s"]["ready"] == true)
        .count();
    let finished = vms
        .iter()
        .all(|v| !v["world"]["setup"]["exit_code"].is_null());
    (ready, finished)
}

fn reasons(s: &Value) -> Vec<String> {
    s["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["world"]["k3s"]["ready"] != true)
        .take(5)
        .map(|vm| {
            let k = &vm["world"]["k3s"];
            let setup = &vm["world"]["setup"];
            let last = setup["log_tail"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            format!(
                "{}: k3s {} ({}); setup exit {}: {}",
                vm["name"].as_str().unwrap_or_default(),
                k["phase"].as_str().unwrap_or("not started"),
                k["error"].as_str().unwrap_or("-"),
                setup["exit_code"],
                last
            )
        })
        .collect()
}

/// A fresh emulator with the world at [`TIMINGS`], and a token for it.
async fn world_emulator(tailscaled_at_boot: bool) -> (emulator::RunningEmulator, String) {
    world_emulator_with(tailscaled_at_boot, |_| {}).await
}

/// [`world_emulator`] with the world's config changed by `with` first.
async fn world_emulator_with(
    tailscaled_at_boot: bool,
    with: impl FnOnce(&mut WorldConfig),
) -> (emulator::RunningEmulator, String) {
    let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).expect("key");
    let mut w = WorldConfig::new(env!("CARGO_BIN_EXE_exedev-k8s"));
    w.timings = TIMINGS;
    w.tailscaled_at_boot = tailscaled_at_boot;
    w.script_timeout = Duration::from_secs(120);
    // The scripts' own `sleep 5` polls become 0.1 s, like the world's
    // sub-second timings.
    w.sleep_scale = 0.02;
    with(&mut w);
    let cfg = EmulatorConfig {
        authorized_keys: vec![key.public_key().clone()],
        boot: Duration::from_millis(BOOT_MS),
        world: Some(w),
        ..Default::default()
    };
    let emu = emulator::start(cfg).await.expect("emulator");
    let perms = Permissions {
        cmds: Some(
            exedev_k8s::core::api::command::CATALOGUE
                .iter()
                .map(|c| c.name.to_string())
                .collect(),
        ),
        ..Default::default()
    };
    let tok = token::mint(&key, &perms, API_NAMESPACE)
        .expect("token")
        .expose()
        .to_string();
    (emu, tok)
}

/// A cluster formed at v1.31.4, then (timed) `apply --wait` of v1.31.6 in
/// place with the pool's `maxUnavailable`.
async fn measure_upgrade(servers: u32, agents: u32, max_unavailable: u32) -> Run {
    let (emu, tok) = world_emulator(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |v: &str| {
        std::fs::write(
            dir.path().join("fleet.yaml"),
            fleet_at(v, servers, agents, max_unavailable),
        )
        .expect("fleet")
    };
    let args = APPLY_WAIT;
    write("v1.31.4+k3s1");
    let formed = tokio::task::block_in_place(|| cli(dir.path(), &emu, &tok, &args));
    let total = (servers + agents) as usize;
    if !formed.status.success() {
        let s = state(&emu).await;
        let run = Run {
            wall: Duration::ZERO,
            ok: false,
            tail: format!("the cluster did not form: {}", tail(&formed)),
            ready: progress(&s).0,
            total,
            why: reasons(&s),
        };
        emu.shutdown().await;
        return run;
    }
    write("v1.31.6+k3s1");
    let start = Instant::now();
    let out = tokio::task::block_in_place(|| cli(dir.path(), &emu, &tok, &args));
    let wall = start.elapsed();
    let s = state(&emu).await;
    let upgraded = s["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            v["world"]["k3s"]["ready"] == true && v["world"]["k3s"]["version"] == "v1.31.6+k3s1"
        })
        .count();
    let run = Run {
        wall,
        ok: out.status.success(),
        tail: tail(&out),
        ready: upgraded,
        total,
        why: if upgraded < total {
            reasons(&s)
        } else {
            Vec::new()
        },
    };
    emu.shutdown().await;
    run
}

/// A cluster formed, a snapshot saved on the first server, then (timed)
/// `restore --force --yes` from it, to every node Ready.
async fn measure_restore(servers: u32, agents: u32) -> Run {
    measure_restore_of(RestoreCase {
        world: |_| {},
        fleet: fleet(servers, agents),
        total: (servers + agents) as usize,
        remove_servers: None,
        extra: &["--force"],
    })
    .await
}

/// What differs between the two restore measurements.
struct RestoreCase {
    /// The world's config beyond [`TIMINGS`].
    world: fn(&mut WorldConfig),
    /// The fleet file.
    fleet: String,
    /// Nodes that must be Ready at the end.
    total: usize,
    /// Remove this many server VMs (`bench-cp1..N`) after the snapshot.
    remove_servers: Option<u32>,
    /// Arguments added to `restore -f fleet.yaml --snapshot NAME --yes`.
    extra: &'static [&'static str],
}

/// The restore measurements' one course: the cluster formed (`apply
/// --wait`), a snapshot saved on the first server, the servers removed
/// when the case says so, then (timed) `restore`, to every node Ready.
/// With `WORLD_BENCH_TRACE` set, prints the timed part's timeline
/// ([`Trace`]).
async fn measure_restore_of(case: RestoreCase) -> Run {
    let (emu, tok) = world_emulator_with(false, case.world).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fleet.yaml"), &case.fleet).expect("fleet");
    let formed = tokio::task::block_in_place(|| cli(dir.path(), &emu, &tok, &APPLY_WAIT));
    let name = snapshot_on(&emu, "bench-cp1", "bench");
    let gone = match (
        formed.status.success() && name.is_some(),
        case.remove_servers,
    ) {
        (false, _) => Err(String::new()),
        (true, Some(n)) => remove_servers(&emu, &tok, n).await,
        (true, None) => Ok(()),
    };
    let (Some(name), Ok(())) = (name, gone) else {
        let s = state(&emu).await;
        let run = Run {
            wall: Duration::ZERO,
            ok: false,
            tail: format!("no cluster, snapshot or removal: {}", tail(&formed)),
            ready: progress(&s).0,
            total: case.total,
            why: reasons(&s),
        };
        emu.shutdown().await;
        return run;
    };
    let mut args = vec![
        "restore",
        "-f",
        "fleet.yaml",
        "--snapshot",
        &name,
        "--yes",
        "--via-ssh-tunnel",
        "--timeout",
        "300s",
    ];
    args.extend(case.extra);
    let trace = std::env::var_os("WORLD_BENCH_TRACE").map(|_| Trace::start(&emu));
    let start = Instant::now();
    let out = tokio::task::block_in_place(|| cli(dir.path(), &emu, &tok, &args));
    let wall = start.elapsed();
    if let Some(t) = trace {
        t.finish(&emu, &out).await;
    }
    let s = state(&emu).await;
    let ready = progress(&s).0;
    let run = Run {
        wall,
        ok: out.status.success(),
        tail: tail(&out),
        ready,
        total: case.total,
        why: if ready < case.total {
            reasons(&s)
        } else {
            Vec::new()
        },
    };
    emu.shutdown().await;
    run
}

/// The timeline of one timed command, for finding where its seconds go:
/// every change of each VM as `/_emulator/state` shows it (status, setup
/// script's last log line, k3s unit, phase, starts, Ready), sampled every
/// 100 ms, the exe.dev API requests from the emulator's log, and the
/// command's own progress lines (timed when it ends: the restore prints
/// each step's seconds). Sampling costs the emulator some CPU: figures
/// measured with it are not the bench's.
struct Trace {
    start: Instant,
    start_unix_ms: u64,
    stop: tokio::sync::watch::Sender<bool>,
    sampler: tokio::task::JoinHandle<Vec<(Duration, String)>>,
}

impl Trace {
    fn start(emu: &emulator::RunningEmulator) -> Trace {
        let start = Instant::now();
        let start_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let url = format!("{}/_emulator/state", emu.base_url);
        let sampler = tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::<String, String>::new();
            let mut events = Vec::new();
            while !*stopped.borrow() {
                let s: Value = match reqwest::get(&url).await {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                for vm in s["vms"].as_array().into_iter().flatten() {
                    let name = vm["name"].as_str().unwrap_or_default().to_string();
                    let now = vm_summary(vm);
                    if seen.get(&name) != Some(&now) {
                        events.push((start.elapsed(), format!("{name}: {now}")));
                        seen.insert(name, now);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => {}
                }
            }
            events
        });
        Trace {
            start,
            start_unix_ms,
            stop,
            sampler,
        }
    }

    async fn finish(self, emu: &emulator::RunningEmulator, out: &std::process::Output) {
        let _ = self.stop.send(true);
        let mut events = self.sampler.await.unwrap_or_default();
        for r in emu.requests() {
            if r.unix_ms >= self.start_unix_ms {
                let at = Duration::from_millis(r.unix_ms - self.start_unix_ms);
                events.push((
                    at,
                    format!("exe.dev: {} -> {}", r.words.join(" "), r.status),
                ));
            }
        }
        events.sort_by_key(|(at, _)| *at);
        println!("    trace (seconds from the command's start):");
        for (at, what) in events {
            println!("    {:7.2} {what}", at.as_secs_f64());
        }
        println!(
            "    {:7.2} the command ended; its output:",
            self.start.elapsed().as_secs_f64()
        );
        for l in String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&out.stdout).lines())
        {
            println!("            | {l}");
        }
    }
}

/// One VM as [`Trace`] follows it.
fn vm_summary(vm: &Value) -> String {
    let w = &vm["world"];
    let setup = &w["setup"];
    let last = setup["log_tail"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(Value::as_str)
        .unwrap_or_default();
    let last = last.split_once("] ").map_or(last, |(_, l)| l);
    let k = &w["k3s"];
    format!(
        "{} | setup {} {last:?} | k3s {} {} starts {} ready {} members {}",
        vm["status"].as_str().unwrap_or("?"),
        if setup["running"] == true {
            "running".to_string()
        } else {
            format!("exit {}", setup["exit_code"])
        },
        k["unit"].as_str().unwrap_or("-"),
        k["phase"].as_str().unwrap_or("-"),
        k["starts"],
        k["ready"],
        k["etcd_members"],
    )
}

/// The critical path of a restore with every server running: the reset
/// server on the restored data, the others rejoining one at a time, the
/// agents at once.
fn restore_critical_path(servers: u32) -> Duration {
    let t = TIMINGS;
    Duration::from_millis(
        t.server_ready_ms + u64::from(servers.saturating_sub(1)) * t.join_ms + t.agent_ready_ms,
    )
}

/// The fleet of [`fleet`] with S3 snapshots (bucket `bench-dr`, keys from
/// `S3_ACCESS_KEY`/`S3_SECRET_KEY`), which a restore with every server
/// gone needs.
fn s3_fleet(servers: u32, agents: u32) -> String {
    fleet(servers, agents).replace(
        "network:",
        "etcd:\n  snapshots:\n    schedule: \"0 */6 * * *\"\n    retention: 5\n    s3:\n      endpoint: s3.emulator.internal\n      bucket: bench-dr\n      folder: bench\n      accessKey: {env: S3_ACCESS_KEY}\n      secretKey: {env: S3_SECRET_KEY}\nnetwork:",
    )
}

/// The world for a restore with every server gone: S3 with the bench's
/// bucket, and an ephemeral tailnet key (as in
/// `tests/it/world_restore.rs`): a VM removed behind the tool's back cannot
/// log its device out, and only an ephemeral device leaves the tailnet by
/// itself, so the new VM gets its name.
fn all_gone_world(w: &mut WorldConfig) {
    w.s3 = exedev_k8s::world::s3::S3Config {
        endpoint: "s3.emulator.internal".into(),
        access_key: Some("AKBENCH".into()),
        secret_key: Some("SKBENCH".into()),
        buckets: vec!["bench-dr".into()],
    };
    w.tailnet.keys = vec![
        exedev_k8s::world::tailnet::DeclaredKey::parse(
            "tskey-auth-bench:reusable,ephemeral,preauthorized",
        )
        .expect("key"),
    ];
    w.tailnet.ephemeral_offline_ms = 300;
}

/// Issue 23: a cluster formed with S3 snapshots, a snapshot saved on the
/// first server (uploaded to S3), every server VM removed through the
/// exe.dev API, then (timed) `restore --yes` from the snapshot, to every
/// node Ready.
async fn measure_restore_all_gone(servers: u32, agents: u32) -> Run {
    measure_restore_of(RestoreCase {
        world: all_gone_world,
        fleet: s3_fleet(servers, agents),
        total: (servers + agents) as usize,
        remove_servers: Some(servers),
        extra: &[],
    })
    .await
}

/// `k3s etcd-snapshot save --name PREFIX` on `vm`: the saved snapshot's name.
fn snapshot_on(emu: &emulator::RunningEmulator, vm: &str, prefix: &str) -> Option<String> {
    let saved = tokio::task::block_in_place(|| {
        std::process::Command::new(emu.ssh_program().expect("world"))
            .args([
                "-o",
                "BatchMode=yes",
                &format!("{vm}.exe.xyz"),
                "--",
                &format!("sudo -n k3s etcd-snapshot save --name {prefix}"),
            ])
            .output()
            .expect("ssh")
    });
    let said = String::from_utf8_lossy(&saved.stderr).to_string()
        + &String::from_utf8_lossy(&saved.stdout);
    said.split("Snapshot ")
        .filter_map(|r| r.split(" saved.").next())
        .find(|n| n.starts_with(&format!("{prefix}-")) && !n.contains(' '))
        .map(str::to_string)
}

/// `rm bench-cpN` for every server through the exe.dev API, as a lost
/// server would leave it.
async fn remove_servers(
    emu: &emulator::RunningEmulator,
    tok: &str,
    servers: u32,
) -> Result<(), String> {
    for i in 1..=servers {
        let r = reqwest::Client::new()
            .post(&emu.url)
            .bearer_auth(tok)
            .body(format!("rm bench-cp{i}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(r.text().await.unwrap_or_default());
        }
    }
    Ok(())
}

/// The critical path of a restore with every server VM gone, from the
/// plan's steps and the world's timings:
///
///   first server created and bootstrapped = boot + install + server_ready
///   reset from the S3 snapshot, Ready       = server_ready
///   the other servers, created at once      = boot + install
///     and joining one at a time             + join each
///   agents re-pointed, all at once          = agent_ready
///
/// The snapshot look-up, the stop and the Node deletions take no world
/// time and count as nothing.
///
/// No server restarts for the fleet's snapshot settings: the setup script
/// cannot carry the S3 keys (exe.dev stores it), so it waits for them
/// before k3s's first start while apply's create path writes them over
/// SSH as soon as the VM runs (`apply::steps::push_before_start`); k3s
/// starts once with them. Traced at load ~9-13 (53.3 s = 1.18x): first
/// server created to its comment 13.5 s (path 12), snapshot listed and
/// k3s stopped 0.3 s, reset to Ready 10.0 s (10), cp2 created to joined
/// 12.5 s (path 10), cp3 11.5 s (path 8), agents 5.0 s (5); the settings
/// wait in each server's setup script took about 0.1 s (the push had
/// landed during the k3s install). Before (each joining server restarted
/// once Ready for them): 79.4 s = 1.76x at load ~12.
fn restore_all_gone_critical_path(servers: u32) -> Duration {
    let t = TIMINGS;
    let first = BOOT_MS + t.install_ms + t.server_ready_ms;
    let reset = t.server_ready_ms;
    let others = if servers > 1 {
        BOOT_MS + t.install_ms + u64::from(servers - 1) * t.join_ms
    } else {
        0
    };
    Duration::from_millis(first + reset + others + t.agent_ready_ms)
}

/// The critical path of a rolling upgrade: servers one at a time, then the
/// agents in batches of `max_unavailable`.
fn upgrade_critical_path(servers: u32, agents: u32, max_unavailable: u32) -> Duration {
    let t = TIMINGS;
    let server = t.install_ms + t.server_ready_ms;
    let batches = u64::from(agents.div_ceil(max_unavailable.max(1)));
    let agent = t.install_ms + t.agent_ready_ms;
    Duration::from_millis(u64::from(servers) * server + batches * agent)
}

/// One fleet on a fresh emulator. With `wait`, `apply --wait`; without,
/// `apply` and then the world's state polled until every node is Ready
/// (what the CLI cannot wait for on a new cluster today).
async fn measure(servers: u32, agents: u32, tailscaled_at_boot: bool, wait: bool) -> Run {
    // tailscaled_at_boot stays available for comparing scripts that do not
    // start it; the project's scripts do.
    let (emu, tok) = world_emulator(tailscaled_at_boot).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fleet.yaml"), fleet(servers, agents)).expect("fleet");
    let total = (servers + agents) as usize;
    let start = Instant::now();
    let mut args = vec!["apply", "-f", "fleet.yaml", "--yes"];
    if wait {
        args.extend(["--wait", "--via-ssh-tunnel", "--timeout", "120s"]);
    }
    let out = tokio::task::block_in_place(|| cli(dir.path(), &emu, &tok, &args));
    let mut run = Run {
        wall: start.elapsed(),
        ok: out.status.success(),
        tail: tail(&out),
        ready: 0,
        total,
        why: Vec::new(),
    };
    if !wait && run.ok {
        let deadline = start + Duration::from_secs(120);
        loop {
            let s = state(&emu).await;
            let (ready, finished) = progress(&s);
            run.ready = ready;
            if ready == total {
                run.wall = start.elapsed();
                break;
            }
            if (finished && ready < total && start.elapsed() > Duration::from_secs(20))
                || Instant::now() > deadline
            {
                run.ok = false;
                run.wall = start.elapsed();
                run.why = reasons(&s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        let s = state(&emu).await;
        run.ready = progress(&s).0;
        if run.ready < total {
            run.why = reasons(&s);
        }
    }
    emu.shutdown().await;
    run
}

fn critical_path(servers: u32) -> Duration {
    let t = TIMINGS;
    let first = BOOT_MS + t.install_ms + t.server_ready_ms;
    let joins = u64::from(servers.saturating_sub(1)) * (BOOT_MS + t.install_ms + t.join_ms);
    let agent = BOOT_MS + t.install_ms + t.agent_ready_ms;
    Duration::from_millis(first + joins.max(agent))
}

fn report(name: &str, servers: u32, r: &Run) {
    report_against(name, critical_path(servers), r);
}

fn report_against(name: &str, floor: Duration, r: &Run) {
    let ratio = if r.ok && r.ready == r.total {
        format!(
            "{:.2}x the {:.2}s critical path",
            r.wall.as_secs_f64() / floor.as_secs_f64(),
            floor.as_secs_f64()
        )
    } else {
        format!(
            "gave up: {}/{} Ready (critical path {:.2}s) {}",
            r.ready,
            r.total,
            floor.as_secs_f64(),
            r.tail
        )
    };
    println!("{name}: {:.2}s, {ratio}", r.wall.as_secs_f64());
    for w in &r.why {
        println!("    - {w}");
    }
}

/// `check` on a formed cluster of 3 servers + `agents` (pool `web`), run
/// twice in a row (as a user may: the second starts while the first's
/// namespace may still be terminating on a real cluster): each run's wall
/// time (the whole command: process start, tunnel, connect, deploy, wait
/// for a pod per node, probe, delete the namespace) and its report's own
/// timings. `CHECK_BENCH_CONCURRENCY` passes `--concurrency`.
async fn measure_check(agents: u32) -> Result<Vec<(Duration, Value)>, String> {
    let (emu, tok) = world_emulator(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fleet.yaml"), fleet(3, agents)).expect("fleet");
    let formed = tokio::task::block_in_place(|| cli(dir.path(), &emu, &tok, &APPLY_WAIT));
    if !formed.status.success() {
        let why = reasons(&state(&emu).await).join("; ");
        emu.shutdown().await;
        return Err(format!("the cluster did not form: {} {why}", tail(&formed)));
    }
    let concurrency = std::env::var("CHECK_BENCH_CONCURRENCY").ok();
    let mut args = vec!["check", "-f", "fleet.yaml", "--via-ssh-tunnel", "--json"];
    if let Some(c) = &concurrency {
        args.extend(["--concurrency", c]);
    }
    let mut runs = Vec::new();
    for _ in 0..2 {
        let start = Instant::now();
        let out = tokio::task::block_in_place(|| cli(dir.path(), &emu, &tok, &args));
        let wall = start.elapsed();
        let report: Value = match serde_json::from_slice(&out.stdout) {
            Ok(r) => r,
            Err(e) => {
                emu.shutdown().await;
                return Err(format!("no JSON report ({e}): {}", tail(&out)));
            }
        };
        if !out.status.success() {
            emu.shutdown().await;
            return Err(format!("check failed: {}", report["failures"]));
        }
        runs.push((wall, report));
    }
    emu.shutdown().await;
    Ok(runs)
}

/// `check`'s wall time against its own slowest path (target: within
/// 1.5x), for each run. The slowest path is what a correct check cannot
/// avoid, the report's `slowest_path_ms` (`Timings::slowest_path`), from
/// its timings (each measured by the tool around that step alone, so it
/// holds the step's own round trips to the API):
///
/// - deploy: creating the namespace, DaemonSet and Service, reading
///   `default/kubernetes` and the Ready Nodes;
/// - then pods: a check pod started on every Ready node, counted as the
///   world's `POD_START_MS` (the check's own `pods_ms` is when its polls
///   saw them Running, which adds its polling's overshoot: reported
///   beside, as "the check's own slowest path");
/// - then the slowest single probe (a pair's small and large dial), as
///   if every probe ran at once;
/// - or the shares, the shared pools through exe.dev's proxy, probed
///   alongside, when they take longer.
///
/// The wall time adds what is the tool's own: starting the process,
/// opening the SSH tunnel and the TLS connection, the probes beyond the
/// slowest one (`--concurrency` at a time), deleting the namespace, and
/// rendering the report.
fn report_check(agents: u32, r: Result<Vec<(Duration, Value)>, String>) {
    let name = format!("check, 3 servers + {agents} agents");
    let runs = match r {
        Ok(runs) => runs,
        Err(why) => {
            println!("{name}: {why}");
            return;
        }
    };
    for (i, (wall, report)) in runs.iter().enumerate() {
        let t = &report["timings"];
        let ms = |k: &str| t[k].as_u64().unwrap_or(0);
        // The floor counts the pods as the world starts them
        // (`POD_START_MS` after deploying), not as the tool saw them: its
        // own `pods_ms` includes its polling's overshoot.
        let floor = (ms("deploy_ms") + POD_START_MS + ms("slowest_probe_ms")).max(ms("shares_ms"));
        let probed = ["pod_to_pod", "service", "dns", "api", "shares"]
            .iter()
            .map(|k| report[*k]["probed"].as_u64().unwrap_or(0))
            .sum::<u64>();
        println!(
            "{name}, run {}: {:.2}s, {:.2}x the {:.2}s floor (deploy {} ms + pods started {POD_START_MS} ms + slowest probe {} ms; {:.2}x the check's own {:.2}s slowest path, pods seen Running after {} ms; shares {} ms); {} node pairs, {probed} probes in {} ms",
            i + 1,
            wall.as_secs_f64(),
            wall.as_secs_f64() * 1000.0 / floor.max(1) as f64,
            floor as f64 / 1000.0,
            ms("deploy_ms"),
            ms("slowest_probe_ms"),
            wall.as_secs_f64() * 1000.0 / ms("slowest_path_ms").max(1) as f64,
            ms("slowest_path_ms") as f64 / 1000.0,
            ms("pods_ms"),
            ms("shares_ms"),
            report["pod_to_pod"]["probed"],
            ms("probes_ms"),
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("timings: boot {BOOT_MS} ms, {TIMINGS:?}, scripts' sleeps x0.02");
    // WORLD_BENCH_AGENTS=N measures another agent count (default 20).
    let agents: u32 = std::env::var("WORLD_BENCH_AGENTS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    // `cargo bench` passes `--bench`; any other argument is a filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let m = |s, a, wait| rt.block_on(measure(s, a, false, wait));
    let formations = [
        (
            format!("3 servers + {agents} agents, apply --wait"),
            3,
            true,
        ),
        (
            format!("3 servers + {agents} agents, apply (no --wait), until every Node is Ready"),
            3,
            false,
        ),
        (format!("1 server + {agents} agents, apply --wait"), 1, true),
    ];
    for (name, servers, wait) in formations {
        if wanted(&name) {
            report(&name, servers, &m(servers, agents, wait));
        }
    }
    let name = "restore from a snapshot, 3 servers running + 10 agents".to_string();
    if wanted(&name) {
        report_against(
            &name,
            restore_critical_path(3),
            &rt.block_on(measure_restore(3, 10)),
        );
    }
    let name = "restore with every server VM gone, from S3, 3 servers + 6 agents".to_string();
    if wanted(&name) {
        report_against(
            &name,
            restore_all_gone_critical_path(3),
            &rt.block_on(measure_restore_all_gone(3, 6)),
        );
    }
    // CHECK_BENCH_AGENTS="6,57": the agent counts `check` is measured on
    // (3 servers each): the HA example's 3 + 6, and 60 nodes.
    let check_agents: Vec<u32> = std::env::var("CHECK_BENCH_AGENTS")
        .unwrap_or_else(|_| "6,57".into())
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    for a in check_agents {
        if wanted(&format!("check, 3 servers + {a} agents")) {
            report_check(a, rt.block_on(measure_check(a)));
        }
    }
    for mu in [1, 10] {
        let name = format!("rolling upgrade in place, 3 servers + 10 agents, maxUnavailable {mu}");
        if wanted(&name) {
            report_against(
                &name,
                upgrade_critical_path(3, 10, mu),
                &rt.block_on(measure_upgrade(3, 10, mu)),
            );
        }
    }
}
