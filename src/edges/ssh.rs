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
//!
//! Two things here are security boundaries. The control directory holds
//! the master sockets, through which anyone who can reach them runs
//! commands as you on your VMs: it is created 0700 and refused when it is a
//! symlink, someone else's, or open to others ([`ensure_control_dir`]). And
//! `ssh` (with the `ProxyCommand`s and `LocalCommand`s of the user's
//! config) gets only the environment it needs ([`child_env`]): never the
//! exe.dev token, a key passphrase, the Tailscale key or the k3s token.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
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
    /// The most one call ([`run`], [`run_with_input`]) may take, retries
    /// included: past it the ssh process is killed and the call fails with
    /// [`SshError::Deadline`]. A connected session whose far end stops
    /// answering is also cut by keep-alives ([`KEEPALIVE`]), but a remote
    /// command that simply never finishes is only cut by this.
    pub deadline: Duration,
}

/// `ServerAliveInterval` and `ServerAliveCountMax`: a connection whose far
/// end stops answering is given up after 3 unanswered keep-alives 5 s apart
/// (~15 s) instead of TCP's own timeout (many minutes).
pub const KEEPALIVE: (u32, u32) = (5, 3);

/// [`SshOptions::deadline`] by default: longer than any quick read (state
/// file, kubeconfig, logout, probes) under load, short enough that a VM
/// that never answers is named within minutes.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

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
            deadline: DEFAULT_DEADLINE,
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
    /// The call did not finish within [`SshOptions::deadline`]: ssh was
    /// killed.
    #[error(
        "no answer from {vm} over SSH within {secs}s (`{command}`): the VM or exe.dev's SSH proxy stopped answering.\n  Check `ssh {vm}.exe.xyz true` and that the VM is running (`ssh exe.dev ls`); re-run once it answers"
    )]
    Deadline {
        /// The VM.
        vm: String,
        /// The remote command line.
        command: String,
        /// The deadline, in seconds.
        secs: u64,
    },
    /// The remote command printed more than anything the tool reads can be.
    #[error(
        "`{command}` on {vm} printed more than {limit_mib} MiB, far more than the tool ever reads from a VM; output cut off\n  The VM is misbehaving or compromised: look at it over SSH before trusting what it reports"
    )]
    TooMuchOutput {
        /// The VM.
        vm: String,
        /// The remote command line.
        command: String,
        /// The limit, in MiB.
        limit_mib: usize,
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
    /// The SSH socket directory is not safe to use.
    #[error(
        "refusing the SSH socket directory {dir}: it {problem}, so others could use or hijack your SSH connections to the VMs through it.\n  {hint}"
    )]
    ControlDir {
        /// The directory.
        dir: String,
        /// What is wrong with it.
        problem: String,
        /// What to do.
        hint: String,
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
    o(format!("ServerAliveInterval={}", KEEPALIVE.0));
    o(format!("ServerAliveCountMax={}", KEEPALIVE.1));
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
    ] {
        args.push("-o".to_string());
        args.push(o.to_string());
    }
    args.extend(key_args(opts));
    args.push(host(vm));
    args
}

/// The command line a user runs to forward `local_port` on their machine
/// to `remote` on `vm`, as this tool would reach it: the same ssh program
/// (`EXEDEV_K8S_SSH`, e.g. the emulator's stand-in), host-key alias and
/// key, so the printed line works when pasted. Words are shell-quoted.
pub fn forward_command_line(vm: &str, local_port: u16, remote: &str, opts: &SshOptions) -> String {
    let mut words = vec![
        program(),
        "-N".to_string(),
        "-L".to_string(),
        format!("{local_port}:{remote}"),
        "-o".to_string(),
        format!("HostKeyAlias={HOST_KEY_ALIAS}"),
    ];
    words.extend(key_args(opts));
    words.push(host(vm));
    words
        .iter()
        // Bare where plain, quoted otherwise; paths and env values hold no NUL.
        .map(|w| {
            crate::base::shellwords::quote(w)
                .unwrap_or_else(|_| crate::base::shellwords::single_quote(w))
        })
        .collect::<Vec<_>>()
        .join(" ")
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

/// Environment variables `ssh` may see: what it needs to find the user's
/// config, keys and agent, and to talk to a terminal in the user's
/// language. Everything else (exe.dev tokens, `EXE_DEV_SSH_KEY_PASSPHRASE`,
/// `TS_AUTHKEY`, `K3S_TOKEN`, cloud credentials...) stays in this process.
pub const CHILD_ENV: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "PATH",
    "SSH_AUTH_SOCK",
    "TERM",
    "LANG",
    "TMPDIR",
    "DISPLAY",
    "SSH_ASKPASS",
];

