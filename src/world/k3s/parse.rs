//! What k3s parses from its configuration: tokens (secure and short
//! form), versions, `vpn-auth`, join URLs, and the kubelet's refusal of
//! node labels.

/// A token as k3s reads it: `K10<ca hash>::<user>:<secret>` or `<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub ca_hash: Option<&'a str>,
    pub user: Option<&'a str>,
    pub secret: &'a str,
}

/// Parses a k3s token (secure or short form).
pub fn parse_token(t: &str) -> Token<'_> {
    if let Some(rest) = t.strip_prefix("K10")
        && let Some((hash, creds)) = rest.split_once("::")
    {
        let (user, secret) = creds
            .split_once(':')
            .map_or((None, creds), |(u, s)| (Some(u), s));
        return Token {
            ca_hash: Some(hash),
            user,
            secret,
        };
    }
    Token {
        ca_hash: None,
        user: None,
        secret: t,
    }
}

/// `(major, minor)` of `v1.31.4+k3s1`.
pub fn minor_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim_start_matches('v').split(['.', '+', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `vpn-auth`'s fields (k3s `pkg/vpn`: `name=tailscale,joinKey=...`,
/// optional `controlServerURL=`, `extraArgs=` passed to `tailscale up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnAuth {
    pub join_key: String,
    pub extra_args: Vec<String>,
}

/// Parses `vpn-auth` as k3s does.
pub fn parse_vpn_auth(s: &str) -> Result<VpnAuth, String> {
    let (main, extra) = s.split_once(",extraArgs=").unwrap_or((s, ""));
    let mut name = None;
    let mut key = None;
    for kv in main.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "name" => name = Some(v.to_string()),
            "joinKey" => key = Some(v.to_string()),
            "controlServerURL" => {}
            other => {
                return Err(format!(
                    "VPN Error. The passed VPN auth info includes an unknown parameter: {other}"
                ));
            }
        }
    }
    match name.as_deref() {
        Some("tailscale") => {}
        other => {
            return Err(format!(
                "Requested VPN: {} is not supported. We currently only support tailscale",
                other.unwrap_or("")
            ));
        }
    }
    let join_key = key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| "VPN Error. Tailscale requires a JoinKey".to_string())?;
    Ok(VpnAuth {
        join_key,
        extra_args: extra.split_whitespace().map(str::to_string).collect(),
    })
}

/// The kubelet's refusal of `node-label`s it may not set on itself
/// ([`crate::base::node_labels`]), as it words it, if any.
pub fn refused_labels(labels: &[String]) -> Option<String> {
    let bad: Vec<&str> = labels
        .iter()
        .map(|l| l.split_once('=').map_or(l.as_str(), |(k, _)| k))
        .filter(|k| !crate::base::node_labels::kubelet_may_set(k))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {bad:?}; --node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix (kubelet.kubernetes.io, node.kubernetes.io) or be in the specifically allowed set"
        )
    })
}

/// `(host, port)` of an `https://` URL.
pub(super) fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let hostport = rest.split('/').next()?;
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((hostport.to_string(), 443)),
    }
}
