//! The HTTP side: routes, the transport rules of `POST /exec` in the order
//! documented in the module above, fault and latency injection, the request
//! log, and the loopback-only inspection endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use crate::base::shellwords::{self, WordsError};
use crate::core::api::MAX_BODY_BYTES;
use crate::core::api::command::{ParseError, lookup, parse};

use super::auth::{self, AuthFailure};
use super::commands::{self, Ctx, Reply, json_line};
use super::faults::Fault;
use super::log::{RequestRecord, STATUS_DROPPED, redact_words};
use super::state::now_ms;
use super::{Shared, proxy};

/// Serves until `shutdown` resolves.
pub(crate) async fn serve_until(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let world_routes = shared.vm_world.clone().map(crate::world::http::routes);
    let mut app = Router::new()
        .route("/exec", any(exec))
        .route("/_emulator/state", any(inspect))
        .route("/_emulator/{*rest}", any(emulator_other))
        .route("/_proxy/{*rest}", any(proxy::by_path))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            proxy::route_by_host,
        ))
        .with_state(shared);
    if let Some(w) = world_routes {
        app = app.merge(w);
    }
    // Outermost: runs before any route, the proxy's included.
    let app = app.layer(axum::middleware::from_fn(emulator_only));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// What the handler decided.
enum Outcome {
    Reply {
        reply: Reply,
        headers: Vec<(header::HeaderName, HeaderValue)>,
    },
    /// Drop the connection instead of replying.
    Drop,
}

impl Outcome {
    fn plain(reply: Reply) -> Self {
        Outcome::Reply {
            reply,
            headers: Vec::new(),
        }
    }
    fn error(status: u16, message: &str) -> Self {
        Outcome::plain(Reply::error(status, message))
    }
    fn unauthorized(f: AuthFailure) -> Self {
        Outcome::Reply {
            reply: Reply::error(401, f.message()),
            headers: vec![(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        }
    }
    fn rate_limited(retry_after_secs: u64) -> Self {
        Outcome::Reply {
            reply: Reply::error(429, "rate limit exceeded"),
            headers: vec![(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))],
        }
    }
}

fn json_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

async fn not_found() -> Response {
    json_response(Reply::error(404, "not found"))
}

async fn exec(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut record = RequestRecord {
        unix_ms: now_ms(),
        key_fingerprint: None,
        words: Vec::new(),
        command: None,
        status: STATUS_DROPPED,
    };
    let outcome = handle(&shared, method, &headers, body, &mut record).await;
    let response = match outcome {
        Outcome::Reply { reply, headers } => {
            record.status = reply.status;
            let mut resp = json_response(reply);
            resp.headers_mut().extend(headers);
            resp
        }
        Outcome::Drop => {
            record.status = STATUS_DROPPED;
            // A body that fails makes hyper abort the connection: the client
            // sees a transport error, never a complete reply.
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::new(FailingBody),
            )
                .into_response()
        }
    };
    shared.log.push(record);
    response
}

