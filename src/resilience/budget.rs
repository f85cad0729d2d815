//! A tenant application's request budget: Cronofy allows each application 50
//! requests a second and 500 a minute by default; going over earns 429s for
//! every tenant user at once. Two token buckets ([`BucketShape`]: a tenth of
//! the limit as burst, the rest refilled evenly, so no window of either length
//! ever carries more than the limit), both of which a request must pass.
//! Token calls count too. Time is tokio's, so tests pause it.

use crate::config::BucketShape;
pub use crate::config::{RateLimit, Reserve};

/// Leaves nothing behind.
pub const NO_RESERVE: Reserve = [0, 0];
use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    refill_per_sec: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket of `shape`.
    fn new(shape: BucketShape, now: Instant) -> Bucket {
        Bucket {
            capacity: f64::from(shape.capacity),
            refill_per_sec: f64::from(shape.refill) / shape.window.as_secs_f64(),
            tokens: f64::from(shape.capacity),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.updated = now;
    }

    /// How long until `need` tokens are available (zero when they are).
    fn wait(&self, need: f64) -> Duration {
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.tokens) / self.refill_per_sec)
        }
    }
}

/// One application's budget.
#[derive(Debug)]
pub struct RateBudget {
    buckets: Mutex<[Bucket; 2]>,
}

impl RateBudget {
    /// A full budget for `limit`.
    pub fn new(limit: RateLimit) -> RateBudget {
        let now = Instant::now();
        RateBudget {
            buckets: Mutex::new(limit.buckets().map(|shape| Bucket::new(shape, now))),
        }
    }

    /// Takes one request from both buckets, or says how long until it could.
    #[cfg(test)]
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_take(1, NO_RESERVE)
    }

    /// Takes `cost` requests from both buckets if each keeps at least its
    /// `keep` tokens afterwards, or says how long until it could. A cost
    /// larger than a bucket's capacity less its `keep` never fits: callers
    /// size their takes with [`RateLimit::largest_take`].
    pub fn try_take(&self, cost: u32, keep: Reserve) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for bucket in buckets.iter_mut() {
            bucket.refill(now);
        }
        let wait = buckets
            .iter()
            .zip(keep)
            .map(|(bucket, keep)| bucket.wait(f64::from(cost) + f64::from(keep)))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            return Err(wait);
        }
        for bucket in buckets.iter_mut() {
            bucket.tokens -= f64::from(cost);
        }
        Ok(())
    }

    /// Waits for budget until `give_up_at`; past it, returns how long the caller
    /// would have had to wait (for RetryInfo).
    pub async fn acquire(&self, give_up_at: Instant) -> Result<(), Duration> {
        self.take(1, NO_RESERVE, give_up_at).await
    }

    /// Waits until `cost` requests fit, leaving `keep` (see [`RateBudget::try_take`]),
    /// until `give_up_at`.
    pub async fn take(&self, cost: u32, keep: Reserve, give_up_at: Instant) -> Result<(), Duration> {
        loop {
            match self.try_take(cost, keep) {
                Ok(()) => return Ok(()),
                Err(wait) if Instant::now() + wait <= give_up_at => tokio::time::sleep(wait).await,
                Err(wait) => return Err(wait),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake_cronofy::busiest_window;

    fn limit(per_second: u32, per_minute: u32) -> RateLimit {
        RateLimit { per_second, per_minute }
    }

    /// Takes every request the budget allows, checking every millisecond for `duration`.
    async fn greedy(budget: &RateBudget, duration: Duration) -> Vec<Instant> {
        let end = Instant::now() + duration;
        let mut granted = Vec::new();
        while Instant::now() < end {
            while budget.try_acquire().is_ok() {
                granted.push(Instant::now());
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        granted
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_a_tenth_then_a_steady_refill() {
        let budget = RateBudget::new(limit(50, 6000));
        for _ in 0..5 {
            assert!(budget.try_acquire().is_ok());
        }
        let wait = budget.try_acquire().expect_err("burst spent");
        assert_eq!(wait.as_micros(), 22_222, "45 a second refill the rest");
        tokio::time::advance(wait).await;
        assert!(budget.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn no_second_ever_carries_more_than_the_limit() {
        let budget = RateBudget::new(limit(50, 6000));
        let granted = greedy(&budget, Duration::from_secs(5)).await;
        let busiest = busiest_window(&granted, Duration::from_secs(1));
        assert!((45..=50).contains(&busiest), "busiest second: {busiest}");
        assert!(
            granted.len() >= 5 + 45 * 5 - 1,
            "90 % of the limit, sustained: {}",
            granted.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_minute_ever_carries_more_than_the_minute_limit() {
        let budget = RateBudget::new(limit(50, 500));
        let granted = greedy(&budget, Duration::from_secs(150)).await;
        assert!(busiest_window(&granted, Duration::from_secs(60)) <= 500);
        assert!(busiest_window(&granted, Duration::from_secs(1)) <= 50);
        assert!(granted.len() >= 50 + 450 * 2, "{}", granted.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_take_of_several_leaves_the_reserve_and_never_overruns_a_window() {
        let limit = limit(50, 500);
        let keep = limit.queue_reserve();
        assert_eq!(keep, [0, 25], "half the minute's burst of 50");
        assert_eq!(limit.largest_take(keep), 5, "the second's burst");
        let budget = RateBudget::new(limit);
        let end = Instant::now() + Duration::from_secs(120);
        let mut granted = Vec::new();
        while Instant::now() < end {
            if budget.try_take(5, keep).is_ok() {
                granted.extend([Instant::now(); 5]);
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(busiest_window(&granted, Duration::from_secs(60)) <= 500);
        assert!(busiest_window(&granted, Duration::from_secs(1)) <= 50);
        // The reserve is left: 25 callers within a second (25/s, under the
        // second's refill) find budget at once, although the minute refills only 7.5 a second.
        for n in 0..25 {
            assert!(budget.try_acquire().is_ok(), "caller {n} found the reserve");
            tokio::time::advance(Duration::from_millis(40)).await;
        }
        // Sustained, the takes get what the minute refills (450 in 60 s), less the reserve kept.
        assert!(granted.len() >= 25 + 450 * 2 - 30, "{}", granted.len());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_within_the_limit_and_refuses_beyond_it() {
        let budget = RateBudget::new(limit(1, 500));
        budget.try_acquire().expect("first");
        let started = Instant::now();
        budget
            .acquire(started + Duration::from_secs(2))
            .await
            .expect("waits one second");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let refused = budget.acquire(Instant::now() + Duration::from_millis(100)).await;
        assert_eq!(refused, Err(Duration::from_secs(1)));
    }
}
