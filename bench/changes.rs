//! The change stream: how long a Cronofy notification takes to reach a
//! WatchChanges watcher (one replica on SQLite; two on PostgreSQL, the
//! notification at one and the watcher at the other), and what 1,000 idle
//! watchers cost one replica. Every change must arrive, at every watcher.

use std::{path::Path, time::Duration};

use anyhow::Context;
use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use time::OffsetDateTime;
use tokio::time::Instant;
use tonic::{Request, Streaming, transport::Channel};

use crate::{
    grants::new_grant,
    h2load::percentile,
    harness::{API_KEY, Bench, CalgateOptions, Server, TENANT, free_port},
    report::{Report, Table},
};

/// Longest the scenario waits for one change.
const ARRIVAL: Duration = Duration::from_secs(30);
/// Idle watchers opened for the memory figure, over this many connections:
/// calgate allows 100 streams a connection (`grpc.max_concurrent_streams`),
/// so 1,000 watchers need at least 10; a client past the limit waits for a
/// free stream, which is why every open below has a deadline.
const IDLE_WATCHERS: usize = 1000;
const CONNECTIONS: usize = 16;
/// Longest the scenario waits for a WatchChanges stream to open.
const OPEN: Duration = Duration::from_secs(10);

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {API_KEY}").parse().expect("ASCII header"),
    );
    request
}

async fn client(server: &Server) -> anyhow::Result<CalendarWriteServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    Ok(CalendarWriteServiceClient::new(channel))
}

async fn watch(client: &CalendarWriteServiceClient<Channel>) -> anyhow::Result<Streaming<pb::Change>> {
    let mut client = client.clone();
    let opening = client.watch_changes(authorized(pb::WatchChangesRequest { after: String::new() }));
    Ok(tokio::time::timeout(OPEN, opening)
        .await
        .context("a WatchChanges stream did not open within 10 s (streams per connection exhausted?)")??
        .into_inner())
}

async fn next(stream: &mut Streaming<pb::Change>) -> anyhow::Result<pb::Change> {
    tokio::time::timeout(ARRIVAL, stream.message())
        .await
        .context("no change arrived within 30 s")??
        .context("the stream ended")
}

/// `[callbacks]` on `port` (Cronofy calls `public_port`) and room for the idle watchers.
fn options(store_url: &str, port: u16, public_port: u16) -> CalgateOptions {
    CalgateOptions {
        per_minute: None,
        store_url: store_url.to_owned(),
        per_second: 1000,
        token_cache_ttl: None,
        extra: format!(
            "[callbacks]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{public_port}\"\n\n\
             [changes]\nmax_watchers_per_tenant = {IDLE_WATCHERS}\n"
        ),
    }
}

/// Stores one connected account's grant with a channel to open, as ExchangeCode would.
async fn seed_tracked(bench: &Bench, config: &Path) -> anyhow::Result<(String, String)> {
    let account = bench.connect();
    let store = bench.open_store(config).await?;
    let expires_at = OffsetDateTime::now_utc() + time::Duration::hours(20);
    let grant = new_grant(&account, "watcher", expires_at, true);
    store
        .save_grant(
            TENANT,
            &grant,
            Some("watcher"),
            &calgate::domain::audit::Actor::operator(),
        )
        .await?;
    Ok((account.sub, account.calendar_id))
}

