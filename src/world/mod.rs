//! The VM world: what happens inside the emulator's VMs when it runs with
//! `--run-setup-scripts`. Each VM gets its own root directory; its setup
//! script runs for real (bash, as user `exedev`, in a bubblewrap sandbox)
//! after `new` and at every restart, with stand-ins first on `PATH` for the
//! commands a VM would have (`sudo`, `systemctl`, `journalctl`, `curl`,
//! `tailscale`, `logger`, `hostname`; `k3s` arrives through the k3s
//! installer). The stand-ins are this binary in a hidden mode
//! (`exedev-k8s __world <command>`), talking to the emulator over loopback
//! HTTP; behind them, a tailnet model, a k3s model and a Kubernetes API
//! per cluster behave as `k3s-facts.md` says the real ones do, and refuse
//! what they refuse. The world is a test instrument: a script that would
//! fail on exe.dev fails here.
//!
//! Layout: [`model`] (the pure state: VMs, units, journal), [`tailnet`],
//! [`k3s`] with [`k3s_config`], [`kube`] (objects and the API
//! listeners), [`vmroot`] and [`sandbox`] (directories and bubblewrap),
//! [`runner`] (setup scripts), [`applets`] (the emulator side of each
//! stand-in), [`standin`] (the stand-in processes), [`http`] (the loopback
//! endpoints they call), [`view`] (the `world` object of
//! `/_emulator/state`), [`cli`] (flags).

pub mod applets;
pub mod cli;
pub mod cron;
pub mod dataplane;
pub mod http;
pub mod k3s;
pub mod k3s_config;
pub mod kube;
pub mod model;
pub mod protocol;
pub mod runner;
pub mod s3;
pub mod sandbox;
pub mod standin;
pub mod tailnet;
pub mod traffic;
pub mod view;
pub mod vmroot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use model::{Effect, Model};
use tailnet::TailnetConfig;
use vmroot::VmRoot;

/// How long each step of k3s takes in the world. The defaults keep tests
/// fast; real k3s takes seconds to minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Serving the k3s binary download.
    pub install_ms: u64,
    /// A server starting on its own (first server, or restart with data).
    pub server_ready_ms: u64,
    /// An etcd learner catching up before promotion.
    pub join_ms: u64,
    /// An agent registering once its server answers.
    pub agent_ready_ms: u64,
    /// systemd's restart delay for a failed k3s (`RestartSec=5s` in the
    /// real unit).
    pub restart_ms: u64,
    /// tailscaled starting with a saved login at boot: this long in
    /// `BackendState: Starting` (no address yet) before the device is
    /// online, while the VM's enabled units start (the reboot race; how
    /// long it takes is not in the facts file, the figure is the model's).
    pub tailscale_up_ms: u64,
    /// A pod bound to a Ready node stays `Pending` with its containers
    /// `ContainerCreating` this long, then runs and turns Ready. The
    /// world's choice: one fixed time for every pod, no image pull and no
    /// image cache, no readiness probe delay. Kubernetes' pod startup
    /// latency SLO (kubernetes/community
    /// sig-scalability/slos/pod_startup_latency.md) bounds the real one:
    /// 99th percentile <= 5 s from creation to all containers started and
    /// observed via watch, image pulls excluded.
    pub pod_start_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            install_ms: 50,
            server_ready_ms: 150,
            join_ms: 100,
            agent_ready_ms: 100,
            restart_ms: 300,
            tailscale_up_ms: 300,
            pod_start_ms: 100,
        }
    }
}

/// Faults a user meets in practice, one switch each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The first N downloads of the k3s installer (`https://get.k3s.io`)
    /// from each VM fail as a DNS failure does (curl exit code 6, which
    /// `curl --retry` does not retry).
    pub download_failures: u32,
    /// VMs (globs) whose k3s server never becomes ready.
    pub server_never_ready: Vec<String>,
    /// VMs (globs) that reboot once, mid-bootstrap: when their setup script
    /// first downloads the k3s binary.
    pub reboot_mid_setup: Vec<String>,
}

