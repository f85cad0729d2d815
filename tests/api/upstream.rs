//! How Cronofy's failures reach callers (contract §4).

use std::time::Duration;

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault};
use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::support::*;

async fn upsert(app: &TestApp, sub: &str, calendar_id: &str) -> Result<(), Status> {
    Upsert::new(by_sub(sub), calendar_id).send(&app.client).await
}

#[tokio::test]
async fn each_upstream_status_maps_to_its_grpc_status() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let cases = [
        (403, Code::PermissionDenied, "INSUFFICIENT_SCOPE"),
        (404, Code::NotFound, "CALENDAR_NOT_FOUND"),
        (402, Code::FailedPrecondition, "UPSTREAM_REFUSED"),
        (423, Code::FailedPrecondition, "UPSTREAM_REFUSED"),
        (500, Code::Unavailable, "UPSTREAM_UNAVAILABLE"),
        (502, Code::Unavailable, "UPSTREAM_UNAVAILABLE"),
        (503, Code::Unavailable, "UPSTREAM_UNAVAILABLE"),
    ];
    for (http, code, reason) in cases {
        // 5xx are retried once by the test config: fail both attempts.
        let times = if http >= 500 { 2 } else { 1 };
        app.fake.inject(Fault::status(Endpoint::UpsertEvent, http).times(times));
        let status = upsert(&app, &grant.sub, &calendar).await.expect_err("fault");
        assert_status(&status, code, reason);
    }
}

#[tokio::test]
async fn an_unknown_calendar_is_calendar_not_found() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let status = upsert(&app, &grant.sub, "cal_does_not_exist").await.expect_err("404");
    assert_status(&status, Code::NotFound, "CALENDAR_NOT_FOUND");
}

#[tokio::test]
async fn a_422_carries_cronofys_field_errors() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake.inject(Fault::status(Endpoint::UpsertEvent, 422).body(json!({
        "errors": {"summary": [{"key": "errors.too_long", "description": "too long"}]}
    })));
    let status = upsert(&app, &grant.sub, &calendar).await.expect_err("422");
    assert_status(&status, Code::InvalidArgument, "UPSTREAM_REJECTED");
    assert_eq!(violated_fields(&status), ["event.summary"]);
    // Cronofy's key is the reason callers branch on; its description the text.
    let violation = status
        .get_error_details()
        .bad_request()
        .expect("BadRequest")
        .field_violations[0]
        .clone();
    assert_eq!(
        (violation.reason.as_str(), violation.description.as_str()),
        ("errors.too_long", "too long")
    );

    // The fake's own strictness produces the same shape: a read-only calendar.
    let readonly = app.fake.calendar_ids(&grant.sub)[1].clone();
    let status = upsert(&app, &grant.sub, &readonly).await.expect_err("read-only");
    assert_status(&status, Code::InvalidArgument, "UPSTREAM_REJECTED");
    assert_eq!(violated_fields(&status), ["calendar_id"]);
    let reasons: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.reason.clone()).collect())
        .unwrap_or_default();
    assert_eq!(reasons, ["errors.calendar_readonly"]);
}

/// calgate's own checks carry no reason: only Cronofy's refusals do.
#[tokio::test]
async fn calgates_own_violations_carry_no_cronofy_key() {
    let app = spawn_app().await;
    let status = Upsert::new(by_sub("acc_x"), "")
        .send(&app.client)
        .await
        .expect_err("invalid");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert!(violations.iter().all(|v| v.reason.is_empty()), "{violations:?}");
}

/// A 404 means what the endpoint says is missing: the calendar for event
/// calls, never the calendar for batch, free/busy, availability or
/// Enterprise Connect calls.
#[tokio::test]
async fn a_404_names_what_the_endpoint_found_missing() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake.inject(Fault::status(Endpoint::DeleteEvent, 404));
    let status = app
        .client
        .clone()
        .delete_event(app.req(pb::DeleteEventRequest {
            mode: Default::default(),
            user: Some(pb::delete_event_request::User::Sub(grant.sub.clone())),
            calendar_id: calendar.clone(),
            event_id: "evt-1".into(),
        }))
        .await
        .expect_err("404");
    assert_status(&status, Code::NotFound, "CALENDAR_NOT_FOUND");

    app.fake.inject(Fault::status(Endpoint::Batch, 404));
    let status = app
        .client
        .clone()
        .batch_write_events(app.req(pb::BatchWriteEventsRequest {
            mode: Default::default(),
            user: Some(pb::batch_write_events_request::User::Sub(grant.sub.clone())),
            items: vec![pb::BatchItem {
                operation: Some(pb::batch_item::Operation::Delete(pb::BatchDelete {
                    calendar_id: calendar.clone(),
                    event_id: "evt-1".into(),
                })),
            }],
        }))
        .await
        .expect_err("404");
    assert_status(&status, Code::NotFound, "UPSTREAM_NOT_FOUND");

    app.fake.inject(Fault::status(Endpoint::FreeBusy, 404));
    let status = app
        .client
        .clone()
        .read_free_busy(app.req(pb::ReadFreeBusyRequest {
            user: Some(pb::read_free_busy_request::User::Sub(grant.sub.clone())),
            tzid: "Etc/UTC".into(),
            ..Default::default()
        }))
        .await
        .expect_err("404");
    assert_status(&status, Code::NotFound, "UPSTREAM_NOT_FOUND");
    assert!(status.message().contains("free/busy"), "{}", status.message());
}

#[tokio::test]
async fn a_429_is_resource_exhausted_with_retry_info() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    // Retry-After 7 s exceeds the test config's 3 s retry ceiling: no retry, answered at once.
    app.fake
        .inject(Fault::status(Endpoint::UpsertEvent, 429).retry_after("7"));
    let status = upsert(&app, &grant.sub, &calendar).await.expect_err("429");
    assert_status(&status, Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED");
    let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
    assert_eq!(retry, Some(Duration::from_secs(7)));

    app.fake.inject(Fault::status(Endpoint::UpsertEvent, 429).times(2));
    let status = upsert(&app, &grant.sub, &calendar)
        .await
        .expect_err("429 without Retry-After");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo even without Retry-After"
    );
}

#[tokio::test]
async fn a_timeout_is_unavailable() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    // The test config sets upstream.request_timeout = 1s and two attempts.
    app.fake
        .inject(Fault::delay(Endpoint::UpsertEvent, Duration::from_secs(2)).times(2));
    let status = upsert(&app, &grant.sub, &calendar).await.expect_err("timeout");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
}

#[tokio::test]
async fn the_callers_deadline_is_respected() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake
        .inject(Fault::delay(Endpoint::UpsertEvent, Duration::from_secs(3)));
    let mut request = app.req(pb::UpsertEventRequest {
        mode: Default::default(),
        user: by_sub(&grant.sub),
        calendar_id: calendar,
        event: Some(event("evt-1")),
    });
    // The header alone, so that the answer comes from calgate, not the client's own timer.
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().expect("header"));
    let status = app.client.clone().upsert_event(request).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // Answered at the deadline, not after the upstream: the fake, still
    // stalling, never got to write the event (calgate dropped the request).
    assert_eq!(app.fake.event_count(&grant.sub), 0);
}
