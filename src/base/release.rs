//! k3s releases: `v1.31.4+k3s1` parsed and ordered, channel names, the
//! release a channel server's answer points at, and the rules k3s imposes
//! on changing the release of a running cluster.
//!
//! Sources: facts file "Versions" (kubelets may be older than the API
//! server, never newer) and "Kubeconfig, manifests, removal, upgrade" (no
//! downgrades, no skipped minors); k3s's `install.sh` for channels
//! (`get_release_version`: `${INSTALL_K3S_CHANNEL_URL}/${INSTALL_K3S_CHANNEL}`,
//! default `https://update.k3s.io/v1-release/channels`, redirects to the
//! release's GitHub page; the last path segment is the release).
//!
//! Pure: the lookup itself is [`crate::edges::channel`]'s.

use std::cmp::Ordering;
use std::fmt;

/// Where `install.sh` asks which release a channel points at.
pub const DEFAULT_CHANNEL_SERVER: &str = "https://update.k3s.io/v1-release/channels";

/// A k3s release, `v{major}.{minor}.{patch}+k3s{build}`. Pre-releases
/// (`-rc1`) are not releases a fleet runs: they do not parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The k3s build of that Kubernetes patch (`+k3s2` follows `+k3s1`).
    pub build: u32,
}

impl Release {
    /// Parses `v1.31.4+k3s1`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Release> {
        let rest = s.strip_prefix('v')?;
        let (semver, build) = rest.split_once("+k3s")?;
        let mut parts = semver.split('.');
        let mut num = || -> Option<u32> {
            let p = parts.next()?;
            (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let (major, minor, patch) = (num()?, num()?, num()?);
        if parts.next().is_some() {
            return None;
        }
        let build =
            (!build.is_empty() && build.len() <= 9 && build.bytes().all(|b| b.is_ascii_digit()))
                .then(|| build.parse().ok())
                .flatten()?;
        Some(Release {
            major,
            minor,
            patch,
            build,
        })
    }

    /// `v1.31`: the minor line (also the name of its channel).
    pub fn minor_line(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }

    fn key(&self) -> (u32, u32, u32, u32) {
        (self.major, self.minor, self.patch, self.build)
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}.{}.{}+k3s{}",
            self.major, self.minor, self.patch, self.build
        )
    }
}

