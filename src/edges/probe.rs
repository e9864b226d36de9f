//! Probes of VMs' HTTPS proxies (`https://<vm>.exe.xyz/`): is the service
//! behind each VM answering, how fast, and does the proxy accept our
//! credentials.
//!
//! `ls` shows neither the proxy port nor whether a share is public, so only
//! a request through the proxy tells whether a node's web service is up.
//! Public shares are requested plainly; private ones with a short-lived
//! token minted locally for the VM's namespace (`v0@<vm>.exe.xyz`), sent in
//! `X-Exedev-Authorization`, the header the proxy strips so the VM's own
//! `Authorization` stays free. The token never appears in a result.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HOST, LOCATION};
use ssh_key::PrivateKey;

use crate::base::secret::Secret;
use crate::core::token::permissions::MAX_TIMESTAMP;
use crate::core::token::{Permissions, TokenError, mint, vm_namespace};

/// The header exe.dev's proxy prefers for tokens (and strips).
pub const VM_TOKEN_HEADER: &str = "X-Exedev-Authorization";
/// Where exe.dev's proxy sends a request for a private VM that carries no
/// valid token.
pub const LOGIN_URL_PREFIX: &str = "https://exe.dev/login";
/// Lifetime of the tokens [`probe_all`] mints: exe.dev has no replay
/// protection, so a probe token should expire soon after the probe.
pub const PROBE_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Per-request timeout of [`probe_client`]: a probe that hangs says as
/// much as one that fails.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The VM name.
    pub vm: String,
    /// Whether the VM's share is public (no token is sent to a public one).
    pub public: bool,
    /// The URL requested, `https://<vm>.exe.xyz/` normally.
    pub url: String,
    /// A `Host` header override, for the emulator, which answers for every
    /// VM on one address since tests cannot resolve `*.exe.xyz`.
    pub host: Option<String>,
}

impl ProbeTarget {
    /// The VM's real proxy URL.
    pub fn new(vm: &str, public: bool) -> Self {
        ProbeTarget {
            vm: vm.to_string(),
            public,
            url: format!("https://{vm}.exe.xyz/"),
            host: None,
        }
    }

    /// The VM's proxy as an emulator at `base_url` (`http://127.0.0.1:PORT`)
    /// serves it: same listener, VM chosen by `Host`.
    pub fn emulated(vm: &str, public: bool, base_url: &str) -> Self {
        ProbeTarget {
            vm: vm.to_string(),
            public,
            url: format!("{}/", base_url.trim_end_matches('/')),
            host: Some(format!("{vm}.exe.xyz")),
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub vm: String,
    /// The HTTP status the proxy (or the VM behind it) answered; `None`
    /// when no answer came (DNS, TLS, timeout, refused).
    pub status: Option<u16>,
    /// Time from sending the request to receiving the response headers (or
    /// to the failure).
    pub latency: Duration,
    /// Why the probe is not a success (`None` for a 2xx answer); a private
    /// VM that redirects to the login page is reported as "private and
    /// no/invalid token" rather than as a 307.
    pub error: Option<String>,
    /// A token was sent and the proxy accepted it (no 401, no login
    /// redirect).
    pub authenticated: bool,
    /// No token was sent and the proxy answered with its login redirect:
    /// a private proxy doing its job, not a fault (probing behind it needs
    /// a VM token, minted from `--ssh-key`).
    pub private_unprobed: bool,
}

/// A client fit for probes: redirects are not followed, so a private VM's
/// redirect to the login page is seen as such; requests time out after
/// `timeout`.
pub fn probe_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
}

/// Mints a token for `vm`'s HTTPS proxy only (namespace `v0@<vm>.exe.xyz`,
/// no `cmds`), valid for `ttl` from now: the proxy needs no commands, and
/// a token that cannot reach `/exec` or another VM limits what a leak gives.
pub fn mint_vm_token(key: &PrivateKey, vm: &str, ttl: Duration) -> Result<Secret, TokenError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ttl = ttl.as_secs().max(1);
    let exp = i64::try_from(now.saturating_add(ttl))
        .unwrap_or(MAX_TIMESTAMP)
        .min(MAX_TIMESTAMP);
    let perms = Permissions {
        exp: Some(exp),
        ..Default::default()
    };
    mint(key, &perms, &vm_namespace(vm))
}

