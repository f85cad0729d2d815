//! Replayed notifications cost once (issue #25, item 9): a signed body
//! posted again and again is processed at most once a second — repeats
//! coalesce into one later processing, none is dropped, since two changes in
//! one second can carry the same body — and the pages of changed events read
//! for one channel are bounded per minute.

use std::time::Duration;

use fake_cronofy::{Endpoint, sign_callback};

use crate::{
    notifications::{connect_tracked, post},
    postgres::PgTestDb,
    support::*,
};

/// calgate with `[callbacks]`, on SQLite or `pg`.
async fn spawn(pg: Option<&PgTestDb>) -> TestApp {
    let url = pg.map(|pg| pg.url.clone());
    let (app, _) = spawn_app_with_callbacks(move |settings| {
        if let Some(url) = url {
            settings.store.url = url;
        }
    })
    .await;
    app
}

/// Reads of changed events at the fake (first pages and next pages).
fn event_reads(app: &TestApp) -> usize {
    app.fake.count(Endpoint::ReadEvents)
}

/// Waits until the fake's event reads stop moving for 2.5 s (longer than
/// repeats are held to be coalesced: 1 s, counted in whole seconds).
async fn settled_reads(app: &TestApp) -> usize {
    let mut last = event_reads(app);
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = event_reads(app);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn change_body(changes_since: &str) -> String {
    format!(r#"{{"notification":{{"type":"change","changes_since":"{changes_since}"}},"channel":{{}}}}"#)
}

#[tokio::test]
async fn a_notification_posted_twenty_times_is_processed_at_most_twice() {
    replayed_twenty_times(None).await;
}

#[tokio::test]
async fn a_notification_posted_twenty_times_is_processed_at_most_twice_on_postgres() {
    let Some(db) = PgTestDb::create().await else { return };
    replayed_twenty_times(Some(&db)).await;
}

async fn replayed_twenty_times(pg: Option<&PgTestDb>) {
    let app = spawn(pg).await;
    let (grant, _) = connect_tracked(&app, "ada").await;
    let url = app.fake.channels(&grant.sub)[0].1.clone();
    let before = settled_reads(&app).await;

    let body = change_body("2026-01-01T00:00:00Z");
    let signature = sign_callback(ACME_SECRET, body.as_bytes());
    for _ in 0..20 {
        assert_eq!(post(&url, &body, Some(&signature)).await, 200);
    }
    let reads = settled_reads(&app).await - before;
    assert!(
        (1..=2).contains(&reads),
        "20 deliveries made {reads} reads at Cronofy: once, and once for the repeats coalesced"
    );

    // Another body is another notification.
    let other = change_body("2026-01-01T00:00:01Z");
    assert_eq!(
        post(&url, &other, Some(&sign_callback(ACME_SECRET, other.as_bytes()))).await,
        200
    );
    assert!(
        settled_reads(&app).await - before > reads,
        "a different body is processed"
    );
}

#[tokio::test]
async fn pages_read_for_one_channel_are_bounded_per_minute() {
    pages_bounded(None).await;
}

#[tokio::test]
async fn pages_read_for_one_channel_are_bounded_per_minute_on_postgres() {
    let Some(db) = PgTestDb::create().await else { return };
    pages_bounded(Some(&db)).await;
}

async fn pages_bounded(pg: Option<&PgTestDb>) {
    let app = spawn(pg).await;
    let (grant, _) = connect_tracked(&app, "ada").await;
    let (other, _) = connect_tracked(&app, "bob").await;
    for n in 0..120 {
        Upsert::first_calendar(&app.fake, &grant.sub)
            .event_id(&format!("evt-{n}"))
            .send(&app.client)
            .await
            .expect("upsert");
    }
    Upsert::first_calendar(&app.fake, &other.sub)
        .event_id("theirs")
        .send(&app.client)
        .await
        .expect("upsert");
    // Change reads return only the users' changes: each user touches their events.
    app.fake.user_touches_all_events(&grant.sub);
    app.fake.user_touches_all_events(&other.sub);
    app.fake.set_event_page_size(1);
    let before = settled_reads(&app).await;

    // Three notifications for ada, each announcing changes since an hour ago
    // (120 pages each), within one minute.
    let url = app.fake.channels(&grant.sub)[0].1.clone();
    for second in 0..3 {
        let body = change_body(&format!("2026-01-01T00:00:0{second}Z"));
        assert_eq!(
            post(&url, &body, Some(&sign_callback(ACME_SECRET, body.as_bytes()))).await,
            200
        );
    }
    let reads = settled_reads(&app).await - before;
    assert!(reads <= 100, "{reads} pages read for one channel within a minute");
    assert!(
        reads >= 90,
        "only {reads} pages read: the first notification was cut short"
    );

    // Another channel's notification is not held up by ada's spent pages.
    let other_url = app.fake.channels(&other.sub)[0].1.clone();
    let body = change_body("2026-01-01T00:00:00Z");
    assert_eq!(
        post(&other_url, &body, Some(&sign_callback(ACME_SECRET, body.as_bytes()))).await,
        200
    );
    assert!(
        settled_reads(&app).await - before > reads,
        "bob's notification was read"
    );
}

#[tokio::test]
async fn a_repeat_of_a_processed_notification_is_processed_when_its_second_ends() {
    let app = spawn(None).await;
    let (grant, _) = connect_tracked(&app, "ada").await;
    let url = app.fake.channels(&grant.sub)[0].1.clone();
    let before = settled_reads(&app).await;
    let body = change_body("2026-01-01T00:00:00Z");
    let signature = sign_callback(ACME_SECRET, body.as_bytes());
    assert_eq!(post(&url, &body, Some(&signature)).await, 200);
    let first = wait_for_reads_above(&app, before, Duration::from_secs(10))
        .await
        .expect("the notification is processed");

    // The same body again at once, as a second change in the same second
    // would send it: coalesced, then processed when the second ends; the
    // worker is woken for it rather than left to its 5 s poll.
    let posted = tokio::time::Instant::now();
    assert_eq!(post(&url, &body, Some(&signature)).await, 200);
    wait_for_reads_above(&app, first, Duration::from_secs(10))
        .await
        .expect("the repeat is processed, not dropped");
    let waited = posted.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "the repeat waited {waited:?}: for the worker's poll, not for its second"
    );
}

/// Waits up to `limit` for the fake's event reads to pass `count`; returns them.
async fn wait_for_reads_above(app: &TestApp, count: usize, limit: Duration) -> Option<usize> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        let now = event_reads(app);
        if now > count {
            return Some(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
