//! Pure cron schedules, as k3s reads `etcd-snapshot-schedule-cron`: k3s
//! builds its scheduler with `cron.New(cron.WithLogger(..))` (k3s
//! `pkg/etcd/etcd.go:169` @1feb5ae, `docs/facts/disaster-recovery.md` §2),
//! so the expression is robfig/cron v3's standard one: five fields
//! (minute, hour, day of month, month, day of week) with `*`, `?`, lists,
//! ranges, `/step` and month/day names, or a descriptor (`@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`,
//! `@every DURATION`). A `CRON_TZ=`/`TZ=` prefix is accepted for UTC only:
//! the world's VMs run in UTC (the facts are silent on exeuntu's zone) and
//! the world has no zone database. Times are Unix milliseconds in UTC.

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// `@every D`: every D milliseconds after the scheduler started (robfig
    /// rounds D up to whole seconds, minimum one second).
    Every(u64),
    /// Five fields, each a bit set; `dom_star`/`dow_star` record a field
    /// written as `*` or `?` (robfig's `starBit`, which decides how the two
    /// day fields combine).
    Fields {
        minute: u64,
        hour: u64,
        dom: u64,
        month: u64,
        dow: u64,
        dom_star: bool,
        dow_star: bool,
    },
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's bits and whether it was a bare `*`/`?`.
fn field(expr: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in expr.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| format!("failed to parse int from {s}"))?;
                if s == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (r, Some(s))
            }
            None => (part, None),
        };
        let value = |s: &str| -> Result<u32, String> {
            let lower = s.to_ascii_lowercase();
            if let Some(i) = names.iter().position(|n| *n == lower) {
                return Ok(i as u32 + base);
            }
            s.parse::<u32>()
                .map_err(|_| format!("failed to parse int from {s}"))
        };
        let (lo, hi, whole) = if range == "*" || range == "?" {
            (min, max, true)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?, false)
        } else {
            let v = value(range)?;
            // `N/step` runs from N to the field's end (robfig's getRange).
            (v, if step.is_some() { max } else { v }, false)
        };
        if lo < min || hi > max {
            return Err(format!("end of range ({hi}) above maximum ({max}): {part}"));
        }
        if lo > hi {
            return Err(format!(
                "beginning of range ({lo}) beyond end of range ({hi}): {part}"
            ));
        }
        let step = step.unwrap_or(1);
        // robfig sets starBit only for `*`/`?` without a step above 1.
        if whole && step == 1 {
            star = true;
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

/// `@every`'s Go duration (`90s`, `1h30m`, `500ms`), in milliseconds.
fn go_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("failed to parse duration @every {s}: time: invalid duration {s:?}");
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return Err(bad()),
        };
        total += n * ms;
        rest = &rest[unit_len..];
    }
    // robfig's Every: below a second becomes a second, and the rest is
    // truncated to whole seconds.
    let secs = ((total / 1000.0).floor() as u64).max(1);
    Ok(secs * 1000)
}