/// An error with its causes, which reqwest keeps in the source chain.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Requests `target` once: public shares plainly, private ones with
/// `token` (a VM-scoped token, see [`mint_vm_token`]) in
/// `X-Exedev-Authorization: Bearer`.
pub async fn probe(
    http: &reqwest::Client,
    target: &ProbeTarget,
    token: Option<&Secret>,
) -> ProbeResult {
    let token = if target.public { None } else { token };
    let mut req = http.get(&target.url);
    if let Some(host) = &target.host {
        req = req.header(HOST, host);
    }
    if let Some(t) = token {
        req = req.header(VM_TOKEN_HEADER, format!("Bearer {}", t.expose()));
    }
    let start = Instant::now();
    let sent = req.send().await;
    let latency = start.elapsed();
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return ProbeResult {
                vm: target.vm.clone(),
                status: None,
                latency,
                error: Some(describe(&e)),
                authenticated: false,
                private_unprobed: false,
            };
        }
    };
    let status = resp.status();
    let redirected_to_login = (status.is_redirection()
        && resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.starts_with(LOGIN_URL_PREFIX)))
        || resp.url().as_str().starts_with(LOGIN_URL_PREFIX);
    let error = if redirected_to_login {
        Some(match token {
            Some(_) => "private and invalid token: the proxy redirected to the login page".into(),
            None => "private and no token: the proxy redirected to the login page".into(),
        })
    } else if status.as_u16() == 401 {
        Some("the proxy refused the token (401)".into())
    } else if status.is_success() {
        None
    } else {
        Some(format!("HTTP {status}"))
    };
    ProbeResult {
        vm: target.vm.clone(),
        status: Some(status.as_u16()),
        latency,
        error,
        authenticated: token.is_some() && !redirected_to_login && status.as_u16() != 401,
        private_unprobed: token.is_none() && redirected_to_login,
    }
}

/// Probes every target, at most `concurrency` at a time, with a fresh
/// client and a fresh short-lived token per private VM (signed by `key`;
/// without a key private VMs are probed anonymously). Results come in the
/// order of `targets`.
pub async fn probe_all(
    targets: &[ProbeTarget],
    key: Option<&PrivateKey>,
    concurrency: usize,
) -> Vec<ProbeResult> {
    let failed = |t: &ProbeTarget, error: String| ProbeResult {
        vm: t.vm.clone(),
        status: None,
        latency: Duration::ZERO,
        error: Some(error),
        authenticated: false,
        private_unprobed: false,
    };
    let http = match probe_client(PROBE_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot build an HTTP client: {}", describe(&e));
            return targets.iter().map(|t| failed(t, why.clone())).collect();
        }
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut results: Vec<Option<ProbeResult>> = vec![None; targets.len()];
    let mut tasks = tokio::task::JoinSet::new();
    let mut task_index = std::collections::HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        let token = match (target.public, key) {
            (false, Some(k)) => match mint_vm_token(k, &target.vm, PROBE_TOKEN_TTL) {
                Ok(t) => Some(t),
                Err(e) => {
                    results[i] = Some(failed(target, format!("cannot mint a VM token: {e}")));
                    continue;
                }
            },
            _ => None,
        };
        let (http, target, limit) = (http.clone(), target.clone(), limit.clone());
        let handle = tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, probe(&http, &target, token.as_ref()).await)
        });
        task_index.insert(handle.id(), i);
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(e) => {
                if let Some(&i) = task_index.get(&e.id()) {
                    results[i] = Some(failed(&targets[i], format!("probe task failed: {e}")));
                }
            }
        }
    }
    results
        .into_iter()
        .zip(targets)
        .map(|(r, t)| r.unwrap_or_else(|| failed(t, "probe did not run".into())))
        .collect()
}
