//! The in-memory cache of access tokens: what it saves, and that it never
//! serves a token calgate itself has replaced or re-pointed.

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::Endpoint;
use tonic::Code;

use crate::{postgres::PgTestDb, support::*};

fn by_ref(user_ref: &str) -> Option<pb::upsert_event_request::User> {
    Some(pb::upsert_event_request::User::UserRef(user_ref.into()))
}

async fn upsert(app: &TestApp, user_ref: &str, calendar: &str) -> Result<(), tonic::Status> {
    Upsert::new(by_ref(user_ref), calendar).send(&app.client).await
}

#[tokio::test]
async fn a_user_ref_bound_to_a_new_account_is_never_served_from_the_cache() {
    let app = spawn_app().await;
    let first = app.connect(Some("ada")).await;
    upsert(&app, "ada", &app.fake.calendar_ids(&first.sub)[0])
        .await
        .expect("first account");
    // Ada reconnects with another account: "ada" now points at it.
    let second = app.connect(Some("ada")).await;
    assert_ne!(first.sub, second.sub);
    upsert(&app, "ada", &app.fake.calendar_ids(&second.sub)[0])
        .await
        .expect("the write goes to the new account");
    assert_eq!(app.fake.event_count(&first.sub), 1);
    assert_eq!(app.fake.event_count(&second.sub), 1);
}

#[tokio::test]
async fn a_refreshed_token_replaces_the_cached_one() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    upsert(&app, "ada", &calendar).await.expect("cached now");
    // Cronofy stops accepting the cached token: one 401, one refresh, then the new token.
    app.fake.expire_access_tokens();
    upsert(&app, "ada", &calendar).await.expect("refreshed once");
    upsert(&app, "ada", &calendar)
        .await
        .expect("the new token, from the store");
    assert_eq!(app.fake.count(Endpoint::Token), 2, "the exchange and one refresh");
    assert_eq!(
        app.fake.count(Endpoint::UpsertEvent),
        4,
        "one write was refused with 401"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_grant_keeps_writing_through_a_short_store_outage_until_its_entry_expires() {
    let Some(db) = PgTestDb::create().await else { return };
    let app = spawn_app_edited(|s| {
        s.store.url = db.url.clone();
        // Long enough that the second call surely falls inside it on a loaded machine.
        s.store.token_cache_ttl = Duration::from_secs(5);
    })
    .await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    upsert(&app, "ada", &calendar)
        .await
        .expect("read from the store, then cached");

    db.refuse_connections().await;
    upsert(&app, "ada", &calendar)
        .await
        .expect("the cached token needs no store");
    // Writes go on from the cache until the entry expires; then the store is needed.
    let mut written = 2;
    let status = loop {
        match upsert(&app, "ada", &calendar).await {
            Ok(()) => written += 1,
            Err(status) => break status,
        }
        assert!(written < 200, "the entry never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_status(&status, Code::Unavailable, "STORE_UNAVAILABLE");
    assert_eq!(
        app.fake.count(Endpoint::UpsertEvent),
        written,
        "the refused call sent nothing"
    );

    db.allow_connections().await;
}
