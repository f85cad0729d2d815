//! Enterprise Connect members: requested through the service account,
//! completed by Cronofy's callback to calgate's own HTTP listener.

use std::time::Duration;

use calgate::grpc::pb;
use tonic::Code;

use crate::helpers::*;

/// calgate with `[callbacks]` on a port-0 listener; returns the app and the callback base URL.
async fn spawn_with_callbacks() -> (TestApp, String) {
    spawn_app_with_callbacks(|_| {}).await
}

/// The organisation's admin connects through Enterprise Connect as `org-42`.
async fn connect_admin(app: &TestApp) -> pb::Grant {
    app.connect_enterprise_admin("org-42").await
}

async fn authorize(app: &TestApp, email: &str, user_ref: &str) -> pb::EnterpriseUserAuthorization {
    app.client
        .clone()
        .authorize_enterprise_user(app.req(pb::AuthorizeEnterpriseUserRequest {
            service_account: Some(
                pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountRef("org-42".into()),
            ),
            email: email.into(),
            user_ref: user_ref.into(),
            scope: vec![],
        }))
        .await
        .expect("authorize member")
        .into_inner()
        .authorization
        .expect("authorization")
}

async fn get(app: &TestApp, key: &str, id: &str) -> Result<pb::EnterpriseUserAuthorization, tonic::Status> {
    let request = with_key(
        key,
        pb::GetEnterpriseUserAuthorizationRequest {
            authorization_id: id.into(),
        },
    );
    Ok(app
        .client
        .clone()
        .get_enterprise_user_authorization(request)
        .await?
        .into_inner()
        .authorization
        .expect("authorization"))
}

/// Polls until the authorization leaves PENDING.
async fn settled(app: &TestApp, id: &str) -> pb::EnterpriseUserAuthorization {
    for _ in 0..100 {
        let authorization = get(app, ACME_KEY, id).await.expect("get");
        if authorization.status != pb::EnterpriseUserAuthorizationStatus::Pending as i32 {
            return authorization;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("authorization {id} stayed pending");
}

#[tokio::test]
async fn a_member_is_connected_through_the_callback_and_can_be_written_to() {
    let (app, base) = spawn_with_callbacks().await;
    connect_admin(&app).await;
    let pending = authorize(&app, "ada@org.example", "ada").await;
    assert_eq!(pending.status, pb::EnterpriseUserAuthorizationStatus::Pending as i32);
    assert_eq!(pending.authorization_id.len(), 32, "unguessable: 128 random bits");

    let done = settled(&app, &pending.authorization_id).await;
    assert_eq!(
        done.status,
        pb::EnterpriseUserAuthorizationStatus::Completed as i32,
        "{done:?}"
    );
    let grant = done.grant.expect("the member's grant");
    assert_eq!(grant.kind, pb::GrantKind::User as i32);
    assert_eq!(grant.connect_mode, pb::ConnectMode::Enterprise as i32);
    assert_eq!(grant.user_ref, "ada");
    assert_eq!(grant.profile_name, "ada@org.example");
    let sent = app.fake.callbacks_sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .0
            .starts_with(&format!("{base}/cronofy/enterprise-connect/callback?authorization="))
    );
    assert_eq!(sent[0].1, 200);

    // From now on the member is written to like any user.
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            user: Some(pb::upsert_event_request::User::UserRef("ada".into())),
            calendar_id: app.fake.calendar_ids(&grant.sub)[0].clone(),
            event: Some(event("evt-1")),
        }))
        .await
        .expect("write to the member");
}

#[tokio::test]
async fn a_refused_member_fails_with_cronofys_error_key() {
    let (app, _) = spawn_with_callbacks().await;
    connect_admin(&app).await;
    let pending = authorize(&app, "fail-bob@org.example", "bob").await;
    let done = settled(&app, &pending.authorization_id).await;
    assert_eq!(done.status, pb::EnterpriseUserAuthorizationStatus::Failed as i32);
    assert_eq!(done.error_key, "unable_to_grant_scope");
    assert!(done.grant.is_none());
}

