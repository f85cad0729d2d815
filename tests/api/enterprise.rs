//! Enterprise Connect members: requested through the service account,
//! completed by Cronofy's callback to calgate's own HTTP listener.

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault, sign_callback};
use tonic::Code;

use crate::support::*;

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
        .authorize_enterprise_user(app.req(member_request("org-42", email, user_ref)))
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
            mode: Default::default(),
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

/// Posts a callback body for `id`, signed with `secret` when given.
async fn post_callback(base: &str, id: &str, body: &serde_json::Value, signature: Option<String>) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new()
        .post(format!("{base}/cronofy/enterprise-connect/callback?authorization={id}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("Cronofy-HMAC-SHA256", signature);
    }
    request.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Posts `body` signed with acme's client secret, as Cronofy would.
async fn post_signed(base: &str, id: &str, body: &serde_json::Value) -> u16 {
    let signature = sign_callback(ACME_SECRET, body.to_string().as_bytes());
    post_callback(base, id, body, Some(signature)).await
}

async fn status_of(app: &TestApp, id: &str) -> i32 {
    get(app, ACME_KEY, id).await.expect("get").status
}

/// A pending authorization whose callback the fake does not send.
async fn pending_without_callback(app: &TestApp) -> String {
    connect_admin(app).await;
    app.fake.set_member_callbacks(false);
    authorize(app, "ada@org.example", "ada").await.authorization_id
}

#[tokio::test]
async fn unsigned_or_missigned_callbacks_are_refused_and_change_nothing() {
    let (app, base) = spawn_with_callbacks().await;
    let id = pending_without_callback(&app).await;
    let refusal =
        serde_json::json!({"authorization": {"error": "access_denied", "error_key": "unable_to_grant_scope"}});
    let body = refusal.to_string();
    for signature in [
        None,
        Some(String::new()),
        Some("not base64".into()),
        Some(sign_callback("a guessed secret", body.as_bytes())),
        // Another tenant's application: valid for globex, not for acme's authorization.
        Some(sign_callback(GLOBEX_SECRET, body.as_bytes())),
        // Signed over another body.
        Some(sign_callback(ACME_SECRET, b"{}")),
    ] {
        assert_eq!(
            post_callback(&base, &id, &refusal, signature.clone()).await,
            401,
            "{signature:?}"
        );
    }
    assert_eq!(
        status_of(&app, &id).await,
        pb::EnterpriseUserAuthorizationStatus::Pending as i32,
        "refused callbacks change nothing"
    );
    // An id calgate never makes is refused before anything else.
    for malformed in [
        "",
        "x",
        "0123456789ABCDEF0123456789ABCDEF",
        &"a".repeat(33),
        "../../etc",
    ] {
        assert_eq!(post_signed(&base, malformed, &refusal).await, 404, "{malformed}");
    }
    // One valid value among several (Cronofy sends one per active secret) is enough.
    let several = format!(
        "{},{}",
        sign_callback("an old secret", body.as_bytes()),
        sign_callback(ACME_SECRET, body.as_bytes())
    );
    assert_eq!(post_callback(&base, &id, &refusal, Some(several)).await, 200);
    assert_eq!(
        status_of(&app, &id).await,
        pb::EnterpriseUserAuthorizationStatus::Failed as i32
    );
}

#[tokio::test]
async fn forged_and_replayed_signed_callbacks_change_nothing() {
    let (app, base) = spawn_with_callbacks().await;
    let id = pending_without_callback(&app).await;

    let code_only = serde_json::json!({"authorization": {"code": "x"}});
    assert_eq!(
        post_signed(&base, "0123456789abcdef0123456789abcdef", &code_only).await,
        404
    );
    let forged = serde_json::json!({"authorization": {"code": "stolen-code", "state": "forged-state"}});
    assert_eq!(post_signed(&base, &id, &forged).await, 400);
    assert_eq!(
        post_signed(&base, &id, &serde_json::json!({"not": "cronofy"})).await,
        400
    );
    assert_eq!(
        status_of(&app, &id).await,
        pb::EnterpriseUserAuthorizationStatus::Pending as i32,
        "refused callbacks change nothing"
    );

    // The error form carries no state: the id alone finds the authorization.
    let refusal =
        serde_json::json!({"authorization": {"error": "access_denied", "error_key": "unable_to_grant_scope"}});
    assert_eq!(post_signed(&base, &id, &refusal).await, 200);
    assert_eq!(post_signed(&base, &id, &refusal).await, 200, "a replay is harmless");
    let done = get(&app, ACME_KEY, &id).await.expect("get");
    assert_eq!(done.status, pb::EnterpriseUserAuthorizationStatus::Failed as i32);
    assert_eq!(done.error_key, "unable_to_grant_scope");
}

/// While the application's secret is rotated, callbacks signed with the
/// previous one are still accepted.
#[tokio::test]
async fn a_previous_client_secret_still_verifies_callbacks() {
    let (app, base) = spawn_app_with_callbacks(|s| {
        s.tenants[0].previous_client_secret = Some("acme-old-secret".to_owned().into());
    })
    .await;
    let id = pending_without_callback(&app).await;
    let refusal = serde_json::json!({"authorization": {"error": "access_denied", "error_key": "x"}});
    let signature = sign_callback("acme-old-secret", refusal.to_string().as_bytes());
    assert_eq!(post_callback(&base, &id, &refusal, Some(signature)).await, 200);
    assert_eq!(
        status_of(&app, &id).await,
        pb::EnterpriseUserAuthorizationStatus::Failed as i32
    );
}

/// No callback within `callbacks.authorization_ttl`: EXPIRED, and a late
/// callback is refused (410) without exchanging its code.
#[tokio::test]
async fn an_authorization_without_a_callback_expires() {
    let (app, base) = spawn_app_with_callbacks(|s| {
        if let Some(callbacks) = &mut s.callbacks {
            callbacks.authorization_ttl = Duration::from_secs(3600);
        }
    })
    .await;
    let id = pending_without_callback(&app).await;
    app.clock.advance(Duration::from_secs(3601));
    assert_eq!(
        status_of(&app, &id).await,
        pb::EnterpriseUserAuthorizationStatus::Expired as i32
    );
    let tokens = app.fake.count(Endpoint::Token);
    let late = serde_json::json!({"authorization": {"code": "late-code"}});
    assert_eq!(post_signed(&base, &id, &late).await, 410);
    assert_eq!(
        app.fake.count(Endpoint::Token),
        tokens,
        "a late code is never exchanged"
    );
    assert_eq!(
        status_of(&app, &id).await,
        pb::EnterpriseUserAuthorizationStatus::Expired as i32
    );
}

/// Cronofy's callback arriving twice at once (a retry, two replicas): the
/// code is exchanged once, and both answers are 200.
#[tokio::test]
async fn concurrent_callbacks_exchange_the_code_once() {
    let (app, base) = spawn_with_callbacks().await;
    connect_admin(&app).await;
    app.fake.set_member_callbacks(false);
    let pending = authorize(&app, "ada@org.example", "ada").await;
    let id = pending.authorization_id;
    let code = app.fake.member_code_for(&id);
    let callback = serde_json::json!({"authorization": {"code": code}});
    app.fake
        .inject(Fault::delay(Endpoint::Token, Duration::from_millis(500)));
    let tokens = app.fake.count(Endpoint::Token);
    let (first, second) = tokio::join!(post_signed(&base, &id, &callback), post_signed(&base, &id, &callback));
    assert_eq!((first, second), (200, 200));
    assert_eq!(app.fake.count(Endpoint::Token) - tokens, 1, "one exchange of the code");
    assert_eq!(
        settled(&app, &id).await.status,
        pb::EnterpriseUserAuthorizationStatus::Completed as i32
    );
}

#[tokio::test]
async fn only_service_accounts_authorize_members_and_only_their_tenant_sees_them() {
    let (app, _) = spawn_with_callbacks().await;
    connect_admin(&app).await;
    app.connect(Some("plain-user")).await;
    let status = app
        .client
        .clone()
        .authorize_enterprise_user(app.req(member_request("plain-user", "ada@org.example", "ada")))
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

/// ForgetUser of a member whose authorization is still pending (or failed)
/// erases it — email and user_ref — and Cronofy's late callback for it then
/// connects nobody (issue #26).
#[tokio::test]
async fn forgetting_a_pending_member_erases_the_authorization_and_a_late_callback_connects_nobody() {
    let (app, base) = spawn_with_callbacks().await;
    let id = pending_without_callback(&app).await;
    let forgotten = forget_ada(&app)
        .await
        .expect("a pending member is forgotten")
        .into_inner();
    assert_eq!(forgotten.sub, "", "no grant was stored for the member");
    let gone = get(&app, ACME_KEY, &id).await.expect_err("erased");
    assert_eq!(gone.code(), Code::NotFound);
    // Nothing in the database files names the member any more.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(app.work.dir.path()).expect("work dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("calgate.db") {
            bytes.extend(std::fs::read(entry.path()).expect("database file"));
        }
    }
    assert!(!bytes.is_empty(), "no database file");
    let named = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!named("ada@org.example"), "the member's email is still in the database");
    assert!(named("org-42"), "the scan sees what is there");

    let code = app.fake.member_code_for(&id);
    let callback = serde_json::json!({"authorization": {"code": code}});
    assert_eq!(post_signed(&base, &id, &callback).await, 404, "nobody waits for it");
    let status = fetch_grant_by_ref(&app, "ada").await;
    assert_eq!(status.code(), Code::NotFound, "the member was not connected again");
    let again = forget_ada(&app).await.expect_err("nothing left");
    assert_eq!(again.code(), Code::NotFound);
}

async fn forget_ada(app: &TestApp) -> Result<tonic::Response<pb::ForgetUserResponse>, tonic::Status> {
    app.client
        .clone()
        .forget_user(app.req(pb::ForgetUserRequest {
            user: Some(pb::forget_user_request::User::UserRef("ada".into())),
            delete_events: false,
        }))
        .await
}

async fn fetch_grant_by_ref(app: &TestApp, user_ref: &str) -> tonic::Status {
    app.client
        .clone()
        .get_grant(app.req(pb::GetGrantRequest {
            user: Some(pb::get_grant_request::User::UserRef(user_ref.into())),
        }))
        .await
        .expect_err("no grant")
}
