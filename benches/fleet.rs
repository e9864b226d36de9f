//! Benchmarks against the in-process emulator (run: `cargo bench --bench fleet`).
//!
//! 1. apply of 100 VMs with 200 ms latency and a 10 requests/s limit:
//!    wall time against the rate-limit floor (100 / 10 = 10 s), bounded
//!    parallelism vs sequential.
//! 2. plan of a 1000-VM fleet in sync: API calls made (one `ls` plus the
//!    `share show`s needed) and CPU time of the pure part (diff + render).

use std::sync::Arc;
use std::time::{Duration, Instant};

use exedev_k8s::apply::{self, ApplyOptions};
use exedev_k8s::client::{Client, ClientOptions};
use exedev_k8s::emulator::{self, EmulatorConfig, RateLimit, VmRecord};
use exedev_k8s::fleet;
use exedev_k8s::observe::observe;
use exedev_k8s::plan::{self, PlanOptions, render, spec};
use exedev_k8s::token::{self, API_NAMESPACE, Permissions};
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
    format!(
        "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: {cluster}\nk3s:\n  version: v1.31.4+k3s1\nnetwork:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {{env: TS_AUTHKEY}}\ncontrolPlane:\n  count: 1\npools:\n{pools}"
    )
}

async fn setup(
    cfg: impl FnOnce(&mut EmulatorConfig),
) -> (emulator::RunningEmulator, exedev_k8s::secret::Secret) {
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
                exedev_k8s::api::command::CATALOGUE
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
    let f = fleet::parse(&fleet_yaml("bench", 99, 0), "bench.yaml").expect("fleet");
    let client = Client::new(&emu.url, tok, ClientOptions::default()).expect("client");
    let t = Instant::now();
    let observed = observe(&client, &f, true).await.expect("observe");
    let p = plan::diff(&f, "fp", &observed, &PlanOptions::default()).expect("plan");
    let opts = ApplyOptions {
        parallelism,
        ..Default::default()
    };
    let report = apply::apply(
        &client,
        &f,
        &p,
        &spec::ClusterSecrets::placeholders(),
        &[],
        &opts,
        Arc::new(|_| {}),
    )
    .await;
    let secs = t.elapsed().as_secs_f64();
    assert!(report.ok(), "{:?}", report.failed);
    assert_eq!(emu.state().vms.len(), 100);
    let requests = emu.requests().len();
    emu.shutdown().await;
    (secs, requests)
}

async fn plan_1000() {
    let (emu, tok) = setup(|c| c.boot = Duration::ZERO).await;
    let f = fleet::parse(&fleet_yaml("big", 999, 2), "big.yaml").expect("fleet");
    for d in fleet::desired_vms(&f) {
        let mut vm = VmRecord::new(&d.name);
        vm.tags = d.tags.clone();
        vm.comment = spec::comment_for(&spec::spec_fingerprint(&f, &d));
        vm.cpus = d.cpu;
        if let Some(s) = d.share {
            vm.share.port = s.port;
            vm.share.public = s.public;
        }
        emu.insert_vm(vm).expect("insert");
    }
    let client = Client::new(&emu.url, tok, ClientOptions::default()).expect("client");
    let before = emu.requests().len();
    let t = Instant::now();
    let observed = observe(&client, &f, true).await.expect("observe");
    let observe_secs = t.elapsed().as_secs_f64();
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
        "plan, 1000 VMs in sync: {total} API calls ({ls} ls, {shows} share show for {managed} proxied VMs), observe {observe_secs:.2}s, diff+render {cpu_ms:.1} ms CPU, {} changes",
        changes / runs
    );
    emu.shutdown().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::args().any(|a| a == "--list") {
        println!("apply_100: benchmark\nplan_1000: benchmark");
        return;
    }
    rt.block_on(async {
        plan_1000().await;
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
