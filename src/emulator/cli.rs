//! The `exedev-k8s emulator` subcommand: flags and the serve loop, so that
//! a fleet run (or a person with curl) can talk to an emulator in another
//! process exactly as to exe.dev.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{EmulatorConfig, EmulatorError, RateLimit, StrictOptions};
use crate::edges::credentials::load_public_keys;

/// Flags of `exedev-k8s emulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// State file; loaded on start, saved after every change.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// authorized_keys or .pub file of keys allowed to sign tokens (repeatable).
    #[arg(long = "authorized-keys", required = true)]
    pub authorized_keys: Vec<PathBuf>,
    /// Per-key rate limit in requests per second (off by default).
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Burst size for the rate limit (default: the rate, at least 1).
    #[arg(long)]
    pub burst: Option<u32>,
    /// Per-command deadline in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub deadline_ms: u64,
    /// How long a new VM stays `starting`, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub boot_ms: u64,
    /// Probability of an injected fault per request (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Mean added latency in milliseconds (±50% jitter).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed for faults, jitter and random names.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// What `whoami` reports.
    #[arg(long, default_value = "dev@example.com")]
    pub email: String,
    /// `rm` of an absent VM answers 422 instead of 200 with an error line.
    #[arg(long)]
    pub rm_missing_422: bool,
    /// Accept VM names ending in `-<digits>` (exe.dev's historical rule);
    /// by default they are refused, the stricter reading of exe.dev's rule.
    #[arg(long)]
    pub allow_digit_suffix: bool,
    /// Hide new VMs from `ls` for this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub ls_lag_ms: u64,
    /// Server standing behind a VM's HTTPS proxy, as VM=URL
    /// (`web-one=http://127.0.0.1:8000`); repeatable.
    #[arg(long = "proxy-backend", value_name = "VM=URL", value_parser = parse_backend)]
    pub proxy_backends: Vec<(String, String)>,
    #[command(flatten)]
    pub world: crate::world::cli::WorldArgs,
}

/// Reads `VM=URL`: emulated VMs run nothing, so the URL of a real server
/// must be given; only plain `http://` is forwarded to.
fn parse_backend(s: &str) -> Result<(String, String), String> {
    let (vm, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not VM=URL"))?;
    if vm.is_empty() {
        return Err(format!("{s:?} names no VM"));
    }
    if !url.starts_with("http://") {
        return Err(format!("backend {url:?} must be an http:// URL"));
    }
    Ok((vm.to_string(), url.to_string()))
}

/// `path` made absolute against the working directory at start: the VM
/// world hands its directories to stand-ins (`EXEDEV_K8S_SSH=<world>/ssh`,
/// the sandbox's bind mounts) that run from other directories, where a
/// relative `--state emu.json` would name nothing.
fn absolute(path: &std::path::Path) -> Result<PathBuf, EmulatorError> {
    std::path::absolute(path)
        .map_err(|e| EmulatorError::Config(format!("cannot make {} absolute: {e}", path.display())))
}

impl EmulatorArgs {
    /// The configuration these flags describe (reads the key files). Every
    /// path in it is absolute.
    pub fn config(&self) -> Result<EmulatorConfig, EmulatorError> {
        let abs = |p: &Option<PathBuf>| p.as_deref().map(absolute).transpose();
        let state = abs(&self.state)?;
        let mut world_args = self.world.clone();
        world_args.world_dir = abs(&self.world.world_dir)?;
        let mut keys = Vec::new();
        for path in &self.authorized_keys {
            keys.extend(load_public_keys(path).map_err(|e| EmulatorError::Config(e.to_string()))?);
        }
        if keys.is_empty() {
            return Err(EmulatorError::Config(
                "no public keys in the --authorized-keys files".into(),
            ));
        }
        let rate_limit = self.rate_limit.map(|per_second| RateLimit {
            per_second,
            burst: self
                .burst
                .unwrap_or_else(|| per_second.ceil().max(1.0) as u32),
        });
        Ok(EmulatorConfig {
            authorized_keys: keys,
            state_file: state.clone(),
            rate_limit,
            deadline: Duration::from_millis(self.deadline_ms),
            boot: Duration::from_millis(self.boot_ms),
            fault_rate: self.fault_rate,
            latency: Duration::from_millis(self.latency_ms),
            seed: self.seed,
            log_file: abs(&self.log)?,
            strict: StrictOptions {
                rm_missing_422: self.rm_missing_422,
                allow_digit_suffix: self.allow_digit_suffix,
                ls_lag: Duration::from_millis(self.ls_lag_ms),
            },
            user_email: self.email.clone(),
            proxy_backends: self.proxy_backends.iter().cloned().collect(),
            world: world_args
                .config(state.as_ref())
                .map_err(EmulatorError::Config)?,
        })
    }
}

/// Loads the state, binds, prints `http://ADDR/exec` as the first line of
/// stdout (so a script can read the port), and serves until Ctrl-C. The URL
/// is printed only once the emulator can serve: a script that read it must
/// never find the emulator gone (a corrupt `--state` fails before). With the
/// VM world, a second line `EXEDEV_K8S_SSH=PATH` names the `ssh` stand-in to
/// export, and a third `EXEDEV_K8S_CHANNEL_SERVER=URL` the k3s channel
/// server the world serves.
pub async fn run_cli(opts: EmulatorArgs) -> Result<(), EmulatorError> {
    let shared = super::Shared::new(opts.config()?)?;
    let listener = tokio::net::TcpListener::bind(&opts.listen).await?;
    let addr = listener.local_addr()?;
    shared.bind_world(addr)?;
    if let Some(warning) = exposure_warning(addr, shared.vm_world.is_some()) {
        // stderr: stdout's first line is the URL scripts read.
        eprintln!("{warning}");
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "http://{addr}/exec")?;
        if let Some(w) = &shared.vm_world {
            writeln!(
                out,
                "{}={}",
                crate::edges::ssh::SSH_PROGRAM_ENV,
                w.ssh_program().display()
            )?;
            writeln!(
                out,
                "{}=http://{addr}{}",
                crate::edges::channel::ENV,
                crate::world::http::CHANNELS_PATH
            )?;
        }
        out.flush()?;
    }
    // Ctrl-C or SIGTERM stop it cleanly (the VM world's temporary
    // directory is removed when the emulator goes away).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    super::server::serve_until(shared, listener, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    Ok(())
}