async fn handle(
    shared: &Shared,
    method: Method,
    headers: &HeaderMap,
    body: Body,
    record: &mut RequestRecord,
) -> Outcome {
    // 405
    if method != Method::POST {
        return Outcome::error(405, "method not allowed");
    }
    // 413, before authentication: an oversized body is never read whole.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Outcome::error(413, "request body exceeds 64KB limit");
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return Outcome::error(413, "request body exceeds 64KB limit");
    };
    // 401
    let token = match auth::bearer(headers) {
        Ok(t) => t,
        Err(f) => return Outcome::unauthorized(f),
    };
    let handle = token
        .starts_with("exe1.")
        .then(|| shared.world().store.state.exe1.get(token).cloned())
        .flatten();
    let now_s = (now_ms() / 1000) as i64;
    let who = match auth::authenticate(
        token,
        handle.as_ref(),
        &shared.config.authorized_keys,
        now_s,
    ) {
        Ok(a) => a,
        Err(f) => return Outcome::unauthorized(f),
    };
    record.key_fingerprint = Some(who.fingerprint.clone());
    // 429
    let limited = shared
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(&who.fingerprint, Instant::now());
    if let Err(wait) = limited {
        return Outcome::rate_limited(wait.as_secs().max(1));
    }
    // 400
    let words = match split_body(&bytes) {
        Ok(w) => w,
        Err(message) => return Outcome::error(400, message),
    };
    record.words = redact_words(&words);
    // 404, then 403
    let Some((spec, _)) = lookup(&words) else {
        return Outcome::error(404, "unknown command");
    };
    record.command = Some(spec.name.to_string());
    if !who.permissions.allows(spec.name) {
        return Outcome::error(403, "command not allowed by token permissions");
    }
    // Injected failures that happen before the command runs.
    let (fault, latency) = {
        let mut f = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        (f.next_fault(), f.next_latency())
    };
    match fault {
        Some(Fault::RateLimited) => return Outcome::rate_limited(1),
        Some(Fault::Internal) => return Outcome::error(500, "internal error"),
        _ => {}
    }
    // 422 / 200: the command runs.
    let reply = run_command(shared, &who.fingerprint, &words);
    // Latency and the deadline: past it, the command has still happened.
    let deadline = shared.config.deadline;
    if !latency.is_zero() {
        tokio::time::sleep(latency.min(deadline)).await;
    }
    if latency > deadline {
        return Outcome::error(504, "command timed out");
    }
    match fault {
        Some(Fault::TimeoutAfterEffect) => Outcome::error(504, "command timed out"),
        Some(Fault::DropAfterEffect) => Outcome::Drop,
        _ => Outcome::plain(reply),
    }
}

/// Runs a parsed request's command on the store (saved when it mutates),
/// then hands a successful command's VM events to the world.
fn run_command(shared: &Shared, fingerprint: &str, words: &[String]) -> Reply {
    match parse(words) {
        Err(ParseError::Unknown) => Reply::error(404, "unknown command"),
        Err(ParseError::Usage(msg)) => Reply::error(422, &msg),
        Ok(inv) => {
            let mut guard = shared.world();
            let world = &mut *guard;
            let mut ctx = Ctx {
                config: &shared.config,
                fingerprint,
                now_ms: now_ms(),
                rng: &mut world.rng,
                events: Vec::new(),
            };
            let reply = commands::run(&inv, &mut world.store, &mut ctx);
            let events = std::mem::take(&mut ctx.events);
            let reply = match commands::mutates(inv.name) && !inv.help {
                true => match world.store.save() {
                    Ok(()) => reply,
                    Err(e) => {
                        eprintln!("{e}");
                        Reply::error(500, "internal error")
                    }
                },
                false => reply,
            };
            drop(guard);
            if reply.status == 200 {
                shared.world_events(events);
            }
            reply
        }
    }
}

/// Splits a body into words, with exe.dev's 400 messages.
fn split_body(bytes: &[u8]) -> Result<Vec<String>, &'static str> {
    if bytes.contains(&0) {
        return Err("request body must not contain null bytes");
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "invalid command syntax")?;
    if text.trim().is_empty() {
        return Err("missing command in request body");
    }
    let words = shellwords::split(text).map_err(|e| match e {
        WordsError::Nul => "request body must not contain null bytes",
        WordsError::UnbalancedQuote | WordsError::TrailingBackslash => "invalid command syntax",
    })?;
    if words.is_empty() {
        return Err("missing command in request body");
    }
    Ok(words)
}

/// Paths only this machine may use: the emulator's own endpoints (state,
/// the world's admin kubeconfigs, its k3s channels) and the stand-ins'
/// channel into the VM world (`/_world/call` runs a command as root in a
/// VM).
const EMULATOR_ONLY: &[&str] = &["/_emulator/", "/_world/"];

/// The one check in front of every emulator-only route
/// ([`EMULATOR_ONLY`]): a loopback peer naming a loopback `Host`
/// ([`inspection_refused`]). Everything else passes through.
async fn emulator_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    if !EMULATOR_ONLY.iter().any(|p| path.starts_with(p)) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let refused = match peer {
        Some(ip) => inspection_refused(ip, req.headers()),
        None => Some(json_response(Reply::error(403, "forbidden"))),
    };
    match refused {
        Some(r) => r,
        None => next.run(req).await,
    }
}

