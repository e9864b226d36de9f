//! exe.dev's VM naming rules, in one place.
//!
//! The fleet validator, the plan (to refuse a fleet whose computed names
//! exe.dev would reject) and the emulator (to reject such names with the same
//! message) all call [`check_vm_name`]; nothing else encodes these rules.

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
pub const MIN_LEN: usize = 5;
/// Longest VM name exe.dev accepts.
pub const MAX_LEN: usize = 64;

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
}

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

/// Longest exe.dev tag this tool writes or accepts.
pub const MAX_TAG_LEN: usize = 63;

/// exe.dev tag syntax as this project reads it: `[a-z0-9][a-z0-9-]{0,62}`.
/// The fleet validator and the emulator's `new --tag`/`tag` both use it.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=MAX_TAG_LEN).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_documented_examples() {
        for ok in ["web-a", "restless", "p1-a-1", "demo-cp-1", "a1234"] {
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

    proptest! {
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
}
