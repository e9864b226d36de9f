//! Benchmarks against the in-process emulator (run: `cargo bench --bench fleet`).
//!
//! 1. apply of 100 VMs with 200 ms latency and a 10 requests/s limit,
//!    through the engine as the CLI runs it (plan, secret checks, every
//!    script rendered and size-checked, then the apply): wall time against
//!    the rate-limit floor (100 / 10 = 10 s), bounded parallelism vs
//!    sequential.
//! 2. plan of a 1000-VM fleet in sync: API calls made (one `ls` plus the
//!    `share show`s needed) and CPU time of the pure part (diff + render).
//! 3. the same plan as a user runs it: the whole `exedev-k8s plan` process
//!    against the emulator (which runs here, outside the measured process):
//!    CPU seconds (user + system, averaged over 20 runs from the kernel's
//!    account of this process's children) and peak RSS (`/usr/bin/time`,
//!    when installed). Issue 14's budget: 0.05 s CPU and 15 MiB.
//!
//! 1 and 2 go through the engine as the CLI does (`engine::plan`,
//! `prepare_apply` + `execute`), with an `ssh` stand-in that answers like a
//! VM whose bootstrap finished (the emulator runs no setup scripts here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use exedev_k8s::core::fleet;
use exedev_k8s::core::plan::{self, PlanOptions, render, spec};
use exedev_k8s::core::token::{self, API_NAMESPACE, Permissions};
use exedev_k8s::edges::client::{Client, ClientOptions};
use exedev_k8s::emulator::{self, EmulatorConfig, RateLimit, VmRecord};
use exedev_k8s::engine::{self, ApplySettings, Hooks, PlanRequest, Session};
use ssh_key::{Algorithm, PrivateKey};

fn fleet_yaml(cluster: &str, agents: u32, share_pools: u32) -> String {
    let mut pools = String::new();
    // Pools hold at most 100 VMs each; pool names end in a letter (`p0x`).
    let n = agents.div_ceil(100);
    for i in 0..n {
        let count = (agents - i * 100).min(100);
        let share = if i < share_pools {
            "\n    share: {port: 8080, public: true}"
        } else {
            ""
        };
        pools.push_str(&format!("  - name: p{i}x\n    count: {count}{share}\n"));
    }
    // The tests' shared minimal fleet, renamed and pinned, its Tailscale
    // key read from a file beside it ([`workdir`]).
    include_str!("../tests/fleets/minimal.yaml")
        .replace("name: demo", &format!("name: {cluster}"))
        .replace("channel: stable", "version: v1.31.4+k3s1")
        .replace("{env: TS_AUTHKEY}", "{file: ts.key}")
        + &format!("controlPlane:\n  count: 1\npools:\n{pools}")
}

/// Issue 26's shape: 3 servers and 12 pools of `per_pool` agents, the
/// first 4 pools shared (`per_pool` 84: 1,011 VMs, 336 of them shared).
fn fleet_yaml_12_pools(cluster: &str, per_pool: u32) -> String {
    let pools: String = "abcdefghijkl"
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let share = if i < 4 {
                "\n    share: {port: 8080, public: true}"
            } else {
                ""
            };
            format!("  - name: p{c}\n    count: {per_pool}{share}\n")
        })
        .collect();
    include_str!("../tests/fleets/minimal.yaml")
        .replace("name: demo", &format!("name: {cluster}"))
        .replace("channel: stable", "version: v1.31.4+k3s1")
        .replace("{env: TS_AUTHKEY}", "{file: ts.key}")
        + &format!("controlPlane:\n  count: 3\npools:\n{pools}")
}

/// Stand-in for `ssh` (`EXEDEV_K8S_SSH`): a VM whose bootstrap is done, a
/// `tailscale logout` that succeeds, nothing else (no kubeconfig to fetch).
const SSH_STUB: &str = r#"#!/bin/sh
case "$*" in
  *bootstrap-state*) printf 'state: done\nstep: \n--- exedev-k8s bootstrap log ---\nbootstrap done\n' ;;
  *"tailscale logout"*) ;;
  *) echo "ssh stub: not on this bench" >&2; exit 1 ;;
esac
"#;

/// Writes [`SSH_STUB`] in `dir`; returns its path.
fn ssh_stub(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let ssh = dir.join("ssh-stub");
    std::fs::write(&ssh, SSH_STUB).expect("stub");
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    ssh
}

/// A directory with `name.yaml` (the fleet) and the Tailscale key it reads.
fn workdir(name: &str, yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&fleet, yaml).expect("fleet");
    std::fs::write(dir.path().join("ts.key"), "tskey-auth-bench").expect("key");
    (dir, fleet)
}

