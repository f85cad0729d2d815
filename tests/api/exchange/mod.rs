//! ExchangeCode: state checks before any call to Cronofy, the stored grant,
//! and Cronofy's refusals.

mod in_flight;

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault, NextAuthorization};
use serde_json::json;
use tonic::Code;

use crate::support::*;

fn exchange(code: &str, redirect_uri: &str, state: &str) -> pb::ExchangeCodeRequest {
    pb::ExchangeCodeRequest {
        code: code.into(),
        redirect_uri: redirect_uri.into(),
        state: state.into(),
        expected_user_ref: None,
    }
}

#[tokio::test]
async fn exchange_stores_the_grant_and_returns_it_without_tokens() {
    let app = spawn_app().await;
    let grant = app.connect(Some("user-42")).await;
    assert!(grant.sub.starts_with("acc_"), "{}", grant.sub);
    assert_eq!(grant.account_id, grant.sub);
    assert_eq!(grant.user_ref, "user-42");
    assert_eq!(grant.scope, ["free_busy_write"]);
    assert_eq!(grant.connect_mode, pb::ConnectMode::Individual as i32);
    assert_eq!(grant.status, pb::GrantStatus::Active as i32);
    assert_eq!(grant.kind, pb::GrantKind::User as i32);
    assert_eq!(grant.provider_name, "google");
    assert!(grant.profile_name.ends_with("@example.com"));
    assert_eq!(grant.access_mode, pb::AccessMode::ReadWrite as i32);
    assert!(grant.created_at.is_some() && grant.updated_at.is_some());
    // The token request carried the tenant's credentials and the same redirect_uri.
    assert_eq!(app.fake.count(Endpoint::Token), 1);
    let sent = app
        .fake
        .requests()
        .into_iter()
        .find(|r| r.endpoint == Endpoint::Token)
        .expect("token request");
    assert_eq!(sent.query, None, "credentials never travel in the URL");
    let body = sent.json().expect("a JSON body");
    assert_eq!(body["grant_type"], "authorization_code");
    assert_eq!(body["client_id"], "acme-client");
    assert_eq!(body["client_secret"], ACME_SECRET);
    assert_eq!(body["redirect_uri"], ACME_REDIRECT);
    assert!(body["code"].as_str().is_some_and(|code| !code.is_empty()));

    let fetched = app
        .client
        .clone()
        .get_grant(app.req(pb::GetGrantRequest {
            user: Some(pb::get_grant_request::User::UserRef("user-42".into())),
        }))
        .await
        .expect("get grant")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(fetched.sub, grant.sub);
    assert_eq!(fetched.user_ref, "user-42");
}

/// The Calendar Access Mode a user chose decides whether writes go into the
/// calendar or arrive as email invites; the grant and every upsert say which.
#[tokio::test]
async fn the_access_mode_is_reported_and_upserts_say_how_they_are_delivered() {
    let app = spawn_app().await;
    let cases = [
        ("google", pb::AccessMode::ReadWrite, pb::Delivery::CalendarWrite),
        ("office365", pb::AccessMode::ReadWrite, pb::Delivery::CalendarWrite),
        ("google_free_busy", pb::AccessMode::FreeBusy, pb::Delivery::EmailInvite),
        (
            "ms_graph_free_busy",
            pb::AccessMode::FreeBusy,
            pb::Delivery::EmailInvite,
        ),
        ("cronofy", pb::AccessMode::NoAccess, pb::Delivery::EmailInvite),
    ];
    for (provider, mode, delivery) in cases {
        app.fake.set_next_authorization(NextAuthorization {
            provider_name: Some(provider.into()),
            ..Default::default()
        });
        let grant = app.connect(None).await;
        assert_eq!(grant.access_mode, mode as i32, "{provider}");
        #[allow(deprecated)]
        let invites = grant.free_busy_mode;
        assert_eq!(
            invites,
            delivery == pb::Delivery::EmailInvite,
            "{provider}: the deprecated flag"
        );
        let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
        let answer = app
            .client
            .clone()
            .upsert_event(app.req(pb::UpsertEventRequest {
                mode: Default::default(),
                user: by_sub(&grant.sub),
                calendar_id,
                event: Some(event("evt-1")),
            }))
            .await
            .expect("upsert")
            .into_inner();
        assert_eq!(answer.delivery, delivery as i32, "{provider}");
    }
}

