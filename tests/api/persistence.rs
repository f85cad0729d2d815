//! The store survives restarts and encryption-key rotation.

use calgate::grpc::pb;

use crate::support::*;

async fn upsert_by_ref(app: &TestApp, sub: &str, user_ref: &str) {
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: Some(pb::upsert_event_request::User::UserRef(user_ref.into())),
            calendar_id: app.fake.calendar_ids(sub)[0].clone(),
            event: Some(event("evt-restart")),
        }))
        .await
        .expect("upsert after restart");
}

#[tokio::test]
async fn a_grant_survives_a_restart_and_a_key_rotation() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let (fake, work) = app.stop().await;

    let keys = work.key("k1");
    let app = spawn_app_on(fake, work, &keys).await;
    upsert_by_ref(&app, &grant.sub, "ada").await;
    let (fake, work) = app.stop().await;

    // Rotation: k2 encrypts from now on, k1 still decrypts the stored grant.
    let keys = format!("{}, {}", work.key("k2"), work.key("k1"));
    let app = spawn_app_on(fake, work, &keys).await;
    upsert_by_ref(&app, &grant.sub, "ada").await;
    assert_eq!(app.fake.event_count(&grant.sub), 1);
}

#[tokio::test]
async fn a_grant_whose_key_was_removed_is_reported_unreadable_not_unavailable() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let (fake, work) = app.stop().await;
    // A rotation adds k2 first (a replica starts with it)…
    let both = format!("{}, {}", work.key("k2"), work.key("k1"));
    let (fake, work) = spawn_app_on(fake, work, &both).await.stop().await;
    // …then k1, which sealed the grant, is removed before `calgate rekey` ran.
    let keys = work.key("k2");
    let app = spawn_app_on(fake, work, &keys).await;
    let status = fetch_grant(&app.client, ACME_KEY, &grant.sub)
        .await
        .expect_err("unreadable");
    assert_status(&status, tonic::Code::Internal, "GRANT_UNREADABLE");
    assert!(!status.message().contains("k1"), "no key material or ids for callers");
}

#[tokio::test]
async fn the_database_holds_no_plaintext_token() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    app.clock.advance(std::time::Duration::from_secs(3600));
    upsert_by_ref(&app, &grant.sub, "ada").await; // refreshes: new tokens written
    let secrets = app.fake.issued_secrets();
    let (_fake, work) = app.stop().await;
    let mut bytes = std::fs::read(work.db_path()).expect("db");
    if let Ok(wal) = std::fs::read(work.path("calgate.db-wal")) {
        bytes.extend(wal);
    }
    assert!(secrets.len() >= 4, "a code, two access tokens, refresh tokens");
    for secret in secrets {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a token is stored in plaintext"
        );
    }
}
