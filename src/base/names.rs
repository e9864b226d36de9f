//! VM naming, in one place: exe.dev's rules and this tool's scheme.
//!
//! The fleet validator, the plan (to refuse a fleet whose computed names
//! exe.dev would reject) and the emulator (to reject such names with the same
//! message) all call [`check_vm_name`]; nothing else encodes these rules.
//!
//! **exe.dev's rule has two readings.** Its historical code accepts
//! `^[a-z][a-z0-9]*(-[a-z0-9]+)*$`, but a guide dated 2026-04 reports
//! `test-123` refused and `test-abc` accepted, and another tool's fixture
//! records `VM name "test-min-ctl-1" is not available`. Whether a name may
//! end in `-<digits>` decides whether the first `new` of every apply works,
//! so every name this tool generates is valid under both readings
//! ([`check_portable_vm_name`]), and the emulator applies the stricter one by
//! default.
//!
//! **The fleet scheme** is `{cluster}-{pool}{index}` (`prod-cp1`,
//! `prod-general3`): short, readable, index order visible, never ending in
//! `-<digits>` because a pool name never ends in a digit. That same rule
//! makes a name parse back to one (pool, index) only ([`parse_fleet_vm_name`]):
//! the index is the trailing digit run, the pool what stands before it.

/// Names exe.dev refuses outright even though they match the pattern.
pub const REFUSED_NAMES: &[&str] = &[
    "cluster",
    "worker",
    "server",
    "nodes",
    "agent",
    "gateway",
    "kubernetes",
    "k3s",
    "docker",
    "setup",
    "proxy",
    "example",
];

/// Shortest VM name exe.dev accepts.
pub const MIN_LEN: usize = crate::base::limits::MIN_VM_NAME_LEN;
/// Longest VM name exe.dev accepts.
pub const MAX_LEN: usize = crate::base::limits::MAX_VM_NAME_LEN;

/// Why a VM name is not acceptable to exe.dev.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("VM name {name:?} is {len} characters long; exe.dev needs {MIN_LEN} to {MAX_LEN}")]
    Length { name: String, len: usize },
    #[error(
        "VM name {name:?} must start with a lowercase letter and contain only lowercase letters, digits and single hyphens between them (^[a-z][a-z0-9]*(-[a-z0-9]+)*$)"
    )]
    Syntax { name: String },
    #[error("VM name {name:?} is reserved by exe.dev; choose another")]
    Refused { name: String },
    #[error("VM name {name:?} must not end in a hyphen followed by digits")]
    DigitSuffix { name: String },
    #[error(
        "VM name {name:?} is {len} characters long; a node's name is also its Tailscale host name and a DNS label, which holds at most {MAX_NODE_NAME_LEN}"
    )]
    DnsLabel { name: String, len: usize },
}

/// Longest name of a VM that becomes a k3s node: the VM name is also the
/// node's Tailscale host name, its MagicDNS label and a `tls-san` entry, and
/// a DNS label holds at most 63 octets (RFC 1035 §2.3.4), one less than
/// exe.dev's 64.
pub const MAX_NODE_NAME_LEN: usize = 63;

