//! An emulator of exe.dev's `/exec` API, exact where the contract
//! (`../shared/reference/exedev-api.md`, beside the repository) is exact, so that the whole tool can be tested
//! without exe.dev and without the network.
//!
//! It reuses the crate's pure core for every rule it enforces: the lexer
//! ([`crate::base::shellwords`]), the command catalogue and parser
//! ([`crate::core::api::command`]), the reply types, the token checks, the naming
//! and size rules. The emulator and the client therefore cannot disagree
//! about the contract by construction; where the facts are uncertain
//! ([`StrictOptions`]) either behaviour can be chosen.
//!
//! Order of checks for `POST /exec` (each stops at the first failure):
//! 405 method → 413 body size → 401 authentication → 429 per-key rate limit
//! → 400 body syntax (empty, NUL, quoting) → 404 unknown command → 403
//! permissions → injected 429/500 (nothing ran) → 422 usage or command
//! failure / 200 → latency, deadline 504 (the command has taken effect) →
//! injected 504 or dropped connection (the command has taken effect).
//!
//! The same listener also stands in for each VM's HTTPS proxy
//! (`https://<vm>.exe.xyz/`, chosen by the `Host` header or the
//! `/_proxy/<vm>/` path prefix); see `proxy.rs` for its rules.

mod auth;
mod cli;
mod commands;
mod faults;
mod log;
mod proxy;
mod server;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use ssh_key::PublicKey;

pub use crate::base::names::glob_match;
pub use auth::{AuthFailure, RateLimit};
pub use cli::{EmulatorArgs, run_cli};
pub use commands::user_id;
pub use faults::Fault;
pub use log::{RequestRecord, STATUS_DROPPED, redact_words};
pub use proxy::{LOGIN_URL, MAX_PROXY_BODY, vm_from_host};
pub use state::{
    DEFAULT_IMAGE, EmulatorState, Exe1Handle, ShareSettings, VmRecord, default_port, now_ms,
};

/// Whether a VM of this image runs its setup script: exeuntu has the
/// systemd unit that does; other images silently ignore the script
/// (exe.dev's documentation).
pub fn runs_setup(image: &str) -> bool {
    image == state::DEFAULT_IMAGE
}

/// Switches for facts tagged [?] in the API notes: the default is what
/// exe.dev's code does; the switch gives the other reported behaviour, so
/// that a client can be tested against both.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrictOptions {
    /// `rm` of an absent VM answers 422 "VM \"x\" not found" instead of
    /// exe.dev's 200 with an error line followed by `{"deleted":[],"failed":[..]}`.
    pub rm_missing_422: bool,
    /// Accept VM names ending in `-<digits>`, as exe.dev's historical code
    /// does. Off by default: a 2026-04 guide and another tool's fixture
    /// report such names refused, so the emulator applies the stricter
    /// reading (`crate::base::names::check_portable_vm_name`) unless told not to.
    pub allow_digit_suffix: bool,
    /// Hide a VM from `ls` for this long after `new` (a just-created VM has
    /// been seen missing from `ls` briefly).
    pub ls_lag: Duration,
}

