//! SSH into fleet VMs through exe.dev's SSH proxy (`ssh <vm>.exe.xyz`), by
//! running the system `ssh` binary: it already knows the user's keys, agent,
//! config and known_hosts, and implementing SSH here would be a liability.
//!
//! exe.dev has been seen silently dropping bursts of new SSH connections, so
//! every command multiplexes over one master connection per VM
//! (`ControlMaster=auto`, `ControlPersist=60`) and connection failures
//! (ssh's exit code 255) are retried a bounded number of times.
//!
//! The program run is `$EXEDEV_K8S_SSH` (default `ssh`), so tests can put a
//! stub script in its place.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Environment variable naming the ssh program to run (default `ssh`).
pub const SSH_PROGRAM_ENV: &str = "EXEDEV_K8S_SSH";

/// Every exe.dev VM presents exe.dev's host key: one known_hosts entry under
/// this alias covers them all.
pub const HOST_KEY_ALIAS: &str = "exe.dev";

/// ssh's exit code for "could not connect or authenticate" (as opposed to
/// the remote command's own exit code): the only one worth retrying.
pub const CONNECTION_FAILED: i32 = 255;

/// How to reach VMs over SSH.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Private key to use (`-i`); `None` lets ssh use the agent and config.
    pub key: Option<PathBuf>,
    /// Where the multiplexing sockets live (`ControlPath`); kept short
    /// because Unix socket paths are limited to ~100 bytes.
    pub control_dir: PathBuf,
    /// Extra attempts after a connection failure (exit 255).
    pub retries: u32,
    /// Pause before the first retry; doubled for each further one.
    pub retry_delay: Duration,
    /// ssh's `ConnectTimeout`.
    pub connect_timeout: Duration,
}

impl SshOptions {
    /// Defaults that ride out exe.dev's dropped-connection bursts (3 retries,
    /// 2 s, 4 s, 8 s apart) with sockets under the system temp directory,
    /// one directory per user so users do not share masters.
    pub fn new(key: Option<PathBuf>) -> Self {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or_else(|| "user".to_string());
        SshOptions {
            key,
            control_dir: std::env::temp_dir().join(format!("exedev-k8s-ssh-{user}")),
            retries: 3,
            retry_delay: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// Why an SSH command failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The ssh program could not be started.
    #[error(
        "cannot run {program:?}: {source}. Install the OpenSSH client, or set {SSH_PROGRAM_ENV} to the ssh program to use"
    )]
    Spawn {
        /// The program tried.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// ssh could not connect or authenticate (exit 255), even after retries.
    #[error(
        "cannot SSH to {vm}.exe.xyz (ssh exit code 255 after {attempts} attempt(s)): {stderr}\n  Check that your SSH key is registered with exe.dev (`ssh exe.dev whoami`; pass --ssh-key PATH for another key), that VM {vm} exists and is running (`ssh exe.dev ls`), and that exe.dev's host key is known under the alias {HOST_KEY_ALIAS:?} (`ssh -o HostKeyAlias={HOST_KEY_ALIAS} {vm}.exe.xyz true` once)"
    )]
    Connect {
        /// The VM.
        vm: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last line ssh printed on stderr.
        stderr: String,
    },
    /// The remote command ran and failed.
    #[error(
        "`{command}` failed on {vm} (exit code {code}): {stderr}\n  The VM is reachable; check that its bootstrap finished (k3s installed and running) and that the exe.dev user may run sudo without a password"
    )]
    Remote {
        /// The VM.
        vm: String,
        /// The remote command line.
        command: String,
        /// Its exit code (-1 if killed by a signal).
        code: i32,
        /// The last line it printed on stderr.
        stderr: String,
    },
    /// The remote command printed something that is not UTF-8.
    #[error("`{command}` on {vm} printed output that is not UTF-8")]
    NotUtf8 {
        /// The VM.
        vm: String,
        /// The remote command line.
        command: String,
    },
    /// A remote command word cannot be passed through a shell.
    #[error("cannot pass {word:?} to the remote shell: {reason}")]
    BadWord {
        /// The word.
        word: String,
        /// Why.
        reason: String,
    },
    /// A local resource (socket directory, port) was unavailable.
    #[error("{what}: {source}")]
    Local {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tunnel did not come up.
    #[error(
        "cannot open an SSH tunnel to {vm}.exe.xyz for {remote}: {reason}\n  Check that your SSH key is registered with exe.dev and that VM {vm} is running; without the tunnel, the API is reachable over Tailscale"
    )]
    Tunnel {
        /// The VM.
        vm: String,
        /// The remote address forwarded.
        remote: String,
        /// What happened.
        reason: String,
    },
}