/// Why a request may not see the emulator's own endpoints (which show
/// setup scripts, secrets included), if it may not: the peer must be
/// loopback, and so must the `Host` it named. A web page that rebinds its
/// own name to 127.0.0.1 reaches a developer's emulator from the browser,
/// with a loopback peer, but its `Host` is still its own name.
fn inspection_refused(peer: std::net::IpAddr, headers: &HeaderMap) -> Option<Response> {
    if !may_inspect(peer) {
        return Some(json_response(Reply::error(403, "forbidden")));
    }
    let host = headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    if host.as_deref().is_some_and(is_loopback_host) {
        return None;
    }
    let named = match &host {
        Some(h) => format!("named Host {:?}", crate::base::text::one_line(h)),
        None => "named no Host".to_string(),
    };
    Some(json_response(Reply::error(
        403,
        &format!(
            "the emulator's own endpoints are served only to requests for 127.0.0.1, [::1] or localhost; this one {named} (a web page rebinding its name to this machine?). Use http://127.0.0.1:PORT/"
        ),
    )))
}

/// `Host` values that name this machine: a loopback IP literal or
/// `localhost`, with an optional port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || is_port(tail) => v6,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(tail: &str) -> bool {
    tail.strip_prefix(':')
        .unwrap_or(tail)
        .parse::<u16>()
        .is_ok()
}

/// Any other `/_emulator/` path (behind [`emulator_only`]): 404.
async fn emulator_other() -> Response {
    json_response(Reply::error(404, "not found"))
}

/// `GET /_emulator/state`: the full state (setup scripts, env, proxy
/// settings, computed status) for tests and debugging; loopback peers
/// naming a loopback `Host` only ([`emulator_only`]), since it shows what a fleet tool sent,
/// secrets included. exe1 handles are counted, never shown.
async fn inspect(State(shared): State<Arc<Shared>>, method: Method) -> Response {
    if method != Method::GET {
        return json_response(Reply::error(405, "method not allowed"));
    }
    let now = now_ms();
    let world = shared.world();
    let vms: Vec<Value> = world
        .store
        .state
        .vms
        .values()
        .map(|vm| {
            let mut v = serde_json::to_value(vm).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert(
                    "status".into(),
                    Value::String(vm.status(shared.config.boot, now)),
                );
            }
            v
        })
        .collect();
    let exe1 = world.store.state.exe1.len();
    drop(world);
    let vms: Vec<Value> = match &shared.vm_world {
        Some(w) => vms
            .into_iter()
            .map(|mut v| {
                let name = v["name"].as_str().unwrap_or_default().to_string();
                v["world"] = w.view(&name);
                v
            })
            .collect(),
        None => vms,
    };
    let mut state = json!({"vms": vms, "exe1_handles": exe1});
    if let Some(w) = &shared.vm_world {
        state["tailnet"] = w.tailnet_view();
        state["s3"] = w.s3_view();
    }
    let body = json_line(&state);
    json_response(Reply { status: 200, body })
}

/// Only loopback peers may read the state: it holds setup scripts.
fn may_inspect(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

/// A response body whose first poll fails, so hyper aborts the connection.
struct FailingBody;

impl HttpBody for FailingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "emulator: injected connection drop",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspection_is_loopback_only() {
        for ok in ["127.0.0.1", "127.5.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(may_inspect(ok.parse().unwrap()), "{ok}");
        }
        for no in ["10.0.0.1", "192.168.1.2", "::ffff:10.0.0.1", "fe80::1"] {
            assert!(!may_inspect(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn only_loopback_hosts_may_inspect() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LocalHost:1",
            "[::1]",
            "[::1]:4000",
            "127.3.2.1:80",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:80",
            "[::1]x",
            "[fe80::1]:80",
            "localhost:http",
            "::1",
            "",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }

    #[test]
    fn body_errors() {
        assert_eq!(split_body(b"ls 'x").unwrap_err(), "invalid command syntax");
        assert_eq!(split_body(b"ls x\\").unwrap_err(), "invalid command syntax");
        assert_eq!(
            split_body(&[0xff, 0xfe]).unwrap_err(),
            "invalid command syntax"
        );
        assert_eq!(
            split_body(b"ls\0").unwrap_err(),
            "request body must not contain null bytes"
        );
        assert_eq!(
            split_body(b" \n ").unwrap_err(),
            "missing command in request body"
        );
        assert_eq!(split_body(b"ls 'a b'").unwrap(), ["ls", "a b"]);
    }
}
