//! How an operation reaches the fleet's Kubernetes API and what it does
//! there on apply's behalf: drain and remove a node before its VM goes, wait
//! for a new server to be a ready member, log a device out of the tailnet,
//! and (`--wait`) wait for every node and fix drifted labels and taints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{self, HookError};
use crate::fleet::{self, Fleet};
use crate::kubeaccess::{KubeAccessError, LazyClient};

use super::{EngineError, Notes, Session};

/// How to reach the cluster's Kubernetes API.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// A kubeconfig the user brings (its credential plugins run, as kubectl
    /// would run them); default: the one stored under `.exedev-k8s/<fleet>/`.
    pub kubeconfig: Option<PathBuf>,
    /// Reach the API through an SSH tunnel to a server.
    pub via_ssh_tunnel: bool,
    /// The SSH key for VMs (and for the tunnel).
    pub ssh_key: Option<PathBuf>,
}

impl KubeSettings {
    fn ssh(&self) -> crate::ssh::SshOptions {
        crate::ssh::SshOptions::new(self.ssh_key.clone())
    }
}

/// The API through server `via` (default: the first server), connecting on
/// first use. Nothing is contacted yet.
pub fn lazy(s: &Session, via: Option<&str>) -> LazyClient {
    let first = crate::kubeaccess::first_server(&s.fleet);
    LazyClient::new(
        &s.fleet,
        &s.dir,
        s.kube.kubeconfig.as_deref(),
        s.kube.via_ssh_tunnel,
        via.unwrap_or(&first),
        &s.kube.ssh(),
    )
}

/// The credential plugins of a kubeconfig the user brings, which will run
/// on this machine: the caller warns about them.
pub fn user_kubeconfig_plugins(settings: &KubeSettings) -> Vec<String> {
    settings
        .kubeconfig
        .as_deref()
        .map(|path| {
            let raw = std::fs::read_to_string(path).unwrap_or_default();
            crate::cluster::credential_plugins(&raw)
        })
        .unwrap_or_default()
}

/// Why the Kubernetes API cannot be used by this operation.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// No kubeconfig at hand, and this operation does not fetch one.
    #[error("no kubeconfig at {} (run `exedev-k8s kubeconfig -f {}` or pass --kubeconfig)", stored.display(), fleet.display())]
    NoKubeconfig { stored: PathBuf, fleet: PathBuf },
    /// Connecting failed.
    #[error(transparent)]
    Access(#[from] KubeAccessError),
    /// A teardown removes every VM: nothing to drain.
    #[error("destroy does not drain")]
    Teardown,
}

/// The API client now. Without `fetch`, only a kubeconfig at hand is used
/// (Err says why not, for a plan's warning); with it, a missing one is
/// fetched over SSH.
pub async fn now(s: &Session, lazy: &LazyClient, fetch: bool) -> Result<kube::Client, Unreachable> {
    let stored = crate::kubeaccess::kubeconfig_path(&s.dir, &s.fleet.name);
    if !fetch && s.kube.kubeconfig.is_none() && !stored.exists() {
        return Err(Unreachable::NoKubeconfig {
            stored,
            fleet: s.path.clone(),
        });
    }
    Ok(lazy.get().await?)
}

/// Drains and deletes a node before its VM is deleted or replaced.
pub fn remover(kube: Arc<LazyClient>, opts: crate::cluster::DrainOptions) -> apply::NodeRemover {
    Arc::new(move |vm: String| {
        let kube = kube.clone();
        Box::pin(async move {
            let client = kube.get().await.map_err(HookError::new)?;
            match crate::cluster::remove_node(&client, &vm, opts).await {
                Ok(crate::cluster::RemoveOutcome::Removed(r)) => Ok(format!(
                    "node removed ({} pods evicted, {} deleted)",
                    r.evicted.len(),
                    r.deleted.len()
                )),
                Ok(crate::cluster::RemoveOutcome::AlreadyGone) => Ok("no node to remove".into()),
                Err(e) => Err(HookError::new(e)),
            }
        })
    })
}

