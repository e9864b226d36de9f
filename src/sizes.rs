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

/// Why a size string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a size: write a whole number with a unit, e.g. 4GB, 512MB or 1TB")]
pub struct SizeError {
    pub input: String,
}

impl ByteSize {
    /// Parses `4GB`, `4G`, `4GiB`, `512MB`, `1TB` (binary multiples, as exe.dev
    /// treats them) or a bare byte count.
    pub fn parse(input: &str) -> Result<Self, SizeError> {
        let err = || SizeError {
            input: input.to_string(),
        };
        let s = input.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => KIB,
            "M" | "MB" | "MIB" => MIB,
            "G" | "GB" | "GIB" => GIB,
            "T" | "TB" | "TIB" => TIB,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
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
