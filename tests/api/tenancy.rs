//! Caller authentication and tenant isolation.

use calgate::{fake_cronofy::Endpoint, grpc::pb};
use tonic::{Code, Request};

use crate::helpers::*;

#[tokio::test]
async fn missing_malformed_and_unknown_keys_are_unauthenticated() {
    let app = spawn_app().await;
    let message = || pb::GetGrantRequest {
        user: Some(pb::get_grant_request::User::Sub("acc_x".into())),
    };
    let mut requests = vec![Request::new(message())];
    for header in [
        format!("Bearer {ACME_KEY}x"),
        format!("Basic {ACME_KEY}"),
        ACME_KEY.to_owned(),
        "Bearer ".into(),
    ] {
        let mut request = Request::new(message());
        request
            .metadata_mut()
            .insert("authorization", header.parse().expect("header"));
        requests.push(request);
    }
    for request in requests {
        let status = app
            .client
            .clone()
            .get_grant(request)
            .await
            .expect_err("unauthenticated");
        assert_status(&status, Code::Unauthenticated, "API_KEY_INVALID");
        assert!(!status.message().contains(ACME_KEY));
    }
}

#[tokio::test]
async fn another_tenants_grant_is_not_found_and_cronofy_is_not_called() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let calls = app.fake.requests().len();

    let status = app
        .client
        .clone()
        .upsert_event(with_key(
            GLOBEX_KEY,
            pb::UpsertEventRequest {
                user: by_sub(&grant.sub),
                calendar_id: calendar.clone(),
                event: Some(event("evt-1")),
            },
        ))
        .await
        .expect_err("cross-tenant");
    assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");

    let status = app
        .client
        .clone()
        .delete_event(with_key(
            GLOBEX_KEY,
            pb::DeleteEventRequest {
                user: Some(pb::delete_event_request::User::UserRef("ada".into())),
                calendar_id: calendar,
                event_id: "evt-1".into(),
            },
        ))
        .await
        .expect_err("cross-tenant user_ref");
    assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");

    for user in [
        pb::get_grant_request::User::Sub(grant.sub.clone()),
        pb::get_grant_request::User::UserRef("ada".into()),
    ] {
        let status = app
            .client
            .clone()
            .get_grant(with_key(GLOBEX_KEY, pb::GetGrantRequest { user: Some(user) }))
            .await
            .expect_err("cross-tenant");
        assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");
    }
    let status = app
        .client
        .clone()
        .list_calendars(with_key(
            GLOBEX_KEY,
            pb::ListCalendarsRequest {
                user: Some(pb::list_calendars_request::User::Sub(grant.sub.clone())),
            },
        ))
        .await
        .expect_err("cross-tenant");
    assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");
    assert_eq!(
        app.fake.requests().len(),
        calls,
        "no upstream call for another tenant's grant"
    );
}

#[tokio::test]
async fn the_same_user_ref_in_two_tenants_names_two_grants() {
    let app = spawn_app().await;
    let acme = app.connect(Some("user-1")).await;
    let globex = app
        .connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, Some("user-1"))
        .await
        .expect("globex connects");
    assert_ne!(acme.sub, globex.sub);
    let fetched = app
        .client
        .clone()
        .get_grant(with_key(
            GLOBEX_KEY,
            pb::GetGrantRequest {
                user: Some(pb::get_grant_request::User::UserRef("user-1".into())),
            },
        ))
        .await
        .expect("grant")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(fetched.sub, globex.sub);
    // Each tenant's token request used its own client.
    assert_eq!(app.fake.count(Endpoint::Token), 2);
}
