//! Seeded fault injection and latency, so that a client's retry and
//! "outcome unknown" paths can be exercised reproducibly.
//!
//! Faults and latency draw from separate generators seeded from the same
//! seed, so turning latency on does not change which requests fail.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A failure injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 before the command runs (nothing happened).
    RateLimited,
    /// 500 before the command runs (nothing happened).
    Internal,
    /// 504 after the command took effect.
    TimeoutAfterEffect,
    /// The connection is dropped after the command took effect.
    DropAfterEffect,
}

const ALL: [Fault; 4] = [
    Fault::RateLimited,
    Fault::Internal,
    Fault::TimeoutAfterEffect,
    Fault::DropAfterEffect,
];

/// Draws faults and latencies.
#[derive(Debug)]
pub struct FaultInjector {
    rate: f64,
    latency: Duration,
    faults: StdRng,
    jitter: StdRng,
}

impl FaultInjector {
    /// `rate`: probability of a fault per authenticated request;
    /// `latency`: mean added latency (±50% jitter).
    pub fn new(rate: f64, latency: Duration, seed: u64) -> Self {
        FaultInjector {
            rate: rate.clamp(0.0, 1.0),
            latency,
            faults: StdRng::seed_from_u64(seed),
            jitter: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
        }
    }

    /// The fault for the next request, if any (uniform among the kinds).
    pub fn next_fault(&mut self) -> Option<Fault> {
        if self.rate <= 0.0 {
            return None;
        }
        let roll: f64 = self.faults.random();
        let pick = self.faults.random_range(0..ALL.len());
        (roll < self.rate).then_some(ALL[pick])
    }

    /// The latency for the next request: the mean ±50%.
    pub fn next_latency(&mut self) -> Duration {
        if self.latency.is_zero() {
            return Duration::ZERO;
        }
        let factor: f64 = self.jitter.random_range(0.5..=1.5);
        self.latency.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_bounded() {
        let draw = |seed| {
            let mut f = FaultInjector::new(0.5, Duration::from_millis(100), seed);
            (0..50)
                .map(|_| (f.next_fault(), f.next_latency()))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert!(a.iter().any(|(f, _)| f.is_some()) && a.iter().any(|(f, _)| f.is_none()));
        assert!(
            a.iter()
                .all(|(_, l)| *l >= Duration::from_millis(50) && *l <= Duration::from_millis(150))
        );
        let mut none = FaultInjector::new(0.0, Duration::ZERO, 1);
        assert_eq!(none.next_fault(), None);
        assert_eq!(none.next_latency(), Duration::ZERO);
    }
}
