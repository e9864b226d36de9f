//! The k3s model: what a k3s server or agent started by systemd does, from
//! `k3s-facts.md`, and what it refuses. Pure: the edge resolves the unit's
//! files into [`StartInputs`] and carries out the returned [`Effect`]s.
//!
//! A unit's process goes through [`Phase`]s on each tick:
//! `Starting` (configuration, `vpn-auth`, addresses) → `Waiting` (the join
//! target does not resolve or answer yet: k3s retries forever) →
//! `Learner` (a joining server's etcd member catches up) → `Booting` →
//! `Ready` (`Type=notify` says READY=1, the Node is registered). A refusal
//! is `Failed`: k3s exits, and with `Restart=always` systemd starts it again
//! after the restart delay, re-reading its files.
//!
//! Refusals modelled, each with its source in the facts file:
//! - a wrong token, an agent token where a server token is needed
//!   ("Tokens, again");
//! - an agent whose node password is not the one k3s keeps for its name
//!   (a new VM under a remaining Node's name): retried, as k3s does
//!   ([`node_password`], `docs/facts/node-password.md`; a server's own node
//!   is only warned about);
//! - a join URL that does not resolve on the tailnet or whose server is not
//!   up: the node waits (k3s retries until the server answers);
//! - a second server joining while another is still a learner: "too many
//!   learner members", retried inside the process ("Joining", "Read from
//!   source": `etcd.go:503`);
//! - an etcd peer address that the other servers cannot reach (anything but
//!   a tailnet address): the learner never catches up ("Tailscale as the
//!   overlay") and is removed after 5 minutes (`etcd.go:67,1295-1299`);
//! - node labels the kubelet refuses ("Node labels the kubelet refuses");
//! - servers whose critical configuration differs (k3s's
//!   `CriticalControlArgs`, "Read from source");
//! - a server whose config still carries a token rotated away: "bootstrap
//!   data already found and encrypted with different token";
//! - a command-line flag k3s does not define (`crate::base::k3s_flags`), a
//!   `flannel-iface` that names no interface (no `tailscale0` without a TUN
//!   device), a server name not in the certificate ("Read from source").
//!
//! Not refused, because k3s does not: a kubelet newer than the API server
//! (the tool keeps to the skew policy at plan time).
//!
//! Modelled although the facts file is silent (each marked where it is
//! made, so a live run can correct it): a `node-ip` that is not one of the
//! VM's addresses fails to bind; joining a single server without
//! `--cluster-init` (SQLite) is refused; a server whose etcd member was
//! removed must delete its database to rejoin; a restarting server waits
//! for etcd quorum; the VM's interfaces besides `tailscale0` are `lo` and
//! `eth0`; the certificate also holds the host name.

use std::net::Ipv4Addr;

mod cluster;
pub mod node_password;
mod parse;
pub mod snapshot;
mod state;

use parse::url_host_port;
pub use parse::{Token, VpnAuth, minor_version, parse_token, parse_vpn_auth, refused_labels};
pub use state::{Cluster, Datastore, K3sProc, Member, Phase, SnapshotData, SnapshotTimer};

use super::k3s_config::{K3sConfig, Role, critical};
use super::model::{Effect, Model};
use super::tailnet::{Login, Proto};

/// Where k3s writes its admin kubeconfig.
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
/// The server's token file (secure form).
pub const TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/token";
/// The etcd data directory: its existence is "etcd data exists".
pub const DB_DIR: &str = "/var/lib/rancher/k3s/server/db";
/// The auto-deploy manifests directory.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// The supervisor and API port.
pub const API_PORT: u16 = 6443;
/// etcd's client port, on servers (facts: "Ports").
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port, on servers (facts: "Ports").
pub const ETCD_PEER_PORT: u16 = 2380;
/// The kubelet's port, on every node (facts: "Ports").
pub const KUBELET_PORT: u16 = 10250;
/// How long k3s lets an etcd learner stall before removing it (k3s
/// `pkg/etcd/etcd.go:67`, facts "Read from source"): 5 minutes.
pub const LEARNER_MAX_STALL_MS: u64 = 5 * 60 * 1000;

/// What the edge read for a unit start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInputs {
    pub role: Role,
    pub cfg: K3sConfig,
    /// The installed k3s's version; `None` if /usr/local/bin/k3s is missing.
    pub version: Option<String>,
    pub notify: bool,
    pub restart_always: bool,
    /// `/var/lib/rancher/k3s/server/db` exists.
    pub has_data_dir: bool,
    /// The node's password file's text, trimmed (`None`: no file yet;
    /// [`node_password`]).
    pub node_password: Option<String>,
    /// `server/db/reset-flag` exists: the first start after a cluster
    /// reset.
    pub reset_flag: bool,
}

