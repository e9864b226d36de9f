//! Authentication and per-key rate limiting for `/exec`.
//!
//! Token checks are the crate's own ([`crate::core::token`]); this module only
//! reads the header, resolves exe1 handles, and keeps the per-key buckets.
//! Every failure has one of two deliberately generic messages, as exe.dev's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ssh_key::PublicKey;

use crate::core::token::{API_NAMESPACE, Exe0Token, Permissions, TokenError};

use super::state::Exe1Handle;

/// Why a request is not authenticated (always a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header, or not `Bearer <token>`.
    MissingHeader,
    /// The token is malformed, unknown, expired, badly signed...
    InvalidToken,
}

impl AuthFailure {
    /// The body message exe.dev uses.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingHeader => "missing or invalid Authorization header",
            AuthFailure::InvalidToken => "invalid token",
        }
    }
}

/// Who sent a request and what the token grants.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// SHA-256 fingerprint of the signing key (the rate-limit key).
    pub fingerprint: String,
    pub permissions: Permissions,
}

/// The bearer token of a request (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthFailure::MissingHeader)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthFailure::MissingHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthFailure::MissingHeader);
    }
    Ok(token)
}

/// Validates an exe0 token for `namespace` now: signature by an authorized
/// key, permission rules, time window.
pub fn validate_exe0(
    token: &str,
    namespace: &str,
    keys: &[PublicKey],
    now: i64,
) -> Result<(String, Permissions), TokenError> {
    Exe0Token::parse(token)?.validate(namespace, keys, now)
}

/// Authenticates a bearer token. `exe1` is the handle the token names when
/// it is an exe1 token (looked up by the caller); its exe0 token is
/// re-validated on every use, so expiry and key removal still apply.
pub fn authenticate(
    token: &str,
    exe1: Option<&Exe1Handle>,
    keys: &[PublicKey],
    now: i64,
) -> Result<Authenticated, AuthFailure> {
    let exe0 = if token.starts_with("exe1.") {
        let handle = exe1.ok_or(AuthFailure::InvalidToken)?;
        if handle.namespace != API_NAMESPACE {
            return Err(AuthFailure::InvalidToken);
        }
        handle.exe0.as_str()
    } else {
        token
    };
    let (fingerprint, permissions) =
        validate_exe0(exe0, API_NAMESPACE, keys, now).map_err(|_| AuthFailure::InvalidToken)?;
    Ok(Authenticated {
        fingerprint,
        permissions,
    })
}

/// A token-bucket rate limit per signing key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed in a burst (bucket size).
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets by key fingerprint.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// No limit when `limit` is `None`.
    pub fn new(limit: Option<RateLimit>) -> Self {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `key`, or says how long to wait (whole seconds, at
    /// least 1). A refused request takes nothing.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let burst = f64::from(limit.burst.max(1));
        let bucket = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = if limit.per_second > 0.0 {
            ((1.0 - bucket.tokens) / limit.per_second).ceil()
        } else {
            3600.0
        };
        Err(Duration::from_secs((wait as u64).max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_and_refusals_are_free() {
        let mut r = RateLimiter::new(Some(RateLimit {
            per_second: 2.0,
            burst: 2,
        }));
        let t0 = Instant::now();
        assert!(r.check("a", t0).is_ok());
        assert!(r.check("a", t0).is_ok());
        assert_eq!(r.check("a", t0), Err(Duration::from_secs(1)));
        assert!(r.check("b", t0).is_ok(), "per key");
        // Refusals did not consume: half a second later one token is back.
        assert!(r.check("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(RateLimiter::new(None).check("a", t0).is_ok());
    }

    #[test]
    fn header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Err(AuthFailure::MissingHeader));
        h.insert("authorization", "bEaReR exe0.a.b".parse().unwrap());
        assert_eq!(bearer(&h), Ok("exe0.a.b"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), Err(AuthFailure::MissingHeader));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), Err(AuthFailure::MissingHeader));
    }
}
