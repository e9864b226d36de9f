//! The stand-in for exe.dev's HTTPS proxy, `https://<vm>.exe.xyz/`, so that
//! code talking to a VM's web server (health probes, API clients) can be
//! tested without DNS for `*.exe.xyz`.
//!
//! A request reaches the proxy on the emulator's own listener in either of
//! two forms:
//! - `Host: <vm>.exe.xyz` (any port), what a real client sends; every path
//!   under that host is the VM's, `/exec` included;
//! - `/_proxy/<vm>/<path>` on the emulator's address, for tools that cannot
//!   set `Host`.
//!
//! Order of checks: 404 unknown VM → 401 token present but not valid for
//! `v0@<vm>.exe.xyz` → 307 to the login page (private VM, no token) → 502
//! VM not running or nothing registered behind it → the backend's answer.
//! Authentication comes before the running check so that an anonymous
//! caller learns nothing about a private VM beyond its existence.
//!
//! Token sources, per the API notes: `X-Exedev-Authorization: Bearer`
//! (preferred), `Authorization: Bearer` (deprecated) or Basic auth with the
//! token as password; the header used is stripped before forwarding. An
//! `Authorization` header whose credential is not an `exe0.`/`exe1.` token
//! is left for the VM's own server (an emulator choice: the notes do not
//! say what exe.dev does with it). Identity headers sent by the client are
//! always dropped, so a VM can trust the ones it receives.
//!
//! Bodies are buffered (at most [`MAX_PROXY_BODY`] bytes each way): the
//! emulator serves tests, not large downloads.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::Shared;
use super::commands::user_id;
use super::log::{RequestRecord, STATUS_DROPPED};
use super::state::now_ms;
use crate::core::token::{Exe0Token, raw_field, vm_namespace};

/// The domain VM names live under.
pub const VM_DOMAIN: &str = "exe.xyz";
/// Path prefix of the `/_proxy/<vm>/...` form.
pub const PATH_PREFIX: &str = "/_proxy/";
/// Largest request or response body the emulated proxy buffers.
pub const MAX_PROXY_BODY: usize = 32 << 20;
/// Where a private VM sends an anonymous browser.
pub const LOGIN_URL: &str = "https://exe.dev/login";

/// The header exe.dev prefers for proxy tokens.
pub const EXEDEV_AUTHORIZATION: &str = "x-exedev-authorization";
/// Identity headers the VM's server receives (and clients may not send).
pub const USER_ID_HEADER: &str = "x-exedev-userid";
pub const EMAIL_HEADER: &str = "x-exedev-email";
pub const TOKEN_CTX_HEADER: &str = "x-exedev-token-ctx";

/// The VM a `Host` value names when it is `<vm>.exe.xyz` (any port, any
/// case, optional trailing dot); `None` for any other host, which the
/// emulator's own routes then serve.
pub fn vm_from_host(host: &str) -> Option<String> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let vm = host.strip_suffix(VM_DOMAIN)?.strip_suffix('.')?;
    (!vm.is_empty() && !vm.contains('.')).then(|| vm.to_string())
}

/// Middleware: requests for `<vm>.exe.xyz` go to the proxy, everything
/// else to the emulator's routes.
pub(crate) async fn route_by_host(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let vm = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())
        .and_then(vm_from_host);
    match vm {
        Some(vm) => {
            let target = req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
            proxy(&shared, &vm, &target, req).await
        }
        None => next.run(req).await,
    }
}

