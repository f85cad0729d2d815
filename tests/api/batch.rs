//! BatchWriteEvents: up to 50 writes in one Cronofy call, one status per item.

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault};
use prost::Message;
use serde_json::json;
use tonic::Code;
use tonic_types::pb::{BadRequest, ErrorInfo, Status as RpcStatus};

use crate::support::*;

fn upsert(calendar_id: &str, event_id: &str) -> pb::BatchItem {
    pb::BatchItem {
        operation: Some(pb::batch_item::Operation::Upsert(pb::BatchUpsert {
            calendar_id: calendar_id.into(),
            event: Some(event(event_id)),
        })),
    }
}

fn delete(calendar_id: &str, event_id: &str) -> pb::BatchItem {
    pb::BatchItem {
        operation: Some(pb::batch_item::Operation::Delete(pb::BatchDelete {
            calendar_id: calendar_id.into(),
            event_id: event_id.into(),
        })),
    }
}

fn batch(sub: &str, items: Vec<pb::BatchItem>) -> pb::BatchWriteEventsRequest {
    pb::BatchWriteEventsRequest {
        mode: Default::default(),
        user: Some(pb::batch_write_events_request::User::Sub(sub.into())),
        items,
    }
}

/// (code, ErrorInfo reason, BadRequest fields) of one item's status.
fn describe(status: &RpcStatus) -> (i32, String, Vec<String>) {
    let mut reason = String::new();
    let mut fields = vec![];
    for any in &status.details {
        if any.type_url.ends_with("google.rpc.ErrorInfo") {
            reason = ErrorInfo::decode(any.value.as_slice())
                .map(|i| i.reason)
                .unwrap_or_default();
        } else if any.type_url.ends_with("google.rpc.BadRequest") {
            fields = BadRequest::decode(any.value.as_slice())
                .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                .unwrap_or_default();
        }
    }
    (status.code, reason, fields)
}

#[tokio::test]
async fn a_batch_applies_every_write_and_reports_each_item() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendars = app.fake.calendar_ids(&grant.sub);
    let (writable, readonly) = (&calendars[0], &calendars[1]);
    let answer = app
        .client
        .clone()
        .batch_write_events(app.req(batch(
            &grant.sub,
            vec![
                upsert(writable, "a"),
                upsert(writable, "b"),
                upsert(readonly, "c"),
                delete(writable, "a"),
                upsert("cal_unknown", "d"),
            ],
        )))
        .await
        .expect("batch")
        .into_inner();
    use pb::WriteState::{Delivered, Failed};
    assert_eq!(
        answer.states().collect::<Vec<_>>(),
        [Delivered, Delivered, Failed, Delivered, Failed]
    );
    assert!(
        answer.write_ids.iter().all(String::is_empty),
        "an immediate batch has no write ids"
    );
    let results = answer.results;
    let described: Vec<_> = results.iter().map(describe).collect();
    assert_eq!(described[0], (0, String::new(), vec![]));
    assert_eq!(described[1], (0, String::new(), vec![]));
    assert_eq!(
        described[2],
        (
            Code::InvalidArgument as i32,
            "UPSTREAM_REJECTED".into(),
            vec!["items[2].upsert.calendar_id".into()]
        )
    );
    assert_eq!(described[3], (0, String::new(), vec![]));
    assert_eq!(described[4].0, Code::NotFound as i32);
    assert_eq!(described[4].1, "CALENDAR_NOT_FOUND");
    assert_eq!(app.fake.count(Endpoint::Batch), 1, "one Cronofy call");
    assert!(
        app.fake.event(&grant.sub, writable, "a").is_none(),
        "deleted in the same batch"
    );
    assert!(app.fake.event(&grant.sub, writable, "b").is_some());
}

#[tokio::test]
async fn an_item_succeeded_exactly_when_its_status_is_2xx() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake
        .inject(Fault::status(Endpoint::Batch, 207).body(json!({"batch": [
            {"status": 200}, {"status": 202}, {"status": 204}, {"status": 402},
            {"status": 422, "data": {"errors": {"summary": [{"key": "errors.too_long", "description": "too long"}]}}},
            {"status": 502},
        ]})));
    let items = (0..6).map(|n| upsert(&calendar, &format!("evt-{n}"))).collect();
    let results = app
        .client
        .clone()
        .batch_write_events(app.req(batch(&grant.sub, items)))
        .await
        .expect("batch")
        .into_inner()
        .results;
    let described: Vec<_> = results.iter().map(describe).collect();
    for ok in &described[..3] {
        assert_eq!(ok.0, 0, "2xx is success: {described:?}");
    }
    assert_eq!(
        (described[3].0, described[3].1.as_str()),
        (Code::FailedPrecondition as i32, "UPSTREAM_REFUSED")
    );
    assert_eq!(
        described[4],
        (
            Code::InvalidArgument as i32,
            "UPSTREAM_REJECTED".into(),
            vec!["items[4].upsert.event.summary".into()]
        )
    );
    assert_eq!(
        (described[5].0, described[5].1.as_str()),
        (Code::Unavailable as i32, "UPSTREAM_UNAVAILABLE")
    );
}

