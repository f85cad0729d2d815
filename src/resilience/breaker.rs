//! A circuit breaker per (tenant, data centre): after a run of upstream
//! failures, calls fail fast for a cool-down instead of piling onto a sick
//! Cronofy; then one probe is let through, whose outcome closes or re-opens it.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tracing::{info, warn};

use crate::telemetry::metrics::METRICS;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}

/// The breaker's state, as shown in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail fast until the cool-down ends.
    Open,
    /// One probe is in flight; others fail fast.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    open_until: Instant,
}

/// One breaker.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
    /// Closed with no failures counted: the common case, answered without the lock.
    quiet: AtomicBool,
}

impl Breaker {
    /// A closed breaker; `name` identifies it in logs.
    pub fn new(name: String, policy: BreakerPolicy) -> Breaker {
        METRICS.breaker(&name, 0);
        Breaker {
            name,
            policy,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                open_until: Instant::now(),
            }),
            quiet: AtomicBool::new(true),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// May a call go out now? Err carries how long until the breaker will let one through.
    pub fn allow(&self) -> Result<(), Duration> {
        if self.quiet.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open if now >= inner.open_until => {
                inner.state = BreakerState::HalfOpen;
                METRICS.breaker(&self.name, 2);
                info!(breaker = %self.name, state = "half_open", "circuit breaker lets a probe through");
                Ok(())
            }
            BreakerState::Open => Err(inner.open_until - now),
            // The probe is out; the others wait for its verdict.
            BreakerState::HalfOpen => Err(self.policy.cool_down.min(Duration::from_secs(1))),
        }
    }

    /// Records a call's outcome: `true` when Cronofy answered (even with a 4xx).
    pub fn record(&self, healthy: bool) {
        if healthy && self.quiet.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.lock();
        self.quiet.store(healthy, Ordering::Release);
        if healthy {
            if inner.state != BreakerState::Closed {
                info!(breaker = %self.name, state = "closed", "circuit breaker closed: Cronofy answers again");
                METRICS.breaker(&self.name, 0);
            }
            inner.state = BreakerState::Closed;
            inner.failures = 0;
            return;
        }
        inner.failures = inner.failures.saturating_add(1);
        let trips = inner.state == BreakerState::HalfOpen || inner.failures >= self.policy.failure_threshold;
        if trips && inner.state != BreakerState::Open {
            inner.state = BreakerState::Open;
            inner.open_until = Instant::now() + self.policy.cool_down;
            METRICS.breaker(&self.name, 1);
            warn!(
                breaker = %self.name,
                state = "open",
                failures = inner.failures,
                cool_down = ?self.policy.cool_down,
                "circuit breaker opened: failing fast"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "acme/us".into(),
            BreakerPolicy {
                failure_threshold: 3,
                cool_down: Duration::from_secs(10),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_fails_fast() {
        let b = breaker();
        for _ in 0..2 {
            b.record(false);
            assert_eq!(b.state(), BreakerState::Closed);
        }
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.allow(), Err(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker();
        b.record(false);
        b.record(false);
        b.record(true);
        b.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_one_probe_decides() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.allow(), Ok(()), "the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow().is_err(), "only one probe at a time");
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens it");

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.allow(), Ok(()));
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.allow(), Ok(()));
    }
}
