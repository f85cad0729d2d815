//! ReadFreeBusy: every page followed, never onto another host.

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault};
use serde_json::json;
use time::{Date, Duration, OffsetDateTime};
use tonic::Code;

use crate::support::*;

/// A day relative to today (UTC): Cronofy reads only 42 days back to 201 ahead.
fn day(offset: i64) -> Date {
    OffsetDateTime::now_utc().date() + Duration::days(offset)
}

/// `HH:MM` on a day, as Cronofy's UTC Time.
fn at_on(offset: i64, hh_mm: &str) -> String {
    format!("{}T{hh_mm}:00Z", day(offset))
}

/// Days 10 to 16 from now, in London.
fn request(sub: &str, calendar_ids: Vec<String>) -> pb::ReadFreeBusyRequest {
    pb::ReadFreeBusyRequest {
        user: Some(pb::read_free_busy_request::User::Sub(sub.into())),
        from: day(10).to_string(),
        to: day(17).to_string(),
        tzid: "Europe/London".into(),
        calendar_ids,
        include_managed: None,
    }
}

async fn read(app: &TestApp, request: pb::ReadFreeBusyRequest) -> Result<Vec<pb::FreeBusyPeriod>, tonic::Status> {
    Ok(app
        .client
        .clone()
        .read_free_busy(app.req(request))
        .await?
        .into_inner()
        .periods)
}

#[tokio::test]
async fn every_page_is_followed_and_times_and_dates_are_kept_apart() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendars = app.fake.calendar_ids(&grant.sub);
    let (work, holidays) = (&calendars[0], &calendars[1]);
    let busy = |calendar: &str, start: String, end: String, status: &str| {
        app.fake.add_busy_period(&grant.sub, calendar, &start, &end, status);
    };
    busy(work, at_on(10, "09:00"), at_on(10, "10:00"), "busy");
    busy(work, at_on(11, "09:00"), at_on(11, "09:30"), "tentative");
    busy(holidays, day(12).to_string(), day(13).to_string(), "busy");
    busy(work, at_on(14, "14:00"), at_on(14, "15:00"), "busy");
    busy(work, at_on(16, "08:00"), at_on(16, "08:15"), "busy");
    busy(work, at_on(18, "08:00"), at_on(18, "08:15"), "busy"); // after `to`
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
    let paths: Vec<String> = app.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[paths.len() - 3], "/v1/free_busy");
    assert!(
        paths[paths.len() - 2..]
            .iter()
            .all(|p| p.starts_with("/v1/free_busy/pages/")),
        "next_page in Cronofy's shape: {paths:?}"
    );
    assert_eq!(periods[1].status, "tentative");
    let ten_am = day(10).midnight().assume_utc() + Duration::hours(9);
    assert!(matches!(
        periods[0].start.as_ref().and_then(|t| t.value.clone()),
        Some(pb::event_time::Value::Time(ts)) if ts.seconds == ten_am.unix_timestamp()
    ));
    assert_eq!(
        periods[2].start.as_ref().and_then(|t| t.value.clone()),
        Some(pb::event_time::Value::Date(day(12).to_string()))
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
    bad.from = day(17).to_string();
    bad.to = day(10).to_string();
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

/// The dates are read in `tzid`: a period late on the evening before in UTC is
/// already the first day in Auckland, not in UTC.
#[tokio::test]
async fn the_dates_are_read_in_the_requests_time_zone() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let work = app.fake.calendar_ids(&grant.sub)[0].clone();
    // 23:00–23:30 UTC the day before `from` is after midnight in Auckland (UTC+12/+13).
    app.fake
        .add_busy_period(&grant.sub, &work, &at_on(9, "23:00"), &at_on(9, "23:30"), "busy");
    let in_zone = |tzid: &str| pb::ReadFreeBusyRequest {
        tzid: tzid.into(),
        ..request(&grant.sub, vec![])
    };
    assert_eq!(
        read(&app, in_zone("Pacific/Auckland")).await.expect("Auckland").len(),
        1
    );
    assert_eq!(read(&app, in_zone("Etc/UTC")).await.expect("UTC").len(), 0);
    let sent = app.fake.requests().pop().expect("request").form();
    assert!(sent.contains(&("tzid".into(), "Etc/UTC".into())), "{sent:?}");
}

/// calgate's own events count unless the caller says otherwise (Cronofy's
/// default leaves them out, so calgate asks for them).
#[tokio::test]
async fn the_applications_own_events_count_unless_left_out() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
    let mut interview = event("evt-interview");
    let start = day(11).midnight().assume_utc() + Duration::hours(14);
    interview.start = Some(at(start.unix_timestamp()));
    interview.end = Some(at(start.unix_timestamp() + 3600));
    app.client
        .clone()
        .upsert_event(app.req(pb::UpsertEventRequest {
            mode: Default::default(),
            user: by_sub(&grant.sub),
            calendar_id: calendar_id.clone(),
            event: Some(interview),
        }))
        .await
        .expect("upsert");

    let periods = read(&app, request(&grant.sub, vec![])).await.expect("default");
    assert_eq!(periods.len(), 1, "the interview calgate wrote is busy time");
    assert_eq!(periods[0].status, "busy");
    let sent = app.fake.requests().pop().expect("request").form();
    assert!(sent.contains(&("include_managed".into(), "true".into())), "{sent:?}");

    let without = pb::ReadFreeBusyRequest {
        include_managed: Some(false),
        ..request(&grant.sub, vec![])
    };
    assert!(read(&app, without).await.expect("left out").is_empty());
    let sent = app.fake.requests().pop().expect("request").form();
    assert!(
        !sent.iter().any(|(k, _)| k == "include_managed"),
        "Cronofy's default: {sent:?}"
    );
}

