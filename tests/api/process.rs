//! The real `calgate` binary: graceful shutdown on SIGTERM, and no secret in
//! its debug logs.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use calgate::grpc::pb::{self};
use fake_cronofy::{Endpoint, Fault, RefreshTokens};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_exits_zero() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let mut binary = start_binary(&fake, &work).await;
    let grant = binary.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    fake.inject(Fault::delay(Endpoint::UpsertEvent, Duration::from_millis(1500)));
    let in_flight = {
        let client = binary.client.clone();
        let sub = grant.sub.clone();
        let calendar = calendar.clone();
        tokio::spawn(async move { Binary::upsert_with(client, &sub, &calendar).await })
    };
    // The call is in flight (at the fake, which stalls) when SIGTERM comes.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    while fake.count(Endpoint::UpsertEvent) == 0 {
        assert!(tokio::time::Instant::now() < give_up, "the call never reached the fake");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    binary.sigterm();
    in_flight.await.expect("task").expect("the in-flight call finishes");
    assert_eq!(binary.exit_code().await, Some(0));
    assert_eq!(fake.event_count(&grant.sub), 1);
    let logs = binary.logs();
    assert!(logs.contains("NOT_SERVING"), "{logs}");
    drop(binary.channel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_debug_level() {
    let fake = start_fake().await;
    // Rotation issues more secrets for the logs to (not) show.
    fake.set_refresh_tokens(RefreshTokens::Rotate);
    let work = Workdir::new();
    let mut binary = start_binary(&fake, &work).await;

    // The whole flow, including refresh, a refused code and upstream errors.
    let grant = binary.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    binary.upsert(&grant.sub, &calendar).await.expect("upsert");
    fake.expire_access_tokens();
    binary
        .upsert(&grant.sub, &calendar)
        .await
        .expect("upsert after 401 and refresh");
    fake.inject(Fault::status(Endpoint::UpsertEvent, 422));
    binary.upsert(&grant.sub, &calendar).await.expect_err("422");
    binary
        .client
        .clone()
        .list_calendars(with_key(
            ACME_KEY,
            pb::ListCalendarsRequest {
                user: Some(pb::list_calendars_request::User::Sub(grant.sub.clone())),
            },
        ))
        .await
        .expect("list");
    let used_code = fake.issued_secrets()[0].clone();
    let built = binary
        .client
        .clone()
        .build_authorize_url(with_key(
            ACME_KEY,
            pb::BuildAuthorizeUrlRequest {
                redirect_uri: ACME_REDIRECT.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("url")
        .into_inner();
    binary
        .client
        .clone()
        .exchange_code(with_key(
            ACME_KEY,
            pb::ExchangeCodeRequest {
                code: used_code,
                redirect_uri: ACME_REDIRECT.into(),
                state: built.state,
                expected_user_ref: None,
            },
        ))
        .await
        .expect_err("used code");
    let mut traced = with_key(
        ACME_KEY,
        pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: calendar.clone(),
            event: Some(event("evt-traced")),
        },
    );
    traced
        .metadata_mut()
        .insert("x-request-id", "trace-me-42".parse().expect("header"));
    binary.client.clone().upsert_event(traced).await.expect("traced upsert");
    let _ = binary
        .client
        .clone()
        .get_grant(with_key(
            GLOBEX_KEY,
            pb::GetGrantRequest {
                user: Some(pb::get_grant_request::User::Sub(grant.sub.clone())),
            },
        ))
        .await;
    binary.stop().await;

    let logs = binary.logs();
    assert!(logs.contains("DEBUG"), "debug logs were captured");
    assert!(logs.contains("access token refreshed"), "{logs}");
    // Every line of a call carries its request id and tenant.
    assert!(
        logs.lines()
            .any(|l| l.contains("trace-me-42") && l.contains("tenant=acme") && l.contains("UpsertEvent")),
        "{logs}"
    );
    let mut secrets = fake.issued_secrets();
    assert!(secrets.len() >= 5, "codes, access and refresh tokens were issued");
    secrets.extend(
        [
            ACME_SECRET,
            GLOBEX_SECRET,
            ACME_KEY,
            GLOBEX_KEY,
            &STANDARD.encode([7u8; 32]),
            &STANDARD.encode([1u8; 32]),
        ]
        .map(str::to_owned),
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
}

/// The Enterprise Connect flow at debug level: neither the authorization id
/// (half of what posting a callback takes) nor the member's code is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprise_callbacks_log_neither_the_authorization_id_nor_the_code() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let port = free_port();
    let mut binary = start_binary_with(&fake, &work, |c| with_callbacks(c, port, port)).await;
    let admin = binary.connect_enterprise_admin("org-42").await;
    assert_eq!(admin.kind, pb::GrantKind::ServiceAccount as i32);
    let pending = binary
        .client
        .clone()
        .authorize_enterprise_user(with_key(ACME_KEY, member_request("org-42", "ada@org.example", "ada")))
        .await
        .expect("authorize member")
        .into_inner()
        .authorization
        .expect("authorization");
    let id = pending.authorization_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !binary.logs().contains("enterprise member connected") {
        assert!(tokio::time::Instant::now() < deadline, "{}", binary.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    binary.stop().await;
    let logs = binary.logs();
    assert!(!logs.contains(&id), "the authorization id reached the logs");
    for secret in fake.issued_secrets() {
        assert!(!logs.contains(&secret), "a code or token reached the logs");
    }
}
