//! The fleet's `etcd.snapshots`: the rules its values must follow and the
//! k3s settings they become.
//!
//! k3s takes snapshots of its embedded etcd on a cron schedule and keeps
//! the newest `retention` of them, on each server's disk and, with the
//! `etcd-s3*` settings, in an S3 bucket (k3s-facts.md, "Snapshots"). The
//! fleet section is rendered into those settings on the servers only, in
//! the 0600 drop-in `config.yaml.d/exedev-k8s.yaml` the in-place change
//! script writes (see `bootstrap::render_change`); never on the k3s command
//! line, which the installer copies into the world-readable unit file.
//!
//! Sources (k3s-io/k3s, read through the code index):
//! - the flag names: `src/base/k3s_flags/flags-1feb5ae.txt` (from
//!   `pkg/cli/cmds/server.go` @ 1feb5ae), lines 70-89:
//!   `etcd-snapshot-schedule-cron`, `etcd-snapshot-retention`, `etcd-s3`,
//!   `etcd-s3-endpoint`, `etcd-s3-skip-ssl-verify` (bool),
//!   `etcd-s3-access-key`, `etcd-s3-secret-key`, `etcd-s3-bucket`,
//!   `etcd-s3-region`, `etcd-s3-folder`, `etcd-s3-retention` (S3's own
//!   retention, apart from the local one), `etcd-s3-insecure` (bool); a test
//!   below proves each is a server flag of every covered table;
//! - the schedule: `pkg/etcd/etcd.go:169` @ 1feb5ae (`cron.New(...)` of
//!   github.com/robfig/cron/v3, its standard parser) and
//!   `pkg/etcd/snapshot.go:890` (`e.cron.AddJob(...)`, whose error k3s
//!   ignores: a bad expression silently means no scheduled snapshots), as
//!   read in docs/facts/disaster-recovery.md section 2 (also
//!   `pkg/etcd/etcd.go` @ 2614da0, `NewETCD` / `setSnapshotFunction`, the
//!   same in an older release). The standard parser's grammar is
//!   robfig/cron's (`parser.go`), not k3s's, and not re-read here: five
//!   fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or
//!   JAN-DEC, day of week 0-6 or SUN-SAT), each a comma list of `*`, `?`,
//!   `N`, `N-M`, optionally `/STEP`, or a descriptor (`@daily` ...). This
//!   module takes the five fields and the fixed descriptors; `@every
//!   DURATION` and a `CRON_TZ=`/`TZ=` prefix, which the parser also takes,
//!   are refused here (the tool's choice: a 5-field expression in the VM's
//!   zone says the same, and needs no Go duration grammar).
//! - bucket names: S3's own rules (AWS "General purpose bucket naming
//!   rules"), not k3s's: k3s passes the name to minio-go unchanged, and S3
//!   refuses the upload.
//!
//! Pure.

/// Smallest `retention`: k3s keeps that many scheduled snapshots; 0 would
/// delete each one as it is taken.
pub const MIN_RETENTION: u32 = 1;

/// The k3s settings the section sets, in the order they are rendered:
/// `serverArgs` may not set any of them as well (which would win is k3s's
/// config-versus-flag precedence, invisible in the fleet file).
pub const SNAPSHOT_FLAGS: &[&str] = &[
    SCHEDULE_FLAG,
    RETENTION_FLAG,
    "etcd-s3",
    "etcd-s3-endpoint",
    "etcd-s3-bucket",
    "etcd-s3-folder",
    "etcd-s3-region",
    "etcd-s3-insecure",
    "etcd-s3-skip-ssl-verify",
    "etcd-s3-retention",
    ACCESS_KEY_FLAG,
    SECRET_KEY_FLAG,
    // Not set by the section, but it contradicts it.
    "etcd-disable-snapshots",
];

pub(super) const SCHEDULE_FLAG: &str = "etcd-snapshot-schedule-cron";
pub(super) const RETENTION_FLAG: &str = "etcd-snapshot-retention";
pub(super) const ACCESS_KEY_FLAG: &str = "etcd-s3-access-key";
pub(super) const SECRET_KEY_FLAG: &str = "etcd-s3-secret-key";

