//! The tailnet model: auth keys, devices, names, addresses, MagicDNS,
//! ephemeral expiry and subnet routes. Pure: time comes in as `now_ms`.
//!
//! What it models, from `k3s-facts.md` ("Tailscale as the overlay") and
//! Tailscale's documentation cited there:
//! - a device's name is its OS hostname unless `tailscale up --hostname`
//!   says otherwise; a new device whose name is taken becomes `<name>-1`
//!   (then `-2`...), and the old name keeps pointing at the old device
//!   until that device is removed [docs: KB 1098];
//! - ephemeral devices are removed some time after going offline and come
//!   back as new devices with new addresses [docs: KB 1111] (the delay is
//!   configurable here; Tailscale says 30 min to 48 h);
//! - MagicDNS names are `<name>.<tailnet>`;
//! - subnet routes must be approved before they carry traffic.
//!
//! Where the facts file is silent, this module says so at the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The prefix every Tailscale auth key carries.
pub const AUTH_KEY_PREFIX: &str = "tskey-auth-";

/// An auth key the world knows, with the kinds Tailscale's admin console
/// offers when generating one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredKey {
    pub key: String,
    /// Usable more than once (otherwise one-off).
    pub reusable: bool,
    /// Devices it admits are removed after being offline a while.
    pub ephemeral: bool,
    /// Devices it admits are tagged with these (`tag:k8s`), not owned by a user.
    pub tags: Vec<String>,
    /// Devices it admits need no approval on a tailnet with device approval.
    pub preauthorized: bool,
}

impl DeclaredKey {
    /// Parses `KEY[:kind,kind...]` with kinds `reusable`, `one-off`,
    /// `ephemeral`, `preauthorized` and `tag=NAME` (repeatable), as the
    /// emulator's `--tailscale-key` flag takes them.
    pub fn parse(spec: &str) -> Result<DeclaredKey, String> {
        let (key, kinds) = spec.split_once(':').unwrap_or((spec, ""));
        if key.is_empty() {
            return Err(format!("{spec:?} names no key"));
        }
        let mut k = DeclaredKey {
            key: key.to_string(),
            reusable: false,
            ephemeral: false,
            tags: Vec::new(),
            preauthorized: false,
        };
        for kind in kinds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match kind {
                "reusable" => k.reusable = true,
                "one-off" => k.reusable = false,
                "ephemeral" => k.ephemeral = true,
                "preauthorized" | "pre-authorized" => k.preauthorized = true,
                t if t.starts_with("tag=") => {
                    let name = &t[4..];
                    let tag = if name.starts_with("tag:") {
                        name.to_string()
                    } else {
                        format!("tag:{name}")
                    };
                    k.tags.push(tag);
                }
                other => {
                    return Err(format!(
                        "unknown key kind {other:?} in {spec:?} (kinds: reusable, one-off, ephemeral, preauthorized, tag=NAME)"
                    ));
                }
            }
        }
        Ok(k)
    }
}

/// How the tailnet behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailnetConfig {
    /// The MagicDNS suffix, e.g. `tail1234.ts.net`.
    pub name: String,
    /// Keys the tailnet accepts. Empty: any `tskey-auth-` key is a valid
    /// reusable, non-ephemeral, pre-authorized, untagged key.
    pub keys: Vec<DeclaredKey>,
    /// How long an ephemeral device may stay offline before it is removed.
    pub ephemeral_offline_ms: u64,
    /// Advertised subnet routes are approved at once (ACL `autoApprovers`).
    pub auto_approve_routes: bool,
    /// The tailnet requires device approval: devices admitted by a key that
    /// is not pre-authorized wait for an admin.
    pub device_approval: bool,
    /// MagicDNS is on.
    pub magic_dns: bool,
    /// Fault: every auth key is refused, as for a revoked or mistyped key.
    pub refuse_all_keys: bool,
    /// tailscaled runs in userspace networking (no TUN device): there is no
    /// `tailscale0`, `tailscale status --json` says `"TUN": false`
    /// (Tailscale `ipn/ipnstate` `Status.TUN`: "If false, it's running in
    /// userspace mode"), and `tailscale ip -4` still answers (facts
    /// "Tailscale, read from source": `cli/ip.go:64-99`).
    pub userspace: bool,
    /// Offline devices that already hold these names when the world
    /// starts (a logout that failed, a VM recreated): a new device asking
    /// for one becomes `<name>-1` (facts "Tailscale as the overlay").
    pub stale_devices: Vec<String>,
    /// The tailnet policy's access rules; `None` is the policy a new
    /// tailnet starts with, which lets every device reach every port of
    /// every other ([`Policy::allow_all`]).
    pub policy: Option<Policy>,
}

