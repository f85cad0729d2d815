//! Queued writes (issue #29): accepted without calling Cronofy, delivered by
//! calgate, settled exactly once on WatchChanges and in GetWrite — on SQLite
//! and PostgreSQL, across a SIGKILL.

use std::{collections::HashMap, time::Duration};

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault};
use serde_json::json;
use tonic::{Code, Streaming};

use crate::{
    observability::{sample, scrape},
    postgres::{PgTestDb, use_postgres},
    support::*,
};

/// Every Cronofy event write fails (503) until the faults are cleared.
pub(crate) fn outage(fake: &fake_cronofy::FakeCronofy) {
    for endpoint in [Endpoint::UpsertEvent, Endpoint::DeleteEvent, Endpoint::Batch] {
        fake.inject(Fault::status(endpoint, 503).times(1_000_000));
    }
}

pub(crate) async fn start(
    fake: &fake_cronofy::FakeCronofy,
    work: &Workdir,
    pg: Option<&PgTestDb>,
    more: impl FnOnce(&mut toml::Table),
) -> Binary {
    start_binary_with(fake, work, |c| {
        if let Some(pg) = pg {
            use_postgres(c, &pg.url);
        }
        // Retries sooner than in production (1 s doubling), so tests wait less.
        set(c, "queue.poll_interval", "100ms");
        more(c);
    })
    .await
}

pub(crate) fn queued_upsert(
    sub: &str,
    calendar_id: &str,
    event_id: &str,
    summary: &str,
) -> tonic::Request<pb::UpsertEventRequest> {
    let mut event = event(event_id);
    event.summary = summary.into();
    with_key(
        ACME_KEY,
        pb::UpsertEventRequest {
            user: by_sub(sub),
            calendar_id: calendar_id.into(),
            event: Some(event),
            mode: pb::WriteMode::Queued as i32,
        },
    )
}

pub(crate) fn queued_delete(sub: &str, calendar_id: &str, event_id: &str) -> tonic::Request<pb::DeleteEventRequest> {
    with_key(
        ACME_KEY,
        pb::DeleteEventRequest {
            user: Some(pb::delete_event_request::User::Sub(sub.into())),
            calendar_id: calendar_id.into(),
            event_id: event_id.into(),
            mode: pb::WriteMode::Queued as i32,
        },
    )
}

pub(crate) async fn get_write(binary: &Binary, key: &str, write_id: &str) -> Result<pb::Write, tonic::Status> {
    let response = binary
        .client
        .clone()
        .get_write(with_key(
            key,
            pb::GetWriteRequest {
                write_id: write_id.into(),
            },
        ))
        .await?;
    Ok(response.into_inner().write.expect("a write"))
}

