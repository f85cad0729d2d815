//! ReadFreeBusy: every page followed, never onto another host.

use calgate::{
    fake_cronofy::{Endpoint, Fault},
    grpc::pb,
};
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

fn request(sub: &str, calendar_ids: Vec<String>) -> pb::ReadFreeBusyRequest {
    pb::ReadFreeBusyRequest {
        user: Some(pb::read_free_busy_request::User::Sub(sub.into())),
        from: "2026-12-01".into(),
        to: "2026-12-08".into(),
        tzid: "Europe/London".into(),
        calendar_ids,
    }
}

#[tokio::test]
async fn every_page_is_followed_and_times_and_dates_are_kept_apart() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendars = app.fake.calendar_ids(&grant.sub);
    let (work, holidays) = (&calendars[0], &calendars[1]);
    app.fake
        .add_busy_period(&grant.sub, work, "2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z", "busy");
    app.fake.add_busy_period(
        &grant.sub,
        work,
        "2026-12-02T09:00:00Z",
        "2026-12-02T09:30:00Z",
        "tentative",
    );
    app.fake
        .add_busy_period(&grant.sub, holidays, "2026-12-03", "2026-12-04", "busy");
    app.fake
        .add_busy_period(&grant.sub, work, "2026-12-05T14:00:00Z", "2026-12-05T15:00:00Z", "busy");
    app.fake
        .add_busy_period(&grant.sub, work, "2026-12-07T08:00:00Z", "2026-12-07T08:15:00Z", "busy");
    app.fake
        .add_busy_period(&grant.sub, work, "2026-12-09T08:00:00Z", "2026-12-09T08:15:00Z", "busy"); // after `to`
    app.fake.set_free_busy_page_size(2);

    let periods = app
        .client
        .clone()
        .read_free_busy(app.req(request(&grant.sub, vec![])))
        .await
        .expect("free/busy")
        .into_inner()
        .periods;
    assert_eq!(periods.len(), 5, "three pages of two");
    assert_eq!(app.fake.count(Endpoint::FreeBusy), 3);
    assert_eq!(periods[1].status, "tentative");
    assert!(matches!(
        periods[0].start.as_ref().and_then(|t| t.value.clone()),
        Some(pb::event_time::Value::Time(ts)) if ts.seconds == 1_796_115_600
    ));
    assert_eq!(
        periods[2].start.as_ref().and_then(|t| t.value.clone()),
        Some(pb::event_time::Value::Date("2026-12-03".into()))
    );
    assert_eq!(periods[2].calendar_id, *holidays);

    let only_work = app
        .client
        .clone()
        .read_free_busy(app.req(request(&grant.sub, vec![work.clone()])))
        .await
        .expect("filtered")
        .into_inner()
        .periods;
    assert_eq!(only_work.len(), 4);
    assert!(only_work.iter().all(|p| p.calendar_id == *work));
}

#[tokio::test]
async fn a_next_page_on_another_host_is_not_followed() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.fake.inject(Fault::status(Endpoint::FreeBusy, 200).body(json!({
        "pages": {"current": 1, "total": 2, "next_page": "http://127.0.0.2:9/v1/free_busy?page=2"},
        "free_busy": [],
    })));
    let status = app
        .client
        .clone()
        .read_free_busy(app.req(request(&grant.sub, vec![])))
        .await
        .expect_err("foreign next_page");
    assert_status(&status, Code::FailedPrecondition, "UPSTREAM_REFUSED");
}

#[tokio::test]
async fn bad_queries_are_named_before_any_call() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let mut bad = request(&grant.sub, vec![String::new()]);
    bad.from = "2026-12-08".into();
    bad.to = "2026-12-01".into();
    bad.tzid = String::new();
    let status = app
        .client
        .clone()
        .read_free_busy(app.req(bad))
        .await
        .expect_err("invalid");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["to", "tzid", "calendar_ids[0]"]);
    let mut bad_date = request(&grant.sub, vec![]);
    bad_date.from = "1 Dec".into();
    let status = app
        .client
        .clone()
        .read_free_busy(app.req(bad_date))
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["from"]);
    assert_eq!(app.fake.count(Endpoint::FreeBusy), 0);
}