impl Default for TailnetConfig {
    fn default() -> Self {
        TailnetConfig {
            name: "tail1234.ts.net".to_string(),
            keys: Vec::new(),
            ephemeral_offline_ms: 30 * 60 * 1000,
            auto_approve_routes: false,
            device_approval: false,
            magic_dns: true,
            refuse_all_keys: false,
            userspace: false,
            stale_devices: Vec::new(),
            policy: None,
        }
    }
}

/// One device on the tailnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: u64,
    /// The identity tailscaled keeps in its state file: a VM that keeps its
    /// disk keeps its device.
    pub node_key: String,
    /// The MagicDNS name (without the tailnet suffix).
    pub name: String,
    /// The host name the device asked for.
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub online: bool,
    pub offline_since_ms: Option<u64>,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    /// Not yet approved by an admin (device approval on, key not
    /// pre-authorized): it has an address but reaches nothing.
    pub needs_approval: bool,
    /// The node uses MagicDNS as its resolver (`--accept-dns`, default on).
    pub accept_dns: bool,
    pub advertised_routes: Vec<String>,
    pub approved_routes: Vec<String>,
    /// The VM the device runs on (for the emulator's views).
    pub vm: String,
}

impl Device {
    /// Can other devices reach it (and it them)?
    pub fn reachable(&self) -> bool {
        self.online && !self.needs_approval
    }
}

/// What `tailscale up` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    pub vm: String,
    /// The node key in the VM's tailscaled state, if it has one.
    pub node_key: Option<String>,
    /// A fresh node key to use if a new device is created.
    pub new_node_key: String,
    pub auth_key: Option<String>,
    /// `--hostname`, else the OS hostname.
    pub hostname: String,
    pub advertise_routes: Vec<String>,
    pub advertise_tags: Vec<String>,
    pub accept_dns: bool,
    /// `--force-reauth`: log in again with the key even if logged in.
    pub force_reauth: bool,
}

/// Why Tailscale refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TailnetError {
    /// Messages follow what `tailscale up` prints for a bad key ("backend
    /// error: invalid key: ..."); the exact wording for each case is not in
    /// the facts file.
    #[error("backend error: invalid key: {0}")]
    InvalidKey(String),
    #[error(
        "not logged in and no auth key given: to authenticate, visit the login URL (the world has no browser: pass --auth-key)"
    )]
    NeedsLogin,
    #[error("requested tags {0:?} are invalid or not permitted")]
    TagsNotPermitted(Vec<String>),
}

/// The tailnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tailnet {
    pub config: TailnetConfig,
    pub devices: BTreeMap<u64, Device>,
    /// One-off keys already used.
    pub used_keys: BTreeSet<String>,
    next_id: u64,
    /// Offset of the next address in 100.64.0.0/10.
    next_ip: u32,
}

/// First address handed out: 100.64.0.1.
const CGNAT_BASE: u32 = u32::from_be_bytes([100, 64, 0, 0]);
/// 100.64.0.0/10 has 2^22 addresses.
const CGNAT_SIZE: u32 = 1 << 22;

/// Whether `ip` is in 100.64.0.0/10, the range Tailscale addresses come from.
pub fn is_tailnet_range(ip: Ipv4Addr) -> bool {
    u32::from(ip) & !(CGNAT_SIZE - 1) == CGNAT_BASE
}

/// A host name as Tailscale turns it into a DNS label: lower case, every
/// character outside `[a-z0-9-]` becomes `-`, at most 63 characters. The
/// facts file is silent on this mapping: it is the model's reading of
/// MagicDNS names (DNS labels); the tool's own names never need it, being
/// DNS labels already (`names::check_node_name`).
pub fn sanitize_hostname(hostname: &str) -> String {
    let mut s: String = hostname
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(63);
    let trimmed = s.trim_matches('-');
    if trimmed.is_empty() {
        "localhost".to_string()
    } else {
        trimmed.to_string()
    }
}

impl Tailnet {
    pub fn new(config: TailnetConfig) -> Self {
        let stale = config.stale_devices.clone();
        let mut t = Tailnet {
            config,
            devices: BTreeMap::new(),
            used_keys: BTreeSet::new(),
            next_id: 1,
            next_ip: 1,
        };
        for name in stale {
            t.add_stale(&name);
        }
        t
    }

    /// An offline device holding `name`, on no VM of the world.
    fn add_stale(&mut self, name: &str) {
        let id = self.next_id;
        self.next_id += 1;
        let ip = Ipv4Addr::from(CGNAT_BASE + (self.next_ip % CGNAT_SIZE));
        self.next_ip += 1;
        let hostname = sanitize_hostname(name);
        let name = self.free_name(&hostname, None);
        self.devices.insert(
            id,
            Device {
                id,
                node_key: format!("nodekey:stale-{id}"),
                name,
                hostname,
                ip,
                online: false,
                offline_since_ms: None,
                ephemeral: false,
                tags: Vec::new(),
                needs_approval: false,
                accept_dns: true,
                advertised_routes: Vec::new(),
                approved_routes: Vec::new(),
                vm: String::new(),
            },
        );
    }

