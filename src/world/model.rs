//! The world's state: VMs (boots, units, journal, setup runs), the tailnet
//! and the k3s clusters, behind one mutex. Pure: no files, no clock, no
//! processes; time comes in as `now_ms` and the edge ([`super::World`])
//! carries out the [`Effect`]s it returns.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use serde::Serialize;

use super::k3s::{Cluster, K3sProc, SnapshotData};
use super::s3::{S3Config, S3Store};
use super::tailnet::{Proto, Tailnet, TailnetConfig};
use super::{Faults, Timings};

/// How many journal lines a VM keeps.
const JOURNAL_LINES: usize = 2000;
/// How many lines of setup output are kept for the state view.
pub const LOG_TAIL_LINES: usize = 20;

/// The unit exe.dev's setup script runs under. The facts file does not
/// name it; this is the name the project's own messages use.
pub const SETUP_UNIT: &str = "exe.dev-setup";

/// tailscaled's state file, as on a real VM: it holds a VM's `node_key`.
/// Here, where both the `tailscale` applet (which writes it at `up`) and
/// k3s's `vpn-auth` (which writes it when k3s brings Tailscale up) see it.
pub const STATE_FILE: &str = "/var/lib/tailscale/tailscaled.state";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub unix_ms: u64,
    /// `_SYSTEMD_UNIT` without `.service`, or empty for plain `logger`.
    pub unit: String,
    /// `SYSLOG_IDENTIFIER` (`k3s`, `logger -t TAG`, ...).
    pub ident: String,
    pub message: String,
}

/// What the last runs of `/exe.dev/setup` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetupRecord {
    /// Runs started so far (one per boot with a script).
    pub runs: u32,
    /// Exit code of the last finished run; `None` while running, or if it
    /// was killed (timeout, reboot).
    pub exit_code: Option<i32>,
    pub running: bool,
    /// The last run was killed for exceeding the script timeout.
    pub timed_out: bool,
    /// The last run was killed by a reboot.
    pub interrupted: bool,
    /// Last lines of the last run's output (stdout and stderr).
    pub log_tail: Vec<String>,
}

/// A systemd unit the world knows on a VM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitState {
    pub enabled: bool,
    /// A running k3s under this unit (k3s, k3s-agent).
    pub k3s: Option<K3sProc>,
    /// How many times a k3s process was started under this unit (boots,
    /// restarts, systemd's own restarts): tests tell a restart from none.
    pub starts: u64,
}

/// One VM as the world sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmState {
    pub name: String,
    /// Its image runs `/exe.dev/setup` (exeuntu does; images without the
    /// unit ignore the script).
    pub runs_setup: bool,
    /// Its address on its default interface: only itself can reach it
    /// (exe.dev VMs reach each other only through the overlay).
    pub lan_ip: Ipv4Addr,
    /// Boots so far; stand-ins of an earlier boot are ignored.
    pub boot: u64,
    /// Booted and not halted.
    pub up: bool,
    /// tailscaled is running.
    pub tailscaled: bool,
    /// tailscaled's node key (its state file): the VM's tailnet identity.
    pub node_key: Option<String>,
    /// tailscaled started with a saved login and is still `Starting`: its
    /// device comes online at this time (`Timings::tailscale_up_ms`).
    pub tailnet_up_at: Option<u64>,
    pub units: BTreeMap<String, UnitState>,
    pub journal: VecDeque<JournalEntry>,
    pub setup: SetupRecord,
    /// The cluster whose etcd data this VM holds (servers), while
    /// `/var/lib/rancher/k3s/server/db` exists.
    pub server_data: Option<String>,
    /// Installer downloads requested (for the download fault).
    pub installer_fetches: u32,
    /// The reboot-mid-setup fault has fired.
    pub rebooted_by_fault: bool,
}

impl VmState {
    /// Appends to the journal, dropping the oldest lines past the limit.
    pub fn log(&mut self, now_ms: u64, unit: &str, ident: &str, message: impl Into<String>) {
        if self.journal.len() >= JOURNAL_LINES {
            self.journal.pop_front();
        }
        self.journal.push_back(JournalEntry {
            unix_ms: now_ms,
            unit: unit.to_string(),
            ident: ident.to_string(),
            message: message.into(),
        });
    }
}

