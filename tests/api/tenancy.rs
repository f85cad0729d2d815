//! Caller authentication and tenant isolation.

use calgate::grpc::pb;
use fake_cronofy::Endpoint;
use std::time::Duration;
use tonic::{Code, Request};

use crate::support::*;

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
                mode: Default::default(),
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
                mode: Default::default(),
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

/// Cronofy limits requests per application, not per tenant: two tenants on
/// one client_id share one budget, and together never reach Cronofy more than
/// its per-second limit in any one second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_of_one_application_share_its_request_budget() {
    let app = spawn_app_edited(|s| {
        let per_second = calgate::config::RateLimit {
            per_second: 5,
            per_minute: 10_000,
        };
        s.tenants[1].client_id = s.tenants[0].client_id.clone();
        s.tenants[1].client_secret = s.tenants[0].client_secret.clone();
        s.tenants[0].rate_limit = per_second;
        s.tenants[1].rate_limit = per_second;
    })
    .await;
    app.fake
        .register_redirect_uris("acme-client", &[ACME_REDIRECT, ACME_REDIRECT_2, GLOBEX_REDIRECT]);
    let ada = app.connect(Some("ada")).await;
    let bob = app
        .connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, Some("bob"))
        .await
        .expect("globex connects through acme's application");
    let started = tokio::time::Instant::now().into_std();
    let writes = (0..12).flat_map(|n| {
        [(ACME_KEY, ada.sub.clone()), (GLOBEX_KEY, bob.sub.clone())].map(|(key, sub)| {
            let client = app.client.clone();
            let calendar_id = app.fake.calendar_ids(&sub)[0].clone();
            async move {
                let mut request = with_key(
                    key,
                    pb::UpsertEventRequest {
                        mode: Default::default(),
                        user: by_sub(&sub),
                        calendar_id,
                        event: Some(event(&format!("evt-{n}"))),
                    },
                );
                request.set_timeout(Duration::from_secs(30));
                client.clone().upsert_event(request).await
            }
        })
    });
    let results = futures::future::join_all(writes).await;
    // A write waits for room up to the retry ceiling (3 s here), then is refused.
    for result in &results {
        if let Err(status) = result {
            assert_status(status, Code::ResourceExhausted, "RATE_BUDGET_EXHAUSTED");
        }
    }
    let written = results.iter().filter(|r| r.is_ok()).count();
    assert!(written >= 10, "the shared budget lets writes through: {written}");
    let mut sent: Vec<std::time::Instant> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.at >= started)
        .map(|r| r.at)
        .collect();
    sent.sort();
    assert_eq!(sent.len(), written, "a refused write sent nothing");
    let busiest = sent
        .iter()
        .enumerate()
        .map(|(i, first)| {
            sent[i..]
                .iter()
                .take_while(|at| at.duration_since(*first) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or_default();
    assert!(
        busiest <= 5,
        "{busiest} requests within one second; the application allows 5"
    );
}
