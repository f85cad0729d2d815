//! Several products on one Cronofy application (the usual deployment): acme
//! and globex both configured with acme's client, the same person connected
//! through both. Cronofy keys events, revocations and bulk deletes per
//! application, so calgate must keep the tenants apart itself.

use std::time::{Duration, Instant};

use calgate::{config::Settings, grpc::pb};
use fake_cronofy::{Endpoint, Fault, NextAuthorization};
use secrecy::SecretString;
use tonic::{Code, Status};

use crate::{helpers::*, postgres::PgTestDb};

type Client = calgate::grpc::pb::calendar_write_service_client::CalendarWriteServiceClient<tonic::transport::Channel>;

/// Moves globex onto acme's Cronofy application, and the store onto `pg`.
fn share_application(settings: &mut Settings, pg: Option<&PgTestDb>) {
    let globex = settings
        .tenants
        .iter_mut()
        .find(|tenant| tenant.id == "globex")
        .expect("globex");
    globex.client_id = "acme-client".into();
    globex.client_secret = SecretString::from(ACME_SECRET.to_owned());
    if let Some(pg) = pg {
        settings.store.url = pg.url.clone();
    }
}

/// Lets acme's client redirect to globex's callback too.
fn register_globex_redirect(app: &TestApp) {
    app.fake
        .register_redirect_uris("acme-client", &[ACME_REDIRECT, ACME_REDIRECT_2, GLOBEX_REDIRECT]);
}

/// calgate with acme and globex sharing one application, on SQLite or `pg`.
async fn spawn_shared(pg: Option<&PgTestDb>, edit: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_edited(|settings| {
        share_application(settings, pg);
        edit(settings);
    })
    .await;
    register_globex_redirect(&app);
    app
}

/// The same account connected through acme, then globex: its sub.
async fn connect_both(app: &TestApp, user_ref: &str) -> String {
    let acme = app
        .connect_as(ACME_KEY, ACME_REDIRECT, Some(user_ref))
        .await
        .expect("acme connects");
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(acme.sub.clone()),
        ..Default::default()
    });
    let globex = app
        .connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, Some(user_ref))
        .await
        .expect("globex connects");
    assert_eq!(acme.sub, globex.sub, "one account, two grants");
    acme.sub
}

/// `key`'s tenant writes the event `id` with `summary`.
pub(crate) async fn upsert(
    client: &Client,
    key: &str,
    sub: &str,
    calendar: &str,
    id: &str,
    summary: &str,
) -> Result<(), Status> {
    let mut event = event(id);
    event.summary = summary.into();
    client
        .clone()
        .upsert_event(with_key(
            key,
            pb::UpsertEventRequest {
                user: by_sub(sub),
                calendar_id: calendar.into(),
                event: Some(event),
            },
        ))
        .await
        .map(drop)
}

/// `key`'s tenant deletes the event `id`.
pub(crate) async fn delete(client: &Client, key: &str, sub: &str, calendar: &str, id: &str) -> Result<(), Status> {
    client
        .clone()
        .delete_event(with_key(
            key,
            pb::DeleteEventRequest {
                user: Some(pb::delete_event_request::User::Sub(sub.into())),
                calendar_id: calendar.into(),
                event_id: id.into(),
            },
        ))
        .await
        .map(drop)
}

/// The summaries of the application's live events in the calendar.
pub(crate) fn summaries(fake: &fake_cronofy::FakeCronofy, sub: &str, calendar: &str) -> Vec<String> {
    let mut found: Vec<String> = fake
        .event_ids("acme-client", sub, calendar)
        .iter()
        .filter_map(|id| fake.event(sub, calendar, id))
        .map(|event| event["summary"].as_str().unwrap_or_default().to_owned())
        .collect();
    found.sort();
    found
}

async fn postgres() -> Option<PgTestDb> {
    PgTestDb::create().await
}

// 1. Events: one caller id, two tenants, two Cronofy events.