/// The host name exe.dev's SSH proxy answers for a VM.
pub fn host(vm: &str) -> String {
    format!("{vm}.exe.xyz")
}

fn program() -> String {
    std::env::var(SSH_PROGRAM_ENV)
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "ssh".to_string())
}

fn common_options(opts: &SshOptions) -> Vec<String> {
    let mut args = Vec::new();
    let mut o = |s: String| {
        args.push("-o".to_string());
        args.push(s);
    };
    o(format!("HostKeyAlias={HOST_KEY_ALIAS}"));
    o("BatchMode=yes".to_string());
    o(format!(
        "ConnectTimeout={}",
        opts.connect_timeout.as_secs().max(1)
    ));
    args
}

fn key_args(opts: &SshOptions) -> Vec<String> {
    match &opts.key {
        Some(k) => vec![
            "-o".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "-i".to_string(),
            k.display().to_string(),
        ],
        None => Vec::new(),
    }
}

/// The ssh arguments that reach `vm` (everything but the remote command):
/// exe.dev's host-key alias, no prompts, a bounded connect, and a shared
/// master connection per VM (`%C` hashes host, port and user).
pub fn ssh_args(vm: &str, opts: &SshOptions) -> Vec<String> {
    let mut args = common_options(opts);
    args.extend([
        "-o".to_string(),
        "ControlMaster=auto".to_string(),
        "-o".to_string(),
        format!("ControlPath={}", opts.control_dir.join("%C").display()),
        "-o".to_string(),
        "ControlPersist=60".to_string(),
    ]);
    args.extend(key_args(opts));
    args.push(host(vm));
    args
}

/// The ssh arguments of a tunnel: its own connection (a multiplexed `-N -L`
/// would hand the forward to the master and exit, outliving [`Tunnel`]),
/// failing if the forward cannot be set up, with keep-alives.
pub fn tunnel_args(vm: &str, local_port: u16, remote: &str, opts: &SshOptions) -> Vec<String> {
    let mut args = vec![
        "-N".to_string(),
        "-L".to_string(),
        format!("127.0.0.1:{local_port}:{remote}"),
    ];
    args.extend(common_options(opts));
    for o in [
        "ControlMaster=no",
        "ControlPath=none",
        "ExitOnForwardFailure=yes",
        "ServerAliveInterval=15",
    ] {
        args.push("-o".to_string());
        args.push(o.to_string());
    }
    args.extend(key_args(opts));
    args.push(host(vm));
    args
}

fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(ssh printed nothing on stderr)")
        .to_string()
}

fn ensure_control_dir(opts: &SshOptions) -> Result<(), SshError> {
    let local = |source| SshError::Local {
        what: format!(
            "cannot create the SSH socket directory {}",
            opts.control_dir.display()
        ),
        source,
    };
    std::fs::create_dir_all(&opts.control_dir).map_err(local)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opts.control_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(local)?;
    }
    Ok(())
}

/// Runs `remote_command` (words, quoted here for the remote shell) on `vm`
/// and returns its stdout. Connection failures (exit 255) are retried
/// `opts.retries` times with doubling pauses; any other failure is returned
/// at once, since re-running a command that ran is not ours to decide.
pub async fn run(vm: &str, remote_command: &[&str], opts: &SshOptions) -> Result<String, SshError> {
    let command = crate::shellwords::join(remote_command).map_err(|e| SshError::BadWord {
        word: remote_command.join(" "),
        reason: e.to_string(),
    })?;
    ensure_control_dir(opts)?;
    let program = program();
    let mut args = ssh_args(vm, opts);
    args.push("--".to_string());
    args.push(command.clone());
    let mut delay = opts.retry_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let output = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| SshError::Spawn {
                program: program.clone(),
                source,
            })?;
        match output.status.code() {
            Some(0) => {
                return String::from_utf8(output.stdout).map_err(|_| SshError::NotUtf8 {
                    vm: vm.to_string(),
                    command,
                });
            }
            Some(CONNECTION_FAILED) if attempt <= opts.retries => {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            Some(CONNECTION_FAILED) => {
                return Err(SshError::Connect {
                    vm: vm.to_string(),
                    attempts: attempt,
                    stderr: last_line(&output.stderr),
                });
            }
            code => {
                return Err(SshError::Remote {
                    vm: vm.to_string(),
                    command,
                    code: code.unwrap_or(-1),
                    stderr: last_line(&output.stderr),
                });
            }
        }
    }
}

/// A running `ssh -L` forward from `127.0.0.1:local_port`. Dropping it kills
/// the ssh process, closing the forward.
#[derive(Debug)]
pub struct Tunnel {
    /// The local port that forwards to the remote address.
    pub local_port: u16,
    /// The ssh process (killed on drop).
    pub child: Child,
}

