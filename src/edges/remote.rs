//! What the tool does on fleet VMs over SSH besides fetching the kubeconfig:
//! read how far each VM's setup script got (one VM, or many with bounded
//! fan-out over reused connections), wait for a server's bootstrap to finish
//! (how the first apply orders servers before any API exists), and log a VM's
//! Tailscale device out before the VM is deleted; and, for `status`, each
//! VM's tailnet identity, the connections it can open to its peers, and
//! k3s's own journal when k3s refused to run. Every multi-VM read goes
//! through [`bounded`] (fan-out and a per-VM timeout).
//!
//! An edge: the state file's format and the command that reads it belong to
//! [`crate::core::bootstrap`], the tailnet probes' to [`crate::core::tailnet_check`];
//! this module only runs them through [`crate::edges::ssh`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::core::bootstrap::{
    BootstrapPhase, BootstrapReport, format_log, k3s_journal_command, k3s_reason, report_command,
};
use crate::core::tailnet_check;
use crate::edges::ssh::{self, SshError, SshOptions};

/// Log lines shown with a failed bootstrap.
pub const LOG_LINES: usize = 12;

/// Reads `vm`'s bootstrap state and the last [`LOG_LINES`] lines of its log.
pub async fn read_report(vm: &str, opts: &SshOptions) -> Result<BootstrapReport, SshError> {
    let words = report_command(LOG_LINES);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let out = ssh::run(vm, &words, opts).await?;
    Ok(BootstrapReport::parse(&out))
}

/// [`read_report`] for many VMs, at most `fanout` at once, each bounded by
/// `per_vm`. Results come back in `vms` order; an error is a sentence.
pub async fn read_reports(
    vms: &[String],
    opts: &SshOptions,
    fanout: usize,
    per_vm: Duration,
) -> Vec<(String, Result<BootstrapReport, String>)> {
    let opts = opts.clone();
    let results = bounded(vms.to_vec(), fanout, per_vm, move |vm| {
        let opts = opts.clone();
        async move {
            read_report(&vm, &opts)
                .await
                .map_err(|e| first_line(&e.to_string()))
        }
    })
    .await;
    vms.iter().cloned().zip(results).collect()
}

/// Runs `work` on every item, at most `fanout` at once (the SSH fan-out
/// every multi-VM read here goes through), each bounded by `per_item`.
/// Results come back in `items` order; one that did not finish in time is
/// `Err("no answer over SSH within Ns")`.
pub async fn bounded<T, R, F, Fut>(
    items: Vec<T>,
    fanout: usize,
    per_item: Duration,
    work: F,
) -> Vec<Result<R, String>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R, String>> + Send + 'static,
{
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(fanout.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let limit = limit.clone();
        let fut = work(item);
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let r = match tokio::time::timeout(per_item, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer over SSH within {}s",
                    per_item.as_secs_f64()
                )),
            };
            (i, r)
        });
    }
    let mut results: Vec<Result<R, String>> = (0..n).map(|_| Err("not read".to_string())).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = r;
        }
    }
    results
}

/// Runs `words` on `vm`: its output, or the first line of why not.
async fn run_line(vm: String, words: Vec<String>, opts: SshOptions) -> Result<String, String> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    ssh::run(&vm, &words, &opts)
        .await
        .map_err(|e| first_line(&e.to_string()))
}

/// Each VM's tailnet identity (`tailscale status --json`: its claim and its
/// tailnet map's records of the others), bounded as [`bounded`].
pub async fn read_tailnet_identities(
    vms: &[String],
    opts: &SshOptions,
    fanout: usize,
    per_vm: Duration,
) -> Vec<(String, Result<tailnet_check::Identity, String>)> {
    let opts = opts.clone();
    let results = bounded(vms.to_vec(), fanout, per_vm, move |vm| {
        let opts = opts.clone();
        async move {
            let out = run_line(vm, tailnet_check::identity_command(), opts).await?;
            tailnet_check::parse_identity(&out)
        }
    })
    .await;
    vms.iter().cloned().zip(results).collect()
}