/// The fleet field that sets a k3s snapshot setting, for the refusal that
/// names both.
pub fn field_of(flag: &str) -> &'static str {
    match flag {
        SCHEDULE_FLAG => "etcd.snapshots.schedule",
        RETENTION_FLAG => "etcd.snapshots.retention",
        "etcd-s3" => "etcd.snapshots.s3",
        "etcd-s3-endpoint" => "etcd.snapshots.s3.endpoint",
        "etcd-s3-bucket" => "etcd.snapshots.s3.bucket",
        "etcd-s3-folder" => "etcd.snapshots.s3.folder",
        "etcd-s3-region" => "etcd.snapshots.s3.region",
        "etcd-s3-insecure" => "etcd.snapshots.s3.insecure",
        "etcd-s3-skip-ssl-verify" => "etcd.snapshots.s3.skipSSLVerify",
        "etcd-s3-retention" => "etcd.snapshots.retention",
        ACCESS_KEY_FLAG => "etcd.snapshots.s3.accessKey",
        SECRET_KEY_FLAG => "etcd.snapshots.s3.secretKey",
        _ => "etcd.snapshots",
    }
}

/// One field of a 5-field cron expression: its name and range.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names accepted for values (`JAN` = 1, `SUN` = 0), lowercase.
    names: &'static [(&'static str, u32)],
}

const MONTHS: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];
const DAYS: &[(&str, u32)] = &[
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
];

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 6,
        names: DAYS,
    },
];

/// The descriptors robfig/cron's standard parser takes instead of five
/// fields.
pub const CRON_DESCRIPTORS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Checks a snapshot schedule as k3s's cron parser reads it (see the
/// module comment); the error names the field at fault.
pub fn check_schedule(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if expr.starts_with('@') {
        return if CRON_DESCRIPTORS.contains(&expr) {
            Ok(())
        } else {
            Err(format!(
                "{expr:?} is not one of the descriptors {}",
                CRON_DESCRIPTORS.join(", ")
            ))
        };
    }
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!(
            "has {} field{}, a cron expression has 5 (minute hour day-of-month month day-of-week)",
            parts.len(),
            if parts.len() == 1 { "" } else { "s" }
        ));
    }
    for (i, (part, field)) in parts.iter().zip(&FIELDS).enumerate() {
        check_field(part, field)
            .map_err(|why| format!("field {} ({}) {part:?}: {why}", i + 1, field.name))?;
    }
    Ok(())
}

fn check_field(part: &str, f: &Field) -> Result<(), String> {
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(s) = step {
            match s.parse::<u32>() {
                Ok(n) if n >= 1 => {}
                _ => return Err(format!("step {s:?} must be a whole number of 1 or more")),
            }
        }
        if range == "*" || range == "?" {
            continue;
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (value(a, f)?, Some(value(b, f)?)),
            None => (value(range, f)?, None),
        };
        if let Some(hi) = hi
            && lo > hi
        {
            return Err(format!("range {range:?} starts after it ends"));
        }
    }
    Ok(())
}

fn value(text: &str, f: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, n)) = f.names.iter().find(|(name, _)| *name == lower) {
        return Ok(*n);
    }
    let in_range = format!("{} to {}", f.min, f.max);
    let named = if f.names.is_empty() {
        String::new()
    } else {
        let first = f.names.first().map_or("", |n| n.0);
        let last = f.names.last().map_or("", |n| n.0);
        format!(" or {}-{}", first.to_uppercase(), last.to_uppercase())
    };
    match text.parse::<u32>() {
        Ok(n) if (f.min..=f.max).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} is outside {in_range}")),
        Err(_) if text.is_empty() => Err(format!("a value is missing ({in_range}{named})")),
        Err(_) => Err(format!(
            "{text:?} is not a number {in_range}{named}, `*`, a range or a list"
        )),
    }
}

/// Prefixes S3 reserves for its own bucket names.
const BUCKET_RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
/// Suffixes S3 reserves (access point aliases, Object Lambda, Multi-Region
/// Access Points, directory and table buckets).
const BUCKET_RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

/// Checks a bucket name against S3's naming rules for general purpose
/// buckets: 3 to 63 characters; lowercase letters, digits, dots and
/// hyphens; starting and ending with a letter or digit; no two dots in a
/// row; not an IPv4 address; none of S3's reserved prefixes and suffixes.
pub fn check_bucket(name: &str) -> Result<(), String> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Err(format!("is {len} characters long; S3 takes 3 to 63"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}; S3 takes lowercase letters, digits, dots and hyphens"
        ));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err("must start and end with a lowercase letter or a digit".into());
    }
    if name.contains("..") {
        return Err("has two dots in a row".into());
    }
    if looks_like_ipv4(name) {
        return Err("is an IP address; S3 refuses those as bucket names".into());
    }
    if let Some(p) = BUCKET_RESERVED_PREFIXES
        .iter()
        .find(|p| name.starts_with(*p))
    {
        return Err(format!("starts with {p:?}, which S3 reserves"));
    }
    if let Some(s) = BUCKET_RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return Err(format!("ends with {s:?}, which S3 reserves"));
    }
    Ok(())
}

