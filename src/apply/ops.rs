//! The operations apply does to a node through the Kubernetes API or SSH,
//! as one trait ([`NodeOps`]): every method has a default meaning
//! "nothing to do here" (`None`), as Terraform's `Hook`/`NilHook`, so an
//! implementation supplies only what it can do on this run and [`NilOps`]
//! does nothing at all. The engine's implementation is
//! `engine::hooks::EngineOps`; tests and benches use a small one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::base::secret::Secret;

/// A node operation under way; `Ok` says what was done (shown as a step).
pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<String, HookError>> + Send + 'a>>;

/// Receives progress lines of a long wait (shown as steps of the VM).
pub type StepSink = Arc<dyn Fn(String) + Send + Sync>;

/// What apply does to a node by name, each when this run can: `None`
/// (every default) is "nothing to do", and apply says so or goes on as its
/// step documents. Implementations must be bounded in time.
pub trait NodeOps: Send + Sync {
    /// Waits until a node just created, restarted or changed is Ready: its
    /// bootstrap done for this boot, then (when the API is reachable) its
    /// Node Ready, at `version` when given, with the fleet's labels.
    /// Servers change strictly one at a time on it (etcd joins one learner
    /// at a time; a restart must not overlap another).
    fn wait_ready<'a>(
        &'a self,
        vm: &'a str,
        version: Option<&'a str>,
        steps: StepSink,
    ) -> Option<Pending<'a>> {
        let _ = (vm, version, steps);
        None
    }

    /// Takes a node out of the cluster before its VM is deleted or
    /// replaced (cordon, drain, delete the Node and so its etcd member).
    /// Not done by destroy: nothing would be left to move pods to.
    fn remove<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        let _ = vm;
        None
    }

    /// Removes a lost server's dead etcd member by deleting its Node,
    /// without a drain (its kubelet is gone: evictions could not finish),
    /// and waits until the Node is gone: k3s holds a deleted etcd Node
    /// (its finalizer) until it has removed the member. Without it a lost
    /// server is not replaced ([`super::StepError::LostNeedsApi`]).
    fn forget<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        let _ = vm;
        None
    }

    /// Checks, before a lost server whose VM is gone is replaced, that no
    /// device on the tailnet still holds its name: the gone VM's device
    /// cannot be logged out, and a device holding the name makes the new
    /// one `<name>-1`, where its setup script stops. `Err` names the device
    /// and what to do; nothing has been changed then.
    fn name_free<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        let _ = vm;
        None
    }

    /// Cordons and drains a node before it restarts in place.
    fn drain<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        let _ = vm;
        None
    }

    /// Uncordons a node once it is Ready again after an in-place change.
    fn uncordon<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        let _ = vm;
        None
    }

    /// Sets the fleet's labels and taints on a node through the API.
    fn label<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        let _ = vm;
        None
    }

    /// Runs an in-place change script ([`crate::core::plan::spec::change_script`])
    /// on a node over SSH, bounded ([`crate::edges::upgrade::change_node`]). Without
    /// it an in-place k3s change fails ([`super::StepError::NeedsSsh`]).
    fn change<'a>(&'a self, vm: &'a str, script: Secret) -> Option<Pending<'a>> {
        let _ = (vm, script);
        None
    }

    /// Logs a VM's Tailscale device out before the VM is deleted, so its
    /// MagicDNS name is free for a replacement (otherwise the replacement
    /// becomes `<name>-1` and the old name points at a dead device). Its
    /// failure is reported, never fatal.
    fn logout<'a>(&'a self, vm: &'a str) -> Option<Pending<'a>> {
        let _ = vm;
        None
    }
}

/// Does nothing to any node: apply then only talks to exe.dev.
#[derive(Debug, Clone, Copy, Default)]
pub struct NilOps;

impl NodeOps for NilOps {}

/// Why a node operation (drain, readiness wait, change over SSH, device
/// logout) failed: the error of the edge that ran it (SSH, the Kubernetes
/// API), kept whole so its source chain and hint reach the user.
#[derive(Debug)]
pub struct HookError {
    inner: Box<dyn std::error::Error + Send + Sync>,
    hint: Option<String>,
}

impl HookError {
    /// Wraps an edge's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> HookError {
        HookError {
            inner: Box::new(e),
            hint: None,
        }
    }

    /// Wraps an error that says what to do.
    pub fn hinted(
        e: impl std::error::Error + crate::base::hint::Hint + Send + Sync + 'static,
    ) -> HookError {
        let hint = e.hint();
        HookError {
            inner: Box::new(e),
            hint,
        }
    }
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl crate::base::hint::Hint for HookError {
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}
