//! What the tool does on fleet VMs over SSH besides fetching the kubeconfig:
//! read how far each VM's setup script got (one VM, or many with bounded
//! fan-out over reused connections), wait for a server's bootstrap to finish
//! (how the first apply orders servers before any API exists), and log a VM's
//! Tailscale device out before the VM is deleted.
//!
//! An edge: the state file's format and the command that reads it belong to
//! [`crate::bootstrap`]; this module only runs them through [`crate::ssh`].

use std::time::Duration;

use crate::bootstrap::{BootstrapPhase, BootstrapReport, format_log, report_command};
use crate::ssh::{self, SshError, SshOptions};

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
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(fanout.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, vm) in vms.iter().enumerate() {
        let (vm, opts, limit) = (vm.clone(), opts.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let r = match tokio::time::timeout(per_vm, read_report(&vm, &opts)).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(first_line(&e.to_string())),
                Err(_) => Err(format!("no answer over SSH within {}s", per_vm.as_secs())),
            };
            (i, r)
        });
    }
    let mut results: Vec<Result<BootstrapReport, String>> =
        vms.iter().map(|_| Err("not read".to_string())).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = r;
        }
    }
    vms.iter().cloned().zip(results).collect()
}

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
        let seen = match read_report(vm, opts).await {
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
/// refuses or drops connections, it does not reject the key.
fn ssh_cannot_work(e: &SshError) -> bool {
    match e {
        SshError::Spawn { .. } | SshError::BadWord { .. } | SshError::Local { .. } => true,
        SshError::Connect { stderr, .. } => {
            stderr.contains("Permission denied")
                || stderr.contains("Host key verification failed")
                || stderr.contains("IDENTIFICATION HAS CHANGED")
        }
        _ => false,
    }
}

/// Runs `sudo -n tailscale logout` on `vm`, bounded by `timeout`: the device
/// leaves the tailnet and its name is free again. The Ok value says what
/// happened, for the progress output.
pub async fn tailscale_logout(
    vm: &str,
    opts: &SshOptions,
    timeout: Duration,
) -> Result<String, String> {
    match tokio::time::timeout(
        timeout,
        ssh::run(vm, &["sudo", "-n", "tailscale", "logout"], opts),
    )
    .await
    {
        Ok(Ok(_)) => Ok("Tailscale device logged out".to_string()),
        Ok(Err(e)) => Err(first_line(&e.to_string())),
        Err(_) => Err(format!("no answer over SSH within {}s", timeout.as_secs())),
    }
}

/// SSH options for quick, bounded calls that a caller retries itself (or
/// does not need to): one retry, a short connect timeout, connections
/// reused through the usual master.
pub fn quick(mut opts: SshOptions) -> SshOptions {
    opts.retries = 1;
    opts.retry_delay = Duration::from_millis(500);
    opts.connect_timeout = Duration::from_secs(10);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
