//! The emulated HTTPS proxy (`https://<vm>.exe.xyz/`) against the API
//! notes, and the probe against the emulated proxy: a tiny backend echoes
//! what it received, so each test sees exactly what a VM's server would.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use exedev_k8s::base::secret::Secret;
use exedev_k8s::core::token::{self, API_NAMESPACE, Permissions, vm_namespace};
use exedev_k8s::edges::probe::{self, ProbeTarget, mint_vm_token, probe_client};
use exedev_k8s::emulator::{self, EmulatorConfig, RunningEmulator, VmRecord, user_id};
use serde_json::{Value, json};
use ssh_key::{Algorithm, PrivateKey};

const EMAIL: &str = "ops@example.com";
const PUBLIC: &str = "web-public";
const PRIVATE: &str = "web-private";
const OTHER: &str = "web-other";
const STOPPED: &str = "web-stopped";
const NO_BACKEND: &str = "web-empty";

fn key() -> PrivateKey {
    PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Echoes method, path, query, headers and body as JSON; `/status/N`
/// answers N, and every answer carries `x-backend: echo`.
async fn echo(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let mut h: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &headers {
        h.entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let status = uri
        .path()
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .unwrap_or(axum::http::StatusCode::OK);
    (
        status,
        [("x-backend", "echo")],
        Json(json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "headers": h,
            "body": String::from_utf8_lossy(&body),
        })),
    )
}

async fn start_backend() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(echo);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

struct Fixture {
    emu: RunningEmulator,
    key: PrivateKey,
}