impl PartialOrd for Release {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Release {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` is a k3s release exedev-k8s can order: `v{n}.{n}.{n}+k3s{n}`
/// with at most nine digits per number (so each fits in 32 bits), as the
/// fleet schema's pattern says. Exactly what [`Release::parse`] accepts.
pub fn is_release(s: &str) -> bool {
    Release::parse(s).is_some()
}

/// The release a channel is assumed to point at when scripts are sized
/// before any lookup (`validate` makes no call): only its width matters
/// (a script carries the release as text), and this one is as wide as a
/// release with a one-digit major and two-digit minor, patch and build
/// (`v1.31.10+k3s10` is). The facts file lists no release wider; none is
/// known to this project.
/// Not a release anyone runs: a plan renders its scripts again at the
/// release it looked up (`plan::spec::check_scripts`), so a wider one is
/// still caught before apply.
pub const SIZING_RELEASE: Release = Release {
    major: 9,
    minor: 99,
    patch: 99,
    build: 99,
};

/// Named k3s channels (besides minor lines such as `v1.31`).
pub const NAMED_CHANNELS: &[&str] = &["stable", "latest", "testing"];

/// Whether `c` names a k3s channel: one of [`NAMED_CHANNELS`] or a minor
/// line such as `v1.31`.
pub fn is_channel(c: &str) -> bool {
    NAMED_CHANNELS.contains(&c)
        || matches!(
            c.strip_prefix('v').and_then(|r| r.split_once('.')),
            Some((major, minor)) if digits(major) && digits(minor)
        )
}

/// The release a channel server's redirect points at: the last path segment
/// of its `Location` (what `install.sh` keeps with `sed -e 's|.*/||'`),
/// with `%2B` read as `+` (GitHub writes tags either way).
pub fn from_channel_location(location: &str) -> Result<Release, String> {
    let path = location.split(['?', '#']).next().unwrap_or_default();
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let decoded = last.replace("%2B", "+").replace("%2b", "+");
    Release::parse(&decoded).ok_or_else(|| {
        format!(
            "it points at {:?}, which is not a k3s release exedev-k8s runs (v1.31.4+k3s1; pre-releases are not followed)",
            crate::base::text::one_line(&decoded)
        )
    })
}

/// How one node's k3s changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Already there.
    Same,
    /// A newer patch or k3s build of the same minor.
    Patch,
    /// The next minor.
    Minor,
}

/// A release change k3s does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Going back: Kubernetes does not support downgrading a control
    /// plane, and the installer would replace a newer binary with an older
    /// one.
    Downgrade {
        node: String,
        from: Release,
        to: Release,
    },
    /// More than one minor at once: k3s upgrades one minor at a time.
    MinorSkip {
        node: String,
        from: Release,
        to: Release,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Downgrade { node, from, to } => write!(
                f,
                "{node} runs k3s {from} and the fleet asks for {to}: k3s cannot be downgraded in place. Set k3s.version to {from} or later (or follow a channel that points there); to go back to {}, restore an etcd snapshot into a new cluster",
                to.minor_line()
            ),
            Refusal::MinorSkip { node, from, to } => write!(
                f,
                "{node} runs k3s {from} and the fleet asks for {to}: k3s upgrades one minor version at a time. Upgrade to the latest v{}.{} release first (k3s.channel: v{}.{}, or k3s.version: v{}.{}.x+k3sN), apply, then go on to {to}",
                from.major,
                from.minor + 1,
                from.major,
                from.minor + 1,
                from.major,
                from.minor + 1
            ),
        }
    }
}

/// Whether node `node` may go from `from` to `to` in place, and how big
/// the step is.
pub fn upgrade_step(node: &str, from: &Release, to: &Release) -> Result<Step, Refusal> {
    let refuse_skip = || Refusal::MinorSkip {
        node: node.to_string(),
        from: from.clone(),
        to: to.clone(),
    };
    match from.cmp(to) {
        Ordering::Equal => Ok(Step::Same),
        Ordering::Greater => Err(Refusal::Downgrade {
            node: node.to_string(),
            from: from.clone(),
            to: to.clone(),
        }),
        Ordering::Less if from.major != to.major => Err(refuse_skip()),
        Ordering::Less if from.minor == to.minor => Ok(Step::Patch),
        Ordering::Less if to.minor == from.minor + 1 => Ok(Step::Minor),
        Ordering::Less => Err(refuse_skip()),
    }
}

/// Whether a kubelet of `kubelet` may work with an API server of `api`
/// (facts "Versions": older or equal minors only).
pub fn kubelet_allowed(kubelet: &Release, api: &Release) -> bool {
    (kubelet.major, kubelet.minor) <= (api.major, api.minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Release {
        Release::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn the_sizing_release_is_a_release_of_the_width_scripts_are_sized_at() {
        let sizing = SIZING_RELEASE.to_string();
        assert!(is_release(&sizing), "{sizing}");
        // The width `validate` has always sized channel fleets at.
        assert_eq!(sizing.len(), "v1.31.10+k3s10".len());
    }

    #[test]
    fn releases_parse_and_print() {
        assert_eq!(
            r("v1.31.4+k3s1"),
            Release {
                major: 1,
                minor: 31,
                patch: 4,
                build: 1
            }
        );
        assert_eq!(r("v1.32.10+k3s12").to_string(), "v1.32.10+k3s12");
        for bad in [
            "1.31.4+k3s1",
            "v1.31+k3s1",
            "v1.31.4",
            "v1.31.4+k3s",
            "v1.31.4-rc1+k3s1",
            "v1.31.4.1+k3s1",
            "v1.31.x+k3s1",
            "stable",
            "",
            "v1.31.4+k3s1 ",
        ] {
            assert_eq!(Release::parse(bad), None, "{bad:?}");
            assert!(!is_release(bad), "{bad:?}");
        }
        // Numbers of ten digits and more are refused (they need not fit).
        assert!(!is_release("v99999999999.1.1+k3s1"));
        assert!(is_release("v999999999.1.1+k3s999999999"));
    }

    #[test]
    fn order_is_numeric_not_textual() {
        assert!(r("v1.31.10+k3s1") > r("v1.31.9+k3s1"));
        assert!(r("v1.31.4+k3s2") > r("v1.31.4+k3s1"));
        assert!(r("v1.32.0+k3s1") > r("v1.31.99+k3s9"));
        assert_eq!(r("v1.31.4+k3s1").minor_line(), "v1.31");
    }

    #[test]
    fn channels() {
        for ok in ["stable", "latest", "testing", "v1.31", "v2.0"] {
            assert!(is_channel(ok), "{ok}");
        }
        for bad in ["Stable", "v1", "1.31", "v1.31.4", "v1.x", ""] {
            assert!(!is_channel(bad), "{bad}");
        }
    }

    #[test]
    fn channel_locations_name_their_release() {
        let cases = [
            (
                "https://github.com/k3s-io/k3s/releases/tag/v1.31.6+k3s1",
                Ok("v1.31.6+k3s1"),
            ),
            (
                "https://github.com/k3s-io/k3s/releases/tag/v1.31.6%2Bk3s1",
                Ok("v1.31.6+k3s1"),
            ),
            ("https://example/tag/v1.31.6+k3s1/?x=1", Ok("v1.31.6+k3s1")),
            ("https://github.com/k3s-io/k3s/releases", Err(())),
            (
                "https://github.com/k3s-io/k3s/releases/tag/v1.33.0-rc1+k3s1",
                Err(()),
            ),
        ];
        for (loc, want) in cases {
            let got = from_channel_location(loc).map(|r| r.to_string());
            match want {
                Ok(v) => assert_eq!(got.as_deref(), Ok(v), "{loc}"),
                Err(()) => assert!(got.is_err(), "{loc}: {got:?}"),
            }
        }
    }

    /// The table of the issue: patch and build steps, one minor, refused
    /// downgrades and skips, each message saying what to do instead.
    #[test]
    fn upgrade_rules() {
        let cases = [
            ("v1.31.4+k3s1", "v1.31.4+k3s1", Ok(Step::Same)),
            ("v1.31.4+k3s1", "v1.31.6+k3s1", Ok(Step::Patch)),
            ("v1.31.4+k3s1", "v1.31.4+k3s2", Ok(Step::Patch)),
            ("v1.31.4+k3s1", "v1.32.0+k3s1", Ok(Step::Minor)),
            ("v1.31.9+k3s1", "v1.32.1+k3s1", Ok(Step::Minor)),
            ("v1.31.6+k3s1", "v1.31.4+k3s1", Err("downgraded")),
            ("v1.32.1+k3s1", "v1.31.9+k3s1", Err("downgraded")),
            (
                "v1.30.2+k3s1",
                "v1.32.1+k3s1",
                Err("one minor version at a time"),
            ),
            (
                "v1.31.4+k3s1",
                "v2.0.0+k3s1",
                Err("one minor version at a time"),
            ),
        ];
        for (from, to, want) in cases {
            let got = upgrade_step("demo-cp1", &r(from), &r(to));
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{from} → {to}"),
                (Err(words), Err(e)) => {
                    let m = e.to_string();
                    assert!(m.contains(words) && m.contains("demo-cp1"), "{m}");
                    assert!(m.contains(from) && m.contains(to), "{m}");
                }
                (w, g) => panic!("{from} → {to}: want {w:?}, got {g:?}"),
            }
        }
        let skip = upgrade_step("n", &r("v1.30.2+k3s1"), &r("v1.32.1+k3s1"))
            .unwrap_err()
            .to_string();
        assert!(skip.contains("k3s.channel: v1.31"), "{skip}");
        let down = upgrade_step("n", &r("v1.31.6+k3s1"), &r("v1.31.4+k3s1"))
            .unwrap_err()
            .to_string();
        assert!(down.contains("v1.31.6+k3s1 or later"), "{down}");
    }

    #[test]
    fn skew() {
        assert!(kubelet_allowed(&r("v1.31.9+k3s1"), &r("v1.31.4+k3s1")));
        assert!(kubelet_allowed(&r("v1.30.1+k3s1"), &r("v1.31.4+k3s1")));
        assert!(!kubelet_allowed(&r("v1.32.0+k3s1"), &r("v1.31.4+k3s1")));
    }

    fn release() -> impl Strategy<Value = Release> {
        (1u32..3, 0u32..40, 0u32..20, 1u32..4).prop_map(|(major, minor, patch, build)| Release {
            major,
            minor,
            patch,
            build,
        })
    }

    proptest! {
        #[test]
        fn printing_round_trips(a in release()) {
            prop_assert_eq!(Release::parse(&a.to_string()), Some(a));
        }

        /// Allowed steps only ever go forward, by at most one minor; the
        /// rules agree with the order.
        #[test]
        fn steps_agree_with_the_order(a in release(), b in release()) {
            match upgrade_step("n", &a, &b) {
                Ok(Step::Same) => prop_assert_eq!(&a, &b),
                Ok(Step::Patch) => {
                    prop_assert!(a < b);
                    prop_assert_eq!((a.major, a.minor), (b.major, b.minor));
                }
                Ok(Step::Minor) => {
                    prop_assert!(a < b);
                    prop_assert_eq!((a.major, a.minor + 1), (b.major, b.minor));
                }
                Err(Refusal::Downgrade { .. }) => prop_assert!(a > b),
                Err(Refusal::MinorSkip { .. }) => {
                    prop_assert!(a < b);
                    prop_assert!(a.major != b.major || b.minor > a.minor + 1);
                }
            }
        }

        /// Every allowed step keeps a kubelet of the old release working
        /// with an API server of the new one (servers first, then agents).
        #[test]
        fn allowed_steps_keep_old_kubelets_valid(a in release(), b in release()) {
            if upgrade_step("n", &a, &b).is_ok() {
                prop_assert!(kubelet_allowed(&a, &b));
            }
        }
    }
}