impl Model {
    fn proc_mut(&mut self, vm: &str, unit: &str) -> Option<&mut K3sProc> {
        self.vms.get_mut(vm)?.units.get_mut(unit)?.k3s.as_mut()
    }

    /// The process of a unit, if one runs.
    pub fn proc(&self, vm: &str, unit: &str) -> Option<&K3sProc> {
        self.vms.get(vm)?.units.get(unit)?.k3s.as_ref()
    }

    /// The k3s process of any unit on a VM (servers first).
    pub fn any_proc(&self, vm: &str) -> Option<(&str, &K3sProc)> {
        let v = self.vms.get(vm)?;
        let mut procs: Vec<(&str, &K3sProc)> = v
            .units
            .iter()
            .filter_map(|(u, s)| s.k3s.as_ref().map(|p| (u.as_str(), p)))
            .collect();
        procs.sort_by_key(|(_, p)| p.role != Role::Server);
        procs.into_iter().next()
    }

    /// The server process on a VM whose supervisor answers, and its
    /// cluster ([`K3sProc::supervisor_up`]).
    pub fn supervisor(&self, vm: &str) -> Option<(&K3sProc, &str)> {
        let v = self.vms.get(vm)?;
        v.units.values().find_map(|u| {
            let p = u.k3s.as_ref()?;
            p.supervisor_up()
                .then_some(())
                .and(p.cluster.as_deref().map(|c| (p, c)))
        })
    }

    /// The Ready server process on a VM, and its cluster.
    pub fn ready_server(&self, vm: &str) -> Option<(&K3sProc, &str)> {
        let v = self.vms.get(vm)?;
        v.units.values().find_map(|u| {
            let p = u.k3s.as_ref()?;
            (p.role == Role::Server && p.is_ready())
                .then_some(())
                .and(p.cluster.as_deref().map(|c| (p, c)))
        })
    }

    fn k3s_log(&mut self, vm: &str, unit: &str, now: u64, msg: impl Into<String>) {
        if let Some(v) = self.vms.get_mut(vm) {
            v.log(now, unit, "k3s", msg);
        }
    }

    fn fail(&mut self, vm: &str, unit: &str, p: &mut K3sProc, now: u64, error: String) {
        self.k3s_log(vm, unit, now, format!("level=fatal msg=\"{error}\""));
        let retry_at = p.restart_always.then_some(now + self.timings.restart_ms);
        p.phase = Phase::Failed { error, retry_at };
    }

    fn wait(&mut self, vm: &str, unit: &str, p: &mut K3sProc, now: u64, why: String) {
        if p.logged.as_deref() != Some(why.as_str()) {
            self.k3s_log(vm, unit, now, format!("level=info msg=\"{why}\""));
            p.logged = Some(why.clone());
        }
        p.phase = Phase::Waiting(why);
    }

    /// `systemctl start` of a k3s unit: a new process with what the edge
    /// read (or the error reading it).
    pub fn start_k3s(
        &mut self,
        vm: &str,
        unit: &str,
        inputs: Result<StartInputs, String>,
        now: u64,
    ) -> Vec<Effect> {
        let Some(v) = self.vms.get_mut(vm) else {
            return Vec::new();
        };
        let (mut p, err) = match inputs {
            Ok(i) => {
                let node_name = i
                    .cfg
                    .get("node-name")
                    .map(str::to_string)
                    .unwrap_or_else(|| vm.to_string());
                (
                    K3sProc {
                        role: i.role,
                        version: i.version.clone().unwrap_or_default(),
                        cfg: i.cfg,
                        notify: i.notify,
                        restart_always: i.restart_always,
                        has_data_dir: i.has_data_dir,
                        node_password: i.node_password.clone(),
                        after_reset: i.reset_flag,
                        password_retry_at: None,
                        node_name,
                        phase: Phase::Starting,
                        node_ip: None,
                        etcd_peer_ip: None,
                        cluster: None,
                        logged: None,
                        snapshot_timer: None,
                    },
                    i.version.is_none().then(|| {
                        "Failed at step EXEC spawning /usr/local/bin/k3s: No such file or directory"
                            .to_string()
                    }),
                )
            }
            Err(e) => (
                K3sProc {
                    role: Role::Server,
                    version: String::new(),
                    cfg: K3sConfig::default(),
                    notify: true,
                    restart_always: true,
                    has_data_dir: false,
                    node_password: None,
                    after_reset: false,
                    password_retry_at: None,
                    node_name: vm.to_string(),
                    phase: Phase::Starting,
                    node_ip: None,
                    etcd_peer_ip: None,
                    cluster: None,
                    logged: None,
                    snapshot_timer: None,
                },
                Some(e),
            ),
        };
        v.log(now, unit, "systemd", format!("Starting {unit}.service"));
        for w in &p.cfg.warnings {
            v.log(now, unit, "k3s", w.clone());
        }
        if let Some(e) = err {
            self.fail(vm, unit, &mut p, now, e);
        }
        let slot = self
            .vms
            .get_mut(vm)
            .map(|v| v.units.entry(unit.to_string()).or_default());
        if let Some(s) = slot {
            s.k3s = Some(p);
            s.starts += 1;
        }
        self.advance(vm, unit, now)
    }