/// Everything the world needs.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// The `exedev-k8s` binary the stand-ins run (bound read-only into
    /// every VM). The CLI uses itself; tests pass the built binary.
    pub standin_binary: PathBuf,
    /// Where VM roots live; `None`: a temporary directory removed with
    /// the emulator.
    pub dir: Option<PathBuf>,
    pub timings: Timings,
    pub faults: Faults,
    pub tailnet: TailnetConfig,
    /// A setup script running longer is killed and recorded as failed.
    pub script_timeout: Duration,
    /// tailscaled runs at boot. Whether exeuntu enables it is not known
    /// (facts: [?]); by default it does not, so scripts must start it.
    pub tailscaled_at_boot: bool,
    /// k3s release channels (`stable`, `latest`, `v1.31`) and the versions
    /// they point at, as `update.k3s.io` answers, at the start (they move
    /// with `PUT /_emulator/k3s-channels/<channel>`).
    pub channels: BTreeMap<String, String>,
    /// Below 1, a `sleep` stand-in first on the VMs' `PATH` shortens the
    /// scripts' own waits by this factor (`sleep 5` with 0.02 sleeps 0.1 s),
    /// so tests with fast world timings do not wait on real seconds. At 1
    /// (the default) scripts use the host's `sleep`.
    pub sleep_scale: f64,
    /// The S3-compatible store VMs reach (k3s's etcd snapshots).
    pub s3: s3::S3Config,
}

/// Milliseconds since the Unix epoch: the world's clock (journal times,
/// the model's timers).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The k3s flag table of an installed release; a release the table does
/// not cover is read with the newest table (the model's own choice:
/// validation already refused such a fleet's flags, and a script
/// installing another release is not the world's to refuse).
pub fn flag_table(version: Option<&str>) -> Result<&'static crate::base::k3s_flags::Table, String> {
    let covered = version
        .and_then(crate::base::release::Release::parse)
        .and_then(|r| crate::base::k3s_flags::for_minor(r.major, r.minor).ok());
    let all = crate::base::k3s_flags::all();
    covered
        .or(all.last().copied())
        .ok_or_else(|| "no k3s flag table".to_string())
}

/// The version the examples pin.
pub const DEFAULT_K3S_VERSION: &str = "v1.31.4+k3s1";

impl WorldConfig {
    /// Defaults with the stand-in binary given.
    pub fn new(standin_binary: impl Into<PathBuf>) -> Self {
        WorldConfig {
            standin_binary: standin_binary.into(),
            dir: None,
            timings: Timings::default(),
            faults: Faults::default(),
            tailnet: TailnetConfig::default(),
            script_timeout: Duration::from_secs(120),
            tailscaled_at_boot: false,
            channels: BTreeMap::from([
                ("stable".to_string(), DEFAULT_K3S_VERSION.to_string()),
                ("latest".to_string(), "v1.32.1+k3s1".to_string()),
                ("v1.31".to_string(), DEFAULT_K3S_VERSION.to_string()),
                ("v1.32".to_string(), "v1.32.1+k3s1".to_string()),
            ]),
            sleep_scale: 1.0,
            s3: s3::S3Config::new(),
        }
    }
}

/// A directory removed when dropped (the world's default home).
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Called when the world reboots a VM on its own (the reboot fault), so
/// the emulator's `ls` shows it starting again.
pub type RebootHook = Box<dyn Fn(&str) + Send + Sync>;

/// The world's shared state.
pub struct Inner {
    pub config: WorldConfig,
    model: Mutex<Model>,
    /// The world's directory (VM roots, stand-in shims).
    pub dir: PathBuf,
    _temp: Option<TempDir>,
    /// `http://127.0.0.1:PORT` of the emulator, once it listens.
    pub base_url: OnceLock<String>,
    /// How long a VM takes to boot (the emulator's `--boot-ms`).
    pub boot_delay: Duration,
    apis: Mutex<BTreeMap<String, kube::ApiListener>>,
    tasks: Mutex<BTreeMap<String, Vec<tokio::task::AbortHandle>>>,
    reboot_hook: OnceLock<RebootHook>,
    sandboxes: tokio::sync::Semaphore,
    /// Where each channel points now.
    channels: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why the world cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("VM world: {0}")]
    Setup(String),
}

