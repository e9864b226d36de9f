//! The emulator against the contract (docs/exedev-api.md): transport and
//! status codes, authentication, every command's reply shape, lifecycle,
//! persistence, faults and the request log. Driven by the crate's own
//! client where possible and raw reqwest for transport cases.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use exedev_k8s::base::secret::Secret;
use exedev_k8s::core::api::command::CATALOGUE;
use exedev_k8s::core::api::error::ErrorKind;
use exedev_k8s::core::api::retry::RetryPolicy;
use exedev_k8s::core::api::{Command, NewVm};
use exedev_k8s::core::token::{self, API_NAMESPACE, Permissions, vm_namespace};
use exedev_k8s::edges::client::{Client, ClientOptions, RmOutcome};
use exedev_k8s::emulator::{
    self, EmulatorConfig, RateLimit, RunningEmulator, STATUS_DROPPED, StrictOptions, VmRecord,
};
use serde_json::{Value, json};
use ssh_key::{Algorithm, HashAlg, PrivateKey};

const BOOT: Duration = Duration::from_millis(50);

fn key() -> PrivateKey {
    PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn all_cmds() -> Permissions {
    Permissions {
        cmds: Some(CATALOGUE.iter().map(|s| s.name.to_string()).collect()),
        ..Default::default()
    }
}

fn mint(key: &PrivateKey, perms: &Permissions) -> Secret {
    token::mint(key, perms, API_NAMESPACE).unwrap()
}

fn config(keys: &[&PrivateKey]) -> EmulatorConfig {
    EmulatorConfig {
        authorized_keys: keys.iter().map(|k| k.public_key().clone()).collect(),
        boot: BOOT,
        ..Default::default()
    }
}

/// An emulator with a fresh key, and an all-commands token for it.
async fn emu_with(
    tweak: impl FnOnce(&mut EmulatorConfig),
) -> (RunningEmulator, PrivateKey, Secret) {
    let k = key();
    let mut cfg = config(&[&k]);
    tweak(&mut cfg);
    let emu = emulator::start(cfg).await.unwrap();
    let tok = mint(&k, &all_cmds());
    (emu, k, tok)
}

fn client(emu: &RunningEmulator, token: &Secret, retries: usize) -> Client {
    let policy = RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retries: retries,
        share_window: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    };
    Client::new(
        emu.url.clone(),
        token.clone(),
        ClientOptions {
            policy,
            max_rate: None,
        },
    )
    .unwrap()
}

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn raw(url: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> Raw {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Raw {
        status,
        headers,
        body,
    }
}

fn assert_error(r: &Raw, status: u16, message: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body, format!("{}\n", json!({ "error": message })));
    assert_eq!(r.headers["content-type"], "application/json");
}

async fn wait_boot() {
    tokio::time::sleep(BOOT + Duration::from_millis(30)).await;
}

