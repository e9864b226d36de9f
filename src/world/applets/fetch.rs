//! The network a VM's `curl` reaches: the k3s installer and releases,
//! k3s's supervisor, kubelet and etcd ports on the VM itself or on tailnet
//! peers (as far as the tailnet's policy lets the flow through), and
//! nothing else (any other host does not resolve). Faults: installer downloads that
//! fail, and a reboot in the middle of the k3s download.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use super::installer;
use crate::world::Inner;
use crate::world::k3s::{API_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT, KUBELET_PORT};
use crate::world::protocol::{Fetch, FetchReply};
use crate::world::tailnet::Proto;

fn ok(status: u16, body: &[u8]) -> FetchReply {
    FetchReply::Response {
        status,
        location: None,
        body: base64::engine::general_purpose::STANDARD.encode(body),
    }
}

fn error(code: i32, message: impl Into<String>) -> FetchReply {
    FetchReply::Error {
        code,
        message: message.into(),
    }
}

/// `(scheme, host, port, path)` of a URL.
fn split_url(url: &str) -> Option<(String, String, u16, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, default),
    };
    Some((
        scheme.to_string(),
        host.to_ascii_lowercase(),
        port,
        path.to_string(),
    ))
}

/// Answers one request from `req.vm`.
pub async fn fetch(inner: &Arc<Inner>, req: &Fetch) -> FetchReply {
    let Some((_scheme, host, port, path)) = split_url(&req.url) else {
        return error(
            3,
            format!(
                "URL rejected: Malformed input to a URL function ({})",
                req.url
            ),
        );
    };
    let path = path.split('?').next().unwrap_or("/").to_string();
    match (host.as_str(), port) {
        ("get.k3s.io", 443) => {
            let failed = {
                let mut m = inner.model();
                let limit = m.faults.download_failures;
                match m.vms.get_mut(&req.vm) {
                    Some(v) => {
                        v.installer_fetches += 1;
                        v.installer_fetches <= limit
                    }
                    None => false,
                }
            };
            if failed {
                return error(6, "Could not resolve host: get.k3s.io");
            }
            ok(200, installer::INSTALL_SH.as_bytes())
        }
        ("update.k3s.io", 443) => {
            let channel = path
                .strip_prefix("/v1-release/channels/")
                .unwrap_or_default();
            match inner.channel(channel) {
                Some(v) => FetchReply::Response {
                    status: 302,
                    location: Some(format!("https://github.com/k3s-io/k3s/releases/tag/{v}")),
                    body: String::new(),
                },
                None => ok(404, b"channel not found\n"),
            }
        }
        ("github.com", 443) => github(inner, req, &path).await,
        (_, API_PORT) => supervisor(inner, req, &host, &path),
        _ => node_port(inner, req, &host, port),
    }
}

async fn github(inner: &Arc<Inner>, req: &Fetch, path: &str) -> FetchReply {
    if let Some(v) = path.strip_prefix("/k3s-io/k3s/releases/tag/") {
        return if crate::base::release::is_release(v) {
            ok(200, b"")
        } else {
            ok(404, b"Not Found\n")
        };
    }
    let Some(rest) = path.strip_prefix("/k3s-io/k3s/releases/download/") else {
        return ok(404, b"Not Found\n");
    };
    let (version, file) = rest.split_once('/').unwrap_or((rest, ""));
    let version = version.replace("%2B", "+").replace("%2b", "+");
    if !crate::base::release::is_release(&version) {
        return ok(404, b"Not Found\n");
    }
    match file {
        "sha256sum-amd64.txt" => ok(200, installer::hash_file(&version).as_bytes()),
        "k3s" => {
            let reboot = {
                let mut m = inner.model();
                let globs = m.faults.reboot_mid_setup.clone();
                match m.vms.get_mut(&req.vm) {
                    Some(v)
                        if !v.rebooted_by_fault
                            && globs
                                .iter()
                                .any(|g| crate::base::names::glob_match(g, &req.vm)) =>
                    {
                        v.rebooted_by_fault = true;
                        true
                    }
                    _ => false,
                }
            };
            if reboot {
                inner.reboot(&req.vm);
                return error(56, "Recv failure: Connection reset by peer");
            }
            tokio::time::sleep(Duration::from_millis(inner.config.timings.install_ms)).await;
            ok(200, installer::shim(&version).as_bytes())
        }
        _ => ok(404, b"Not Found\n"),
    }
}