async fn tenants_never_address_each_others_events(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |_| {}).await;
    let sub = connect_both(&app, "ada").await;
    let calendar = app.fake.calendar_ids(&sub)[0].clone();

    upsert(&app.client, ACME_KEY, &sub, &calendar, "standup", "acme's standup")
        .await
        .expect("acme writes");
    upsert(&app.client, GLOBEX_KEY, &sub, &calendar, "standup", "globex's standup")
        .await
        .expect("globex writes the same id");
    assert_eq!(
        summaries(&app.fake, &sub, &calendar),
        ["acme's standup", "globex's standup"],
        "two events at Cronofy, neither overwritten"
    );
    // The first tenant of the application keeps callers' ids at Cronofy.
    assert!(app.fake.event(&sub, &calendar, "standup").is_some());

    delete(&app.client, GLOBEX_KEY, &sub, &calendar, "standup")
        .await
        .expect("globex deletes its own");
    assert_eq!(summaries(&app.fake, &sub, &calendar), ["acme's standup"]);
    upsert(&app.client, GLOBEX_KEY, &sub, &calendar, "standup", "globex again")
        .await
        .expect("globex writes again");
    delete(&app.client, ACME_KEY, &sub, &calendar, "standup")
        .await
        .expect("acme deletes its own");
    assert_eq!(summaries(&app.fake, &sub, &calendar), ["globex again"]);

    // Ids that would reach into calgate's namespaces, or leave no room for one, are refused.
    let status = upsert(
        &app.client,
        ACME_KEY,
        &sub,
        &calendar,
        "calgate:0123456789ab:standup",
        "x",
    )
    .await
    .expect_err("reserved prefix");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["event.event_id"]);
    let status = delete(&app.client, GLOBEX_KEY, &sub, &calendar, &"x".repeat(236))
        .await
        .expect_err("no room for globex's prefix");
    assert_eq!(violated_fields(&status), ["event_id"]);
    assert!(status.message().contains("235"), "{}", status.message());
    upsert(&app.client, GLOBEX_KEY, &sub, &calendar, &"x".repeat(235), "longest")
        .await
        .expect("the longest id globex has room for");
}

#[tokio::test]
async fn tenants_of_one_application_never_address_each_others_events() {
    tenants_never_address_each_others_events(None).await;
}

#[tokio::test]
async fn tenants_of_one_application_never_address_each_others_events_on_postgres() {
    let Some(pg) = postgres().await else { return };
    tenants_never_address_each_others_events(Some(&pg)).await;
}

#[tokio::test]
async fn an_event_written_before_a_second_tenant_joined_stays_reachable_by_its_id() {
    // acme alone on its application writes an event…
    let fake = start_fake().await;
    let work = Workdir::new();
    let app = spawn_app_on_edited(fake, work, |_| {}).await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    upsert(&app.client, ACME_KEY, &grant.sub, &calendar, "retro", "before")
        .await
        .expect("write");
    // …then globex joins the application (a restart with the new config).
    let (fake, work) = app.stop().await;
    let app = spawn_app_on_edited(fake, work, |settings| share_application(settings, None)).await;
    upsert(&app.client, ACME_KEY, &grant.sub, &calendar, "retro", "after")
        .await
        .expect("update");
    assert_eq!(
        summaries(&app.fake, &grant.sub, &calendar),
        ["after"],
        "updated in place, no duplicate"
    );
    delete(&app.client, ACME_KEY, &grant.sub, &calendar, "retro")
        .await
        .expect("delete");
    assert_eq!(app.fake.event_count(&grant.sub), 0);
}

// 2. Deleting in bulk: only the calling tenant's events, by id.