/// Checks `name` against exe.dev's documented rules:
/// 5–64 characters, `^[a-z][a-z0-9]*(-[a-z0-9]+)*$`, and not a refused word.
pub fn check_vm_name(name: &str) -> Result<(), NameError> {
    let len = name.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(NameError::Length {
            name: name.to_string(),
            len,
        });
    }
    if !matches_pattern(name) {
        return Err(NameError::Syntax {
            name: name.to_string(),
        });
    }
    if REFUSED_NAMES.contains(&name) {
        return Err(NameError::Refused {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// True when `name` ends in `-<digits>` (`test-123`): refused under the
/// stricter reading of exe.dev's rule (see the module comment).
pub fn ends_in_digit_suffix(name: &str) -> bool {
    name.rsplit_once('-')
        .is_some_and(|(_, last)| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// [`check_vm_name`] under both readings of exe.dev's rule: also refuses a
/// name ending in `-<digits>`. Every name this tool generates passes it.
pub fn check_portable_vm_name(name: &str) -> Result<(), NameError> {
    check_vm_name(name)?;
    if ends_in_digit_suffix(name) {
        return Err(NameError::DigitSuffix {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// [`is_name_segment`] as a regular expression (the same in JSON Schema's
/// ECMA-262 dialect and in Rust's): the fleet schema carries it, and tests
/// prove the two agree.
pub const NAME_SEGMENT_PATTERN: &str = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$";

/// [`is_pool_segment`] as a regular expression (see [`NAME_SEGMENT_PATTERN`]).
pub const POOL_SEGMENT_PATTERN: &str = "^[a-z]([a-z0-9]*[a-z])?$";

/// [`is_tag`] as a regular expression (see [`NAME_SEGMENT_PATTERN`]).
pub fn tag_pattern() -> String {
    format!("^[a-z0-9][a-z0-9-]{{0,{}}}$", MAX_TAG_LEN - 1)
}

/// What validation checks of every name the fleet scheme generates: valid
/// under both readings of exe.dev's rule, and a DNS label.
pub fn check_node_name(name: &str) -> Result<(), NameError> {
    check_portable_vm_name(name)?;
    if name.len() > MAX_NODE_NAME_LEN {
        return Err(NameError::DnsLabel {
            name: name.to_string(),
            len: name.len(),
        });
    }
    Ok(())
}

/// A cluster or pool name: a lowercase letter, then lowercase letters, digits
/// and single inner hyphens (`prod`, `prod-eu1`, `gpu-a`).
pub fn is_name_segment(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(first) = b.first() else {
        return false;
    };
    first.is_ascii_lowercase()
        && !s.ends_with('-')
        && !s.contains("--")
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A pool name the fleet scheme can use: a lowercase letter, then lowercase
/// letters and digits, ending in a letter (`general`, `gpu`, `x2large`). No
/// hyphen, so the last hyphen of a VM name always separates the cluster from
/// the pool, and no final digit, so `{pool}{index}` parses back one way only
/// (`gpu2` + `1` would read as `gpu` + `21`) and a VM name never ends in
/// `-<digits>`.
pub fn is_pool_segment(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b.first(), Some(c) if c.is_ascii_lowercase())
        && matches!(b.last(), Some(c) if c.is_ascii_lowercase())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The fleet's name for VM `index` (1-based) of `pool`: `{cluster}-{pool}{index}`.
pub fn fleet_vm_name(cluster: &str, pool: &str, index: u32) -> String {
    format!("{cluster}-{pool}{index}")
}

/// A name of the fleet scheme, read back without knowing the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetVmName<'a> {
    /// Everything before the last hyphen.
    pub cluster: &'a str,
    /// The letters-and-digits run after it, up to the index.
    pub pool: &'a str,
    /// The trailing number, 1 or more, without leading zeros.
    pub index: u32,
}

/// Reads any VM name of the fleet scheme back into its parts; `None` when the
/// name is not one the scheme can produce. Unambiguous because pool names
/// have no hyphen and do not end in a digit.
pub fn split_fleet_vm_name(name: &str) -> Option<FleetVmName<'_>> {
    let (cluster, rest) = name.rsplit_once('-')?;
    let digits_at = rest.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (pool, digits) = rest.split_at(digits_at);
    if !is_name_segment(cluster)
        || !is_pool_segment(pool)
        || digits.is_empty()
        || digits.starts_with('0')
    {
        return None;
    }
    let index = digits.parse().ok()?;
    Some(FleetVmName {
        cluster,
        pool,
        index,
    })
}

/// Reads a VM name back into `(pool, index)` when fleet `cluster` generates
/// it for some pool; `None` for every other name, including the names of a
/// fleet whose name merely starts with `cluster` (`prod-eu-cp1` is not
/// `prod`'s).
pub fn parse_fleet_vm_name<'a>(cluster: &str, name: &'a str) -> Option<(&'a str, u32)> {
    split_fleet_vm_name(name)
        .filter(|n| n.cluster == cluster)
        .map(|n| (n.pool, n.index))
}

fn matches_pattern(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if !first.is_ascii_lowercase() {
        return false;
    }
    let mut prev_hyphen = false;
    for &b in &bytes[1..] {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => prev_hyphen = false,
            b'-' if !prev_hyphen => prev_hyphen = true,
            _ => return false,
        }
    }
    !prev_hyphen
}

pub use crate::base::limits::MAX_TAG_LEN;

/// exe.dev tag syntax as this project reads it: `[a-z0-9][a-z0-9-]{0,62}`.
/// The fleet validator and the emulator's `new --tag`/`tag` both use it.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=MAX_TAG_LEN).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Shell-style glob with `*` and `?` over characters: how `ls PATTERN`
/// matches VM names (and how the emulator's fault switches name VMs).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The Secret in `kube-system` where k3s keeps a node's password hash:
/// `<node>.node-password.k3s`, lower-cased (k3s `pkg/nodepassword/nodepassword.go:46-48`
/// @1feb5ae; `docs/facts/node-password.md`). Named by the plan (why a
/// remaining Node must go before a new VM takes its name) and kept by the
/// VM world.
pub fn node_password_secret(node: &str) -> String {
    format!("{node}.node-password.k3s").to_lowercase()
}

/// Where a k3s node keeps its password (k3s `pkg/agent/config/config.go:483-494`
/// @1feb5ae, not rootless): made at its first join, never rewritten.
pub const NODE_PASSWORD_FILE: &str = "/etc/rancher/node/password";

/// What a k3s agent says when the server refuses its node password (a 403:
/// another machine's password is kept for its name), k3s
/// `pkg/agent/config/config.go:181` @1feb5ae, the password file's path
/// filled in. It retries, logging this at info level: `status` finds it in
/// the journal, and the VM world says it.
pub const NODE_PASSWORD_REJECTED: &str = "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::pattern_matcher;
    use proptest::prelude::*;

    proptest! {
        /// The schema's patterns accept exactly what the functions accept.
        #[test]
        fn patterns_agree_with_the_functions(s in "[a-z0-9A-Z_-]{0,8}|[a-z][a-z0-9-]{0,70}") {
            prop_assert_eq!(pattern_matcher(NAME_SEGMENT_PATTERN)(&s), is_name_segment(&s), "{}", s);
            prop_assert_eq!(pattern_matcher(POOL_SEGMENT_PATTERN)(&s), is_pool_segment(&s), "{}", s);
            prop_assert_eq!(pattern_matcher(&tag_pattern())(&s), is_tag(&s), "{}", s);
        }
    }

    #[test]
    fn accepts_documented_examples() {
        // `p1-a-1` is valid under exe.dev's historical code (the looser reading).
        for ok in ["web-a", "restless", "p1-a-1", "demo-cp1", "a1234"] {
            assert_eq!(check_vm_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        assert!(matches!(
            check_vm_name("abcd"),
            Err(NameError::Length { len: 4, .. })
        ));
        assert!(matches!(
            check_vm_name(&"a".repeat(65)),
            Err(NameError::Length { .. })
        ));
        for bad in [
            "1abcd", "abc--d", "abcd-", "-abcd", "Abcde", "ab_cd", "abc.d", "abcdé",
        ] {
            assert!(
                matches!(check_vm_name(bad), Err(NameError::Syntax { .. })),
                "{bad}"
            );
        }
        for refused in REFUSED_NAMES.iter().filter(|n| n.len() >= MIN_LEN) {
            assert!(
                matches!(check_vm_name(refused), Err(NameError::Refused { .. })),
                "{refused}"
            );
        }
    }

    #[test]
    fn tags() {
        assert!(is_tag("team-a") && is_tag("9x") && is_tag(&"a".repeat(63)));
        assert!(
            !is_tag("")
                && !is_tag("-a")
                && !is_tag("A")
                && !is_tag("a b")
                && !is_tag(&"a".repeat(64))
        );
    }

    #[test]
    fn digit_suffix_is_the_stricter_reading() {
        assert!(ends_in_digit_suffix("test-123") && ends_in_digit_suffix("p1-a-1"));
        for ok in ["test-abc", "prod-cp1", "p1-ab", "a1234"] {
            assert!(!ends_in_digit_suffix(ok), "{ok}");
            assert_eq!(check_portable_vm_name(ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            check_portable_vm_name("demo-cp-1"),
            Err(NameError::DigitSuffix { .. })
        ));
        // The stricter reading adds a refusal; it never accepts more.
        assert!(check_portable_vm_name("Bad").is_err());
        // exe.dev takes 64 characters; a node name must also be a DNS label.
        let long = format!("a{}", "b".repeat(63));
        assert_eq!(check_portable_vm_name(&long), Ok(()));
        assert!(matches!(
            check_node_name(&long),
            Err(NameError::DnsLabel { len: 64, .. })
        ));
        assert_eq!(check_node_name(&long[1..]), Ok(()));
    }

    #[test]
    fn fleet_scheme_examples() {
        assert_eq!(fleet_vm_name("prod", "cp", 1), "prod-cp1");
        assert_eq!(
            fleet_vm_name("prod-eu1", "general", 12),
            "prod-eu1-general12"
        );
        assert_eq!(parse_fleet_vm_name("prod", "prod-cp1"), Some(("cp", 1)));
        assert_eq!(
            parse_fleet_vm_name("prod", "prod-x2large10"),
            Some(("x2large", 10))
        );
        assert_eq!(
            parse_fleet_vm_name("prod-eu1", "prod-eu1-general12"),
            Some(("general", 12))
        );
        for not_ours in [
            "prod",
            "prod-",
            "prod-cp",
            "prod-cp0",
            "prod-cp01",
            "prod-cp-1",
            "prod-1",
            "prodx-cp1",
            "precious-db",
            "prod-Cp1",
            "prod-eu-cp1",
            "prod-gpu-a1",
        ] {
            assert_eq!(parse_fleet_vm_name("prod", not_ours), None, "{not_ours}");
        }
        assert_eq!(
            split_fleet_vm_name("prod-eu-cp1"),
            Some(FleetVmName {
                cluster: "prod-eu",
                pool: "cp",
                index: 1
            })
        );
        assert!(is_pool_segment("x2large") && is_pool_segment("a"));
        for bad in ["gpu-a", "gpu2", "a-1", "", "2a", "Gpu"] {
            assert!(!is_pool_segment(bad), "{bad}");
        }
    }

    proptest! {
        /// Every name the scheme generates from valid parts is accepted under
        /// both readings (when long enough) and parses back to its parts
        /// only.
        #[test]
        fn fleet_names_are_portable_and_parse_back(
            cluster in "[a-z]([a-z0-9]{0,6})(-[a-z0-9]{1,5}){0,2}",
            pool in "[a-z]([a-z0-9]{0,8}[a-z])?",
            index in 1u32..100_000,
        ) {
            prop_assume!(is_name_segment(&cluster) && is_pool_segment(&pool));
            let name = fleet_vm_name(&cluster, &pool, index);
            prop_assert!(!ends_in_digit_suffix(&name));
            if (MIN_LEN..=MAX_NODE_NAME_LEN).contains(&name.len()) {
                prop_assert_eq!(check_node_name(&name), Ok(()));
            }
            prop_assert_eq!(parse_fleet_vm_name(&cluster, &name), Some((pool.as_str(), index)));
        }

        /// Two different (pool, index) pairs of one fleet never share a name.
        #[test]
        fn fleet_names_never_collide(
            clusters in proptest::collection::vec("[a-z]([a-z0-9]{0,3}(-[a-z0-9]{1,3})?)", 2),
            pools in proptest::collection::vec("[a-z]([a-z0-9]{0,4}[a-z])?", 2),
            a in 1u32..1000,
            b in 1u32..1000,
        ) {
            // Across fleets too: a name belongs to one (cluster, pool, index).
            prop_assume!((&clusters[0], &pools[0], a) != (&clusters[1], &pools[1], b));
            prop_assert_ne!(
                fleet_vm_name(&clusters[0], &pools[0], a),
                fleet_vm_name(&clusters[1], &pools[1], b)
            );
        }

        #[test]
        fn pattern_matches_reference_regex(s in "[a-z0-9-]{0,12}") {
            // Reference: ^[a-z][a-z0-9]*(-[a-z0-9]+)*$ written out by hand.
            let expected = !s.is_empty()
                && s.as_bytes()[0].is_ascii_lowercase()
                && !s.ends_with('-')
                && !s.contains("--");
            prop_assert_eq!(matches_pattern(&s), expected);
        }
    }

    #[test]
    fn node_password_secrets_are_named_as_k3s_names_them() {
        assert_eq!(
            node_password_secret("demo-web1"),
            "demo-web1.node-password.k3s"
        );
        assert_eq!(
            node_password_secret("Demo-Web1"),
            "demo-web1.node-password.k3s"
        );
    }
}