/// Tries, from each VM, the connections [`tailnet_check::probes`] lists
/// (one SSH command per VM, its connections at once), bounded as
/// [`bounded`]. Per source VM: the command's output, or why it failed.
pub async fn run_tailnet_probes(
    probes: &[tailnet_check::Probe],
    opts: &SshOptions,
    fanout: usize,
    per_vm: Duration,
) -> BTreeMap<String, Result<String, String>> {
    let mut by_vm: BTreeMap<String, Vec<(Ipv4Addr, u16)>> = BTreeMap::new();
    for p in probes {
        by_vm
            .entry(p.from.clone())
            .or_default()
            .push((p.ip, p.port));
    }
    let jobs: Vec<(String, Vec<(Ipv4Addr, u16)>)> = by_vm.into_iter().collect();
    let names: Vec<String> = jobs.iter().map(|(vm, _)| vm.clone()).collect();
    let opts = opts.clone();
    let results = bounded(jobs, fanout, per_vm, move |(vm, targets)| {
        run_line(vm, tailnet_check::probe_command(&targets), opts.clone())
    })
    .await;
    names.into_iter().zip(results).collect()
}

/// k3s's own reason for failing on each `(vm, is_server)`, from its unit's
/// journal; VMs whose journal says nothing clear (or cannot be read) are
/// left out.
pub async fn read_k3s_reasons(
    vms: Vec<(String, bool)>,
    opts: &SshOptions,
    fanout: usize,
    per_vm: Duration,
) -> BTreeMap<String, String> {
    let names: Vec<String> = vms.iter().map(|(vm, _)| vm.clone()).collect();
    let opts = opts.clone();
    let results = bounded(vms, fanout, per_vm, move |(vm, server)| {
        run_line(
            vm,
            k3s_journal_command(server, K3S_JOURNAL_LINES),
            opts.clone(),
        )
    })
    .await;
    names
        .into_iter()
        .zip(results)
        .filter_map(|(vm, r)| Some((vm, k3s_reason(&r.ok()?)?)))
        .collect()
}

/// Journal lines read to find k3s's reason.
pub const K3S_JOURNAL_LINES: usize = 60;

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// Why a server's bootstrap did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapWaitError {
    /// The script recorded a failure.
    #[error(
        "the setup script of {vm} failed at step {step:?}{log}\n  Fix the cause, then re-run the script on the VM (`ssh {vm}.exe.xyz sudo -u exedev /exe.dev/setup`) or replace the VM; `exedev-k8s status` shows every VM's step"
    )]
    Failed {
        /// The VM.
        vm: String,
        /// The step that failed.
        step: String,
        /// The last log lines, formatted (empty when none).
        log: String,
    },
    /// SSH itself cannot work (no ssh program, key refused, host key
    /// mismatch): waiting would not help.
    #[error("cannot read the bootstrap state of {vm}: {reason}")]
    Ssh {
        /// The VM.
        vm: String,
        /// The SSH error, with what to do.
        reason: String,
    },
    /// The deadline passed.
    #[error(
        "the setup script of {vm} did not finish within {waited}s (last seen: {last}); check it with `exedev-k8s status` or on the VM in /var/log/exedev-k8s-bootstrap.log"
    )]
    Timeout {
        /// The VM.
        vm: String,
        /// Seconds waited.
        waited: u64,
        /// The last state or SSH error seen.
        last: String,
    },
}