#[tokio::test]
async fn transport_status_codes() {
    let (emu, k, tok) = emu_with(|_| {}).await;
    let t = Some(tok.expose());
    // 405
    let r = reqwest::Client::new().get(&emu.url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"error\":\"method not allowed\"}\n"
    );
    // 413, before authentication
    let big = format!("comment vm-one {}", "x".repeat(65 * 1024));
    assert_error(
        &raw(&emu.url, None, big).await,
        413,
        "request body exceeds 64KB limit",
    );
    // 400 for each cause
    let missing = "missing command in request body";
    assert_error(&raw(&emu.url, t, "").await, 400, missing);
    assert_error(&raw(&emu.url, t, "  \n\t").await, 400, missing);
    let nul = "request body must not contain null bytes";
    assert_error(&raw(&emu.url, t, "ls\0").await, 400, nul);
    assert_error(
        &raw(&emu.url, t, "comment vm-one 'abc").await,
        400,
        "invalid command syntax",
    );
    assert_error(
        &raw(&emu.url, t, "comment vm-one \"abc").await,
        400,
        "invalid command syntax",
    );
    // 401 without a header
    let r = raw(&emu.url, None, "ls").await;
    assert_error(&r, 401, "missing or invalid Authorization header");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    // 404 unknown command, checked before permissions
    let ls_only = mint(
        &k,
        &Permissions {
            cmds: Some(vec!["ls".into(), "share".into(), "ssh-key".into()]),
            ..Default::default()
        },
    );
    let lo = Some(ls_only.expose());
    assert_error(
        &raw(&emu.url, lo, "frobnicate --now").await,
        404,
        "unknown command",
    );
    assert_error(&raw(&emu.url, lo, "share").await, 404, "unknown command");
    // 403: exact names; a parent grants no subcommand
    let denied = "command not allowed by token permissions";
    assert_error(&raw(&emu.url, lo, "rm vm-one").await, 403, denied);
    assert_error(
        &raw(&emu.url, lo, "share port vm-one 8080").await,
        403,
        denied,
    );
    assert_error(&raw(&emu.url, lo, "ssh-key list").await, 403, denied);
    // 403 before usage errors (422)
    assert_error(&raw(&emu.url, lo, "rm").await, 403, denied);
    let r = raw(&emu.url, lo, "ls --json").await;
    assert_eq!((r.status, r.body.as_str()), (200, "{\"vms\":[]}\n"));
    // Default permissions ({}): ls yes, rm no.
    let default = mint(&k, &Permissions::default());
    assert_eq!(
        raw(&emu.url, Some(default.expose()), "whoami").await.status,
        200
    );
    assert_error(
        &raw(&emu.url, Some(default.expose()), "rm x").await,
        403,
        denied,
    );
    // Other paths
    let r = reqwest::Client::new()
        .post(format!("{}/nope", emu.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    emu.shutdown().await;
}

/// Signs arbitrary payload bytes, so rule-breaking permission JSON can be
/// tested.
fn sign_bytes(k: &PrivateKey, namespace: &str, payload: &[u8]) -> String {
    let sig = k.sign(namespace, HashAlg::Sha512, payload).unwrap();
    format!(
        "exe0.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(token::sig_to_blob(&sig).unwrap())
    )
}

#[tokio::test]
async fn every_authentication_failure_is_a_generic_401() {
    let (emu, k, tok) = emu_with(|_| {}).await;
    let good = tok.expose().to_string();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = format!(
        "exe0.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"cmds":["ls","rm"]}"#),
        parts[2]
    );
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let last = sig.len() - 5;
    sig[last] ^= 0x55;
    let tampered_sig = format!("exe0.{}.{}", parts[1], URL_SAFE_NO_PAD.encode(&sig));
    let expired = mint(
        &k,
        &Permissions {
            exp: Some(now() - 60),
            ..Default::default()
        },
    );
    let not_yet = mint(
        &k,
        &Permissions {
            nbf: Some(now() + 3600),
            ..Default::default()
        },
    );
    let wrong_ns = token::mint(&k, &Permissions::default(), &vm_namespace("vm-one")).unwrap();
    let unknown_key = mint(&key(), &Permissions::default());
    let cases: Vec<(&str, String)> = vec![
        ("tampered payload", tampered_payload),
        ("tampered signature", tampered_sig),
        ("expired", expired.expose().into()),
        ("not yet valid", not_yet.expose().into()),
        ("wrong namespace", wrong_ns.expose().into()),
        ("unknown key", unknown_key.expose().into()),
        (
            "unknown field",
            sign_bytes(&k, API_NAMESPACE, br#"{"foo":1}"#),
        ),
        (
            "duplicate key",
            sign_bytes(&k, API_NAMESPACE, br#"{"exp":4000000000,"exp":4000000000}"#),
        ),
        (
            "decimal exp",
            sign_bytes(&k, API_NAMESPACE, br#"{"exp":4000000000.0}"#),
        ),
        ("trailing space", sign_bytes(&k, API_NAMESPACE, b"{} ")),
        ("not a token", "hello".into()),
        ("unknown exe1", "exe1.AAAAAAAA".into()),
        ("garbage base64", "exe0.!!!.???".into()),
    ];
    for (what, t) in cases {
        let r = raw(&emu.url, Some(&t), "whoami").await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.error(), "invalid token", "{what}");
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{what}");
    }
    for header in ["Basic Zm9vOmJhcg==", "Bearer", "Token abc"] {
        let r = reqwest::Client::new()
            .post(&emu.url)
            .header("Authorization", header)
            .body("whoami")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{header}");
        assert_eq!(
            r.text().await.unwrap(),
            "{\"error\":\"missing or invalid Authorization header\"}\n"
        );
    }
    // The scheme is case-insensitive.
    let r = reqwest::Client::new()
        .post(&emu.url)
        .header("Authorization", format!("bEARer {good}"))
        .body("whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // None of the rejected requests reached a command.
    assert_eq!(emu.count("whoami"), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn token_from_the_documented_ssh_keygen_recipe_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("exe_dev_api");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "api", "-f"])
        .arg(&key_path)
        .status()
        .unwrap();
    assert!(status.success());
    let script = r#"
b64url() { tr -d '\n=' | tr '+/' '-_'; }
PERMISSIONS='{"cmds":["whoami","ssh-key list"]}'
PAYLOAD=$(printf '%s' "$PERMISSIONS" | base64 | b64url)
SIG=$(printf '%s' "$PERMISSIONS" | ssh-keygen -Y sign -f "$KEY" -n v0@exe.dev 2>/dev/null)
SIGBLOB=$(echo "$SIG" | sed '1d;$d' | b64url)
printf '%s' "exe0.$PAYLOAD.$SIGBLOB"
"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("KEY", &key_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let tok = Secret::new(String::from_utf8(out.stdout).unwrap());
    let pub_path = dir.path().join("exe_dev_api.pub");
    let keys = exedev_k8s::edges::credentials::load_public_keys(&pub_path).unwrap();
    let emu = emulator::start(EmulatorConfig {
        authorized_keys: keys,
        user_email: "ops@example.org".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = client(&emu, &tok, 0);
    let me = c.whoami().await.unwrap();
    assert_eq!(me.email, "ops@example.org");
    assert!(me.user_id.starts_with("usr"));
    let keys = c.ssh_key_list().await.unwrap().ssh_keys;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].current && keys[0].name == "api");
    assert!(keys[0].fingerprint.starts_with("SHA256:"));
    assert!(keys[0].public_key.starts_with("ssh-ed25519 "));
    let e = c.ls(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    emu.shutdown().await;
}

#[tokio::test]
async fn commands_and_reply_shapes() {
    let (emu, _k, tok) = emu_with(|_| {}).await;
    let c = client(&emu, &tok, 0);
    let t = Some(tok.expose());

    // new with every flag
    let reply = c
        .new_vm(NewVm {
            name: Some("web-a".into()),
            image: Some("exeuntu".into()),
            cpu: Some(4),
            memory: Some("8GB".into()),
            disk: Some("40GB".into()),
            tags: vec!["k8s".into(), "exk8s-fleet-demo".into()],
            env: vec![("ROLE".into(), "server".into())],
            setup_script: Some(Secret::new("#!/bin/bash\necho 'hi'\n")),
            command: Some("auto".into()),
            comment: Some("fleet demo".into()),
            no_email: true,
        })
        .await
        .unwrap();
    assert_eq!(reply.vm_name, "web-a");
    assert_eq!(reply.tags, ["k8s", "exk8s-fleet-demo"]);
    assert_eq!(reply.ssh_command, "ssh web-a.exe.xyz");
    assert_eq!(reply.ssh_dest, "web-a.exe.xyz");
    assert_eq!(reply.ssh_port, 22);
    assert_eq!(reply.https_url, "https://web-a.exe.xyz");
    let r = raw(&emu.url, t, "new --name=web-b --json").await;
    assert_eq!(
        r.body,
        "{\"vm_name\":\"web-b\",\"tags\":[],\"ssh_command\":\"ssh web-b.exe.xyz\",\"ssh_dest\":\"web-b.exe.xyz\",\"ssh_port\":22,\"https_url\":\"https://web-b.exe.xyz\"}\n"
    );
    // Random name
    let random = c.new_vm(NewVm::default()).await.unwrap().vm_name;
    assert!(
        exedev_k8s::base::names::check_vm_name(&random).is_ok(),
        "{random}"
    );
    assert!(random.contains('-'));

    let stored = emu.state().vms["web-a"].clone();
    assert_eq!(stored.cpus, 4);
    assert_eq!(stored.memory_bytes, 8 << 30);
    assert_eq!(stored.disk_bytes, 40 << 30);
    assert_eq!(stored.env, [("ROLE".to_string(), "server".to_string())]);
    assert_eq!(
        stored.setup_script.as_deref(),
        Some("#!/bin/bash\necho 'hi'\n")
    );
    assert_eq!(stored.command.as_deref(), Some("auto"));
    assert!(stored.no_email);
    let b = emu.state().vms["web-b"].clone();
    assert_eq!(
        (b.cpus, b.memory_bytes, b.disk_bytes),
        (2, 4 << 30, 20 << 30)
    );
    assert_eq!(b.image, "exeuntu");

    // ls, whole and by pattern, ordered by name
    let vms = c.ls(None).await.unwrap();
    let names: Vec<_> = vms.iter().map(|v| v.vm_name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 3);
    let a = c.ls(Some("web-?")).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].vm_name, "web-a");
    assert_eq!(a[0].region, "lon");
    assert_eq!(a[0].region_display, "London, UK");
    assert_eq!(a[0].comment, "fleet demo");
    assert_eq!(a[0].allocated_cpus, 4);
    assert_eq!(a[0].https_url, "https://web-a.exe.xyz");
    assert_eq!(c.ls(Some("*-a")).await.unwrap().len(), 1);
    assert!(c.ls(Some("nothing*")).await.unwrap().is_empty());

    // 422 examples
    let cases = [
        (
            "new --name=web-a",
            "VM name \"web-a\" is not available".to_string(),
        ),
        (
            "new --name=Bad_Name",
            exedev_k8s::base::names::check_vm_name("Bad_Name")
                .unwrap_err()
                .to_string(),
        ),
        (
            "new --name=docker",
            exedev_k8s::base::names::check_vm_name("docker")
                .unwrap_err()
                .to_string(),
        ),
        ("comment nope-vm hi", "VM \"nope-vm\" not found".to_string()),
        ("share show nope-vm", "VM \"nope-vm\" not found".to_string()),
        ("tag nope-vm t", "VM \"nope-vm\" not found".to_string()),
    ];
    for (body, msg) in cases {
        assert_error(&raw(&emu.url, t, body).await, 422, &msg);
    }
    for body in [
        "new --cpu=0",
        "new --cpu=65",
        "new --cpu=two",
        "new --memory=lots",
        "new --tag=Bad",
        "new --env=NOVALUE",
        "new --bogus",
        "rm",
        "tag web-a",
        "tag web-a UPPER",
        "resize web-a",
        "resize web-a --disk=10GB",
        "share port web-a 80",
        "share port web-a 10000",
        "share port web-a http",
    ] {
        let r = raw(&emu.url, t, body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert!(!r.error().is_empty());
    }
    let script = format!("new '--setup-script={}'", "x".repeat(10 * 1024 + 1));
    let r = raw(&emu.url, t, script).await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("10240"), "{}", r.body);
    let r = raw(&emu.url, t, format!("new --comment={}", "c".repeat(201))).await;
    assert_eq!(r.status, 422);
    let r = raw(&emu.url, t, format!("comment web-a {}", "c".repeat(201))).await;
    assert_eq!(r.status, 422);
    let r = raw(&emu.url, t, "resize web-a --disk=10GB").await;
    assert!(r.error().contains("only grow"), "{}", r.body);

    // resize (restarts the VM)
    let v = c
        .resize("web-b", Some(4), Some("16GB".into()), Some("30GB".into()))
        .await
        .unwrap();
    assert_eq!(v["allocated_cpus"], 4);
    assert_eq!(v["memory_capacity_bytes"], 16u64 << 30);
    assert_eq!(v["disk_capacity_bytes"], 30u64 << 30);

    // tag / untag / comment
    let v = c
        .tag("web-a", vec!["blue".into(), "k8s".into()])
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"vm_name":"web-a","tags":["k8s","exk8s-fleet-demo","blue"]})
    );
    let v = c.untag("web-a", vec!["k8s".into()]).await.unwrap();
    assert_eq!(v["tags"], json!(["exk8s-fleet-demo", "blue"]));
    let v = c.comment("web-a", "new comment").await.unwrap();
    assert_eq!(v, json!({"vm_name":"web-a","comment":"new comment"}));
    c.comment("web-a", "").await.unwrap();
    assert_eq!(emu.state().vms["web-a"].comment, "");
    let r = raw(&emu.url, t, "comment web-a ''").await;
    assert_eq!(r.status, 200);

    // share, once booted
    wait_boot().await;
    let r = raw(&emu.url, t, "share show web-a --json").await;
    assert_eq!(
        r.body,
        "{\"vm_name\":\"web-a\",\"status\":\"private\",\"port\":8000,\"url\":\"https://web-a.exe.xyz/\",\"users\":null,\"links\":null}\n"
    );
    let u = c.share_port("web-a", 8080).await.unwrap();
    assert_eq!(
        serde_json::to_value(&u).unwrap(),
        json!({"vm_name":"web-a","port":8080,"share":"private","status":"updated"})
    );
    let u = c.share_visibility("web-a", true).await.unwrap();
    assert!(u.share.is_public() && u.port == 8080 && u.status == "updated");
    let s = c.share_show("web-a").await.unwrap();
    assert!(s.status.is_public() && s.port == 8080);
    let u = c.share_visibility("web-a", false).await.unwrap();
    assert!(!u.share.is_public());
    // Other images: port 80 (exeuntu's EXPOSE 8000 does not apply).
    c.new_vm(NewVm {
        name: Some("plain-vm".into()),
        image: Some("alpine:3".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(emu.state().vms["plain-vm"].share.port, 80);

    // help and --help
    let r = raw(&emu.url, t, "help").await;
    let cmds = r.json()["commands"].as_array().unwrap().len();
    assert_eq!(cmds, CATALOGUE.len());
    let r = raw(&emu.url, t, "new --help").await;
    assert_eq!(r.status, 200);
    let h = r.json();
    assert_eq!(h["command"], "new");
    assert_eq!(h["usage"], "new [flags]");
    let flags: Vec<&str> = h["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(flags.contains(&"setup-script") && flags.contains(&"no-email"));
    assert!(h["flags"][0]["help"].is_string());
    let r = raw(&emu.url, t, "share port --help").await;
    assert_eq!(r.json()["command"], "share port");
    assert!(
        emu.state().vms.contains_key("web-a"),
        "--help has no effect"
    );

    // rm: existing, then absent (200 with an error line, then the result)
    assert_eq!(c.rm("web-b").await.unwrap(), RmOutcome::Deleted);
    let r = raw(&emu.url, t, "rm web-b").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "{\"error\":\"VM \\\"web-b\\\" not found\"}\n{\"deleted\":[],\"failed\":[\"web-b\"]}\n"
    );
    assert_eq!(c.rm("web-b").await.unwrap(), RmOutcome::NotFound);
    let r = raw(&emu.url, t, "rm web-a plain-vm web-a").await;
    assert_eq!(
        r.body,
        "{\"deleted\":[\"web-a\",\"plain-vm\"],\"failed\":[]}\n"
    );
    assert_eq!(c.ls(None).await.unwrap().len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn strict_options() {
    let (emu, _k, tok) = emu_with(|c| {
        c.strict = StrictOptions {
            rm_missing_422: true,
            allow_digit_suffix: true,
            ls_lag: Duration::from_millis(150),
        }
    })
    .await;
    let t = Some(tok.expose());
    let r = raw(&emu.url, t, "rm ghost-vm").await;
    assert_error(&r, 422, "VM \"ghost-vm\" not found");
    let c = client(&emu, &tok, 0);
    assert_eq!(c.rm("ghost-vm").await.unwrap(), RmOutcome::NotFound);
    // --allow-digit-suffix: exe.dev's historical rule.
    let r = raw(&emu.url, t, "new --name=p1-a-1").await;
    assert_eq!(r.status, 200);
    c.new_vm(NewVm {
        name: Some("lagged".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        c.ls(None).await.unwrap().is_empty(),
        "hidden right after new"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.ls(None).await.unwrap().len(), 2);
    emu.shutdown().await;

    // Default: the stricter reading refuses `-<digits>` endings, with the
    // message the tool's own check gives.
    let (emu, _k, tok) = emu_with(|_| {}).await;
    let r = raw(&emu.url, Some(tok.expose()), "new --name=p1-a-1").await;
    assert_error(
        &r,
        422,
        "VM name \"p1-a-1\" must not end in a hyphen followed by digits",
    );
    let r = raw(&emu.url, Some(tok.expose()), "new --name=p1-a1").await;
    assert_eq!(r.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn vm_boots_and_share_fails_until_running() {
    let (emu, _k, tok) = emu_with(|c| c.boot = Duration::from_millis(300)).await;
    let t = Some(tok.expose());
    let c = client(&emu, &tok, 0);
    c.new_vm(NewVm {
        name: Some("boot-vm".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let vms = c.ls(None).await.unwrap();
    assert_eq!(vms[0].status, "starting", "visible in ls at once");
    for body in [
        "share show boot-vm",
        "share port boot-vm 8080",
        "share set-public boot-vm",
        "share set-private boot-vm",
    ] {
        assert_error(
            &raw(&emu.url, t, body).await,
            422,
            "failed to connect to VM",
        );
    }
    let e = c.share_show("boot-vm").await.unwrap_err();
    assert!(e.is_vm_not_ready());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(c.ls(None).await.unwrap()[0].is_running());
    assert_eq!(c.share_show("boot-vm").await.unwrap().port, 8000);
    // The client's share retry rides out a boot.
    c.new_vm(NewVm {
        name: Some("boot-two".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(c.share_port("boot-two", 9000).await.unwrap().port, 9000);
    assert!(emu.count("share port") >= 2, "retried while booting");
    // Planted VMs: a stopped one never accepts share commands.
    let mut stopped = VmRecord::new("stopped-vm");
    stopped.pinned_status = Some("stopped".into());
    stopped.tags = vec!["not-ours".into()];
    emu.insert_vm(stopped).unwrap();
    let vms = c.ls(Some("stopped-*")).await.unwrap();
    assert_eq!((vms[0].status.as_str(), vms[0].tags.len()), ("stopped", 1));
    assert_eq!(raw(&emu.url, t, "share show stopped-vm").await.status, 422);
    emu.shutdown().await;
}

#[tokio::test]
async fn exe1_round_trip() {
    let (emu, k, tok) = emu_with(|_| {}).await;
    let c = client(&emu, &tok, 0);
    // An exe1 handle works like its exe0 token, permissions included.
    let who = mint(
        &k,
        &Permissions {
            cmds: Some(vec!["whoami".into()]),
            exp: Some(now() + 2),
            ..Default::default()
        },
    );
    let exe1 = c.exe0_to_exe1(None, &who).await.unwrap();
    assert!(exe1.expose().starts_with("exe1."));
    assert!(exe1.expose().len() < who.expose().len());
    let c1 = client(&emu, &exe1, 0);
    assert_eq!(c1.whoami().await.unwrap().email, "dev@example.com");
    assert_eq!(c1.ls(None).await.unwrap_err().kind, ErrorKind::Forbidden);
    // Rejected sources: a VM token without --vm, garbage, an exe1.
    let t = Some(tok.expose());
    c.new_vm(NewVm {
        name: Some("vm-one".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let vm_tok = token::mint(&k, &Permissions::default(), &vm_namespace("vm-one")).unwrap();
    let r = raw(&emu.url, t, format!("exe0-to-exe1 {}", vm_tok.expose())).await;
    assert_error(&r, 422, "invalid token");
    let r = raw(&emu.url, t, format!("exe0-to-exe1 {}", exe1.expose())).await;
    assert_error(&r, 422, "invalid token");
    let r = raw(&emu.url, t, "exe0-to-exe1 --vm=ghost-vm exe0.a.b").await;
    assert_eq!(r.status, 422);
    // A VM-scoped handle is issued with --vm but does not work on /exec.
    let vm1 = c.exe0_to_exe1(Some("vm-one"), &vm_tok).await.unwrap();
    let r = raw(&emu.url, Some(vm1.expose()), "whoami").await;
    assert_error(&r, 401, "invalid token");
    assert_eq!(emu.state().exe1.len(), 2);
    // Expiry of the underlying exe0 still applies.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    while now() <= now_plus_check(&who) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = raw(&emu.url, Some(exe1.expose()), "whoami").await;
    assert_error(&r, 401, "invalid token");
    emu.shutdown().await;
}

/// The `exp` of a token minted by this test file.
fn now_plus_check(t: &Secret) -> i64 {
    let payload = t.expose().split('.').nth(1).unwrap();
    let p: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    p["exp"].as_i64().unwrap()
}

#[tokio::test]
async fn rate_limit_per_key_with_retry_after() {
    let (k1, k2) = (key(), key());
    let mut cfg = config(&[&k1, &k2]);
    cfg.rate_limit = Some(RateLimit {
        per_second: 0.5,
        burst: 2,
    });
    let emu = emulator::start(cfg).await.unwrap();
    let (t1, t2) = (mint(&k1, &all_cmds()), mint(&k2, &all_cmds()));
    // Another token from the same key shares the bucket.
    let t1b = mint(&k1, &Permissions::default());
    assert_eq!(raw(&emu.url, Some(t1.expose()), "whoami").await.status, 200);
    assert_eq!(
        raw(&emu.url, Some(t1b.expose()), "whoami").await.status,
        200
    );
    let r = raw(&emu.url, Some(t1.expose()), "whoami").await;
    assert_error(&r, 429, "rate limit exceeded");
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&after), "{after}");
    assert_eq!(raw(&emu.url, Some(t2.expose()), "whoami").await.status, 200);
    // The client sees the kind and the advised wait.
    let e = client(&emu, &t1, 0).whoami().await.unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::RateLimited { retry_after: Some(d) } if d >= Duration::from_secs(1))
    );
    // Unauthenticated requests are not counted against anyone.
    assert_eq!(raw(&emu.url, None, "whoami").await.status, 401);
    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 429, 200, 429, 401]);
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_faults_are_seeded_and_504_and_drops_take_effect() {
    let run = |seed| async move {
        let (emu, _k, tok) = emu_with(|c| {
            c.fault_rate = 1.0;
            c.seed = seed;
        })
        .await;
        let mut outcomes = Vec::new();
        for i in 0..24 {
            let name = format!("fault-vm{i}");
            let sent = reqwest::Client::new()
                .post(&emu.url)
                .bearer_auth(tok.expose())
                .body(format!("new --name={name}"))
                .send()
                .await;
            let outcome = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.text().await {
                        Ok(_) => status,
                        Err(_) => STATUS_DROPPED,
                    }
                }
                Err(_) => STATUS_DROPPED,
            };
            let created = emu.state().vms.contains_key(&name);
            outcomes.push((outcome, created));
        }
        let logged: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
        emu.shutdown().await;
        (outcomes, logged)
    };
    let (a, logged) = run(42).await;
    assert_eq!(a, run(42).await.0, "same seed, same faults");
    assert_ne!(a, run(43).await.0, "another seed, other faults");
    assert_eq!(a.iter().map(|(s, _)| *s).collect::<Vec<_>>(), logged);
    for &(status, created) in &a {
        match status {
            429 | 500 => assert!(!created, "{status} happens before the command runs"),
            504 | STATUS_DROPPED => assert!(created, "{status} happens after the command ran"),
            other => panic!("unexpected status {other} at fault rate 1"),
        }
    }
    for kind in [429, 500, 504, STATUS_DROPPED] {
        assert!(
            a.iter().any(|(s, _)| *s == kind),
            "{kind} never drawn: {a:?}"
        );
    }

    // Through the crate's client: a drop (the connection closes before any
    // status line) is ConnectionLost, outcome unknown, never a success.
    let (emu, _k, tok) = emu_with(|c| {
        c.fault_rate = 1.0;
        c.seed = 42;
    })
    .await;
    for (i, (status, _)) in a.iter().enumerate() {
        // A fresh client each time: a 429 pauses a client's shared gate.
        let e = client(&emu, &tok, 0)
            .new_vm(NewVm {
                name: Some(format!("fault-vm{i}")),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let expected = match status {
            429 => matches!(e.kind, ErrorKind::RateLimited { .. }),
            500 => e.kind == ErrorKind::Internal(500),
            504 => e.kind == ErrorKind::Timeout,
            _ => e.kind == ErrorKind::ConnectionLost,
        };
        assert!(expected, "request {i}: {status} vs {:?}", e.kind);
        assert_eq!(
            exedev_k8s::core::api::retry::outcome_unknown(&e),
            matches!(*status, 504 | 500 | STATUS_DROPPED)
        );
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn deadline_504_still_takes_effect() {
    let (emu, _k, tok) = emu_with(|c| {
        c.deadline = Duration::from_millis(40);
        c.latency = Duration::from_millis(200);
    })
    .await;
    let started = std::time::Instant::now();
    let r = raw(&emu.url, Some(tok.expose()), "new --name=slow-vm").await;
    assert_error(&r, 504, "command timed out");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "answers at the deadline"
    );
    assert!(emu.state().vms.contains_key("slow-vm"));
    emu.shutdown().await;
    // Latency under the deadline just delays.
    let (emu, _k, tok) = emu_with(|c| c.latency = Duration::from_millis(40)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        raw(&emu.url, Some(tok.expose()), "whoami").await.status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(20));
    emu.shutdown().await;
}

#[tokio::test]
async fn state_survives_restart_and_concurrent_news_all_persist() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("emu-state.json");
    let k = key();
    let tok = mint(&k, &all_cmds());
    let cfg = || {
        let mut c = config(&[&k]);
        c.state_file = Some(state_file.clone());
        c
    };
    let emu = emulator::start(cfg()).await.unwrap();
    let c = client(&emu, &tok, 0);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.new_vm(NewVm {
                name: Some(format!("node{i:02}")),
                tags: vec!["fleet".into()],
                setup_script: Some(Secret::new(format!("echo {i}"))),
                ..Default::default()
            })
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    c.tag("node00", vec!["extra".into()]).await.unwrap();
    wait_boot().await;
    c.share_port("node01", 3000).await.unwrap();
    let exe1 = c.exe0_to_exe1(None, &tok).await.unwrap();
    let before = emu.state();
    emu.shutdown().await;

    let on_disk: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(on_disk["vms"].as_object().unwrap().len(), 20);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let emu = emulator::start(cfg()).await.unwrap();
    assert_eq!(emu.state(), before);
    let c = client(&emu, &exe1, 0);
    let vms = c.ls(None).await.unwrap();
    assert_eq!(vms.len(), 20);
    assert_eq!(vms[0].tags, ["fleet", "extra"]);
    assert_eq!(c.share_show("node01").await.unwrap().port, 3000);
    assert_eq!(
        emu.state().vms["node07"].setup_script.as_deref(),
        Some("echo 7")
    );
    emu.shutdown().await;
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp files"
    );
}

#[tokio::test]
async fn request_log_hides_scripts_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("requests.jsonl");
    let lf = log_file.clone();
    let (emu, k, tok) = emu_with(move |c| c.log_file = Some(lf)).await;
    let c = client(&emu, &tok, 0);
    c.new_vm(NewVm {
        name: Some("log-vm".into()),
        setup_script: Some(Secret::new("TAILSCALE_AUTHKEY=tskey-SECRET123")),
        ..Default::default()
    })
    .await
    .unwrap();
    let t = Some(tok.expose());
    raw(
        &emu.url,
        t,
        "new --name log-vm-two --setup-script 'K3S_TOKEN=SECRET456'",
    )
    .await;
    c.exe0_to_exe1(None, &tok).await.unwrap();
    raw(&emu.url, None, "ls").await;
    raw(&emu.url, t, "nonsense").await;

    let recs = emu.requests();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0].command.as_deref(), Some("new"));
    assert_eq!(recs[0].status, 200);
    let fp = k.public_key().fingerprint(HashAlg::Sha256).to_string();
    assert_eq!(recs[0].key_fingerprint.as_deref(), Some(fp.as_str()));
    assert!(recs[0].words.iter().any(|w| w == "--name=log-vm"));
    assert!(recs[0].unix_ms > 1_700_000_000_000);
    assert_eq!(recs[2].words.last().map(String::as_str), Some("<token>"));
    assert_eq!(
        (recs[3].key_fingerprint.clone(), recs[3].status),
        (None, 401)
    );
    assert_eq!((recs[4].command.clone(), recs[4].status), (None, 404));
    assert_eq!(emu.count("new"), 2);
    assert_eq!(emu.count("exe0-to-exe1"), 1);

    let text = std::fs::read_to_string(&log_file).unwrap();
    assert_eq!(text.lines().count(), 5);
    let all = format!("{text}{:?}", recs);
    for secret in ["SECRET123", "SECRET456", tok.expose()] {
        assert!(!all.contains(secret), "log leaks {secret}");
    }
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["status"].is_u64() && v["words"].is_array());
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn inspection_endpoint_shows_full_state_to_loopback() {
    // A boot long enough that a loaded machine still sees `starting`.
    let (emu, _k, tok) = emu_with(|c| c.boot = Duration::from_secs(30)).await;
    let c = client(&emu, &tok, 0);
    c.exec(&Command::New(Box::new(NewVm {
        name: Some("seen-vm".into()),
        env: vec![("A".into(), "1".into())],
        setup_script: Some(Secret::new("echo setup")),
        ..Default::default()
    })))
    .await
    .unwrap();
    let url = format!("{}/_emulator/state", emu.base_url);
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let vm = &v["vms"][0];
    assert_eq!(vm["name"], "seen-vm");
    assert_eq!(vm["setup_script"], "echo setup");
    assert_eq!(vm["env"], json!([["A", "1"]]));
    assert_eq!(vm["share"], json!({"port":8000,"public":false}));
    assert_eq!(vm["status"], "starting");
    assert_eq!(v["exe1_handles"], 0);
    let r = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    emu.shutdown().await;
}

/// A web page that rebinds its own name to 127.0.0.1 reaches the emulator
/// from a loopback peer, but names its own `Host`: the state (setup
/// scripts, secrets included) is not served to it, nor is any other
/// `/_emulator/` path.
#[tokio::test]
async fn inspection_needs_a_loopback_host_header() {
    let (emu, _k, tok) = emu_with(|_| {}).await;
    let c = client(&emu, &tok, 0);
    c.exec(&Command::New(Box::new(NewVm {
        name: Some("seen-vm".into()),
        setup_script: Some(Secret::new("TS_AUTHKEY=tskey-auth-SEKRIT")),
        ..Default::default()
    })))
    .await
    .unwrap();
    let port = emu.addr.port();
    let http = reqwest::Client::new();
    for path in ["/_emulator/state", "/_emulator/anything"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("localhost.evil.example:{port}"),
        ] {
            let r = http
                .get(format!("{}{path}", emu.base_url))
                .header("host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 403, "{path} {host}");
            let body = r.text().await.unwrap();
            assert!(!body.contains("SEKRIT"), "{body}");
            assert!(body.contains("127.0.0.1, [::1] or localhost"), "{body}");
            assert!(body.contains("evil.example"), "names the host: {body}");
        }
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".into(),
    ] {
        let r = http
            .get(format!("{}/_emulator/state", emu.base_url))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{host}");
    }
    emu.shutdown().await;
}
