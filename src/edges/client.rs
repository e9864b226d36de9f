//! The HTTP edge to exe.dev: `POST /exec` with a bearer token.
//!
//! Everything about the contract (commands, quoting, reply shapes, status
//! meanings, retry rules) comes from [`crate::core::api`]; this module only moves
//! bytes, applies the retry policy, and paces requests with a [`RateGate`]
//! shared by every task using the client, so that one task's 429 slows all
//! of them down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::Retryable;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::base::secret::Secret;
use crate::core::api::error::{ApiError, ErrorKind};
use crate::core::api::retry::{self, Decision, RetryPolicy};
use crate::core::api::types::*;
use crate::core::api::{Command, NewVm};

/// Default endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://exe.dev/exec";

/// Reads an `--endpoint` before anything is sent: the `/exec` URL, or a bare
/// origin (`http://127.0.0.1:8080`, with or without a final `/`) meaning its
/// `/exec`. A missing scheme or another path is refused with the URL that
/// was probably meant, instead of surfacing later as a 404 ("unknown
/// command") or a transport error.
pub fn parse_endpoint(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let suggest = |rest: &str| {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        let scheme = if host == "localhost" || host.starts_with("127.") || host == "[::1]" {
            "http"
        } else {
            "https"
        };
        let origin = rest.split('/').next().unwrap_or_default();
        format!("{scheme}://{origin}/exec")
    };
    if !raw.contains("://") {
        return Err(format!(
            "{raw:?} has no scheme (http:// or https://): did you mean {}?",
            suggest(raw)
        ));
    }
    let mut url = reqwest::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} has a query or fragment: the endpoint is a plain /exec URL such as {DEFAULT_ENDPOINT}"
        ));
    }
    match url.path() {
        "" | "/" => url.set_path("/exec"),
        p if p.ends_with("/exec") => {}
        p if p.ends_with("/exec/") => {
            let trimmed = p.trim_end_matches('/').to_string();
            url.set_path(&trimmed);
        }
        p => {
            let origin = url.origin().ascii_serialization();
            return Err(format!(
                "{raw:?} is not an /exec URL (path {p:?}): exe.dev's API is POST {DEFAULT_ENDPOINT}; did you mean {origin}/exec?"
            ));
        }
    }
    check_endpoint(url.as_str()).map_err(|why| format!("{raw:?} {why}"))?;
    Ok(url.to_string())
}

/// Paces request starts for every task sharing a client, so that one task's
/// 429 slows every task down.
///
/// AIMD on the spacing between request starts: a 429 widens it by a quarter
/// (at most once per spacing window, so a burst of 429s from concurrent
/// requests counts once) and pauses everyone until `Retry-After`; each
/// success narrows it by 1%, probing back towards the limit.
#[derive(Debug)]
pub struct RateGate {
    state: Mutex<GateState>,
    floor: Duration,
}

#[derive(Debug)]
struct GateState {
    interval: Duration,
    next_slot: Instant,
    last_backoff: Option<Instant>,
}

/// Spacing adopted at the first 429 when no cap was configured (20 req/s).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(5);

/// The largest `/exec` reply read. The largest legitimate one is `ls` of
/// every VM of an account (about 0.5 KiB per VM, so some thousand VMs fit
/// in a few MiB); anything beyond 32 MiB is not exe.dev answering, and is
/// not read into memory (an endpoint streaming without end would otherwise
/// take the machine's memory).
pub const MAX_REPLY_BYTES: usize = 32 << 20;

/// Why a reply's body could not be read.
enum ReplyRead {
    Transport(reqwest::Error),
    TooLarge,
}

