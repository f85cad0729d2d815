//! Queued writes under Cronofy's real budget (issue #29): a burst of queued
//! writes from several tenants of one application (10,000 by default),
//! Cronofy failing every write for the first minute, a budget of 50 a
//! second and 500 a minute; SQLite with one replica, PostgreSQL with two.
//! Checked: every write settles delivered, each event once at Cronofy, no
//! sliding second or minute over the budget (each batch entry counted), and
//! another tenant's immediate calls meanwhile all succeed. Reported: how
//! long accepting took, the drain time against the budget's theoretical
//! minimum, and the other tenant's latency idle and during the drain.

use std::{collections::HashSet, time::Duration};

use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use fake_cronofy::{Endpoint, Fault};
use futures::{StreamExt, stream};
use tokio::time::Instant;
use tonic::{Request, transport::Channel};

use crate::{
    calls::upsert_request,
    grants::{self, Seeded},
    h2load::percentile,
    harness::{Bench, CalgateOptions, free_port},
    peaks::peak_in_window,
    report::{Report, Table},
};

/// Cronofy's default budget for an application.
const PER_SECOND: u32 = 50;
const PER_MINUTE: u32 = 500;
/// The tenants that queue writes, and the one that calls meanwhile; all on the bench's application.
const QUEUEING: [&str; 3] = ["queue-a", "queue-b", "queue-c"];
const CALLER: &str = "queue-caller";
/// Queued writes per user: enough for batches (each user's ready writes go together).
const WRITES_PER_USER: usize = 20;
/// Accept calls in flight during the burst.
const ACCEPTING: usize = 32;
/// One immediate call of the calling tenant every so often during the drain.
const CALL_EVERY: Duration = Duration::from_secs(5);

/// What the scenario runs.
pub struct Load {
    /// Queued writes in the burst.
    pub writes: usize,
    /// How long Cronofy fails every write from the burst's start.
    pub outage: Duration,
}

/// The API key of a tenant of this scenario (a benchmark value, not a secret).
fn api_key(tenant: &str) -> String {
    format!("{tenant}-bench-api-key-0123456789")
}

/// The extra tenants' config: each on the bench's application, with its budget.
fn tenants_toml(bench: &Bench) -> String {
    let secret = bench.dir.join("client.secret").display().to_string();
    QUEUEING
        .iter()
        .chain([&CALLER])
        .map(|tenant| {
            format!(
                r#"
[[tenants]]
id = "{tenant}"
api_key_sha256 = ["{hash}"]
client_id = "{client}"
client_secret_file = "{secret}"
data_center = "uk"
redirect_uris = ["https://bench.example/cb"]
api_base_url = "{api}"
app_base_url = "{app}"
rate_limit = {{ per_second = {PER_SECOND}, per_minute = {PER_MINUTE} }}
"#,
                hash = hex::encode(calgate::auth::hash_api_key(&api_key(tenant))),
                client = crate::harness::CLIENT_ID,
                api = bench.fake.api_base_url(),
                app = bench.fake.app_base_url(),
            )
        })
        .collect()
}

fn with_key<T>(tenant: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(Duration::from_secs(60));
    if let Ok(bearer) = format!("Bearer {}", api_key(tenant)).parse() {
        request.metadata_mut().insert("authorization", bearer);
    }
    request
}

/// One immediate upsert of the calling tenant; how long it took, or its code.
async fn immediate(channel: Channel, grant: &Seeded, n: usize) -> Result<Duration, tonic::Code> {
    let started = Instant::now();
    let request = upsert_request(&grant.user_ref, &grant.calendar_id, format!("now-{n}"));
    CalendarWriteServiceClient::new(channel)
        .upsert_event(with_key(CALLER, request))
        .await
        .map(|_| started.elapsed())
        .map_err(|status| status.code())
}