/// `/_proxy/<vm>/<path>`: the same proxy, addressed by path.
pub(crate) async fn by_path(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path();
    let rest = path.strip_prefix(PATH_PREFIX).unwrap_or_default();
    let (vm, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let vm = vm.to_ascii_lowercase();
    let mut target = format!("/{tail}");
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    proxy(&shared, &vm, &target, req).await
}

/// Handles one proxied request and logs it as command `proxy` (VM,
/// method and path; never the query, headers or token).
async fn proxy(shared: &Shared, vm: &str, target: &str, req: Request) -> Response {
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut record = RequestRecord {
        unix_ms: now_ms(),
        key_fingerprint: None,
        words: vec![vm.to_string(), req.method().to_string(), path],
        command: Some("proxy".into()),
        status: STATUS_DROPPED,
    };
    let response = handle(shared, vm, target, req, &mut record).await;
    record.status = response.status().as_u16();
    shared.log.push(record);
    response
}

fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// A token as presented, and which header carried it.
#[derive(Debug, PartialEq)]
enum Presented {
    None,
    Token {
        token: String,
        header: HeaderName,
    },
    /// `X-Exedev-Authorization` present but not `Bearer <token>`.
    Malformed,
}

fn is_exe_token(t: &str) -> bool {
    t.starts_with("exe0.") || t.starts_with("exe1.")
}

/// Finds the proxy token among the three documented places.
fn presented(headers: &HeaderMap) -> Presented {
    if let Some(v) = headers.get(EXEDEV_AUTHORIZATION) {
        let Some((scheme, token)) = v.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
            return Presented::Malformed;
        };
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Presented::Malformed;
        }
        return Presented::Token {
            token: token.to_string(),
            header: HeaderName::from_static(EXEDEV_AUTHORIZATION),
        };
    }
    let Some((scheme, cred)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
    else {
        return Presented::None;
    };
    let cred = cred.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        Some(cred.to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        STANDARD
            .decode(cred)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(_, pw)| pw.to_string()))
    } else {
        None
    };
    match token {
        Some(token) if is_exe_token(&token) => Presented::Token {
            token,
            header: header::AUTHORIZATION,
        },
        _ => Presented::None,
    }
}

/// Who a valid token speaks for.
struct Identity {
    fingerprint: String,
    /// The payload's `ctx`, byte for byte.
    ctx: Option<String>,
}

/// Validates a proxy token for `vm` now; `None` for any failure (the
/// reason is not told to the caller, as on `/exec`).
fn authenticate(shared: &Shared, vm: &str, token: &str) -> Option<Identity> {
    let namespace = vm_namespace(vm);
    let exe0 = if token.starts_with("exe1.") {
        let handle = shared.world().store.state.exe1.get(token).cloned()?;
        if handle.namespace != namespace {
            return None;
        }
        handle.exe0
    } else {
        token.to_string()
    };
    let parsed = Exe0Token::parse(&exe0).ok()?;
    let now_s = (now_ms() / 1000) as i64;
    let (fingerprint, _) = parsed
        .validate(&namespace, &shared.config.authorized_keys, now_s)
        .ok()?;
    let ctx = raw_field(&parsed.payload, "ctx").map(str::to_string);
    Some(Identity { fingerprint, ctx })
}

/// Hop-by-hop headers and those the transport recomputes: never forwarded
/// in either direction.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Headers a client may not pass to the VM: the identity the proxy vouches
/// for, and the proxy's own token header.
fn is_proxy_owned(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        USER_ID_HEADER | EMAIL_HEADER | TOKEN_CTX_HEADER | EXEDEV_AUTHORIZATION
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn handle(
    shared: &Shared,
    vm: &str,
    target: &str,
    req: Request,
    record: &mut RequestRecord,
) -> Response {
    // 404
    let found = shared.world().store.state.vms.get(vm).map(|r| {
        (
            r.share.clone(),
            r.status(shared.config.boot, now_ms()) == "running",
        )
    });
    let Some((share, running)) = found else {
        return text(StatusCode::NOT_FOUND, &format!("no VM named {vm:?}"));
    };
    // 401 / 307
    let (method, mut headers, body) = {
        let (parts, body) = req.into_parts();
        (parts.method, parts.headers, body)
    };
    let identity = match presented(&headers) {
        Presented::Malformed => return unauthorized(),
        Presented::Token { token, header } => {
            let Some(id) = authenticate(shared, vm, &token) else {
                return unauthorized();
            };
            headers.remove(header);
            record.key_fingerprint = Some(id.fingerprint.clone());
            Some(id)
        }
        Presented::None if !share.public => {
            let back = format!("https://{vm}.{VM_DOMAIN}{target}");
            let location = format!("{LOGIN_URL}?redirect={}", url_encode(&back));
            let mut resp = text(StatusCode::TEMPORARY_REDIRECT, "login required");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        Presented::None => None,
    };
    // 502
    if !running {
        return text(
            StatusCode::BAD_GATEWAY,
            &format!("VM {vm:?} is not running"),
        );
    }
    let backend = shared
        .proxy_backends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(vm)
        .cloned();
    let Some(backend) = backend else {
        // In the VM world, a pod's hostPort (or host network) on the VM
        // holds the share port.
        let pod = shared
            .vm_world
            .as_ref()
            .and_then(|w| w.host_port(vm, share.port, target));
        if let Some(r) = pod {
            let mut resp = Response::new(Body::from(r.body));
            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return resp;
        }
        return text(
            StatusCode::BAD_GATEWAY,
            &format!("nothing is listening on port {} of {vm:?}", share.port),
        );
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_PROXY_BODY).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let forwarded = forwarded_headers(shared, &headers, identity.as_ref());
    let url = format!("{}{target}", backend.trim_end_matches('/'));
    let sent = shared
        .proxy_http
        .request(method, &url)
        .headers(forwarded)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("VM {vm:?} did not answer: {e}"),
            );
        }
    };
    let status = upstream.status();
    let mut out_headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !is_hop_by_hop(name) {
            out_headers.append(name.clone(), value.clone());
        }
    }
    if upstream
        .content_length()
        .is_some_and(|n| n > MAX_PROXY_BODY as u64)
    {
        return text(StatusCode::BAD_GATEWAY, "VM response too large");
    }
    let Ok(bytes) = upstream.bytes().await else {
        return text(StatusCode::BAD_GATEWAY, "VM response was cut short");
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    resp
}