/// Four dot-separated groups of 1 to 3 digits: "formatted as an IP
/// address" in S3's words (`999.1.1.1` included).
fn looks_like_ipv4(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The schema's form of [`check_bucket`]: a name matches this and not
/// [`BUCKET_REFUSED_PATTERN`] exactly when `check_bucket` accepts it
/// (proven by a property test).
pub const BUCKET_PATTERN: &str = "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$";
/// What S3 refuses among names of the right shape: two dots in a row, an
/// IP address, a reserved prefix or suffix.
pub const BUCKET_REFUSED_PATTERN: &str = r"\.\.|^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$|^(xn--|sthree-|amzn-s3-demo-)|(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$";

/// An S3 endpoint as k3s takes it: a host (and port), no scheme or path
/// (k3s builds the URL itself, `https://` unless `etcd-s3-insecure`).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.contains("://") {
        return Err(
            "has a scheme; k3s wants the host (and port) only and picks https, or http with insecure: true"
                .into(),
        );
    }
    if endpoint.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = endpoint
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
    {
        return Err(format!(
            "contains {c:?}; write a host name and optional :port"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fleet::SecretRef;
    use crate::core::fleet::resolved::{EtcdSnapshots, K3sFlag, Located, SnapshotS3};
    use proptest::prelude::*;

    #[test]
    fn schedules_k3s_takes_are_accepted() {
        for s in [
            "0 */6 * * *",
            "0 */12 * * *",
            "*/15 * * * *",
            "30 2 * * MON-FRI",
            "0 0 1,15 jan,jul ?",
            "5-10/2 0-23 1-31 1-12 0-6",
            "@daily",
            "@hourly",
        ] {
            assert_eq!(check_schedule(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn bad_schedules_name_the_field() {
        for (s, says) in [
            ("0 */6 * *", "has 4 fields"),
            ("daily", "has 1 field,"),
            (
                "60 * * * *",
                "field 1 (minute) \"60\": 60 is outside 0 to 59",
            ),
            ("0 24 * * *", "field 2 (hour)"),
            ("0 0 0 * *", "field 3 (day of month)"),
            ("0 0 * 13 *", "field 4 (month)"),
            (
                "0 0 * * 7",
                "field 5 (day of week) \"7\": 7 is outside 0 to 6",
            ),
            ("*/0 * * * *", "step \"0\""),
            ("0 5-2 * * *", "starts after it ends"),
            ("0 0 * * FUNDAY", "not a number 0 to 6 or SUN-SAT"),
            ("0 0 * foo *", "or JAN-DEC"),
            ("0 0,, * * *", "a value is missing"),
            ("@every 1h", "not one of the descriptors"),
        ] {
            match check_schedule(s) {
                Err(e) => assert!(e.contains(says), "{s}: {e}"),
                Ok(()) => panic!("{s} accepted"),
            }
        }
    }

    #[test]
    fn bucket_rules() {
        for ok in [
            "abc",
            "prod-k3s-snapshots",
            "my.bucket.1",
            "0ab",
            &"a".repeat(63),
        ] {
            assert_eq!(check_bucket(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("ab", "2 characters"),
            (&"a".repeat(64) as &str, "64 characters"),
            ("My-Bucket", "'M'"),
            ("under_score", "'_'"),
            ("-abc", "start and end"),
            ("abc.", "start and end"),
            ("a..b", "two dots"),
            ("192.168.5.4", "IP address"),
            ("999.1.1.1", "IP address"),
            ("xn--abc", "\"xn--\""),
            ("sthree-abc", "\"sthree-\""),
            ("amzn-s3-demo-x", "\"amzn-s3-demo-\""),
            ("abc-s3alias", "\"-s3alias\""),
            ("abc--ol-s3", "\"--ol-s3\""),
            ("abc.mrap", "\".mrap\""),
            ("abc--x-s3", "\"--x-s3\""),
            ("abc--table-s3", "\"--table-s3\""),
        ] {
            match check_bucket(bad) {
                Err(e) => assert!(e.contains(says), "{bad}: {e}"),
                Ok(()) => panic!("{bad} accepted"),
            }
        }
    }

    /// The rules, stated independently of `check_bucket`'s order.
    fn bucket_ok_by_definition(n: &str) -> bool {
        let b = n.as_bytes();
        let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        (3..=63).contains(&b.len())
            && b.iter().all(|&c| edge(c) || c == b'.' || c == b'-')
            && edge(b[0])
            && edge(b[b.len() - 1])
            && !n.contains("..")
            && !(n.split('.').count() == 4
                && n.split('.')
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())))
            && !BUCKET_RESERVED_PREFIXES.iter().any(|p| n.starts_with(p))
            && !BUCKET_RESERVED_SUFFIXES.iter().any(|s| n.ends_with(s))
    }

    proptest! {
        /// Names drawn near the rules' edges (short, long, dots, hyphens,
        /// capitals, reserved affixes, addresses): the check agrees with
        /// the rules, and a refusal always says why.
        #[test]
        fn check_bucket_is_the_naming_rules(
            n in prop_oneof![
                "[a-z0-9.-]{0,66}",
                "[a-zA-Z0-9._-]{1,8}",
                "(xn--|sthree-|amzn-s3-demo-)?[a-z0-9]{1,6}(-s3alias|--ol-s3|\\.mrap|--x-s3|--table-s3)?",
                "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
            ]
        ) {
            let got = check_bucket(&n);
            prop_assert_eq!(got.is_ok(), bucket_ok_by_definition(&n), "{:?}: {:?}", n, got);
            let schema = crate::core::fleet::pattern_matcher(BUCKET_PATTERN)(&n)
                && !crate::core::fleet::pattern_matcher(BUCKET_REFUSED_PATTERN)(&n);
            prop_assert_eq!(got.is_ok(), schema, "schema disagrees on {:?}", n);
            if let Err(e) = got {
                prop_assert!(!e.is_empty());
            }
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(check_endpoint("s3.amazonaws.com"), Ok(()));
        assert_eq!(check_endpoint("minio.local:9000"), Ok(()));
        assert!(check_endpoint("https://s3.amazonaws.com").is_err());
        assert!(check_endpoint("s3.example.com/path").is_err());
        assert!(check_endpoint("").is_err());
    }

    /// Every setting the section renders is a `k3s server` flag in every
    /// table the tool covers (k3s exits on an undefined flag).
    #[test]
    fn every_setting_is_a_k3s_server_flag() {
        for table in crate::base::k3s_flags::all() {
            for flag in SNAPSHOT_FLAGS {
                assert!(
                    table
                        .lookup(crate::base::k3s_flags::Role::Server, flag)
                        .is_some(),
                    "{flag}"
                );
            }
        }
    }

    #[test]
    fn settings_keep_keys_as_references() {
        let at = crate::core::fleet::Location { line: 1, column: 1 };
        let s = EtcdSnapshots {
            schedule: "0 */6 * * *".into(),
            retention: 5,
            s3: Some(SnapshotS3 {
                endpoint: "s3.emulator.internal".into(),
                bucket: "prod-k3s-snapshots".into(),
                folder: Some("prod".into()),
                region: None,
                insecure: true,
                skip_ssl_verify: false,
                access_key: Located {
                    value: SecretRef::Env("S3_ACCESS_KEY".into()),
                    at,
                },
                secret_key: Located {
                    value: SecretRef::File("secrets/s3".into()),
                    at,
                },
            }),
        };
        let shown: Vec<String> = s.settings().iter().map(K3sFlag::shown).collect();
        assert_eq!(
            shown,
            [
                "--etcd-snapshot-schedule-cron=0 */6 * * *",
                "--etcd-snapshot-retention=5",
                "--etcd-s3=true",
                "--etcd-s3-endpoint=s3.emulator.internal",
                "--etcd-s3-bucket=prod-k3s-snapshots",
                "--etcd-s3-folder=prod",
                "--etcd-s3-insecure=true",
                "--etcd-s3-retention=5",
                "--etcd-s3-access-key=(secret from env S3_ACCESS_KEY)",
                "--etcd-s3-secret-key=(secret from file secrets/s3)",
            ]
        );
        assert_eq!(s.secrets().len(), 2);
    }
}
