//! The policies of calgate's guards towards Cronofy, as configured. Plain
//! data: their behaviour lives in `crate::resilience`, which depends on
//! config, never the other way round.

use std::time::Duration;

/// Requests allowed per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second.
    pub per_second: u32,
    /// Requests per minute.
    pub per_minute: u32,
}

/// Tokens a taker must leave in each bucket of a budget (per second, per minute).
pub type Reserve = [u32; 2];

impl RateLimit {
    /// The two token buckets that enforce this limit: per second and per minute.
    pub fn buckets(&self) -> [BucketShape; 2] {
        [
            BucketShape::within(self.per_second, Duration::from_secs(1)),
            BucketShape::within(self.per_minute, Duration::from_secs(60)),
        ]
    }

    /// What queued deliveries leave callers: half the minute's burst (25
    /// requests at Cronofy's default), so calls arriving meanwhile find
    /// budget at once. The second's bucket refills within milliseconds and
    /// keeps nothing back.
    pub fn queue_reserve(&self) -> Reserve {
        let [_, minute] = self.buckets();
        [0, minute.capacity / 2]
    }

    /// The most requests one take may count while leaving `keep`: a bucket
    /// never holds more than its capacity.
    pub fn largest_take(&self, keep: Reserve) -> u32 {
        self.buckets()
            .iter()
            .zip(keep)
            .map(|(bucket, keep)| bucket.capacity.saturating_sub(keep))
            .min()
            .unwrap_or(1)
            .max(1)
    }
}

/// A token bucket that lets at most `limit` requests into any window of
/// `window`'s length, wherever the window falls (Cronofy does not say how it
/// counts).
///
/// A bucket that starts full with N tokens and refills N per window lets up
/// to 2N through in one window (the burst, then the refill). This one holds a
/// tenth of N and refills the other nine tenths evenly over the window, so no
/// window ever carries more than N: bursts of 10 % and a sustained 90 %. (A
/// limit of 1 refills 1 per window: 2 may fall in one window.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketShape {
    /// Tokens a full bucket holds: the largest burst.
    pub capacity: u32,
    /// Tokens added per window, evenly.
    pub refill: u32,
    /// The window's length.
    pub window: Duration,
}

impl BucketShape {
    /// The bucket for at most `limit` requests in any `window`.
    pub fn within(limit: u32, window: Duration) -> BucketShape {
        let limit = limit.max(1);
        let capacity = (limit / 10).max(1);
        let refill = if limit > capacity { limit - capacity } else { limit };
        BucketShape {
            capacity,
            refill,
            window,
        }
    }

    /// Time between two tokens, in milliseconds.
    pub fn interval_ms(&self) -> f64 {
        self.window.as_secs_f64() * 1000.0 / f64::from(self.refill)
    }
}

impl Default for RateLimit {
    /// Cronofy's documented default per application.
    fn default() -> Self {
        RateLimit {
            per_second: 50,
            per_minute: 500,
        }
    }
}

/// How a call's transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt (before jitter).
    pub base_delay: Duration,
    /// Largest backoff between two attempts (before jitter).
    pub max_delay: Duration,
    /// Longest a call may spend on retries, whatever the caller's deadline.
    pub ceiling: Duration,
}

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}