/// The request's headers as the VM sees them: hop-by-hop and proxy-owned
/// ones dropped, and for a caller with a token, who they are (exe.dev's
/// user id, email and the token's context).
fn forwarded_headers(
    shared: &Shared,
    headers: &HeaderMap,
    identity: Option<&Identity>,
) -> HeaderMap {
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        if !is_hop_by_hop(name) && !is_proxy_owned(name) {
            forwarded.append(name.clone(), value.clone());
        }
    }
    if let Some(id) = identity {
        let email = &shared.config.user_email;
        let pairs = [
            (USER_ID_HEADER, Some(user_id(email))),
            (EMAIL_HEADER, Some(email.clone())),
            (TOKEN_CTX_HEADER, id.ctx.clone()),
        ];
        for (name, value) in pairs {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                forwarded.insert(HeaderName::from_static(name), v);
            }
        }
    }
    forwarded
}

fn unauthorized() -> Response {
    let mut resp = text(StatusCode::UNAUTHORIZED, "invalid token");
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(vm_from_host("web-one.exe.xyz"), Some("web-one".into()));
        assert_eq!(vm_from_host("Web-One.EXE.xyz:8443"), Some("web-one".into()));
        assert_eq!(vm_from_host("web-one.exe.xyz."), Some("web-one".into()));
        for no in [
            "exe.xyz",
            ".exe.xyz",
            "a.b.exe.xyz",
            "127.0.0.1:80",
            "exe.dev",
            "xexe.xyz",
        ] {
            assert_eq!(vm_from_host(no), None, "{no}");
        }
    }

    #[test]
    fn token_places() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), Presented::None);
        h.insert("authorization", "Bearer app-token".parse().unwrap());
        assert_eq!(presented(&h), Presented::None, "not ours");
        h.insert("authorization", "bearer exe0.a.b".parse().unwrap());
        assert_eq!(
            presented(&h),
            Presented::Token {
                token: "exe0.a.b".into(),
                header: header::AUTHORIZATION
            }
        );
        let basic = format!("Basic {}", STANDARD.encode("git:exe1.xyz"));
        h.insert("authorization", basic.parse().unwrap());
        assert_eq!(
            presented(&h),
            Presented::Token {
                token: "exe1.xyz".into(),
                header: header::AUTHORIZATION
            }
        );
        h.insert("x-exedev-authorization", "Bearer exe0.c.d".parse().unwrap());
        assert_eq!(
            presented(&h),
            Presented::Token {
                token: "exe0.c.d".into(),
                header: HeaderName::from_static(EXEDEV_AUTHORIZATION)
            },
            "preferred header wins and Authorization stays the app's"
        );
        h.insert("x-exedev-authorization", "exe0.c.d".parse().unwrap());
        assert_eq!(presented(&h), Presented::Malformed);
    }

    #[test]
    fn redirect_target_is_encoded() {
        assert_eq!(
            url_encode("https://a.exe.xyz/p?q=1&r"),
            "https%3A%2F%2Fa.exe.xyz%2Fp%3Fq%3D1%26r"
        );
    }
}