/// The part of `vars` that [`CHILD_ENV`] (and `LC_*`) lets through.
pub fn child_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| CHILD_ENV.contains(&k) || k.starts_with("LC_"))
        })
        .collect()
}

/// A `Command` for the ssh program with only [`child_env`] of ours, in a
/// process group of its own: a terminal's Ctrl-C (SIGINT to the
/// foreground process group) reaches this tool only, which decides what to
/// finish, instead of killing the ssh sessions that carry the changes in
/// flight (and the tunnel to the API). The tool still ends them itself:
/// each child is killed when its call is dropped.
fn ssh_command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear().envs(child_env(std::env::vars_os()));
    #[cfg(unix)]
    c.process_group(0);
    c
}

/// This process's effective user id.
#[cfg(unix)]
fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes sure `dir` is a directory only this user can enter: created 0700
/// when missing; refused when it is a symlink, not a directory, owned by
/// another user, or open to group or others. Never chmod-ed: a directory
/// someone else could open may already hold their sockets.
pub fn ensure_control_dir(dir: &Path) -> Result<(), SshError> {
    let shown = dir.display().to_string();
    let local = |what: &str, source| SshError::Local {
        what: format!("cannot {what} the SSH socket directory {shown}"),
        source,
    };
    let refuse = |problem: String, hint: String| SshError::ControlDir {
        dir: shown.clone(),
        problem,
        hint,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            match b.create(dir) {
                Ok(()) => {}
                // Created by someone else since: checked below like any other.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(local("create", e)),
            }
        }
        Err(e) => return Err(local("inspect", e)),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| local("inspect", e))?;
    let remove = format!(
        "If it is yours, remove it (`rm -r {shown}`) and run again; otherwise set TMPDIR to a directory only you can write"
    );
    if meta.file_type().is_symlink() {
        return Err(refuse("is a symbolic link".into(), remove));
    }
    if !meta.is_dir() {
        return Err(refuse("is not a directory".into(), remove));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = euid();
        if meta.uid() != me {
            return Err(refuse(
                format!("belongs to uid {}, not to you (uid {me})", meta.uid()),
                "Set TMPDIR to a directory only you can write, or have its owner remove it".into(),
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(refuse(
                format!("is open to other users (mode {mode:03o})"),
                format!("If nobody else uses it, `chmod 700 {shown}` or remove it, and run again"),
            ));
        }
    }
    Ok(())
}

/// Runs `remote_command` (words, quoted here for the remote shell) on `vm`
/// and returns its stdout. Connection failures (exit 255) are retried
/// `opts.retries` times with doubling pauses; any other failure is returned
/// at once, since re-running a command that ran is not ours to decide.
pub async fn run(vm: &str, remote_command: &[&str], opts: &SshOptions) -> Result<String, SshError> {
    run_with_input(vm, remote_command, None, opts).await
}

/// [`run`], with `input` written to the remote command's stdin (a script
/// for `bash -s`: what it holds never appears on a command line, where
/// other users of either machine could read it). A connection failure
/// before the command ran is retried like [`run`]'s.
pub async fn run_with_input(
    vm: &str,
    remote_command: &[&str],
    input: Option<&crate::base::secret::Secret>,
    opts: &SshOptions,
) -> Result<String, SshError> {
    let command = crate::base::shellwords::join(remote_command).map_err(|e| SshError::BadWord {
        word: remote_command.join(" "),
        reason: e.to_string(),
    })?;
    // Dropping the attempt on the deadline drops its child, which kills it.
    match tokio::time::timeout(opts.deadline, attempts(vm, &command, input, opts)).await {
        Ok(r) => r,
        Err(_) => Err(SshError::Deadline {
            vm: vm.to_string(),
            command,
            secs: opts.deadline.as_secs(),
        }),
    }
}

/// [`run_with_input`]'s attempts, unbounded in time (the caller bounds it).
async fn attempts(
    vm: &str,
    command: &str,
    input: Option<&crate::base::secret::Secret>,
    opts: &SshOptions,
) -> Result<String, SshError> {
    let command = command.to_string();
    ensure_control_dir(&opts.control_dir)?;
    let program = program();
    let mut args = ssh_args(vm, opts);
    args.push("--".to_string());
    args.push(command.clone());
    let mut delay = opts.retry_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut child = ssh_command(&program)
            .args(&args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SshError::Spawn {
                program: program.clone(),
                source,
            })?;
        let _live = Live::new(&child);
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            // A session that ends early closes stdin: its exit status says
            // why.
            let _ = stdin.write_all(text.expose().as_bytes()).await;
            drop(stdin);
        }
        let output = match bounded_output(child, MAX_OUTPUT_BYTES).await {
            Ok(Some(output)) => output,
            Ok(None) => {
                return Err(SshError::TooMuchOutput {
                    vm: vm.to_string(),
                    command,
                    limit_mib: MAX_OUTPUT_BYTES >> 20,
                });
            }
            Err(source) => {
                return Err(SshError::Spawn {
                    program: program.clone(),
                    source,
                });
            }
        };
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

/// The most a remote command may print on stdout. What the tool reads
/// over SSH is small: a bootstrap state file, a kubeconfig, `tailscale
/// status --json` (about 1 KiB per device of the tailnet), journal lines,
/// probe results; 16 MiB is far beyond any of them. A VM printing more is
/// broken or hostile (a 1 GB "state" took 2.9 GB of memory) and is cut off.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// The end of stderr kept (only its last line is ever shown).
const STDERR_TAIL_BYTES: usize = 64 << 10;

/// The child's output, reading stdout up to `limit` bytes and keeping the
/// last [`STDERR_TAIL_BYTES`] of stderr. None when stdout went past
/// `limit`: the child is killed then, not read further.
async fn bounded_output(
    mut child: Child,
    limit: usize,
) -> std::io::Result<Option<std::process::Output>> {
    use tokio::io::AsyncReadExt;
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let stdout = async {
        let mut buf = Vec::new();
        if let Some(p) = stdout_pipe {
            p.take(limit as u64 + 1).read_to_end(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let stderr = async {
        let mut tail = Vec::new();
        if let Some(mut p) = stderr_pipe {
            let mut chunk = vec![0u8; 8192];
            loop {
                let n = p.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
        }
        Ok::<_, std::io::Error>(tail)
    };
    // Past the limit, stop the child: its stderr then closes too.
    let stdout = async {
        let buf = stdout.await?;
        if buf.len() > limit {
            let _ = child.start_kill();
        }
        Ok::<_, std::io::Error>(buf)
    };
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    let (stdout, stderr) = (stdout?, stderr?);
    let status = child.wait().await?;
    if stdout.len() > limit {
        return Ok(None);
    }
    Ok(Some(std::process::Output {
        status,
        stdout,
        stderr,
    }))
}

/// A running `ssh -L` forward from `127.0.0.1:local_port`. Dropping it kills
/// the ssh process, closing the forward.
#[derive(Debug)]
pub struct Tunnel {
    /// The local port that forwards to the remote address.
    pub local_port: u16,
    /// The ssh process (killed on drop).
    pub child: Child,
    /// Listed for [`kill_all`] while it runs.
    _live: Live,
}

/// The ssh children running now, by pid (each leads its own process
/// group): what [`kill_all`] ends when the tool quits at once (a second
/// Ctrl-C exits without dropping them, and being out of the terminal's
/// process group they would outlive it; a tunnel would run forever).
static LIVE: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A child's place in [`LIVE`], left when dropped.
#[derive(Debug)]
struct Live(Option<u32>);

impl Live {
    fn new(child: &Child) -> Live {
        let pid = child.id();
        if let (Some(pid), Ok(mut live)) = (pid, LIVE.lock()) {
            live.insert(pid);
        }
        Live(pid)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let (Some(pid), Ok(mut live)) = (self.0, LIVE.lock()) {
            live.remove(&pid);
        }
    }
}

/// Sends SIGTERM to the process group of every ssh child still running
/// (sessions, tunnels): for a caller about to exit at once. Returns how
/// many there were.
pub fn kill_all() -> usize {
    let pids: Vec<u32> = LIVE
        .lock()
        .map(|l| l.iter().copied().collect())
        .unwrap_or_default();
    #[cfg(unix)]
    for pid in &pids {
        if let Ok(pgid) = i32::try_from(*pid) {
            // SAFETY: kill takes plain integers and touches no memory; a
            // group that is already gone is ESRCH, which is fine here.
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
        }
    }
    pids.len()
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
        let mut child = ssh_command(&program)
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
        let live = Live::new(&child);
        let deadline = tokio::time::Instant::now() + opts.connect_timeout + Duration::from_secs(5);
        // Asking the local port is cheap, and every command that tunnels
        // waits on it: look soon, then every 20 ms.
        let mut poll = Duration::from_millis(5);
        let exited = loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Tunnel {
                    local_port: port,
                    child,
                    _live: live,
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
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(20));
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
            deadline: Duration::from_secs(30),
        }
    }

    #[test]
    fn args_reuse_connections_and_name_the_vm_last() {
        let a = ssh_args("demo-cp1", &opts(None)).join(" ");
        assert_eq!(
            a,
            "-o HostKeyAlias=exe.dev -o BatchMode=yes -o ConnectTimeout=7 \
             -o ServerAliveInterval=5 -o ServerAliveCountMax=3 \
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
        assert!(a.contains("-o ServerAliveInterval=5"), "{a}");
        assert!(a.ends_with(" demo-cp1.exe.xyz"), "{a}");
    }

    #[test]
    fn the_printed_forward_pastes_as_one_command_per_word() {
        let line = forward_command_line(
            "demo-cp1",
            6443,
            "127.0.0.1:6443",
            &opts(Some("/home/me/my key's")),
        );
        let words = crate::base::shellwords::split(&line).expect("a shell line");
        let n = words.len();
        assert_eq!(
            &words[1..],
            [
                "-N",
                "-L",
                "6443:127.0.0.1:6443",
                "-o",
                "HostKeyAlias=exe.dev",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                "/home/me/my key's",
                "demo-cp1.exe.xyz"
            ],
            "{line}"
        );
        assert_eq!(n, 11, "{line}");
        assert!(line.contains("-i '/home/me/my key'\\''s' "), "{line}");
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
    fn the_child_environment_holds_nothing_secret() {
        let os = |k: &str, v: &str| (OsString::from(k), OsString::from(v));
        let env = child_env([
            os("HOME", "/home/me"),
            os("PATH", "/usr/bin"),
            os("SSH_AUTH_SOCK", "/tmp/agent"),
            os("LC_ALL", "C.UTF-8"),
            os("LANG", "C"),
            os("EXE_DEV_API_KEY", "exe0.secret"),
            os("EXE_DEV_SSH_KEY_PASSPHRASE", "hunter2"),
            os("TS_AUTHKEY", "tskey-auth-x"),
            os("K3S_TOKEN", "k3s-x"),
            os("AWS_SECRET_ACCESS_KEY", "aws-x"),
            os("LD_PRELOAD", "/tmp/evil.so"),
            os("SSH_ASKPASS", "/usr/bin/askpass"),
        ]);
        let keys: Vec<&str> = env.iter().filter_map(|(k, _)| k.to_str()).collect();
        assert_eq!(
            keys,
            [
                "HOME",
                "PATH",
                "SSH_AUTH_SOCK",
                "LC_ALL",
                "LANG",
                "SSH_ASKPASS"
            ]
        );
    }

    proptest::proptest! {
        /// Only listed names (and LC_*) pass, whatever else is set.
        #[test]
        fn nothing_unlisted_passes(name in "[A-Z_][A-Z0-9_]{0,20}") {
            let passed = !child_env([(OsString::from(&name), OsString::from("v"))]).is_empty();
            proptest::prop_assert_eq!(
                passed,
                CHILD_ENV.contains(&name.as_str()) || name.starts_with("LC_")
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_control_directory_is_ours_and_private_or_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        // Missing: created 0700; then accepted as it is.
        let dir = base.path().join("ctl");
        assert!(ensure_control_dir(&dir).is_ok());
        assert_eq!(mode(&dir), 0o700);
        assert!(ensure_control_dir(&dir).is_ok());
        // Open to others: refused, and left as it was (never chmod-ed).
        let open = base.path().join("open");
        let _ = std::fs::create_dir(&open);
        let _ = std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777));
        let e = ensure_control_dir(&open)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("open to other users (mode 777)"), "{e}");
        assert!(e.contains("chmod 700"), "{e}");
        assert_eq!(mode(&open), 0o777);
        // A symlink to a private directory: refused.
        let link = base.path().join("link");
        let _ = std::os::unix::fs::symlink(&dir, &link);
        let e = ensure_control_dir(&link)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("symbolic link"), "{e}");
        // A file: refused.
        let file = base.path().join("file");
        let _ = std::fs::write(&file, "");
        assert!(ensure_control_dir(&file).is_err());
        // Someone else's (needs root to arrange): refused, not taken over.
        if euid() == 0 {
            let theirs = base.path().join("theirs");
            let _ = std::fs::create_dir(&theirs);
            let _ = std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700));
            let _ = std::os::unix::fs::chown(&theirs, Some(4242), Some(4242));
            let e = ensure_control_dir(&theirs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("belongs to uid 4242, not to you (uid 0)"), "{e}");
            assert_eq!(mode(&theirs), 0o700);
        }
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