    /// `systemctl stop`, or the VM halting: the process ends, its Node
    /// stops reporting, a server stops serving the API.
    pub fn stop_k3s(&mut self, vm: &str, unit: &str, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(p) = self
            .vms
            .get_mut(vm)
            .and_then(|v| v.units.get_mut(unit))
            .and_then(|u| u.k3s.take())
        else {
            return fx;
        };
        self.k3s_log(vm, unit, now, format!("Stopped {unit}.service"));
        if let Some(cid) = &p.cluster
            && let Some(c) = self.clusters.get_mut(cid)
        {
            if p.is_ready() {
                c.api.node_not_ready(&p.node_name, now);
            }
            if p.role == Role::Server {
                fx.push(Effect::ApiDown { vm: vm.to_string() });
            }
        }
        fx
    }

    /// Advances every process whose time has come.
    pub fn tick_k3s(&mut self, now: u64) -> Vec<Effect> {
        self.tailnet_tick(now);
        let units: Vec<(String, String)> = self
            .vms
            .iter()
            .flat_map(|(n, v)| {
                v.units
                    .iter()
                    .filter(|(_, u)| u.k3s.is_some())
                    .map(move |(u, _)| (n.clone(), u.clone()))
            })
            .collect();
        let mut fx = Vec::new();
        for (vm, unit) in units {
            fx.extend(self.advance(&vm, &unit, now));
        }
        fx.extend(self.snapshot_timers(now));
        self.reconnect_agents(now);
        for c in self.clusters.values_mut() {
            c.api.tick(now);
        }
        fx
    }

    fn advance(&mut self, vm: &str, unit: &str, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(mut p) = self
            .vms
            .get_mut(vm)
            .and_then(|v| v.units.get_mut(unit))
            .and_then(|u| u.k3s.take())
        else {
            return fx;
        };
        for _ in 0..8 {
            let before = p.phase.clone();
            match before.clone() {
                Phase::Starting => self.on_starting(vm, unit, &mut p, now, &mut fx),
                Phase::Waiting(_) => self.on_waiting(vm, unit, &mut p, now, &mut fx),
                Phase::Learner => self.on_learner(vm, unit, &mut p, now),
                Phase::Booting { ready_at } => {
                    let never = p.role == Role::Server
                        && self
                            .faults
                            .server_never_ready
                            .iter()
                            .any(|g| crate::base::names::glob_match(g, vm));
                    if never {
                        self.wait(
                            vm,
                            unit,
                            &mut p,
                            now,
                            "Waiting for API server to become available (fault: this server never becomes ready)".into(),
                        );
                        p.phase = Phase::Booting { ready_at };
                    } else if now >= ready_at {
                        self.become_ready(vm, unit, &mut p, now, &mut fx);
                    }
                }
                Phase::Ready => {}
                Phase::Failed {
                    error,
                    retry_at: Some(t),
                } if now >= t => {
                    fx.push(Effect::RestartUnit {
                        vm: vm.to_string(),
                        unit: unit.to_string(),
                    });
                    p.phase = Phase::Failed {
                        error,
                        retry_at: None,
                    };
                }
                Phase::Failed { .. } => {}
            }
            if p.phase == before {
                break;
            }
        }
        if let Some(u) = self.vms.get_mut(vm).and_then(|v| v.units.get_mut(unit)) {
            u.k3s = Some(p);
        }
        fx
    }