/// Something only the edge can do: write a VM's files, open or close a
/// listener, restart a unit (which re-reads its files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write a file in a VM (as root), creating parent directories.
    WriteFile {
        vm: String,
        path: String,
        mode: u32,
        content: String,
    },
    /// Remove a file in a VM.
    RemoveFile { vm: String, path: String },
    /// Create a directory (as root, 0700) in a VM.
    MakeDir { vm: String, path: String },
    /// The k3s server on `vm` serves the Kubernetes API now.
    ApiUp { vm: String, cluster: String },
    /// It stopped serving.
    ApiDown { vm: String },
    /// Systemd restarts a unit whose process failed (`Restart=always`).
    RestartUnit { vm: String, unit: String },
    /// Apply the manifests in the server's auto-deploy directory.
    ApplyManifests { vm: String, cluster: String },
    /// The server under `unit` takes its scheduled etcd snapshot (files
    /// and S3: the edge's, `applets::etcd_snapshot`).
    ScheduledSnapshot { vm: String, unit: String },
}

/// Everything the world holds.
#[derive(Debug)]
pub struct Model {
    pub timings: Timings,
    pub faults: Faults,
    pub tailnet: Tailnet,
    pub vms: BTreeMap<String, VmState>,
    pub clusters: BTreeMap<String, Cluster>,
    /// The world's S3-compatible store.
    pub s3: S3Store,
    /// What each etcd snapshot file holds, by the id written in the file.
    pub snapshots: BTreeMap<String, SnapshotData>,
    next_lan: u32,
    next_cluster: u32,
    /// Seed for node keys and generated tokens: unique per model.
    pub seed: u64,
    next_secret: u64,
}

impl Model {
    pub fn new(timings: Timings, faults: Faults, tailnet: TailnetConfig, seed: u64) -> Self {
        Model {
            timings,
            faults,
            tailnet: Tailnet::new(tailnet),
            vms: BTreeMap::new(),
            clusters: BTreeMap::new(),
            s3: S3Store::new(S3Config::new()),
            snapshots: BTreeMap::new(),
            next_lan: 2,
            next_cluster: 1,
            seed,
            next_secret: 1,
        }
    }

    /// A new VM, not yet booted. Replaces a VM of that name (its disk is
    /// gone: a new `new` is a new machine).
    pub fn add_vm(&mut self, name: &str, runs_setup: bool) {
        let n = self.next_lan;
        self.next_lan += 1;
        let lan_ip = Ipv4Addr::new(10, 0, (n >> 8) as u8, (n & 0xff) as u8);
        self.vms.insert(
            name.to_string(),
            VmState {
                name: name.to_string(),
                runs_setup,
                lan_ip,
                boot: 0,
                up: false,
                tailscaled: false,
                node_key: None,
                tailnet_up_at: None,
                units: BTreeMap::new(),
                journal: VecDeque::new(),
                setup: SetupRecord::default(),
                server_data: None,
                installer_fetches: 0,
                rebooted_by_fault: false,
            },
        );
    }

    /// A fresh identifier for a cluster.
    pub fn new_cluster_id(&mut self) -> String {
        let id = format!("cluster-{}", self.next_cluster);
        self.next_cluster += 1;
        id
    }

    /// A fresh random-looking secret (node keys, generated k3s tokens).
    pub fn new_secret(&mut self, prefix: &str) -> String {
        use sha2::{Digest, Sha256};
        let n = self.next_secret;
        self.next_secret += 1;
        let d = Sha256::digest(format!("{}:{n}", self.seed).as_bytes());
        let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("{prefix}{hex}")
    }

    /// Boots a VM: it is up, its boot counter moves on (so stand-ins of an
    /// earlier boot are ignored). Starting enabled units and the setup
    /// script is the edge's job.
    pub fn boot_vm(&mut self, name: &str, now_ms: u64) -> Option<u64> {
        let vm = self.vms.get_mut(name)?;
        vm.boot += 1;
        vm.up = true;
        vm.log(now_ms, "", "kernel", format!("boot {}", vm.boot));
        Some(vm.boot)
    }

