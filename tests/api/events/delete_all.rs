//! DeleteAllEvents: the user's events written by the caller, and only those.

use super::*;

async fn write_events(app: &TestApp, sub: &str, calendar_id: &str, ids: &[&str]) {
    for id in ids {
        Upsert::new(by_sub(sub), calendar_id)
            .event_id(id)
            .send(&app.client)
            .await
            .expect("upsert");
    }
}

async fn delete_all(app: &TestApp, sub: &str, calendar_ids: Vec<String>) -> Result<(), tonic::Status> {
    app.client
        .clone()
        .delete_all_events(app.req(pb::DeleteAllEventsRequest {
            user: Some(pb::delete_all_events_request::User::Sub(sub.into())),
            calendar_ids,
        }))
        .await
        .map(|_| ())
}

/// Offboarding: Cronofy's bulk delete removes every event calgate wrote for a
/// user — in the calendars named, or everywhere — and nobody else's.
#[tokio::test]
async fn delete_all_events_removes_the_users_events_and_only_theirs() {
    let app = spawn_app().await;
    let ada = app.connect(Some("ada")).await;
    let bob = app.connect(Some("bob")).await;
    let ada_calendar = app.fake.calendar_ids(&ada.sub)[0].clone();
    let bob_calendar = app.fake.calendar_ids(&bob.sub)[0].clone();
    write_events(&app, &ada.sub, &ada_calendar, &["evt-1", "evt-2"]).await;
    write_events(&app, &bob.sub, &bob_calendar, &["evt-1"]).await;

    delete_all(&app, &ada.sub, vec![ada_calendar.clone()])
        .await
        .expect("in one calendar");
    let sent = app.fake.requests().pop().expect("request");
    assert_eq!(
        (sent.endpoint, sent.path.as_str()),
        (Endpoint::BulkDeleteEvents, "/v1/events")
    );
    assert_eq!(sent.json(), Some(json!({"calendar_ids": [ada_calendar]})));
    // Accepted (202): Cronofy applies it a little later.
    app.fake.apply_queued_deletes();
    assert_eq!(app.fake.event_count(&ada.sub), 0);

    write_events(&app, &ada.sub, &ada_calendar, &["evt-3"]).await;
    delete_all(&app, &ada.sub, vec![]).await.expect("everywhere");
    assert_eq!(
        app.fake.requests().pop().and_then(|r| r.json()),
        Some(json!({"delete_all": true}))
    );
    app.fake.apply_queued_deletes();
    assert_eq!(app.fake.event_count(&ada.sub), 0);
    assert_eq!(app.fake.event_count(&bob.sub), 1, "another user's events stay");

    let status = delete_all(&app, &ada.sub, vec![String::new()])
        .await
        .expect_err("invalid");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["calendar_ids[0]"]);
    // A calendar Cronofy does not know: its 422 names the field.
    let status = delete_all(&app, &ada.sub, vec!["cal_unknown".into()])
        .await
        .expect_err("unknown");
    assert_status(&status, Code::InvalidArgument, "UPSTREAM_REJECTED");
    assert_eq!(violated_fields(&status), ["calendar_ids"]);
}
