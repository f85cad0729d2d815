//! Several products on one Cronofy application (the usual deployment): acme
//! and globex both configured with acme's client, the same person connected
//! through both. Cronofy keys events, revocations and bulk deletes per
//! application, so calgate must keep the tenants apart itself.

mod budget;
mod changes;
mod queue;
mod revocation;

use std::time::{Duration, Instant};

use calgate::{config::Settings, grpc::pb};
use fake_cronofy::{Endpoint, Fault, NextAuthorization};
use secrecy::SecretString;
use tonic::{Code, Status};

use crate::{postgres::PgTestDb, support::*};

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
                mode: Default::default(),
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
                mode: Default::default(),
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
    // Seen gone before the revoke: acme's events, still there, are not globex's to wait for.
    assert_eq!(forgotten.events_deletion(), pb::EventsDeletion::Confirmed);
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