/// A token answer without `linking_profile` still tells the mode through its
/// embedded UserInfo.
#[tokio::test]
async fn the_access_mode_is_read_from_userinfo_when_that_is_all_cronofy_sends() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, Some("ada")).await;
    app.fake.inject(Fault::status(Endpoint::Token, 200).body(json!({
        "token_type": "bearer", "access_token": "at-userinfo-only", "refresh_token": "rt-userinfo-only",
        "expires_in": 3600, "scope": "free_busy_write", "account_id": "acc_userinfo", "sub": "acc_userinfo",
        "userinfo": {"sub": "acc_userinfo", "cronofy.type": "account", "cronofy.data": {"profiles": [
            {"provider_name": "ms_graph_free_busy", "profile_id": "pro_u", "profile_name": "ada@example.com", "profile_connected": true}
        ]}},
    })));
    let grant = app
        .client
        .clone()
        .exchange_code(app.req(pb::ExchangeCodeRequest {
            code,
            redirect_uri: ACME_REDIRECT.into(),
            state,
            expected_user_ref: Some("ada".into()),
        }))
        .await
        .expect("exchange")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(grant.access_mode, pb::AccessMode::FreeBusy as i32);
    assert_eq!(
        (grant.provider_name.as_str(), grant.profile_name.as_str()),
        ("ms_graph_free_busy", "ada@example.com")
    );
}

#[tokio::test]
async fn tampered_state_is_refused_before_cronofy_is_called() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, None).await;
    let mut tampered: Vec<char> = state.chars().collect();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for bad in [tampered.as_str(), "forged-state", "x"] {
        let status = app
            .client
            .clone()
            .exchange_code(app.req(exchange(&code, ACME_REDIRECT, bad)))
            .await
            .expect_err("refused");
        assert_status(&status, Code::InvalidArgument, "STATE_INVALID");
    }
    assert_eq!(app.fake.count(Endpoint::Token), 0);
}

#[tokio::test]
async fn expired_state_is_refused_before_cronofy_is_called() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, None).await;
    app.clock.advance(Duration::from_secs(15 * 60 + 1));
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect_err("refused");
    assert_status(&status, Code::InvalidArgument, "STATE_EXPIRED");
    assert_eq!(app.fake.count(Endpoint::Token), 0);
}

#[tokio::test]
async fn another_tenants_state_is_not_found() {
    let app = spawn_app().await;
    let (code, state) = app.consent(GLOBEX_KEY, GLOBEX_REDIRECT, None).await;
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, GLOBEX_REDIRECT, &state)))
        .await
        .expect_err("refused");
    assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");
    assert_eq!(app.fake.count(Endpoint::Token), 0);
}

/// A state is redeemed once: the same code and state again are answered with
/// the grant they already made (a caller's retry), without asking Cronofy; any
/// other code with that state is refused.
#[tokio::test]
async fn a_state_is_single_use() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, None).await;
    let first = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect("first use")
        .into_inner()
        .grant
        .expect("grant");
    let replay = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect("a retry of the same exchange")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(replay.sub, first.sub);
    let (other_code, _) = app.consent(ACME_KEY, ACME_REDIRECT, None).await;
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&other_code, ACME_REDIRECT, &state)))
        .await
        .expect_err("another code with a spent state");
    assert_status(&status, Code::InvalidArgument, "STATE_INVALID");
    assert_eq!(app.fake.count(Endpoint::Token), 1, "no replay reached Cronofy");
}

#[tokio::test]
async fn state_is_bound_to_its_redirect_uri() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, None).await;
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT_2, &state)))
        .await
        .expect_err("refused");
    assert_status(&status, Code::InvalidArgument, "STATE_INVALID");
    assert_eq!(app.fake.count(Endpoint::Token), 0);
}

#[tokio::test]
async fn a_used_code_is_code_invalid_and_leaves_the_stored_grant_alone() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, Some("ada")).await;
    let grant = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect("exchange")
        .into_inner()
        .grant
        .expect("grant");
    let (_, fresh_state) = app.consent(ACME_KEY, ACME_REDIRECT, Some("ada")).await;
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &fresh_state)))
        .await
        .expect_err("used code");
    assert_status(&status, Code::FailedPrecondition, "CODE_INVALID");
    // The grant still works.
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: Some(pb::upsert_event_request::User::UserRef("ada".into())),
            calendar_id: app.fake.calendar_ids(&grant.sub)[0].clone(),
            event: Some(event("evt-1")),
        }))
        .await
        .expect("upsert after refused exchange");
}

