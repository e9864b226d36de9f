//! `tailscale` and `tailscaled` in a VM, over the tailnet model. The
//! device's identity is tailscaled's state file (`STATE_FILE`, holding the
//! node key): a VM that keeps its disk keeps its device, name and address;
//! a new VM is a new device. IPv6 tailnet addresses are not modelled.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Args;
use crate::world::Inner;
use crate::world::protocol::{Call, Output};
use crate::world::tailnet::{Device, Login};

use crate::world::model::STATE_FILE;

const VERSION: &str = "1.76.1";

fn not_running() -> Output {
    Output::fail(
        1,
        "failed to connect to local tailscaled; it doesn't appear to be running (sudo systemctl start tailscaled ?)",
    )
}

fn access_denied(sub: &str) -> Output {
    Output::fail(
        1,
        format!(
            "Access denied: prefs write access denied\n\nUse 'sudo tailscale {sub}'.\nTo not require root, use 'sudo tailscale set --operator=$USER' once."
        ),
    )
}

fn bool_flag(v: Option<&str>) -> bool {
    !matches!(v, Some("false" | "0"))
}

/// Flags of `up` / `set` / `login`.
#[derive(Debug, Default)]
struct UpFlags {
    auth_key: Option<String>,
    hostname: Option<String>,
    routes: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    accept_dns: Option<bool>,
    force_reauth: bool,
    timeout: Option<Duration>,
}

fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok()
}

