//! How an operation reaches the fleet's Kubernetes API, what a plan reads
//! there (each Node's release, labels and taints), and (`--wait`) waiting
//! for every node and fixing drifted labels and taints. What apply does on
//! a node through the API is [`super::hooks`]'.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::fleet::{DesiredVm, Fleet};
use crate::core::plan;
use crate::edges::kubeaccess::{KubeAccessError, LazyClient};

use super::{EngineError, Notes, Session};

/// How to reach the cluster's Kubernetes API.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// A kubeconfig the user brings (its credential plugins run, as kubectl
    /// would run them); default: the one stored under `.exedev-k8s/<fleet>/`.
    pub kubeconfig: Option<PathBuf>,
    /// Reach the API through an SSH tunnel to a server.
    pub via_ssh_tunnel: bool,
    /// Never reach it through an SSH tunnel (without either flag: a tunnel
    /// when this machine is not on the tailnet).
    pub no_ssh_tunnel: bool,
    /// The SSH key for VMs (and for the tunnel).
    pub ssh_key: Option<PathBuf>,
    /// How long to wait for the API's first answer (`--api-timeout`;
    /// `None`: [`crate::edges::kubeaccess::CONNECT_TIMEOUT`]).
    pub api_timeout: Option<Duration>,
}

impl KubeSettings {
    fn ssh(&self) -> crate::edges::ssh::SshOptions {
        crate::edges::ssh::SshOptions::new(self.ssh_key.clone())
    }
}

/// The API through server `via` (default: the first server), connecting on
/// first use. Nothing is contacted yet.
pub fn lazy(s: &Session, via: Option<&str>) -> LazyClient {
    let first = crate::edges::kubeaccess::first_server(&s.fleet);
    let client = LazyClient::new(
        &s.fleet,
        &s.dir,
        s.kube.kubeconfig.as_deref(),
        match (s.kube.via_ssh_tunnel, s.kube.no_ssh_tunnel) {
            (true, _) => crate::edges::kubeaccess::Route::Tunnel,
            (false, true) => crate::edges::kubeaccess::Route::Direct,
            (false, false) => crate::edges::kubeaccess::Route::Auto,
        },
        via.unwrap_or(&first),
        &s.kube.ssh(),
    );
    match s.kube.api_timeout {
        Some(t) => client.connect_timeout(t),
        None => client,
    }
}

/// The credential plugins of a kubeconfig the user brings, which will run
/// on this machine: the caller warns about them.
pub fn user_kubeconfig_plugins(settings: &KubeSettings) -> Vec<String> {
    settings
        .kubeconfig
        .as_deref()
        .map(|path| {
            let raw = std::fs::read_to_string(path).unwrap_or_default();
            crate::edges::cluster::credential_plugins(&raw)
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
    /// No server VM of the fleet runs: nothing serves the API, and trying
    /// (a tunnel through a VM that is gone, an address nobody holds) only
    /// costs the connection's timeouts.
    #[error("no server VM of the fleet is running")]
    NoServer,
}

/// The API client now. Without `fetch`, only a kubeconfig at hand is used
/// (Err says why not, for a plan's warning); with it, a missing one is
/// fetched over SSH.
pub async fn now(s: &Session, lazy: &LazyClient, fetch: bool) -> Result<kube::Client, Unreachable> {
    let stored = crate::edges::kubeaccess::kubeconfig_path(&s.dir, &s.fleet.name);
    if !fetch && s.kube.kubeconfig.is_none() && !stored.exists() {
        return Err(Unreachable::NoKubeconfig {
            stored,
            fleet: s.path.clone(),
        });
    }
    Ok(lazy.get().await?)
}

/// [`now`], except that when no server VM of the fleet runs (`serving`
/// false) and the user gave no kubeconfig of their own, it does not try:
/// the stored kubeconfig (or a fetch) goes through a server that is gone,
/// and trying cost a restore with every server gone ~14 s of timeouts
/// before it could create the first one (`cargo bench --bench world --
/// "every server VM gone"`). Without a kubeconfig at all it says so, as
/// [`now`] does.
pub async fn now_served(
    s: &Session,
    lazy: &LazyClient,
    fetch: bool,
    serving: bool,
) -> Result<kube::Client, Unreachable> {
    let stored = crate::edges::kubeaccess::kubeconfig_path(&s.dir, &s.fleet.name);
    let tries = fetch || stored.exists();
    if !serving && s.kube.kubeconfig.is_none() && tries {
        return Err(Unreachable::NoServer);
    }
    now(s, lazy, fetch).await
}

/// What [`converge`] found and did: the nodes it waited for and the label
/// or taint drift it corrected (VM, taints it removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converged {
    pub nodes: usize,
    pub corrected: Vec<(String, Vec<String>)>,
    /// Objects of the fleet's `manifests:` applied.
    pub applied: usize,
}

impl std::fmt::Display for Converged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (vm, removed) in &self.corrected {
            write!(f, "corrected labels/taints of {vm}")?;
            if !removed.is_empty() {
                write!(
                    f,
                    " (removed taints: {})",
                    crate::base::text::one_line(&removed.join(", "))
                )?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "All {} nodes Ready with the fleet's labels and taints; manifests present.",
            self.nodes
        )?;
        if self.applied > 0 {
            write!(
                f,
                "\nApplied {} object(s) of the fleet's manifests (server-side apply).",
                self.applied
            )?;
        }
        Ok(())
    }
}

