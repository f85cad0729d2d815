//! WatchChanges: each tenant's grant changes, in order, resumable by cursor,
//! bounded, ended cleanly on shutdown, and shared by replicas on PostgreSQL.

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::NextAuthorization;
use tonic::Code;

use crate::{
    postgres::{PgTestDb, use_postgres},
    support::start_binary_with,
    support::*,
};

/// The grant part of a change: (sub, user_ref, status, reason).
fn grant_change(change: &pb::Change) -> (String, String, i32, String) {
    match &change.change {
        Some(pb::change::Change::Grant(grant)) => (
            change.sub.clone(),
            change.user_ref.clone(),
            grant.status,
            grant.reason.clone(),
        ),
        other => panic!("a grant change, not {other:?}"),
    }
}

#[tokio::test]
async fn grant_changes_arrive_in_order_and_a_resumed_stream_misses_nothing() {
    let app = spawn_app().await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");

    let ada = app.connect(Some("ada")).await;
    let connected = next(&mut stream).await;
    assert_eq!(
        grant_change(&connected),
        (
            ada.sub.clone(),
            "ada".into(),
            pb::GrantStatus::Active as i32,
            "CONNECTED".into()
        )
    );
    assert!(connected.recorded_at.is_some());

    // Cronofy refuses the refresh token: the grant needs the user again.
    app.fake.revoke_account(&ada.sub);
    app.clock.advance(Duration::from_secs(3600));
    let refused = Upsert::first_calendar(&app.fake, &ada.sub)
        .send(&app.client)
        .await
        .expect_err("needs reauth");
    assert_status(&refused, Code::FailedPrecondition, "GRANT_NEEDS_REAUTH");
    let rejected = next(&mut stream).await;
    assert_eq!(
        grant_change(&rejected),
        (
            ada.sub.clone(),
            "ada".into(),
            pb::GrantStatus::NeedsReauth as i32,
            "REFRESH_REJECTED".into()
        )
    );

    // Revoked twice: one change. Then the user connects again.
    for _ in 0..2 {
        app.client
            .clone()
            .revoke_grant(app.req(revoke_by_ref("ada")))
            .await
            .expect("revoke");
    }
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(ada.sub.clone()),
        ..Default::default()
    });
    app.connect(Some("ada")).await;
    let revoked = next(&mut stream).await;
    let reconnected = next(&mut stream).await;
    assert_eq!(grant_change(&revoked).3, "REVOKED");
    assert_eq!(grant_change(&revoked).2, pb::GrantStatus::Revoked as i32);
    assert_eq!(
        grant_change(&reconnected).3,
        "CONNECTED",
        "the second revoke recorded nothing"
    );

    // A watcher that processed only the first change resumes after it.
    drop(stream);
    let mut resumed = watch(&app.client, ACME_KEY, &connected.cursor).await.expect("resume");
    let replayed = [
        next(&mut resumed).await,
        next(&mut resumed).await,
        next(&mut resumed).await,
    ];
    assert_eq!(replayed, [rejected, revoked, reconnected.clone()]);

    // From the last cursor: nothing until the next change, which is the next one recorded.
    let mut caught_up = watch(&app.client, ACME_KEY, &reconnected.cursor).await.expect("resume");
    let bob = app.connect(Some("bob")).await;
    let after_bob = next(&mut caught_up).await;
    assert_eq!(after_bob.sub, bob.sub);
    assert_eq!(after_bob.user_ref, "bob");
    assert_ne!(after_bob.cursor, reconnected.cursor);
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_changes() {
    let app = spawn_app().await;
    let mut acme = watch(&app.client, ACME_KEY, "").await.expect("acme watches");
    let mut globex = watch(&app.client, GLOBEX_KEY, "").await.expect("globex watches");

    let ada = app.connect(Some("ada")).await;
    let zed = app
        .connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, Some("zed"))
        .await
        .expect("globex connects");

    // Globex's first change is its own, though acme's was recorded first.
    assert_eq!(next(&mut globex).await.sub, zed.sub);
    assert_eq!(next(&mut acme).await.sub, ada.sub);

    // Cursors are per tenant: globex cannot read acme's stream with acme's cursor beyond its own.
    let acme_cursor = {
        let bob = app.connect(Some("bob")).await;
        let change = next(&mut acme).await;
        assert_eq!(change.sub, bob.sub);
        change.cursor
    };
    let status = watch(&app.client, GLOBEX_KEY, &acme_cursor)
        .await
        .expect_err("beyond globex's stream");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["after"]);
}