fn parse_up(args: &[String]) -> Result<UpFlags, Output> {
    let mut f = UpFlags::default();
    // Go's flag package: `-flag=value` and `--flag=value` alike.
    let mut flags = Args::new(args, |_| true);
    while let Some(flag) = flags.next_flag() {
        let k = flag.trim_start_matches('-');
        let inline = flags.inline();
        let takes_value = matches!(
            k,
            "authkey"
                | "auth-key"
                | "hostname"
                | "advertise-routes"
                | "advertise-tags"
                | "timeout"
                | "login-server"
                | "operator"
                | "exit-node"
                | "netfilter-mode"
        );
        let value = if takes_value {
            flags.value()
        } else {
            inline.clone()
        };
        match k {
            "authkey" | "auth-key" => f.auth_key = value,
            "hostname" => f.hostname = value,
            "advertise-routes" => {
                f.routes = Some(
                    value
                        .unwrap_or_default()
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
            "advertise-tags" => {
                f.tags = Some(
                    value
                        .unwrap_or_default()
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
            "accept-dns" => f.accept_dns = Some(bool_flag(value.as_deref())),
            "force-reauth" => f.force_reauth = bool_flag(value.as_deref()),
            "timeout" => {
                f.timeout = Some(
                    parse_duration(value.as_deref().unwrap_or_default()).ok_or_else(|| {
                        Output::fail(
                            2,
                            format!("invalid value {value:?} for flag -timeout: parse error"),
                        )
                    })?,
                )
            }
            "reset"
            | "accept-routes"
            | "ssh"
            | "shields-up"
            | "advertise-exit-node"
            | "json"
            | "qr"
            | "login-server"
            | "operator"
            | "exit-node"
            | "netfilter-mode"
            | "unattended" => {}
            _ => {
                return Err(Output::fail(
                    2,
                    format!("flag provided but not defined: -{k}"),
                ));
            }
        }
    }
    Ok(f)
}

fn peer_json(m: &crate::world::model::Model, d: &Device) -> Value {
    let mut v = json!({
        "ID": format!("n{}", d.id), "PublicKey": d.node_key, "HostName": d.hostname,
        "DNSName": format!("{}.", m.tailnet.dns_name(d)), "OS": "linux", "UserID": 1,
        "TailscaleIPs": [d.ip.to_string()], "Online": d.online, "Active": d.online,
        "Relay": "", "ExitNode": false, "ExitNodeOption": false,
    });
    if !d.tags.is_empty() {
        v["Tags"] = json!(d.tags);
    }
    if !d.approved_routes.is_empty() {
        v["PrimaryRoutes"] = json!(d.approved_routes);
    }
    v
}

fn status(inner: &Inner, call: &Call, as_json: bool) -> Output {
    let m = inner.model();
    let me = m.device_of(&call.vm).cloned();
    let starting = m
        .vms
        .get(&call.vm)
        .is_some_and(|v| v.tailscaled && v.tailnet_up_at.is_some());
    let state = match &me {
        None => "NeedsLogin",
        Some(d) if !d.online && starting => "Starting",
        Some(d) if d.needs_approval => "NeedsMachineAuth",
        Some(d) if !d.online => "Stopped",
        Some(_) => "Running",
    };
    if !as_json {
        let Some(me) = me.filter(|d| d.online) else {
            return Output {
                code: 1,
                stdout: format!(
                    "Logged out.\nLog in at: https://login.tailscale.com/ (state: {state})\n"
                ),
                stderr: String::new(),
            };
        };
        let mut out = format!(
            "{}  {}  {}  linux  -\n",
            me.ip,
            me.name,
            if me.tags.is_empty() {
                "exedev@"
            } else {
                "tagged-devices"
            }
        );
        for d in m.tailnet.devices.values().filter(|d| d.id != me.id) {
            out.push_str(&format!(
                "{}  {}  {}  linux  {}\n",
                d.ip,
                d.name,
                if d.tags.is_empty() {
                    "exedev@"
                } else {
                    "tagged-devices"
                },
                if d.online { "-" } else { "offline" }
            ));
        }
        return Output::ok(out);
    }
    let suffix = m.tailnet.config.name.clone();
    let mut peers = serde_json::Map::new();
    if let Some(me) = &me {
        for d in m.tailnet.devices.values().filter(|d| d.id != me.id) {
            peers.insert(d.node_key.clone(), peer_json(&m, d));
        }
    }
    let v = json!({
        "Version": VERSION,
        "TUN": !m.tailnet.config.userspace,
        "BackendState": state,
        "AuthURL": "",
        "TailscaleIPs": me.as_ref().map(|d| vec![d.ip.to_string()]).unwrap_or_default(),
        "Self": me.as_ref().map(|d| peer_json(&m, d)).unwrap_or(Value::Null),
        "Health": [],
        "MagicDNSSuffix": suffix,
        "CurrentTailnet": me.as_ref().map(|_| json!({"Name": suffix, "MagicDNSSuffix": suffix, "MagicDNSEnabled": m.tailnet.config.magic_dns})),
        "CertDomains": me.as_ref().map(|d| vec![m.tailnet.dns_name(d)]),
        "Peer": peers,
        "User": {},
    });
    Output::ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    ))
}

async fn up(inner: &Arc<Inner>, call: &Call, f: UpFlags, set_only: bool) -> Output {
    let now = crate::world::now_ms();
    let key = {
        let mut m = inner.model();
        let current = m.device_of(&call.vm).cloned();
        if set_only && current.is_none() {
            return Output::fail(1, "not logged in: run `tailscale up` first");
        }
        let node_key = m.vms.get(&call.vm).and_then(|v| v.node_key.clone());
        let new_node_key = m.new_secret("nodekey:");
        let login = Login {
            vm: call.vm.clone(),
            node_key,
            new_node_key,
            auth_key: f.auth_key.clone(),
            hostname: f
                .hostname
                .clone()
                .or_else(|| current.as_ref().map(|d| d.hostname.clone()))
                .unwrap_or_else(|| call.vm.clone()),
            advertise_routes: f
                .routes
                .clone()
                .or_else(|| current.as_ref().map(|d| d.advertised_routes.clone()))
                .unwrap_or_default(),
            advertise_tags: f.tags.clone().unwrap_or_default(),
            accept_dns: f
                .accept_dns
                .or_else(|| current.as_ref().map(|d| d.accept_dns))
                .unwrap_or(true),
            force_reauth: f.force_reauth,
        };
        match m.tailnet.login(&login, now) {
            Ok(id) => {
                let key = m.tailnet.devices[&id].node_key.clone();
                let name = m.tailnet.devices[&id].name.clone();
                if let Some(v) = m.vms.get_mut(&call.vm) {
                    v.node_key = Some(key.clone());
                    v.log(
                        now,
                        "tailscaled",
                        "tailscaled",
                        format!("logged in as {name}"),
                    );
                }
                key
            }
            Err(e) => return Output::fail(1, e.to_string()),
        }
    };
    if let Err(e) = inner
        .root(&call.vm)
        .write(STATE_FILE, 0o600, key.as_bytes())
    {
        return Output::fail(1, format!("cannot write {STATE_FILE}: {e}"));
    }
    // A device awaiting approval: `up` waits for an admin, up to --timeout.
    let started = std::time::Instant::now();
    loop {
        let waiting = {
            let m = inner.model();
            if m.vms.get(&call.vm).is_none_or(|v| v.boot != call.boot) {
                return Output::fail(1, "the VM is going down");
            }
            m.tailnet.by_key(&key).is_some_and(|d| d.needs_approval)
        };
        if !waiting {
            return Output::default();
        }
        if f.timeout.is_some_and(|t| started.elapsed() >= t) {
            return Output::fail(
                1,
                "timeout waiting for Tailscale service to enter a Running state; last state: NeedsMachineAuth",
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `tailscale ARGS...`
pub async fn tailscale(inner: &Arc<Inner>, call: &Call) -> Output {
    let Some((sub, rest)) = call.args.split_first() else {
        return Output::fail(
            1,
            "tailscale: which subcommand? (up, down, logout, ip, status, set, version)",
        );
    };
    if sub == "version" || sub == "--version" {
        return Output::ok(format!("{VERSION}\n  tailscale commit: exedev-world\n"));
    }
    let running = inner
        .model()
        .vms
        .get(&call.vm)
        .is_some_and(|v| v.tailscaled);
    if !running {
        return not_running();
    }
    let root = call.uid == 0;
    match sub.as_str() {
        "up" | "login" | "set" => {
            if !root {
                return access_denied(sub);
            }
            match parse_up(rest) {
                Ok(f) => up(inner, call, f, sub == "set").await,
                Err(o) => o,
            }
        }
        "down" => {
            if !root {
                return access_denied(sub);
            }
            let mut m = inner.model();
            if let Some(id) = m.device_of(&call.vm).map(|d| d.id) {
                m.tailnet.set_online(id, false, crate::world::now_ms());
            }
            Output::default()
        }
        "logout" => {
            if !root {
                return access_denied(sub);
            }
            let key = {
                let mut m = inner.model();
                let key = m.vms.get_mut(&call.vm).and_then(|v| v.node_key.take());
                if let Some(k) = &key {
                    m.tailnet.logout(k);
                }
                key
            };
            let _ = inner.root(&call.vm).remove(STATE_FILE);
            if key.is_none() {
                return Output::fail(1, "not logged in");
            }
            Output::default()
        }
        "ip" => {
            let m = inner.model();
            let peer = rest.iter().find(|a| !a.starts_with('-'));
            let ip = match peer {
                // The peer list first, then DNS (MagicDNS, if the VM
                // resolves through it): Tailscale cli/ping.go:195-219.
                Some(name) => m.tailnet.peer_ip(m.device_of(&call.vm), name).or_else(|| {
                    m.resolve(&call.vm, name)
                        .filter(|ip| m.tailnet.by_ip(*ip).is_some())
                }),
                None => m.device_of(&call.vm).filter(|d| d.online).map(|d| d.ip),
            };
            if rest.iter().any(|a| a == "-6" || a == "--6") {
                return Output::fail(
                    1,
                    "no current Tailscale IPv6 address (the world models IPv4 only)",
                );
            }
            match ip {
                Some(ip) => Output::ok(format!("{ip}\n")),
                None if peer.is_some() => Output::fail(
                    1,
                    format!("no such peer {:?}", peer.cloned().unwrap_or_default()),
                ),
                None => {
                    let starting = m
                        .vms
                        .get(&call.vm)
                        .is_some_and(|v| v.tailscaled && v.tailnet_up_at.is_some());
                    let state = if starting { "Starting" } else { "NeedsLogin" };
                    Output::fail(1, format!("no current Tailscale IPs; state: {state}"))
                }
            }
        }
        "status" => status(
            inner,
            call,
            rest.iter()
                .any(|a| a.trim_start_matches('-').starts_with("json")),
        ),
        "debug" if rest.first().is_some_and(|a| a == "prefs") => {
            let m = inner.model();
            let routes = m
                .device_of(&call.vm)
                .map(|d| d.advertised_routes.clone())
                .unwrap_or_default();
            Output::ok(format!("{}\n", json!({"AdvertiseRoutes": routes})))
        }
        other => Output::fail(
            1,
            format!(
                "tailscale: unknown subcommand {other:?} (the world's tailscale knows up, down, logout, ip, status, set, version)"
            ),
        ),
    }
}

/// `tailscaled ARGS...`: registers the daemon (the stand-in then stays in
/// the foreground).
pub fn tailscaled(inner: &Inner, call: &Call) -> Output {
    if call.args.iter().any(|a| a.contains("version")) {
        return Output::ok(format!("{VERSION}\n"));
    }
    if call.args.iter().any(|a| a.contains("cleanup")) {
        return Output::default();
    }
    if call.uid != 0 {
        return Output::fail(1, "tailscaled: must be run as root");
    }
    let mut m = inner.model();
    if m.vms.get(&call.vm).is_some_and(|v| v.tailscaled) {
        return Output::fail(
            1,
            "tailscaled: another tailscaled is running: listen unix /run/tailscale/tailscaled.sock: bind: address already in use",
        );
    }
    m.start_tailscaled(&call.vm, crate::world::now_ms());
    Output::default()
}