    /// The device a node key belongs to.
    pub fn by_key(&self, node_key: &str) -> Option<&Device> {
        self.devices.values().find(|d| d.node_key == node_key)
    }

    fn by_key_mut(&mut self, node_key: &str) -> Option<&mut Device> {
        self.devices.values_mut().find(|d| d.node_key == node_key)
    }

    /// The device holding a tailnet address.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Device> {
        self.devices.values().find(|d| d.ip == ip)
    }

    fn name_taken(&self, name: &str, except: Option<u64>) -> bool {
        self.devices
            .values()
            .any(|d| d.name == name && Some(d.id) != except)
    }

    /// `name`, or `name-1`, `name-2`... whichever no other device holds.
    fn free_name(&self, wanted: &str, except: Option<u64>) -> String {
        if !self.name_taken(wanted, except) {
            return wanted.to_string();
        }
        (1u32..)
            .map(|i| format!("{wanted}-{i}"))
            .find(|n| !self.name_taken(n, except))
            .unwrap_or_else(|| wanted.to_string())
    }

    fn check_key(&self, key: &str) -> Result<DeclaredKey, TailnetError> {
        if self.config.refuse_all_keys {
            return Err(TailnetError::InvalidKey(
                "unable to validate API key".to_string(),
            ));
        }
        if !key.starts_with(AUTH_KEY_PREFIX) {
            return Err(TailnetError::InvalidKey(format!(
                "auth keys start with {AUTH_KEY_PREFIX:?}"
            )));
        }
        if self.config.keys.is_empty() {
            return Ok(DeclaredKey {
                key: key.to_string(),
                reusable: true,
                ephemeral: false,
                tags: Vec::new(),
                preauthorized: true,
            });
        }
        let declared = self
            .config
            .keys
            .iter()
            .find(|k| k.key == key)
            .ok_or_else(|| TailnetError::InvalidKey("unable to validate API key".to_string()))?;
        if !declared.reusable && self.used_keys.contains(key) {
            return Err(TailnetError::InvalidKey(
                "this one-off key has already been used".to_string(),
            ));
        }
        Ok(declared.clone())
    }

    /// `tailscale up`: brings the VM's device online, creating it (with the
    /// auth key) if the node key is unknown. Returns the device id.
    ///
    /// A device that is already logged in only updates its preferences
    /// (host name, routes, DNS); its key is not checked again unless
    /// `force_reauth`, as Tailscale does.
    pub fn login(&mut self, req: &Login, now_ms: u64) -> Result<u64, TailnetError> {
        let existing = req
            .node_key
            .as_deref()
            .and_then(|k| self.by_key(k))
            .map(|d| d.id);
        if let Some(id) = existing
            && !req.force_reauth
        {
            self.update_prefs(id, req);
            self.set_online(id, true, now_ms);
            return Ok(id);
        }
        let Some(key) = req.auth_key.as_deref() else {
            return Err(TailnetError::NeedsLogin);
        };
        let declared = self.check_key(key)?;
        // Tags: a tagged key applies its tags; asking for tags the key does
        // not carry is refused. (The facts file does not cover tag owners
        // in ACLs; the world grants no tag beyond the key's.)
        let not_permitted: Vec<String> = req
            .advertise_tags
            .iter()
            .filter(|t| !declared.tags.contains(t))
            .cloned()
            .collect();
        if !not_permitted.is_empty() {
            return Err(TailnetError::TagsNotPermitted(not_permitted));
        }
        if !declared.reusable {
            self.used_keys.insert(key.to_string());
        }
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let ip = Ipv4Addr::from(CGNAT_BASE + (self.next_ip % CGNAT_SIZE));
                self.next_ip += 1;
                let hostname = sanitize_hostname(&req.hostname);
                let name = self.free_name(&hostname, None);
                self.devices.insert(
                    id,
                    Device {
                        id,
                        node_key: req.new_node_key.clone(),
                        name,
                        hostname,
                        ip,
                        online: false,
                        offline_since_ms: None,
                        ephemeral: declared.ephemeral,
                        tags: declared.tags.clone(),
                        needs_approval: false,
                        accept_dns: req.accept_dns,
                        advertised_routes: Vec::new(),
                        approved_routes: Vec::new(),
                        vm: req.vm.clone(),
                    },
                );
                id
            }
        };
        let approval = self.config.device_approval && !declared.preauthorized;
        if let Some(d) = self.devices.get_mut(&id) {
            d.needs_approval = approval;
            d.tags = declared.tags.clone();
            d.ephemeral = declared.ephemeral;
        }
        self.update_prefs(id, req);
        self.set_online(id, true, now_ms);
        Ok(id)
    }

    fn update_prefs(&mut self, id: u64, req: &Login) {
        let hostname = sanitize_hostname(&req.hostname);
        let rename = self
            .devices
            .get(&id)
            .is_some_and(|d| d.hostname != hostname);
        let new_name = rename.then(|| self.free_name(&hostname, Some(id)));
        let auto = self.config.auto_approve_routes;
        if let Some(d) = self.devices.get_mut(&id) {
            if let Some(n) = new_name {
                d.name = n;
                d.hostname = hostname;
            }
            d.accept_dns = req.accept_dns;
            d.advertised_routes = req.advertise_routes.clone();
            d.approved_routes
                .retain(|r| req.advertise_routes.contains(r));
            if auto {
                d.approved_routes = req.advertise_routes.clone();
            }
        }
    }

    /// An admin approves a device (device approval on).
    pub fn approve_device(&mut self, id: u64) {
        if let Some(d) = self.devices.get_mut(&id) {
            d.needs_approval = false;
        }
    }

    /// An admin approves a device's advertised routes.
    pub fn approve_routes(&mut self, id: u64) {
        if let Some(d) = self.devices.get_mut(&id) {
            d.approved_routes = d.advertised_routes.clone();
        }
    }

    /// tailscaled is running (or stopped) with this device's state.
    pub fn set_online(&mut self, id: u64, online: bool, now_ms: u64) {
        if let Some(d) = self.devices.get_mut(&id)
            && d.online != online
        {
            d.online = online;
            d.offline_since_ms = (!online).then_some(now_ms);
        }
    }

    /// The device of a node key goes offline (VM stopped, rebooted, deleted).
    pub fn key_offline(&mut self, node_key: &str, now_ms: u64) {
        if let Some(id) = self.by_key_mut(node_key).map(|d| d.id) {
            self.set_online(id, false, now_ms);
        }
    }

    /// `tailscale logout`: the device is removed from the tailnet.
    pub fn logout(&mut self, node_key: &str) -> Option<Device> {
        let id = self.by_key(node_key)?.id;
        self.devices.remove(&id)
    }

    /// Removes ephemeral devices offline longer than the configured time;
    /// returns their names.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let limit = self.config.ephemeral_offline_ms;
        let gone: Vec<u64> = self
            .devices
            .values()
            .filter(|d| {
                d.ephemeral
                    && !d.online
                    && d.offline_since_ms
                        .is_some_and(|t| now_ms.saturating_sub(t) >= limit)
            })
            .map(|d| d.id)
            .collect();
        gone.iter()
            .filter_map(|id| self.devices.remove(id))
            .map(|d| d.name)
            .collect()
    }

    /// The MagicDNS name of a device: `<name>.<tailnet>`.
    pub fn dns_name(&self, d: &Device) -> String {
        format!("{}.{}", d.name, self.config.name)
    }

    /// What a name resolves to for a node whose device is `from` (MagicDNS
    /// only answers nodes on the tailnet that use it as their resolver).
    /// Accepts `<name>.<tailnet>`, with or without the trailing dot, and the
    /// bare `<name>` (MagicDNS adds the tailnet as search domain).
    pub fn resolve(&self, from: Option<&Device>, host: &str) -> Option<Ipv4Addr> {
        let from = from?;
        if !from.reachable() || !from.accept_dns || !self.config.magic_dns {
            return None;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".{}", self.config.name);
        let label = host.strip_suffix(&suffix).unwrap_or(&host);
        if label.contains('.') {
            return None;
        }
        self.devices
            .values()
            .find(|d| d.name == label)
            .map(|d| d.ip)
    }

    /// The address of a peer as `tailscale ip -4 <peer>` finds it: from
    /// the peer list tailscaled holds, without DNS, so MagicDNS being off
    /// or not the node's resolver does not matter (facts "Tailscale, read
    /// from source": `cli/ip.go`, `cli/ping.go:195-219`). Matches an
    /// address, the device's short name (any case) or its whole MagicDNS
    /// name with the final dot, as the peer list holds it; anything else
    /// (`name.tailnet` without the dot) is left to DNS by Tailscale, so
    /// `None` here. The asking node must be on the tailnet.
    pub fn peer_ip(&self, from: Option<&Device>, peer: &str) -> Option<Ipv4Addr> {
        if !from?.reachable() {
            return None;
        }
        if let Ok(ip) = peer.parse::<Ipv4Addr>() {
            return self.by_ip(ip).map(|d| d.ip);
        }
        self.devices
            .values()
            .find(|d| d.name.eq_ignore_ascii_case(peer) || format!("{}.", self.dns_name(d)) == peer)
            .map(|d| d.ip)
    }

    /// Whether `from` can reach `ip` over the tailnet.
    pub fn can_reach(&self, from: Option<&Device>, ip: Ipv4Addr) -> bool {
        let Some(from) = from else {
            return false;
        };
        from.reachable() && self.by_ip(ip).is_some_and(Device::reachable)
    }

    /// Whether `from` can open a connection to `ip` on `proto`/`port`: it
    /// can reach the device ([`Tailnet::can_reach`]) and the policy accepts
    /// the flow. Without a policy every flow is accepted.
    pub fn allows(&self, from: Option<&Device>, ip: Ipv4Addr, proto: Proto, port: u16) -> bool {
        if !self.can_reach(from, ip) {
            return false;
        }
        let (Some(from), Some(to)) = (from, self.by_ip(ip)) else {
            return false;
        };
        self.config
            .policy
            .as_ref()
            .is_none_or(|p| p.allows(from, to, proto, port))
    }
}