/// The reply's body, chunk by chunk, stopping past `limit` bytes.
async fn read_reply(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReplyRead> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReplyRead::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReplyRead::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReplyRead::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl RateGate {
    /// `max_rate`: requests per second never exceeded (None: no cap until
    /// exe.dev answers 429).
    pub fn new(max_rate: Option<f64>) -> Self {
        let floor = max_rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r))
            .unwrap_or(Duration::ZERO);
        RateGate {
            state: Mutex::new(GateState {
                interval: floor,
                next_slot: Instant::now(),
                last_backoff: None,
            }),
            floor,
        }
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        let start = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = s.next_slot.max(now);
            s.next_slot = start + s.interval;
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }

    /// A 429: slow everyone down and pause until `retry_after`.
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let window = s.interval.max(FIRST_BACKOFF) * 4;
        if s.last_backoff
            .is_none_or(|t| now.duration_since(t) >= window)
        {
            s.interval = if s.interval.is_zero() {
                FIRST_BACKOFF
            } else {
                s.interval.mul_f64(1.25).min(MAX_INTERVAL)
            };
            s.last_backoff = Some(now);
        }
        let pause = retry_after.unwrap_or(s.interval);
        s.next_slot = s.next_slot.max(now + pause);
    }

    /// A success: speed up a little, never past the configured cap.
    pub fn on_success(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.interval > self.floor {
            s.interval = s.interval.mul_f64(0.99).max(self.floor);
        }
    }

    /// Current spacing between request starts.
    pub fn interval(&self) -> Duration {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .interval
    }
}

/// How a client behaves beyond its endpoint and token.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub policy: RetryPolicy,
    /// Requests per second never exceeded.
    pub max_rate: Option<f64>,
}

/// An `/exec` client. Cheap to clone; clones share the rate gate.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Secret,
    policy: RetryPolicy,
    gate: Arc<RateGate>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The outcome of `rm` for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmOutcome {
    Deleted,
    /// exe.dev says it does not exist (200 with `failed`, or 422 "not found").
    NotFound,
}