    /// Addresses k3s picks ([src: k3s pkg/cli/server/server.go], facts file
    /// "Tailscale as the overlay"): with `vpn-auth` the node IP is the VPN
    /// address; `flannel-iface` without `node-ip` makes `node-ip` that
    /// interface's address; the etcd peer address is the first `node-ip`,
    /// else the default interface's. That a `node-ip` which is none of the
    /// VM's addresses fails to bind is the model's (facts file silent).
    fn addresses(&self, vm: &str, p: &K3sProc, vpn: bool) -> Result<(Ipv4Addr, Ipv4Addr), String> {
        let v = &self.vms[vm];
        let ts = self.tailnet_ip(vm);
        let mut node_ips: Vec<Ipv4Addr> = Vec::new();
        for s in p.cfg.list("node-ip") {
            let ip: Ipv4Addr = s
                .parse()
                .map_err(|_| format!("invalid node-ip {s:?}: not an IPv4 address"))?;
            if ip != v.lan_ip && Some(ip) != ts {
                return Err(format!(
                    "node-ip {ip} is not an address of this host ({}{}): listen tcp {ip}:2380: bind: cannot assign requested address",
                    v.lan_ip,
                    ts.map(|t| format!(", tailscale0 {t}")).unwrap_or_default()
                ));
            }
            node_ips.push(ip);
        }
        // `flannel-iface` must name an existing interface, whether or not
        // `node-ip` is given (facts "Read from source",
        // `pkg/agent/config/config.go:393-398`). `tailscale0` exists only
        // while tailscaled runs with a TUN device (not in userspace
        // networking). The VM's other interfaces are taken to be `lo` and
        // `eth0`, the default one: the model's own, exe.dev's interface
        // names are not in the facts file.
        if let Some(iface) = p.cfg.get("flannel-iface") {
            let ip = match iface {
                "tailscale0" => {
                    let tun = v.tailscaled && !self.tailnet.config.userspace;
                    if !tun {
                        return Err(format!(
                            "unable to find interface tailscale0{}",
                            if v.tailscaled {
                                " (tailscaled runs in userspace networking: no TUN device)"
                            } else {
                                " (tailscaled is not running)"
                            }
                        ));
                    }
                    match ts {
                        Some(ip) => ip,
                        None if node_ips.is_empty() => {
                            return Err("unable to find a usable IPv4 address on interface tailscale0 (Tailscale is not up)".to_string());
                        }
                        None => Ipv4Addr::UNSPECIFIED,
                    }
                }
                "eth0" => v.lan_ip,
                "lo" => Ipv4Addr::LOCALHOST,
                other => return Err(format!("unable to find interface {other}")),
            };
            if node_ips.is_empty() {
                node_ips.push(ip);
            }
        }
        let etcd_ip = node_ips.first().copied().unwrap_or(v.lan_ip);
        let node_ip = if vpn {
            ts.ok_or_else(|| "tailscale does not provide an ipv4 address".to_string())?
        } else {
            etcd_ip
        };
        Ok((node_ip, etcd_ip))
    }

    /// `vpn-auth`: k3s runs `tailscale up --authkey KEY --timeout=30s
    /// --reset [extraArgs]` unless Tailscale already runs [src: k3s
    /// pkg/vpn/vpn.go]; it needs a running tailscaled.
    fn vpn_up(&mut self, vm: &str, vpn: &VpnAuth, now: u64) -> Result<(), String> {
        let running = self.device_of(vm).is_some_and(|d| d.reachable()) && self.vms[vm].tailscaled;
        if running {
            return Ok(());
        }
        if !self.vms[vm].tailscaled {
            return Err(
                "tailscale up failed: failed to connect to local tailscaled; it doesn't appear to be running"
                    .to_string(),
            );
        }
        let mut hostname = vm.to_string();
        let mut args = vpn.extra_args.iter();
        let mut routes = Vec::new();
        let mut tags = Vec::new();
        let mut accept_dns = true;
        while let Some(a) = args.next() {
            let (k, val) = match a.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            let mut value = || {
                val.clone()
                    .or_else(|| args.next().cloned())
                    .unwrap_or_default()
            };
            match k.trim_start_matches('-') {
                "hostname" => hostname = value(),
                "advertise-routes" => routes = value().split(',').map(str::to_string).collect(),
                "advertise-tags" => tags = value().split(',').map(str::to_string).collect(),
                "accept-dns" => accept_dns = val.as_deref() != Some("false"),
                _ => {}
            }
        }
        let new_key = self.new_secret("nodekey:");
        let login = Login {
            vm: vm.to_string(),
            node_key: self.vms[vm].node_key.clone(),
            new_node_key: new_key,
            auth_key: Some(vpn.join_key.clone()),
            hostname,
            advertise_routes: routes,
            advertise_tags: tags,
            accept_dns,
            force_reauth: false,
        };
        let id = self
            .tailnet
            .login(&login, now)
            .map_err(|e| format!("tailscale up failed: {e}"))?;
        let key = self.tailnet.devices[&id].node_key.clone();
        if let Some(v) = self.vms.get_mut(vm) {
            v.node_key = Some(key);
        }
        if self.tailnet.devices[&id].needs_approval {
            // Facts file silent: `tailscale up`'s wording for a device that
            // waits for an admin's approval, as Tailscale's CLI reports it.
            return Err("tailscale up failed: timeout waiting for Tailscale service to enter a Running state; last state: NeedsMachineAuth".to_string());
        }
        Ok(())
    }

