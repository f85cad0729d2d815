//! The background refresher: grants used recently are refreshed before their
//! tokens need it, without any call; idle ones are left alone; several
//! replicas refresh each grant once.

use std::time::Duration;

use fake_cronofy::Endpoint;

use crate::{
    postgres::{PgTestDb, use_postgres},
    support::*,
    support::{set, start_binary_with},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_grants_are_refreshed_before_expiry_without_a_call_and_idle_ones_are_not() {
    let app = spawn_app_edited(|settings| {
        settings.refresh_ahead.enabled = true;
        settings.refresh_ahead.interval = Duration::from_millis(50);
        settings.refresh_ahead.used_within = Duration::from_secs(40 * 60);
    })
    .await;
    // Tokens live an hour; the margin is 5 minutes, the lead 15.
    let ada = app.connect(Some("ada")).await;
    let bob = app.connect(Some("bob")).await;
    app.clock.advance(Duration::from_secs(30 * 60));
    // Ada's product writes for her; nothing is written for bob.
    Upsert::first_calendar(&app.fake, &ada.sub)
        .send(&app.client)
        .await
        .expect("write for ada");
    assert_eq!(
        app.fake.count(Endpoint::Token),
        2,
        "a token valid 30 more minutes is not refreshed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // a few rounds record ada's use
    let upserts = app.fake.count(Endpoint::UpsertEvent);

    // 10 minutes before expiry: past every grant's background window, short of any call's.
    app.clock.advance(Duration::from_secs(20 * 60));
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while app.fake.refreshes_of(&ada.sub) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ada's token was not refreshed ahead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // ten more rounds
    assert_eq!(app.fake.refreshes_of(&ada.sub), 1, "once");
    assert_eq!(
        app.fake.refreshes_of(&bob.sub),
        0,
        "bob was last used 50 minutes ago, beyond used_within: his next call refreshes"
    );
    assert_eq!(app.fake.count(Endpoint::UpsertEvent), upserts, "no call was made");

    // Ada's next call uses the refreshed token at once.
    Upsert::first_calendar(&app.fake, &ada.sub)
        .send(&app.client)
        .await
        .expect("write for ada");
    assert_eq!(app.fake.count(Endpoint::Token), 3);
}

/// Two replicas on one PostgreSQL, real time: every grant is refreshed ahead
/// of its expiry exactly once, with no call at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_refresh_each_grant_once_ahead_of_expiry() {
    let Some(db) = PgTestDb::create().await else { return };
    let fake = start_fake().await;
    let work = Workdir::new();
    // Tokens live 40 s; margin 5 s and lead 10 s: each grant is due 10–20 s before
    // expiry, its refreshed token not before 20 s after that.
    fake.set_access_token_ttl(Duration::from_secs(40));
    let edit = |c: &mut toml::Table| {
        use_postgres(c, &db.url);
        set(c, "refresh_margin", "5s");
        set(c, "refresh_ahead.enabled", true);
        set(c, "refresh_ahead.lead", "10s");
        set(c, "refresh_ahead.interval", "100ms");
    };
    let a = start_binary_with(&fake, &work, edit).await;
    let b = start_binary_with(&fake, &work, edit).await;
    let started = tokio::time::Instant::now();
    let mut subs = Vec::new();
    for n in 0..8 {
        let replica = if n % 2 == 0 { &a } else { &b };
        subs.push(replica.connect(&format!("user-{n}")).await.sub);
    }
    let connected = started.elapsed();
    let deadline = started + Duration::from_secs(40);
    while subs.iter().any(|sub| fake.refreshes_of(sub) == 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every grant was refreshed before its token expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refreshed_after = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for sub in &subs {
        assert_eq!(fake.refreshes_of(sub), 1, "{sub} refreshed more than once");
    }
    assert_eq!(fake.count(Endpoint::Token), 16, "8 exchanges, 8 refreshes");
    assert_eq!(fake.count(Endpoint::UpsertEvent), 0, "no call");
    assert!(
        refreshed_after < connected + Duration::from_secs(40),
        "refreshed before the last token expired: {refreshed_after:?}"
    );
    drop((a, b));
}