    /// Halts a VM (reboot, resize, delete): every process stops, so every
    /// k3s unit stops and tailscaled goes offline.
    pub fn halt_vm(&mut self, name: &str, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let units: Vec<String> = match self.vms.get(name) {
            Some(vm) => vm.units.keys().cloned().collect(),
            None => return effects,
        };
        for u in units {
            effects.extend(self.stop_k3s(name, &u, now_ms));
        }
        self.stop_tailscaled(name, now_ms);
        if let Some(vm) = self.vms.get_mut(name) {
            vm.up = false;
            if vm.setup.running {
                vm.setup.running = false;
                vm.setup.interrupted = true;
            }
        }
        effects
    }

    /// Deletes a VM: halted, forgotten. Its tailnet device stays (offline)
    /// and its etcd membership stays, as on exe.dev and Tailscale.
    pub fn remove_vm(&mut self, name: &str, now_ms: u64) -> Vec<Effect> {
        let effects = self.halt_vm(name, now_ms);
        self.vms.remove(name);
        effects
    }

    /// tailscaled starts: with a state file whose device still exists,
    /// the device comes back online.
    pub fn start_tailscaled(&mut self, name: &str, now_ms: u64) {
        let Some(vm) = self.vms.get_mut(name) else {
            return;
        };
        if vm.tailscaled {
            return;
        }
        vm.tailscaled = true;
        vm.log(now_ms, "tailscaled", "tailscaled", "tailscaled started");
        if let Some(key) = vm.node_key.clone()
            && self.tailnet.by_key(&key).is_some()
        {
            // A saved login: `Starting` for a while, then online (the
            // reboot race: enabled units start meanwhile).
            vm.tailnet_up_at = Some(now_ms + self.timings.tailscale_up_ms);
            self.tailnet_tick(now_ms);
        }
    }

