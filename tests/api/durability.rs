//! A refresh token, once received, is never lost: refreshed pairs the store
//! refuses are parked (in memory, and spilled to disk when configured) and
//! written before Cronofy is asked again — across a restart too.

use std::{path::Path, time::Duration};

use calgate::{config::Settings, grpc::pb};
use fake_cronofy::{Endpoint, Fault, RefreshTokens};
use tonic::Code;

use crate::{postgres::PgTestDb, support::*};

async fn upsert(app: &TestApp, sub: &str, event_id: &str) -> Result<(), tonic::Status> {
    Upsert::first_calendar(&app.fake, sub)
        .event_id(event_id)
        .send(&app.client)
        .await
}

/// PostgreSQL as the store; `spill` as store.spill_dir; calgate waits for a
/// slow token answer (it must receive the rotated pair the store then refuses).
fn on_postgres(db: &PgTestDb, spill: Option<&Path>) -> impl FnOnce(&mut Settings) {
    let url = db.url.clone();
    let spill = spill.map(Path::to_path_buf);
    move |settings: &mut Settings| {
        settings.store.url = url;
        settings.store.spill_dir = spill;
        settings.upstream.request_timeout = Duration::from_secs(30);
        settings.upstream.retry.ceiling = Duration::from_secs(60);
    }
}

