//! Change tracking on a shared application: each tenant sees only its own events' changes, and notifications are processed fairly within the background share.

use super::*;

/// calgate with `[callbacks]`, acme and globex sharing one application.
async fn spawn_shared_with_callbacks(pg: Option<&PgTestDb>) -> TestApp {
    let (app, _) = spawn_app_with_callbacks(|settings| share_application(settings, pg)).await;
    register_globex_redirect(&app);
    app
}

/// Waits until `key`'s grant for `sub` tracks event changes (its channel is open).
async fn tracking_events(app: &TestApp, key: &str, sub: &str) {
    tokio::time::timeout(ARRIVAL, async {
        loop {
            let grant = fetch_grant(&app.client, key, sub).await.expect("grant");
            if grant.change_tracking == pb::ChangeTracking::Events as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the channel opens");
}

/// The stream's next change, if one comes within `within`.
async fn next_within(stream: &mut tonic::Streaming<pb::Change>, within: Duration) -> Option<pb::Change> {
    tokio::time::timeout(within, stream.message())
        .await
        .ok()
        .map(|message| message.expect("stream").expect("open stream"))
}

fn event_id_of(change: &pb::Change) -> &str {
    match &change.change {
        Some(pb::change::Change::Event(event)) => &event.event_id,
        other => panic!("an event change, not {other:?}"),
    }
}

async fn changes_reach_only_the_writer(pg: Option<&PgTestDb>) {
    let app = spawn_shared_with_callbacks(pg).await;
    let mut acme_stream = watch(&app.client, ACME_KEY, "").await.expect("acme watches");
    let mut globex_stream = watch(&app.client, GLOBEX_KEY, "").await.expect("globex watches");
    let sub = connect_both(&app, "ada").await;
    tracking_events(&app, ACME_KEY, &sub).await;
    tracking_events(&app, GLOBEX_KEY, &sub).await;
    for stream in [&mut acme_stream, &mut globex_stream] {
        next(stream).await; // CONNECTED
    }
    let calendar = app.fake.calendar_ids(&sub)[0].clone();
    upsert(&app.client, ACME_KEY, &sub, &calendar, "standup", "acme's")
        .await
        .expect("acme writes");
    upsert(&app.client, GLOBEX_KEY, &sub, &calendar, "standup", "globex's")
        .await
        .expect("globex writes");

    // The user moves acme's event: acme hears of it, globex does not.
    app.fake
        .user_edits_event(
            &sub,
            &calendar,
            "standup",
            "2026-06-01T10:00:00Z",
            "2026-06-01T11:00:00Z",
            None,
        )
        .await;
    assert_eq!(event_id_of(&next(&mut acme_stream).await), "standup");
    let leaked = next_within(&mut globex_stream, Duration::from_secs(3)).await;
    assert!(leaked.is_none(), "acme's event reached globex: {leaked:?}");

    // The user moves globex's event: globex hears of it by its own id, acme does not.
    let globex_event = app
        .fake
        .event_ids("acme-client", &sub, &calendar)
        .into_iter()
        .find(|id| id.starts_with("calgate:"))
        .expect("globex's event at Cronofy");
    app.fake
        .user_edits_event(
            &sub,
            &calendar,
            &globex_event,
            "2026-06-02T10:00:00Z",
            "2026-06-02T11:00:00Z",
            None,
        )
        .await;
    assert_eq!(
        event_id_of(&next(&mut globex_stream).await),
        "standup",
        "the caller's id"
    );
    let leaked = next_within(&mut acme_stream, Duration::from_secs(3)).await;
    assert!(leaked.is_none(), "globex's event reached acme: {leaked:?}");
}

#[tokio::test]
async fn a_tenant_watches_only_its_own_events_changes() {
    changes_reach_only_the_writer(None).await;
}

#[tokio::test]
async fn a_tenant_watches_only_its_own_events_changes_on_postgres() {
    let Some(pg) = postgres().await else { return };
    changes_reach_only_the_writer(Some(&pg)).await;
}

// 6. Push notifications fairly.

async fn notifications_are_processed_fairly(pg: Option<&PgTestDb>) {
    // Cronofy answers slowly, not never: calls wait for its answers.
    let (app, _) = spawn_app_with_callbacks(|settings| {
        share_application(settings, pg);
        settings.upstream.request_timeout = Duration::from_secs(10);
        settings.store.upstream_request_timeout = Duration::from_secs(10);
    })
    .await;
    register_globex_redirect(&app);
    let ada = app.connect_as(ACME_KEY, ACME_REDIRECT, Some("ada")).await.expect("ada");
    let bob = app
        .connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, Some("bob"))
        .await
        .expect("bob");
    tracking_events(&app, ACME_KEY, &ada.sub).await;
    tracking_events(&app, GLOBEX_KEY, &bob.sub).await;
    let bob_calendar = app.fake.calendar_ids(&bob.sub)[0].clone();
    upsert(&app.client, GLOBEX_KEY, &bob.sub, &bob_calendar, "review", "globex's")
        .await
        .expect("globex writes");
    let mut globex_stream = watch(&app.client, GLOBEX_KEY, "").await.expect("globex watches");

    // Fifteen of acme's notifications wait behind Cronofy's 3-second answers…
    app.fake
        .inject(Fault::delay(Endpoint::ReadEvents, Duration::from_secs(3)).times(40));
    for n in 0..15 {
        let statuses = app
            .fake
            .notify_change(&ada.sub, format!("2026-01-01T00:00:{n:02}Z"))
            .await;
        assert_eq!(statuses, [200]);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // …and one of globex's is processed within seconds.
    let review = app.fake.event_ids("acme-client", &bob.sub, &bob_calendar).remove(0);
    let started = Instant::now();
    app.fake
        .user_edits_event(
            &bob.sub,
            &bob_calendar,
            &review,
            "2026-06-01T10:00:00Z",
            "2026-06-01T11:00:00Z",
            None,
        )
        .await;
    let change = next(&mut globex_stream).await;
    assert_eq!(event_id_of(&change), "review");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "globex's notification waited {took:?}");
    app.fake.clear_faults();
}

#[tokio::test]
async fn one_tenants_notification_backlog_does_not_delay_another_tenants() {
    notifications_are_processed_fairly(None).await;
}

#[tokio::test]
async fn one_tenants_notification_backlog_does_not_delay_another_tenants_on_postgres() {
    let Some(pg) = postgres().await else { return };
    notifications_are_processed_fairly(Some(&pg)).await;
}

/// Processing notifications is background work: it takes only background
/// work's share of the application's budget (`refresh_ahead.budget_percent`),
/// so a backlog of changes never eats the budget callers' writes need.
async fn notifications_take_the_background_share(pg: Option<&PgTestDb>) {
    let (app, _) = spawn_app_with_callbacks(|settings| {
        share_application(settings, pg);
        for tenant in &mut settings.tenants {
            tenant.rate_limit.per_second = 5;
            tenant.rate_limit.per_minute = 300;
        }
        // A fifth of 5 a second: one background call a second.
        settings.refresh_ahead.budget_percent = 20;
    })
    .await;
    register_globex_redirect(&app);
    let ada = app.connect_as(ACME_KEY, ACME_REDIRECT, Some("ada")).await.expect("ada");
    tracking_events(&app, ACME_KEY, &ada.sub).await;
    let calendar = app.fake.calendar_ids(&ada.sub)[0].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.fake.clear_requests();

    const NOTIFICATIONS: usize = 6;
    for n in 0..NOTIFICATIONS {
        let statuses = app
            .fake
            .notify_change(&ada.sub, format!("2026-01-01T00:00:{n:02}Z"))
            .await;
        assert_eq!(statuses, [200]);
    }
    // Callers' writes meanwhile go through at once: they go first.
    for n in 0..3 {
        let started = Instant::now();
        upsert(&app.client, ACME_KEY, &ada.sub, &calendar, &format!("w-{n}"), "acme's")
            .await
            .expect("acme's write");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a write waited behind notifications"
        );
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        while app.fake.count(Endpoint::ReadEvents) < NOTIFICATIONS {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every notification is processed");
    let mut reads: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|request| request.endpoint == Endpoint::ReadEvents)
        .map(|request| request.at)
        .collect();
    reads.sort();
    let busiest = fake_cronofy::busiest_window(&reads, Duration::from_secs(1));
    assert!(
        busiest <= 2,
        "notifications took {busiest} calls in one second; their share is 1 a second"
    );
}

#[tokio::test]
async fn notifications_take_only_the_background_share_of_the_budget() {
    notifications_take_the_background_share(None).await;
}

#[tokio::test]
async fn notifications_take_only_the_background_share_of_the_budget_on_postgres() {
    let Some(pg) = postgres().await else { return };
    notifications_take_the_background_share(Some(&pg)).await;
}
