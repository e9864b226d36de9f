//! The proxy and probe columns of the status join: the VM's exe.dev
//! share against the fleet's `share:` (port, visibility) and what probing
//! the VM's HTTPS proxy answered. Apart from `join` so that each file holds
//! one job (issue 19: at most 600 lines per file under `src/core/status`);
//! pure, like the join.

use super::problem::{Problem, Warning};
use super::{Judged, aspect};
use crate::core::api::types::ShareInfo;
use crate::core::fleet::DesiredVm;
use crate::edges::probe::ProbeResult;

/// How the proxy column words a share's visibility.
pub(super) fn visibility(public: bool) -> &'static str {
    if public { "public" } else { "private" }
}

/// The proxy against the fleet's share: another port or visibility, or
/// public where the fleet shares nothing.
pub(super) fn proxy_problems(d: Option<&DesiredVm>, share: Option<&ShareInfo>, j: &mut Judged) {
    if let (Some(want), Some(have)) = (d.and_then(|d| d.share), share)
        && (want.port != have.port || want.public != have.status.is_public())
    {
        j.problems.push(Problem::ProxyDiffers {
            port: have.port,
            public: have.status.is_public(),
            want_port: want.port,
            want_public: want.public,
        });
    }
    if d.is_some_and(|d| d.share.is_none()) && share.is_some_and(|s| s.status.is_public()) {
        j.problems.push(Problem::ProxyPublicUnshared);
    }
}

/// The probe column; a failed probe (no answer, an error, a 5xx) of a
/// proxy that could be probed is a problem, except the proxy's 502 for a
/// running VM whose fleet share is `port`: nothing listens there yet, a
/// warning ([`Warning::NothingOnSharedPort`]).
pub(super) fn probe_column(
    probes: &[ProbeResult],
    name: &str,
    port: Option<u16>,
    j: &mut Judged,
) -> Option<String> {
    let p = probes.iter().find(|p| p.vm == name)?;
    let shown = match (p.status, &p.error) {
        _ if p.private_unprobed => "private: login page (--ssh-key to probe behind it)".to_string(),
        (Some(s), None) => format!("{s} in {} ms", p.latency.as_millis()),
        (Some(s), Some(e)) => format!("{s} ({e})"),
        (None, Some(e)) => format!("failed: {e}"),
        (None, None) => "no answer".into(),
    };
    j.checked.push(aspect::PROXY.to_string());
    if let (Some(port), Some(502), false) = (port, p.status, p.private_unprobed) {
        j.warnings.push(Warning::NothingOnSharedPort { port });
    } else if !p.private_unprobed && (p.error.is_some() || p.status.is_none_or(|s| s >= 500)) {
        j.problems.push(Problem::ProbeFailed {
            probe: shown.clone(),
        });
    }
    Some(shown)
}
