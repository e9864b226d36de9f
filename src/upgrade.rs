//! An in-place change of one node, over SSH: the script
//! [`crate::bootstrap::render_change`] renders (a new k3s release through
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

use crate::secret::Secret;
use crate::ssh::{self, SshError, SshOptions};

/// What runs on the VM: read the whole script from stdin first, then run it
/// with stdin from `/dev/null`. With plain `bash -s`, any command in the
/// script that reads its stdin (`sudo` relaying it, `kubectl`) would eat
/// the rest of the script. The script never appears on a command line
/// (`printf` is a builtin; `<(...)` hands it over on a pipe).
const RUNNER: &str = r#"script=$(cat) && exec bash <(printf '%s
' "$script") </dev/null"#;

/// Runs `script` on `vm` ([`RUNNER`]), at most `timeout`. Ok says what was
/// done; Err is a sentence with the step that failed (the script's last
/// line) and where its log is.
pub async fn change_node(
    vm: &str,
    script: &Secret,
    opts: &SshOptions,
    timeout: Duration,
) -> Result<String, String> {
    match tokio::time::timeout(
        timeout,
        ssh::run_with_input(vm, &["bash", "-c", RUNNER], Some(script), opts),
    )
    .await
    {
        Ok(Ok(_)) => Ok("k3s changed and restarted over SSH".to_string()),
        Ok(Err(SshError::Remote { stderr, code, .. })) => Err(format!(
            "the in-place change failed on {vm} (exit code {code}): {}; its log is {} on the VM",
            crate::text::one_line(&stderr),
            crate::bootstrap::CHANGE_LOG_PATH
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the in-place change of {vm} did not finish within {}s; see {} on the VM",
            timeout.as_secs(),
            crate::bootstrap::CHANGE_LOG_PATH
        )),
    }
}