fn free_port() -> Result<u16, SshError> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|source| SshError::Local {
            what: "cannot find a free local port".to_string(),
            source,
        })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| SshError::Local {
            what: "cannot find a free local port".to_string(),
            source,
        })
}

/// Forwards a free local port to `remote` (e.g. `127.0.0.1:6443`) as seen
/// from `vm`, for when the VM is not reachable directly (no Tailscale here).
/// Returns once the local port accepts connections; ssh exiting early with
/// 255 is retried like [`run`].
pub async fn tunnel(vm: &str, remote: &str, opts: &SshOptions) -> Result<Tunnel, SshError> {
    let program = program();
    let fail = |reason: String| SshError::Tunnel {
        vm: vm.to_string(),
        remote: remote.to_string(),
        reason,
    };
    let mut delay = opts.retry_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        let mut child = Command::new(&program)
            .args(tunnel_args(vm, port, remote, opts))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SshError::Spawn {
                program: program.clone(),
                source,
            })?;
        let deadline = tokio::time::Instant::now() + opts.connect_timeout + Duration::from_secs(5);
        let exited = loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Tunnel {
                    local_port: port,
                    child,
                });
            }
            match child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) => {}
                Err(e) => return Err(fail(format!("cannot watch the ssh process: {e}"))),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!(
                    "local port {port} did not accept connections within {}s",
                    (opts.connect_timeout + Duration::from_secs(5)).as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut stderr = Vec::new();
        if let Some(mut pipe) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = pipe.read_to_end(&mut stderr).await;
        }
        if exited == Some(CONNECTION_FAILED) && attempt <= opts.retries {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
            continue;
        }
        return Err(fail(format!(
            "ssh exited with code {} after {attempt} attempt(s): {}",
            exited.map_or_else(|| "none (signal)".to_string(), |c| c.to_string()),
            last_line(&stderr)
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(key: Option<&str>) -> SshOptions {
        SshOptions {
            key: key.map(PathBuf::from),
            control_dir: PathBuf::from("/tmp/exk8s"),
            retries: 2,
            retry_delay: Duration::from_millis(1),
            connect_timeout: Duration::from_secs(7),
        }
    }

    #[test]
    fn args_reuse_connections_and_name_the_vm_last() {
        let a = ssh_args("demo-cp1", &opts(None)).join(" ");
        assert_eq!(
            a,
            "-o HostKeyAlias=exe.dev -o BatchMode=yes -o ConnectTimeout=7 \
             -o ControlMaster=auto -o ControlPath=/tmp/exk8s/%C -o ControlPersist=60 \
             demo-cp1.exe.xyz"
        );
    }

    #[test]
    fn args_with_a_key_use_only_that_key() {
        let a = ssh_args("demo-cp1", &opts(Some("/k/id_ed25519")));
        let tail: Vec<&str> = a.iter().rev().take(5).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                "/k/id_ed25519",
                "demo-cp1.exe.xyz"
            ]
        );
    }

    #[test]
    fn tunnel_args_forward_locally_without_the_master() {
        let a = tunnel_args("demo-cp1", 40123, "127.0.0.1:6443", &opts(None)).join(" ");
        assert!(
            a.starts_with("-N -L 127.0.0.1:40123:127.0.0.1:6443 "),
            "{a}"
        );
        assert!(a.contains("-o HostKeyAlias=exe.dev"), "{a}");
        assert!(a.contains("-o ControlMaster=no -o ControlPath=none"), "{a}");
        assert!(a.contains("ExitOnForwardFailure=yes"), "{a}");
        assert!(a.ends_with(" demo-cp1.exe.xyz"), "{a}");
    }

    #[test]
    fn connect_timeout_is_at_least_a_second() {
        let mut o = opts(None);
        o.connect_timeout = Duration::from_millis(10);
        assert!(ssh_args("x", &o).contains(&"ConnectTimeout=1".to_string()));
    }

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(
            last_line(b"warn\nPermission denied (publickey).\n\n"),
            "Permission denied (publickey)."
        );
        assert_eq!(last_line(b""), "(ssh printed nothing on stderr)");
    }

    #[test]
    fn errors_name_the_vm_and_say_what_to_do() {
        let e = SshError::Connect {
            vm: "demo-cp1".into(),
            attempts: 3,
            stderr: "Connection closed".into(),
        }
        .to_string();
        assert!(e.contains("demo-cp1.exe.xyz"), "{e}");
        assert!(e.contains("255"), "{e}");
        assert!(e.contains("registered with exe.dev"), "{e}");
        assert!(e.contains("running"), "{e}");
    }
}
