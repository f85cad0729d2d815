//! How queued writes reach Cronofy (issue #29): several ready writes of one
//! user in one `/v1/batch` request, each entry counted against the budget
//! unless `rate_limit.count_batch_entries` is off; and through a PostgreSQL
//! outage, every write settles once; a wait for budget is not an attempt.

use std::{collections::HashMap, time::Duration};

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault, busiest_window};

use crate::{
    observability::{sample, scrape},
    postgres::PgTestDb,
    queue::{get_write, queued_delete, queued_upsert, settled, start},
    support::*,
};

/// Cronofy's default budget (50 a second, 500 a minute) for acme's application.
fn default_budget(config: &mut toml::Table) {
    let mut limit = toml::Table::new();
    limit.insert("per_second".into(), 50i64.into());
    limit.insert("per_minute".into(), 500i64.into());
    set_in_first_tenant(config, "rate_limit", limit);
}

/// The event writes Cronofy received since request `from`: each request's
/// entries, and the arrival of each entry (a batch counts once per entry).
fn writes_since(
    fake: &fake_cronofy::FakeCronofy,
    from: usize,
) -> (Vec<Vec<(String, String)>>, Vec<std::time::Instant>) {
    let requests: Vec<_> = fake.requests()[from..]
        .iter()
        .filter(|request| {
            matches!(
                request.endpoint,
                Endpoint::Batch | Endpoint::UpsertEvent | Endpoint::DeleteEvent
            )
        })
        .cloned()
        .collect();
    let arrivals = requests
        .iter()
        .flat_map(|request| std::iter::repeat_n(request.at, request.weight()))
        .collect();
    (
        requests.iter().map(|request| request.event_writes()).collect(),
        arrivals,
    )
}

