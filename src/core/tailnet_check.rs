//! Whether the tailnet lets the fleet's nodes reach each other on the
//! ports k3s needs, as seen from the nodes themselves, and the policy entry
//! to add when it does not. Pure: the edge ([`crate::edges::remote`]) runs the
//! commands built here over SSH and hands back their output.
//!
//! The design (README, "Secrets"; ARCHITECTURE, bootstrap) puts node,
//! etcd and flannel VXLAN on `tailscale0`, so the tailnet's policy must
//! accept, between the fleet's devices: 6443/tcp (API and supervisor: every
//! node to the servers), 2379-2380/tcp (etcd: servers to servers), 10250/tcp
//! (kubelet: every node to every other, as the API server and in-cluster
//! scrapers dial it) and 8472/udp (VXLAN), the ports of k3s-facts.md
//! ("Ports"). The facts file does not say what Tailscale does with a packet
//! its policy drops; this check assumes it is dropped silently, so a dropped
//! flow is a connect that times out, while a refused connect (nothing
//! listening) proves the flow passed. UDP 8472 cannot be confirmed by a
//! connect at all: it is named in the entry, never reported as checked.
//!
//! Everything read from a VM is untrusted: addresses must parse as IPv4,
//! tags must look like Tailscale tags, and nothing a VM prints reaches a
//! command line or the printed entry otherwise.

use std::collections::{BTreeMap, BTreeSet};
// The address type only (`core::net` has no I/O).
use core::net::Ipv4Addr;

use serde::Serialize;

/// The API server and k3s's supervisor.
pub const API_PORT: u16 = 6443;
/// etcd's client port (servers).
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port (servers).
pub const ETCD_PEER_PORT: u16 = 2380;
/// The kubelet (every node).
pub const KUBELET_PORT: u16 = 10250;
/// Flannel's VXLAN over `tailscale0` (UDP: not checkable by a connect).
pub const VXLAN_PORT: u16 = 8472;

/// The ports of the entry to add, in Tailscale's `dst` port syntax.
pub const ENTRY_PORTS: &str = "6443,2379-2380,8472,10250";

/// Seconds a probe waits for a TCP connection.
pub const CONNECT_TIMEOUT_SECS: u64 = 3;

/// What a port is for, for messages.
pub fn port_name(port: u16) -> &'static str {
    match port {
        API_PORT => "API server and supervisor",
        ETCD_CLIENT_PORT | ETCD_PEER_PORT => "etcd",
        KUBELET_PORT => "kubelet",
        VXLAN_PORT => "flannel VXLAN",
        _ => "k3s",
    }
}

/// A fleet node on the tailnet, its address and tags confirmed by the
/// tailnet's own records ([`confirm`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TailnetNode {
    pub vm: String,
    pub server: bool,
    pub ip: Ipv4Addr,
    /// Its ACL tags (`tag:k8s`), only well-formed ones.
    pub tags: Vec<String>,
}

/// The remote command that prints the node's own tailnet identity.
/// `sudo -n`, as the setup script calls `tailscale`.
pub fn identity_command() -> Vec<String> {
    ["sudo", "-n", "tailscale", "status", "--json"]
        .map(String::from)
        .to_vec()
}

