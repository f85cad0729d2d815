//! RevokeGrant: revoke at Cronofy by sub, erase the tokens, keep the grant visible.

use calgate::{
    fake_cronofy::{Endpoint, Fault, NextAuthorization},
    grpc::pb,
};
use tonic::Code;

use crate::helpers::*;

fn revoke_by_ref(user_ref: &str) -> pb::RevokeGrantRequest {
    pb::RevokeGrantRequest {
        user: Some(pb::revoke_grant_request::User::UserRef(user_ref.into())),
    }
}

#[tokio::test]
async fn revoking_erases_the_tokens_and_keeps_the_grant_visible() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();

    let revoked = app
        .client
        .clone()
        .revoke_grant(app.req(revoke_by_ref("ada")))
        .await
        .expect("revoke")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(revoked.status, pb::GrantStatus::Revoked as i32);
    assert_eq!(revoked.sub, grant.sub);
    assert_eq!(revoked.user_ref, "ada");
    assert_eq!(app.fake.count(Endpoint::Revoke), 1);

    // Calls on it fail fast, without Cronofy.
    let calls = app.fake.requests().len();
    let status = app
        .client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            user: Some(pb::upsert_event_request::User::UserRef("ada".into())),
            calendar_id: calendar,
            event: Some(event("evt-1")),
        }))
        .await
        .expect_err("revoked");
    assert_status(&status, Code::FailedPrecondition, "GRANT_REVOKED");
    assert_eq!(app.fake.requests().len(), calls);

    // Twice is fine, and does not call Cronofy again.
    let again = app
        .client
        .clone()
        .revoke_grant(app.req(revoke_by_ref("ada")))
        .await
        .expect("revoke again")
        .into_inner()
        .grant
        .expect("grant");
    assert_eq!(again.status, pb::GrantStatus::Revoked as i32);
    assert_eq!(app.fake.count(Endpoint::Revoke), 1);

    // Connecting again restores it under the same sub.
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(grant.sub.clone()),
        ..Default::default()
    });
    let back = app.connect(Some("ada")).await;
    assert_eq!((back.sub, back.status), (grant.sub, pb::GrantStatus::Active as i32));
}

#[tokio::test]
async fn a_failed_upstream_revoke_keeps_the_tokens_for_a_retry() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    app.fake.inject(Fault::status(Endpoint::Revoke, 503).times(2));
    let status = app
        .client
        .clone()
        .revoke_grant(app.req(revoke_by_ref("ada")))
        .await
        .expect_err("Cronofy down");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    let fetched = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(fetched.status, pb::GrantStatus::Active as i32);
    app.client
        .clone()
        .revoke_grant(app.req(revoke_by_ref("ada")))
        .await
        .expect("the retry revokes");
}

#[tokio::test]
async fn another_tenant_cannot_revoke() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let status = app
        .client
        .clone()
        .revoke_grant(with_key(
            GLOBEX_KEY,
            pb::RevokeGrantRequest {
                user: Some(pb::revoke_grant_request::User::Sub(grant.sub.clone())),
            },
        ))
        .await
        .expect_err("cross-tenant");
    assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");
    assert_eq!(app.fake.count(Endpoint::Revoke), 0);
}