#[tokio::test]
async fn forged_and_replayed_callbacks_change_nothing() {
    let (app, base) = spawn_with_callbacks().await;
    connect_admin(&app).await;
    app.fake.set_member_callbacks(false);
    let pending = authorize(&app, "ada@org.example", "ada").await;
    let id = pending.authorization_id.clone();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let post = |id: &str, body: serde_json::Value| {
        http.post(format!("{base}/cronofy/enterprise-connect/callback?authorization={id}"))
            .json(&body)
            .send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.map(|r| r.status().as_u16()).unwrap_or(0);

    assert_eq!(
        status(
            post(
                "0123456789abcdef0123456789abcdef",
                serde_json::json!({"authorization": {"code": "x"}})
            )
            .await
        ),
        404
    );
    let forged = serde_json::json!({"authorization": {"code": "stolen-code", "state": "forged-state"}});
    assert_eq!(status(post(&id, forged).await), 400);
    assert_eq!(status(post(&id, serde_json::json!({"not": "cronofy"})).await), 400);
    assert_eq!(
        get(&app, ACME_KEY, &id).await.expect("get").status,
        pb::EnterpriseUserAuthorizationStatus::Pending as i32,
        "refused callbacks change nothing"
    );

    // The error form carries no state: the id alone finds the authorization.
    let refusal =
        serde_json::json!({"authorization": {"error": "access_denied", "error_key": "unable_to_grant_scope"}});
    assert_eq!(status(post(&id, refusal.clone()).await), 200);
    assert_eq!(status(post(&id, refusal).await), 200, "a replay is harmless");
    let done = get(&app, ACME_KEY, &id).await.expect("get");
    assert_eq!(done.status, pb::EnterpriseUserAuthorizationStatus::Failed as i32);
    assert_eq!(done.error_key, "unable_to_grant_scope");
}

#[tokio::test]
async fn only_service_accounts_authorize_members_and_only_their_tenant_sees_them() {
    let (app, _) = spawn_with_callbacks().await;
    connect_admin(&app).await;
    app.connect(Some("plain-user")).await;
    let status = app
        .client
        .clone()
        .authorize_enterprise_user(app.req(pb::AuthorizeEnterpriseUserRequest {
            service_account: Some(
                pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountRef("plain-user".into()),
            ),
            email: "ada@org.example".into(),
            user_ref: "ada".into(),
            scope: vec![],
        }))
        .await
        .expect_err("not a service account");
    assert_status(&status, Code::FailedPrecondition, "GRANT_NOT_SERVICE_ACCOUNT");

    let pending = authorize(&app, "ada@org.example", "ada").await;
    let status = get(&app, GLOBEX_KEY, &pending.authorization_id)
        .await
        .expect_err("another tenant");
    assert_status(&status, Code::NotFound, "AUTHORIZATION_NOT_FOUND");

    let status = app
        .client
        .clone()
        .authorize_enterprise_user(app.req(pb::AuthorizeEnterpriseUserRequest {
            service_account: None,
            email: "not-an-email".into(),
            user_ref: String::new(),
            scope: vec![],
        }))
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["service_account", "email", "user_ref"]);
}

#[tokio::test]
async fn without_callbacks_configured_members_cannot_be_authorized() {
    let app = spawn_app().await;
    connect_admin(&app).await;
    let status = app
        .client
        .clone()
        .authorize_enterprise_user(app.req(pb::AuthorizeEnterpriseUserRequest {
            service_account: Some(
                pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountRef("org-42".into()),
            ),
            email: "ada@org.example".into(),
            user_ref: "ada".into(),
            scope: vec![],
        }))
        .await
        .expect_err("no callbacks");
    assert_status(&status, Code::FailedPrecondition, "CALLBACKS_NOT_CONFIGURED");
}
