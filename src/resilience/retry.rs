//! Retry timing: capped exponential backoff with full jitter, honouring
//! Retry-After, never past the caller's deadline nor the configured ceiling.

pub use crate::config::RetryPolicy;
use std::time::Duration;

use rand::Rng;

impl RetryPolicy {
    /// The capped exponential backoff after `attempt` (1-based) failed: `min(max, base·2^(attempt-1))`.
    pub fn backoff_cap(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The wait before the next attempt: full jitter over the capped backoff
    /// (AWS's "full jitter"), but never shorter than Cronofy's Retry-After —
    /// itself taken as at most the retry ceiling, whatever Cronofy sent.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let retry_after = retry_after.map(|after| after.min(self.ceiling));
        let cap = self.backoff_cap(attempt);
        let jittered = if cap.is_zero() {
            cap
        } else {
            rng.random_range(Duration::ZERO..=cap)
        };
        retry_after.map_or(jittered, |after| after.max(jittered))
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ceiling: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let caps: Vec<u128> = (1..=6).map(|a| p.backoff_cap(a).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff_cap(u32::MAX), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn full_jitter_stays_within_the_cap_and_spreads() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(3, None, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "delays are spread, not in lockstep");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert!(p.delay(1, Some(Duration::from_secs(3)), &mut rng) >= Duration::from_secs(3));
        }
    }
}