/// A transport protocol, for the policy's `proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The access rules of a tailnet policy file (`"acls"`), in Tailscale's
/// syntax: `{"acls": [{"action": "accept", "src": [...], "proto": "tcp",
/// "dst": ["SELECTOR:PORTS"]}]}`. Rules only accept; a flow no rule accepts
/// is dropped (the sender's connect times out).
///
/// What is modelled, from Tailscale's ACL documentation (the facts file
/// is silent on policies, their syntax and their default; the brief for
/// this model says a new tailnet allows everything): selectors `*`,
/// `tag:NAME`, an IPv4 address and an IPv4 CIDR; ports `*`, `N`, `N-M`,
/// comma-separated; `proto` absent (every protocol), `tcp`, `udp` or their
/// numbers. Everything else (groups, users, `hosts`, `autogroup:`, IPv6,
/// `grants`, HuJSON comments) is refused when the policy is read, so a test
/// never runs against a rule the world would silently ignore. Whether
/// Tailscale drops or rejects a filtered packet is not in the facts file:
/// the world drops it (the connect times out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub acls: Vec<AclRule>,
}

/// One entry of `"acls"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    pub action: String,
    pub src: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    pub dst: Vec<String>,
}

/// Top-level keys of a policy file that say nothing about which flows pass.
const NON_FLOW_KEYS: [&str; 7] = [
    "tagOwners",
    "autoApprovers",
    "tests",
    "ssh",
    "nodeAttrs",
    "derpMap",
    "randomizeClientPort",
];

