//! Exchanges that outlive their caller: a caller giving up mid-exchange loses nothing, a retry joins the exchange in flight, and a state issued for another user stays usable.

use super::*;

/// calgate waiting up to 30 s for each Cronofy answer: a slow token endpoint
/// outlasts the caller's deadline, never calgate's own timeout (no retry).
async fn spawn_patient_app() -> TestApp {
    spawn_app_edited(|s| {
        s.upstream.request_timeout = Duration::from_secs(30);
        s.upstream.retry.ceiling = Duration::from_secs(60);
    })
    .await
}

/// ExchangeCode whose caller gives up after `timeout` (see `assert_gave_up`).
async fn exchange_within(app: &TestApp, code: &str, state: &str, timeout: &str) {
    let mut request = app.req(exchange(code, ACME_REDIRECT, state));
    request
        .metadata_mut()
        .insert("grpc-timeout", timeout.parse().expect("header"));
    let status = app
        .client
        .clone()
        .exchange_code(request)
        .await
        .expect_err("the caller gives up first");
    assert_gave_up(&status);
}

/// The token endpoint answers after the caller's deadline: the caller gets
/// DEADLINE_EXCEEDED, the grant is stored anyway, and a retry with the same
/// code and state returns it instead of STATE_INVALID.
#[tokio::test]
async fn a_caller_that_gives_up_mid_exchange_loses_nothing() {
    let app = spawn_patient_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, Some("ada")).await;
    app.fake.inject(Fault::delay(Endpoint::Token, Duration::from_secs(2)));
    exchange_within(&app, &code, &state, "300m").await;

    // The exchange goes on without its caller; poll until the grant is stored.
    let by_ref = pb::GetGrantRequest {
        user: Some(pb::get_grant_request::User::UserRef("ada".into())),
    };
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    let stored = loop {
        match app.client.clone().get_grant(app.req(by_ref.clone())).await {
            Ok(found) => break found.into_inner().grant.expect("grant"),
            Err(status) => {
                assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");
                assert!(tokio::time::Instant::now() < give_up, "the grant was never stored");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(stored.status, pb::GrantStatus::Active as i32);

    let retried = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect("the retry is given the stored grant")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(retried.sub, stored.sub);
    assert_eq!(app.fake.count(Endpoint::Token), 1, "the code was exchanged once");

    // Another code with that state is still refused.
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange("another-code", ACME_REDIRECT, &state)))
        .await
        .expect_err("a spent state");
    assert_status(&status, Code::InvalidArgument, "STATE_INVALID");
}

/// A retry that arrives while the abandoned exchange is still at Cronofy
/// joins it: one token call, both answers name the same grant.
#[tokio::test]
async fn a_retry_joins_the_exchange_in_flight() {
    let app = spawn_patient_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, Some("ada")).await;
    app.fake.inject(Fault::delay(Endpoint::Token, Duration::from_secs(2)));
    exchange_within(&app, &code, &state, "300m").await;
    let grant = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect("joined the exchange in flight")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(grant.user_ref, "ada");
    assert_eq!(app.fake.count(Endpoint::Token), 1, "the code was exchanged once");
}

/// `expected_user_ref` binds the redirect to the browser session's user: a
/// state issued for someone else (or for nobody) is refused before Cronofy is
/// asked, and stays usable by the session it was issued for.
#[tokio::test]
async fn a_state_for_another_user_is_refused_and_stays_usable() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, Some("ada")).await;
    for expected in ["grace", "ad", "ada "] {
        let mut request = exchange(&code, ACME_REDIRECT, &state);
        request.expected_user_ref = Some(expected.into());
        let status = app
            .client
            .clone()
            .exchange_code(app.req(request))
            .await
            .expect_err("another user's state");
        assert_status(&status, Code::FailedPrecondition, "STATE_USER_MISMATCH");
    }
    let (anonymous_code, anonymous_state) = app.consent(ACME_KEY, ACME_REDIRECT, None).await;
    let mut request = exchange(&anonymous_code, ACME_REDIRECT, &anonymous_state);
    request.expected_user_ref = Some("ada".into());
    let status = app
        .client
        .clone()
        .exchange_code(app.req(request))
        .await
        .expect_err("a state issued for nobody");
    assert_status(&status, Code::FailedPrecondition, "STATE_USER_MISMATCH");
    assert_eq!(app.fake.count(Endpoint::Token), 0, "Cronofy was never asked");

    let mut request = exchange(&code, ACME_REDIRECT, &state);
    request.expected_user_ref = Some("ada".into());
    let grant = app
        .client
        .clone()
        .exchange_code(app.req(request))
        .await
        .expect("the state still works for its own user")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(grant.user_ref, "ada");
}
