//! The /exec client over real HTTP on 127.0.0.1 against a scripted server:
//! every status code, 200-with-error, and each retry/no-retry rule.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exedev_k8s::base::secret::Secret;
use exedev_k8s::core::api::error::ErrorKind;
use exedev_k8s::core::api::retry::{RetryPolicy, outcome_unknown};
use exedev_k8s::core::api::{Command, NewVm};
use exedev_k8s::edges::client::{Client, ClientOptions, RmOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the scripted server does with one request.
#[derive(Clone)]
enum Reply {
    Status(u16, &'static str),
    StatusWith(u16, &'static str, &'static str),
    /// Read the request, then close without answering.
    Drop,
    /// A 200 whose chunked body never ends.
    Endless,
}

struct Script {
    url: String,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
}

/// Serves `replies` in order (the last one repeats).
async fn serve(replies: Vec<Reply>) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let reply = replies[n.min(replies.len() - 1)].clone();
            n += 1;
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let (head_end, len) = loop {
                    let k = sock.read(&mut tmp).await.unwrap_or(0);
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let k = sock.read(&mut tmp).await.unwrap_or(0);
                    if k == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let auth = head
                    .lines()
                    .find(|l| l.to_lowercase().starts_with("authorization:"))
                    .unwrap_or("")
                    .to_string();
                seen.lock()
                    .unwrap()
                    .push((String::from_utf8_lossy(&buf[head_end..]).to_string(), auth));
                let (status, body, extra) = match reply {
                    Reply::Drop => return,
                    Reply::Endless => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = format!("10000\r\n{}\r\n", "[".repeat(0x10000));
                        while sock.write_all(chunk.as_bytes()).await.is_ok() {}
                        return;
                    }
                    Reply::Status(s, b) => (s, b, ""),
                    Reply::StatusWith(s, b, h) => (s, b, h),
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Script { url, bodies }
}

fn client(url: &str) -> Client {
    let policy = RetryPolicy {
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retries: 3,
        share_window: Duration::from_millis(400),
        request_timeout: Duration::from_secs(5),
    };
    Client::new(
        url,
        Secret::new("exe0.e30.sig"),
        ClientOptions {
            policy,
            max_rate: None,
        },
    )
    .unwrap()
}

impl Script {
    fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
    fn body(&self, i: usize) -> String {
        self.bodies.lock().unwrap()[i].0.clone()
    }
}

#[tokio::test]
async fn sends_quoted_body_with_bearer_token() {
    let s = serve(vec![Reply::Status(
        200,
        r#"{"vm_name":"x","port":8080,"share":"private","status":"updated"}"#,
    )])
    .await;
    let r = client(&s.url).share_port("demo-web1", 8080).await.unwrap();
    assert_eq!(r.port, 8080);
    assert_eq!(s.body(0), "share port --json demo-web1 8080");
    assert_eq!(
        s.bodies.lock().unwrap()[0].1,
        "authorization: Bearer exe0.e30.sig"
    );
    let c = client(&s.url);
    c.exec(&Command::Comment {
        vm: "demo-web1".into(),
        text: "it's $x".into(),
    })
    .await
    .unwrap();
    assert_eq!(s.body(1), r"comment --json demo-web1 'it'\''s $x'");
}

#[tokio::test]
async fn every_status_maps_to_its_kind_and_advice() {
    type Case = (u16, fn(&ErrorKind) -> bool, &'static str);
    let cases: [Case; 12] = [
        (
            307,
            |k| *k == ErrorKind::OtherStatus(307),
            "redirects are never followed",
        ),
        (400, |k| *k == ErrorKind::BadRequest, "parse"),
        (401, |k| *k == ErrorKind::Unauthorized, "ssh-key list"),
        (403, |k| *k == ErrorKind::Forbidden, "\"ls\""),
        (404, |k| *k == ErrorKind::UnknownCommand, "exec -- help"),
        (405, |k| *k == ErrorKind::MethodNotAllowed, "POST"),
        (413, |k| *k == ErrorKind::TooLarge, "64 KiB"),
        (422, |k| *k == ErrorKind::CommandFailed, "exe.dev's"),
        (
            429,
            |k| matches!(k, ErrorKind::RateLimited { .. }),
            "per signing key",
        ),
        (500, |k| *k == ErrorKind::Internal(500), "support@exe.dev"),
        (503, |k| *k == ErrorKind::Internal(503), "support@exe.dev"),
        (
            504,
            |k| *k == ErrorKind::Timeout,
            "MAY STILL HAVE TAKEN EFFECT",
        ),
    ];
    for (status, is_kind, advice) in cases {
        let s = serve(vec![Reply::Status(status, r#"{"error":"the message"}"#)]).await;
        // A 403 never retries; use a read so the retry rules are visible too.
        let policy = RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        };
        let c = Client::new(
            &s.url,
            Secret::new("t"),
            ClientOptions {
                policy,
                max_rate: None,
            },
        )
        .unwrap();
        let e = c.ls(None).await.unwrap_err();
        assert!(is_kind(&e.kind), "{status}: {:?}", e.kind);
        assert_eq!(e.status(), Some(status));
        let shown = exedev_k8s::base::hint::describe(&e);
        assert!(
            (shown.contains("the message") || status == 307)
                && shown.contains(&format!("HTTP {status}"))
                && shown.contains(advice),
            "{shown}"
        );
        assert!(shown.contains("`ls`"), "names the command: {shown}");
    }
}

#[tokio::test]
async fn error_in_a_200_body_is_an_error() {
    let s = serve(vec![Reply::Status(
        200,
        "{\"error\":\"key already exists\"}\n",
    )])
    .await;
    let e = client(&s.url)
        .exec(&Command::Raw(vec!["ssh-key".into(), "list".into()]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ErrorIn200);
    assert!(e.to_string().contains("key already exists"));
}

#[tokio::test]
async fn rm_of_a_missing_vm_is_not_found_in_both_shapes() {
    let s = serve(vec![Reply::Status(
        200,
        "{\"error\":\"VM \\\"x\\\" not found\"}\n{\"deleted\":[],\"failed\":[\"gone-vm\"]}\n",
    )])
    .await;
    assert_eq!(
        client(&s.url).rm("gone-vm").await.unwrap(),
        RmOutcome::NotFound
    );
    let s = serve(vec![Reply::Status(
        422,
        r#"{"error":"VM \"gone-vm\" not found"}"#,
    )])
    .await;
    assert_eq!(
        client(&s.url).rm("gone-vm").await.unwrap(),
        RmOutcome::NotFound
    );
    let s = serve(vec![Reply::Status(
        200,
        r#"{"deleted":["gone-vm"],"failed":[]}"#,
    )])
    .await;
    assert_eq!(
        client(&s.url).rm("gone-vm").await.unwrap(),
        RmOutcome::Deleted
    );
}

#[tokio::test]
async fn reads_retry_transient_failures() {
    let s = serve(vec![
        Reply::Status(500, r#"{"error":"internal error"}"#),
        Reply::Drop,
        Reply::Status(503, "busy"),
        Reply::Status(200, r#"{"vms":null}"#),
    ])
    .await;
    assert!(client(&s.url).ls(None).await.unwrap().is_empty());
    assert_eq!(s.count(), 4);
}

#[tokio::test]
async fn reads_give_up_after_max_retries() {
    let s = serve(vec![Reply::Status(500, r#"{"error":"internal error"}"#)]).await;
    let e = client(&s.url).ls(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal(500));
    assert_eq!(s.count(), 4, "first try + 3 retries");
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after_and_slow_everyone() {
    let s = serve(vec![
        Reply::StatusWith(429, r#"{"error":"rate limit exceeded"}"#, "retry-after: 1\r\n"),
        Reply::Status(200, r#"{"vm_name":"demo-a1","tags":null,"ssh_command":"ssh demo-a1.exe.xyz","ssh_dest":"demo-a1.exe.xyz","ssh_port":22,"https_url":"https://demo-a1.exe.xyz"}"#),
    ])
    .await;
    let c = client(&s.url);
    let before = c.gate().interval();
    let t = Instant::now();
    let r = c
        .new_vm(NewVm {
            name: Some("demo-a1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.vm_name, "demo-a1");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(s.count(), 2, "a 429 means nothing ran: `new` may be resent");
    assert!(c.gate().interval() > before, "the shared gate slowed down");
}

#[tokio::test]
async fn new_is_never_resent_when_its_outcome_is_unknown() {
    for reply in [
        Reply::Status(504, r#"{"error":"command timed out"}"#),
        Reply::Status(500, r#"{"error":"internal error"}"#),
        Reply::Drop,
    ] {
        let s = serve(vec![reply]).await;
        let e = client(&s.url)
            .new_vm(NewVm {
                name: Some("demo-a1".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(outcome_unknown(&e), "{e}");
        assert_eq!(s.count(), 1, "sent exactly once");
        let s = serve(vec![Reply::Status(504, r#"{"error":"command timed out"}"#)]).await;
        assert!(client(&s.url).rm("demo-a1").await.is_err());
        assert_eq!(s.count(), 1);
    }
}

#[tokio::test]
async fn refused_connections_are_safe_to_retry() {
    // Bind and drop to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = client(&format!("http://127.0.0.1:{port}/exec"))
        .new_vm(NewVm::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConnectFailed);
    assert!(!outcome_unknown(&e));
}

#[tokio::test]
async fn share_commands_wait_for_a_booting_vm_for_a_bounded_time() {
    let s = serve(vec![
        Reply::Status(422, r#"{"error":"failed to connect to VM"}"#),
        Reply::Status(422, r#"{"error":"handshake failed"}"#),
        Reply::Status(
            200,
            r#"{"vm_name":"x","port":8000,"share":"public","status":"updated"}"#,
        ),
    ])
    .await;
    assert!(
        client(&s.url)
            .share_visibility("demo-a1", true)
            .await
            .unwrap()
            .share
            .is_public()
    );
    assert_eq!(s.count(), 3);

    let s = serve(vec![Reply::Status(
        422,
        r#"{"error":"failed to connect to VM"}"#,
    )])
    .await;
    let t = Instant::now();
    let e = client(&s.url)
        .share_port("demo-a1", 8000)
        .await
        .unwrap_err();
    assert!(e.is_vm_not_ready());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded by share_window"
    );
    assert!(s.count() >= 3);

    // Other 422s and other commands are not retried.
    let s = serve(vec![Reply::Status(
        422,
        r#"{"error":"failed to connect to VM"}"#,
    )])
    .await;
    assert!(
        client(&s.url)
            .tag("demo-a1", vec!["t".into()])
            .await
            .is_err()
    );
    assert_eq!(s.count(), 1);
}

#[tokio::test]
async fn limits_are_checked_before_anything_is_sent() {
    let s = serve(vec![Reply::Status(200, "{}")]).await;
    let e = client(&s.url)
        .new_vm(NewVm {
            setup_script: Some(Secret::new("x".repeat(20_000))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Invalid(_)));
    assert!(e.to_string().contains("10240") && !e.to_string().contains("xxxx"));
    assert_eq!(s.count(), 0);
}

#[tokio::test]
async fn unexpected_reply_shapes_are_reported() {
    let s = serve(vec![Reply::Status(200, "not json")]).await;
    let e = client(&s.url).ls(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadReply);
    let s = serve(vec![Reply::Status(200, r#"{"vm_name":1}"#)]).await;
    assert_eq!(
        client(&s.url).share_show("x").await.unwrap_err().kind,
        ErrorKind::BadReply
    );
}

/// Issue 22, finding 7 (`/exec` replies). Repro: an endpoint answering
/// `ls` with an 800 MB body took 1.6 GB of memory: the client read the
/// whole reply. It stops past 32 MiB (`MAX_REPLY_BYTES`), naming the
/// endpoint and the limit, and does not retry the same flood.
#[tokio::test]
async fn an_endless_reply_is_cut_at_the_limit() {
    let s = serve(vec![Reply::Endless]).await;
    let e = client(&s.url).ls(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadReply, "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("larger than 32 MiB") && shown.contains(&s.url),
        "{shown}"
    );
    assert_eq!(
        exedev_k8s::edges::client::MAX_REPLY_BYTES,
        32 << 20,
        "the message states the limit"
    );
}

/// A redirect is never followed: the body of a `new` carries the setup
/// script (k3s token, Tailscale key) and every request the API token. The
/// second server records whether anything reached it.
#[tokio::test]
async fn redirects_are_not_followed_to_another_origin() {
    let elsewhere = serve(vec![Reply::Status(200, r#"{"vms":[]}"#)]).await;
    let location: &'static str =
        Box::leak(format!("location: {}\r\n", elsewhere.url).into_boxed_str());
    for status in [301, 302, 307, 308] {
        let s = serve(vec![Reply::StatusWith(status, "", location)]).await;
        let e = client(&s.url)
            .new_vm(NewVm {
                name: Some("demo-cp-1".into()),
                setup_script: Some(Secret::new("TS_AUTHKEY=tskey-auth-SEKRIT")),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::OtherStatus(status));
        let shown = exedev_k8s::base::hint::describe(&e);
        assert!(shown.contains(&elsewhere.url), "names the target: {shown}");
        assert!(shown.contains("never followed"), "{shown}");
        assert!(!shown.contains("SEKRIT"), "{shown}");
        assert_eq!(s.count(), 1, "{status}: not re-sent");
    }
    assert_eq!(elsewhere.count(), 0, "the second origin was reached");
}

/// Plain HTTP only to loopback: anything else is refused before a request.
#[test]
fn a_plain_http_endpoint_off_loopback_is_refused() {
    let e = Client::new(
        "http://exe.example.com/exec",
        Secret::new("exe0.e30.SEKRIT"),
        ClientOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadEndpoint);
    let shown = exedev_k8s::base::hint::describe(&e);
    assert!(shown.contains("http://exe.example.com/exec"), "{shown}");
    assert!(shown.contains("--endpoint"), "says what to do: {shown}");
    assert!(!shown.contains("SEKRIT"), "{shown}");
    for ok in [
        "http://127.0.0.1:1/exec",
        "http://[::1]:1/exec",
        "http://localhost:1/exec",
    ] {
        assert!(Client::new(ok, Secret::new("t"), ClientOptions::default()).is_ok());
    }
}

/// `https://` to a plain-http server (the emulator): said as such, with the
/// URL to write, instead of rustls's "received corrupt message of type
/// InvalidContentType".
#[tokio::test]
async fn an_https_endpoint_that_speaks_plain_http_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers whatever arrives (a TLS ClientHello) as an http server does.
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut tmp = [0u8; 4096];
            let _ = sock.read(&mut tmp).await;
            let _ = sock
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let e = client(&format!("https://127.0.0.1:{port}/exec"))
        .ls(None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConnectFailed);
    insta::assert_snapshot!(
        e.message.replace(&port.to_string(), "PORT"),
        @"https://127.0.0.1:PORT/exec speaks plain http, not https (as the built-in emulator does): write --endpoint http://127.0.0.1:PORT/exec"
    );
}