#[tokio::test]
async fn cursors_calgate_never_gave_are_refused_naming_after() {
    let app = spawn_app().await;
    for after in ["garbage", "c99", "7", &"c".repeat(100)] {
        let status = watch(&app.client, ACME_KEY, after).await.expect_err(after);
        assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
        assert_eq!(violated_fields(&status), ["after"], "{after:?}");
    }
    let status = watch(&app.client, "not-a-key", "").await.expect_err("unauthenticated");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_cursor_older_than_the_retention_is_cursor_expired() {
    let app = spawn_app_edited(|settings| {
        settings.changes.retention = Duration::from_secs(7 * 24 * 3600);
        settings.changes.prune_interval = Duration::from_secs(1);
    })
    .await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    app.connect(Some("ada")).await;
    app.connect(Some("bob")).await;
    let first = next(&mut stream).await.cursor;
    let second = next(&mut stream).await.cursor;

    // Eight days on, both changes are past the retention and go at the next prune.
    app.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let expired = tokio::time::timeout(ARRIVAL, async {
        loop {
            match watch(&app.client, ACME_KEY, &first).await {
                Err(status) => break status,
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the changes are pruned");
    assert_status(&expired, Code::OutOfRange, "CURSOR_EXPIRED");

    // A watcher that had processed everything pruned lost nothing: it resumes.
    let mut resumed = watch(&app.client, ACME_KEY, &second).await.expect("nothing was missed");
    let carol = app.connect(Some("carol")).await;
    assert_eq!(next(&mut resumed).await.sub, carol.sub);
}

#[tokio::test]
async fn watchers_are_bounded_per_tenant_and_a_closed_one_frees_its_place() {
    let app = spawn_app_edited(|settings| settings.changes.max_watchers_per_tenant = 2).await;
    let first = watch(&app.client, ACME_KEY, "").await.expect("first");
    let _second = watch(&app.client, ACME_KEY, "").await.expect("second");
    let status = watch(&app.client, ACME_KEY, "").await.expect_err("third");
    assert_status(&status, Code::ResourceExhausted, "WATCHERS_EXHAUSTED");
    assert!(status.message().contains("changes.max_watchers_per_tenant"));
    // Another tenant's places are its own.
    let _globex = watch(&app.client, GLOBEX_KEY, "").await.expect("globex");

    drop(first);
    let reopened = tokio::time::timeout(ARRIVAL, async {
        loop {
            if let Ok(stream) = watch(&app.client, ACME_KEY, "").await {
                break stream;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the closed watcher's place came back");
}

#[tokio::test]
async fn shutdown_ends_streams_with_shutting_down_and_changes_outlive_a_restart() {
    let app = spawn_app().await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let ada = app.connect(Some("ada")).await;
    let connected = next(&mut stream).await;
    // Under the shutdown grace: the stream is ended, not waited for.
    let (fake, work) = tokio::time::timeout(SHUTDOWN_GRACE - Duration::from_secs(1), app.stop())
        .await
        .expect("an open stream does not hold the server up");
    let ended = tokio::time::timeout(ARRIVAL, stream.message())
        .await
        .expect("the stream ends")
        .expect_err("with a status");
    assert_status(&ended, Code::Unavailable, "SHUTTING_DOWN");

    let keys = work.key("k1");
    let app = spawn_app_on(fake, work, &keys).await;
    let mut from_start = watch(&app.client, ACME_KEY, "c0").await.expect("from the start");
    assert_eq!(next(&mut from_start).await, connected);
    assert_eq!(connected.sub, ada.sub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_recorded_by_one_replica_reaches_a_watcher_on_another() {
    let Some(db) = PgTestDb::create().await else { return };
    let fake = start_fake().await;
    let work = Workdir::new();
    let a = start_binary_with(&fake, &work, |c| use_postgres(c, &db.url)).await;
    let b = start_binary_with(&fake, &work, |c| use_postgres(c, &db.url)).await;
    let mut on_b = watch(&b.client, ACME_KEY, "").await.expect("watch on b");
    let mut on_a = watch(&a.client, ACME_KEY, "").await.expect("watch on a");

    let ada = a.connect("ada").await;
    let bob = b.connect("bob").await;
    let seen_on_b = [next(&mut on_b).await, next(&mut on_b).await];
    let seen_on_a = [next(&mut on_a).await, next(&mut on_a).await];
    assert_eq!(seen_on_a, seen_on_b, "every replica streams one order");
    assert_eq!([seen_on_b[0].sub.clone(), seen_on_b[1].sub.clone()], [ada.sub, bob.sub]);
}