impl Policy {
    /// The policy a new tailnet starts with: everyone reaches everything.
    pub fn allow_all() -> Policy {
        Policy {
            acls: vec![AclRule {
                action: "accept".to_string(),
                src: vec!["*".to_string()],
                proto: None,
                dst: vec!["*:*".to_string()],
            }],
        }
    }

    /// Reads a policy file (plain JSON), refusing what the world does not
    /// model.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("a policy file is a JSON object")?;
        for k in obj.keys() {
            if k != "acls" && !NON_FLOW_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "{k:?} is not modelled by the world (only \"acls\" decides which flows pass)"
                ));
            }
        }
        let acls = obj
            .get("acls")
            .cloned()
            .unwrap_or(serde_json::Value::Array(Vec::new()));
        let acls: Vec<AclRule> =
            serde_json::from_value(acls).map_err(|e| format!("\"acls\": {e}"))?;
        for (i, r) in acls.iter().enumerate() {
            r.check().map_err(|e| format!("acls[{i}]: {e}"))?;
        }
        Ok(Policy { acls })
    }

    /// Whether some rule accepts `proto`/`port` from `from` to `to`.
    pub fn allows(&self, from: &Device, to: &Device, proto: Proto, port: u16) -> bool {
        self.acls.iter().any(|r| {
            r.proto_matches(proto)
                && r.src.iter().any(|s| selector_matches(s, from))
                && r.dst.iter().any(|d| {
                    split_dst(d).is_some_and(|(sel, ports)| {
                        selector_matches(sel, to) && ports_match(ports, port)
                    })
                })
        })
    }
}

impl AclRule {
    fn check(&self) -> Result<(), String> {
        if self.action != "accept" {
            return Err(format!("action {:?}: rules only accept", self.action));
        }
        if let Some(p) = &self.proto
            && !matches!(p.as_str(), "tcp" | "udp" | "6" | "17")
        {
            return Err(format!("proto {p:?} is not modelled (tcp, udp)"));
        }
        for s in &self.src {
            check_selector(s)?;
        }
        for d in &self.dst {
            let (sel, ports) =
                split_dst(d).ok_or_else(|| format!("dst {d:?} is not SELECTOR:PORTS"))?;
            check_selector(sel)?;
            for p in ports.split(',') {
                if p != "*" && parse_range(p).is_none() {
                    return Err(format!("dst {d:?}: {p:?} is not a port or range"));
                }
            }
        }
        Ok(())
    }