/// What other machines can reach when the emulator listens beyond this
/// one (`--listen 0.0.0.0:PORT`, a LAN address), said once at start: plain
/// HTTP, so tokens and setup scripts (secrets included) cross the network
/// readable; `/exec` to anyone with a token an authorized key signed; each
/// VM's HTTPS-proxy stand-in (`Host: <vm>.exe.xyz`, `/_proxy/<vm>/`),
/// public shares without a login. What stays this machine's: the
/// `/_emulator/` and `/_world/` endpoints (state, kubeconfigs, channels,
/// the VM world's channel), refused to any peer that is not loopback. None
/// for a loopback address.
pub fn exposure_warning(addr: std::net::SocketAddr, world: bool) -> Option<String> {
    let ip = addr.ip();
    let loopback = match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    };
    if loopback {
        return None;
    }
    let reach = if ip.is_unspecified() {
        "every network this machine is on"
    } else {
        "the network of that address"
    };
    let world_note = if world {
        " The VM world's scripts and Kubernetes API servers stay on this machine."
    } else {
        ""
    };
    Some(format!(
        "warning: the emulator listens on {addr}, reachable from {reach}. Exposed there, over plain HTTP (tokens, setup scripts and the secrets in them cross the network readable): POST /exec (the exe.dev API, to anyone holding a token an --authorized-keys key signed) and each VM's HTTPS-proxy stand-in (Host: <vm>.exe.xyz or /_proxy/<vm>/: public shares without a login, private ones with a token). Not exposed: /_emulator/ and /_world/ (state, kubeconfigs, k3s channels, the VM world's channel) answer loopback peers only.{world_note} Use --listen 127.0.0.1:PORT unless other machines must reach it."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        emulator: EmulatorArgs,
    }

    /// Only a loopback listener is quiet; the warning names what crosses
    /// the network and what does not.
    #[test]
    fn a_listener_beyond_loopback_is_a_warning() {
        for quiet in ["127.0.0.1:80", "[::1]:80", "[::ffff:127.0.0.1]:80"] {
            assert_eq!(
                exposure_warning(quiet.parse().unwrap(), true),
                None,
                "{quiet}"
            );
        }
        for loud in ["0.0.0.0:80", "[::]:80", "192.168.1.5:80"] {
            let w = exposure_warning(loud.parse().unwrap(), false).unwrap();
            assert!(w.contains("POST /exec") && w.contains("/_emulator/"), "{w}");
        }
    }

    #[test]
    fn flags_become_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(
            &keys,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINFzNBdLFXP3myWKDgP/k9v8hWEBcc9t9kgAIM28Qux2 api\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "emulator",
            "--listen",
            "127.0.0.1:9",
            "--authorized-keys",
            keys.to_str().unwrap(),
            "--rate-limit",
            "2.5",
            "--boot-ms",
            "10",
            "--fault-rate",
            "0.1",
            "--rm-missing-422",
            "--proxy-backend",
            "web-one=http://127.0.0.1:8000",
            "--proxy-backend",
            "web-two=http://127.0.0.1:8001/",
        ])
        .unwrap();
        let c = cli.emulator.config().unwrap();
        assert_eq!(c.authorized_keys.len(), 1);
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                per_second: 2.5,
                burst: 3
            })
        );
        assert_eq!(c.boot, Duration::from_millis(10));
        assert_eq!(c.deadline, Duration::from_secs(30));
        assert!(c.strict.rm_missing_422 && !c.strict.allow_digit_suffix);
        assert_eq!(c.proxy_backends.len(), 2);
        assert_eq!(c.proxy_backends["web-one"], "http://127.0.0.1:8000");
        assert!(parse_backend("web-one").is_err());
        assert!(parse_backend("web-one=https://x").is_err());
        assert!(
            Cli::try_parse_from(["emulator"]).is_err(),
            "keys are required"
        );
        assert!(c.world.is_none(), "no world without --run-setup-scripts");
    }

    #[test]
    fn world_flags_need_the_world_and_become_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(
            &keys,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINFzNBdLFXP3myWKDgP/k9v8hWEBcc9t9kgAIM28Qux2 api\n",
        )
        .unwrap();
        let k = keys.to_str().unwrap();
        assert!(
            Cli::try_parse_from(["emulator", "--authorized-keys", k, "--join-ms", "5"]).is_err(),
            "world flags need --run-setup-scripts"
        );
        let cli = Cli::try_parse_from([
            "emulator",
            "--authorized-keys",
            k,
            "--state",
            "/tmp/emu.json",
            "--run-setup-scripts",
            "--join-ms",
            "5",
            "--tailscale-key",
            "tskey-auth-a:reusable,tag=k8s",
            "--k3s-channel",
            "stable=v1.32.1+k3s1",
            "--fault-download-failures",
            "2",
            "--fault-server-never-ready",
            "demo-cp*",
            "--fault-tailscale-key-invalid",
            "--fault-reboot-mid-setup",
            "demo-web1",
        ])
        .unwrap();
        let w = cli.emulator.config().unwrap().world.unwrap();
        assert_eq!(w.timings.join_ms, 5);
        assert_eq!(w.tailnet.keys[0].tags, ["tag:k8s"]);
        assert!(w.tailnet.refuse_all_keys);
        assert_eq!(w.channels["stable"], "v1.32.1+k3s1");
        assert_eq!(w.faults.download_failures, 2);
        assert_eq!(w.faults.server_never_ready, ["demo-cp*"]);
        assert_eq!(w.faults.reboot_mid_setup, ["demo-web1"]);
        assert_eq!(
            w.dir.as_deref(),
            Some(std::path::Path::new("/tmp/emu.json.world"))
        );
        // A relative --state (or --world-dir) is made absolute at start:
        // stand-ins run from other directories.
        let cwd = std::env::current_dir().unwrap();
        for (flag, want) in [("--state", "emu.json.world"), ("--world-dir", "emu.json")] {
            let cli = Cli::try_parse_from([
                "emulator",
                "--authorized-keys",
                k,
                flag,
                "emu.json",
                "--run-setup-scripts",
            ])
            .unwrap();
            let c = cli.emulator.config().unwrap();
            let w = c.world.unwrap();
            assert_eq!(w.dir, Some(cwd.join(want)), "{flag}");
            if flag == "--state" {
                assert_eq!(c.state_file, Some(cwd.join("emu.json")));
            }
        }
        let bad = Cli::try_parse_from([
            "emulator",
            "--authorized-keys",
            k,
            "--run-setup-scripts",
            "--k3s-channel",
            "stable=latest",
        ])
        .unwrap();
        assert!(bad.emulator.config().is_err());
    }

    #[test]
    fn s3_flags_shape_the_worlds_store() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(
            &keys,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINFzNBdLFXP3myWKDgP/k9v8hWEBcc9t9kgAIM28Qux2 api\n",
        )
        .unwrap();
        let k = keys.to_str().unwrap();
        let world = |extra: &[&str]| {
            let mut args = vec!["emulator", "--authorized-keys", k, "--run-setup-scripts"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
                .unwrap()
                .emulator
                .config()
                .map(|c| c.world.unwrap().s3)
        };
        let open = world(&[]).unwrap();
        assert_eq!(open.endpoint, "s3.emulator.internal");
        assert_eq!((open.access_key, open.secret_key), (None, None));
        assert!(open.buckets.is_empty());
        let shaped = world(&[
            "--s3-endpoint",
            "minio.internal:9000",
            "--s3-access-key",
            "AK",
            "--s3-secret-key",
            "SK",
            "--s3-bucket",
            "a",
            "--s3-bucket",
            "b",
        ])
        .unwrap();
        assert_eq!(shaped.endpoint, "minio.internal:9000");
        assert_eq!(shaped.access_key.as_deref(), Some("AK"));
        assert_eq!(shaped.secret_key.as_deref(), Some("SK"));
        assert_eq!(shaped.buckets, ["a", "b"]);
        let bad = world(&["--s3-endpoint", "https://s3.example"])
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("--s3-endpoint") && bad.contains("no scheme"),
            "{bad}"
        );
    }
}