/// Writes `count` events through calgate (so they are its own), then deletes
/// each as the user would and times its arrival on a watcher of `watched`.
async fn latency(
    bench: &Bench,
    writer: &Server,
    watched: &Server,
    sub: &str,
    calendar_id: &str,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    // The channel opens in the background (the worker runs every 5 s).
    let opened = Instant::now();
    while bench.fake.channels(sub).is_empty() {
        anyhow::ensure!(opened.elapsed() < ARRIVAL, "no channel opened within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes = client(writer).await?;
    for n in 0..count {
        write_event(&writes, sub, calendar_id, &format!("bench-{n}")).await?;
    }
    let mut stream = watch(&client(watched).await?).await?;
    let mut times = Vec::with_capacity(count);
    for n in 0..count {
        let event_id = format!("bench-{n}");
        // Each change follows the last one's arrival: without a pause of its own it would
        // always land just after the other replica's poll, and measure the worst case only.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..700))).await;
        let started = Instant::now();
        let statuses = bench.fake.user_deletes_event(sub, calendar_id, &event_id).await;
        anyhow::ensure!(statuses == [200], "the notification was answered {statuses:?}");
        let change = next(&mut stream).await?;
        times.push(started.elapsed());
        match change.change {
            Some(pb::change::Change::Event(event)) if event.event_id == event_id => {}
            other => anyhow::bail!("expected the deletion of {event_id}, got {other:?}"),
        }
    }
    times.sort();
    Ok(times)
}

/// An hour-long event written through calgate (so it is calgate's own).
async fn write_event(
    client: &CalendarWriteServiceClient<Channel>,
    sub: &str,
    calendar_id: &str,
    event_id: &str,
) -> anyhow::Result<()> {
    client
        .clone()
        .upsert_event(authorized(pb::UpsertEventRequest {
            mode: Default::default(),
            user: Some(pb::upsert_event_request::User::Sub(sub.to_owned())),
            calendar_id: calendar_id.to_owned(),
            event: Some(pb::Event {
                event_id: event_id.to_owned(),
                summary: "Benchmark".into(),
                start: Some(time_of(1_800_000_000)),
                end: Some(time_of(1_800_003_600)),
                ..Default::default()
            }),
        }))
        .await?;
    Ok(())
}

fn time_of(seconds: i64) -> pb::EventTime {
    pb::EventTime {
        value: Some(pb::event_time::Value::Time(prost_types::Timestamp {
            seconds,
            nanos: 0,
        })),
        tzid: None,
    }
}

/// Opens the idle watchers on `server`, measures its memory, then makes one
/// change and checks that every watcher receives it.
async fn idle_watchers(
    bench: &Bench,
    server: &Server,
    sub: &str,
    calendar_id: &str,
    report: &mut Report,
) -> anyhow::Result<(u64, u64)> {
    let before = server.memory()?.rss_kib;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(client(server).await?);
    }
    let mut streams = Vec::with_capacity(IDLE_WATCHERS);
    for n in 0..IDLE_WATCHERS {
        streams.push(watch(&clients[n % CONNECTIONS]).await?);
    }
    let open = Instant::now();
    while server.counter("calgate_change_watchers", &[]).await? < IDLE_WATCHERS as f64 {
        anyhow::ensure!(open.elapsed() < ARRIVAL, "the watchers did not all open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.memory()?.rss_kib;
    let statuses = bench.fake.user_deletes_event(sub, calendar_id, "bench-idle").await;
    anyhow::ensure!(statuses == [200], "the notification was answered {statuses:?}");
    let mut received = 0;
    for stream in &mut streams {
        if matches!(next(stream).await?.change, Some(pb::change::Change::Event(_))) {
            received += 1;
        }
    }
    report.check(
        received == IDLE_WATCHERS,
        format!("{received} of {IDLE_WATCHERS} idle watchers received the change"),
    );
    Ok((before, after))
}

/// The scenario: `stores` are (label, store URL) pairs; the first is SQLite,
/// a second (PostgreSQL) runs two replicas.
pub async fn run(bench: &Bench, report: &mut Report, quick: bool, stores: &[(&str, String)]) -> anyhow::Result<()> {
    let count = if quick { 10 } else { 200 };
    let mut table = Table::new(&["store", "replicas", "changes", "p50 ms", "p99 ms", "max ms"]);
    let mut memory = None;
    for (label, url) in stores {
        let (port_a, port_b) = (free_port()?.port(), free_port()?.port());
        let config_a = bench.config(
            &format!("changes-{label}-a"),
            free_port()?,
            &options(url, port_a, port_a),
        )?;
        let (sub, calendar_id) = seed_tracked(bench, &config_a).await?;
        let a = bench
            .start_calgate(&format!("calgate-changes-{label}-a"), &config_a)
            .await?;
        let shared = *label != "sqlite";
        let b = if shared {
            let config_b = bench.config(
                &format!("changes-{label}-b"),
                free_port()?,
                &options(url, port_b, port_a),
            )?;
            Some(
                bench
                    .start_calgate(&format!("calgate-changes-{label}-b"), &config_b)
                    .await?,
            )
        } else {
            None
        };
        let watched = b.as_ref().unwrap_or(&a);
        let times = latency(bench, &a, watched, &sub, &calendar_id, count).await?;
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        table.row(&[
            (*label).to_owned(),
            if shared { "2 (watcher on the other)" } else { "1" }.to_owned(),
            count.to_string(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(times.last().copied().unwrap_or_default()),
        ]);
        if !shared {
            // One more event for the idle watchers to see deleted.
            write_event(&client(&a).await?, &sub, &calendar_id, "bench-idle").await?;
            memory = Some(idle_watchers(bench, &a, &sub, &calendar_id, report).await?);
        }
        if let Some(b) = b {
            b.stop().await?;
        }
        a.stop().await?;
    }
    let mut body = format!(
        "From the fake Cronofy posting a signed `change` notification (a user deleted an event \
         calgate wrote) to the EventChanged on a WatchChanges stream.\n\n{}",
        table.finish()
    );
    if let Some((before, after)) = memory {
        body.push_str(&format!(
            "\n{IDLE_WATCHERS} idle watchers on one replica (SQLite), over {CONNECTIONS} connections: RSS \
             {before} KiB before, {after} KiB with them open: {:.1} KiB a watcher.\n",
            (after.saturating_sub(before)) as f64 / IDLE_WATCHERS as f64
        ));
    }
    report.section("Change stream", &body);
    Ok(())
}