/// Another port of a VM (itself, or a tailnet peer): the kubelet's 10250
/// while k3s runs there, etcd's 2379-2380 on a server holding etcd data,
/// nothing else. A flow the tailnet's policy drops times out (curl 28);
/// a port nobody listens on is refused (7). Neither etcd nor the kubelet
/// talk to a client without credentials: the kubelet answers 401, etcd
/// ends the TLS handshake (it wants a client certificate).
fn node_port(inner: &Arc<Inner>, req: &Fetch, host: &str, port: u16) -> FetchReply {
    let m = inner.model();
    let Some(ip) = m.resolve(&req.vm, host) else {
        return error(6, format!("Could not resolve host: {host}"));
    };
    let Some(target) = m.route_port(&req.vm, ip, Proto::Tcp, port) else {
        return error(
            28,
            format!("Failed to connect to {host} port {port} after 0 ms: Timeout was reached"),
        );
    };
    let procs: Vec<&crate::world::k3s::K3sProc> = m
        .vms
        .get(&target)
        .map(|v| v.units.values().filter_map(|u| u.k3s.as_ref()).collect())
        .unwrap_or_default();
    let listening = match port {
        KUBELET_PORT => procs.iter().any(|p| p.is_ready()),
        ETCD_CLIENT_PORT | ETCD_PEER_PORT => m.ready_server(&target).is_some(),
        _ => false,
    };
    match (listening, port) {
        (false, _) => error(
            7,
            format!(
                "Failed to connect to {host} port {port} after 0 ms: Couldn't connect to server"
            ),
        ),
        (true, KUBELET_PORT) => ok(401, b"Unauthorized"),
        (true, _) => error(
            56,
            "OpenSSL SSL_read: error:0A00045C:SSL routines::tlsv13 alert certificate required",
        ),
    }
}

/// k3s's supervisor on port 6443: `/ping` and `/cacerts` answer without
/// credentials, everything else wants them (401).
fn supervisor(inner: &Arc<Inner>, req: &Fetch, host: &str, path: &str) -> FetchReply {
    let m = inner.model();
    let Some(ip) = m.resolve(&req.vm, host) else {
        return error(6, format!("Could not resolve host: {host}"));
    };
    let Some(target) = m.route_port(&req.vm, ip, Proto::Tcp, API_PORT) else {
        return error(
            28,
            format!("Failed to connect to {host} port 6443 after 0 ms: Timeout was reached"),
        );
    };
    let Some((server, cid)) = m.supervisor(&target) else {
        return error(
            7,
            format!("Failed to connect to {host} port 6443 after 0 ms: Couldn't connect to server"),
        );
    };
    let Some(c) = m.clusters.get(cid) else {
        return error(7, "Couldn't connect to server");
    };
    let trusted = req.insecure
        || req
            .cacert
            .as_deref()
            .is_some_and(|ca| ca.trim() == c.pki.ca_pem.trim());
    if !trusted {
        return error(
            60,
            "SSL certificate problem: self-signed certificate in certificate chain",
        );
    }
    // Verified against the CA: the name is checked too (not with -k).
    if !req.insecure && !server.serves_name(&target, host) {
        return error(
            60,
            format!(
                "SSL: no alternative certificate subject name matches target host name '{host}'"
            ),
        );
    }
    match path {
        "/ping" => ok(200, b"pong"),
        "/cacerts" => ok(200, c.pki.ca_pem.as_bytes()),
        _ => ok(
            401,
            br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("https://get.k3s.io").unwrap(),
            ("https".into(), "get.k3s.io".into(), 443, "/".into())
        );
        assert_eq!(
            split_url("https://Demo-CP1.tail1234.ts.net:6443/ping").unwrap(),
            (
                "https".into(),
                "demo-cp1.tail1234.ts.net".into(),
                6443,
                "/ping".into()
            )
        );
        assert!(split_url("get.k3s.io").is_none());
    }
}