    /// `Starting`: what every node does before its role matters (labels,
    /// `vpn-auth`, addresses), then its role's first step.
    fn on_starting(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        if let Err(e) = self.start_network(vm, unit, p, now, fx) {
            return self.fail(vm, unit, p, now, e);
        }
        let token = p.cfg.get("token").map(str::to_string);
        match p.role {
            Role::Server => self.start_server(vm, unit, p, token, now, fx),
            Role::Agent => {
                if p.cfg.get("server").is_none() {
                    return self.fail(vm, unit, p, now, "--server is required".into());
                }
                if token.is_none() {
                    return self.fail(vm, unit, p, now, "--token is required".into());
                }
                self.wait(
                    vm,
                    unit,
                    p,
                    now,
                    "Waiting to retrieve agent configuration; server is not ready".into(),
                );
            }
        }
    }

    /// The node's network before k3s's role-specific start: the kubelet's
    /// label check, `vpn-auth` bringing Tailscale up (and its state file),
    /// then the node and etcd addresses. Its own function because servers
    /// and agents share it; the error is the `msg` of k3s's fatal line.
    fn start_network(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        now: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), String> {
        if let Some(e) = refused_labels(&p.cfg.list("node-label")) {
            return Err(format!("kubelet exited: {e}"));
        }
        let vpn = p.cfg.get("vpn-auth").map(parse_vpn_auth).transpose()?;
        if let Some(vpn) = &vpn {
            self.vpn_up(vm, vpn, now)?;
            fx.push(Effect::WriteFile {
                vm: vm.to_string(),
                path: super::model::STATE_FILE.to_string(),
                mode: 0o600,
                content: self.vms[vm].node_key.clone().unwrap_or_default(),
            });
        }
        let (node_ip, etcd_ip) = self.addresses(vm, p, vpn.is_some())?;
        p.node_ip = Some(node_ip);
        if p.role == Role::Server {
            p.etcd_peer_ip = Some(etcd_ip);
            if vpn.is_some() {
                self.k3s_log(
                    vm,
                    unit,
                    now,
                    format!("level=info msg=\"Changed advertise-address to {node_ip} due to VPN\""),
                );
                self.k3s_log(vm, unit, now, "level=warning msg=\"Etcd IP (PrivateIP) remains the local IP. Running etcd traffic over VPN is not recommended due to performance issues\"");
            }
        }
        Ok(())
    }

    /// A server's first step, one of three: restart on its own etcd data,
    /// join the cluster `server` names (waiting for it), or create a new
    /// cluster (`cluster-init`: etcd, else SQLite).
    fn start_server(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        token: Option<String>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let existing = self.vms[vm]
            .server_data
            .clone()
            .filter(|c| p.has_data_dir && self.clusters.contains_key(c));
        if let Some(cid) = existing {
            return match self.resume_on_data(vm, p, cid, token.as_deref(), fx) {
                Ok(()) => self.wait(vm, unit, p, now, "Waiting for etcd to reach quorum".into()),
                Err(e) => self.fail(vm, unit, p, now, e),
            };
        }
        if !p.has_data_dir
            && let Some(v) = self.vms.get_mut(vm)
        {
            v.server_data = None;
        }
        if p.cfg.get("server").is_some() {
            if token.is_none() {
                return self.fail(
                    vm,
                    unit,
                    p,
                    now,
                    "--token is required to join a cluster (--server given)".into(),
                );
            }
            return self.wait(vm, unit, p, now, "Joining the cluster".into());
        }
        let datastore = if p.cfg.bool("cluster-init") {
            Datastore::Etcd
        } else {
            Datastore::Sqlite
        };
        if let Err(e) = self.create_cluster(vm, p, datastore, token, now, fx) {
            return self.fail(vm, unit, p, now, e);
        }
        p.phase = Phase::Booting {
            ready_at: now + self.timings.server_ready_ms,
        };
    }