/// The world, shared by the emulator and its tasks.
pub type World = Arc<Inner>;

/// The number in the name of the next world directory [`fresh_temp_dir`] tries.
static NEXT_TEMP_DIR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Creates a directory under `parent` that no other world uses: worlds
/// started in one process (tests run several at once) or by another
/// process each get their own. The name was once the process id and the
/// clock's millisecond, so two worlds started in the same millisecond
/// shared one directory: the later one's `ssh` shim pointed the earlier
/// one's sessions at the wrong emulator, and the first to stop removed
/// the other's VM roots and stand-ins while its scripts ran.
/// `create_dir` fails on a directory that already exists, so a name is
/// never taken twice, even across processes.
fn fresh_temp_dir(parent: &Path) -> Result<PathBuf, WorldError> {
    loop {
        let n = NEXT_TEMP_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = parent.join(format!("exedev-world-{}-{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(WorldError::Setup(format!(
                    "cannot create {}: {e}",
                    d.display()
                )));
            }
        }
    }
}

/// Starts a world (spawns its clock on the current tokio runtime).
pub fn start(config: WorldConfig, boot_delay: Duration, seed: u64) -> Result<World, WorldError> {
    sandbox::check_bwrap().map_err(WorldError::Setup)?;
    if !config.standin_binary.is_file() {
        return Err(WorldError::Setup(format!(
            "the stand-in binary {} does not exist",
            config.standin_binary.display()
        )));
    }
    let (dir, temp) = match &config.dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = fresh_temp_dir(&std::env::temp_dir())?;
            (d.clone(), Some(TempDir(d)))
        }
    };
    std::fs::create_dir_all(dir.join("vms"))
        .map_err(|e| WorldError::Setup(format!("cannot create {}: {e}", dir.display())))?;
    if !(config.sleep_scale > 0.0 && config.sleep_scale <= 1.0) {
        return Err(WorldError::Setup(format!(
            "sleep scale {} must be above 0 and at most 1",
            config.sleep_scale
        )));
    }
    sandbox::write_shims(&dir, config.sleep_scale < 1.0).map_err(WorldError::Setup)?;
    let mut model = Model::new(
        config.timings,
        config.faults.clone(),
        config.tailnet.clone(),
        seed,
    );
    model.s3 = s3::S3Store::new(config.s3.clone());
    let inner = Arc::new(Inner {
        model: Mutex::new(model),
        dir,
        _temp: temp,
        base_url: OnceLock::new(),
        boot_delay,
        apis: Mutex::new(BTreeMap::new()),
        tasks: Mutex::new(BTreeMap::new()),
        reboot_hook: OnceLock::new(),
        sandboxes: tokio::sync::Semaphore::new(64),
        channels: Mutex::new(config.channels.clone()),
        config,
    });
    let weak = Arc::downgrade(&inner);
    tokio::spawn(async move {
        let mut n: u64 = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let Some(inner) = weak.upgrade() else { break };
            n += 1;
            inner.tick(n);
        }
    });
    Ok(inner)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A journal line of `vm` outside any unit (the model locked).
fn log(m: &mut Model, vm: &str, ident: &str, msg: &str) {
    if let Some(v) = m.vms.get_mut(vm) {
        v.log(now_ms(), "", ident, msg);
    }
}

impl Inner {
    /// The release `channel` points at now.
    pub fn channel(&self, channel: &str) -> Option<String> {
        lock(&self.channels).get(channel).cloned()
    }

    /// Moves `channel` to `version` (a new release came out).
    pub fn set_channel(&self, channel: &str, version: &str) {
        lock(&self.channels).insert(channel.to_string(), version.to_string());
    }