/// A Tailscale ACL tag: `tag:` and letters, digits and dashes.
pub fn is_tag(t: &str) -> bool {
    t.strip_prefix("tag:").is_some_and(|n| {
        !n.is_empty() && n.len() <= 80 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// What a node's `tailscale status --json` says: its own address and tags
/// (its claim), and what its tailnet map (`Peer`, which Tailscale's
/// coordination server hands the node) records for other devices, by
/// MagicDNS host label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub ip: Option<Ipv4Addr>,
    pub tags: Vec<String>,
    /// `demo-cp1` (from `DNSName` `demo-cp1.tail1234.ts.net.`) -> its first
    /// IPv4 address and well-formed tags.
    pub peers: BTreeMap<String, (Ipv4Addr, Vec<String>)>,
}

/// The first IPv4 address and the well-formed tags of one status entry.
fn entry_identity(e: &serde_json::Value) -> (Option<Ipv4Addr>, Vec<String>) {
    let ip = e["TailscaleIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.parse::<Ipv4Addr>().ok())
        .next();
    let mut tags: Vec<String> = e["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().filter(|t| is_tag(t)).map(str::to_string))
        .collect();
    tags.sort();
    tags.dedup();
    (ip, tags)
}

/// Reads `tailscale status --json`: the node's first IPv4 tailnet address
/// and its tags (ill-formed ones dropped), and the peers its tailnet map
/// holds. All of it is untrusted: [`confirm`] decides what counts.
pub fn parse_identity(out: &str) -> Result<Identity, String> {
    let v: serde_json::Value = serde_json::from_str(out)
        .map_err(|_| "`tailscale status --json` did not print JSON".to_string())?;
    let (ip, tags) = entry_identity(&v["Self"]);
    if ip.is_none() {
        let state = v["BackendState"].as_str().unwrap_or("unknown");
        return Err(format!(
            "not on the tailnet (Tailscale state {})",
            crate::base::text::one_line(&state.chars().take(40).collect::<String>())
        ));
    }
    let peers = v["Peer"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|p| {
            let label = p["DNSName"]
                .as_str()?
                .split('.')
                .next()?
                .to_ascii_lowercase();
            let (ip, tags) = entry_identity(p);
            Some((label, (ip?, tags)))
        })
        .collect();
    Ok(Identity { ip, tags, peers })
}

/// Tailscale's address range, 100.64.0.0/10 (the CGNAT block its
/// coordination server assigns IPv4 addresses from).
fn is_tailnet_address(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 100 && (64..128).contains(&b)
}

/// What [`confirm`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Confirmed {
    /// Nodes whose address and tags the tailnet's records confirm.
    pub nodes: Vec<TailnetNode>,
    /// VMs claiming an identity the fleet does not expect, and what: each a
    /// problem of that VM.
    pub suspect: Vec<(String, String)>,
    /// VMs whose claim nothing confirms or contradicts, and why.
    pub unchecked: Vec<(String, String)>,
}

/// The fleet's nodes whose identity the tailnet's own records confirm, and
/// a named problem for each VM that claims an identity the fleet does not
/// expect. A VM's own report is only a claim (a compromised VM prints what
/// it likes): its address and tags count only when every other fleet
/// node's tailnet map records the same for it (the coordination server's
/// view, not the VM's); the address must be in 100.64.0.0/10 and no other
/// VM's. A VM no other node's map lists is left out, said in `unchecked`
/// (its identity is its own claim only). Only confirmed nodes are probed
/// and named in the policy entry. k3s-facts.md is silent on whether a
/// node's `Peer` map lists a device the policy lets it neither reach nor be
/// reached by; if it does not, a policy that drops every fleet flow leaves
/// the nodes unconfirmed ("not checked") rather than trusted.
pub fn confirm(reports: Vec<(String, bool, Identity)>) -> Confirmed {
    let mut nodes = Vec::new();
    let mut suspect = Vec::new();
    let mut unchecked = Vec::new();
    let mut claimed: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (_, _, id) in &reports {
        if let Some(ip) = id.ip {
            *claimed.entry(ip).or_default() += 1;
        }
    }
    for (vm, server, id) in &reports {
        let Some(ip) = id.ip else { continue };
        let records: Vec<(&String, &(Ipv4Addr, Vec<String>))> = reports
            .iter()
            .filter(|(other, _, _)| other != vm)
            .filter_map(|(other, _, o)| Some((other, o.peers.get(vm)?)))
            .collect();
        let claim = (ip, id.tags.clone());
        let contradicted = records.iter().find(|(_, r)| **r != claim);
        let why = if !is_tailnet_address(ip) {
            Some(format!(
                "reports tailnet address {ip}, outside Tailscale's 100.64.0.0/10"
            ))
        } else if claimed.get(&ip).copied().unwrap_or(0) > 1 {
            Some(format!(
                "reports tailnet address {ip}, which another VM of the fleet reports too"
            ))
        } else if let Some((other, (rip, rtags))) = contradicted {
            Some(format!(
                "reports tailnet address {ip} and tags [{}], but the tailnet's records (as {other} sees it) give {rip} and [{}]",
                id.tags.join(", "),
                rtags.join(", ")
            ))
        } else {
            None
        };
        match why {
            Some(w) => suspect.push((
                vm.clone(),
                format!("{w}: left out of the tailnet check and the policy entry"),
            )),
            None if records.is_empty() => unchecked.push((
                vm.clone(),
                "no other node's tailnet map lists it, so its address and tags are its own claim only".to_string(),
            )),
            None => nodes.push(TailnetNode {
                vm: vm.clone(),
                server: *server,
                ip,
                tags: id.tags.clone(),
            }),
        }
    }
    // One auth key for the whole fleet: every node carries the same tags.
    // A node whose tags differ from the other nodes' is named; the entry
    // then names addresses (`acl_entry`).
    let mut counts: BTreeMap<&Vec<String>, usize> = BTreeMap::new();
    for n in &nodes {
        *counts.entry(&n.tags).or_default() += 1;
    }
    if counts.len() > 1 {
        let most = counts.values().copied().max().unwrap_or(0);
        let common: Vec<&Vec<String>> = counts
            .iter()
            .filter(|(_, c)| **c == most)
            .map(|(t, _)| *t)
            .collect();
        if let [common] = common[..] {
            for n in nodes.iter().filter(|n| &n.tags != common) {
                suspect.push((
                    n.vm.clone(),
                    format!(
                        "carries tailnet tags [{}], the fleet's other nodes (one auth key) [{}]: the policy entry names addresses instead of tags",
                        n.tags.join(", "),
                        common.join(", ")
                    ),
                ));
            }
        }
    }
    Confirmed {
        nodes,
        suspect,
        unchecked,
    }
}

/// One connection to try: from `from`'s VM to `to`'s address and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// Every flow the cluster needs over the tailnet: each node to each server
/// on 6443, each server to each other server on 2379 and 2380, each node
/// to each other node on 10250.
pub fn probes(nodes: &[TailnetNode]) -> Vec<Probe> {
    let mut out = Vec::new();
    for a in nodes {
        for b in nodes.iter().filter(|b| b.vm != a.vm) {
            let mut ports = Vec::new();
            if b.server {
                ports.push(API_PORT);
            }
            if a.server && b.server {
                ports.extend([ETCD_CLIENT_PORT, ETCD_PEER_PORT]);
            }
            ports.push(KUBELET_PORT);
            out.extend(ports.into_iter().map(|port| Probe {
                from: a.vm.clone(),
                to: b.vm.clone(),
                ip: b.ip,
                port,
            }));
        }
    }
    out.sort();
    out
}

/// The remote command that tries `targets` at once (curl, which every
/// node has: the setup script needs it), each bounded by
/// [`CONNECT_TIMEOUT_SECS`], and prints `probe IP:PORT EXIT` per target.
pub fn probe_command(targets: &[(Ipv4Addr, u16)]) -> Vec<String> {
    let mut words: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        // Addresses are parsed IPv4s and ports numbers: nothing from a VM
        // is interpolated as text.
        "t=$1; shift; for a in \"$@\"; do (curl -sk -o /dev/null --connect-timeout \"$t\" --max-time \"$((t + 2))\" \"https://$a/\" >/dev/null 2>&1; echo \"probe $a $?\") & done; wait".into(),
        "sh".into(),
        CONNECT_TIMEOUT_SECS.to_string(),
    ];
    words.extend(targets.iter().map(|(ip, port)| format!("{ip}:{port}")));
    words
}

/// curl's exit code per target (address, port).
pub type ExitCodes = BTreeMap<(Ipv4Addr, u16), i32>;

/// curl's exit code for one target, from [`probe_command`]'s output.
pub fn parse_probe_output(out: &str) -> ExitCodes {
    out.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("probe ")?.split(' ');
            let (ip, port) = w.next()?.split_once(':')?;
            let code = w.next()?.trim().parse().ok()?;
            Some(((ip.parse().ok()?, port.parse().ok()?), code))
        })
        .collect()
}