#[tokio::test]
async fn a_transient_failure_lets_the_caller_retry_with_the_same_state() {
    let app = spawn_app().await;
    let (code, state) = app.consent(ACME_KEY, ACME_REDIRECT, None).await;
    // Both attempts the test config allows fail.
    app.fake.inject(Fault::status(Endpoint::Token, 503).times(2));
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect_err("503");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    app.client
        .clone()
        .exchange_code(app.req(exchange(&code, ACME_REDIRECT, &state)))
        .await
        .expect("the retry succeeds");
}

#[tokio::test]
async fn missing_fields_are_named() {
    let app = spawn_app().await;
    let status = app
        .client
        .clone()
        .exchange_code(app.req(exchange("", "", "")))
        .await
        .expect_err("refused");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["code", "redirect_uri", "state"]);
}

#[tokio::test]
async fn reconnecting_moves_a_user_ref_and_linked_accounts_share_a_grant() {
    let app = spawn_app().await;
    let first = app.connect(Some("ada")).await;
    let second = app.connect(Some("ada")).await;
    assert_ne!(first.sub, second.sub);
    let current = |user_ref: &str| {
        let mut client = app.client.clone();
        let request = app.req(pb::GetGrantRequest {
            user: Some(pb::get_grant_request::User::UserRef(user_ref.into())),
        });
        async move {
            client
                .get_grant(request)
                .await
                .expect("grant")
                .into_inner()
                .grant
                .expect("grant")
        }
    };
    assert_eq!(
        current("ada").await.sub,
        second.sub,
        "user_ref follows the newest grant"
    );

    // Cronofy's account linking hands the same sub back for another browser session.
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(second.sub.clone()),
        ..Default::default()
    });
    let linked = app.connect(Some("grace")).await;
    assert_eq!(linked.sub, second.sub);
    assert_eq!(current("grace").await.sub, second.sub);
    assert_eq!(
        current("ada").await.sub,
        second.sub,
        "both user_refs point at one grant"
    );
}

#[tokio::test]
async fn an_enterprise_admin_grant_is_a_service_account_that_cannot_hold_events() {
    let app = spawn_app().await;
    let grant = app.connect_enterprise_admin("org-42").await;
    assert_eq!(grant.kind, pb::GrantKind::ServiceAccount as i32);
    assert_eq!(grant.connect_mode, pb::ConnectMode::Enterprise as i32);
    assert!(
        grant.sub.starts_with("ser_"),
        "the sub is the service_account_id: {}",
        grant.sub
    );
    assert_eq!(grant.user_ref, "org-42");

    let upserts = app.fake.count(Endpoint::UpsertEvent);
    let status = app
        .client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: Some(pb::upsert_event_request::User::UserRef("org-42".into())),
            calendar_id: "cal_any".into(),
            event: Some(event("evt-1")),
        }))
        .await
        .expect_err("a service account holds no events");
    assert_status(&status, Code::FailedPrecondition, "GRANT_IS_SERVICE_ACCOUNT");
    let status = app
        .client
        .clone()
        .delete_event(app.req(pb::DeleteEventRequest {
            mode: Default::default(),
            user: Some(pb::delete_event_request::User::UserRef("org-42".into())),
            calendar_id: "cal_any".into(),
            event_id: "evt-1".into(),
        }))
        .await
        .expect_err("nor deletes them");
    assert_status(&status, Code::FailedPrecondition, "GRANT_IS_SERVICE_ACCOUNT");
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), upserts);
}

/// A service account's token answer may name it by a `ser_` sub alone,
/// without `service_account_id`: it is still a service account, never a user
/// whose calendar takes events.
#[tokio::test]
async fn a_service_account_named_only_by_its_ser_sub_is_still_a_service_account() {
    let app = spawn_app().await;
    app.fake.name_service_accounts_by_sub();
    let grant = app.connect_enterprise_admin("org-7").await;
    assert!(grant.sub.starts_with("ser_"), "{}", grant.sub);
    assert_eq!(grant.kind, pb::GrantKind::ServiceAccount as i32);
    let status = app
        .client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: Some(pb::upsert_event_request::User::UserRef("org-7".into())),
            calendar_id: "cal_any".into(),
            event: Some(event("evt-1")),
        }))
        .await
        .expect_err("a service account holds no events");
    assert_status(&status, Code::FailedPrecondition, "GRANT_IS_SERVICE_ACCOUNT");
}