    /// A server restarting on the etcd data of cluster `cid`: its own
    /// function because it checks the data against the server (still a
    /// member, same token) and repairs what a reset left behind before
    /// the caller waits for quorum. The error is the `msg` of k3s's fatal
    /// line.
    fn resume_on_data(
        &mut self,
        vm: &str,
        p: &mut K3sProc,
        cid: String,
        token: Option<&str>,
        fx: &mut Vec<Effect>,
    ) -> Result<(), String> {
        let c = &self.clusters[&cid];
        if !c.members.iter().any(|m| m.vm == vm) {
            // Facts file silent: etcd's own message for a removed member,
            // as k3s would surface it.
            return Err("etcd: this member has been permanently removed from the cluster; delete /var/lib/rancher/k3s/server/db to join it again".into());
        }
        if let Some(t) = token
            && parse_token(t).secret != c.token
        {
            return Err("starting kubernetes: preparing server: bootstrap data already found and encrypted with different token".into());
        }
        // etcd starts with this start's peer address (a reset left
        // loopback, `pkg/etcd/etcd.go:383-399`), and a normal start clears
        // the reset flag (`etcd.go:294`).
        if let Some(ip) = p.etcd_peer_ip
            && let Some(c) = self.clusters.get_mut(&cid)
            && let Some(m) = c.members.iter_mut().find(|m| m.vm == vm)
        {
            m.peer_ip = ip;
        }
        fx.push(Effect::RemoveFile {
            vm: vm.to_string(),
            path: snapshot::RESET_FLAG.to_string(),
        });
        p.cluster = Some(cid);
        Ok(())
    }