/// Everything an emulator instance needs.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Keys registered on the account: tokens must be signed by one of them.
    pub authorized_keys: Vec<PublicKey>,
    /// Where the state is persisted (None: in memory only).
    pub state_file: Option<PathBuf>,
    /// Per-key token bucket (None: no limit).
    pub rate_limit: Option<RateLimit>,
    /// The per-command deadline (exe.dev: 30 s).
    pub deadline: Duration,
    /// How long a VM stays `starting` after `new` or `resize`.
    pub boot: Duration,
    /// Probability per authenticated request of an injected fault.
    pub fault_rate: f64,
    /// Mean latency added to each command (±50% jitter).
    pub latency: Duration,
    /// Seed for faults, latency jitter and random VM names.
    pub seed: u64,
    /// JSON-lines request log file.
    pub log_file: Option<PathBuf>,
    pub strict: StrictOptions,
    /// What `whoami` reports, and the `X-ExeDev-Email` the proxy vouches for.
    pub user_email: String,
    /// What stands behind each VM's HTTPS proxy: VM name → base URL
    /// (`http://127.0.0.1:PORT`), the stand-in for the VM's shared port,
    /// since emulated VMs run no servers.
    pub proxy_backends: BTreeMap<String, String>,
    /// The VM world (`--run-setup-scripts`): setup scripts run, with
    /// Tailscale, k3s and a Kubernetes API behind them. `None`: VMs run
    /// nothing, as before.
    pub world: Option<crate::world::WorldConfig>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            authorized_keys: Vec::new(),
            state_file: None,
            rate_limit: None,
            deadline: crate::core::api::COMMAND_DEADLINE,
            boot: Duration::from_millis(300),
            fault_rate: 0.0,
            latency: Duration::ZERO,
            seed: 0,
            log_file: None,
            strict: StrictOptions::default(),
            user_email: "dev@example.com".into(),
            proxy_backends: BTreeMap::new(),
            world: None,
        }
    }
}

/// Why the emulator could not start or keep its state.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("emulator: {0}")]
    Io(#[from] std::io::Error),
    #[error("emulator state: {0}")]
    State(String),
    #[error("emulator configuration: {0}")]
    Config(String),
}

/// Mutable account data, behind one mutex.
#[derive(Debug)]
pub(crate) struct World {
    pub store: state::Store,
    /// Seeded generator for random VM names.
    pub rng: StdRng,
}

/// What the request handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub world: Mutex<World>,
    pub limiter: Mutex<auth::RateLimiter>,
    pub faults: Mutex<faults::FaultInjector>,
    pub log: log::RequestLog,
    /// Proxy backends by VM; starts as the config's and tests add more.
    pub proxy_backends: Mutex<BTreeMap<String, String>>,
    /// Forwards proxied requests: no redirects followed (the client must
    /// see them), no system proxy, the command deadline as timeout.
    pub proxy_http: reqwest::Client,
    /// The VM world, when setup scripts run.
    pub vm_world: Option<crate::world::World>,
}