    fn proto_matches(&self, proto: Proto) -> bool {
        match self.proto.as_deref() {
            None => true,
            Some("tcp" | "6") => proto == Proto::Tcp,
            Some("udp" | "17") => proto == Proto::Udp,
            Some(_) => false,
        }
    }
}

fn split_dst(d: &str) -> Option<(&str, &str)> {
    d.rsplit_once(':')
        .filter(|(s, p)| !s.is_empty() && !p.is_empty())
}

fn parse_range(p: &str) -> Option<(u16, u16)> {
    match p.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)).filter(|(a, b)| a <= b),
        None => p.parse().ok().map(|n| (n, n)),
    }
}

fn ports_match(ports: &str, port: u16) -> bool {
    ports
        .split(',')
        .any(|p| p == "*" || parse_range(p).is_some_and(|(a, b)| (a..=b).contains(&port)))
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u32)> {
    let (ip, bits) = s.split_once('/').unwrap_or((s, "32"));
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 32)?;
    Some((ip.parse().ok()?, bits))
}

fn check_selector(s: &str) -> Result<(), String> {
    let tag_ok = s
        .strip_prefix("tag:")
        .is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if s == "*" || tag_ok || parse_cidr(s).is_some() {
        Ok(())
    } else {
        Err(format!(
            "selector {s:?} is not modelled (*, tag:NAME, an IPv4 address or CIDR)"
        ))
    }
}