/// The next `count` WriteSettled changes, by write_id (other changes skipped).
pub(crate) async fn settled(
    stream: &mut Streaming<pb::Change>,
    count: usize,
) -> HashMap<String, (pb::Change, pb::WriteSettled)> {
    let mut seen = HashMap::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < count {
            let change = next(stream).await;
            if let Some(pb::change::Change::Write(write)) = change.change.clone() {
                assert!(
                    seen.insert(write.write_id.clone(), (change, write)).is_none(),
                    "a write settled twice"
                );
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} writes settled", seen.len()));
    seen
}

/// Accepted during an outage (no Cronofy call needed), delivered once Cronofy
/// is back, settled once on the stream and in GetWrite; five upserts and a
/// delete of one event during the outage send only the delete; a 422 fails
/// its write at once with Cronofy's field; GetWrite is the tenant's own.
async fn queued_writes(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, pg, |_| {}).await;
    let ada = binary.connect("queue-ada-1f20").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    let mut stream = watch(&binary.client, ACME_KEY, "").await.expect("watch");
    outage(&fake);

    let first = binary
        .client
        .clone()
        .upsert_event(queued_upsert(&ada.sub, &calendar, "kept", "Kept"))
        .await
        .expect("accepted while Cronofy is down")
        .into_inner();
    assert_eq!(first.state(), pb::WriteState::Queued);
    assert!(
        first.write_id.starts_with("w_") && first.write_id.len() == 34,
        "{}",
        first.write_id
    );
    assert_eq!(first.delivery(), pb::Delivery::CalendarWrite);
    let mut superseded = Vec::new();
    for n in 0..5 {
        let accepted = binary
            .client
            .clone()
            .upsert_event(queued_upsert(&ada.sub, &calendar, "churn", &format!("Version {n}")))
            .await
            .expect("accepted")
            .into_inner();
        superseded.push(accepted.write_id);
    }
    let delete = binary
        .client
        .clone()
        .delete_event(queued_delete(&ada.sub, &calendar, "churn"))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(delete.state(), pb::WriteState::Queued);
    let waiting = get_write(&binary, ACME_KEY, &first.write_id).await.expect("get");
    assert_eq!(waiting.state(), pb::WriteState::Queued);
    assert_eq!(
        (waiting.sub.as_str(), waiting.event_id.as_str()),
        (ada.sub.as_str(), "kept")
    );
    let foreign = get_write(&binary, GLOBEX_KEY, &first.write_id)
        .await
        .expect_err("acme's");
    assert_status(&foreign, Code::NotFound, "WRITE_NOT_FOUND");
    // Two wait: the kept event's write and the delete (a churn write being
    // delivered when a newer one came is superseded once its attempt fails).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let depth = sample(&scrape(binary.metrics).await, r#"calgate_queue_depth{tenant="acme"}"#);
        if depth == Some(2.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "queue depth {depth:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cronofy is back: everything settles once.
    let requests_before = fake.requests().len();
    fake.clear_faults();
    let first_round = settled(&mut stream, 7).await;
    let state = |id: &str| first_round[id].1.state();
    assert_eq!(state(&first.write_id), pb::WriteState::Delivered);
    assert_eq!(first_round[&first.write_id].0.sub, ada.sub);
    assert_eq!(state(&delete.write_id), pb::WriteState::Delivered);
    for id in &superseded {
        assert_eq!(state(id), pb::WriteState::Superseded, "{id}");
        assert!(!first_round[id].1.superseded_by.is_empty());
    }
    let mut sent: Vec<(String, String)> = fake.requests()[requests_before..]
        .iter()
        .flat_map(|request| request.event_writes())
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("DELETE".to_owned(), "churn".to_owned()),
            ("POST".to_owned(), "kept".to_owned())
        ],
        "after the outage only the kept event's upsert and the delete are sent (one batch or two calls)"
    );
    assert_eq!(
        fake.event(&ada.sub, &calendar, "kept").expect("kept")["summary"],
        "Kept"
    );
    assert!(fake.event(&ada.sub, &calendar, "churn").is_none());
    let delivered = get_write(&binary, ACME_KEY, &first.write_id).await.expect("get");
    assert_eq!(delivered.state(), pb::WriteState::Delivered);
    assert!(
        delivered.attempts >= 2 && delivered.settled_at.is_some(),
        "{delivered:?}"
    );

    // Cronofy refuses one: it fails at once, with the status an immediate call gets.
    fake.inject(
        Fault::status(Endpoint::UpsertEvent, 422)
            .body(json!({"errors": {"summary": [{"key": "errors.too_long", "description": "is too long"}]}})),
    );
    let refused = binary
        .client
        .clone()
        .upsert_event(queued_upsert(&ada.sub, &calendar, "refused", "Refused"))
        .await
        .expect("accepted")
        .into_inner();
    let failed = settled(&mut stream, 1).await;
    let failure = failed[&refused.write_id].1.error.clone().expect("an error");
    assert_eq!(failure.code, Code::InvalidArgument as i32);
    let got = get_write(&binary, ACME_KEY, &refused.write_id).await.expect("get");
    assert_eq!(got.state(), pb::WriteState::Failed);
    assert_eq!(got.attempts, 1);
    let status = tonic::Status::with_details(Code::InvalidArgument, failure.message.clone(), {
        use prost::Message;
        failure.encode_to_vec().into()
    });
    assert_eq!(violated_fields(&status), ["event.summary"]);
    let metrics = scrape(binary.metrics).await;
    assert_eq!(sample(&metrics, r#"calgate_queue_depth{tenant="acme"}"#), Some(0.0));
    assert_eq!(
        sample(&metrics, r#"calgate_queued_writes_total{outcome="failed"}"#),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_are_delivered_and_settle_once_on_sqlite() {
    queued_writes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_are_delivered_and_settle_once_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    queued_writes(Some(&pg)).await;
}

/// Nothing lost, nothing settled twice: writes accepted during an outage,
/// the replica SIGKILLed while delivering them, a new replica finishes —
/// every write settles exactly once and every event ends with its last body.
async fn survives_a_kill(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let mut binary = start(&fake, &work, pg, |_| {}).await;
    let ada = binary.connect("queue-kill-ada").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    let stream = watch(&binary.client, ACME_KEY, "").await.expect("watch");
    outage(&fake);
    let mut last = HashMap::new();
    let mut ids = Vec::new();
    for round in 0..3 {
        for n in 0..10 {
            let event_id = format!("evt-{n}");
            let summary = format!("round {round}");
            let accepted = binary
                .client
                .clone()
                .upsert_event(queued_upsert(&ada.sub, &calendar, &event_id, &summary))
                .await
                .unwrap_or_else(|e| panic!("accepted: {e:?} {}", binary.logs()))
                .into_inner();
            ids.push(accepted.write_id);
            last.insert(event_id, summary);
        }
    }
    // Cronofy answers slowly: the kill lands while writes are being delivered.
    fake.clear_faults();
    for endpoint in [Endpoint::UpsertEvent, Endpoint::Batch] {
        fake.inject(Fault::delay(endpoint, Duration::from_millis(300)).times(1_000_000));
    }
    let before = fake.requests().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fake.requests()[before..]
        .iter()
        .map(|request| request.event_writes().len())
        .sum::<usize>()
        < 4
    {
        assert!(tokio::time::Instant::now() < deadline, "delivery never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    binary.sigkill().await;
    fake.clear_faults();
    let binary = start(&fake, &work, pg, |_| {}).await;
    drop(stream);
    // Every write settles once (the kill may have come before or after some settled).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let mut open = 0;
        for id in &ids {
            if get_write(&binary, ACME_KEY, id).await.expect("get").state() == pb::WriteState::Queued {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{open} writes never settled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The whole stream from its start: each write's settlement exactly once.
    let mut whole = watch(&binary.client, ACME_KEY, "c0")
        .await
        .expect("watch from the start");
    let all = settled(&mut whole, ids.len()).await;
    assert!(ids.iter().all(|id| all.contains_key(id)));
    // And nothing after: no write settles a second time.
    while let Ok(Ok(Some(change))) = tokio::time::timeout(Duration::from_secs(1), whole.message()).await {
        assert!(
            !matches!(change.change, Some(pb::change::Change::Write(_))),
            "settled again: {change:?}"
        );
    }
    for (event_id, summary) in &last {
        assert_eq!(
            fake.event(&ada.sub, &calendar, event_id).expect("delivered")["summary"],
            summary.as_str(),
            "{event_id} ends with its last write"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_queued_write_is_lost_or_settled_twice_across_a_kill_on_sqlite() {
    survives_a_kill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_queued_write_is_lost_or_settled_twice_across_a_kill_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    survives_a_kill(Some(&pg)).await;
}

/// A write Cronofy keeps failing settles FAILED once `queue.max_age` has
/// passed, with the last failure an immediate call would have returned.
/// (In process: the config's floor for `queue.max_age` is a minute.)
async fn fails_at_its_max_age(pg: Option<&PgTestDb>) {
    let app = spawn_app_edited(|settings| {
        settings.queue.max_age = Duration::from_secs(2);
        settings.queue.poll_interval = Duration::from_millis(100);
        if let Some(pg) = pg {
            settings.store.url = pg.url.clone();
        }
    })
    .await;
    let ada = app.connect(Some("queue-aged-ada")).await;
    let calendar = app.fake.calendar_ids(&ada.sub)[0].clone();
    let mut stream = watch(&app.client, ACME_KEY, "").await.expect("watch");
    outage(&app.fake);
    let accepted = app
        .client
        .clone()
        .upsert_event(queued_upsert(&ada.sub, &calendar, "aged", "Aged"))
        .await
        .expect("accepted")
        .into_inner();
    let started = tokio::time::Instant::now();
    let failed = settled(&mut stream, 1).await;
    let (_, write) = &failed[&accepted.write_id];
    assert_eq!(write.state(), pb::WriteState::Failed);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "failed before its max age"
    );
    let status = write.error.as_ref().expect("the last failure");
    assert_eq!(status.code, Code::Unavailable as i32);
    assert!(app.fake.count(Endpoint::UpsertEvent) >= 2, "it was retried meanwhile");
    assert!(app.fake.event(&ada.sub, &calendar, "aged").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_still_failing_at_its_max_age_fails_on_sqlite() {
    fails_at_its_max_age(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_still_failing_at_its_max_age_fails_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    fails_at_its_max_age(Some(&pg)).await;
}

fn batch_upsert(calendar_id: &str, event_id: &str) -> pb::BatchItem {
    pb::BatchItem {
        operation: Some(pb::batch_item::Operation::Upsert(pb::BatchUpsert {
            calendar_id: calendar_id.into(),
            event: Some(event(event_id)),
        })),
    }
}

/// A queued BatchWriteEvents: every item checked first (one bad item fails
/// the call and queues nothing), then each queued on its own — here the
/// third meets the full queue — and each settles on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_batch_queues_each_item_on_its_own() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, None, |c| set(c, "queue.max_per_tenant", 2i64)).await;
    let ada = binary.connect("queue-batch-ada").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    let mut stream = watch(&binary.client, ACME_KEY, "").await.expect("watch");
    let batch = |items: Vec<pb::BatchItem>| {
        with_key(
            ACME_KEY,
            pb::BatchWriteEventsRequest {
                user: Some(pb::batch_write_events_request::User::Sub(ada.sub.clone())),
                items,
                mode: pb::WriteMode::Queued as i32,
            },
        )
    };
    let bad = binary
        .client
        .clone()
        .batch_write_events(batch(vec![batch_upsert(&calendar, "ok"), batch_upsert(&calendar, "")]))
        .await
        .expect_err("a bad item");
    assert_eq!(violated_fields(&bad), ["items[1].upsert.event.event_id"]);

    outage(&fake);
    let answer = binary
        .client
        .clone()
        .batch_write_events(batch(vec![
            batch_upsert(&calendar, "one"),
            batch_upsert(&calendar, "two"),
            batch_upsert(&calendar, "three"),
        ]))
        .await
        .expect("queued")
        .into_inner();
    assert_eq!(
        answer.states().collect::<Vec<_>>(),
        [
            pb::WriteState::Queued,
            pb::WriteState::Queued,
            pb::WriteState::Unspecified
        ]
    );
    assert!(answer.write_ids[0].starts_with("w_") && answer.write_ids[1].starts_with("w_"));
    assert!(answer.write_ids[2].is_empty());
    assert_eq!(answer.results[0].code, Code::Ok as i32);
    assert_eq!(
        answer.results[2].code,
        Code::ResourceExhausted as i32,
        "{:?}",
        answer.results[2]
    );

    fake.clear_faults();
    let done = settled(&mut stream, 2).await;
    for (id, event_id) in answer.write_ids.iter().zip(["one", "two"]) {
        assert_eq!(done[id].1.state(), pb::WriteState::Delivered);
        assert!(fake.event(&ada.sub, &calendar, event_id).is_some(), "{event_id}");
    }
    assert!(
        fake.event(&ada.sub, &calendar, "ok").is_none(),
        "the refused batch queued nothing"
    );
    assert!(fake.event(&ada.sub, &calendar, "three").is_none());
}
