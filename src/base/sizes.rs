//! Byte sizes as exe.dev's `--memory`/`--disk` flags write them (`4GB`, `20G`,
//! `512MB`), in one place for the fleet file, the emulator and the diff.
//!
//! exe.dev's `ls` reports sizes in bytes with no stable GB convention, so the
//! diff compares sizes with [`same_size`], which tolerates the GB/GiB
//! ambiguity instead of comparing bytes naively.

use std::fmt;

const KIB: u64 = 1024;
const MIB: u64 = KIB * 1024;
const GIB: u64 = MIB * 1024;
const TIB: u64 = GIB * 1024;

/// A size in bytes that remembers it came from a `GB`-style string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// The units a size may carry (any case), with their multiples: binary, as
/// exe.dev treats them. The fleet file's JSON Schema builds its size pattern
/// from this list, so the schema and [`ByteSize::parse_with_unit`] agree.
pub const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("K", KIB),
    ("KB", KIB),
    ("KiB", KIB),
    ("M", MIB),
    ("MB", MIB),
    ("MiB", MIB),
    ("G", GIB),
    ("GB", GIB),
    ("GiB", GIB),
    ("T", TIB),
    ("TB", TIB),
    ("TiB", TIB),
];

/// Why a size string could not be read (what to write instead is the
/// caller's hint: the fleet validator's, the emulator's reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{input:?} is not a size")]
    Invalid { input: String },
    /// A bare number: bytes to exe.dev, almost never what was meant.
    #[error("size {input} has no unit, so it would mean {input} bytes")]
    NoUnit { input: String },
}

impl ByteSize {
    /// Parses `4GB`, `4G`, `4GiB`, `512MB`, `1TB` (binary multiples, as exe.dev
    /// treats them) or a bare byte count (what exe.dev's flags accept; the
    /// fleet file uses [`ByteSize::parse_with_unit`]).
    pub fn parse(input: &str) -> Result<Self, SizeError> {
        let err = || SizeError::Invalid {
            input: input.to_string(),
        };
        let s = input.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let unit = unit.trim();
        let mult = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| u.eq_ignore_ascii_case(unit))
                .map(|(_, m)| *m)
                .ok_or_else(err)?
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }

    /// Like [`ByteSize::parse`], but a size must name its unit: in a fleet
    /// file `memory: 4096` is a mistake (4 KB), never a wish.
    pub fn parse_with_unit(input: &str) -> Result<Self, SizeError> {
        let size = Self::parse(input)?;
        if input.trim().bytes().all(|c| c.is_ascii_digit()) {
            return Err(SizeError::NoUnit {
                input: input.trim().to_string(),
            });
        }
        Ok(size)
    }

    /// Whole gibibytes, rounded to nearest: what exe.dev's flags are written in.
    pub fn gib_rounded(self) -> u64 {
        (self.0 + GIB / 2) / GIB
    }
}

impl fmt::Display for ByteSize {
    /// Shortest exact unit, as exe.dev's flags accept it (`4GB`, `512MB`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (mult, unit) in [(TIB, "TB"), (GIB, "GB"), (MIB, "MB"), (KIB, "KB")] {
            if b >= mult && b.is_multiple_of(mult) {
                return write!(f, "{}{unit}", b / mult);
            }
        }
        write!(f, "{b}B")
    }
}

/// True when two byte counts denote the same nominal size, whether exe.dev
/// reported it in GB (10^9) or GiB (2^30): within 7.5% of each other.
pub fn same_size(a: u64, b: u64) -> bool {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    if hi == 0 {
        return true;
    }
    (hi - lo) as f64 / hi as f64 <= 0.075
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(ByteSize::parse("4GB").unwrap().0, 4 * GIB);
        assert_eq!(ByteSize::parse("4g").unwrap().0, 4 * GIB);
        assert_eq!(ByteSize::parse("512MB").unwrap().0, 512 * MIB);
        assert_eq!(ByteSize::parse("1TB").unwrap().0, TIB);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        for bad in ["", "GB", "4XB", "-4GB", "4.5GB", "99999999999999999999GB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fleet_sizes_need_a_unit() {
        assert_eq!(ByteSize::parse_with_unit("4GB").unwrap().0, 4 * GIB);
        assert_eq!(ByteSize::parse_with_unit(" 512 mib ").unwrap().0, 512 * MIB);
        assert_eq!(ByteSize::parse_with_unit("7B").unwrap().0, 7);
        assert_eq!(
            ByteSize::parse_with_unit("4096"),
            Err(SizeError::NoUnit {
                input: "4096".into()
            })
        );
        let e = ByteSize::parse_with_unit("4096").unwrap_err().to_string();
        assert_eq!(e, "size 4096 has no unit, so it would mean 4096 bytes");
        assert!(matches!(
            ByteSize::parse_with_unit("lots"),
            Err(SizeError::Invalid { .. })
        ));
        for (unit, mult) in UNITS {
            for written in [unit.to_string(), unit.to_lowercase(), unit.to_uppercase()] {
                assert_eq!(
                    ByteSize::parse_with_unit(&format!("3{written}")),
                    Ok(ByteSize(3 * mult))
                );
            }
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["4GB", "512MB", "1TB", "3KB", "7B"] {
            assert_eq!(ByteSize::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn tolerates_gb_gib_ambiguity() {
        assert!(same_size(20 * GIB, 20_000_000_000));
        assert!(same_size(4294967296, 4_000_000_000));
        assert!(!same_size(20 * GIB, 40 * GIB));
        assert!(!same_size(4 * GIB, 3 * GIB));
    }
}
