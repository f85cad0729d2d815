//! Retries, the per-tenant request budget and the circuit breaker, end to end.

use std::time::Duration;

use calgate::config::RateLimit;
use fake_cronofy::{Endpoint, Fault};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::support::*;

async fn upsert(app: &TestApp, sub: &str, timeout: Option<&str>) -> Result<(), Status> {
    Upsert::first_calendar(&app.fake, sub)
        .timeout(timeout)
        .send(&app.client)
        .await
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_never_seen_by_the_caller() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    for status in [503, 500, 429] {
        app.fake.inject(Fault::status(Endpoint::UpsertEvent, status));
        upsert(&app, &grant.sub, None).await.expect("retried to success");
    }
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), 6);
    // A 4xx other than 429 is never retried.
    app.fake.inject(Fault::status(Endpoint::UpsertEvent, 403));
    upsert(&app, &grant.sub, None).await.expect_err("403");
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), 7);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.fake
        .inject(Fault::status(Endpoint::UpsertEvent, 429).retry_after("1"));
    upsert(&app, &grant.sub, None).await.expect("succeeds after waiting");
    // What Cronofy saw, not how long the test took: the retry came a second later.
    let arrivals: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::UpsertEvent)
        .map(|r| r.at)
        .collect();
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "waited for Retry-After"
    );
}

#[tokio::test]
async fn a_retry_that_would_outlive_the_deadline_is_not_made() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.fake
        .inject(Fault::status(Endpoint::UpsertEvent, 429).retry_after("20"));
    let status = upsert(&app, &grant.sub, Some("5S"))
        .await
        .expect_err("no time to retry");
    // Answered at once with Cronofy's refusal: waiting for the deadline would be DEADLINE_EXCEEDED.
    assert_status(&status, Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED");
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), 1);
}

/// The breaker's cool-down in these tests: long enough that a loaded machine
/// cannot see it end between two steps that expect it open.
const COOL_DOWN: Duration = Duration::from_secs(2);

async fn spawn_with_breaker() -> TestApp {
    spawn_app_edited(|s| {
        s.upstream.breaker.failure_threshold = 2;
        s.upstream.breaker.cool_down = COOL_DOWN;
    })
    .await
}

/// Two 503s open the breaker; the next call fails fast without reaching Cronofy.
async fn open_breaker(app: &TestApp, sub: &str) {
    app.fake.inject(Fault::status(Endpoint::UpsertEvent, 503).times(2));
    let status = upsert(app, sub, None).await.expect_err("two 503s");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    let calls = app.fake.count(Endpoint::UpsertEvent);
    let status = upsert(app, sub, None).await.expect_err("open: fails fast");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    let retry_delay = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("says when to come back");
    assert!(
        retry_delay > Duration::ZERO && retry_delay <= COOL_DOWN,
        "come back within the cool-down: {retry_delay:?}"
    );
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), calls, "no call while open");
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_recovers() {
    let app = spawn_with_breaker().await;
    let grant = app.connect(None).await;
    open_breaker(&app, &grant.sub).await;
    // Waiting past the cool-down is safe however slow the machine: it only ends.
    tokio::time::sleep(COOL_DOWN).await;
    upsert(&app, &grant.sub, None)
        .await
        .expect("the probe succeeds and closes it");
    upsert(&app, &grant.sub, None).await.expect("closed");
}

/// The probe's caller gives up (its deadline passes while Cronofy is slow):
/// the breaker does not stay half-open; once Cronofy is healthy, calls succeed
/// again within the cool-down and a few seconds.
#[tokio::test]
async fn a_probe_whose_caller_gives_up_does_not_wedge_the_breaker() {
    let app = spawn_with_breaker().await;
    let grant = app.connect(None).await;
    open_breaker(&app, &grant.sub).await;
    tokio::time::sleep(COOL_DOWN).await;
    app.fake
        .inject(Fault::delay(Endpoint::UpsertEvent, Duration::from_secs(3)));
    let status = upsert(&app, &grant.sub, Some("300m"))
        .await
        .expect_err("the probe's caller gives up");
    assert_gave_up(&status);

    // Cronofy is healthy again (the delay fault was for one request).
    let recovered_by = tokio::time::Instant::now() + COOL_DOWN + Duration::from_secs(3);
    loop {
        match upsert(&app, &grant.sub, None).await {
            Ok(()) => break,
            Err(status) => {
                assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
                assert!(
                    tokio::time::Instant::now() < recovered_by,
                    "the breaker stayed shut with Cronofy healthy"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A call that cannot get budget before its deadline is refused at once,
/// before anything is sent. One request a minute: the token call spent it,
/// and no machine is slow enough for the minute to refill meanwhile.
#[tokio::test]
async fn the_tenant_budget_refuses_what_cannot_wait_within_the_deadline() {
    let app = spawn_app_edited(|s| {
        s.tenants[0].rate_limit = RateLimit {
            per_second: 100,
            per_minute: 1,
        };
    })
    .await;
    let grant = app.connect(None).await; // spends the minute's only request (the token call)
    let status = upsert(&app, &grant.sub, Some("5S"))
        .await
        .expect_err("no budget in time");
    assert_status(&status, Code::ResourceExhausted, "RATE_BUDGET_EXHAUSTED");
    let wait = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
    assert!(
        wait.is_some_and(|w| w > Duration::from_secs(5) && w <= Duration::from_secs(60)),
        "told to come back when the minute has room: {wait:?}"
    );
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), 0, "nothing sent over budget");
    // The other tenant's budget is its own.
    let globex = app
        .connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, None)
        .await
        .expect("globex is not throttled by acme");
    assert!(!globex.sub.is_empty());
}

/// A call that can get budget within its deadline waits for it: at one
/// request a second, the write reaches Cronofy a good while after the token
/// call (measured where Cronofy would see it, not on the test's clock).
#[tokio::test]
async fn the_tenant_budget_makes_callers_wait_within_their_deadline() {
    let app = spawn_app_edited(|s| {
        s.tenants[0].rate_limit = RateLimit {
            per_second: 1,
            per_minute: 100,
        };
    })
    .await;
    let grant = app.connect(None).await;
    upsert(&app, &grant.sub, None).await.expect("waits for budget");
    let at = |endpoint: Endpoint| {
        app.fake
            .requests()
            .into_iter()
            .rfind(|r| r.endpoint == endpoint)
            .map(|r| r.at)
            .expect("a request")
    };
    assert!(
        at(Endpoint::UpsertEvent) - at(Endpoint::Token) >= Duration::from_millis(500),
        "the write waited for the second's budget"
    );
}