/// What curl's exit code says about the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A connection was made (TLS or HTTP may still have failed: the
    /// kubelet and etcd want credentials).
    Open,
    /// Refused: the packet reached the node, nothing listens there (k3s is
    /// down); the policy let it through.
    Refused,
    /// No connection within the timeout: the policy drops it (or the
    /// device went offline meanwhile).
    Dropped,
    /// Anything else (curl missing: 127; ...).
    Unknown,
}

/// Reads curl's exit code: 28 is a timeout, 7 a refused connection; 0 and
/// the TLS/transfer errors after connecting (35, 52, 56, 60) are a
/// connection.
pub fn flow(code: i32) -> Flow {
    match code {
        0 | 35 | 52 | 56 | 58 | 59 | 60 => Flow::Open,
        7 => Flow::Refused,
        28 => Flow::Dropped,
        _ => Flow::Unknown,
    }
}

/// The tailnet section of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TailnetCheck {
    /// Nodes whose identity was read.
    pub nodes: usize,
    /// Flows tried and their outcome counts.
    pub checked: usize,
    /// Flows that timed out.
    pub dropped: Vec<Probe>,
    /// VMs that could not be checked, and why (one line each).
    pub unchecked: Vec<(String, String)>,
    /// VMs that report a tailnet identity the fleet does not expect (an
    /// address or tags the tailnet's records contradict, tags the fleet's
    /// other nodes lack), and what: each a problem of that VM.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suspect: Vec<(String, String)>,
    /// The entry to add to the policy's `"acls"`, when a flow is dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_entry: Option<String>,
    /// Whether the entry names tags (stable) or current addresses.
    pub entry_by_tag: bool,
    /// What a connect cannot check.
    pub unverified: String,
}

