//! Running a VM's setup script as exe.dev does: `/exe.dev/setup`, as user
//! `exedev`, after the VM booted (so after `new` returned), again at every
//! boot; only on exeuntu (other images have no unit to run it and ignore
//! it). Output goes to the journal (unit `exe.dev-setup`) and the last
//! lines are kept for `/_emulator/state`. A script running past the world's
//! timeout is killed and recorded as failed; a reboot kills it too.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::Inner;
use super::model::{LOG_TAIL_LINES, SETUP_UNIT};
use super::sandbox;

/// Exit code recorded for a script killed at the timeout (as `timeout(1)`).
pub const TIMED_OUT: i32 = 124;

fn record_line(inner: &Inner, vm: &str, boot: u64, line: String) {
    let mut m = inner.model();
    let Some(v) = m.vms.get_mut(vm).filter(|v| v.boot == boot) else {
        return;
    };
    if v.setup.log_tail.len() >= LOG_TAIL_LINES {
        v.setup.log_tail.remove(0);
    }
    v.setup.log_tail.push(line.clone());
    v.log(crate::world::now_ms(), SETUP_UNIT, "setup", line);
}

/// Runs the setup script of `vm` for boot `boot`, if it has one.
pub async fn run_setup(inner: Arc<Inner>, vm: String, boot: u64) {
    let root = inner.root(&vm);
    let runs = inner.model().vms.get(&vm).is_some_and(|v| v.runs_setup);
    if !runs || !root.exists("/exe.dev/setup") {
        return;
    }
    let Some(_permit) = inner.sandbox_permit().await else {
        return;
    };
    {
        let mut m = inner.model();
        let Some(v) = m.vms.get_mut(&vm).filter(|v| v.boot == boot) else {
            return;
        };
        v.setup.runs += 1;
        v.setup.running = true;
        v.setup.exit_code = None;
        v.setup.timed_out = false;
        v.setup.interrupted = false;
        v.setup.log_tail.clear();
        v.log(
            crate::world::now_ms(),
            SETUP_UNIT,
            "systemd",
            "Starting exe.dev-setup.service - exe.dev setup script...",
        );
    }
    let args = sandbox::bwrap_args(
        &root,
        &inner.config.standin_binary,
        &inner.shim_dir(),
        &vm,
        false,
        &["/exe.dev/setup".to_string()],
    );
    let child = Command::new("bwrap")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            record_line(
                &inner,
                &vm,
                boot,
                format!("exe.dev-setup: cannot start the sandbox: {e}"),
            );
            finish(&inner, &vm, boot, Some(1), false);
            return;
        }
    };
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let (inner, vm) = (inner.clone(), vm.clone());
        pumps.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                record_line(&inner, &vm, boot, l);
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let (inner, vm) = (inner.clone(), vm.clone());
        pumps.push(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                record_line(&inner, &vm, boot, l);
            }
        }));
    }
    let waited = tokio::time::timeout(inner.config.script_timeout, child.wait()).await;
    let (code, timed_out) = match waited {
        Ok(Ok(status)) => (Some(super::standin::init::exit_code(status)), false),
        Ok(Err(_)) => (None, false),
        Err(_) => {
            let _ = child.kill().await;
            (Some(TIMED_OUT), true)
        }
    };
    for p in pumps {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), p).await;
    }
    if timed_out {
        record_line(
            &inner,
            &vm,
            boot,
            format!(
                "exe.dev-setup: killed after {} s (the world's script timeout)",
                inner.config.script_timeout.as_secs_f64()
            ),
        );
    }
    finish(&inner, &vm, boot, code, timed_out);
}

fn finish(inner: &Inner, vm: &str, boot: u64, code: Option<i32>, timed_out: bool) {
    let mut m = inner.model();
    let Some(v) = m.vms.get_mut(vm).filter(|v| v.boot == boot) else {
        return;
    };
    v.setup.running = false;
    v.setup.exit_code = code;
    v.setup.timed_out = timed_out;
    let msg = match code {
        Some(0) => "exe.dev-setup.service: Deactivated successfully.".to_string(),
        Some(c) => {
            format!("exe.dev-setup.service: Main process exited, code=exited, status={c}/FAILURE")
        }
        None => "exe.dev-setup.service: Main process was killed".to_string(),
    };
    v.log(crate::world::now_ms(), SETUP_UNIT, "systemd", msg);
}