impl Client {
    /// A client for `endpoint`, which must be `https://`, or `http://` to a
    /// loopback host (the emulator): the token and setup scripts never
    /// travel in clear over a network. Redirects are never followed: a
    /// redirect would re-send the body (setup scripts carry the k3s token
    /// and the Tailscale key) and the token to another origin.
    pub fn new(
        endpoint: impl Into<String>,
        token: Secret,
        options: ClientOptions,
    ) -> Result<Self, ApiError> {
        let endpoint = endpoint.into();
        check_endpoint(&endpoint).map_err(|why| ApiError {
            kind: ErrorKind::BadEndpoint,
            command: "(client setup)".into(),
            command_name: String::new(),
            message: format!("{:?}: {why}", crate::base::text::one_line(&endpoint)),
        })?;
        let mut builder = reqwest::Client::builder();
        if endpoint.starts_with("http://") {
            // Plain http (the emulator on loopback) never does TLS: loading
            // the system's root certificates is then pure cost, the largest
            // fixed one of a plan.
            builder = builder.tls_certs_only(std::iter::empty());
        }
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.policy.request_timeout)
            .user_agent(concat!("exedev-k8s/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError {
                kind: ErrorKind::ConnectFailed,
                command: "(client setup)".into(),
                command_name: String::new(),
                message: e.to_string(),
            })?;
        Ok(Client {
            http,
            endpoint,
            token,
            policy: options.policy,
            gate: Arc::new(RateGate::new(options.max_rate)),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The gate shared by this client's clones.
    pub fn gate(&self) -> &RateGate {
        &self.gate
    }

    /// Sends a command with the retry policy and returns its JSON reply.
    pub async fn exec(&self, cmd: &Command) -> Result<Value, ApiError> {
        match self.exec_reply(cmd).await? {
            Reply::Value(v) => Ok(v),
            Reply::Plain(bytes) => serde_json::from_slice(&bytes).map_err(|e| ApiError {
                kind: ErrorKind::BadReply,
                command: cmd.display(),
                command_name: cmd.name().into(),
                message: format!("reply is not JSON: {e}"),
            }),
        }
    }

    /// Sends a command with the retry policy; the reply as [`Reply`].
    async fn exec_reply(&self, cmd: &Command) -> Result<Reply, ApiError> {
        let class = retry::class_of(cmd);
        let body = cmd.body().map_err(|e| ApiError {
            kind: ErrorKind::Invalid(e),
            command: cmd.display(),
            command_name: cmd.name().into(),
            message: String::new(),
        })?;
        let attempt = || self.send_once(cmd, &body);
        attempt
            .retry(self.policy.backoff(class))
            .sleep(tokio::time::sleep)
            .when(|e| matches!(retry::decide(class, e), Decision::Retry(_)))
            .adjust(|e, d| match (retry::decide(class, e), d) {
                (Decision::Retry(Some(after)), Some(d)) => Some(after.max(d)),
                _ => d,
            })
            .await
    }

    async fn send_once(&self, cmd: &Command, body: &str) -> Result<Reply, ApiError> {
        self.gate.acquire().await;
        let fail = |kind: ErrorKind, message: String| ApiError {
            kind,
            command: cmd.display(),
            command_name: cmd.name().into(),
            message,
        };
        let resp = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                let message = match plain_http_reply(&e) {
                    true => plain_http_message(&self.endpoint),
                    false => transport_message(&e),
                };
                fail(transport_kind(&e), message)
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let bytes = read_reply(resp, MAX_REPLY_BYTES)
            .await
            .map_err(|e| match e {
                ReplyRead::Transport(e) => fail(ErrorKind::ConnectionLost, transport_message(&e)),
                ReplyRead::TooLarge => fail(
                    ErrorKind::BadReply,
                    format!(
                        "{} sent a reply larger than {} MiB, more than any exe.dev reply needs; not read further",
                        self.endpoint,
                        MAX_REPLY_BYTES >> 20
                    ),
                ),
            })?;
        if status == 429 {
            self.gate.on_rate_limited(retry_after);
        }
        if (300..400).contains(&status) {
            return Err(fail(
                ApiError::kind_for_status(status, retry_after),
                format!(
                    "{} answered with a redirect to {}, which was not followed",
                    self.endpoint,
                    crate::base::text::one_line(
                        &location.unwrap_or_else(|| "(no Location)".into())
                    )
                ),
            ));
        }
        if status != 200 {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            // exe.dev's message reaches a terminal: no control characters.
            let message = crate::base::text::one_line(&message).into_owned();
            return Err(fail(
                ApiError::kind_for_status(status, retry_after),
                message,
            ));
        }
        self.gate.on_success();
        decode_reply(bytes, cmd.name()).map_err(|(kind, message)| fail(kind, message))
    }

    async fn typed<T: DeserializeOwned>(&self, cmd: Command) -> Result<T, ApiError> {
        let decoded = match self.exec_reply(&cmd).await? {
            Reply::Value(v) => serde_json::from_value(v),
            Reply::Plain(bytes) => serde_json::from_slice(&bytes),
        };
        decoded.map_err(|e| ApiError {
            kind: ErrorKind::BadReply,
            command: cmd.display(),
            command_name: cmd.name().into(),
            message: e.to_string(),
        })
    }

    /// `ls [pattern]`.
    pub async fn ls(&self, pattern: Option<&str>) -> Result<Vec<VmInfo>, ApiError> {
        let r: LsReply = self
            .typed(Command::Ls {
                pattern: pattern.map(str::to_string),
            })
            .await?;
        Ok(r.vms)
    }

    /// `new`. On an unknown outcome (see `api::retry::outcome_unknown`) the
    /// caller must re-read `ls` instead of calling this again.
    pub async fn new_vm(&self, spec: NewVm) -> Result<NewReply, ApiError> {
        self.typed(Command::New(Box::new(spec))).await
    }

    /// `rm <vm>`; a VM that is already gone is [`RmOutcome::NotFound`].
    pub async fn rm(&self, vm: &str) -> Result<RmOutcome, ApiError> {
        match self
            .typed::<RmReply>(Command::Rm {
                vms: vec![vm.to_string()],
            })
            .await
        {
            Ok(r) if r.deleted.iter().any(|d| d == vm) => Ok(RmOutcome::Deleted),
            Ok(r) if r.failed.iter().any(|d| d == vm) => Ok(RmOutcome::NotFound),
            Ok(_) => Ok(RmOutcome::Deleted),
            Err(e) if e.is_not_found() => Ok(RmOutcome::NotFound),
            Err(e) => Err(e),
        }
    }

    /// `resize <vm>`.
    pub async fn resize(
        &self,
        vm: &str,
        cpu: Option<u32>,
        memory: Option<String>,
        disk: Option<String>,
    ) -> Result<Value, ApiError> {
        self.exec(&Command::Resize {
            vm: vm.into(),
            cpu,
            memory,
            disk,
        })
        .await
    }

    /// `tag <vm> <tags>`.
    pub async fn tag(&self, vm: &str, tags: Vec<String>) -> Result<Value, ApiError> {
        self.exec(&Command::Tag {
            vm: vm.into(),
            tags,
        })
        .await
    }

    /// `tag -d <vm> <tags>`.
    pub async fn untag(&self, vm: &str, tags: Vec<String>) -> Result<Value, ApiError> {
        self.exec(&Command::Untag {
            vm: vm.into(),
            tags,
        })
        .await
    }

    /// `comment <vm> <text>`.
    pub async fn comment(&self, vm: &str, text: &str) -> Result<Value, ApiError> {
        self.exec(&Command::Comment {
            vm: vm.into(),
            text: text.into(),
        })
        .await
    }

    /// `share show <vm>`.
    pub async fn share_show(&self, vm: &str) -> Result<ShareInfo, ApiError> {
        self.typed(Command::ShareShow { vm: vm.into() }).await
    }

    /// `share port <vm> <port>`.
    pub async fn share_port(&self, vm: &str, port: u16) -> Result<ShareUpdate, ApiError> {
        self.typed(Command::SharePort {
            vm: vm.into(),
            port,
        })
        .await
    }

    /// `share set-public|set-private <vm>`.
    pub async fn share_visibility(&self, vm: &str, public: bool) -> Result<ShareUpdate, ApiError> {
        let vm = vm.to_string();
        self.typed(if public {
            Command::SharePublic { vm }
        } else {
            Command::SharePrivate { vm }
        })
        .await
    }

    /// `whoami`.
    pub async fn whoami(&self) -> Result<WhoamiReply, ApiError> {
        self.typed(Command::Whoami).await
    }

    /// `ssh-key list`.
    pub async fn ssh_key_list(&self) -> Result<SshKeyList, ApiError> {
        self.typed(Command::SshKeyList).await
    }

    /// `exe0-to-exe1 [--vm] <exe0>`.
    pub async fn exe0_to_exe1(&self, vm: Option<&str>, token: &Secret) -> Result<Secret, ApiError> {
        let r: Exe1Reply = self
            .typed(Command::Exe0ToExe1 {
                vm: vm.map(str::to_string),
                token: token.clone(),
            })
            .await?;
        Ok(Secret::new(r.token))
    }
}

/// Whether a token may be sent to `endpoint`: an `https://` URL, or an
/// `http://` one whose host is loopback (127.0.0.0/8, ::1, localhost).
/// Says why not.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("is not a URL ({e})"))?;
    if url.host().is_none() {
        return Err("names no host".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(
            "is plain http to a host that is not loopback: the API token and setup scripts would cross the network unencrypted"
                .into(),
        ),
        other => Err(format!("has scheme {other:?}; only https (or http to loopback) is used")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    // The URL parser already normalised IPv4 forms (`127.1`) to dotted quads.
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A 200 reply: one JSON object without an `error` key, left as bytes for
/// the caller to read straight into its type (a 1000-VM `ls` builds no
/// `serde_json::Value` tree in between); or what the general reading below
/// made of anything else.
enum Reply {
    Plain(Vec<u8>),
    Value(Value),
}

/// Reads a 200 reply. exe.dev may write several JSON values (an error,
/// then a result): the last value without an `error` key is the result,
/// and an `error` anywhere is a failure (but for `rm` of a missing VM).
fn decode_reply(bytes: Vec<u8>, cmd_name: &str) -> Result<Reply, (ErrorKind, String)> {
    if is_plain_reply(&bytes) {
        return Ok(Reply::Plain(bytes));
    }
    let values: Vec<Value> = serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| (ErrorKind::BadReply, format!("reply is not JSON: {e}")))?;
    let error = values
        .iter()
        .find_map(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
    let result = values.into_iter().rev().find(|v| v.get("error").is_none());
    let error = error.map(|m| crate::base::text::one_line(&m).into_owned());
    match (result, error) {
        (Some(v), None) => Ok(Reply::Value(v)),
        // exe.dev's `rm` of a missing VM writes an error line, then the
        // result; any other error next to a result is a real failure.
        (Some(v), Some(msg)) if cmd_name == "rm" && msg.contains("not found") => {
            Ok(Reply::Value(v))
        }
        (_, Some(msg)) => Err((ErrorKind::ErrorIn200, msg)),
        (None, None) => Err((ErrorKind::BadReply, "empty reply".into())),
    }
}

/// Whether `bytes` are exactly one JSON object with no `error` key at its
/// top level (nested values are skipped, not built).
fn is_plain_reply(bytes: &[u8]) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct HasError(bool);
    impl<'de> serde::Deserialize<'de> for HasError {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Keys;
            impl<'de> Visitor<'de> for Keys {
                type Value = HasError;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<HasError, A::Error> {
                    let mut error = false;
                    while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                        error |= key == "error";
                        m.next_value::<IgnoredAny>()?;
                    }
                    Ok(HasError(error))
                }
            }
            d.deserialize_map(Keys)
        }
    }
    matches!(
        serde_json::from_slice::<HasError>(bytes),
        Ok(HasError(false))
    )
}

fn transport_kind(e: &reqwest::Error) -> ErrorKind {
    // A request that could not be built or connected was never sent.
    if e.is_connect() || e.is_builder() {
        ErrorKind::ConnectFailed
    } else {
        ErrorKind::ConnectionLost
    }
}

/// True when the TLS handshake got a reply that is not TLS at all: rustls
/// reads the first bytes of a plain-HTTP answer ("HTTP/1.1 400") as a
/// record of an unknown type and reports "received corrupt message of type
/// InvalidContentType", which says nothing to a user who wrote https:// for
/// an http server such as the emulator.
fn plain_http_reply(e: &reqwest::Error) -> bool {
    use std::error::Error;
    let mut src: Option<&dyn Error> = Some(e);
    while let Some(s) = src {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            );
        }
        if s.to_string().contains("InvalidContentType") {
            return true;
        }
        src = s.source();
    }
    false
}