/// Joins the probes' outputs (per source VM: the command's output, or why
/// it failed) into the check.
pub fn evaluate(
    nodes: &[TailnetNode],
    probes: &[Probe],
    outputs: &BTreeMap<String, Result<String, String>>,
    mut unchecked: Vec<(String, String)>,
    suspect: Vec<(String, String)>,
) -> TailnetCheck {
    let mut dropped = Vec::new();
    let mut checked = 0;
    let mut bad_vm: BTreeSet<String> = BTreeSet::new();
    let codes: BTreeMap<&String, Result<ExitCodes, &String>> = outputs
        .iter()
        .map(|(vm, out)| (vm, out.as_ref().map(|o| parse_probe_output(o))))
        .collect();
    for p in probes {
        let why = match codes.get(&p.from) {
            None => continue,
            Some(Err(e)) => (*e).clone(),
            Some(Ok(c)) => match c.get(&(p.ip, p.port)).copied().map(flow) {
                Some(Flow::Open | Flow::Refused) => {
                    checked += 1;
                    continue;
                }
                Some(Flow::Dropped) => {
                    checked += 1;
                    dropped.push(p.clone());
                    continue;
                }
                Some(Flow::Unknown) | None => {
                    "curl could not try the connections (is curl installed?)".to_string()
                }
            },
        };
        if bad_vm.insert(p.from.clone()) {
            unchecked.push((p.from.clone(), why));
        }
    }
    let (entry, by_tag) = acl_entry(nodes);
    TailnetCheck {
        nodes: nodes.len(),
        checked,
        acl_entry: (!dropped.is_empty()).then_some(entry),
        dropped,
        unchecked,
        suspect,
        entry_by_tag: by_tag,
        unverified: format!(
            "{VXLAN_PORT}/udp ({}) cannot be checked by a connect",
            port_name(VXLAN_PORT)
        ),
    }
}

/// The one `"acls"` entry that lets the fleet's devices reach each other on
/// every port k3s needs, in Tailscale's policy syntax (`proto` omitted:
/// the rule covers TCP and UDP). `nodes` are confirmed ones ([`confirm`]).
/// Devices are named by their tags when every node carries the same
/// non-empty set (the fleet's auth key's), else each by its current
/// address (true when it names tags): a tag only some nodes carry never
/// gets the fleet's ports.
pub fn acl_entry(nodes: &[TailnetNode]) -> (String, bool) {
    let by_tag = nodes
        .first()
        .is_some_and(|f| !f.tags.is_empty() && nodes.iter().all(|n| n.tags == f.tags));
    let selectors: BTreeSet<String> = if by_tag {
        nodes.iter().flat_map(|n| n.tags.iter().cloned()).collect()
    } else {
        nodes.iter().map(|n| n.ip.to_string()).collect()
    };
    let list = |items: Vec<String>| {
        let quoted: Vec<String> = items
            .iter()
            .map(|s| serde_json::to_string(s).unwrap_or_default())
            .collect();
        format!("[{}]", quoted.join(", "))
    };
    let src = list(selectors.iter().cloned().collect());
    let dst = list(
        selectors
            .iter()
            .map(|s| format!("{s}:{ENTRY_PORTS}"))
            .collect(),
    );
    (
        format!("{{\"action\": \"accept\", \"src\": {src}, \"dst\": {dst}}}"),
        by_tag,
    )
}