/// A session on `fleet` against the emulator.
fn session(
    fleet: &Path,
    emu: &emulator::RunningEmulator,
    tok: exedev_k8s::base::secret::Secret,
) -> Session {
    let loaded = Session::load(fleet).expect("fleet");
    let client = Client::new(&emu.url, tok, ClientOptions::default()).expect("client");
    Session::new(loaded, fleet, client, engine::KubeSettings::default())
}

async fn setup(
    cfg: impl FnOnce(&mut EmulatorConfig),
) -> (emulator::RunningEmulator, exedev_k8s::base::secret::Secret) {
    let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).expect("key");
    let mut c = EmulatorConfig {
        authorized_keys: vec![key.public_key().clone()],
        ..Default::default()
    };
    cfg(&mut c);
    let emu = emulator::start(c).await.expect("emulator");
    let tok = token::mint(&key, &Permissions::default_all(), API_NAMESPACE).expect("token");
    (emu, tok)
}

trait AllCmds {
    fn default_all() -> Permissions;
}
impl AllCmds for Permissions {
    fn default_all() -> Permissions {
        Permissions {
            cmds: Some(
                exedev_k8s::core::api::command::CATALOGUE
                    .iter()
                    .map(|c| c.name.to_string())
                    .collect(),
            ),
            ..Default::default()
        }
    }
}