/// Polls `vm`'s bootstrap state until `done` (Ok), `failed` (Err with the
/// step and log lines) or `timeout`. SSH failures count as "not yet": a VM
/// that was just created may not accept connections for a while. Each new
/// state is passed to `on_change` (e.g. `running (join the tailnet)`).
pub async fn wait_bootstrapped(
    vm: &str,
    opts: &SshOptions,
    timeout: Duration,
    poll: Duration,
    on_change: impl Fn(&str),
) -> Result<(), BootstrapWaitError> {
    let start = tokio::time::Instant::now();
    let mut last = String::from("nothing yet");
    // Quick first looks, then every `poll`: a short bootstrap is seen
    // done at once, a long one costs no more SSH calls than before.
    let mut delay = poll.min(Duration::from_millis(250));
    loop {
        // Each read ends by the overall deadline too: a VM whose SSH never
        // answers cannot hold the wait past `timeout`.
        let left = timeout.saturating_sub(start.elapsed());
        let read_opts = SshOptions {
            deadline: opts.deadline.min(left).max(Duration::from_secs(1)),
            ..opts.clone()
        };
        let seen = match read_report(vm, &read_opts).await {
            Ok(r) => match r.phase {
                BootstrapPhase::Done => return Ok(()),
                BootstrapPhase::Failed { step } => {
                    return Err(BootstrapWaitError::Failed {
                        vm: vm.to_string(),
                        step,
                        log: format_log(&r.log_tail),
                    });
                }
                other => format!("bootstrap {}", other.summary()),
            },
            Err(e) if ssh_cannot_work(&e) => {
                return Err(BootstrapWaitError::Ssh {
                    vm: vm.to_string(),
                    reason: e.to_string(),
                });
            }
            Err(e) => format!("cannot SSH yet: {}", first_line(&e.to_string())),
        };
        if seen != last {
            on_change(&seen);
            last = seen;
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(BootstrapWaitError::Timeout {
                vm: vm.to_string(),
                waited: waited.as_secs(),
                last,
            });
        }
        tokio::time::sleep(delay.min(timeout - waited)).await;
        delay = delay.mul_f64(1.5).min(poll);
    }
}

/// SSH failures no amount of waiting fixes: a VM that is still booting
/// refuses or drops connections, it does not reject the key. The same for
/// a session the emulator's VM world could not sandbox (the read we send
/// is a `cat`, which never runs bubblewrap itself: a `bwrap:` line is the
/// session's own setup failing, e.g. a VM root that does not exist).
fn ssh_cannot_work(e: &SshError) -> bool {
    match e {
        SshError::Spawn { .. } | SshError::BadWord { .. } | SshError::Local { .. } => true,
        SshError::Remote { stderr, .. } => stderr.starts_with("bwrap: "),
        SshError::Connect { stderr, .. } => {
            stderr.contains("Permission denied")
                || stderr.contains("Host key verification failed")
                || stderr.contains("IDENTIFICATION HAS CHANGED")
        }
        _ => false,
    }
}

/// Why `tailscale logout` over SSH did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    /// ssh or the remote command failed: the first line of what it said.
    #[error("{0}")]
    Ssh(String),
    /// Nothing came back in time.
    #[error("no answer over SSH within {0}s")]
    Timeout(u64),
}

/// Runs `sudo -n tailscale logout` on `vm`, bounded by `timeout`: the device
/// leaves the tailnet and its name is free again. The Ok value says what
/// happened, for the progress output.
pub async fn tailscale_logout(
    vm: &str,
    opts: &SshOptions,
    timeout: Duration,
) -> Result<String, LogoutError> {
    match tokio::time::timeout(
        timeout,
        ssh::run(vm, &["sudo", "-n", "tailscale", "logout"], opts),
    )
    .await
    {
        Ok(Ok(_)) => Ok("Tailscale device logged out".to_string()),
        Ok(Err(e)) => Err(LogoutError::Ssh(first_line(&e.to_string()))),
        Err(_) => Err(LogoutError::Timeout(timeout.as_secs())),
    }
}

/// SSH options for quick, bounded calls that a caller retries itself (or
/// does not need to): one retry, a short connect timeout, connections
/// reused through the usual master, and [`QUICK_DEADLINE`] per call.
pub fn quick(mut opts: SshOptions) -> SshOptions {
    opts.retries = 1;
    opts.retry_delay = Duration::from_millis(500);
    opts.connect_timeout = Duration::from_secs(10);
    opts.deadline = QUICK_DEADLINE;
    opts
}