/// What the plan needs from the Nodes, when the API answers (`None`: it
/// does not; the plan then reads releases from the VMs' comments and does
/// not compare labels and taints).
pub async fn observe_nodes(
    kube: &Result<kube::Client, Unreachable>,
) -> Option<BTreeMap<String, plan::NodeFacts>> {
    let client = kube.as_ref().ok()?;
    let nodes = crate::edges::cluster::list_nodes(client).await.ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(
        nodes
            .into_iter()
            .map(|n| {
                (
                    n.name.clone(),
                    plan::NodeFacts {
                        not_ready_secs: not_ready_secs(n.ready, n.ready_since, now),
                        version: n.kubelet_version,
                        labels: n.labels,
                        taints: n.taints,
                    },
                )
            })
            .collect(),
    )
}

/// For how long a Node has not been Ready, by this machine's clock
/// against its `Ready` condition's `lastTransitionTime` (`None`: Ready,
/// or no time recorded). A clock behind the API server's reads as 0.
fn not_ready_secs(ready: bool, since: Option<i64>, now: u64) -> Option<u64> {
    if ready {
        return None;
    }
    let since = u64::try_from(since?).unwrap_or(0);
    Some(now.saturating_sub(since))
}

/// Waits until every VM of `desired` (the fleet placed on what exe.dev
/// holds: [`super::placed`]) is a Ready node, corrects label and taint
/// drift by server-side apply, and checks that the bundled manifests'
/// objects exist. Progress goes to `notes`; the result is returned, for the
/// caller to render.
pub async fn converge(
    client: &kube::Client,
    fleet: &Fleet,
    desired: &[DesiredVm],
    manifests: &[serde_json::Value],
    timeout: Duration,
    notes: &Notes,
) -> Result<Converged, EngineError> {
    // Said when the count changes, not at every look.
    let last = std::cell::Cell::new(usize::MAX);
    let progress = |r: &crate::edges::cluster::Readiness| {
        if last.replace(r.ready_count()) != r.ready_count() {
            notes(&format!(
                "  {}/{} nodes Ready",
                r.ready_count(),
                desired.len()
            ));
        }
    };
    // One LIST of Nodes a second: the end of `apply --wait` is the end of
    // the critical path, and a slower poll is time the user waits for.
    let readiness = crate::edges::cluster::wait_ready(
        client,
        desired,
        timeout,
        Duration::from_secs(1),
        progress,
    )
    .await?;
    let mut corrected = Vec::new();
    for n in readiness.drifted() {
        if let Some(vm) = desired.iter().find(|d| d.name == n.name) {
            let removed = crate::edges::cluster::apply_labels_taints(client, vm).await?;
            corrected.push((n.name.clone(), removed));
        }
    }
    // The manifests the first server auto-applies (manifests/) must show up.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = crate::edges::kubeaccess::verify_manifests(client).await?;
        if missing.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let first = crate::edges::kubeaccess::first_server(fleet);
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
    // What the cluster serves, once there are nodes to run it.
    let applied = crate::edges::cluster::apply_objects(client, manifests).await?;
    Ok(Converged {
        nodes: desired.len(),
        corrected,
        applied,
    })
}

#[cfg(test)]
mod tests {
    use super::not_ready_secs;

    /// How long a Node has not been Ready, from its condition's last
    /// transition; a Ready node, or one with no time, has no such span.
    #[test]
    fn not_ready_spans_come_from_the_last_transition() {
        assert_eq!(not_ready_secs(false, Some(1_000), 1_400), Some(400));
        assert_eq!(not_ready_secs(true, Some(1_000), 1_400), None);
        assert_eq!(not_ready_secs(false, None, 1_400), None);
        // This machine's clock behind the API server's: not negative.
        assert_eq!(not_ready_secs(false, Some(2_000), 1_400), Some(0));
    }
}
