//! An in-place change of one node, over SSH: the script
//! [`crate::core::bootstrap::render_change`] renders (a new k3s release through
//! the installer with `INSTALL_K3S_VERSION`, new arguments, then k3s
//! restarted and waited for) runs as the VM's `exedev` user with its text
//! on stdin, bounded in time.
//!
//! Why over SSH and not system-upgrade-controller `Plan`s (both are what
//! the facts file offers): it is the bootstrap's own code path (the same
//! installer run, the same bounded waits), it needs no controller in the
//! cluster and no image pulled from the internet, it is tested offline on
//! the emulator's VM world like the setup scripts, and apply keeps the
//! ordering (servers one at a time, drained first, Ready at the new release
//! before the next) instead of watching a controller do it.

use std::time::Duration;

use crate::base::secret::Secret;
use crate::edges::ssh::{self, SshError, SshOptions};

/// What runs on the VM: read the whole script from stdin first, then run it
/// with stdin from `/dev/null`. With plain `bash -s`, any command in the
/// script that reads its stdin (`sudo` relaying it, `kubectl`) would eat
/// the rest of the script. The script never appears on a command line
/// (`printf` is a builtin; `<(...)` hands it over on a pipe). Restore's
/// step scripts run the same way (`engine::restore`).
pub const RUNNER: &str = r#"script=$(cat) && exec bash <(printf '%s
' "$script") </dev/null"#;

/// Why an in-place change over SSH failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The script ran and failed: the step it names (its last line).
    #[error("the in-place change failed on {vm} (exit code {code}): {stderr}")]
    Failed {
        vm: String,
        code: i32,
        stderr: String,
    },
    /// ssh itself failed.
    #[error(transparent)]
    Ssh(SshError),
    /// It did not finish in time.
    #[error("the in-place change of {vm} did not finish within {secs}s")]
    Timeout { vm: String, secs: u64 },
}

impl crate::base::hint::Hint for ChangeError {
    fn hint(&self) -> Option<String> {
        match self {
            ChangeError::Failed { .. } | ChangeError::Timeout { .. } => Some(format!(
                "its log is {} on the VM",
                crate::core::bootstrap::CHANGE_LOG_PATH
            )),
            ChangeError::Ssh(_) => None,
        }
    }
}

/// Runs `script` on `vm` ([`RUNNER`]), at most `timeout`. Ok says what was
/// done; Err names the step that failed (the script's last line), its hint
/// where the log is.
pub async fn change_node(
    vm: &str,
    script: &Secret,
    opts: &SshOptions,
    timeout: Duration,
) -> Result<String, ChangeError> {
    // The SSH call's own deadline is the change's: the outer bound below
    // is the one that names the step.
    let opts = SshOptions {
        deadline: timeout + Duration::from_secs(5),
        ..opts.clone()
    };
    match tokio::time::timeout(
        timeout,
        ssh::run_with_input(vm, &["bash", "-c", RUNNER], Some(script), &opts),
    )
    .await
    {
        Ok(Ok(_)) => Ok("k3s changed and restarted over SSH".to_string()),
        Ok(Err(SshError::Remote { stderr, code, .. })) => Err(ChangeError::Failed {
            vm: vm.to_string(),
            code,
            stderr: crate::base::text::one_line(&stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(ChangeError::Ssh(e)),
        Err(_) => Err(ChangeError::Timeout {
            vm: vm.to_string(),
            secs: timeout.as_secs(),
        }),
    }
}
