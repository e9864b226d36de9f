//! The loopback endpoints the stand-ins call (`POST /_world/...`), and
//! `GET /_emulator/kubeconfig/<vm>`: a kubeconfig that reaches a server's
//! API straight from the host (`https://127.0.0.1:<port>`), for users and
//! tests that are not going through the CLI's SSH path. Loopback peers
//! only, like `/_emulator/state`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::protocol::{self, Call, Connect, ConnectReply, Fetch, SshReply, SshSession};
use super::{Inner, sandbox};

fn loopback(peer: &SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "forbidden").into_response()
}

async fn call(
    State(w): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(c): Json<Call>,
) -> Response {
    if !loopback(&peer) {
        return forbidden();
    }
    Json(super::applets::call(&w, &c).await).into_response()
}

async fn fetch(
    State(w): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(f): Json<Fetch>,
) -> Response {
    if !loopback(&peer) {
        return forbidden();
    }
    let live = w
        .model()
        .vms
        .get(&f.vm)
        .is_some_and(|v| v.up && v.boot == f.boot);
    if !live {
        return Json(protocol::FetchReply::Error {
            code: 7,
            message: "the VM has rebooted or is gone".into(),
        })
        .into_response();
    }
    Json(super::applets::fetch::fetch(&w, &f).await).into_response()
}

async fn ssh(
    State(w): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(s): Json<SshSession>,
) -> Response {
    if !loopback(&peer) {
        return forbidden();
    }
    let up = w.model().vms.get(&s.vm).map(|v| v.up);
    let reply = match up {
        None => SshReply::Refused {
            message: format!(
                "ssh: Could not resolve hostname {}.exe.xyz: Name or service not known",
                s.vm
            ),
        },
        Some(false) => SshReply::Refused {
            message: format!(
                "ssh: connect to host {}.exe.xyz port 22: Connection refused",
                s.vm
            ),
        },
        Some(true) => {
            let program = match &s.command {
                Some(c) => vec!["/bin/bash".to_string(), "-c".to_string(), c.clone()],
                None => vec!["/bin/bash".to_string(), "-l".to_string()],
            };
            SshReply::Sandbox {
                bwrap_args: sandbox::bwrap_args(
                    &w.root(&s.vm),
                    &w.config.standin_binary,
                    &w.shim_dir(),
                    &s.vm,
                    false,
                    &program,
                ),
            }
        }
    };
    Json(reply).into_response()
}

async fn connect(
    State(w): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(c): Json<Connect>,
) -> Response {
    if !loopback(&peer) {
        return forbidden();
    }
    let target = {
        let m = w.model();
        m.resolve(&c.vm, &c.host)
            .and_then(|ip| m.route_port(&c.vm, ip, super::tailnet::Proto::Tcp, c.port))
    };
    let port = target
        .filter(|_| c.port == super::k3s::API_PORT)
        .and_then(|t| w.api_port(&t));
    let reply = match port {
        Some(port) => ConnectReply::Port { port },
        None => ConnectReply::Refused {
            message: format!("{}:{} is not listening on {}", c.host, c.port, c.vm),
        },
    };
    Json(reply).into_response()
}

async fn kubeconfig(
    State(w): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(vm): Path<String>,
) -> Response {
    if !loopback(&peer) {
        return forbidden();
    }
    match w.host_kubeconfig(&vm) {
        Ok(k) => (StatusCode::OK, [("content-type", "application/yaml")], k).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

/// The world's routes, to merge into the emulator's router.
pub fn routes(w: Arc<Inner>) -> Router {
    Router::new()
        .route(protocol::CALL, post(call))
        .route(protocol::FETCH, post(fetch))
        .route(protocol::SSH, post(ssh))
        .route(protocol::CONNECT, post(connect))
        .route("/_emulator/kubeconfig/{vm}", get(kubeconfig))
        .with_state(w)
}