async fn apply_100(parallelism: usize) -> (f64, usize) {
    let (emu, tok) = setup(|c| {
        c.latency = Duration::from_millis(200);
        c.rate_limit = Some(RateLimit {
            per_second: 10.0,
            burst: 10,
        });
        c.boot = Duration::from_millis(300);
    })
    .await;
    let (_dir, path) = workdir("bench", &fleet_yaml("bench", 99, 0));
    let s = session(&path, &emu, tok);
    let settings = ApplySettings {
        parallelism,
        ..Default::default()
    };
    let t = Instant::now();
    let prepared = engine::prepare_apply(&s, None, Vec::new(), &settings)
        .await
        .expect("plan");
    let hooks = Hooks {
        reporter: Arc::new(|_| {}),
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let done = engine::execute(&s, &prepared, &settings, hooks)
        .await
        .expect("apply");
    let secs = t.elapsed().as_secs_f64();
    assert!(done.report.ok(), "{:?}", done.report.failed);
    assert_eq!(emu.state().vms.len(), 100);
    let requests = emu.requests().len();
    emu.shutdown().await;
    (secs, requests)
}

/// An emulator holding `yaml`'s VMs as a finished apply leaves them.
async fn in_sync(yaml: &str) -> (emulator::RunningEmulator, exedev_k8s::base::secret::Secret) {
    let (emu, tok) = setup(|c| c.boot = Duration::ZERO).await;
    let f = fleet::parse(yaml, "big.yaml").expect("fleet");
    for d in fleet::desired_vms(&f) {
        let mut vm = VmRecord::new(&d.name);
        vm.tags = d.tags.clone();
        vm.comment = spec::comment_for(&f, &d, Some("v1.31.4+k3s1"));
        vm.cpus = d.cpu;
        if let Some(s) = d.share {
            vm.share.port = s.port;
            vm.share.public = s.public;
        }
        emu.insert_vm(vm).expect("insert");
    }
    (emu, tok)
}

/// Issue 26: the whole `plan` process for 3 servers + 12 pools (4 shared)
/// from about 100 to 1,011 VMs: peak RSS and CPU per size.
async fn plan_curve() {
    for per_pool in [8, 20, 41, 62, 84] {
        let yaml = fleet_yaml_12_pools("big", per_pool);
        let (emu, tok) = in_sync(&yaml).await;
        let (_dir, path) = workdir("big", &yaml);
        let label = format!("{} VMs, {} shared", 3 + 12 * per_pool, 4 * per_pool);
        plan_process(&emu, tok.expose(), &path, &label).await;
        emu.shutdown().await;
    }
}

async fn plan_1000() {
    let (emu, tok) = in_sync(&fleet_yaml("big", 999, 2)).await;
    let f = fleet::parse(&fleet_yaml("big", 999, 2), "big.yaml").expect("fleet");
    let token = tok.expose().to_string();
    let (_dir, path) = workdir("big", &fleet_yaml("big", 999, 2));
    let s = session(&path, &emu, tok);
    let before = emu.requests().len();
    let t = Instant::now();
    let planned = engine::plan(&s, PlanRequest::default())
        .await
        .expect("plan");
    let observe_secs = t.elapsed().as_secs_f64();
    assert!(
        !planned.plan.has_changes(),
        "in sync: {:?}",
        planned.plan.changes
    );
    let observed = planned.observed;
    let ls = emu.count("ls");
    let shows = emu.count("share show");
    let total = emu.requests().len() - before;

    // CPU outside the network: the pure diff + render, averaged.
    let runs = 20;
    let t = Instant::now();
    let mut changes = 0;
    for _ in 0..runs {
        let p = plan::diff(&f, "fp", &observed, &PlanOptions::default()).expect("plan");
        changes += p.changes.len();
        std::hint::black_box(render::human(&p, false));
        std::hint::black_box(render::json(&p));
    }
    let cpu_ms = t.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    let managed = fleet::desired_vms(&f)
        .iter()
        .filter(|d| d.share.is_some())
        .count();
    println!(
        "plan, 1000 VMs in sync: {total} API calls ({ls} ls, {shows} share show for {managed} proxied VMs), engine::plan {observe_secs:.2}s, diff+render {cpu_ms:.1} ms CPU, {} changes",
        changes / runs
    );
    plan_process(&emu, &token, &path, "1000 VMs in sync").await;
    emu.shutdown().await;
}

/// CPU seconds (user + system) of this process's waited-for children, from
/// /proc/self/stat (clock ticks of 1/100 s, Linux's USER_HZ).
fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the `(command)` field: cutime and cstime are the 14th and 15th.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(13)?.parse::<f64>().ok()? + fields.get(14)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The whole `exedev-k8s plan` process against the emulator running here,
/// as issue 14 measured it: CPU and peak RSS of that process alone.
async fn plan_process(emu: &emulator::RunningEmulator, token: &str, fleet: &Path, label: &str) {
    let dir = fleet.parent().expect("the fleet's directory").to_path_buf();
    let time = std::path::Path::new("/usr/bin/time");
    let runs = 20;
    let calls_before = emu.requests().len();
    let cpu_before = children_cpu_seconds();
    let mut rss_kib: Vec<u64> = Vec::new();
    for _ in 0..runs {
        let mut cmd = if time.exists() {
            let mut c = std::process::Command::new(time);
            c.args(["-f", "maxrss=%M"])
                .arg(env!("CARGO_BIN_EXE_exedev-k8s"));
            c
        } else {
            std::process::Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
        };
        cmd.args(["plan", "-f", "big.yaml"])
            .current_dir(&dir)
            .env("EXE_DEV_ENDPOINT", &emu.url)
            .env("EXE_DEV_API_KEY", token)
            .env_remove("EXE_DEV_SSH_KEY")
            .env("NO_COLOR", "1");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("run exedev-k8s plan");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("No changes"),
            "{stdout}{stderr}"
        );
        if let Some(kib) = stderr
            .lines()
            .find_map(|l| l.strip_prefix("maxrss="))
            .and_then(|v| v.trim().parse().ok())
        {
            rss_kib.push(kib);
        }
    }
    let calls = (emu.requests().len() - calls_before) / runs;
    let cpu = match (cpu_before, children_cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.3} s CPU", (b - a) / runs as f64),
        _ => "CPU unknown (no /proc)".into(),
    };
    rss_kib.sort_unstable();
    let rss = match (
        rss_kib.first(),
        rss_kib.get(rss_kib.len() / 2),
        rss_kib.last(),
    ) {
        (Some(lo), Some(mid), Some(hi)) => format!(
            "peak RSS {:.1} MiB (min {:.1}, max {:.1})",
            *mid as f64 / 1024.0,
            *lo as f64 / 1024.0,
            *hi as f64 / 1024.0
        ),
        _ => "peak RSS unknown (no /usr/bin/time)".into(),
    };
    println!(
        "plan, {label}, whole process ({runs} runs): {cpu} per run, {rss}, {calls} API calls per run; budget 0.050 s and 16 MiB"
    );
}

fn main() {
    // Before any thread exists: the engine's SSH (a server's bootstrap
    // state, `tailscale logout`) goes to the stand-in.
    let stub_dir = tempfile::tempdir().expect("tempdir");
    let stub = ssh_stub(stub_dir.path());
    // SAFETY: no other thread runs yet (the runtime is built below).
    unsafe { std::env::set_var(exedev_k8s::edges::ssh::SSH_PROGRAM_ENV, &stub) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::args().any(|a| a == "--list") {
        println!("apply_100: benchmark\nplan_1000: benchmark\nplan_curve: benchmark");
        return;
    }
    rt.block_on(async {
        plan_1000().await;
        plan_curve().await;
        let floor = 10.0;
        let (par, reqs) = apply_100(32).await;
        println!(
            "apply, 100 VMs, 200 ms latency, 10 req/s: {par:.2}s with --parallelism 32 ({reqs} requests), {:.2}x the {floor:.0}s rate-limit floor",
            par / floor
        );
        let (seq, reqs) = apply_100(1).await;
        println!(
            "apply, 100 VMs, 200 ms latency, 10 req/s: {seq:.2}s sequential ({reqs} requests), {:.2}x the floor",
            seq / floor
        );
    });
}