impl Shared {
    fn new(config: EmulatorConfig) -> Result<Arc<Self>, EmulatorError> {
        if !(0.0..=1.0).contains(&config.fault_rate) {
            return Err(EmulatorError::Config(format!(
                "fault rate {} is not a probability (0 to 1)",
                config.fault_rate
            )));
        }
        if let Some(r) = config.rate_limit
            && !(r.per_second > 0.0 && r.per_second.is_finite())
        {
            return Err(EmulatorError::Config(format!(
                "rate limit {} must be a positive number of requests per second",
                r.per_second
            )));
        }
        let store = state::Store::open(config.state_file.clone())?;
        let vm_world = match &config.world {
            Some(w) => Some(
                crate::world::start(w.clone(), config.boot, config.seed)
                    .map_err(|e| EmulatorError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let proxy_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.deadline)
            .build()
            .map_err(|e| EmulatorError::Config(format!("proxy HTTP client: {e}")))?;
        let recovered: Vec<(String, bool)> = store
            .state
            .vms
            .values()
            .map(|v| (v.name.clone(), runs_setup(&v.image)))
            .collect();
        let shared = Arc::new(Shared {
            vm_world,
            proxy_backends: Mutex::new(config.proxy_backends.clone()),
            proxy_http,
            world: Mutex::new(World {
                store,
                rng: StdRng::seed_from_u64(config.seed.wrapping_add(1)),
            }),
            limiter: Mutex::new(auth::RateLimiter::new(config.rate_limit)),
            faults: Mutex::new(faults::FaultInjector::new(
                config.fault_rate,
                config.latency,
                config.seed,
            )),
            log: log::RequestLog::new(config.log_file.clone()),
            config,
        });
        if let Some(w) = &shared.vm_world {
            let weak = Arc::downgrade(&shared);
            w.set_reboot_hook(Box::new(move |vm| {
                if let Some(s) = weak.upgrade() {
                    let mut world = s.world();
                    if let Some(v) = world.store.state.vms.get_mut(vm) {
                        v.boot_started_ms = now_ms();
                    }
                    let _ = world.store.save();
                }
            }));
            for (name, runs) in recovered {
                w.vm_recovered(&name, runs);
            }
        }
        Ok(shared)
    }

    /// Hands VM lifecycle events to the world, if there is one.
    pub fn world_events(&self, events: Vec<commands::VmEvent>) {
        let Some(w) = &self.vm_world else {
            return;
        };
        for e in events {
            match e {
                commands::VmEvent::Created {
                    name,
                    image,
                    script,
                } => w.vm_created(&name, runs_setup(&image), script.as_deref()),
                commands::VmEvent::Restarted { name } => w.vm_restarted(&name),
                commands::VmEvent::Removed { name } => w.vm_removed(&name),
            }
        }
    }

    fn bind_world(&self, addr: SocketAddr) -> Result<(), EmulatorError> {
        if let Some(w) = &self.vm_world {
            w.set_base_url(&format!("http://{addr}"))
                .map_err(|e| EmulatorError::Config(e.to_string()))?;
        }
        Ok(())
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An emulator serving in this process (tests); shut it down with
/// [`RunningEmulator::shutdown`] (dropping it aborts the server).
#[derive(Debug)]
pub struct RunningEmulator {
    /// The `/exec` endpoint, `http://127.0.0.1:PORT/exec`.
    pub url: String,
    /// `http://127.0.0.1:PORT`, for other paths (`/_emulator/state`).
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningEmulator {
    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    /// How many requests named this command (`share port`), whatever
    /// their outcome.
    pub fn count(&self, command_name: &str) -> usize {
        self.shared
            .log
            .snapshot()
            .iter()
            .filter(|r| r.command.as_deref() == Some(command_name))
            .count()
    }

    /// A snapshot of the whole state.
    pub fn state(&self) -> EmulatorState {
        self.shared.world().store.state.clone()
    }

    /// Plants a VM (e.g. one the fleet tool does not own, or a `stopped`
    /// one via [`VmRecord::pinned_status`]); replaces a VM of that name.
    pub fn insert_vm(&self, vm: VmRecord) -> Result<(), EmulatorError> {
        let mut world = self.shared.world();
        world.store.state.vms.insert(vm.name.clone(), vm);
        world.store.save()
    }

    /// Puts a server behind `vm`'s HTTPS proxy (`url` like
    /// `http://127.0.0.1:PORT`), replacing any earlier one; tests start a
    /// server and register it here since emulated VMs run nothing.
    pub fn set_proxy_backend(&self, vm: &str, url: &str) {
        self.shared
            .proxy_backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.to_string(), url.to_string());
    }

    /// The VM world, when the emulator runs setup scripts.
    pub fn world(&self) -> Option<&crate::world::World> {
        self.shared.vm_world.as_ref()
    }

    /// The `ssh` stand-in to put in `EXEDEV_K8S_SSH` (VM world only).
    pub fn ssh_program(&self) -> Option<PathBuf> {
        self.world().map(|w| w.ssh_program())
    }

    /// The k3s channel server to put in `EXEDEV_K8S_CHANNEL_SERVER` (VM
    /// world only): `/_emulator/k3s-channels`, whose channels the VMs'
    /// installers see too.
    pub fn channel_server(&self) -> Option<String> {
        self.world()
            .map(|_| format!("{}{}", self.base_url, crate::world::http::CHANNELS_PATH))
    }

    /// Stops serving, waiting briefly for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts an emulator on `127.0.0.1:0` in this process.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shared = Shared::new(config)?;
    shared.bind_world(addr)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_until(shared.clone(), listener, async move {
        let _ = stopped.await;
    }));
    Ok(RunningEmulator {
        url: format!("http://{addr}/exec"),
        base_url: format!("http://{addr}"),
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}