/// The most one quick read (a state file, a logout) may take: a VM that
/// takes longer is reported as not answering, and a polling caller asks
/// again.
pub const QUICK_DEADLINE: Duration = Duration::from_secs(30);

/// What `restore` reads from one running server before it changes
/// anything: k3s's snapshot list (`k3s etcd-snapshot ls -o json`, this
/// node's local snapshots and, with S3 settings, the bucket's: it fails
/// when S3 cannot be reached or refuses the keys) and whether its
/// config.yaml sets `server:` (k3s refuses `--cluster-reset` then).
pub async fn read_restore_facts(vm: &str, opts: &SshOptions) -> Result<(String, bool), SshError> {
    let ls = crate::core::snapshot::ls_command();
    let ls: Vec<&str> = ls.iter().map(String::as_str).collect();
    let listing = ssh::run(vm, &ls, opts).await?;
    // `grep -c` prints the count and exits 1 on none: the count is the answer.
    let joined = ssh::run(
        vm,
        &[
            "sudo",
            "-n",
            "sh",
            "-c",
            "grep -c '^server:' /etc/rancher/k3s/config.yaml || true",
        ],
        opts,
    )
    .await?;
    Ok((listing, joined.trim() != "0" && !joined.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The fan-out holds (never more than `fanout` at once, and it is
    /// used), a slow VM is cut off at `per_item` with a sentence, results
    /// keep their order. On tokio's paused clock: nothing here waits.
    #[tokio::test(start_paused = true)]
    async fn reads_are_bounded_in_fanout_and_time() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (r, p, st) = (running.clone(), peak.clone(), started.clone());
        let results = bounded((0..20u32).collect(), 3, Duration::from_secs(20), move |i| {
            let (r, p, st) = (r.clone(), p.clone(), st.clone());
            async move {
                st.fetch_add(1, Ordering::SeqCst);
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                // VM 7 never answers; the others take a while.
                let d = if i == 7 { 3600 } else { 1 + u64::from(i % 4) };
                tokio::time::sleep(Duration::from_secs(d)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<u32, String>(i * 10)
            }
        })
        .await;
        assert_eq!(
            peak.load(Ordering::SeqCst),
            3,
            "at most 3 at once, and 3 used"
        );
        assert_eq!(started.load(Ordering::SeqCst), 20);
        for (i, r) in results.iter().enumerate() {
            if i == 7 {
                assert_eq!(r.as_ref().unwrap_err(), "no answer over SSH within 20s");
            } else {
                assert_eq!(r.as_ref().unwrap(), &(i as u32 * 10));
            }
        }
    }

    /// A fan-out of 0 still makes progress (one at a time).
    #[tokio::test(start_paused = true)]
    async fn a_zero_fanout_means_one() {
        let results = bounded(vec![1, 2], 0, Duration::from_secs(1), |i| async move {
            Ok::<i32, String>(i)
        })
        .await;
        assert_eq!(results, [Ok(1), Ok(2)]);
    }

    #[test]
    fn only_refusals_stop_the_wait() {
        let connect = |stderr: &str| SshError::Connect {
            vm: "v".into(),
            attempts: 2,
            stderr: stderr.into(),
        };
        assert!(ssh_cannot_work(&connect(
            "exedev@v.exe.xyz: Permission denied (publickey)."
        )));
        assert!(ssh_cannot_work(&connect("Host key verification failed.")));
        assert!(!ssh_cannot_work(&connect(
            "Connection closed by 1.2.3.4 port 22"
        )));
        assert!(!ssh_cannot_work(&connect(
            "Connection timed out during banner exchange"
        )));
        assert!(!ssh_cannot_work(&SshError::Remote {
            vm: "v".into(),
            command: "sh".into(),
            code: 1,
            stderr: String::new(),
        }));
        assert!(ssh_cannot_work(&SshError::Remote {
            vm: "v".into(),
            command: "sh".into(),
            code: 1,
            stderr: "bwrap: Can't find source path emu.json.world/vms/v/root/etc: No such file or directory".into(),
        }));
    }
}