/// The problem a dropped flow is, for the source VM's row.
pub fn problem(p: &Probe) -> String {
    format!(
        "the tailnet drops {} -> {} ({}) on {}/tcp ({}): no connection within {CONNECT_TIMEOUT_SECS}s; add the tailnet policy entry below",
        p.from,
        p.to,
        p.ip,
        p.port,
        port_name(p.port)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(vm: &str, server: bool, last: u8, tags: &[&str]) -> TailnetNode {
        TailnetNode {
            vm: vm.into(),
            server,
            ip: Ipv4Addr::new(100, 64, 0, last),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn every_needed_flow_is_probed_once() {
        let nodes = [
            node("d-cp1", true, 1, &[]),
            node("d-cp2", true, 2, &[]),
            node("d-web1", false, 3, &[]),
        ];
        let ps = probes(&nodes);
        let has = |from: &str, to: &str, port| {
            ps.iter()
                .filter(|p| p.from == from && p.to == to && p.port == port)
                .count()
        };
        assert_eq!(has("d-web1", "d-cp1", API_PORT), 1);
        assert_eq!(has("d-cp1", "d-cp2", API_PORT), 1);
        assert_eq!(has("d-cp1", "d-web1", API_PORT), 0, "agents serve no API");
        assert_eq!(has("d-cp1", "d-cp2", ETCD_PEER_PORT), 1);
        assert_eq!(has("d-cp2", "d-cp1", ETCD_CLIENT_PORT), 1);
        assert_eq!(has("d-web1", "d-cp1", ETCD_PEER_PORT), 0);
        assert_eq!(has("d-cp1", "d-web1", KUBELET_PORT), 1);
        assert_eq!(has("d-web1", "d-cp2", KUBELET_PORT), 1);
        assert_eq!(has("d-cp1", "d-cp1", KUBELET_PORT), 0, "not itself");
        // cp1: api+etcd*2+kubelet to cp2, kubelet to web1; same for cp2;
        // web1: api+kubelet to each server.
        assert_eq!(ps.len(), 5 + 5 + 4);
    }

    #[test]
    fn identities_are_read_and_distrusted() {
        let out = r#"{"BackendState": "Running", "Self": {"TailscaleIPs": ["fd7a::1", "100.64.0.7"], "Tags": ["tag:k8s", "tag:x\u001b[2J", "group:eng"]},
            "Peer": {"k1": {"DNSName": "D-cp1.tail1234.ts.net.", "TailscaleIPs": ["100.64.0.1"], "Tags": ["tag:k8s"]}, "k2": {"DNSName": "x.tail1234.ts.net."}}}"#;
        let id = parse_identity(out).unwrap();
        assert_eq!(
            (id.ip, id.tags),
            (
                Some(Ipv4Addr::new(100, 64, 0, 7)),
                vec!["tag:k8s".to_string()]
            )
        );
        assert_eq!(
            id.peers,
            BTreeMap::from([(
                "d-cp1".to_string(),
                (Ipv4Addr::new(100, 64, 0, 1), vec!["tag:k8s".to_string()])
            )])
        );
        let e =
            parse_identity(r#"{"BackendState": "NeedsLogin\u001b", "Self": null}"#).unwrap_err();
        assert!(e.contains("NeedsLogin") && !e.contains('\u{1b}'), "{e}");
        assert!(parse_identity("garbage").is_err());
    }

    #[test]
    fn the_probe_command_runs_and_parses() {
        // Port 1 on loopback: refused (7), or curl absent (127): either is
        // parsed back to the target that was asked for.
        let words = probe_command(&[(Ipv4Addr::LOCALHOST, 1)]);
        let out = std::process::Command::new(&words[0])
            .args(&words[1..])
            .output()
            .expect("run sh");
        let got = parse_probe_output(&String::from_utf8_lossy(&out.stdout));
        let code = got[&(Ipv4Addr::LOCALHOST, 1)];
        assert!(code == 7 || code == 127, "{code}");
        assert_eq!(
            flow(code),
            if code == 7 {
                Flow::Refused
            } else {
                Flow::Unknown
            }
        );
        assert_eq!(flow(28), Flow::Dropped);
        assert_eq!(flow(35), Flow::Open);
    }

    #[test]
    fn a_dropped_flow_is_named_with_the_entry_to_add() {
        let nodes = [
            node("d-cp1", true, 1, &["tag:k8s"]),
            node("d-web1", false, 2, &["tag:k8s"]),
        ];
        let ps = probes(&nodes);
        let outputs = BTreeMap::from([
            (
                "d-web1".to_string(),
                Ok("probe 100.64.0.1:6443 0\nprobe 100.64.0.1:10250 28\n".to_string()),
            ),
            (
                "d-cp1".to_string(),
                Err("no answer over SSH within 20s".to_string()),
            ),
        ]);
        let c = evaluate(&nodes, &ps, &outputs, Vec::new(), Vec::new());
        assert_eq!(c.checked, 2);
        assert_eq!(c.dropped.len(), 1);
        assert_eq!(
            (c.dropped[0].from.as_str(), c.dropped[0].port),
            ("d-web1", 10250)
        );
        assert_eq!(
            c.unchecked,
            [(
                "d-cp1".to_string(),
                "no answer over SSH within 20s".to_string()
            )]
        );
        assert_eq!(
            c.acl_entry.as_deref(),
            Some(
                r#"{"action": "accept", "src": ["tag:k8s"], "dst": ["tag:k8s:6443,2379-2380,8472,10250"]}"#
            )
        );
        assert!(c.entry_by_tag);
        assert!(
            problem(&c.dropped[0]).contains("d-web1 -> d-cp1 (100.64.0.1) on 10250/tcp (kubelet)")
        );
        // Nothing dropped: no entry.
        let fine = BTreeMap::from([(
            "d-web1".to_string(),
            Ok("probe 100.64.0.1:6443 0\nprobe 100.64.0.1:10250 7\n".to_string()),
        )]);
        assert_eq!(
            evaluate(&nodes, &ps, &fine, Vec::new(), Vec::new()).acl_entry,
            None
        );
    }

    #[test]
    fn untagged_devices_are_named_by_address() {
        let nodes = [
            node("d-cp1", true, 1, &[]),
            node("d-web1", false, 2, &["tag:k8s"]),
        ];
        let (entry, by_tag) = acl_entry(&nodes);
        assert!(!by_tag);
        assert_eq!(
            entry,
            r#"{"action": "accept", "src": ["100.64.0.1", "100.64.0.2"], "dst": ["100.64.0.1:6443,2379-2380,8472,10250", "100.64.0.2:6443,2379-2380,8472,10250"]}"#
        );
    }

    /// What a node's `tailscale status --json` says: its own claim, and its
    /// tailnet map's records of the others.
    fn report(
        vm: &str,
        server: bool,
        ip: [u8; 4],
        tags: &[&str],
        peers: &[(&str, [u8; 4], &[&str])],
    ) -> (String, bool, Identity) {
        let owned = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        (
            vm.to_string(),
            server,
            Identity {
                ip: Some(Ipv4Addr::from(ip)),
                tags: owned(tags),
                peers: peers
                    .iter()
                    .map(|(p, ip, t)| (p.to_string(), (Ipv4Addr::from(*ip), owned(t))))
                    .collect(),
            },
        )
    }

    /// Issue 22, finding 2. Repro: a compromised VM's `tailscale status
    /// --json` claimed `tag:admins`, `tag:prod-db` and `100.64.0.99`;
    /// `parse_identity` took them, the suggested `acls` entry was the union
    /// of every VM's claims (the attacker's tags and address in its
    /// `src`/`dst`), and a server was made to probe the attacker's address.
    /// The entry now comes only from what the tailnet's own records confirm
    /// (each VM as the other fleet nodes' tailnet maps record it) and what
    /// the fleet expects (one tag set: one auth key); the lying VM is a
    /// named problem, not probed, not in the entry.
    #[test]
    fn a_vm_claiming_tags_or_an_address_is_named_and_left_out() {
        let k8s: &[&str] = &["tag:k8s"];
        let reports = vec![
            report(
                "d-cp1",
                true,
                [100, 64, 0, 1],
                k8s,
                &[
                    ("d-web1", [100, 64, 0, 2], k8s),
                    ("d-web2", [100, 64, 0, 3], k8s),
                ],
            ),
            report(
                "d-web2",
                false,
                [100, 64, 0, 3],
                k8s,
                &[
                    ("d-cp1", [100, 64, 0, 1], k8s),
                    ("d-web1", [100, 64, 0, 2], k8s),
                ],
            ),
            // The attacker: other tags and another device's address.
            report(
                "d-web1",
                false,
                [100, 64, 0, 99],
                &["tag:admins", "tag:k8s", "tag:prod-db"],
                &[("d-cp1", [100, 64, 0, 1], k8s)],
            ),
        ];
        let Confirmed {
            nodes,
            suspect,
            unchecked,
        } = confirm(reports);
        let names: Vec<&str> = nodes.iter().map(|n| n.vm.as_str()).collect();
        assert_eq!(names, ["d-cp1", "d-web2"]);
        assert!(unchecked.is_empty(), "{unchecked:?}");
        assert_eq!(suspect.len(), 1, "{suspect:?}");
        assert_eq!(suspect[0].0, "d-web1");
        assert!(
            suspect[0].1.contains("100.64.0.99") && suspect[0].1.contains("give 100.64.0.2"),
            "{suspect:?}"
        );
        let ps = probes(&nodes);
        assert!(
            ps.iter().all(|p| p.ip != Ipv4Addr::new(100, 64, 0, 99)),
            "{ps:?}"
        );
        let (entry, by_tag) = acl_entry(&nodes);
        assert!(by_tag);
        assert_eq!(
            entry,
            r#"{"action": "accept", "src": ["tag:k8s"], "dst": ["tag:k8s:6443,2379-2380,8472,10250"]}"#
        );
        for bad in ["tag:admins", "tag:prod-db", "100.64.0.99"] {
            assert!(!entry.contains(bad), "{entry}");
        }
    }

    /// Tags the tailnet confirms but only one node carries (a key other
    /// than the fleet's) are named, and the entry names addresses; an
    /// address outside 100.64.0.0/10 or claimed twice is refused; a VM no
    /// other node's map lists is unchecked, not trusted.
    #[test]
    fn the_fleet_expects_one_tag_set_and_distinct_tailnet_addresses() {
        let k8s: &[&str] = &["tag:k8s"];
        let admins: &[&str] = &["tag:admins"];
        let Confirmed { nodes, suspect, .. } = confirm(vec![
            report(
                "a",
                true,
                [100, 64, 0, 1],
                k8s,
                &[("b", [100, 64, 0, 2], k8s), ("c", [100, 64, 0, 3], admins)],
            ),
            report(
                "b",
                false,
                [100, 64, 0, 2],
                k8s,
                &[("a", [100, 64, 0, 1], k8s), ("c", [100, 64, 0, 3], admins)],
            ),
            report(
                "c",
                false,
                [100, 64, 0, 3],
                admins,
                &[("a", [100, 64, 0, 1], k8s)],
            ),
        ]);
        assert_eq!(nodes.len(), 3);
        assert_eq!(suspect.len(), 1);
        assert!(
            suspect[0].0 == "c" && suspect[0].1.contains("[tag:admins]"),
            "{suspect:?}"
        );
        let (entry, by_tag) = acl_entry(&nodes);
        assert!(!by_tag && !entry.contains("tag:"), "{entry}");

        let Confirmed {
            nodes,
            suspect,
            unchecked,
        } = confirm(vec![
            report(
                "a",
                true,
                [10, 0, 0, 1],
                &[],
                &[("b", [100, 64, 0, 2], &[])],
            ),
            report(
                "b",
                false,
                [100, 64, 0, 2],
                &[],
                &[("a", [10, 0, 0, 1], &[])],
            ),
            report("c", false, [100, 64, 0, 2], &[], &[]),
            report("d", false, [100, 64, 0, 4], &[], &[]),
        ]);
        let who: Vec<&str> = suspect.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(who, ["a", "b", "c"], "{suspect:?}");
        assert!(nodes.is_empty(), "{nodes:?}");
        assert_eq!(unchecked.len(), 1);
        assert_eq!(unchecked[0].0, "d");
    }
}
