use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

fn resilience(max_attempts: u32) -> Resilience {
    Resilience::new(
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ceiling: Duration::from_secs(30),
        },
        BreakerPolicy {
            failure_threshold: 3,
            cool_down: Duration::from_secs(30),
        },
        [TenantLimits {
            tenant: "acme".into(),
            application: TenantLimits::application_key("acme-client", "uk"),
            rate_limit: RateLimit::default(),
            background_percent: 20,
            count_batch_entries: true,
        }],
    )
}

async fn failing(calls: &AtomicU32, error: fn() -> CronofyError, succeed_on: u32) -> Result<u32, CronofyError> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    if n >= succeed_on { Ok(n) } else { Err(error()) }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_success() {
    let r = resilience(4);
    let calls = AtomicU32::new(0);
    let result = r
        .call("acme", None, || {
            failing(&calls, || CronofyError::Server { status: 503 }, 3)
        })
        .await;
    assert!(matches!(result, Ok(3)));
}

#[tokio::test(start_paused = true)]
async fn other_4xx_are_never_retried() {
    let r = resilience(4);
    let calls = AtomicU32::new(0);
    let result = r
        .call("acme", None, || failing(&calls, || CronofyError::Forbidden, 9))
        .await;
    assert!(matches!(result, Err(GuardError::Upstream(CronofyError::Forbidden))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let r = resilience(4);
    let calls = AtomicU32::new(0);
    let started = Instant::now();
    let result = r
        .call("acme", None, || {
            failing(
                &calls,
                || CronofyError::RateLimited {
                    retry_after: Some(Duration::from_secs(5)),
                },
                2,
            )
        })
        .await;
    assert!(matches!(result, Ok(2)));
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn no_retry_outlives_the_deadline() {
    let r = resilience(10);
    let calls = AtomicU32::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let result = r
        .call("acme", Some(deadline), || {
            failing(
                &calls,
                || CronofyError::RateLimited {
                    retry_after: Some(Duration::from_secs(5)),
                },
                9,
            )
        })
        .await;
    assert!(matches!(
        result,
        Err(GuardError::Upstream(CronofyError::RateLimited { .. }))
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a 5 s Retry-After does not fit a 3 s deadline"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Three unreachable answers: the threshold of `resilience(…)`'s breaker.
async fn open_breaker(r: &Resilience, calls: &AtomicU32) {
    for _ in 0..3 {
        let _ = r
            .call("acme", None, || {
                failing(calls, || CronofyError::Transport { kind: "connect" }, 99)
            })
            .await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_and_then_fails_fast_without_calling() {
    let r = resilience(1);
    let calls = AtomicU32::new(0);
    open_breaker(&r, &calls).await;
    assert_eq!(r.breaker_state("acme"), Some(BreakerState::Open));
    let result = r
        .call("acme", None, || failing(&calls, || CronofyError::Forbidden, 1))
        .await;
    assert!(matches!(result, Err(GuardError::CircuitOpen { .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 3, "no call while open");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(
        r.call("acme", None, || failing(&calls, || CronofyError::Forbidden, 1))
            .await
            .is_ok()
    );
    assert_eq!(r.breaker_state("acme"), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_caller_gives_up_does_not_wedge_the_breaker() {
    let r = resilience(1);
    let calls = AtomicU32::new(0);
    open_breaker(&r, &calls).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    // The probe's caller gives up while Cronofy is silent.
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        r.call("acme", None, std::future::pending::<Result<u32, CronofyError>>),
    )
    .await;
    assert!(gave_up.is_err());
    assert!(
        r.call("acme", None, || failing(&calls, || CronofyError::Forbidden, 1))
            .await
            .is_ok(),
        "the next call probes at once"
    );
    assert_eq!(r.breaker_state("acme"), Some(BreakerState::Closed));
}

/// Background work takes at most its share (20 % of 50/s and 500/min),
/// and what it takes counts against the whole budget.
#[tokio::test(start_paused = true)]
async fn background_work_stays_within_its_share_of_the_budget() {
    let r = resilience(1);
    let mut admitted = 0;
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        while r.admit_background("acme", Instant::now()).await.is_ok() {
            admitted += 1;
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    // 100 a minute sustained (90 % refill plus the 10 % burst).
    assert!((180..=200).contains(&admitted), "{admitted} in two minutes");
    // The whole budget paid for them: callers have the rest, not more.
    let mut callers = 0;
    while r.admit("acme", Instant::now()).await.is_ok() {
        callers += 1;
    }
    assert!(callers < 50, "{callers}");
}

#[tokio::test(start_paused = true)]
async fn background_work_yields_to_waiting_callers_and_pauses_after_a_429() {
    let r = Arc::new(resilience(1));
    // Callers spend the second's budget; one more waits for the next second.
    while r.admit("acme", Instant::now()).await.is_ok() {}
    let waiting = {
        let r = r.clone();
        tokio::spawn(async move { r.admit("acme", Instant::now() + Duration::from_secs(5)).await.is_ok() })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        r.admit_background("acme", Instant::now()).await.err(),
        Some(BackgroundRefusal::CallersWaiting)
    );
    assert!(waiting.await.expect("caller"), "the caller got its budget");
    tokio::time::advance(Duration::from_secs(120)).await;
    assert!(
        r.admit_background("acme", Instant::now()).await.is_ok(),
        "nobody waits now"
    );
    r.pause_background("acme", Duration::from_secs(60));
    assert!(matches!(
        r.admit_background("acme", Instant::now()).await.err(),
        Some(BackgroundRefusal::Paused(_))
    ));
    assert!(r.admit("acme", Instant::now()).await.is_ok(), "callers are not paused");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(r.admit_background("acme", Instant::now()).await.is_ok());
    // Waiting for the share is allowed: 12 more take the minute's burst and
    // then its refill (1.5 a second) for about two seconds.
    let started = Instant::now();
    for _ in 0..12 {
        r.admit_background("acme", started + Duration::from_secs(5))
            .await
            .expect("waits for its share");
    }
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(5)).contains(&started.elapsed()),
        "{:?}",
        started.elapsed()
    );
}