/// `from` reaches 42 days back and `to` 201 ahead; outside that calgate
/// answers before Cronofy would, and empty dates take Cronofy's defaults.
#[tokio::test]
async fn dates_outside_cronofys_window_are_refused_and_empty_ones_default() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let mut too_early = request(&grant.sub, vec![]);
    too_early.from = day(-60).to_string();
    let status = read(&app, too_early).await.expect_err("too early");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["from"]);
    let mut too_late = request(&grant.sub, vec![]);
    too_late.to = day(300).to_string();
    let status = read(&app, too_late).await.expect_err("too late");
    assert_eq!(violated_fields(&status), ["to"]);
    assert_eq!(app.fake.count(Endpoint::FreeBusy), 0, "refused before Cronofy");

    let work = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake
        .add_busy_period(&grant.sub, &work, &at_on(-30, "09:00"), &at_on(-30, "10:00"), "busy");
    app.fake
        .add_busy_period(&grant.sub, &work, &at_on(150, "09:00"), &at_on(150, "10:00"), "busy");
    let defaults = pb::ReadFreeBusyRequest {
        from: String::new(),
        to: String::new(),
        ..request(&grant.sub, vec![])
    };
    assert_eq!(read(&app, defaults).await.expect("defaults").len(), 2);
    let sent = app.fake.requests().pop().expect("request").form();
    let (from, to) = cronofys_default_window("Europe/London");
    assert!(
        sent.contains(&("from".into(), from)),
        "Cronofy's default, sent explicitly: {sent:?}"
    );
    assert!(
        sent.contains(&("to".into(), to)),
        "Cronofy's default, sent explicitly: {sent:?}"
    );
}

/// Cronofy's default dates seen from today in `tzid`: 42 days back, 201 ahead.
fn cronofys_default_window(tzid: &str) -> (String, String) {
    use jiff::ToSpan;
    let zone = jiff::tz::TimeZone::get(tzid).expect("a known zone");
    let today = jiff::Timestamp::now().to_zoned_datetime(zone).date();
    ((today - 42.days()).to_string(), (today + 201.days()).to_string())
}

/// Cronofy applies its default dates to other events only: asked with
/// neither date, it returns the application's own events "across all of
/// time" (docs: events/free-busy). Empty dates promise Cronofy's window, so
/// calgate sends that window explicitly and nothing outside it comes back.
#[tokio::test]
async fn empty_dates_keep_calgates_own_events_inside_the_default_window() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar_id = app.fake.calendar_ids(&grant.sub)[0].clone();
    for (event_id, offset) in [("evt-next-week", 7), ("evt-long-ago", -400), ("evt-next-year", 400)] {
        let mut placed = event(event_id);
        let start = day(offset).midnight().assume_utc() + Duration::hours(14);
        placed.start = Some(at(start.unix_timestamp()));
        placed.end = Some(at(start.unix_timestamp() + 3600));
        app.client
            .clone()
            .upsert_event(app.req(pb::UpsertEventRequest {
                mode: Default::default(),
                user: by_sub(&grant.sub),
                calendar_id: calendar_id.clone(),
                event: Some(placed),
            }))
            .await
            .expect("upsert");
    }
    let defaults = pb::ReadFreeBusyRequest {
        from: String::new(),
        to: String::new(),
        ..request(&grant.sub, vec![])
    };
    let periods = read(&app, defaults).await.expect("defaults");
    let next_week = day(7).midnight().assume_utc() + Duration::hours(14);
    assert_eq!(periods.len(), 1, "only the event inside Cronofy's window: {periods:?}");
    assert!(matches!(
        periods[0].start.as_ref().and_then(|t| t.value.clone()),
        Some(pb::event_time::Value::Time(ts)) if ts.seconds == next_week.unix_timestamp()
    ));

    // Only `to` given: the window still starts at Cronofy's default `from`.
    let only_to = pb::ReadFreeBusyRequest {
        from: String::new(),
        to: day(30).to_string(),
        ..request(&grant.sub, vec![])
    };
    assert_eq!(read(&app, only_to).await.expect("only to").len(), 1);
    let sent = app.fake.requests().pop().expect("request").form();
    let (from, _) = cronofys_default_window("Europe/London");
    assert!(sent.contains(&("from".into(), from)), "{sent:?}");
}

/// A zone calgate cannot read the default dates in is named before any call.
#[tokio::test]
async fn an_unknown_time_zone_is_named() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let unknown = pb::ReadFreeBusyRequest {
        tzid: "Mars/Olympus_Mons".into(),
        ..request(&grant.sub, vec![])
    };
    let status = read(&app, unknown).await.expect_err("unknown zone");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["tzid"]);
    assert_eq!(app.fake.count(Endpoint::FreeBusy), 0, "refused before Cronofy");
}