async fn bulk_deletes_take_only_the_callers_events(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |_| {}).await;
    let sub = connect_both(&app, "ada").await;
    let calendar = app.fake.calendar_ids(&sub)[0].clone();
    upsert(&app.client, ACME_KEY, &sub, &calendar, "a-1", "acme 1")
        .await
        .expect("acme");
    upsert(&app.client, ACME_KEY, &sub, &calendar, "shared-id", "acme 2")
        .await
        .expect("acme");
    // More than one batch of Cronofy's 50.
    for n in 0..55 {
        upsert(&app.client, GLOBEX_KEY, &sub, &calendar, &format!("g-{n}"), "globex")
            .await
            .expect("globex");
    }
    upsert(&app.client, GLOBEX_KEY, &sub, &calendar, "shared-id", "globex")
        .await
        .expect("globex");
    app.fake.clear_requests();

    app.client
        .clone()
        .delete_all_events(with_key(
            GLOBEX_KEY,
            pb::DeleteAllEventsRequest {
                user: Some(pb::delete_all_events_request::User::Sub(sub.clone())),
                calendar_ids: vec![],
            },
        ))
        .await
        .expect("globex deletes all its events");
    assert_eq!(
        summaries(&app.fake, &sub, &calendar),
        ["acme 1", "acme 2"],
        "acme's stay"
    );
    assert_eq!(
        app.fake.count(Endpoint::BulkDeleteEvents),
        0,
        "never Cronofy's bulk delete"
    );
    assert_eq!(app.fake.count(Endpoint::Batch), 2, "56 ids in batches of 50");

    // ForgetUser(delete_events) by globex spares acme's events too.
    upsert(&app.client, GLOBEX_KEY, &sub, &calendar, "g-late", "globex")
        .await
        .expect("globex");
    let forgotten = app
        .client
        .clone()
        .forget_user(with_key(
            GLOBEX_KEY,
            pb::ForgetUserRequest {
                user: Some(pb::forget_user_request::User::Sub(sub.clone())),
                delete_events: true,
            },
        ))
        .await
        .expect("forget")
        .into_inner();
    assert!(forgotten.events_deleted);
    assert_eq!(summaries(&app.fake, &sub, &calendar), ["acme 1", "acme 2"]);
    assert!(
        app.fake.revoked_subs("acme-client").is_empty(),
        "acme still holds the account"
    );
    upsert(&app.client, ACME_KEY, &sub, &calendar, "a-3", "acme 3")
        .await
        .expect("acme's grant still works");
}

#[tokio::test]
async fn a_shared_application_deletes_in_bulk_only_the_callers_events() {
    bulk_deletes_take_only_the_callers_events(None).await;
}

#[tokio::test]
async fn a_shared_application_deletes_in_bulk_only_the_callers_events_on_postgres() {
    let Some(pg) = postgres().await else { return };
    bulk_deletes_take_only_the_callers_events(Some(&pg)).await;
}

// 3. Revocation: the last tenant to let go revokes.

async fn only_the_last_tenant_revokes(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |_| {}).await;
    let sub = connect_both(&app, "ada").await;
    let calendar = app.fake.calendar_ids(&sub)[0].clone();

    let revoked = app
        .client
        .clone()
        .revoke_grant(with_key(GLOBEX_KEY, revoke_by_ref("ada")))
        .await
        .expect("globex revokes")
        .into_inner();
    assert_eq!(revoked.grant.expect("grant").status, pb::GrantStatus::Revoked as i32);
    assert!(app.fake.revoked_subs("acme-client").is_empty(), "Cronofy not asked");
    assert_eq!(app.fake.count(Endpoint::Revoke), 0);
    // acme's grant goes on working, refresh included.
    app.fake.expire_access_tokens();
    upsert(&app.client, ACME_KEY, &sub, &calendar, "after-globex-left", "acme")
        .await
        .expect("acme's grant is intact");
    let status = upsert(&app.client, GLOBEX_KEY, &sub, &calendar, "x", "globex")
        .await
        .expect_err("globex's grant is revoked");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // acme is the last to let go: now Cronofy revokes.
    app.client
        .clone()
        .revoke_grant(with_key(ACME_KEY, revoke_by_ref("ada")))
        .await
        .expect("acme revokes");
    assert_eq!(app.fake.revoked_subs("acme-client"), [sub]);
}

#[tokio::test]
async fn revoking_in_one_tenant_leaves_the_accounts_other_grant_working() {
    only_the_last_tenant_revokes(None).await;
}

#[tokio::test]
async fn revoking_in_one_tenant_leaves_the_accounts_other_grant_working_on_postgres() {
    let Some(pg) = postgres().await else { return };
    only_the_last_tenant_revokes(Some(&pg)).await;
}