fn selector_matches(s: &str, d: &Device) -> bool {
    if s == "*" {
        return true;
    }
    if s.starts_with("tag:") {
        return d.tags.iter().any(|t| t == s);
    }
    parse_cidr(s).is_some_and(|(net, bits)| {
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        u32::from(net) & mask == u32::from(d.ip) & mask
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(vm: &str, key: Option<&str>, node_key: Option<&str>) -> Login {
        Login {
            vm: vm.to_string(),
            node_key: node_key.map(str::to_string),
            new_node_key: format!("nk-{vm}-{}", node_key.unwrap_or("new")),
            auth_key: key.map(str::to_string),
            hostname: vm.to_string(),
            accept_dns: true,
            ..Login::default()
        }
    }

    #[test]
    fn any_auth_key_is_valid_unless_keys_are_declared() {
        let mut t = Tailnet::new(TailnetConfig::default());
        assert!(
            t.login(&login("a-vm", Some("tskey-auth-x"), None), 0)
                .is_ok()
        );
        assert!(matches!(
            t.login(&login("b-vm", Some("tskey-api-x"), None), 0),
            Err(TailnetError::InvalidKey(_))
        ));
        assert_eq!(
            t.login(&login("c-vm", None, None), 0),
            Err(TailnetError::NeedsLogin)
        );
        let mut t = Tailnet::new(TailnetConfig {
            keys: vec![DeclaredKey::parse("tskey-auth-one:one-off").unwrap()],
            ..TailnetConfig::default()
        });
        assert!(matches!(
            t.login(&login("a-vm", Some("tskey-auth-other"), None), 0),
            Err(TailnetError::InvalidKey(_))
        ));
        assert!(
            t.login(&login("a-vm", Some("tskey-auth-one"), None), 0)
                .is_ok()
        );
        let again = t.login(&login("b-vm", Some("tskey-auth-one"), None), 0);
        assert!(
            matches!(&again, Err(TailnetError::InvalidKey(m)) if m.contains("already been used")),
            "{again:?}"
        );
    }

    #[test]
    fn refused_keys_fault_refuses_everything() {
        let mut t = Tailnet::new(TailnetConfig {
            refuse_all_keys: true,
            ..TailnetConfig::default()
        });
        assert!(
            t.login(&login("a-vm", Some("tskey-auth-x"), None), 0)
                .is_err()
        );
    }

    #[test]
    fn names_collide_into_dash_one_and_addresses_are_stable() {
        let mut t = Tailnet::new(TailnetConfig::default());
        let a = t
            .login(&login("demo-cp1", Some("tskey-auth-x"), None), 0)
            .unwrap();
        let ip_a = t.devices[&a].ip;
        assert!(is_tailnet_range(ip_a));
        assert_eq!(ip_a, Ipv4Addr::new(100, 64, 0, 1));
        // The VM is replaced without logging out: the new device is -1 and
        // the old name still points at the old device.
        t.key_offline(&t.devices[&a].node_key.clone(), 5);
        let mut l = login("demo-cp1", Some("tskey-auth-x"), None);
        l.new_node_key = "other".into();
        let b = t.login(&l, 10).unwrap();
        assert_eq!(t.devices[&b].name, "demo-cp1-1");
        let me = t.devices[&b].clone();
        assert_eq!(t.resolve(Some(&me), "demo-cp1.tail1234.ts.net"), Some(ip_a));
        // A re-login with the node key keeps the device, its name and IP.
        let again = t
            .login(&login("demo-cp1", None, Some("nk-demo-cp1-new")), 20)
            .unwrap();
        assert_eq!(again, a);
        assert_eq!(t.devices[&a].ip, ip_a);
        assert!(t.devices[&a].online);
        // Logging the old device out frees the name for good.
        t.logout("nk-demo-cp1-new");
        let mut l = login("demo-cp1", Some("tskey-auth-x"), None);
        l.new_node_key = "third".into();
        let c = t.login(&l, 30).unwrap();
        assert_eq!(t.devices[&c].name, "demo-cp1");
        assert_ne!(t.devices[&c].ip, ip_a, "a new device gets a new address");
    }

    #[test]
    fn ephemeral_devices_expire_after_the_offline_time() {
        let mut t = Tailnet::new(TailnetConfig {
            keys: vec![DeclaredKey::parse("tskey-auth-e:reusable,ephemeral").unwrap()],
            ephemeral_offline_ms: 100,
            ..TailnetConfig::default()
        });
        let id = t
            .login(&login("a-vm", Some("tskey-auth-e"), None), 0)
            .unwrap();
        assert!(t.expire(1000).is_empty(), "online devices stay");
        t.set_online(id, false, 1000);
        assert!(t.expire(1050).is_empty());
        assert_eq!(t.expire(1100), ["a-vm"]);
        assert!(t.devices.is_empty());
    }

    #[test]
    fn tags_and_approval() {
        let mut t = Tailnet::new(TailnetConfig {
            keys: vec![
                DeclaredKey::parse("tskey-auth-t:reusable,tag=k8s,preauthorized").unwrap(),
                DeclaredKey::parse("tskey-auth-u:reusable").unwrap(),
            ],
            device_approval: true,
            ..TailnetConfig::default()
        });
        let mut l = login("a-vm", Some("tskey-auth-t"), None);
        l.advertise_tags = vec!["tag:k8s".into()];
        let a = t.login(&l, 0).unwrap();
        assert_eq!(t.devices[&a].tags, ["tag:k8s"]);
        assert!(t.devices[&a].reachable());
        let mut l = login("b-vm", Some("tskey-auth-u"), None);
        l.advertise_tags = vec!["tag:k8s".into()];
        assert!(matches!(
            t.login(&l, 0),
            Err(TailnetError::TagsNotPermitted(_))
        ));
        let b = t
            .login(&login("b-vm", Some("tskey-auth-u"), None), 0)
            .unwrap();
        assert!(!t.devices[&b].reachable(), "waits for approval");
        let from = t.devices[&a].clone();
        assert!(!t.can_reach(Some(&from), t.devices[&b].ip));
        t.approve_device(b);
        assert!(t.can_reach(Some(&from), t.devices[&b].ip));
    }

    #[test]
    fn routes_need_approval_unless_auto_approved() {
        for auto in [false, true] {
            let mut t = Tailnet::new(TailnetConfig {
                auto_approve_routes: auto,
                ..TailnetConfig::default()
            });
            let mut l = login("a-vm", Some("tskey-auth-x"), None);
            l.advertise_routes = vec!["10.42.0.0/24".into()];
            let id = t.login(&l, 0).unwrap();
            assert_eq!(t.devices[&id].approved_routes.is_empty(), !auto);
            t.approve_routes(id);
            assert_eq!(t.devices[&id].approved_routes, ["10.42.0.0/24"]);
        }
    }

    #[test]
    fn magicdns_needs_the_resolver_and_the_tailnet() {
        let mut t = Tailnet::new(TailnetConfig::default());
        let a = t
            .login(&login("a-vm", Some("tskey-auth-x"), None), 0)
            .unwrap();
        let mut l = login("b-vm", Some("tskey-auth-x"), None);
        l.accept_dns = false;
        let b = t.login(&l, 0).unwrap();
        let (da, db) = (t.devices[&a].clone(), t.devices[&b].clone());
        assert_eq!(t.resolve(Some(&da), "b-vm.tail1234.ts.net."), Some(db.ip));
        assert_eq!(t.resolve(Some(&da), "b-vm"), Some(db.ip));
        assert_eq!(t.resolve(Some(&da), "b-vm.other.ts.net"), None);
        assert_eq!(t.resolve(Some(&db), "a-vm.tail1234.ts.net"), None);
        assert_eq!(t.resolve(None, "a-vm.tail1234.ts.net"), None);
        assert_eq!(sanitize_hostname("My_Host.local"), "my-host-local");
        // The peer list answers without DNS: a node that does not use
        // MagicDNS, or a tailnet without it, still finds its peers.
        assert_eq!(t.peer_ip(Some(&db), "a-vm"), Some(da.ip));
        assert_eq!(t.peer_ip(Some(&db), "a-vm.tail1234.ts.net."), Some(da.ip));
        assert_eq!(t.peer_ip(Some(&db), "A-VM"), Some(da.ip));
        assert_eq!(
            t.peer_ip(Some(&db), "a-vm.tail1234.ts.net"),
            None,
            "left to DNS"
        );
        assert_eq!(t.peer_ip(Some(&db), &da.ip.to_string()), Some(da.ip));
        assert_eq!(t.peer_ip(Some(&db), "c-vm"), None);
        assert_eq!(t.peer_ip(None, "a-vm"), None);
        let mut off = Tailnet::new(TailnetConfig {
            magic_dns: false,
            ..TailnetConfig::default()
        });
        let a = off
            .login(&login("a-vm", Some("tskey-auth-x"), None), 0)
            .unwrap();
        let b = off
            .login(&login("b-vm", Some("tskey-auth-x"), None), 0)
            .unwrap();
        let (da, db) = (off.devices[&a].clone(), off.devices[&b].clone());
        assert_eq!(off.resolve(Some(&db), "a-vm"), None);
        assert_eq!(off.peer_ip(Some(&db), "a-vm"), Some(da.ip));
    }

    #[test]
    fn key_specs_parse() {
        let k =
            DeclaredKey::parse("tskey-auth-a:reusable,ephemeral,tag=k8s,preauthorized").unwrap();
        assert!(k.reusable && k.ephemeral && k.preauthorized);
        assert_eq!(k.tags, ["tag:k8s"]);
        assert!(DeclaredKey::parse("tskey-auth-a:bogus").is_err());
        assert!(!DeclaredKey::parse("tskey-auth-a").unwrap().reusable);
    }

    #[test]
    fn a_policy_accepts_only_what_a_rule_names() {
        let policy = Policy::parse(
            r#"{"tagOwners": {"tag:k8s": []},
                "acls": [{"action": "accept", "src": ["tag:k8s"], "proto": "tcp", "dst": ["tag:k8s:6443,2379-2380"]},
                         {"action": "accept", "src": ["100.64.0.0/10"], "dst": ["100.64.0.9:10250"]}]}"#,
        )
        .unwrap();
        let mut t = Tailnet::new(TailnetConfig {
            keys: vec![DeclaredKey::parse("tskey-auth-k:reusable,preauthorized,tag=k8s").unwrap()],
            policy: Some(policy),
            ..TailnetConfig::default()
        });
        let a = t
            .login(&login("a-vm", Some("tskey-auth-k"), None), 0)
            .unwrap();
        let b = t
            .login(&login("b-vm", Some("tskey-auth-k"), None), 0)
            .unwrap();
        let (da, ip_b) = (t.devices[&a].clone(), t.devices[&b].ip);
        assert!(t.allows(Some(&da), ip_b, Proto::Tcp, 6443));
        assert!(t.allows(Some(&da), ip_b, Proto::Tcp, 2380));
        assert!(!t.allows(Some(&da), ip_b, Proto::Udp, 6443), "proto: tcp");
        assert!(!t.allows(Some(&da), ip_b, Proto::Tcp, 10250), "no rule");
        assert!(!t.allows(Some(&da), ip_b, Proto::Udp, 8472));
        assert!(!t.allows(None, ip_b, Proto::Tcp, 6443), "off the tailnet");
        // Without a policy (a new tailnet's), everything passes.
        t.config.policy = None;
        assert!(t.allows(Some(&da), ip_b, Proto::Udp, 8472));
        t.config.policy = Some(Policy::allow_all());
        assert!(t.allows(Some(&da), ip_b, Proto::Tcp, 10250));
    }

    #[test]
    fn a_policy_the_world_cannot_model_is_refused() {
        for (text, why) in [
            (r#"{"grants": []}"#, "grants"),
            (
                r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#,
                "only accept",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["group:eng"], "dst": ["*:*"]}]}"#,
                "group:eng",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:k8s"]}]}"#,
                "\"tag\"",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:http"]}]}"#,
                "http",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "proto": "sctp", "dst": ["*:*"]}]}"#,
                "sctp",
            ),
            ("// comment\n{}", "not JSON"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
