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
