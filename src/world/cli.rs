//! The flags of `exedev-k8s emulator` that turn on and shape the VM world.

use std::path::PathBuf;
use std::time::Duration;

use super::tailnet::{DeclaredKey, Policy, TailnetConfig};
use super::{Faults, Timings, WorldConfig};

/// World flags (all need `--run-setup-scripts`).
#[derive(Debug, Clone, clap::Args)]
pub struct WorldArgs {
    /// Run each VM's setup script for real, in its own root, with a
    /// tailnet, k3s and a Kubernetes API behind stand-in commands.
    #[arg(long)]
    pub run_setup_scripts: bool,
    /// Where VM roots live (default: beside --state, else a temporary
    /// directory removed at exit).
    #[arg(long, requires = "run_setup_scripts")]
    pub world_dir: Option<PathBuf>,
    /// The tailnet's MagicDNS suffix.
    #[arg(
        long,
        default_value = "tail1234.ts.net",
        requires = "run_setup_scripts"
    )]
    pub tailnet: String,
    /// An auth key the tailnet accepts, `KEY[:kind,...]` with kinds
    /// reusable, one-off, ephemeral, preauthorized, tag=NAME (repeatable).
    /// Without any, every `tskey-auth-` key is valid.
    #[arg(
        long = "tailscale-key",
        value_name = "KEY[:KINDS]",
        requires = "run_setup_scripts"
    )]
    pub tailscale_keys: Vec<String>,
    /// How long an ephemeral device stays offline before it is removed.
    #[arg(long, default_value_t = 30 * 60 * 1000, requires = "run_setup_scripts")]
    pub ephemeral_offline_ms: u64,
    /// Approve advertised subnet routes at once (ACL autoApprovers).
    #[arg(long, requires = "run_setup_scripts")]
    pub approve_routes: bool,
    /// The tailnet requires device approval (keys that are not
    /// pre-authorized leave devices waiting).
    #[arg(long, requires = "run_setup_scripts")]
    pub device_approval: bool,
    /// The tailnet's policy file (JSON, Tailscale's `"acls"` syntax): only
    /// the flows it accepts pass. Without it the tailnet has a new
    /// tailnet's policy, which allows every flow.
    #[arg(long, value_name = "FILE", requires = "run_setup_scripts")]
    pub tailnet_policy: Option<PathBuf>,
    /// MagicDNS is off: tailnet names do not resolve.
    #[arg(long, requires = "run_setup_scripts")]
    pub no_magic_dns: bool,
    /// Tailscale runs in userspace networking: no TUN device, so no
    /// `tailscale0` (`tailscale ip -4` still answers).
    #[arg(long, requires = "run_setup_scripts")]
    pub no_tun: bool,
    /// An offline device already holds this name on the tailnet (a logout
    /// that failed, a VM recreated): a VM asking for it becomes NAME-1
    /// (repeatable).
    #[arg(long, value_name = "NAME", requires = "run_setup_scripts")]
    pub stale_device: Vec<String>,
    /// tailscaled runs at boot (whether exeuntu enables it is not known;
    /// by default it does not, so scripts must start it).
    #[arg(long, requires = "run_setup_scripts")]
    pub tailscaled_at_boot: bool,
    /// A k3s release channel and its version, `NAME=VERSION` (repeatable;
    /// stable is v1.31.4+k3s1 unless set).
    #[arg(
        long = "k3s-channel",
        value_name = "NAME=VERSION",
        requires = "run_setup_scripts"
    )]
    pub k3s_channels: Vec<String>,
    /// Time to serve the k3s binary download, in milliseconds.
    #[arg(long, default_value_t = Timings::default().install_ms, requires = "run_setup_scripts")]
    pub install_ms: u64,
    /// Time for a server to become ready on its own, in milliseconds.
    #[arg(long, default_value_t = Timings::default().server_ready_ms, requires = "run_setup_scripts")]
    pub server_ready_ms: u64,
    /// Time for a joining server's etcd learner to catch up, in milliseconds.
    #[arg(long, default_value_t = Timings::default().join_ms, requires = "run_setup_scripts")]
    pub join_ms: u64,
    /// Time for an agent to register once its server answers, in milliseconds.
    #[arg(long, default_value_t = Timings::default().agent_ready_ms, requires = "run_setup_scripts")]
    pub agent_ready_ms: u64,
    /// Time tailscaled takes at boot to bring a saved login online, in
    /// milliseconds (meanwhile `BackendState: Starting`, no address).
    #[arg(long, default_value_t = Timings::default().tailscale_up_ms, requires = "run_setup_scripts")]
    pub tailscale_up_ms: u64,
    /// Time a bound pod spends `ContainerCreating` before it runs and
    /// turns Ready, in milliseconds (one figure for every pod).
    #[arg(long, default_value_t = Timings::default().pod_start_ms, requires = "run_setup_scripts")]
    pub pod_start_ms: u64,
    /// systemd's restart delay for a failed k3s, in milliseconds.
    #[arg(long, default_value_t = Timings::default().restart_ms, requires = "run_setup_scripts")]
    pub restart_ms: u64,
    /// A setup script running longer is killed and recorded as failed.
    #[arg(long, default_value_t = 120_000, requires = "run_setup_scripts")]
    pub script_timeout_ms: u64,
    /// Shorten the scripts' own `sleep`s by this factor (0 < f <= 1), for
    /// fast runs with fast timings; 1 keeps real time.
    #[arg(long, default_value_t = 1.0, requires = "run_setup_scripts")]
    pub sleep_scale: f64,
    /// Fault: the first N installer downloads of each VM fail (DNS).
    #[arg(long, default_value_t = 0, requires = "run_setup_scripts")]
    pub fault_download_failures: u32,
    /// The host the world's S3-compatible store answers at (k3s's
    /// `etcd-s3-endpoint`); any other endpoint does not resolve in a VM.
    #[arg(long, value_name = "HOST", default_value = crate::world::s3::DEFAULT_ENDPOINT, requires = "run_setup_scripts")]
    pub s3_endpoint: String,
    /// The access key the S3 store accepts (with `--s3-secret-key`);
    /// without one any key pair is accepted.
    #[arg(
        long,
        value_name = "KEY",
        env = "EXEDEV_EMULATOR_S3_ACCESS_KEY",
        requires = "run_setup_scripts"
    )]
    pub s3_access_key: Option<String>,
    /// The secret key the S3 store accepts (prefer the environment
    /// variable: a flag shows in `ps`).
    #[arg(
        long,
        value_name = "KEY",
        env = "EXEDEV_EMULATOR_S3_SECRET_KEY",
        hide_env_values = true,
        requires = "run_setup_scripts"
    )]
    pub s3_secret_key: Option<String>,
    /// A bucket that exists in the S3 store (repeatable); without any,
    /// every bucket name exists. k3s never creates a bucket.
    #[arg(
        long = "s3-bucket",
        value_name = "NAME",
        requires = "run_setup_scripts"
    )]
    pub s3_buckets: Vec<String>,
    /// Fault: k3s servers on these VMs (globs) never become ready.
    #[arg(long, value_name = "GLOB", requires = "run_setup_scripts")]
    pub fault_server_never_ready: Vec<String>,
    /// Fault: Tailscale refuses every auth key.
    #[arg(long, requires = "run_setup_scripts")]
    pub fault_tailscale_key_invalid: bool,
    /// Fault: these VMs (globs) reboot once while their setup script
    /// downloads k3s.
    #[arg(long, value_name = "GLOB", requires = "run_setup_scripts")]
    pub fault_reboot_mid_setup: Vec<String>,
}