    fn on_waiting(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        if p.role == Role::Server
            && let Some(cid) = p.cluster.clone()
        {
            // A member restarting on its own data.
            let (alive, voters) = self.alive_voters(&cid, Some(vm));
            if voters > 0 && alive > voters / 2 {
                p.phase = Phase::Booting {
                    ready_at: now + self.timings.server_ready_ms,
                };
            } else {
                let note = self
                    .superseded_note(&cid)
                    .map(|n| format!("; {n}"))
                    .unwrap_or_default();
                self.wait(
                    vm,
                    unit,
                    p,
                    now,
                    format!(
                        "Waiting for etcd to reach quorum: {alive} of {voters} members up{note}"
                    ),
                );
            }
            return;
        }
        // An agent refused its password retries its configuration later
        // (`node_password`).
        if p.password_retry_at.is_some_and(|t| now < t) {
            return;
        }
        let url = p.cfg.get("server").unwrap_or_default().to_string();
        let Some((host, port)) = url_host_port(&url) else {
            return self.fail(
                vm,
                unit,
                p,
                now,
                format!("invalid server URL {url:?}: expected https://HOST:6443"),
            );
        };
        let Some(ip) = self.resolve(vm, &host) else {
            return self.wait(vm, unit, p, now, format!("failed to get CA certs: Get \"{url}/cacerts\": dial tcp: lookup {host}: no such host"));
        };
        let target = self.route_port(vm, ip, Proto::Tcp, port);
        let Some(target) = target else {
            return self.wait(vm, unit, p, now, format!("failed to get CA certs: Get \"{url}/cacerts\": dial tcp {ip}:{port}: i/o timeout"));
        };
        let serving = self
            .ready_server(&target)
            .map(|(_, c)| c.to_string())
            .filter(|_| port == API_PORT);
        let Some(cid) = serving.filter(|c| self.has_quorum(c)) else {
            return self.wait(vm, unit, p, now, format!("failed to get CA certs: Get \"{url}/cacerts\": dial tcp {ip}:{port}: connect: connection refused"));
        };
        // The joiner fetches the CA, then verifies the server's certificate
        // with it, name included (k3s `pkg/clientaccess/token.go`; the
        // certificate's names: `K3sProc::server_sans`). k3s retries.
        if let Some((t, _)) = self.ready_server(&target)
            && !t.serves_name(&target, &host)
        {
            let sans = t.server_sans(&target).join(", ");
            return self.wait(vm, unit, p, now, format!("failed to get CA certs: Get \"{url}/v1-k3s/...\": tls: failed to verify certificate: x509: certificate is valid for {sans}, not {host}"));
        }
        // The token: its CA hash (secure form) and its secret.
        let c = &self.clusters[&cid];
        let token = p.cfg.get("token").unwrap_or_default().to_string();
        let t = parse_token(&token);
        if t.ca_hash.is_some_and(|h| h != c.pki.ca_hash) {
            return self.fail(
                vm,
                unit,
                p,
                now,
                format!("token CA hash does not match the Cluster CA certificate hash: {url}"),
            );
        }
        let is_server_token = t.secret == c.token;
        let is_agent_token = c.agent_token.as_deref() == Some(t.secret);
        match p.role {
            Role::Server if is_agent_token && !is_server_token => {
                return self.fail(vm, unit, p, now, format!("failed to get server bootstrap data from {url}: 401 Unauthorized (an agent token cannot join a server: servers need the server token)"));
            }
            _ if !is_server_token && !is_agent_token => {
                return self.fail(vm, unit, p, now, format!("failed to validate token: {url}/v1-k3s/... returned 401 Unauthorized: the token does not match the cluster's"));
            }
            _ => {}
        }
        match p.role {
            Role::Server => {
                // The joiner compares its critical values with those of the
                // server it contacts (`GET /v1-k3s/config` on its join URL:
                // k3s pkg/cluster/bootstrap.go compareConfig), which is only
                // done when it joins: a member restarting on its own data
                // does not compare, so a value changed on every server one
                // at a time never trips it.
                let theirs = self.ready_server(&target).map(|(t, _)| critical(&t.cfg));
                self.join_server(vm, unit, p, &cid, theirs, now, fx)
            }
            Role::Agent => {
                // A kubelet newer than the API server is against Kubernetes'
                // skew policy (facts "Versions"), but neither k3s nor the
                // kubelet checks it: it starts. The tool keeps to the policy
                // at plan time (`release::kubelet_may_run`); the world does
                // not refuse what k3s does not. Its node password is checked
                // (`node_password`).
                self.agent_join(vm, unit, p, cid, &target, now, fx);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join_server(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        cid: &str,
        theirs: Option<std::collections::BTreeMap<&'static str, String>>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let c = &self.clusters[cid];
        if c.datastore == Datastore::Sqlite {
            // Facts file silent: k3s's docs require `--cluster-init` on the
            // first server for embedded etcd; the message is the model's.
            return self.fail(vm, unit, p, now, "cannot join a server that runs the embedded SQLite datastore: the first server needs --cluster-init for others to join".into());
        }
        let theirs = theirs.unwrap_or_else(|| c.critical.clone());
        let mine = critical(&p.cfg);
        let mismatched: Vec<String> = mine
            .iter()
            .filter(|(k, v)| theirs.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k} (this server: {v:?}, cluster: {:?})",
                    theirs.get(k).cloned().unwrap_or_default()
                )
            })
            .collect();
        if !mismatched.is_empty() {
            return self.fail(
                vm,
                unit,
                p,
                now,
                format!(
                    "critical configuration value mismatch between servers: {}",
                    mismatched.join("; ")
                ),
            );
        }
        if c.members.iter().any(|m| m.learner_since.is_some()) {
            // k3s retries this inside the process (`pkg/etcd/etcd.go:503`,
            // facts "Read from source"): the join waits for the learner
            // before it to be promoted.
            return self.wait(
                vm,
                unit,
                p,
                now,
                "failed to join etcd cluster: etcdserver: too many learner members in cluster"
                    .into(),
            );
        }
        let peer_ip = p.etcd_peer_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let node_name = p.node_name.clone();
        if let Some(c) = self.clusters.get_mut(cid) {
            c.members.retain(|m| m.vm != vm);
            c.members.push(Member {
                vm: vm.to_string(),
                node_name,
                peer_ip,
                learner_since: Some(now),
            });
        }
        self.k3s_log(
            vm,
            unit,
            now,
            format!(
                "level=info msg=\"Adding member {vm}={peer_ip}:2380 to etcd cluster as a learner\""
            ),
        );
        p.cluster = Some(cid.to_string());
        if let Some(v) = self.vms.get_mut(vm) {
            v.server_data = Some(cid.to_string());
        }
        fx.push(Effect::MakeDir {
            vm: vm.to_string(),
            path: DB_DIR.to_string(),
        });
        p.phase = Phase::Learner;
    }

    /// Can the etcd member on `from` reach `ip` on `to` (etcd's peer port)?
    fn peer_reachable(&self, from: &str, ip: Ipv4Addr, to: &str) -> bool {
        self.route_port(from, ip, Proto::Tcp, ETCD_PEER_PORT)
            .as_deref()
            == Some(to)
    }