#[tokio::test]
async fn bad_items_are_named_and_nothing_is_sent() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let mut bad_event = upsert(&calendar, "x");
    if let Some(pb::batch_item::Operation::Upsert(u)) = &mut bad_event.operation {
        u.event.as_mut().expect("event").summary.clear();
    }
    let items = vec![pb::BatchItem { operation: None }, bad_event, delete("", "evt")];
    let status = app
        .client
        .clone()
        .batch_write_events(app.req(batch(&grant.sub, items)))
        .await
        .expect_err("invalid");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(
        violated_fields(&status),
        [
            "items[0]",
            "items[1].upsert.event.summary",
            "items[2].delete.calendar_id"
        ]
    );
    let too_many = (0..51).map(|n| upsert(&calendar, &format!("e{n}"))).collect();
    let status = app
        .client
        .clone()
        .batch_write_events(app.req(batch(&grant.sub, too_many)))
        .await
        .expect_err("51 items");
    assert_eq!(violated_fields(&status), ["items"]);
    let status = app
        .client
        .clone()
        .batch_write_events(app.req(batch(&grant.sub, vec![])))
        .await
        .expect_err("no items");
    assert_eq!(violated_fields(&status), ["items"]);
    assert_eq!(app.fake.count(Endpoint::Batch), 0);
}

#[tokio::test]
async fn a_401_on_the_batch_refreshes_and_retries_it() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake.expire_access_tokens();
    let results = app
        .client
        .clone()
        .batch_write_events(app.req(batch(&grant.sub, vec![upsert(&calendar, "a")])))
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results[0].code, 0);
    assert_eq!(app.fake.count(Endpoint::Batch), 2);
    assert_eq!(app.fake.count(Endpoint::Token), 2);
}

/// With Cronofy's default budget (50 a second: bursts of 5) and each entry
/// counted, twelve items go in requests of at most five, one after another;
/// when a later request fails, the items already applied stay applied and
/// the rest report its error, item by item.
#[tokio::test]
async fn a_batch_larger_than_the_budgets_burst_goes_in_parts() {
    let app = spawn_app_edited(|settings| {
        settings.tenants[0].rate_limit.per_second = 50;
        settings.tenants[0].rate_limit.per_minute = 500;
    })
    .await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let items = |prefix: &str| (0..12).map(|n| upsert(&calendar, &format!("{prefix}-{n}"))).collect();
    let from = app.fake.requests().len();
    let answer = app
        .client
        .clone()
        .batch_write_events(app.req(batch(&grant.sub, items("whole"))))
        .await
        .expect("batch")
        .into_inner();
    assert!(answer.results.iter().all(|status| status.code == 0), "{answer:?}");
    let sizes: Vec<usize> = app.fake.requests()[from..]
        .iter()
        .filter(|request| request.endpoint == Endpoint::Batch)
        .map(|request| request.event_writes().len())
        .collect();
    assert_eq!(sizes, [5, 5, 2]);
    assert!((0..12).all(|n| app.fake.event(&grant.sub, &calendar, &format!("whole-{n}")).is_some()));

    // The second request fails on every try: the first five stay written.
    app.fake
        .inject(Fault::status(Endpoint::Batch, 503).after_calls(1).times(100));
    let answer = app
        .client
        .clone()
        .batch_write_events(app.req(batch(&grant.sub, items("part"))))
        .await
        .expect("the first part was applied")
        .into_inner();
    let codes: Vec<i32> = answer.results.iter().map(|status| status.code).collect();
    assert_eq!(codes[..5], [0; 5]);
    assert!(
        codes[5..].iter().all(|code| *code == Code::Unavailable as i32),
        "{codes:?}"
    );
    assert!(app.fake.event(&grant.sub, &calendar, "part-4").is_some());
    assert!(app.fake.event(&grant.sub, &calendar, "part-5").is_none());
    app.fake.clear_faults();

    // Counted once per request, the twelve go together.
    let app = spawn_app_edited(|settings| {
        settings.tenants[0].rate_limit.per_second = 50;
        settings.tenants[0].rate_limit.per_minute = 500;
        settings.tenants[0].count_batch_entries = false;
    })
    .await;
    let grant = app.connect(None).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.client
        .clone()
        .batch_write_events(app.req(batch(
            &grant.sub,
            (0..12).map(|n| upsert(&calendar, &format!("once-{n}"))).collect(),
        )))
        .await
        .expect("batch");
    assert_eq!(app.fake.count(Endpoint::Batch), 1);
}