async fn queued_revocation_yields_to_a_new_consent(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |settings| {
        settings.upstream.revoke_retry_interval = Duration::from_millis(100);
    })
    .await;
    let grant = app.connect(Some("ada")).await;
    // Cronofy fails the revoke, and every retry until the user is back: it is queued.
    app.fake.inject(Fault::status(Endpoint::Revoke, 503).times(1000));
    let revoked = app
        .client
        .clone()
        .revoke_grant(with_key(ACME_KEY, revoke_by_ref("ada")))
        .await
        .expect("revoked here")
        .into_inner();
    assert!(revoked.upstream_revoke_pending);
    // The user consents again while it waits.
    app.fake.set_next_authorization(NextAuthorization {
        sub: Some(grant.sub.clone()),
        ..Default::default()
    });
    app.connect(Some("ada")).await;
    // An attempt that checked the queue before the consent has met its 503 by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.fake.clear_faults();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        app.fake.revoked_subs("acme-client").is_empty(),
        "the new consent stands"
    );
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake.expire_access_tokens();
    upsert(&app.client, ACME_KEY, &grant.sub, &calendar, "after", "works")
        .await
        .expect("the reconnected grant works");
    assert_eq!(audit_kinds(&app, pg, "revocation_dropped").await, 1, "audited");
}

/// How many audit rows of `kind` the store holds.
async fn audit_kinds(app: &TestApp, pg: Option<&PgTestDb>, kind: &str) -> i64 {
    let query = "SELECT COUNT(*) FROM audit_events WHERE kind = $1";
    match pg {
        Some(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url).await.expect("postgres");
            sqlx::query_scalar(query)
                .bind(kind)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
        None => {
            let url = format!("sqlite://{}", app.work.db_path().display());
            let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
            sqlx::query_scalar(query)
                .bind(kind)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    }
}

#[tokio::test]
async fn a_queued_revocation_never_outlives_a_new_consent() {
    queued_revocation_yields_to_a_new_consent(None).await;
}

#[tokio::test]
async fn a_queued_revocation_never_outlives_a_new_consent_on_postgres() {
    let Some(pg) = postgres().await else { return };
    queued_revocation_yields_to_a_new_consent(Some(&pg)).await;
}

// 5. A fair share of the application's budget.

async fn budget_is_shared_fairly(pg: Option<&PgTestDb>) {
    let app = spawn_shared(pg, |settings| {
        for tenant in &mut settings.tenants {
            tenant.rate_limit.per_second = 5;
            tenant.rate_limit.per_minute = 300;
        }
    })
    .await;
    let sub = connect_both(&app, "ada").await;
    let calendar = app.fake.calendar_ids(&sub)[0].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // acme keeps 150 writes waiting for budget.
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..150 {
        let client = app.client.clone();
        let (sub, calendar) = (sub.clone(), calendar.clone());
        waiting.spawn(async move {
            let mut request = with_key(
                ACME_KEY,
                pb::UpsertEventRequest {
                    user: by_sub(&sub),
                    calendar_id: calendar,
                    event: Some(event(&format!("burst-{n}"))),
                },
            );
            request
                .metadata_mut()
                .insert("grpc-timeout", "120S".parse().expect("timeout"));
            client.clone().upsert_event(request).await.map(drop)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // globex is another product: its own connection (acme's holds
    // grpc.max_concurrent_streams calls, the rest queue in acme's client).
    let globex_client = pb::calendar_write_service_client::CalendarWriteServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .expect("uri")
            .connect_lazy(),
    );
    // globex's writes, one after another, each wait about one refill per busy tenant.
    for n in 0..5 {
        let started = Instant::now();
        upsert(
            &globex_client,
            GLOBEX_KEY,
            &sub,
            &calendar,
            &format!("single-{n}"),
            "globex",
        )
        .await
        .expect("globex's write");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "globex's write {n} waited {took:?}");
    }
    assert!(waiting.len() > 100, "acme's burst was still waiting");
    waiting.abort_all();
}

#[tokio::test]
async fn one_tenants_burst_does_not_queue_in_front_of_another_tenants_call() {
    budget_is_shared_fairly(None).await;
}

#[tokio::test]
async fn one_tenants_burst_does_not_queue_in_front_of_another_tenants_call_on_postgres() {
    let Some(pg) = postgres().await else { return };
    budget_is_shared_fairly(Some(&pg)).await;
}

// 4. Changes: a tenant sees only its own events' changes.

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
