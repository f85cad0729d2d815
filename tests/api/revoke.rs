//! RevokeGrant: revoke at Cronofy by sub, erase the tokens, keep the grant visible.

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault, NextAuthorization};
use tonic::Code;

use crate::support::*;

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
            mode: Default::default(),
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

/// Cronofy's revoke fails: the grant is revoked here anyway (tokens erased,
/// nothing more is written with them), and Cronofy's revoke is retried in
/// the background until it is taken.
#[tokio::test]
async fn a_failed_upstream_revoke_revokes_here_and_is_retried_in_the_background() {
    let app = spawn_app_edited(|s| s.upstream.revoke_retry_interval = Duration::from_millis(200)).await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    // The call's two attempts and the worker's first round fail.
    app.fake.inject(Fault::status(Endpoint::Revoke, 503).times(3));
    let answer = app
        .client
        .clone()
        .revoke_grant(app.req(revoke_by_ref("ada")))
        .await
        .expect("revoked here although Cronofy is down")
        .into_inner();
    assert!(answer.upstream_revoke_pending);
    assert_eq!(answer.grant.expect("grant").status, pb::GrantStatus::Revoked as i32);
    let status = app
        .client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: calendar,
            event: Some(event("evt-1")),
        }))
        .await
        .expect_err("no write with a revoked grant");
    assert_status(&status, Code::FailedPrecondition, "GRANT_REVOKED");
    assert!(app.fake.revoked_subs("acme-client").is_empty());

    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    while app.fake.revoked_subs("acme-client").is_empty() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the worker never revoked at Cronofy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.fake.revoked_subs("acme-client"), vec![grant.sub.clone()]);
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
                profile_id: None,
            },
        ))
        .await
        .expect_err("cross-tenant");
    assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");
    assert_eq!(app.fake.count(Endpoint::Revoke), 0);
}

/// Revoke Profile disconnects one calendar profile of a (linked) account and
/// leaves the authorization — the grant, its tokens, its other profiles — alone.
#[tokio::test]
async fn revoking_one_profile_leaves_the_grant_connected() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let profile_id = app.calendars("ada").await[0].profile_id.clone();
    let revoked = app
        .client
        .clone()
        .revoke_grant(app.req(pb::RevokeGrantRequest {
            profile_id: Some(profile_id.clone()),
            ..revoke_by_ref("ada")
        }))
        .await
        .expect("revoke profile")
        .into_inner();
    assert!(revoked.profile_revoked && !revoked.upstream_revoke_pending);
    let kept = revoked.grant.expect("grant");
    assert_eq!(
        (kept.sub.as_str(), kept.status),
        (grant.sub.as_str(), pb::GrantStatus::Active as i32)
    );
    let sent = app.fake.requests().pop().expect("request");
    assert_eq!(sent.endpoint, Endpoint::RevokeProfile);
    assert_eq!(sent.path, format!("/v1/profiles/{profile_id}/revoke"));
    assert_eq!(app.fake.count(Endpoint::Revoke), 0, "the authorization itself stays");
    assert!(
        app.fake.calendar_ids(&grant.sub).is_empty(),
        "the profile's calendars are gone"
    );

    // A profile the account does not hold: Cronofy's 404 names the profile, not a calendar.
    let status = app
        .client
        .clone()
        .revoke_grant(app.req(pb::RevokeGrantRequest {
            profile_id: Some("pro_not_mine".into()),
            ..revoke_by_ref("ada")
        }))
        .await
        .expect_err("unknown profile");
    assert_status(&status, Code::NotFound, "UPSTREAM_NOT_FOUND");
    assert!(status.message().contains("calendar profile"), "{}", status.message());
}