    /// The model, locked (never held across an await).
    pub fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.model)
    }

    /// The root of a VM.
    pub fn root(&self, vm: &str) -> VmRoot {
        VmRoot::new(&self.dir, vm)
    }

    /// Where the stand-in shims live on the host.
    pub fn shim_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The `ssh` stand-in for `EXEDEV_K8S_SSH`: a shim that runs this
    /// binary's `ssh` mode against this emulator.
    pub fn ssh_program(&self) -> PathBuf {
        self.dir.join("ssh")
    }

    /// Sets what the world calls when it reboots a VM by itself.
    pub fn set_reboot_hook(&self, hook: RebootHook) {
        let _ = self.reboot_hook.set(hook);
    }

    /// Records the emulator's address and writes the `ssh` shim.
    pub fn set_base_url(&self, url: &str) -> Result<(), WorldError> {
        let _ = self.base_url.set(url.to_string());
        sandbox::write_ssh_shim(&self.ssh_program(), &self.config.standin_binary, url)
            .map_err(WorldError::Setup)
    }

    fn now() -> u64 {
        crate::world::now_ms()
    }

    fn tick(self: &Arc<Self>, n: u64) {
        let now = Self::now();
        let mut m = self.model();
        m.expire_devices(now);
        let mut fx = m.tick_k3s(now);
        // Manifests are applied on start and on change (facts "Kubeconfig,
        // manifests"): look again every quarter second.
        if n.is_multiple_of(25) {
            for vm in m.vms.keys() {
                if let Some((_, c)) = m.ready_server(vm) {
                    fx.push(Effect::ApplyManifests {
                        vm: vm.clone(),
                        cluster: c.to_string(),
                    });
                }
            }
        }
        self.settle(m, fx);
    }

    /// Carries out the effects of a model change. Files and API listeners
    /// change before the model's lock is released: no one sees a k3s Ready
    /// whose kubeconfig is not written or whose API does not listen yet
    /// (k3s reports ready to systemd once it serves), nor a stopped server
    /// still serving. When the listener started in a task of its own, a
    /// halt right after Ready could drop the listener before that task
    /// added it, which then served a stopped k3s for good. Unit restarts
    /// and manifests (which lock the model again) come after.
    pub fn settle(self: &Arc<Self>, mut m: MutexGuard<'_, Model>, fx: Vec<Effect>) {
        let mut later = Vec::new();
        for e in fx {
            match e {
                Effect::WriteFile {
                    vm,
                    path,
                    mode,
                    content,
                } => {
                    if let Err(err) = self.root(&vm).write(&path, mode, content.as_bytes()) {
                        log(&mut m, &vm, "k3s", &format!("cannot write {path}: {err}"));
                    }
                }
                Effect::RemoveFile { vm, path } => {
                    let _ = self.root(&vm).remove(&path);
                }
                Effect::MakeDir { vm, path } => {
                    let _ = self.root(&vm).mkdir(&path);
                }
                Effect::ApiUp { vm, cluster } => {
                    if let Err(err) = self.api_up(&m, &vm, &cluster) {
                        log(&mut m, &vm, "k3s", &format!("cannot serve the API: {err}"));
                    }
                }
                Effect::ApiDown { vm } => {
                    lock(&self.apis).remove(&vm);
                }
                Effect::RestartUnit { .. }
                | Effect::ApplyManifests { .. }
                | Effect::ScheduledSnapshot { .. } => later.push(e),
            }
        }
        drop(m);
        for e in later {
            match e {
                Effect::RestartUnit { vm, unit } => self.start_unit(&vm, &unit),
                Effect::ApplyManifests { vm, cluster } => self.apply_manifests(&vm, &cluster),
                Effect::ScheduledSnapshot { vm, unit } => {
                    applets::etcd_snapshot::scheduled(self, &vm, &unit)
                }
                _ => {}
            }
        }
    }

    /// Starts `vm`'s API listener (the model locked by the caller).
    fn api_up(self: &Arc<Self>, m: &Model, vm: &str, cluster: &str) -> Result<(), String> {
        // The certificate's names: one place, `K3sProc::server_sans`.
        let sans = match m.ready_server(vm) {
            Some((p, _)) => p.server_sans(vm),
            None => vec![
                "127.0.0.1".to_string(),
                "localhost".to_string(),
                vm.to_string(),
            ],
        };
        let l = kube::start(self.clone(), m, vm, cluster, &sans)?;
        lock(&self.apis).insert(vm.to_string(), l);
        Ok(())
    }

    fn journal(&self, vm: &str, ident: &str, msg: &str) {
        log(&mut self.model(), vm, ident, msg);
    }

    /// The host port serving `vm`'s `127.0.0.1:6443`, if its API is up.
    pub fn api_port(&self, vm: &str) -> Option<u16> {
        lock(&self.apis).get(vm).map(|l| l.port)
    }

    fn apply_manifests(&self, vm: &str, cluster: &str) {
        let root = self.root(vm);
        let mut names = root.list(k3s::MANIFESTS_DIR);
        names.sort();
        let mut docs = Vec::new();
        for n in names {
            let skip = !(n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"));
            if skip {
                continue;
            }
            let path = format!("{}/{n}", k3s::MANIFESTS_DIR);
            let Some(text) = root.read(&path) else {
                continue;
            };
            match serde_saphyr::from_multiple::<serde_json::Value>(&text) {
                Ok(d) => docs.extend(
                    d.into_iter()
                        .filter(|v| !v.is_null())
                        .map(|v| (path.clone(), v)),
                ),
                Err(e) => self.journal(
                    vm,
                    "k3s",
                    &format!("level=error msg=\"Failed to process {path}: {e}\""),
                ),
            }
        }
        let mut m = self.model();
        let mut errors = Vec::new();
        if let Some(c) = m.clusters.get_mut(cluster) {
            for (path, d) in docs {
                if let Err(e) = c.api.apply_manifest(&d) {
                    errors.push(format!(
                        "level=error msg=\"Failed to apply {path}: {}\"",
                        e.message
                    ));
                }
            }
        }
        if let Some(v) = m.vms.get_mut(vm) {
            for e in errors {
                if !v.journal.iter().rev().take(50).any(|j| j.message == e) {
                    v.log(Self::now(), "k3s", "k3s", e);
                }
            }
        }
    }

    /// Reads a unit's files and starts its k3s (`systemctl start`, boot,
    /// systemd's restart).
    pub fn start_unit(self: &Arc<Self>, vm: &str, unit: &str) {
        let inputs = self.read_unit(vm, unit);
        let mut m = self.model();
        let fx = m.start_k3s(vm, unit, inputs, Self::now());
        self.settle(m, fx);
    }

    /// What k3s would read at start: the unit, its files, its binary.
    fn read_unit(&self, vm: &str, unit: &str) -> Result<k3s::StartInputs, String> {
        let root = self.root(vm);
        let unit_path = format!("/etc/systemd/system/{unit}.service");
        let text = root
            .read(&unit_path)
            .ok_or_else(|| format!("Unit {unit}.service not found."))?;
        let u = k3s_config::parse_unit(&text)?;
        let binary = u.exec.first().cloned().unwrap_or_default();
        let version = root
            .read(&binary)
            .and_then(|t| applets::installer::shim_version(&t));
        let table = flag_table(version.as_deref())?;
        let (role, mut cfg) = k3s_config::resolve(&u, &root, table)?;
        for (file_flag, flag) in [
            ("token-file", "token"),
            ("agent-token-file", "agent-token"),
            ("vpn-auth-file", "vpn-auth"),
        ] {
            if let Some(p) = cfg.get(file_flag).map(str::to_string) {
                let v = root
                    .read(&p)
                    .ok_or_else(|| format!("cannot read --{file_flag} {p}"))?;
                cfg.flags
                    .insert(flag.to_string(), vec![v.trim().to_string()]);
            }
        }
        Ok(k3s::StartInputs {
            role,
            cfg,
            version,
            notify: u.notify,
            restart_always: u.restart_always,
            has_data_dir: root.exists(k3s::DB_DIR),
            node_password: root
                .read(k3s::node_password::PASSWORD_PATH)
                .map(|t| t.trim().to_string()),
            reset_flag: root.exists(k3s::snapshot::RESET_FLAG),
        })
    }

    /// `new` returned: the VM gets its root now and boots after the boot
    /// delay (then its setup script runs, if its image runs setup scripts:
    /// the emulator knows which do).
    pub fn vm_created(self: &Arc<Self>, name: &str, runs_setup: bool, script: Option<&str>) {
        let root = self.root(name);
        if let Err(e) = root.create(name, script) {
            eprintln!("VM world: cannot create the root of {name}: {e}");
        }
        self.model().add_vm(name, runs_setup);
        self.schedule_boot(name);
    }

    /// A VM found in the emulator's state file at start: it boots again
    /// (its root is kept when the world directory persists; the tailnet
    /// and k3s models start empty: they are not persisted).
    pub fn vm_recovered(self: &Arc<Self>, name: &str, runs_setup: bool) {
        let root = self.root(name);
        if !root.base().exists()
            && let Err(e) = root.create(name, None)
        {
            eprintln!("VM world: cannot create the root of {name}: {e}");
        }
        self.model().add_vm(name, runs_setup);
        self.schedule_boot(name);
    }

    fn schedule_boot(self: &Arc<Self>, name: &str) {
        let inner = self.clone();
        let vm = name.to_string();
        let delay = self.boot_delay;
        let h = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            inner.boot(&vm);
        });
        lock(&self.tasks)
            .entry(name.to_string())
            .or_default()
            .push(h.abort_handle());
    }

    /// The VM restarts (resize, or the reboot fault): everything in it
    /// stops, then it boots again.
    pub fn vm_restarted(self: &Arc<Self>, name: &str) {
        self.halt(name);
        self.schedule_boot(name);
    }

    /// `rm`: the VM is gone, disk included.
    pub fn vm_removed(self: &Arc<Self>, name: &str) {
        self.kill_tasks(name);
        let mut m = self.model();
        let fx = m.remove_vm(name, Self::now());
        self.settle(m, fx);
        let _ = std::fs::remove_dir_all(self.root(name).base());
    }

    fn kill_tasks(&self, name: &str) {
        if let Some(hs) = lock(&self.tasks).remove(name) {
            for h in hs {
                h.abort();
            }
        }
    }

    fn halt(self: &Arc<Self>, name: &str) {
        self.kill_tasks(name);
        let mut m = self.model();
        let fx = m.halt_vm(name, Self::now());
        self.settle(m, fx);
    }

    /// Reboots a VM by itself (the reboot fault).
    pub fn reboot(self: &Arc<Self>, name: &str) {
        if let Some(h) = self.reboot_hook.get() {
            h(name);
        }
        self.vm_restarted(name);
    }

    /// The VM boots: fresh volatile directories, then this boot's
    /// metadata, then the VM is up, then its enabled units and its setup
    /// script start.
    fn boot(self: &Arc<Self>, name: &str) {
        let root = self.root(name);
        let _ = root.reset_volatile();
        // The VM's one way to the emulator (it has its own network
        // namespace): its own socket, served for it alone, up before
        // anything in the VM runs.
        let url = format!("unix:{}", sandbox::WORLD_SOCKET);
        match self.serve_vm_socket(&root, name) {
            Ok(h) => lock(&self.tasks)
                .entry(name.to_string())
                .or_default()
                .push(h),
            Err(e) => eprintln!("VM world: cannot serve the socket of {name}: {e}"),
        }
        let (boot, enabled, ts_enabled) = {
            let mut m = self.model();
            // vm.json (which the stand-ins read first, the boot number
            // their calls carry) is written before the VM shows up: an SSH
            // session let in the moment it is up found none.
            let Some(next) = m.vms.get(name).map(|v| v.boot + 1) else {
                return;
            };
            if let Err(e) = root.write_meta(name, next, &url, self.config.sleep_scale) {
                eprintln!("VM world: cannot write the metadata of {name}: {e}");
            }
            let Some(boot) = m.boot_vm(name, Self::now()) else {
                return;
            };
            let v = &m.vms[name];
            let enabled: Vec<String> = v
                .units
                .iter()
                .filter(|(u, s)| s.enabled && u.as_str() != "tailscaled")
                .map(|(u, _)| u.clone())
                .collect();
            let ts = v.units.get("tailscaled").is_some_and(|s| s.enabled);
            (boot, enabled, ts)
        };
        if ts_enabled || self.config.tailscaled_at_boot {
            self.start_tailscaled(name);
        }
        for u in enabled {
            self.start_unit(name, &u);
        }
        let inner = self.clone();
        let vm = name.to_string();
        let h = tokio::spawn(async move { runner::run_setup(inner, vm, boot).await });
        lock(&self.tasks)
            .entry(name.to_string())
            .or_default()
            .push(h.abort_handle());
    }

    /// Binds `<vm root>/meta/world.sock` (gone with the boot's volatile
    /// meta directory) and serves [`http::vm_routes`] on it; the task is
    /// the VM's, stopped when it halts.
    fn serve_vm_socket(
        self: &Arc<Self>,
        root: &VmRoot,
        name: &str,
    ) -> std::io::Result<tokio::task::AbortHandle> {
        use std::os::unix::fs::PermissionsExt;
        let path = root.meta().join(sandbox::SOCKET_NAME);
        let _ = std::fs::remove_file(&path);
        let std_listener = std::os::unix::net::UnixListener::bind(&path)?;
        // The VM's users (exedev, and root through sudo) connect to it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let app = http::vm_routes(self.clone(), name);
        let h = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(h.abort_handle())
    }

    /// tailscaled reads its identity from its state file when it starts: a
    /// script that deleted the file starts a new device.
    pub fn sync_tailscale_identity(&self, vm: &str) {
        let key = self
            .root(vm)
            .read(model::STATE_FILE)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        if let Some(v) = self.model().vms.get_mut(vm) {
            v.node_key = key;
        }
    }

    /// Starts tailscaled on a VM (systemd, boot, or by hand).
    pub fn start_tailscaled(&self, vm: &str) {
        self.sync_tailscale_identity(vm);
        self.model().start_tailscaled(vm, Self::now());
    }

    /// The world's view of a VM for `/_emulator/state`.
    pub fn view(&self, vm: &str) -> serde_json::Value {
        view::vm(&self.model(), vm)
    }

    /// The tailnet for `/_emulator/state`.
    pub fn tailnet_view(&self) -> serde_json::Value {
        view::tailnet(&self.model())
    }

    /// The S3 store for `/_emulator/state` (its objects, never its keys).
    pub fn s3_view(&self) -> serde_json::Value {
        self.model().s3.view()
    }

    /// A kubeconfig reaching `vm`'s API straight from the host
    /// (`https://127.0.0.1:<port>`), or why not.
    pub fn host_kubeconfig(&self, vm: &str) -> Result<String, String> {
        let port = self
            .api_port(vm)
            .ok_or_else(|| format!("{vm} does not serve the Kubernetes API (no k3s server up)"))?;
        let m = self.model();
        let (_, cid) = m
            .ready_server(vm)
            .ok_or_else(|| format!("{vm} runs no Ready k3s server"))?;
        let c = &m.clusters[cid];
        Ok(c.pki.kubeconfig(&format!("https://127.0.0.1:{port}")))
    }

    /// Runs a sandboxed process slot (bounded).
    pub async fn sandbox_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.sandboxes.acquire().await.ok()
    }
}

/// The VM directory of a VM name.
pub fn vm_dir(world_dir: &Path, vm: &str) -> PathBuf {
    world_dir.join("vms").join(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_world_gets_its_own_directory() {
        let parent = tempfile::tempdir().unwrap();
        // Back to back (the same millisecond): still distinct.
        let dirs: Vec<PathBuf> = (0..20)
            .map(|_| fresh_temp_dir(parent.path()).unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<_> = dirs.iter().collect();
        assert_eq!(distinct.len(), dirs.len(), "{dirs:?}");
        assert!(dirs.iter().all(|d| d.is_dir()));
        // A name another process took is skipped, never shared.
        let next = NEXT_TEMP_DIR.load(std::sync::atomic::Ordering::Relaxed);
        let taken: Vec<PathBuf> = (next..next + 3)
            .map(|n| {
                let d = parent
                    .path()
                    .join(format!("exedev-world-{}-{n}", std::process::id()));
                std::fs::create_dir(&d).unwrap();
                std::fs::write(d.join("owner"), "someone else").unwrap();
                d
            })
            .collect();
        let d = fresh_temp_dir(parent.path()).unwrap();
        assert!(!taken.contains(&d), "{d:?} was taken");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }
}