/// The store goes away while Cronofy is rotating the grant's tokens: the
/// caller gets STORE_UNAVAILABLE; the rotated pair is what the fake will
/// accept from now on (it refuses a used refresh token).
async fn lose_the_store_mid_refresh(app: &TestApp, db: &PgTestDb, sub: &str) {
    app.fake.set_refresh_tokens(RefreshTokens::Rotate);
    app.clock.advance(Duration::from_secs(3600));
    let tokens = app.fake.count(Endpoint::Token);
    // Long enough for cutting the database off (an admin connection, ALTER
    // DATABASE, terminating backends) to finish first on a loaded machine:
    // with 1 s, a CI run once saw the answer win and the pair saved.
    app.fake.inject(Fault::delay(Endpoint::Token, Duration::from_secs(5)));
    let write = {
        let client = app.client.clone();
        let request = app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(sub),
            calendar_id: app.fake.calendar_ids(sub)[0].clone(),
            event: Some(event("evt-during-outage")),
        });
        tokio::spawn(async move { client.clone().upsert_event(request).await })
    };
    app.until_called(Endpoint::Token, tokens + 1).await;
    db.refuse_connections().await;
    let status = write.await.expect("task").expect_err("the store refused the new pair");
    assert_status(&status, Code::Unavailable, "STORE_UNAVAILABLE");
    assert_eq!(
        app.fake.count(Endpoint::Token),
        tokens + 1,
        "one refresh, rotated at Cronofy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_the_store_refused_is_written_before_cronofy_is_asked_again() {
    let Some(db) = PgTestDb::create().await else { return };
    let app = spawn_app_edited(on_postgres(&db, None)).await;
    let grant = app.connect(Some("ada")).await;
    lose_the_store_mid_refresh(&app, &db, &grant.sub).await;
    let tokens = app.fake.count(Endpoint::Token);

    db.allow_connections().await;
    // The next call's flight writes the parked pair first and uses it: no
    // refresh with the spent token (the fake would refuse it: NEEDS_REAUTH).
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match upsert(&app, &grant.sub, "evt-after").await {
            Ok(()) => break,
            Err(status) => {
                assert_status(&status, Code::Unavailable, "STORE_UNAVAILABLE");
                assert!(tokio::time::Instant::now() < give_up, "the store never came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(app.fake.count(Endpoint::Token), tokens, "Cronofy was not asked again");
    let stored = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(stored.status, pb::GrantStatus::Active as i32);
    // And the stored pair is the live one: the next refresh works.
    app.clock.advance(Duration::from_secs(3600));
    upsert(&app, &grant.sub, "evt-later")
        .await
        .expect("refreshed with the stored token");
    assert_eq!(app.fake.count(Endpoint::Token), tokens + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_the_store_refused_survives_a_restart_through_the_spill() {
    let Some(db) = PgTestDb::create().await else { return };
    let work = Workdir::new();
    let spill = work.path("spill");
    let app = spawn_app_on_edited(start_fake().await, work, on_postgres(&db, Some(&spill))).await;
    let grant = app.connect(Some("ada")).await;
    lose_the_store_mid_refresh(&app, &db, &grant.sub).await;
    let tokens = app.fake.count(Endpoint::Token);
    // calgate stops while the store is still away: the pair is only on disk now.
    let (fake, work) = app.stop().await;
    let spilled: Vec<_> = std::fs::read_dir(&spill)
        .expect("spill dir")
        .flatten()
        .map(|entry| std::fs::read(entry.path()).expect("spill file"))
        .collect();
    assert_eq!(spilled.len(), 1, "one pair spilled");
    for secret in fake.issued_secrets() {
        assert!(
            !spilled[0].windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a token in the clear in the spill file"
        );
    }

    db.allow_connections().await;
    let app = spawn_app_on_edited(fake, work, on_postgres(&db, Some(&spill))).await;
    // Past the stored (old) token's expiry: the call needs the grant's flight,
    // which writes the spilled pair first and uses it.
    app.clock.advance(Duration::from_secs(3600));
    upsert(&app, &grant.sub, "evt-after-restart")
        .await
        .expect("the spilled pair was written and used");
    assert_eq!(app.fake.count(Endpoint::Token), tokens, "no refresh with a spent token");
    assert_eq!(
        std::fs::read_dir(&spill).expect("spill dir").count(),
        0,
        "a written pair leaves the spill"
    );
    app.clock.advance(Duration::from_secs(3600));
    upsert(&app, &grant.sub, "evt-later")
        .await
        .expect("the live token refreshes");
    let stored = fetch_grant(&app.client, ACME_KEY, &grant.sub).await.expect("grant");
    assert_eq!(stored.status, pb::GrantStatus::Active as i32);
}

/// A rotated pair is on disk before calgate first offers it to the store:
/// a replica killed while the store's retries run (seconds) loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_pair_is_spilled_before_the_store_is_tried() {
    let Some(db) = PgTestDb::create().await else { return };
    let work = Workdir::new();
    let spill = work.path("spill");
    let app = spawn_app_on_edited(start_fake().await, work, on_postgres(&db, Some(&spill))).await;
    let grant = app.connect(Some("ada")).await;
    app.fake.set_refresh_tokens(RefreshTokens::Rotate);
    app.clock.advance(Duration::from_secs(3600));
    let tokens = app.fake.count(Endpoint::Token);
    app.fake.inject(Fault::delay(Endpoint::Token, Duration::from_secs(3)));
    let write = {
        let client = app.client.clone();
        let request = app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: app.fake.calendar_ids(&grant.sub)[0].clone(),
            event: Some(event("evt-during-outage")),
        });
        tokio::spawn(async move { client.clone().upsert_event(request).await })
    };
    app.until_called(Endpoint::Token, tokens + 1).await;
    db.refuse_connections().await;
    let spilled = |dir: &Path| std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while spilled(&spill) == 0 {
        assert!(!write.is_finished(), "the call ended before the pair was spilled");
        assert!(
            tokio::time::Instant::now() < give_up,
            "the pair never reached the spill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_disk = tokio::time::Instant::now();
    let status = write.await.expect("task").expect_err("the store refused the new pair");
    assert_status(&status, Code::Unavailable, "STORE_UNAVAILABLE");
    let tried_for = on_disk.elapsed();
    assert!(
        tried_for > Duration::from_millis(300),
        "spilled only {tried_for:?} before giving up: after the store's retries, not before them"
    );
    db.allow_connections().await;
}

/// calgate refuses to start when the spill directory cannot be written: a
/// rotated pair the store refused would otherwise be lost on a crash.
#[tokio::test]
async fn an_unwritable_spill_directory_stops_the_start() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let config = crate::support::write_config(&fake, &work, |c| {
        crate::support::set(c, "store.spill_dir", "/proc/calgate-spill");
    });
    let ran = crate::lifecycle::calgate(&["serve", "--config", &config.display().to_string()]).await;
    assert!(!ran.ok, "started with an unwritable spill directory");
    assert!(
        ran.stderr.contains("store.spill_dir") || ran.stdout.contains("store.spill_dir"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
}