/// Waits until a server is a ready member: first its setup script's state
/// over SSH (works before any API exists: the first server of a new
/// cluster), `done` meaning k3s active and `/readyz` ok on the VM; then,
/// when the API is reachable, its Node Ready, with the fleet's labels the
/// kubelet could not set applied through the API.
pub fn server_waiter(
    kube: Arc<LazyClient>,
    fleet: &Fleet,
    ssh_key: Option<&Path>,
    timeout: Duration,
) -> apply::ServerReady {
    let desired = fleet::desired_vms(fleet);
    let ssh = crate::remote::quick(crate::ssh::SshOptions::new(ssh_key.map(Path::to_path_buf)));
    Arc::new(move |vm: String, steps: apply::StepSink| {
        let kube = kube.clone();
        let ssh = ssh.clone();
        let expected: Vec<_> = desired.iter().filter(|d| d.name == vm).cloned().collect();
        Box::pin(async move {
            let start = std::time::Instant::now();
            crate::remote::wait_bootstrapped(&vm, &ssh, timeout, Duration::from_secs(3), |s| {
                steps(s.to_string())
            })
            .await
            .map_err(HookError::new)?;
            steps("bootstrap done (k3s active, /readyz ok)".to_string());
            let client = match kube.get().await {
                Ok(c) => c,
                Err(why) => {
                    return Ok(format!(
                        "bootstrap done; the Kubernetes API is not reachable from here ({why}): relying on the VM's own readiness checks"
                    ));
                }
            };
            let left = timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_secs(30));
            let r = crate::cluster::wait_ready(
                &client,
                &expected,
                left,
                Duration::from_secs(3),
                |_| {},
            )
            .await
            .map_err(HookError::new)?;
            let mut outcome = "node Ready".to_string();
            for n in r.drifted() {
                if let Some(d) = expected.iter().find(|d| d.name == n.name) {
                    crate::cluster::apply_labels_taints(&client, d)
                        .await
                        .map_err(HookError::new)?;
                    outcome.push_str("; labels and taints applied through the API");
                }
            }
            Ok(outcome)
        })
    })
}

/// Logs each VM's Tailscale device out over SSH before its `rm`: bounded,
/// and its failure only reported.
pub fn device_logout(ssh_key: Option<&Path>) -> apply::DeviceLogout {
    let ssh = crate::remote::quick(crate::ssh::SshOptions::new(ssh_key.map(Path::to_path_buf)));
    Arc::new(move |vm: String| {
        let ssh = ssh.clone();
        Box::pin(async move {
            crate::remote::tailscale_logout(&vm, &ssh, Duration::from_secs(30))
                .await
                .map_err(HookError::new)
        })
    })
}

/// What [`converge`] found and did: the nodes it waited for and the label
/// or taint drift it corrected (VM, taints it removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converged {
    pub nodes: usize,
    pub corrected: Vec<(String, Vec<String>)>,
}

impl std::fmt::Display for Converged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (vm, removed) in &self.corrected {
            write!(f, "corrected labels/taints of {vm}")?;
            if !removed.is_empty() {
                write!(
                    f,
                    " (removed taints: {})",
                    crate::text::one_line(&removed.join(", "))
                )?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "All {} nodes Ready with the fleet's labels and taints; manifests present.",
            self.nodes
        )
    }
}

/// Waits until every VM of the fleet is a Ready node, corrects label and
/// taint drift by server-side apply, and checks that the bundled manifests'
/// objects exist. Progress goes to `notes`; the result is returned, for the
/// caller to render.
pub async fn converge(
    client: &kube::Client,
    fleet: &Fleet,
    timeout: Duration,
    notes: &Notes,
) -> Result<Converged, EngineError> {
    let desired = fleet::desired_vms(fleet);
    let progress = |r: &crate::cluster::Readiness| {
        notes(&format!(
            "  {}/{} nodes Ready",
            r.ready_count(),
            desired.len()
        ));
    };
    let readiness =
        crate::cluster::wait_ready(client, &desired, timeout, Duration::from_secs(5), progress)
            .await?;
    let mut corrected = Vec::new();
    for n in readiness.drifted() {
        if let Some(vm) = desired.iter().find(|d| d.name == n.name) {
            let removed = crate::cluster::apply_labels_taints(client, vm).await?;
            corrected.push((n.name.clone(), removed));
        }
    }
    // The manifests the first server auto-applies (manifests/) must show up.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = crate::kubeaccess::verify_manifests(client).await?;
        if missing.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let first = crate::kubeaccess::first_server(fleet);
            return Err(EngineError::refused(
                format!(
                    "the cluster lacks {} although every node is Ready",
                    missing.join(", ")
                ),
                format!(
                    "k3s applies /var/lib/rancher/k3s/server/manifests/ on {first} at start; check `journalctl -u k3s` there"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(Converged {
        nodes: desired.len(),
        corrected,
    })
}
