//! The emulator's side of the stand-ins' channels. Each VM's own Unix
//! socket ([`vm_routes`], `/exedev-world/meta/world.sock` inside it) serves
//! `POST /_world/call` and `/_world/fetch` for that VM alone: a call naming
//! another VM is refused, so one VM cannot act as another. On the
//! emulator's TCP port (for the host: the `ssh` stand-in, users, tests):
//! `POST /_world/ssh` and `/_world/connect`,
//! `GET /_emulator/kubeconfig/<vm>`: a kubeconfig that reaches a server's
//! API straight from the host (`https://127.0.0.1:<port>`), for users and
//! tests that are not going through the CLI's SSH path, and
//! `/_emulator/k3s-channels/<channel>`: the k3s channel server as the
//! tool's `--channel-server` sees it (`GET`: a redirect to the release, as
//! `update.k3s.io/v1-release/channels/<channel>` answers; `PUT` with a
//! release as the body: the channel moves, for the VMs' installers too).
//! Loopback peers naming a loopback `Host` only, like `/_emulator/state`:
//! the emulator's one guard in front of `/_emulator/` and `/_world/`
//! (`emulator::server`), not a check per handler.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::protocol::{self, Call, Connect, ConnectReply, Fetch, SshReply, SshSession};
use super::{Inner, sandbox};

/// A VM's socket: the world and the VM it serves.
type VmState = (Arc<Inner>, Arc<str>);

/// The refusal of a message naming another VM than the socket's.
fn not_this_vm(socket_vm: &str, named: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!(
            "this socket serves VM {socket_vm}, not {}\n",
            named.escape_debug()
        ),
    )
        .into_response()
}

async fn call(State((w, vm)): State<VmState>, Json(c): Json<Call>) -> Response {
    if c.vm != *vm {
        return not_this_vm(&vm, &c.vm);
    }
    Json(super::applets::call(&w, &c).await).into_response()
}

async fn fetch(State((w, vm)): State<VmState>, Json(f): Json<Fetch>) -> Response {
    if f.vm != *vm {
        return not_this_vm(&vm, &f.vm);
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

async fn ssh(State(w): State<Arc<Inner>>, Json(s): Json<SshSession>) -> Response {
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

async fn connect(State(w): State<Arc<Inner>>, Json(c): Json<Connect>) -> Response {
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

async fn kubeconfig(State(w): State<Arc<Inner>>, Path(vm): Path<String>) -> Response {
    match w.host_kubeconfig(&vm) {
        Ok(k) => (StatusCode::OK, [("content-type", "application/yaml")], k).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

/// Where the world serves k3s channels to the host (`GET`/`PUT
/// <path>/<channel>`).
pub const CHANNELS_PATH: &str = "/_emulator/k3s-channels";

async fn channel_get(State(w): State<Arc<Inner>>, Path(channel): Path<String>) -> Response {
    match w.channel(&channel) {
        Some(v) => (
            StatusCode::FOUND,
            [(
                "location",
                format!("https://github.com/k3s-io/k3s/releases/tag/{v}"),
            )],
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "channel not found\n").into_response(),
    }
}

async fn channel_put(
    State(w): State<Arc<Inner>>,
    Path(channel): Path<String>,
    body: String,
) -> Response {
    let version = body.trim();
    if !crate::base::release::is_channel(&channel) || !crate::base::release::is_release(version) {
        return (
            StatusCode::BAD_REQUEST,
            "PUT /_emulator/k3s-channels/<channel> with a release (v1.31.4+k3s1) as the body\n",
        )
            .into_response();
    }
    w.set_channel(&channel, version);
    StatusCode::NO_CONTENT.into_response()
}

/// The routes of `vm`'s own socket: what its stand-ins call.
pub fn vm_routes(w: Arc<Inner>, vm: &str) -> Router {
    Router::new()
        .route(protocol::CALL, post(call))
        .route(protocol::FETCH, post(fetch))
        .with_state((w, Arc::<str>::from(vm)))
}

/// The world's routes on the emulator's TCP port, to merge into its router.
pub fn routes(w: Arc<Inner>) -> Router {
    Router::new()
        .route(protocol::SSH, post(ssh))
        .route(protocol::CONNECT, post(connect))
        .route("/_emulator/kubeconfig/{vm}", get(kubeconfig))
        .route(
            &format!("{CHANNELS_PATH}/{{channel}}"),
            get(channel_get).put(channel_put),
        )
        .with_state(w)
}