/// What to do about an https:// endpoint that speaks plain http: the same
/// URL with http://, which the tool accepts for a loopback host only.
fn plain_http_message(endpoint: &str) -> String {
    let plain = endpoint.replacen("https://", "http://", 1);
    if check_endpoint(&plain).is_ok() {
        format!(
            "{endpoint} speaks plain http, not https (as the built-in emulator does): write --endpoint {plain}"
        )
    } else {
        format!(
            "{endpoint} speaks plain http, not https: exedev-k8s sends its token only over https (plain http only to 127.0.0.1, [::1] or localhost); check the URL"
        )
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_timeout() {
        "request timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod endpoint_tests {
    use super::parse_endpoint;

    /// A bare origin means its /exec; a missing scheme or another path is
    /// refused with the URL probably meant.
    #[test]
    fn endpoints_are_read_before_anything_is_sent() {
        for (given, want) in [
            ("https://exe.dev/exec", "https://exe.dev/exec"),
            ("http://127.0.0.1:8080/exec", "http://127.0.0.1:8080/exec"),
            ("http://127.0.0.1:8080/exec/", "http://127.0.0.1:8080/exec"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/exec"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/exec"),
            (
                " https://proxy.example/exe/exec ",
                "https://proxy.example/exe/exec",
            ),
        ] {
            assert_eq!(parse_endpoint(given).as_deref(), Ok(want), "{given}");
        }
        for (given, says) in [
            ("127.0.0.1:8080", "did you mean http://127.0.0.1:8080/exec?"),
            (
                "localhost:8080/exec",
                "did you mean http://localhost:8080/exec?",
            ),
            ("exe.dev", "did you mean https://exe.dev/exec?"),
            (
                "http://127.0.0.1:8080/api",
                "did you mean http://127.0.0.1:8080/exec?",
            ),
            ("https://exe.dev/exec?x=1", "query or fragment"),
            ("http://[bad/exec", "is not a URL"),
        ] {
            let e = parse_endpoint(given).unwrap_err();
            assert!(e.contains(says), "{given}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_loopback() {
        for ok in [
            "https://exe.dev/exec",
            "https://10.0.0.1:8443/exec",
            "http://127.0.0.1:4000/exec",
            "http://127.9.8.7/exec",
            "http://[::1]:4000/exec",
            "http://localhost:4000/exec",
            "http://LOCALHOST/exec",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://exe.dev/exec", "unencrypted"),
            ("http://10.0.0.1/exec", "unencrypted"),
            ("http://localhost.evil.com/exec", "unencrypted"),
            ("http://127.0.0.1.nip.io/exec", "unencrypted"),
            ("http://[::ffff:10.0.0.1]/exec", "unencrypted"),
            ("ftp://exe.dev/exec", "scheme \"ftp\""),
            ("exe.dev/exec", "not a URL"),
            ("file:///etc/passwd", "no host"),
        ] {
            match check_endpoint(bad) {
                Ok(()) => panic!("{bad} accepted"),
                Err(e) => assert!(e.contains(why), "{bad}: {e}"),
            }
        }
        let e = Client::new(
            "http://exe.dev/exec",
            Secret::new("exe0.x.y"),
            ClientOptions::default(),
        )
        .err()
        .map(|e| crate::base::hint::describe(&e))
        .unwrap_or_default();
        assert!(
            e.contains("http://exe.dev/exec") && e.contains("https://"),
            "{e}"
        );
        assert!(!e.contains("exe0.x.y"), "{e}");
    }
}

#[cfg(test)]
mod reply_tests {
    use super::*;

    fn read(bytes: &str, cmd: &str) -> Result<Value, (ErrorKind, String)> {
        decode_reply(bytes.as_bytes().to_vec(), cmd).map(|r| match r {
            Reply::Plain(b) => serde_json::from_slice(&b).unwrap(),
            Reply::Value(v) => v,
        })
    }

    /// The direct path for one plain object reads what the general path
    /// reads; everything else takes the general path, with its rules.
    #[test]
    fn replies_read_the_same_either_way() {
        let ls = r#"{"vms":[{"vm_name":"a","tags":["x"],"allocated_cpus":2}]}"#;
        assert!(is_plain_reply(ls.as_bytes()));
        assert_eq!(read(ls, "ls"), Ok(serde_json::from_str(ls).unwrap()));
        let typed: LsReply = match decode_reply(ls.as_bytes().to_vec(), "ls").unwrap() {
            Reply::Plain(b) => serde_json::from_slice(&b).unwrap(),
            Reply::Value(_) => panic!("a plain object takes the direct path"),
        };
        assert_eq!(typed.vms[0].vm_name, "a");
        for not_plain in [
            r#"{"error":"boom"}"#,
            r#"{"error":null}"#,
            r#"{"error":"x"} {"ok":1}"#,
            r#"{"a":1} {"b":2}"#,
            "[1,2]",
            "",
            "nope",
        ] {
            assert!(!is_plain_reply(not_plain.as_bytes()), "{not_plain}");
        }
        assert_eq!(
            read(r#"{"error":"boom"}"#, "ls"),
            Err((ErrorKind::ErrorIn200, "boom".into()))
        );
        let rm = r#"{"error":"VM \"a\" not found"}{"deleted":[],"failed":["a"]}"#;
        assert_eq!(
            read(rm, "rm"),
            Ok(serde_json::json!({"deleted":[],"failed":["a"]}))
        );
        assert!(matches!(read(rm, "ls"), Err((ErrorKind::ErrorIn200, _))));
        assert_eq!(
            read(r#"{"a":1} {"b":2}"#, "ls"),
            Ok(serde_json::json!({"b":2}))
        );
        assert!(matches!(
            read(r#"{"error":null}"#, "ls"),
            Err((ErrorKind::BadReply, _))
        ));
        assert!(matches!(read("nope", "ls"), Err((ErrorKind::BadReply, _))));
        // Nested "error" keys are data, not failures.
        let nested = r#"{"vms":[{"vm_name":"a","error":"x"}]}"#;
        assert!(is_plain_reply(nested.as_bytes()));
    }
}
