//! Token refresh: before expiry, once on 401, rotation, and invalid_grant.

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault, NextAuthorization, RefreshTokens};
use tonic::Code;

use crate::support::*;

async fn upsert(app: &TestApp, sub: &str) -> Result<(), tonic::Status> {
    Upsert::first_calendar(&app.fake, sub).send(&app.client).await
}

async fn status_of(app: &TestApp, sub: &str) -> i32 {
    fetch_grant(&app.client, ACME_KEY, sub).await.expect("grant").status
}

#[tokio::test]
async fn a_fresh_token_is_used_without_refreshing() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    for _ in 0..3 {
        upsert(&app, &grant.sub).await.expect("upsert");
    }
    assert_eq!(app.fake.count(Endpoint::Token), 1, "only the code exchange");
}

/// Waits until the fake has answered `count` token requests (a refresh that
/// runs behind a call ends a little after the call).
async fn token_requests_reach(app: &TestApp, count: usize) {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while app.fake.count(Endpoint::Token) < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} token requests",
            app.fake.count(Endpoint::Token)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(app.fake.count(Endpoint::Token), count, "no more than that");
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire_and_rotation_is_stored() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.fake.set_refresh_tokens(RefreshTokens::Rotate);
    // Twice past the refresh margin: two refreshes in a row, each rotating the
    // refresh token. The fake refuses a reused one, so the second refresh
    // succeeds only if the first rotation was stored.
    for round in 1..=2 {
        app.clock.advance(Duration::from_secs(3600 - 120));
        // Still valid for two minutes: the call does not wait; the refresh runs behind it.
        upsert(&app, &grant.sub).await.expect("upsert inside the margin");
        token_requests_reach(&app, 1 + round).await;
    }
}

/// A token about to expire (under 30 s left) is refreshed before the call uses it.
#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_before_the_call() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.clock.advance(Duration::from_secs(3600 - 10));
    upsert(&app, &grant.sub).await.expect("upsert");
    assert_eq!(
        app.fake.count(Endpoint::Token),
        2,
        "refreshed before the write, not after"
    );
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), 1, "no 401 first");
}

#[tokio::test]
async fn a_refresh_answer_without_a_refresh_token_keeps_the_old_one() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.fake.set_refresh_tokens(RefreshTokens::Omit);
    for round in 1..=2 {
        app.clock.advance(Duration::from_secs(3600 - 120));
        upsert(&app, &grant.sub).await.expect("upsert inside the margin");
        token_requests_reach(&app, 1 + round).await;
    }
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.fake.expire_access_tokens();
    upsert(&app, &grant.sub).await.expect("upsert after 401");
    assert_eq!(app.fake.count(Endpoint::Token), 2);
    assert_eq!(
        app.fake.count(Endpoint::UpsertEvent),
        2,
        "the refused call and its retry"
    );
}

#[tokio::test]
async fn invalid_grant_marks_the_grant_and_later_calls_fail_fast() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    app.fake.revoke_account(&grant.sub);
    app.clock.advance(Duration::from_secs(3600));
    let status = upsert(&app, &grant.sub).await.expect_err("needs reauth");
    assert_status(&status, Code::FailedPrecondition, "GRANT_NEEDS_REAUTH");
    let marked = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(marked.status, pb::GrantStatus::NeedsReauth as i32);
    assert_eq!(marked.status_reason, "INVALID_GRANT", "the user revoked access");

    let calls = app.fake.requests().len();
    let status = upsert(&app, &grant.sub).await.expect_err("still needs reauth");
    assert_status(&status, Code::FailedPrecondition, "GRANT_NEEDS_REAUTH");
    assert_eq!(app.fake.requests().len(), calls, "no call to Cronofy");

    // Connecting the same account again restores the grant under the same sub.
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(grant.sub.clone()),
        ..Default::default()
    });
    let again = app.connect(Some("ada")).await;
    assert_eq!(again.sub, grant.sub);
    assert_eq!(status_of(&app, &grant.sub).await, pb::GrantStatus::Active as i32);
    upsert(&app, &grant.sub).await.expect("works again");
}

/// As Cronofy's example answers, the refresh token is echoed and stays valid:
/// a lost refresh answer then costs nothing — the retry with the stored token
/// succeeds and the grant stays active.
#[tokio::test]
async fn a_lost_refresh_answer_is_harmless_when_cronofy_echoes_the_token() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    app.clock.advance(Duration::from_secs(3600));
    app.fake.inject(Fault::status(Endpoint::Token, 503).after_processing());
    upsert(&app, &grant.sub)
        .await
        .expect("the retry refreshes with the same token");
    assert_eq!(app.fake.count(Endpoint::Token), 3, "exchange, lost refresh, retry");
    assert_eq!(status_of(&app, &grant.sub).await, pb::GrantStatus::Active as i32);
}