async fn fixture() -> Fixture {
    let k = key();
    let emu = emulator::start(EmulatorConfig {
        authorized_keys: vec![k.public_key().clone()],
        boot: Duration::ZERO,
        user_email: EMAIL.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let backend = start_backend().await;
    for (name, public) in [(PUBLIC, true), (PRIVATE, false), (OTHER, false)] {
        let mut vm = VmRecord::new(name);
        vm.share.public = public;
        emu.insert_vm(vm).unwrap();
        emu.set_proxy_backend(name, &backend);
    }
    let mut stopped = VmRecord::new(STOPPED);
    stopped.share.public = true;
    stopped.pinned_status = Some("stopped".into());
    emu.insert_vm(stopped).unwrap();
    emu.set_proxy_backend(STOPPED, &backend);
    let mut empty = VmRecord::new(NO_BACKEND);
    empty.share.public = true;
    emu.insert_vm(empty).unwrap();
    Fixture { emu, key: k }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// The values of `name` the backend received (empty when absent).
    fn received(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

async fn send(
    emu: &RunningEmulator,
    vm: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let http = probe_client(Duration::from_secs(5)).unwrap();
    let mut req = http
        .request(method, format!("{}{path}", emu.base_url))
        .header("host", format!("{vm}.exe.xyz"))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

async fn get(emu: &RunningEmulator, vm: &str, headers: &[(&str, &str)]) -> Answer {
    send(emu, vm, reqwest::Method::GET, "/", headers, "").await
}

fn vm_token(k: &PrivateKey, vm: &str, ctx: Option<Value>) -> Secret {
    token::mint(
        k,
        &Permissions {
            exp: Some(now() + 300),
            ctx,
            ..Default::default()
        },
        &vm_namespace(vm),
    )
    .unwrap()
}

fn assert_no_identity(a: &Answer) {
    for h in ["x-exedev-userid", "x-exedev-email", "x-exedev-token-ctx"] {
        assert!(a.received(h).is_empty(), "{h} forwarded: {}", a.body);
    }
}

#[tokio::test]
async fn public_and_private_without_token() {
    let f = fixture().await;
    let a = send(
        &f.emu,
        PUBLIC,
        reqwest::Method::POST,
        "/api/items?x=1&y=two",
        &[("content-type", "text/plain"), ("x-app", "yes")],
        "hello body",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/api/items");
    assert_eq!(j["query"], "x=1&y=two");
    assert_eq!(j["body"], "hello body");
    assert_eq!(a.received("x-app"), ["yes"]);
    assert_eq!(a.headers["x-backend"], "echo", "backend headers come back");
    assert_no_identity(&a);
    // The backend's status is passed through.
    let a = send(&f.emu, PUBLIC, reqwest::Method::GET, "/status/418", &[], "").await;
    assert_eq!(a.status, 418);

    // Private, no token: to the login page, nothing forwarded.
    let a = send(&f.emu, PRIVATE, reqwest::Method::GET, "/a/b?c=d", &[], "").await;
    assert_eq!(a.status, 307);
    assert_eq!(
        a.headers["location"],
        "https://exe.dev/login?redirect=https%3A%2F%2Fweb-private.exe.xyz%2Fa%2Fb%3Fc%3Dd"
    );
    // A non-exe credential in Authorization is the app's, not a token.
    let a = get(&f.emu, PRIVATE, &[("authorization", "Bearer app-secret")]).await;
    assert_eq!(a.status, 307);
    let a = get(&f.emu, PUBLIC, &[("authorization", "Bearer app-secret")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.received("authorization"), ["Bearer app-secret"]);
    f.emu.shutdown().await;
}

#[tokio::test]
async fn token_in_each_place_is_accepted_and_stripped() {
    let f = fixture().await;
    // Key order and number spelling must survive: the ctx arrives byte for byte.
    let ctx = json!({"role": "deployer", "scopes": ["read", "write"], "n": 1.5});
    let tok = vm_token(&f.key, PRIVATE, Some(ctx.clone()));
    let raw_ctx = {
        let payload = tok.expose().split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        token::raw_field(text.as_bytes(), "ctx")
            .unwrap()
            .to_string()
    };
    let bearer = format!("Bearer {}", tok.expose());
    let basic = format!("Basic {}", STANDARD.encode(format!("git:{}", tok.expose())));
    for (header, value) in [
        ("x-exedev-authorization", bearer.as_str()),
        ("authorization", bearer.as_str()),
        ("authorization", basic.as_str()),
    ] {
        let a = get(
            &f.emu,
            PRIVATE,
            &[
                (header, value),
                // Spoofing attempts: never forwarded.
                ("x-exedev-email", "evil@example.com"),
                ("x-exedev-userid", "usr-evil"),
                ("x-exedev-token-ctx", "{\"role\":\"admin\"}"),
            ],
        )
        .await;
        assert_eq!(a.status, 200, "{header}: {}", a.body);
        assert_eq!(a.received("x-exedev-userid"), [user_id(EMAIL)]);
        assert_eq!(a.received("x-exedev-email"), [EMAIL]);
        assert_eq!(a.received("x-exedev-token-ctx"), [raw_ctx.as_str()]);
        let received: Value = serde_json::from_str(&raw_ctx).unwrap();
        assert_eq!(received, ctx);
        assert!(a.received("x-exedev-authorization").is_empty(), "{header}");
        assert!(a.received("authorization").is_empty(), "{header}");
        assert!(!a.body.contains(tok.expose()), "token forwarded ({header})");
    }
    // The preferred header leaves the app's own Authorization alone.
    let a = get(
        &f.emu,
        PRIVATE,
        &[
            ("x-exedev-authorization", bearer.as_str()),
            ("authorization", "Bearer app-secret"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.received("authorization"), ["Bearer app-secret"]);
    // No ctx in the token: no ctx header.
    let plain = vm_token(&f.key, PRIVATE, None);
    let a = get(
        &f.emu,
        PRIVATE,
        &[(
            "x-exedev-authorization",
            &format!("Bearer {}", plain.expose()),
        )],
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.received("x-exedev-token-ctx").is_empty());
    assert_eq!(a.received("x-exedev-email"), [EMAIL]);
    // A token on a public VM also identifies the caller.
    let pub_tok = vm_token(&f.key, PUBLIC, None);
    let a = get(
        &f.emu,
        PUBLIC,
        &[(
            "x-exedev-authorization",
            &format!("Bearer {}", pub_tok.expose()),
        )],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.received("x-exedev-email"), [EMAIL]);
    // Spoofed identity on a public VM without a token is dropped too.
    let a = get(&f.emu, PUBLIC, &[("x-exedev-email", "evil@example.com")]).await;
    assert_eq!(a.status, 200);
    assert_no_identity(&a);

    // The request log: command `proxy`, no token, the signer once known.
    let recs: Vec<_> = f
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.command.as_deref() == Some("proxy"))
        .collect();
    assert_eq!(recs.len(), 7);
    assert_eq!(recs[0].words, [PRIVATE, "GET", "/"]);
    assert!(recs[0].key_fingerprint.is_some());
    assert!(recs[6].key_fingerprint.is_none());
    assert!(!format!("{recs:?}").contains(tok.expose()));
    f.emu.shutdown().await;
}

#[tokio::test]
async fn wrong_tokens_are_refused() {
    let f = fixture().await;
    let stranger = key();
    let expired = token::mint(
        &f.key,
        &Permissions {
            exp: Some(now() - 10),
            ..Default::default()
        },
        &vm_namespace(PRIVATE),
    )
    .unwrap();
    let not_yet = token::mint(
        &f.key,
        &Permissions {
            nbf: Some(now() + 600),
            ..Default::default()
        },
        &vm_namespace(PRIVATE),
    )
    .unwrap();
    let bad = [
        ("other VM", vm_token(&f.key, OTHER, None)),
        (
            "API namespace",
            token::mint(&f.key, &Permissions::default(), API_NAMESPACE).unwrap(),
        ),
        ("unregistered key", vm_token(&stranger, PRIVATE, None)),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("garbage", Secret::new("exe0.nope.nope")),
        ("unknown exe1", Secret::new("exe1.AAAA")),
    ];
    for (what, tok) in &bad {
        for vm in [PRIVATE, PUBLIC] {
            let a = get(
                &f.emu,
                vm,
                &[(
                    "x-exedev-authorization",
                    &format!("Bearer {}", tok.expose()),
                )],
            )
            .await;
            assert_eq!(a.status, 401, "{what} on {vm}: {}", a.body);
            assert!(a.json().is_null(), "nothing forwarded");
        }
    }
    let a = get(&f.emu, PRIVATE, &[("x-exedev-authorization", "exe0.a.b")]).await;
    assert_eq!(a.status, 401, "not Bearer");
    f.emu.shutdown().await;
}

#[tokio::test]
async fn exe1_handles_and_path_form() {
    let f = fixture().await;
    let api = token::mint(&f.key, &Permissions::default(), API_NAMESPACE).unwrap();
    let http = reqwest::Client::new();
    let exchange = |vm: Option<&str>, tok: &Secret| {
        let flag = vm.map(|v| format!("--vm={v} ")).unwrap_or_default();
        http.post(&f.emu.url)
            .header("authorization", format!("Bearer {}", api.expose()))
            .body(format!("exe0-to-exe1 {flag}{}", tok.expose()))
            .send()
    };
    let vm_tok = vm_token(&f.key, PRIVATE, Some(json!({"k": "v"})));
    let r: Value = exchange(Some(PRIVATE), &vm_tok)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let exe1 = r["token"].as_str().unwrap().to_string();
    let a = get(
        &f.emu,
        PRIVATE,
        &[("x-exedev-authorization", &format!("Bearer {exe1}"))],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.received("x-exedev-token-ctx"), [r#"{"k":"v"}"#]);
    // A handle for another VM is refused.
    let a = get(
        &f.emu,
        OTHER,
        &[("x-exedev-authorization", &format!("Bearer {exe1}"))],
    )
    .await;
    assert_eq!(a.status, 401);
    // An API handle is refused.
    let r: Value = exchange(None, &api).await.unwrap().json().await.unwrap();
    let api_exe1 = r["token"].as_str().unwrap().to_string();
    let a = get(
        &f.emu,
        PRIVATE,
        &[("authorization", &format!("Bearer {api_exe1}"))],
    )
    .await;
    assert_eq!(a.status, 401);

    // /_proxy/<vm>/<path> serves the same proxy without Host.
    let r = http
        .get(format!("{}/_proxy/{PUBLIC}/x/y?z=1", f.emu.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(
        (j["path"].as_str(), j["query"].as_str()),
        (Some("/x/y"), Some("z=1"))
    );
    let r = http
        .get(format!("{}/_proxy/{PRIVATE}/", f.emu.base_url))
        .header(
            "x-exedev-authorization",
            format!("Bearer {}", vm_tok.expose()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // /exec on the emulator's own host is still the API.
    let r = http
        .post(&f.emu.url)
        .header("authorization", format!("Bearer {}", api.expose()))
        .body("whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    f.emu.shutdown().await;
}

#[tokio::test]
async fn unknown_stopped_and_unreachable() {
    let f = fixture().await;
    assert_eq!(get(&f.emu, "ghost-vm", &[]).await.status, 404);
    assert_eq!(get(&f.emu, STOPPED, &[]).await.status, 502);
    assert_eq!(get(&f.emu, NO_BACKEND, &[]).await.status, 502);
    // A backend that has gone away.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    f.emu
        .set_proxy_backend(NO_BACKEND, &format!("http://{gone}"));
    assert_eq!(get(&f.emu, NO_BACKEND, &[]).await.status, 502);
    // A VM that is still booting is not running either.
    let booting = emulator::start(EmulatorConfig {
        authorized_keys: vec![f.key.public_key().clone()],
        boot: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut vm = VmRecord::new(PUBLIC);
    vm.share.public = true;
    booting.insert_vm(vm).unwrap();
    booting.set_proxy_backend(PUBLIC, &start_backend().await);
    assert_eq!(get(&booting, PUBLIC, &[]).await.status, 502);
    // Private and stopped: authentication comes first.
    let mut vm = VmRecord::new(PRIVATE);
    vm.pinned_status = Some("stopped".into());
    booting.insert_vm(vm).unwrap();
    assert_eq!(get(&booting, PRIVATE, &[]).await.status, 307);
    let tok = vm_token(&f.key, PRIVATE, None);
    let a = get(
        &booting,
        PRIVATE,
        &[(
            "x-exedev-authorization",
            &format!("Bearer {}", tok.expose()),
        )],
    )
    .await;
    assert_eq!(a.status, 502);
    booting.shutdown().await;
    f.emu.shutdown().await;
}

#[tokio::test]
async fn probe_reports_status_latency_and_auth() {
    let f = fixture().await;
    let http = probe_client(Duration::from_secs(5)).unwrap();
    let base = f.emu.base_url.clone();
    let tok = mint_vm_token(&f.key, PRIVATE, Duration::from_secs(60)).unwrap();

    let r = probe::probe(&http, &ProbeTarget::emulated(PUBLIC, true, &base), None).await;
    assert_eq!(
        (r.status, r.error.as_deref(), r.authenticated),
        (Some(200), None, false)
    );
    assert!(r.latency > Duration::ZERO && r.latency < Duration::from_secs(5));

    let private = ProbeTarget::emulated(PRIVATE, false, &base);
    let r = probe::probe(&http, &private, Some(&tok)).await;
    assert_eq!(
        (r.status, r.error.as_deref(), r.authenticated),
        (Some(200), None, true)
    );

    let r = probe::probe(&http, &private, None).await;
    assert_eq!(r.status, Some(307));
    assert!(!r.authenticated);
    assert!(
        r.error.as_deref().unwrap().contains("private and no token"),
        "{r:?}"
    );
    assert!(r.private_unprobed, "{r:?}");

    let wrong = mint_vm_token(&f.key, OTHER, Duration::from_secs(60)).unwrap();
    let r = probe::probe(&http, &private, Some(&wrong)).await;
    assert_eq!(r.status, Some(401));
    assert!(!r.authenticated && r.error.is_some());

    let r = probe::probe(&http, &ProbeTarget::emulated(STOPPED, true, &base), None).await;
    assert_eq!(r.status, Some(502));
    assert_eq!(r.error.as_deref(), Some("HTTP 502 Bad Gateway"));

    // Nothing listening at all.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut t = ProbeTarget::new(PUBLIC, true);
    t.url = format!("http://{gone}/");
    let r = probe::probe(&http, &t, None).await;
    assert_eq!(r.status, None);
    assert!(r.error.is_some());

    // probe_all mints per-VM tokens and keeps the order.
    let targets = [
        ProbeTarget::emulated(PRIVATE, false, &base),
        ProbeTarget::emulated(PUBLIC, true, &base),
        ProbeTarget::emulated(OTHER, false, &base),
        ProbeTarget::emulated("ghost-vm", true, &base),
    ];
    let rs = probe::probe_all(&targets, Some(&f.key), 2).await;
    let got: Vec<_> = rs
        .iter()
        .map(|r| (r.vm.as_str(), r.status, r.authenticated))
        .collect();
    assert_eq!(
        got,
        [
            (PRIVATE, Some(200), true),
            (PUBLIC, Some(200), false),
            (OTHER, Some(200), true),
            ("ghost-vm", Some(404), false),
        ]
    );
    let rs = probe::probe_all(&targets[..1], None, 0).await;
    assert_eq!(rs[0].status, Some(307));
    // Probe tokens are short-lived and scoped to one VM.
    let payload = tok.expose().split('.').nth(1).unwrap();
    let perms = Permissions::parse(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert!(perms.exp.unwrap() <= now() + 61 && perms.cmds.is_none());
    f.emu.shutdown().await;
}