    fn on_learner(&mut self, vm: &str, unit: &str, p: &mut K3sProc, now: u64) {
        let Some(cid) = p.cluster.clone() else {
            return;
        };
        let Some(c) = self.clusters.get(&cid) else {
            return self.fail(vm, unit, p, now, "etcd cluster is gone".into());
        };
        let Some(me) = c.members.iter().find(|m| m.vm == vm).cloned() else {
            return self.fail(
                vm,
                unit,
                p,
                now,
                "etcd: this member has been removed from the cluster".into(),
            );
        };
        let since = me.learner_since.unwrap_or(now);
        if now.saturating_sub(since) < self.timings.join_ms {
            return;
        }
        let blocked: Vec<String> = c
            .voters()
            .filter(|m| {
                !self.peer_reachable(vm, m.peer_ip, &m.vm)
                    || !self.peer_reachable(&m.vm, me.peer_ip, vm)
            })
            .map(|m| format!("{} at {}:2380", m.vm, m.peer_ip))
            .collect();
        if !blocked.is_empty() && now.saturating_sub(since) >= LEARNER_MAX_STALL_MS {
            // k3s removes a learner that has not caught up within 5 minutes
            // (`pkg/etcd/etcd.go:67,1295-1299`, facts "Read from source");
            // this server's etcd then stops, and systemd restarts it.
            if let Some(c) = self.clusters.get_mut(&cid) {
                c.members.retain(|m| m.vm != vm);
            }
            return self.fail(vm, unit, p, now, format!("etcd learner {vm} removed from the cluster: not promoted within 5m0s (its peers are unreachable: {})", blocked.join(", ")));
        }
        if !blocked.is_empty() {
            let why = format!(
                "etcd learner {vm} ({}:2380) cannot reach its peers {}: the learner never catches up and the join never completes (etcd peer addresses must be tailnet addresses)",
                me.peer_ip,
                blocked.join(", ")
            );
            if p.logged.as_deref() != Some(why.as_str()) {
                self.k3s_log(vm, unit, now, format!("level=warning msg=\"{why}\""));
                p.logged = Some(why);
            }
            return;
        }
        if !self.has_quorum(&cid) {
            return;
        }
        if let Some(c) = self.clusters.get_mut(&cid)
            && let Some(m) = c.members.iter_mut().find(|m| m.vm == vm)
        {
            m.learner_since = None;
        }
        self.k3s_log(
            vm,
            unit,
            now,
            "level=info msg=\"etcd learner promoted to voting member\"",
        );
        p.phase = Phase::Booting { ready_at: now };
    }

    fn become_ready(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        p.phase = Phase::Ready;
        self.k3s_log(vm, unit, now, "level=info msg=\"k3s is up and running\"");
        let Some(cid) = p.cluster.clone() else {
            return;
        };
        let ip = p.node_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let etcd = self
            .clusters
            .get(&cid)
            .is_some_and(|c| c.datastore == Datastore::Etcd);
        self.start_snapshot_timer(p, etcd, now);
        let Some(c) = self.clusters.get_mut(&cid) else {
            return;
        };
        c.api.register_node(
            &p.node_name,
            p.role == Role::Server,
            etcd,
            &p.cfg.list("node-label"),
            &p.cfg.list("node-taint"),
            &p.version,
            ip,
            now,
        );
        node_password::own(&mut c.api, &p.node_name);
        if p.role == Role::Server {
            let mode = p
                .cfg
                .get("write-kubeconfig-mode")
                .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
                .unwrap_or(0o600);
            let token = c.secure_token("server", &c.token);
            let kubeconfig = c.pki.kubeconfig("https://127.0.0.1:6443");
            let mut files = vec![
                (KUBECONFIG_PATH.to_string(), mode, kubeconfig),
                (TOKEN_PATH.to_string(), 0o600, format!("{token}\n")),
                (
                    "/var/lib/rancher/k3s/server/node-token".to_string(),
                    0o600,
                    format!("{token}\n"),
                ),
            ];
            if let Some(a) = &c.agent_token {
                files.push((
                    "/var/lib/rancher/k3s/server/agent-token".to_string(),
                    0o600,
                    format!("{}\n", c.secure_token("node", a)),
                ));
            }
            for (path, mode, content) in files {
                fx.push(Effect::WriteFile {
                    vm: vm.to_string(),
                    path,
                    mode,
                    content,
                });
            }
            fx.push(Effect::ApiUp {
                vm: vm.to_string(),
                cluster: cid.clone(),
            });
            fx.push(Effect::ApplyManifests {
                vm: vm.to_string(),
                cluster: cid.clone(),
            });
            self.server_password(vm, unit, p, &cid, now, fx);
        }
    }
}

#[cfg(test)]
mod tests;