impl Schedule {
    /// Parses an expression as robfig/cron v3's standard parser does (the
    /// error wording is the model's: k3s discards it, see [`crate::world::k3s`]).
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let mut spec = spec.trim();
        for tz in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = spec.strip_prefix(tz) {
                let (zone, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                if !matches!(zone, "UTC" | "Etc/UTC" | "Local") {
                    return Err(format!(
                        "provided bad location {zone}: the world's VMs know only UTC"
                    ));
                }
                spec = rest.trim();
            }
        }
        if let Some(d) = spec.strip_prefix("@every ") {
            return Ok(Schedule::Every(go_duration(d.trim())?));
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {s}"));
            }
            s => s,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                f.len(),
                f.join(" ")
            ));
        }
        let (minute, _) = field(f[0], 0, 59, &[], 0)?;
        let (hour, _) = field(f[1], 0, 23, &[], 0)?;
        let (dom, dom_star) = field(f[2], 1, 31, &[], 0)?;
        let (month, _) = field(f[3], 1, 12, &MONTHS, 1)?;
        let (dow, dow_star) = field(f[4], 0, 6, &DAYS, 0)?;
        Ok(Schedule::Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        })
    }

    /// The first run strictly after `after_ms`; `started_ms` is when the
    /// scheduler started (what `@every` counts from). `None`: never within
    /// five years (robfig gives up there too).
    pub fn next(&self, started_ms: u64, after_ms: u64) -> Option<u64> {
        match *self {
            Schedule::Every(d) => {
                let n = after_ms.saturating_sub(started_ms) / d + 1;
                Some(started_ms + n * d)
            }
            Schedule::Fields {
                minute,
                hour,
                dom,
                month,
                dow,
                dom_star,
                dow_star,
            } => {
                let day_ok = |days: i64| {
                    let (_, _, d) = civil(days);
                    let wd = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
                    let dm = dom & (1 << d) != 0;
                    let wm = dow & (1 << wd) != 0;
                    if dom_star || dow_star {
                        dm && wm
                    } else {
                        dm || wm
                    }
                };
                // Whole minutes, strictly after `after_ms`.
                let mut t = (after_ms / 60_000 + 1) as i64;
                let limit = t + 5 * 366 * 24 * 60;
                while t < limit {
                    let days = t.div_euclid(24 * 60);
                    let (_, m, _) = civil(days);
                    if month & (1 << m) == 0 || !day_ok(days) {
                        t = (days + 1) * 24 * 60;
                        continue;
                    }
                    let h = (t.rem_euclid(24 * 60) / 60) as u32;
                    if hour & (1 << h) == 0 {
                        t = (t / 60 + 1) * 60;
                        continue;
                    }
                    let mi = (t.rem_euclid(60)) as u32;
                    if minute & (1 << mi) != 0 {
                        return Some(t as u64 * 60_000);
                    }
                    t += 1;
                }
                None
            }
        }
    }
}

/// Year, month (1-12), day (1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 in UTC, whole seconds (`2026-12-07T16:00:00Z`): how k3s prints
/// a snapshot's creation time in `etcd-snapshot ls` (Go's `time.RFC3339`).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07T16:00:00Z, a Monday.
    const MON_1600: u64 = 1_796_659_200_000;

    #[test]
    fn the_calendar_is_right() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(MON_1600), "2026-12-07T16:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn five_fields_run_at_the_next_matching_minute() {
        let s = Schedule::parse("0 */6 * * *").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600).unwrap()),
            "2026-12-07T18:00:00Z"
        );
        let s = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600 + 1).unwrap()),
            "2026-12-07T16:05:00Z"
        );
        // k3s's default.
        let s = Schedule::parse("0 */12 * * *").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600).unwrap()),
            "2026-12-08T00:00:00Z"
        );
        let s = Schedule::parse("30 2 1 feb *").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600).unwrap()),
            "2027-02-01T02:30:00Z"
        );
        let s = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600).unwrap()),
            "2028-02-29T00:00:00Z"
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st of the month or any Friday: the next is Friday the 11th.
        let s = Schedule::parse("0 0 1 * fri").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600).unwrap()),
            "2026-12-11T00:00:00Z"
        );
        // A `*` day of month: only Fridays.
        let s = Schedule::parse("0 0 * * 5").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600).unwrap()),
            "2026-12-11T00:00:00Z"
        );
    }

    #[test]
    fn descriptors_and_every() {
        let s = Schedule::parse("@daily").unwrap();
        assert_eq!(
            rfc3339(s.next(0, MON_1600).unwrap()),
            "2026-12-08T00:00:00Z"
        );
        let s = Schedule::parse("@every 2s").unwrap();
        assert_eq!(s, Schedule::Every(2000));
        assert_eq!(s.next(1000, 1000), Some(3000));
        assert_eq!(s.next(1000, 3000), Some(5000));
        assert_eq!(
            Schedule::parse("@every 300ms").unwrap(),
            Schedule::Every(1000)
        );
        assert_eq!(
            Schedule::parse("@every 1m30s").unwrap(),
            Schedule::Every(90_000)
        );
        assert_eq!(
            Schedule::parse("CRON_TZ=UTC 0 * * * *").unwrap(),
            Schedule::parse("@hourly").unwrap()
        );
    }

    #[test]
    fn what_robfig_refuses() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "61 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
            "@fortnightly",
            "@every",
            "@every 5 minutes",
            "TZ=Europe/Paris 0 * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn an_impossible_date_never_runs() {
        let s = Schedule::parse("0 0 31 2 *").unwrap();
        assert_eq!(s.next(0, MON_1600), None);
    }
}
