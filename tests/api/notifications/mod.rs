//! Cronofy push notifications: a channel per connected grant, signed
//! notifications answered at once and processed in the background, event
//! changes made outside calgate (and never calgate's own), profile
//! disconnection, all reaching WatchChanges.

mod failures;
mod profiles;

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault, NextAuthorization, sign_callback};
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

use crate::{
    postgres::{PgTestDb, use_postgres},
    support::*,
    support::{free_port, start_binary_with, with_callbacks},
};

/// Polls GetGrant until its change tracking is `want`.
pub(crate) async fn tracking_becomes(app: &TestApp, sub: &str, want: pb::ChangeTracking) -> pb::Grant {
    tokio::time::timeout(ARRIVAL, async {
        loop {
            let grant = fetch_grant(&app.client, ACME_KEY, sub).await.expect("grant");
            if grant.change_tracking == want as i32 {
                break grant;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("change tracking never became {want:?}"))
}

/// Polls GetGrant until it reports why opening the channel failed.
async fn failure_reported(app: &TestApp, sub: &str) -> String {
    tokio::time::timeout(ARRIVAL, async {
        loop {
            let grant = fetch_grant(&app.client, ACME_KEY, sub).await.expect("grant");
            if !grant.change_tracking_error.is_empty() {
                break grant.change_tracking_error;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the failure is reported")
}

/// Connects `user_ref` as acme and waits for its channel to open.
pub(crate) async fn connect_tracked(app: &TestApp, user_ref: &str) -> (pb::Grant, String) {
    let grant = app.connect(Some(user_ref)).await;
    tracking_becomes(app, &grant.sub, pb::ChangeTracking::Events).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    (grant, calendar)
}

/// A minute ago in whole seconds, as a notification's `changes_since`.
fn minute_ago() -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::seconds(60))
        .replace_nanosecond(0)
        .expect("whole seconds")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// The user's events `evt-000`…, written through calgate (padded, so the
/// fake pages them in this order).
async fn write_events(app: &TestApp, sub: &str, count: usize) {
    for n in 0..count {
        Upsert::first_calendar(&app.fake, sub)
            .event_id(&format!("evt-{n:03}"))
            .send(&app.client)
            .await
            .expect("upsert");
    }
}

fn event_change(change: &pb::Change) -> &pb::EventChanged {
    match &change.change {
        Some(pb::change::Change::Event(event)) => event,
        other => panic!("an event change, not {other:?}"),
    }
}

fn grant_change(change: &pb::Change) -> &pb::GrantChanged {
    match &change.change {
        Some(pb::change::Change::Grant(grant)) => grant,
        other => panic!("a grant change, not {other:?}"),
    }
}

/// Skips the CONNECTED change of a grant just connected.
async fn skip_connected(stream: &mut Streaming<pb::Change>) {
    assert_eq!(grant_change(&next(stream).await).reason, "CONNECTED");
}

pub(crate) async fn post(url: &str, body: &str, signature: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Cronofy-HMAC-SHA256", signature);
    }
    request
        .send()
        .await
        .expect("callback listener answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_connected_grant_gets_a_channel_and_its_verification_is_acknowledged() {
    let (app, base) = spawn_app_with_callbacks(|_| {}).await;
    let (grant, _) = connect_tracked(&app, "ada").await;

    let channels = app.fake.channels(&grant.sub);
    assert_eq!(channels.len(), 1);
    let (_, callback_url) = &channels[0];
    let key = callback_url
        .strip_prefix(&format!("{base}/cronofy/notifications/"))
        .expect("the channel calls back calgate's notification path");
    assert!(key.len() == 33 && key.starts_with('n'), "an opaque key: {key}");
    let created = app
        .fake
        .requests()
        .into_iter()
        .find(|r| r.endpoint == Endpoint::CreateChannel)
        .and_then(|r| r.json())
        .expect("a channel request");
    assert_eq!(
        created,
        serde_json::json!({"callback_url": callback_url, "filters": {"only_managed": true}})
    );
    // Cronofy's verification notification was signed, delivered and acknowledged.
    let verified = tokio::time::timeout(ARRIVAL, async {
        loop {
            if let Some(sent) = app.fake.notifications_sent().first().cloned() {
                break sent;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("verification sent");
    assert!(verified.body.contains(r#""type":"verification""#));
    assert_eq!(verified.status, 200);

    // Reconnecting the same account keeps its one channel.
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(grant.sub.clone()),
        ..Default::default()
    });
    app.connect(Some("ada")).await;
    tracking_becomes(&app, &grant.sub, pb::ChangeTracking::Events).await;
    assert_eq!(app.fake.channels(&grant.sub).len(), 1);
    assert_eq!(app.fake.count(Endpoint::CreateChannel), 1);
}

#[tokio::test]
async fn without_callbacks_there_are_no_channels() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    assert_eq!(grant.change_tracking, pb::ChangeTracking::Off as i32);
    Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect("upsert");
    assert_eq!(app.fake.count(Endpoint::CreateChannel), 0);
}

#[tokio::test]
async fn events_the_user_moves_or_deletes_reach_the_watcher_and_calgates_own_writes_do_not() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    for id in ["interview", "debrief"] {
        Upsert::first_calendar(&app.fake, &grant.sub)
            .event_id(id)
            .send(&app.client)
            .await
            .expect("upsert");
    }

    // The user moves the interview an hour later and renames it.
    let statuses = app
        .fake
        .user_edits_event(
            &grant.sub,
            &calendar,
            "interview",
            "2026-06-01T10:00:00Z",
            "2026-06-01T11:00:00Z",
            Some("Interview (moved)"),
        )
        .await;
    assert_eq!(statuses, [200], "answered at once");
    let moved = next(&mut stream).await;
    assert_eq!(
        (moved.sub.as_str(), moved.user_ref.as_str()),
        (grant.sub.as_str(), "ada")
    );
    let event = event_change(&moved);
    assert_eq!(event.kind, pb::EventChangeKind::Updated as i32);
    assert_eq!(
        (event.calendar_id.as_str(), event.event_id.as_str()),
        (calendar.as_str(), "interview")
    );
    assert_eq!(event.summary, "Interview (moved)");
    assert_eq!(event.start, Some(at(1_780_308_000)));
    assert_eq!(event.end, Some(at(1_780_311_600)));

    // calgate's own writes and deletes come back in reads: never reported.
    let before_own = std::time::SystemTime::now() - Duration::from_secs(2);
    Upsert::first_calendar(&app.fake, &grant.sub)
        .event_id("interview")
        .send(&app.client)
        .await
        .expect("calgate moves it back");
    app.client
        .clone()
        .delete_event(with_key(
            ACME_KEY,
            pb::DeleteEventRequest {
                mode: Default::default(),
                user: Some(pb::delete_event_request::User::Sub(grant.sub.clone())),
                calendar_id: calendar.clone(),
                event_id: "interview".into(),
            },
        ))
        .await
        .expect("calgate deletes it");
    let since = time::OffsetDateTime::from(before_own)
        .replace_nanosecond(0)
        .expect("whole seconds")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert_eq!(app.fake.notify_change(&grant.sub, since).await, [200]);

    // The user deletes the debrief: the next change on the stream is that.
    assert_eq!(
        app.fake.user_deletes_event(&grant.sub, &calendar, "debrief").await,
        [200]
    );
    let deleted = next(&mut stream).await;
    let event = event_change(&deleted);
    assert_eq!(event.kind, pb::EventChangeKind::Deleted as i32);
    assert_eq!(event.event_id, "debrief");
    assert_eq!(event.start, None);
    // The earlier notification's read may have seen the deletion first; the
    // debrief's own notification is read from its changes_since, soon if not yet.
    let since = last_changes_since(&app);
    let read_from_since =
        tokio::time::timeout(ARRIVAL, async {
            while !app.fake.requests().iter().any(|r| {
                r.endpoint == Endpoint::ReadEvents && r.form().contains(&("last_modified".into(), since.clone()))
            }) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    assert!(
        read_from_since.is_ok(),
        "the read starts at the notification's changes_since"
    );
}

/// The `changes_since` of the last change notification the fake sent.
fn last_changes_since(app: &TestApp) -> String {
    let last = app
        .fake
        .notifications_sent()
        .into_iter()
        .rev()
        .find(|sent| sent.body.contains(r#""type":"change""#))
        .expect("a change notification");
    let body: serde_json::Value = serde_json::from_str(&last.body).expect("JSON");
    body["notification"]["changes_since"]
        .as_str()
        .expect("changes_since")
        .to_owned()
}

#[tokio::test]
async fn every_page_of_changed_events_is_read() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    write_events(&app, &grant.sub, 5).await;
    // Only the user's changes come back in a change read: the user touches all five.
    app.fake.user_touches_all_events(&grant.sub);
    app.fake.set_event_page_size(2);
    // Changes since a minute ago: all five events, three pages; the deleted
    // one (evt-004) is on the last.
    let minute_ago = minute_ago();
    app.fake.pin_changes_since(Some(&minute_ago));
    assert_eq!(
        app.fake.user_deletes_event(&grant.sub, &calendar, "evt-004").await,
        [200]
    );
    let deleted = next(&mut stream).await;
    assert_eq!(event_change(&deleted).event_id, "evt-004");
    let pages = app
        .fake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::ReadEvents && r.path.starts_with("/v1/events/pages/"))
        .count();
    assert_eq!(pages, 2, "followed next_page to the third page");
}

/// More changed events than a grant's pages for a minute: reading stops
/// there and goes on the next minute from the page where it stopped, so no
/// change is dropped and no page is read twice.
#[tokio::test]
async fn changes_past_a_minutes_pages_are_read_the_next_minute_from_where_reading_stopped() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    const EVENTS: usize = 102; // one page each: two more than a minute's 100 pages
    write_events(&app, &grant.sub, EVENTS).await;
    app.fake.user_touches_all_events(&grant.sub);
    app.fake.set_event_page_size(1);
    let minute_ago = minute_ago();
    app.fake.pin_changes_since(Some(&minute_ago));
    let reads_since = |prefix: &'static str, before: usize| {
        app.fake
            .requests()
            .iter()
            .filter(|r| r.endpoint == Endpoint::ReadEvents && r.path.starts_with(prefix))
            .count()
            - before
    };
    // Opening the channel probed the events once already.
    let (probes, later_probes) = (reads_since("/v1/events", 0), reads_since("/v1/events/pages/", 0));
    let reads = |prefix: &'static str| reads_since(prefix, if prefix == "/v1/events" { probes } else { later_probes });
    // The fake pages events in id order: this one is on the last page.
    let last = format!("evt-{:03}", EVENTS - 1);
    assert_eq!(app.fake.user_deletes_event(&grant.sub, &calendar, &last).await, [200]);
    tokio::time::timeout(ARRIVAL, async {
        while reads("/v1/events") < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the minute's pages are read");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reads("/v1/events"), 100, "a minute's pages, no more");

    app.clock.advance(Duration::from_secs(61));
    let deleted = next(&mut stream).await;
    assert_eq!(
        event_change(&deleted).event_id,
        last,
        "the change on the last page is not dropped"
    );
    assert_eq!(reads("/v1/events/pages/"), EVENTS - 1, "every later page read once");
    assert_eq!(
        reads("/v1/events") - reads("/v1/events/pages/"),
        1,
        "reading went on from the page where it stopped, not from the first"
    );
}

#[tokio::test]
async fn a_notification_delivered_twice_records_its_changes_once() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    for id in ["one", "two"] {
        Upsert::first_calendar(&app.fake, &grant.sub)
            .event_id(id)
            .send(&app.client)
            .await
            .expect("upsert");
    }
    assert_eq!(app.fake.user_deletes_event(&grant.sub, &calendar, "one").await, [200]);
    assert_eq!(event_change(&next(&mut stream).await).event_id, "one");

    // Cronofy delivers the same notification again, twice.
    let sent = app.fake.notifications_sent().last().cloned().expect("sent");
    for _ in 0..2 {
        assert_eq!(post(&sent.url, &sent.body, Some(&sent.signature)).await, 200);
    }
    assert_eq!(app.fake.user_deletes_event(&grant.sub, &calendar, "two").await, [200]);
    assert_eq!(
        event_change(&next(&mut stream).await).event_id,
        "two",
        "the repeated notification recorded nothing"
    );
}

#[tokio::test]
async fn forged_or_misdirected_notifications_are_refused_and_unknown_types_ignored() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    Upsert::first_calendar(&app.fake, &grant.sub)
        .event_id("kept")
        .send(&app.client)
        .await
        .expect("upsert");
    let url = app.fake.channels(&grant.sub)[0].1.clone();
    let body = r#"{"notification":{"type":"profile_disconnected"},"channel":{}}"#;

    assert_eq!(post(&url, body, None).await, 401, "unsigned");
    assert_eq!(post(&url, body, Some("bm90IGEgbWFj")).await, 401, "forged");
    assert_eq!(
        post(&url, body, Some(&sign_callback(GLOBEX_SECRET, body.as_bytes()))).await,
        404,
        "another application's signature does not reach acme's channel"
    );
    let unknown_key = format!("{}{}", &url[..url.len() - 32], "0".repeat(32));
    assert_eq!(
        post(&unknown_key, body, Some(&sign_callback(ACME_SECRET, body.as_bytes()))).await,
        404
    );
    let not_a_key = format!("{}x", &url[..url.len() - 1]);
    assert_eq!(
        post(&not_a_key, body, Some(&sign_callback(ACME_SECRET, body.as_bytes()))).await,
        404
    );
    let garbage = "{not json";
    assert_eq!(
        post(&url, garbage, Some(&sign_callback(ACME_SECRET, garbage.as_bytes()))).await,
        400
    );
    // A type calgate does not know: acknowledged, ignored (Cronofy asks for tolerance).
    assert_eq!(app.fake.notify(&grant.sub, "some_future_type").await, [200]);
    // None of the above changed anything: the grant is active, and the next change is the user's.
    let status = fetch_grant(&app.client, ACME_KEY, &grant.sub)
        .await
        .expect("grant")
        .status;
    assert_eq!(status, pb::GrantStatus::Active as i32);
    assert_eq!(app.fake.user_deletes_event(&grant.sub, &calendar, "kept").await, [200]);
    assert_eq!(event_change(&next(&mut stream).await).event_id, "kept");
}

/// A No-Access user's calendar is Cronofy's own and "acts as any other
/// calendar in the Cronofy APIs" (docs: access-modes/no-access): calgate
/// reads back its events like any other, so the user's changes are tracked.
#[tokio::test]
async fn a_no_access_users_events_are_tracked_like_any_other() {
    let (app, _) = spawn_app_with_callbacks(|_| {}).await;
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    app.fake.set_next_authorization(NextAuthorization {
        provider_name: Some("cronofy".into()),
        ..Default::default()
    });
    let (grant, calendar) = connect_tracked(&app, "ada").await;
    skip_connected(&mut stream).await;
    Upsert::first_calendar(&app.fake, &grant.sub)
        .event_id("invite")
        .send(&app.client)
        .await
        .expect("upsert");
    assert_eq!(
        app.fake.user_deletes_event(&grant.sub, &calendar, "invite").await,
        [200]
    );
    let deleted = next(&mut stream).await;
    assert_eq!(event_change(&deleted).event_id, "invite");
}