/// While the worker's one place is busy, ada's thirteen writes (twelve
/// upserts and a delete) and bob's two wait; then each user's go in
/// batches no larger than the budget's burst (5 at 50 a second), every write
/// once, and each event ends with its body.
async fn ready_writes_go_in_batches(pg: Option<&PgTestDb>, count_entries: bool) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, pg, |c| {
        default_budget(c);
        if !count_entries {
            set_in_first_tenant(c, "rate_limit.count_batch_entries", false);
        }
        set(c, "queue.concurrency", 1i64);
    })
    .await;
    let ada = binary.connect("batch-ada").await;
    let bob = binary.connect("batch-bob").await;
    let ada_calendar = fake.calendar_ids(&ada.sub)[0].clone();
    let bob_calendar = fake.calendar_ids(&bob.sub)[0].clone();
    let mut stream = watch(&binary.client, ACME_KEY, "").await.expect("watch");
    let from = fake.requests().len();
    // The first delivery holds the worker's only place for 800 ms (the test
    // config's request timeout is 1 s).
    fake.inject(Fault::delay(Endpoint::UpsertEvent, Duration::from_millis(800)).times(1));
    let client = binary.client.clone();
    let mut ids = vec![
        client
            .clone()
            .upsert_event(queued_upsert(&bob.sub, &bob_calendar, "bob-0", "Bob 0"))
            .await
            .expect("accepted")
            .into_inner()
            .write_id,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..12 {
        let accepted = client
            .clone()
            .upsert_event(queued_upsert(
                &ada.sub,
                &ada_calendar,
                &format!("ada-{n}"),
                &format!("Ada {n}"),
            ))
            .await
            .expect("accepted");
        ids.push(accepted.into_inner().write_id);
    }
    let deleted = client
        .clone()
        .delete_event(queued_delete(&ada.sub, &ada_calendar, "ada-old"))
        .await
        .expect("accepted");
    ids.push(deleted.into_inner().write_id);
    let accepted = client
        .clone()
        .upsert_event(queued_upsert(&bob.sub, &bob_calendar, "bob-1", "Bob 1"))
        .await
        .expect("accepted");
    ids.push(accepted.into_inner().write_id);

    let all = settled(&mut stream, ids.len()).await;
    for id in &ids {
        assert_eq!(all[id].1.state(), pb::WriteState::Delivered, "{id}");
    }
    let (requests, arrivals) = writes_since(&fake, from);
    let mut sent: Vec<String> = requests.iter().flatten().map(|(_, id)| id.clone()).collect();
    sent.sort();
    let mut expected: Vec<String> = (0..12).map(|n| format!("ada-{n}")).collect();
    expected.extend(["ada-old".into(), "bob-0".into(), "bob-1".into()]);
    expected.sort();
    assert_eq!(sent, expected, "every write reached Cronofy once");
    let largest = requests.iter().map(Vec::len).max().unwrap_or_default();
    if count_entries {
        assert_eq!(
            largest, 5,
            "batches as large as the second's burst, no larger: {requests:?}"
        );
        assert!(busiest_window(&arrivals, Duration::from_secs(1)) <= 50);
    } else {
        assert!(largest > 5, "one request counts once: larger batches ({requests:?})");
    }
    for n in 0..12 {
        assert_eq!(
            fake.event(&ada.sub, &ada_calendar, &format!("ada-{n}"))
                .expect("written")["summary"],
            format!("Ada {n}")
        );
    }
    assert_eq!(
        fake.event(&bob.sub, &bob_calendar, "bob-1").expect("written")["summary"],
        "Bob 1"
    );
    let write = get_write(&binary, ACME_KEY, &ids[5]).await.expect("get");
    assert_eq!((write.state(), write.attempts), (pb::WriteState::Delivered, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_writes_of_one_user_go_in_batches_the_budget_can_pay_on_sqlite() {
    ready_writes_go_in_batches(None, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_writes_of_one_user_go_in_batches_the_budget_can_pay_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    ready_writes_go_in_batches(Some(&pg), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counted_once_carries_more_writes() {
    ready_writes_go_in_batches(None, false).await;
}

/// PostgreSQL goes away while writes are being delivered (every connection
/// closed, none accepted for three seconds) and comes back: every write
/// settles exactly once and each event ends with its last body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_queued_write_is_lost_or_settled_twice_across_a_postgres_outage() {
    let Some(pg) = PgTestDb::create().await else { return };
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, Some(&pg), |_| {}).await;
    let users = [binary.connect("pg-out-ada").await, binary.connect("pg-out-bob").await];
    let mut last = HashMap::new();
    let mut ids = Vec::new();
    // Cronofy answers slowly: the outage lands while writes are being delivered.
    for endpoint in [Endpoint::UpsertEvent, Endpoint::Batch] {
        fake.inject(Fault::delay(endpoint, Duration::from_millis(400)).times(1_000_000));
    }
    let from = fake.requests().len();
    for round in 0..2 {
        for user in &users {
            let calendar = fake.calendar_ids(&user.sub)[0].clone();
            for n in 0..8 {
                let event_id = format!("evt-{n}");
                let summary = format!("round {round}");
                let accepted = binary
                    .client
                    .clone()
                    .upsert_event(queued_upsert(&user.sub, &calendar, &event_id, &summary))
                    .await
                    .expect("accepted")
                    .into_inner();
                ids.push(accepted.write_id);
                last.insert((user.sub.clone(), event_id), summary);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while writes_since(&fake, from).0.iter().flatten().count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "delivery never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.refuse_connections().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.allow_connections().await;
    fake.clear_faults();
    // Every write settles once: read from the stream's start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let all = loop {
        if let Ok(mut whole) = watch(&binary.client, ACME_KEY, "c0").await
            && let Ok(all) = tokio::time::timeout(Duration::from_secs(5), settled_within(&mut whole, ids.len())).await
        {
            break all;
        }
        assert!(tokio::time::Instant::now() < deadline, "the writes never all settled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(ids.iter().all(|id| all.contains_key(id)));
    for ((sub, event_id), summary) in &last {
        let calendar = fake.calendar_ids(sub)[0].clone();
        assert_eq!(
            fake.event(sub, &calendar, event_id).expect("delivered")["summary"],
            summary.as_str(),
            "{event_id} ends with its last write"
        );
    }
}

/// `count` WriteSettled changes, by write_id, failing (not panicking) if the stream ends first.
async fn settled_within(stream: &mut tonic::Streaming<pb::Change>, count: usize) -> HashMap<String, pb::WriteSettled> {
    let mut seen = HashMap::new();
    while seen.len() < count {
        let Ok(Some(change)) = stream.message().await else {
            break;
        };
        if let Some(pb::change::Change::Write(write)) = change.change {
            assert!(
                seen.insert(write.write_id.clone(), write).is_none(),
                "a write settled twice"
            );
        }
    }
    seen
}

/// A delivery the budget has no room for is not an attempt. At 40 a minute
/// the minute's bucket holds 4 (2 kept for callers) and refills one every
/// 1.67 s: after the first delivery, the next would wait for budget past the
/// retry ceiling (here 1 s). It is tried again when the budget has room,
/// counted `waited_for_budget`, and every write settles after one attempt.
async fn budget_waits_are_not_attempts(pg: Option<&PgTestDb>) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start(&fake, &work, pg, |c| {
        let mut limit = toml::Table::new();
        limit.insert("per_second".into(), 50i64.into());
        limit.insert("per_minute".into(), 40i64.into());
        set_in_first_tenant(c, "rate_limit", limit);
        set(c, "upstream.retry_ceiling", "1s");
    })
    .await;
    let ada = binary.connect("budget-wait-ada").await;
    let calendar = fake.calendar_ids(&ada.sub)[0].clone();
    let mut stream = watch(&binary.client, ACME_KEY, "").await.expect("watch");
    let from = fake.requests().len();
    let mut ids = Vec::new();
    for n in 0..4 {
        let accepted = binary
            .client
            .clone()
            .upsert_event(queued_upsert(&ada.sub, &calendar, &format!("wait-{n}"), "Waited"))
            .await
            .expect("accepted");
        ids.push(accepted.into_inner().write_id);
    }
    let all = settled(&mut stream, ids.len()).await;
    let (requests, _) = writes_since(&fake, from);
    assert_eq!(
        requests.iter().flatten().count(),
        4,
        "each write reached Cronofy once: {requests:?}"
    );
    for id in &ids {
        assert_eq!(all[id].1.state(), pb::WriteState::Delivered, "{id}");
        let write = get_write(&binary, ACME_KEY, id).await.expect("get");
        assert_eq!(write.attempts, 1, "a wait for budget is no attempt: {write:?}");
    }
    let waited = sample(
        &scrape(binary.metrics).await,
        r#"calgate_queued_writes_total{outcome="waited_for_budget"}"#,
    );
    assert!(waited.unwrap_or_default() >= 1.0, "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_budget_is_not_an_attempt_on_sqlite() {
    budget_waits_are_not_attempts(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_budget_is_not_an_attempt_on_postgres() {
    let Some(pg) = PgTestDb::create().await else { return };
    budget_waits_are_not_attempts(Some(&pg)).await;
}
