//! A tenant application's request budget: Cronofy allows each application 50
//! requests a second and 500 a minute by default; going over earns 429s for
//! every tenant user at once. Two token buckets ([`BucketShape`]: a tenth of
//! the limit as burst, the rest refilled evenly, so no window of either length
//! ever carries more than the limit), both of which a request must pass.
//! Token calls count too. Time is tokio's, so tests pause it.

use crate::config::BucketShape;
pub use crate::config::RateLimit;
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

    /// How long until one token is available (zero when one is).
    fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.refill_per_sec)
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
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for bucket in buckets.iter_mut() {
            bucket.refill(now);
        }
        let wait = buckets.iter().map(Bucket::wait).max().unwrap_or_default();
        if !wait.is_zero() {
            return Err(wait);
        }
        for bucket in buckets.iter_mut() {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }

    /// Waits for budget until `give_up_at`; past it, returns how long the caller
    /// would have had to wait (for RetryInfo).
    pub async fn acquire(&self, give_up_at: Instant) -> Result<(), Duration> {
        loop {
            match self.try_acquire() {
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