/// Cronofy rotates the refresh token but its answer is lost (a 503 after
/// processing); the retry with the stored, now dead, token gets invalid_grant.
/// The grant needs re-authorization either way, but says it was not the user.
#[tokio::test]
async fn a_lost_refresh_answer_is_named_when_cronofy_then_refuses_the_token() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    app.fake.set_refresh_tokens(RefreshTokens::Rotate);
    app.clock.advance(Duration::from_secs(3600));
    app.fake.inject(Fault::status(Endpoint::Token, 503).after_processing());
    let status = upsert(&app, &grant.sub).await.expect_err("the rotated token is lost");
    assert_status(&status, Code::FailedPrecondition, "GRANT_NEEDS_REAUTH");
    assert_eq!(
        app.fake.count(Endpoint::Token),
        3,
        "exchange, lost refresh, refused retry"
    );
    let marked = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(marked.status, pb::GrantStatus::NeedsReauth as i32);
    assert_eq!(marked.status_reason, "REFRESH_ANSWER_LOST");
    // Reconnecting clears the reason with the status.
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(grant.sub.clone()),
        ..Default::default()
    });
    let again = app.connect(Some("ada")).await;
    assert_eq!(
        (again.status, again.status_reason.as_str()),
        (pb::GrantStatus::Active as i32, "")
    );
}

/// A refresh that fails transiently while the access token is still valid
/// does not fail the call, nor delay it: the token is used until it expires,
/// and calls try the refresh again after a pause.
#[tokio::test]
async fn a_failing_refresh_leaves_the_still_valid_token_in_use() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    // Inside the refresh margin (5 min), two minutes before expiry.
    app.clock.advance(Duration::from_secs(3600 - 120));
    app.fake.inject(Fault::status(Endpoint::Token, 502).times(2));
    upsert(&app, &grant.sub)
        .await
        .expect("written with the token that still works");
    token_requests_reach(&app, 3).await; // the refresh behind the call, tried twice
    assert_eq!(app.fake.event_count(&grant.sub), 1);
    assert_eq!(status_of(&app, &grant.sub).await, pb::GrantStatus::Active as i32);
    upsert(&app, &grant.sub).await.expect("still the valid token");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        app.fake.count(Endpoint::Token),
        3,
        "calls leave the grant alone for a while"
    );
    app.clock.advance(Duration::from_secs(31));
    upsert(&app, &grant.sub)
        .await
        .expect("refreshed behind it now that Cronofy answers");
    token_requests_reach(&app, 4).await;
}

#[tokio::test]
async fn a_transient_refresh_failure_keeps_the_grant_active() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.clock.advance(Duration::from_secs(3600));
    app.fake.inject(Fault::status(Endpoint::Token, 502).times(2));
    let status = upsert(&app, &grant.sub).await.expect_err("502 on refresh");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert_eq!(status_of(&app, &grant.sub).await, pb::GrantStatus::Active as i32);
    upsert(&app, &grant.sub).await.expect("recovers");
}

#[tokio::test]
async fn concurrent_calls_on_an_expiring_grant_refresh_once() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.clock.advance(Duration::from_secs(3600));
    app.fake
        .inject(Fault::delay(Endpoint::Token, Duration::from_millis(200)));
    let calls: Vec<_> = (0..50).map(|_| upsert(&app, &grant.sub)).collect();
    for result in futures::future::join_all(calls).await {
        result.expect("upsert");
    }
    assert_eq!(app.fake.count(Endpoint::Token), 2, "one exchange, one refresh");
}

#[tokio::test]
async fn a_caller_giving_up_mid_refresh_leaves_nothing_wedged() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.clock.advance(Duration::from_secs(3600));
    app.fake
        .inject(Fault::delay(Endpoint::Token, Duration::from_millis(600)));
    let mut impatient = app.req(pb::UpsertEventRequest {
        mode: Default::default(),
        user: by_sub(&grant.sub),
        calendar_id: app.fake.calendar_ids(&grant.sub)[0].clone(),
        event: Some(event("evt-1")),
    });
    impatient
        .metadata_mut()
        .insert("grpc-timeout", "100m".parse().expect("header"));
    let status = app.client.clone().upsert_event(impatient).await.expect_err("gave up");
    assert_gave_up(&status);

    // The refresh the caller started carries on without it and is stored; the
    // next caller uses its result instead of refreshing again.
    upsert(&app, &grant.sub).await.expect("next caller");
    upsert(&app, &grant.sub).await.expect("and the one after");
    assert_eq!(app.fake.count(Endpoint::Token), 2, "one exchange, one refresh");
}