impl WorldArgs {
    /// The world configuration, or `None` without `--run-setup-scripts`.
    pub fn config(&self, state_file: Option<&PathBuf>) -> Result<Option<WorldConfig>, String> {
        if !self.run_setup_scripts {
            return Ok(None);
        }
        let binary = std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path for the stand-ins: {e}"))?;
        let mut c = WorldConfig::new(binary);
        c.dir = self.world_dir.clone().or_else(|| {
            state_file.map(|s| {
                let mut p = s.clone().into_os_string();
                p.push(".world");
                PathBuf::from(p)
            })
        });
        let keys = self
            .tailscale_keys
            .iter()
            .map(|k| DeclaredKey::parse(k))
            .collect::<Result<Vec<_>, _>>()?;
        c.tailnet = TailnetConfig {
            name: self.tailnet.clone(),
            keys,
            ephemeral_offline_ms: self.ephemeral_offline_ms,
            auto_approve_routes: self.approve_routes,
            device_approval: self.device_approval,
            magic_dns: !self.no_magic_dns,
            policy: match &self.tailnet_policy {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        format!("cannot read --tailnet-policy {}: {e}", path.display())
                    })?;
                    Some(
                        Policy::parse(&text)
                            .map_err(|e| format!("--tailnet-policy {}: {e}", path.display()))?,
                    )
                }
                None => None,
            },
            refuse_all_keys: self.fault_tailscale_key_invalid,
            userspace: self.no_tun,
            stale_devices: self.stale_device.clone(),
        };
        c.timings = Timings {
            install_ms: self.install_ms,
            server_ready_ms: self.server_ready_ms,
            join_ms: self.join_ms,
            agent_ready_ms: self.agent_ready_ms,
            restart_ms: self.restart_ms,
            tailscale_up_ms: self.tailscale_up_ms,
            pod_start_ms: self.pod_start_ms,
        };
        c.faults = Faults {
            download_failures: self.fault_download_failures,
            server_never_ready: self.fault_server_never_ready.clone(),
            reboot_mid_setup: self.fault_reboot_mid_setup.clone(),
        };
        if self.s3_endpoint.trim().is_empty() || self.s3_endpoint.contains(['/', ' ']) {
            return Err(format!(
                "--s3-endpoint {:?} is not a host (HOST or HOST:PORT, no scheme)",
                self.s3_endpoint
            ));
        }
        c.s3 = crate::world::s3::S3Config {
            endpoint: self.s3_endpoint.clone(),
            access_key: self.s3_access_key.clone(),
            secret_key: self.s3_secret_key.clone(),
            buckets: self.s3_buckets.clone(),
        };
        c.script_timeout = Duration::from_millis(self.script_timeout_ms);
        c.tailscaled_at_boot = self.tailscaled_at_boot;
        c.sleep_scale = self.sleep_scale;
        for ch in &self.k3s_channels {
            let (name, v) = ch
                .split_once('=')
                .ok_or_else(|| format!("--k3s-channel {ch:?} is not NAME=VERSION"))?;
            if !crate::base::release::is_release(v) {
                return Err(format!(
                    "--k3s-channel {ch:?}: {v:?} is not a k3s release like v1.31.4+k3s1"
                ));
            }
            c.channels.insert(name.to_string(), v.to_string());
        }
        Ok(Some(c))
    }
}