/// Runs the scenario on each store.
pub async fn run(
    bench: &Bench,
    report: &mut Report,
    load: &Load,
    stores: &[(&'static str, String)],
) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        "store",
        "replicas",
        "writes (tenants)",
        "accept p50 / p99 ms",
        "accepted per s",
        "Cronofy down",
        "all settled after",
        "theoretical minimum",
        "ratio",
        "delivered / failed",
        "requests (entries each)",
        "peak entries in any 1 s / 60 s",
        "other tenant p50 / p99 ms, idle",
        "… during the drain (calls)",
    ]);
    for (label, url) in stores {
        let replicas = if *label == "sqlite" { 1 } else { 2 };
        let name = format!("queue-{label}");
        let url = if *label == "sqlite" {
            format!("sqlite://{}", bench.dir.join(format!("{name}.db")).display())
        } else {
            url.clone()
        };
        let options = CalgateOptions {
            store_url: url,
            per_second: PER_SECOND,
            per_minute: Some(PER_MINUTE),
            token_cache_ttl: None,
            extra: tenants_toml(bench),
        };
        let configs: Vec<_> = (0..replicas)
            .map(|r| bench.config(&format!("{name}-{r}"), free_port()?, &options))
            .collect::<anyhow::Result<_>>()?;
        let store = bench.open_store(&configs[0]).await?;
        let per_tenant = load.writes.div_ceil(QUEUEING.len());
        let users_each = per_tenant.div_ceil(WRITES_PER_USER).max(1);
        let mut users = Vec::new();
        for tenant in QUEUEING {
            users.push(grants::seed_for_tenant(bench, &store, tenant, tenant, users_each).await?);
        }
        let caller = grants::seed_for_tenant(bench, &store, CALLER, CALLER, 1)
            .await?
            .remove(0);
        drop(store);
        let mut servers = Vec::new();
        for (r, config) in configs.iter().enumerate() {
            servers.push(bench.start_calgate(&format!("calgate-{name}-{r}"), config).await?);
        }
        let mut channels = Vec::new();
        for server in &servers {
            channels.push(
                Channel::from_shared(format!("http://{}", server.addr))?
                    .connect()
                    .await?,
            );
        }
        // The other tenant's latency with nothing queued.
        let mut idle = Vec::new();
        for n in 0..20 {
            if let Ok(took) = immediate(channels[n % channels.len()].clone(), &caller, n).await {
                idle.push(took);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        idle.sort();

        // The burst, Cronofy failing every write.
        for endpoint in [Endpoint::Batch, Endpoint::UpsertEvent, Endpoint::DeleteEvent] {
            bench.fake.inject(Fault::status(endpoint, 503).times(usize::MAX / 2));
        }
        bench.fake.clear_requests();
        let started = Instant::now();
        let accepted: Vec<Result<Duration, String>> = stream::iter(0..load.writes)
            .map(|n| {
                let tenant = QUEUEING[n % QUEUEING.len()];
                let grant = users[n % QUEUEING.len()][(n / QUEUEING.len()) % users_each].clone();
                let channel = channels[n % channels.len()].clone();
                async move {
                    let mut request = upsert_request(&grant.user_ref, &grant.calendar_id, format!("q-{n}"));
                    request.mode = pb::WriteMode::Queued as i32;
                    let began = Instant::now();
                    CalendarWriteServiceClient::new(channel)
                        .upsert_event(with_key(tenant, request))
                        .await
                        .map(|_| began.elapsed())
                        .map_err(|status| format!("{:?}", status.code()))
                }
            })
            .buffer_unordered(ACCEPTING)
            .collect()
            .await;
        let accept_took = started.elapsed();
        let refused: Vec<&String> = accepted.iter().filter_map(|a| a.as_ref().err()).collect();
        let mut accept_times: Vec<Duration> = accepted.iter().filter_map(|a| a.as_ref().ok().copied()).collect();
        accept_times.sort();
        tokio::time::sleep(load.outage.saturating_sub(started.elapsed())).await;
        bench.fake.clear_faults();
        let back = started.elapsed();

        // The drain: once calgate sees Cronofy back (a write delivered: its
        // breaker closed again), the other tenant calls now and then, until
        // every write settled.
        loop {
            let mut delivered = 0.0;
            for server in &servers {
                delivered += server
                    .counter("calgate_queued_writes_total", &["outcome=\"delivered\""])
                    .await?;
            }
            if delivered > 0.0 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < load.outage + Duration::from_secs(600),
                "nothing delivered ten minutes after Cronofy came back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut during = Vec::new();
        let mut failed_calls = Vec::new();
        let mut n = 100;
        let drained = loop {
            let depth = servers[0].counter("calgate_queue_depth", &[]).await?;
            if depth == 0.0 {
                break started.elapsed();
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(4 * 3600),
                "{depth} writes still queued after four hours"
            );
            n += 1;
            match immediate(channels[n % channels.len()].clone(), &caller, n).await {
                Ok(took) => during.push(took),
                Err(code) => failed_calls.push(format!("{code:?}")),
            }
            tokio::time::sleep(CALL_EVERY).await;
        };
        during.sort();
        let mut delivered = 0.0;
        let mut failed = 0.0;
        for server in &servers {
            delivered += server
                .counter("calgate_queued_writes_total", &["outcome=\"delivered\""])
                .await?;
            failed += server
                .counter("calgate_queued_writes_total", &["outcome=\"failed\""])
                .await?;
        }
        let requests = bench.fake.requests();
        for server in servers {
            server.stop().await?;
        }
        let writes: Vec<_> = requests
            .iter()
            .filter(|r| {
                matches!(
                    r.endpoint,
                    Endpoint::Batch | Endpoint::UpsertEvent | Endpoint::DeleteEvent
                )
            })
            .cloned()
            .collect();
        // Each entry counted: the arrivals as the budget sees them.
        let mut entries: Vec<fake_cronofy::RecordedRequest> = Vec::new();
        for request in &requests {
            for _ in 0..request.weight() {
                entries.push(request.clone());
            }
        }
        let (peak_second, peak_minute) = (
            peak_in_window(&entries, Duration::from_secs(1)),
            peak_in_window(&entries, Duration::from_secs(60)),
        );
        // Every queued event at Cronofy once.
        let mut missing = 0;
        for (t, tenant_users) in users.iter().enumerate() {
            let mut held = HashSet::new();
            for user in tenant_users {
                for id in bench
                    .fake
                    .event_ids(crate::harness::CLIENT_ID, &user.sub, &user.calendar_id)
                {
                    held.insert((user.sub.clone(), id.rsplit(':').next().unwrap_or_default().to_owned()));
                }
            }
            for n in (t..load.writes).step_by(QUEUEING.len()) {
                let user = &tenant_users[(n / QUEUEING.len()) % users_each];
                if !held.contains(&(user.sub.clone(), format!("q-{n}"))) {
                    missing += 1;
                }
            }
        }
        let minimum = load.outage + Duration::from_secs_f64(load.writes as f64 * 60.0 / f64::from(PER_MINUTE));
        let what = format!("queued writes on {label}");
        report.check(refused.is_empty(), format!("{what}: accepts refused: {refused:?}"));
        report.check(
            delivered as usize == load.writes && failed == 0.0,
            format!("{what}: {delivered} delivered, {failed} failed of {}", load.writes),
        );
        report.check(missing == 0, format!("{what}: {missing} events missing at Cronofy"));
        report.check(
            failed_calls.is_empty(),
            format!("{what}: the other tenant's calls failed: {failed_calls:?}"),
        );
        // Arrivals may pass the claimed budget by the entries in flight at a window's edge.
        let slack = 8 * 5;
        report.check(
            peak_second <= PER_SECOND as usize + slack && peak_minute <= PER_MINUTE as usize + slack,
            format!("{what}: {peak_second} entries in a second, {peak_minute} in a minute"),
        );
        let ms = |times: &[Duration], p: f64| percentile(times, p).as_secs_f64() * 1e3;
        let batches = writes.iter().filter(|r| r.endpoint == Endpoint::Batch).count();
        let entries_sent: usize = writes.iter().map(|r| r.event_writes().len()).sum();
        table.row(&[
            (*label).into(),
            replicas.to_string(),
            format!("{} ({})", load.writes, QUEUEING.len()),
            format!("{:.1} / {:.1}", ms(&accept_times, 0.5), ms(&accept_times, 0.99)),
            format!("{:.0}", load.writes as f64 / accept_took.as_secs_f64()),
            format!("{} s", back.as_secs()),
            format!("{:.0} s", drained.as_secs_f64()),
            format!("{:.0} s", minimum.as_secs_f64()),
            format!("{:.2}", drained.as_secs_f64() / minimum.as_secs_f64()),
            format!("{delivered} / {failed}"),
            format!(
                "{} ({batches} batches; {:.1})",
                writes.len(),
                entries_sent as f64 / writes.len().max(1) as f64
            ),
            format!("{peak_second} / {peak_minute}"),
            format!("{:.1} / {:.1}", ms(&idle, 0.5), ms(&idle, 0.99)),
            format!("{:.1} / {:.1} ({})", ms(&during, 0.5), ms(&during, 0.99), during.len()),
        ]);
    }
    report.section(
        &format!(
            "Queued writes: a burst from {} tenants of one application, Cronofy down for the first {} s, budget {PER_SECOND}/s and {PER_MINUTE}/min",
            QUEUEING.len(),
            load.outage.as_secs()
        ),
        &table.finish(),
    );
    Ok(())
}
