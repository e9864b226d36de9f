//! `status`: one table of the fleet's VMs on exe.dev, their bootstrap state
//! over SSH (with k3s's own reason when k3s refused to run), their Nodes in
//! the cluster and their HTTPS proxies; and, over the same SSH, whether the
//! tailnet lets the nodes reach each other on k3s's ports.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{EngineError, Notes, Session, kube};
use crate::core::bootstrap::{BootstrapPhase, is_k3s_step};
use crate::core::fleet;
use crate::core::plan;
use crate::core::tailnet_check;
use crate::edges::observe::observe;

/// What `status` looks at.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    /// Probe the VMs' HTTPS proxies.
    pub probe: bool,
    /// Read each VM's bootstrap state over SSH.
    pub ssh: bool,
    /// Wait this long for every node to be Ready (and fix drift) first.
    pub wait: Option<Duration>,
    /// The `/exec` endpoint: a non-default one (the emulator) also serves
    /// the VMs' proxies.
    pub endpoint: String,
}

/// Joins what exe.dev, the VMs and the cluster say into one status.
pub async fn status(
    s: &Session,
    req: &StatusRequest,
    notes: &Notes,
) -> Result<(crate::core::status::Status, Option<kube::Converged>), EngineError> {
    let observed = observe(&s.client, &s.fleet, true).await?;
    let desired = super::placed(&s.fleet, &observed);
    let lazy = kube::lazy(s, None);
    let client = kube::now(s, &lazy, req.wait.is_some()).await;
    let mut converged = None;
    if let Some(timeout) = req.wait {
        let c = client.as_ref().map_err(|why| {
            EngineError::refused(
                format!("cannot --wait: {why}"),
                "make the Kubernetes API reachable (join the tailnet, or pass --via-ssh-tunnel or --kubeconfig)",
            )
        })?;
        converged =
            Some(kube::converge(c, &s.fleet, &desired, &s.manifests, timeout, notes).await?);
    }
    let nodes = match &client {
        Ok(k) => Some(crate::edges::cluster::list_nodes(k).await?),
        Err(_) => None,
    };
    let readiness = nodes
        .as_ref()
        .map(|n| crate::edges::cluster::readiness(&desired, n));
    let probes = if req.probe {
        probe_proxies(s, req, &desired, &observed).await?
    } else {
        Vec::new()
    };
    // How far each running VM's setup script got, over SSH (bounded
    // fan-out, one reused connection per VM).
    let running: Vec<String> = observed
        .vms
        .iter()
        .filter(|v| plan::owned(&s.fleet.name, v) && v.is_running())
        .map(|v| v.vm_name.clone())
        .collect();
    let ssh =
        crate::edges::remote::quick(crate::edges::ssh::SshOptions::new(s.kube.ssh_key.clone()));
    let bootstrap: BTreeMap<_, _> = if req.ssh {
        crate::edges::remote::read_reports(&running, &ssh, SSH_FANOUT, SSH_PER_VM)
            .await
            .into_iter()
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut st = crate::core::status::join(&crate::core::status::Sides {
        cluster: &s.fleet.name,
        desired: &desired,
        vms: &observed.vms,
        shares: &observed.shares,
        nodes: nodes.as_deref().zip(readiness.as_ref()),
        probes: &probes,
        bootstrap: &bootstrap,
    });
    st.cluster_api_error = client.as_ref().err().map(ToString::to_string);
    // A pinned release is the fleet's; a channel is not looked up here (the
    // plan does that): the nodes must then at least agree.
    let pinned = match &s.fleet.k3s.release {
        fleet::K3sRelease::Version(r) => Some(r.to_string()),
        fleet::K3sRelease::Channel(_) => None,
    };
    st.add_release_check(pinned.as_deref());
    if req.ssh {
        let server = |vm: &str| {
            desired
                .iter()
                .find(|d| d.name == vm)
                .is_some_and(|d| d.role == fleet::Role::Server)
        };
        add_k3s_reasons(&mut st, &bootstrap, &server, &ssh).await;
        let ours: Vec<String> = running
            .iter()
            .filter(|vm| desired.iter().any(|d| &d.name == *vm))
            .cloned()
            .collect();
        add_tailnet_check(&mut st, &ours, &server, &ssh).await;
    }
    Ok((st, converged))
}

/// Where `vm`'s HTTPS proxy is: exe.dev's own, or, with a non-default
/// `/exec` endpoint (the emulator), that endpoint's stand-in for it.
pub(super) fn proxy_target(
    vm: &str,
    public: bool,
    endpoint: &str,
) -> crate::edges::probe::ProbeTarget {
    if endpoint == crate::edges::client::DEFAULT_ENDPOINT {
        crate::edges::probe::ProbeTarget::new(vm, public)
    } else {
        let base = endpoint.trim_end_matches('/').trim_end_matches("/exec");
        crate::edges::probe::ProbeTarget::emulated(vm, public, base)
    }
}

/// The fleet's HTTPS proxies probed: the emulator (a non-default endpoint)
/// serves them too, under its own address.
async fn probe_proxies(
    s: &Session,
    req: &StatusRequest,
    desired: &[fleet::DesiredVm],
    observed: &plan::Observed,
) -> Result<Vec<crate::edges::probe::ProbeResult>, EngineError> {
    let targets: Vec<crate::edges::probe::ProbeTarget> = desired
        .iter()
        .filter_map(|d| d.share.map(|sh| (d, sh)))
        .filter(|(d, _)| observed.vms.iter().any(|v| v.vm_name == d.name))
        .map(|(d, sh)| proxy_target(&d.name, sh.public, &req.endpoint))
        .collect();
    let key = match &s.kube.ssh_key {
        Some(k) => Some(crate::edges::credentials::load_private_key(k)?),
        None => None,
    };
    Ok(crate::edges::probe::probe_all(&targets, key.as_ref(), 8).await)
}

/// k3s's own word where the bootstrap failed while k3s ran.
async fn add_k3s_reasons(
    st: &mut crate::core::status::Status,
    bootstrap: &BTreeMap<String, Result<crate::core::bootstrap::BootstrapReport, String>>,
    server: &dyn Fn(&str) -> bool,
    ssh: &crate::edges::ssh::SshOptions,
) {
    let refused: Vec<(String, bool)> = bootstrap
        .iter()
        .filter_map(|(vm, r)| match &r.as_ref().ok()?.phase {
            BootstrapPhase::Failed { step } if is_k3s_step(step) => Some((vm.clone(), server(vm))),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        let reasons =
            crate::edges::remote::read_k3s_reasons(refused, ssh, SSH_FANOUT, SSH_PER_VM).await;
        st.add_k3s_reasons(&reasons);
    }
}

/// Whether the tailnet lets the fleet's running VMs (`ours`) reach each
/// other, between the nodes whose identity the tailnet's records confirm.
async fn add_tailnet_check(
    st: &mut crate::core::status::Status,
    ours: &[String],
    server: &dyn Fn(&str) -> bool,
    ssh: &crate::edges::ssh::SshOptions,
) {
    let mut reports = Vec::new();
    let mut unchecked = Vec::new();
    for (vm, id) in
        crate::edges::remote::read_tailnet_identities(ours, ssh, SSH_FANOUT, SSH_PER_VM).await
    {
        match id {
            Ok(id) => reports.push((vm.clone(), server(&vm), id)),
            Err(why) => unchecked.push((vm, why)),
        }
    }
    let tailnet_check::Confirmed {
        nodes,
        suspect,
        unchecked: unconfirmed,
    } = tailnet_check::confirm(reports);
    unchecked.extend(unconfirmed);
    if nodes.len() >= 2 || !suspect.is_empty() {
        let probes = tailnet_check::probes(&nodes);
        let outputs =
            crate::edges::remote::run_tailnet_probes(&probes, ssh, SSH_FANOUT, SSH_PER_VM).await;
        st.add_tailnet(tailnet_check::evaluate(
            &nodes, &probes, &outputs, unchecked, suspect,
        ));
    }
}

/// VMs read over SSH at once.
const SSH_FANOUT: usize = 8;
/// How long one VM's SSH read may take.
const SSH_PER_VM: Duration = Duration::from_secs(20);
