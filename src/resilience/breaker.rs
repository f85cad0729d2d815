//! A circuit breaker per (tenant, data centre): after a run of upstream
//! failures, calls fail fast for a cool-down instead of piling onto a sick
//! Cronofy; then one probe is let through, whose outcome closes or re-opens it.
//!
//! The probe holds a lease of one cool-down: a probe that never reports
//! (its caller gave up, the budget refused it) cannot keep the breaker
//! half-open for ever. Its [`Resilience`](super::Resilience) call also hands
//! the probe back at once when it is dropped without an outcome.

pub use crate::config::BreakerPolicy;
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

/// What [`Breaker::allow`] let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// An ordinary call: the breaker is closed.
    Call,
    /// The one probe of a half-open breaker: its outcome must be recorded, or
    /// the probe released with [`Breaker::release_probe`].
    Probe,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    open_until: Instant,
    /// While half-open: when the probe's lease runs out and another may probe.
    probe_until: Instant,
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
                probe_until: Instant::now(),
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
    pub fn allow(&self) -> Result<Admission, Duration> {
        if self.quiet.load(Ordering::Acquire) {
            return Ok(Admission::Call);
        }
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.state {
            BreakerState::Closed => Ok(Admission::Call),
            BreakerState::Open if now >= inner.open_until => {
                inner.state = BreakerState::HalfOpen;
                inner.probe_until = now + self.policy.cool_down;
                METRICS.breaker(&self.name, 2);
                info!(breaker = %self.name, state = "half_open", "circuit breaker lets a probe through");
                Ok(Admission::Probe)
            }
            BreakerState::Open => Err(inner.open_until - now),
            // The last probe never reported within its lease: this call probes instead.
            BreakerState::HalfOpen if now >= inner.probe_until => {
                inner.probe_until = now + self.policy.cool_down;
                warn!(breaker = %self.name, "the last probe never reported; letting another through");
                Ok(Admission::Probe)
            }
            // The probe is out; the others wait for its verdict.
            BreakerState::HalfOpen => Err((inner.probe_until - now).min(Duration::from_secs(1))),
        }
    }

    /// The probe ended without an outcome (its caller gave up, or the budget
    /// refused it): the next call may probe at once.
    pub fn release_probe(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen {
            let now = Instant::now();
            inner.probe_until = now;
            info!(breaker = %self.name, "the probe ended without an answer; the next call probes");
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
        assert_eq!(b.allow(), Ok(Admission::Probe), "the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow().is_err(), "only one probe at a time");
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens it");

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.allow(), Ok(Admission::Probe));
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.allow(), Ok(Admission::Call));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_loses_its_lease_after_one_cool_down() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.allow(), Ok(Admission::Probe), "a probe that will never report");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.allow(), Err(Duration::from_secs(1)), "its lease still holds");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.allow(), Ok(Admission::Probe), "the lease ran out: another probes");
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_lets_the_next_call_probe_at_once() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.allow(), Ok(Admission::Probe));
        b.release_probe();
        assert_eq!(b.allow(), Ok(Admission::Probe));
    }
}
