//! Grants expiring at once: every grant refreshed once, no call failed, the
//! tenant's budget never exceeded.

use std::time::Duration;

use fake_cronofy::Endpoint;
use futures::{StreamExt, stream};
use rand::seq::SliceRandom;
use time::OffsetDateTime;
use tokio::time::Instant;
use tonic::{Code, transport::Channel};

use crate::{
    calls::upsert,
    grants::{self, Seeded},
    harness::{Bench, free_port},
    peaks::{peak_in_clock_seconds, peak_in_window},
    report::{Report, Table},
    setup::{Backend, RunArgs},
};

/// Calls in flight in the expiry scenario.
const EXPIRY_IN_FLIGHT: usize = 64;

/// `args.expiring` grants whose access tokens all expire now, each written to
/// twice by callers 64 at a time: every grant refreshed once, no call failed,
/// the tenant's budget never exceeded.
pub(crate) async fn run(args: &RunArgs, bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let count = if args.quick { 300 } else { args.expiring };
    // The smoke run's 900 requests must press on the budget, or its check proves nothing.
    let budget = if args.quick { 200 } else { args.refresh_budget };
    let mut table = Table::new(&[
        "backend",
        "grants",
        "calls",
        "failed",
        "refreshes",
        "seconds",
        "peak in any 1 s",
        "peak in any 60 s",
        "peak in a clock second",
        "budget",
    ]);
    for backend in Backend::all(args, bench, "expiry").await? {
        let config = bench.config(
            &format!("expiry-{}", backend.label),
            free_port()?,
            &backend.options(budget, None),
        )?;
        let store = bench.open_store(&config).await?;
        let seeded = grants::seed(bench, &store, 0..count, OffsetDateTime::now_utc()).await?;
        drop(store);
        let server = bench
            .start_calgate(&format!("calgate-expiry-{}", backend.label), &config)
            .await?;
        bench.fake.clear_requests();
        let mut calls: Vec<&Seeded> = seeded.iter().chain(&seeded).collect();
        calls.shuffle(&mut rand::rng());
        let channel = Channel::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?;
        let started = Instant::now();
        let started_wall = OffsetDateTime::now_utc();
        let outcomes: Vec<Result<(), Code>> = stream::iter(calls.iter().copied())
            .map(|grant| upsert(channel.clone(), grant))
            .buffer_unordered(EXPIRY_IN_FLIGHT)
            .collect()
            .await;
        let elapsed = started.elapsed();
        let failed = outcomes.iter().filter(|o| o.is_err()).count();
        let mut codes: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.err())
            .map(|c| format!("{c:?}"))
            .collect();
        codes.sort();
        codes.dedup();
        let requests = bench.fake.requests();
        let refreshes = requests.iter().filter(|r| r.endpoint == Endpoint::Token).count();
        let writes = requests.iter().filter(|r| r.endpoint == Endpoint::UpsertEvent).count();
        let (peak_second, peak_minute) = (
            peak_in_window(&requests, Duration::from_secs(1)),
            peak_in_window(&requests, Duration::from_secs(60)),
        );
        let peak_clock_second = peak_in_clock_seconds(&requests, started, started_wall);
        report.check(
            failed == 0,
            format!("expiry on {}: {failed} calls failed ({codes:?})", backend.label),
        );
        report.check(
            refreshes == count && writes == calls.len(),
            format!(
                "expiry on {}: {refreshes} refreshes for {count} grants, {writes} writes for {} calls",
                backend.label,
                calls.len()
            ),
        );
        // The budget holds for the requests calgate *claims* in any sliding
        // window, in one process or shared through PostgreSQL (token buckets,
        // docs/postgres.md). The fake sees *arrivals*: a request claimed in a
        // window's last moments may arrive in the next one, so a window of
        // arrivals may hold up to the calls in flight more (measured: 203 and
        // 213 for a budget of 200). A limiter that did not limit would show the
        // whole load (~900 in the smoke run).
        let in_flight = EXPIRY_IN_FLIGHT;
        let within = peak_second <= budget as usize + in_flight && peak_minute <= budget as usize * 60 + in_flight;
        report.check(
            within,
            format!(
                "expiry on {}: {peak_second} requests in one second ({peak_clock_second} in a clock second), budget {budget}",
                backend.label
            ),
        );
        // The load reached the budget: a broken limiter would have shown.
        let pressed = peak_second.max(peak_clock_second) >= budget as usize * 8 / 10;
        report.check(
            pressed,
            format!(
                "expiry on {}: the load reached {peak_second} requests in a second, under 80 % of the budget {budget}",
                backend.label
            ),
        );
        table.row(&[
            backend.label.into(),
            count.to_string(),
            calls.len().to_string(),
            failed.to_string(),
            refreshes.to_string(),
            format!("{:.1}", elapsed.as_secs_f64()),
            peak_second.to_string(),
            peak_minute.to_string(),
            peak_clock_second.to_string(),
            format!("{budget}/s, {}/min", budget * 60),
        ]);
        server.stop().await?;
        backend.drop_database().await;
    }
    report.section("Grants expiring at once", &table.finish());
    Ok(())
}
