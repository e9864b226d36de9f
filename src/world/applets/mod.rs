//! The emulator's side of each stand-in: what `systemctl`, `journalctl`,
//! `tailscale`, `tailscaled`, `k3s`/`kubectl`, `logger` and `hostname` do
//! in a VM, over the world's model; what `curl` reaches ([`fetch`]); what
//! the k3s installer is ([`installer`]).

pub mod fetch;
pub mod installer;
pub mod journal;
pub mod k3s_cli;
pub mod systemctl;
pub mod tailscale;

use std::sync::Arc;

use super::Inner;
use super::protocol::{Call, Output};

/// Runs one stand-in call. Calls from a VM that is gone, or from a boot
/// that ended (a process that should be dead), are refused.
pub async fn call(inner: &Arc<Inner>, call: &Call) -> Output {
    let live = inner
        .model()
        .vms
        .get(&call.vm)
        .is_some_and(|v| v.up && v.boot == call.boot);
    if !live {
        return Output::fail(
            255,
            format!("{}: the VM has rebooted or is gone", call.command),
        );
    }
    match call.command.as_str() {
        "systemctl" => systemctl::run(inner, call).await,
        "journalctl" => journal::journalctl(inner, call),
        "logger" => journal::logger(inner, call),
        "hostname" => journal::hostname(inner, call),
        "getent" => journal::getent(inner, call),
        "tailscale" => tailscale::tailscale(inner, call).await,
        "tailscaled" => {
            inner.sync_tailscale_identity(&call.vm);
            tailscale::tailscaled(inner, call)
        }
        "k3s" | "kubectl" | "crictl" | "ctr" => k3s_cli::run(inner, call),
        other => Output::fail(127, format!("{other}: command not found")),
    }
}