    /// Devices whose tailscaled finished starting come online.
    pub fn tailnet_tick(&mut self, now_ms: u64) {
        let due: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.tailscaled && v.tailnet_up_at.is_some_and(|t| t <= now_ms))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(v) = self.vms.get_mut(&name) else {
                continue;
            };
            v.tailnet_up_at = None;
            if let Some(key) = v.node_key.clone()
                && let Some(id) = self.tailnet.by_key(&key).map(|d| d.id)
            {
                self.tailnet.set_online(id, true, now_ms);
            }
        }
    }

    /// tailscaled stops: the device goes offline.
    pub fn stop_tailscaled(&mut self, name: &str, now_ms: u64) {
        let Some(vm) = self.vms.get_mut(name) else {
            return;
        };
        vm.tailscaled = false;
        vm.tailnet_up_at = None;
        if let Some(key) = vm.node_key.clone() {
            self.tailnet.key_offline(&key, now_ms);
        }
    }

    /// The VM's tailnet device, if it has one.
    pub fn device_of(&self, name: &str) -> Option<&super::tailnet::Device> {
        let key = self.vms.get(name)?.node_key.as_deref()?;
        self.tailnet.by_key(key)
    }

    /// The VM's tailnet address, if its device is reachable.
    pub fn tailnet_ip(&self, name: &str) -> Option<Ipv4Addr> {
        self.device_of(name).filter(|d| d.reachable()).map(|d| d.ip)
    }

    /// Can a process on `from` reach `ip`, and which VM answers? Loopback
    /// and the VM's own addresses reach itself; a tailnet address reaches
    /// its device's VM when both ends are on the tailnet; nothing else does.
    pub fn route(&self, from: &str, ip: Ipv4Addr) -> Option<String> {
        let vm = self.vms.get(from)?;
        if ip.is_loopback() || ip == vm.lan_ip {
            return Some(from.to_string());
        }
        let dev = self.device_of(from);
        if dev.is_some_and(|d| d.ip == ip && d.reachable()) {
            return Some(from.to_string());
        }
        if self.tailnet.can_reach(dev, ip) {
            let target = self.tailnet.by_ip(ip)?;
            return self
                .vms
                .get(&target.vm)
                .filter(|v| v.up && v.node_key.as_deref() == Some(target.node_key.as_str()))
                .map(|v| v.name.clone());
        }
        None
    }

    /// [`Model::route`] for a connection to `port`: through the tailnet,
    /// only when the tailnet's policy accepts the flow (a dropped flow and
    /// no route look alike to the sender: the connect times out).
    pub fn route_port(&self, from: &str, ip: Ipv4Addr, proto: Proto, port: u16) -> Option<String> {
        let target = self.route(from, ip)?;
        if target == from {
            return Some(target);
        }
        self.tailnet
            .allows(self.device_of(from), ip, proto, port)
            .then_some(target)
    }

    /// Resolves a host name as a process on `from` would: `localhost`, an
    /// IPv4 literal, or a MagicDNS name.
    pub fn resolve(&self, from: &str, host: &str) -> Option<Ipv4Addr> {
        if host == "localhost" {
            return Some(Ipv4Addr::LOCALHOST);
        }
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Some(ip);
        }
        if self.vms.get(from).is_some_and(|v| v.name == host) {
            // /etc/hosts has the VM's own name.
            return Some(Ipv4Addr::LOCALHOST);
        }
        self.tailnet.resolve(self.device_of(from), host)
    }

    /// Removes expired ephemeral devices.
    pub fn expire_devices(&mut self, now_ms: u64) {
        self.tailnet.expire(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tailnet::Login;

    #[test]
    fn routes_only_through_the_tailnet() {
        let mut m = Model::new(
            Timings::default(),
            Faults::default(),
            TailnetConfig::default(),
            1,
        );
        m.add_vm("vm-a", true);
        m.add_vm("vm-b", true);
        m.boot_vm("vm-a", 0);
        m.boot_vm("vm-b", 0);
        let lan_b = m.vms["vm-b"].lan_ip;
        assert_eq!(m.route("vm-a", lan_b), None, "no LAN between VMs");
        assert_eq!(m.route("vm-b", lan_b).as_deref(), Some("vm-b"));
        assert_eq!(
            m.route("vm-a", Ipv4Addr::LOCALHOST).as_deref(),
            Some("vm-a")
        );
        for vm in ["vm-a", "vm-b"] {
            let key = m.new_secret("nk-");
            let login = Login {
                vm: vm.into(),
                new_node_key: key.clone(),
                auth_key: Some("tskey-auth-x".into()),
                hostname: vm.into(),
                accept_dns: true,
                ..Login::default()
            };
            m.vms.get_mut(vm).unwrap().node_key = Some(key);
            m.tailnet.login(&login, 0).unwrap();
        }
        let ip_b = m.tailnet_ip("vm-b").unwrap();
        assert_eq!(m.route("vm-a", ip_b).as_deref(), Some("vm-b"));
        // Per port, only as far as the policy lets the flow through; a
        // VM's own ports are not the tailnet's business.
        assert_eq!(
            m.route_port("vm-a", ip_b, Proto::Tcp, 10250).as_deref(),
            Some("vm-b")
        );
        m.tailnet.config.policy = Some(
            crate::world::tailnet::Policy::parse(
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:6443"]}]}"#,
            )
            .unwrap(),
        );
        assert_eq!(m.route_port("vm-a", ip_b, Proto::Tcp, 10250), None);
        assert_eq!(
            m.route_port("vm-a", ip_b, Proto::Tcp, 6443).as_deref(),
            Some("vm-b")
        );
        assert_eq!(
            m.route_port("vm-b", ip_b, Proto::Tcp, 10250).as_deref(),
            Some("vm-b")
        );
        m.tailnet.config.policy = None;
        assert_eq!(m.resolve("vm-a", "vm-b.tail1234.ts.net"), Some(ip_b));
        m.stop_tailscaled("vm-b", 5);
        assert_eq!(
            m.route("vm-a", ip_b),
            None,
            "offline devices are unreachable"
        );
        // A saved login: `Starting` first (the reboot race), online after
        // `tailscale_up_ms`.
        m.start_tailscaled("vm-b", 6);
        assert_eq!(m.route("vm-a", ip_b), None, "still starting");
        m.tailnet_tick(6 + m.timings.tailscale_up_ms);
        assert_eq!(m.route("vm-a", ip_b).as_deref(), Some("vm-b"));
        m.remove_vm("vm-b", 7);
        assert_eq!(m.route("vm-a", ip_b), None);
        assert_eq!(
            m.resolve("vm-a", "vm-b.tail1234.ts.net"),
            Some(ip_b),
            "the name keeps pointing at the dead device"
        );
    }
}
