//! The scenarios of docs/benchmarks.md and the figures each reports.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use calgate::domain::grant::GrantSelector;
use fake_cronofy::Endpoint;
use rand::seq::IndexedRandom;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::{
    calls::upsert_request,
    grants::{self, Seeded},
    h2load::{self, Load, percentile},
    harness::{Bench, CalgateOptions, Server, TENANT, free_port},
    report::{Report, Table, median, us},
    setup::{Backend, RunArgs},
};

/// Calls in flight for the load runs.
const IN_FLIGHT: [u32; 3] = [1, 16, 64];
/// A rate budget high enough never to be what is measured.
const NO_BUDGET: u32 = 1_000_000;

/// Runs the chosen scenarios and prints the report.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let calgate = args.calgate.clone().unwrap_or_else(crate::sibling_calgate);
    let bench = Bench::new(args.out.clone(), calgate).await?;
    let mut report = Report::default();
    print_machine(&mut report, &args).await;
    let wants = |name: &str| args.only.iter().any(|s| s == name);
    if wants("throughput") {
        throughput(&args, &bench, &mut report).await?;
    }
    if wants("startup") {
        startup(&args, &bench, &mut report).await?;
    }
    if wants("grants") {
        large_store(&args, &bench, &mut report).await?;
    }
    if wants("expiry") {
        crate::expiry::run(&args, &bench, &mut report).await?;
    }
    if wants("changes") {
        let backends = Backend::all(&args, &bench, "changes").await?;
        let stores: Vec<(&str, String)> = backends.iter().map(|b| (b.label, b.url.clone())).collect();
        let outcome = crate::changes::run(&bench, &mut report, args.quick, &stores).await;
        for backend in &backends {
            backend.drop_database().await;
        }
        outcome?;
    }
    if wants("ahead") {
        let backends = Backend::all(&args, &bench, "ahead").await?;
        let stores: Vec<(&'static str, String)> = backends.iter().map(|b| (b.label, b.url.clone())).collect();
        let outcome = crate::ahead::run(
            &bench,
            &mut report,
            args.quick,
            crate::ahead::Load {
                grants: args.expiring,
                seconds: args.ahead_seconds,
                writes_per_second: args.ahead_writes,
            },
            &stores,
            &args.ahead_cases,
        )
        .await;
        for backend in &backends {
            backend.drop_database().await;
        }
        outcome?;
    }
    if wants("queue") {
        let backends = Backend::all(&args, &bench, "queue").await?;
        let stores: Vec<(&'static str, String)> = backends
            .iter()
            .filter(|b| args.queue_stores.iter().any(|s| s == b.label))
            .map(|b| (b.label, b.url.clone()))
            .collect();
        let load = if args.quick {
            crate::queue::Load {
                writes: 300,
                outage: Duration::from_secs(10),
            }
        } else {
            crate::queue::Load {
                writes: args.queue_writes,
                outage: Duration::from_secs(args.queue_outage),
            }
        };
        let outcome = crate::queue::run(&bench, &mut report, &load, &stores).await;
        for backend in &backends {
            backend.drop_database().await;
        }
        outcome?;
    }
    std::fs::write(bench.dir.join("report.md"), report.text())?;
    anyhow::ensure!(
        report.failures.is_empty(),
        "correctness checks failed: {:?}",
        report.failures
    );
    Ok(())
}

async fn print_machine(report: &mut Report, args: &RunArgs) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let h2load = tokio::process::Command::new("h2load")
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    report.section(
        "Machine",
        &format!(
            "{cores} cores ({cpu}); {h2load}; runs per figure: {}; date {}\n",
            if args.quick { 1 } else { args.runs },
            OffsetDateTime::now_utc().date()
        ),
    );
}

/// The UpsertEvent request every load run sends, as a gRPC frame file.
fn upsert_frame(bench: &Bench, user_ref: &str, calendar_id: &str) -> anyhow::Result<PathBuf> {
    let path = bench.dir.join(format!("upsert-{user_ref}.bin"));
    h2load::write_frame(&path, &upsert_request(user_ref, calendar_id, "bench-event-1".into()))?;
    Ok(path)
}

/// One h2load run whose every call must have reached the fake exactly once.
async fn load(
    bench: &Bench,
    report: &mut Report,
    server: &Server,
    body: &Path,
    in_flight: u32,
    n: u64,
) -> anyhow::Result<Load> {
    bench.fake.clear_requests();
    let log = bench.dir.join(format!("h2load-{}.log", server.name));
    let cpu_before = server.cpu_time()?;
    let switches_before = server.context_switches()?;
    let mut result = h2load::run(&server.url("UpsertEvent"), body, in_flight, n, &log).await?;
    result.cpu_per_call = (server.cpu_time()? - cpu_before) / u32::try_from(n)?;
    result.switches_per_call = (server.context_switches()? - switches_before) as f64 / n as f64;
    let upstream = bench.fake.count(Endpoint::UpsertEvent) as u64;
    report.check(
        result.succeeded == n && upstream == n,
        format!(
            "{} at {in_flight} in flight: {n} sent, {} answered, {upstream} reached the upstream",
            server.name, result.succeeded
        ),
    );
    Ok(result)
}

/// Checks calgate's own count of UpsertEvent outcomes: all OK.
async fn check_all_ok(report: &mut Report, server: &Server, sent: u64) -> anyhow::Result<()> {
    let all = server.counter("calgate_rpc_requests_total{", &["UpsertEvent"]).await?;
    let ok = server
        .counter("calgate_rpc_requests_total{", &["UpsertEvent", "\"OK\""])
        .await?;
    report.check(
        all as u64 == sent && ok as u64 == sent,
        format!(
            "{}: {sent} UpsertEvent sent, calgate counted {all} of which {ok} OK",
            server.name
        ),
    );
    Ok(())
}

/// calgate (each backend) against the passthrough at 1, 16 and 64 in flight.
async fn throughput(args: &RunArgs, bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let account = bench.connect();
    let backends = Backend::all(args, bench, "throughput").await?;
    let mut servers = vec![bench.start_passthrough(&account).await?];
    for backend in &backends {
        let config = bench.config(
            &format!("throughput-{}", backend.label),
            free_port()?,
            &backend.options(NO_BUDGET, None),
        )?;
        let store = bench.open_store(&config).await?;
        grants::seed_accounts(&store, vec![("user-0".into(), account.clone())], far_future()).await?;
        servers.push(
            bench
                .start_calgate(&format!("calgate-{}", backend.label), &config)
                .await?,
        );
    }
    let body = upsert_frame(bench, "user-0", &account.calendar_id)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: Vec<_> = servers.iter().map(Server::memory).collect::<Result<_, _>>()?;

    let (warm_up, runs) = if args.quick { (200, 1) } else { (2000, args.runs) };
    let requests = |in_flight: u32| match (args.quick, in_flight) {
        (true, 1) => 300,
        (true, _) => 2000,
        (false, 1) => 5000,
        (false, _) => 40_000,
    };
    let mut sent = warm_up;
    for server in &servers {
        load(bench, report, server, &body, 16, warm_up).await?;
    }
    // results[in_flight index][server index] = one Load per run.
    let mut results = vec![vec![Vec::new(); servers.len()]; IN_FLIGHT.len()];
    for _ in 0..runs {
        for (i, &in_flight) in IN_FLIGHT.iter().enumerate() {
            for (s, server) in servers.iter().enumerate() {
                results[i][s].push(load(bench, report, server, &body, in_flight, requests(in_flight)).await?);
            }
        }
    }
    sent += runs as u64 * IN_FLIGHT.iter().map(|&f| requests(f)).sum::<u64>();
    let peak: Vec<_> = servers.iter().map(Server::memory).collect::<Result<_, _>>()?;

    let mut table = Table::new(&[
        "server",
        "in flight",
        "req/s (median)",
        "× passthrough",
        "p50 µs",
        "p99 µs",
        "p50 overhead µs",
        "server CPU µs/call",
        "context switches/call",
    ]);
    for (i, &in_flight) in IN_FLIGHT.iter().enumerate() {
        for (s, server) in servers.iter().enumerate() {
            let runs = &results[i][s];
            let base = &results[i][0];
            let rps = median(&runs.iter().map(|l| l.rps).collect::<Vec<_>>());
            // Ratio per run (same run, same minute), then the median of those.
            let ratio = median(&runs.iter().zip(base).map(|(l, b)| l.rps / b.rps).collect::<Vec<_>>());
            let p50 = median(&runs.iter().map(|l| us(l.p50)).collect::<Vec<_>>());
            let p99 = median(&runs.iter().map(|l| us(l.p99)).collect::<Vec<_>>());
            let overhead = median(
                &runs
                    .iter()
                    .zip(base)
                    .map(|(l, b)| us(l.p50) - us(b.p50))
                    .collect::<Vec<_>>(),
            );
            let cpu = median(&runs.iter().map(|l| us(l.cpu_per_call)).collect::<Vec<_>>());
            let switches = median(&runs.iter().map(|l| l.switches_per_call).collect::<Vec<_>>());
            table.row(&[
                server.name.clone(),
                in_flight.to_string(),
                format!("{rps:.0}"),
                format!("{ratio:.2}"),
                format!("{p50:.0}"),
                format!("{p99:.0}"),
                if s == 0 {
                    "—".into()
                } else {
                    format!("{overhead:+.0}")
                },
                format!("{cpu:.1}"),
                format!("{switches:.2}"),
            ]);
        }
    }
    report.section("UpsertEvent throughput and latency", &table.finish());

    let mut memory = Table::new(&["server", "idle RSS MiB", "peak RSS MiB (after 64 in flight)"]);
    for ((server, idle), peak) in servers.iter().zip(&idle).zip(&peak) {
        memory.row(&[
            server.name.clone(),
            format!("{:.1}", idle.rss_kib as f64 / 1024.0),
            format!("{:.1}", peak.peak_kib as f64 / 1024.0),
        ]);
    }
    report.section("Memory", &memory.finish());

    let mut servers = servers.into_iter();
    if let Some(passthrough) = servers.next() {
        let counts: serde_json::Value = serde_json::from_str(passthrough.stop().await?.trim()).unwrap_or_default();
        report.check(
            counts["ok"] == sent && counts["failed"] == 0,
            format!("passthrough: {sent} sent, answered {counts}"),
        );
    }
    for server in servers {
        check_all_ok(report, &server, sent).await?;
        server.stop().await?;
    }
    for backend in &backends {
        backend.drop_database().await;
    }
    Ok(())
}

fn far_future() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(1)
}

/// Time from spawn to SERVING on SQLite: with a migrated store, and a new one.
async fn startup(args: &RunArgs, bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let db = bench.dir.join("startup.db");
    let options = CalgateOptions {
        per_minute: None,
        store_url: format!("sqlite://{}", db.display()),
        per_second: 50,
        extra: String::new(),
        token_cache_ttl: None,
    };
    let runs = if args.quick { 1 } else { args.runs.max(5) };
    let mut existing = Vec::new();
    let mut fresh = Vec::new();
    for _ in 0..runs {
        for (new_store, times) in [(true, &mut fresh), (false, &mut existing)] {
            if new_store {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                }
            }
            let config = bench.config("startup", free_port()?, &options)?;
            let server = bench.start_calgate("calgate-startup", &config).await?;
            times.push(server.ready_after.as_secs_f64() * 1000.0);
            server.stop().await?;
        }
    }
    let mut table = Table::new(&["SQLite store", "ms from spawn to SERVING (median)", "each run"]);
    for (label, times) in [("migrated", &existing), ("new (migrations run)", &fresh)] {
        table.row(&[
            label.into(),
            format!("{:.1}", median(times)),
            times.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(", "),
        ]);
    }
    report.section("Start-up", &table.finish());
    Ok(())
}

/// Grant lookups and UpsertEvent with 10 grants stored, then with `args.grants`.
async fn large_store(args: &RunArgs, bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let total = if args.quick { 20_000 } else { args.grants };
    let real = if args.quick { 200 } else { 2000 };
    let lookups = if args.quick { 1000 } else { 10_000 };
    let n = if args.quick { 2000 } else { 20_000 };
    let runs = if args.quick { 1 } else { args.runs };
    let mut table = Table::new(&[
        "backend",
        "grants stored",
        "lookup p50 µs",
        "lookup p99 µs",
        "UpsertEvent req/s, cache off",
        "UpsertEvent req/s, cache on",
        "metrics scrape ms",
    ]);
    let mut slowdowns = Table::new(&["backend", "cache", "req/s with 10", "req/s with many", "change"]);
    for backend in Backend::all(args, bench, "grants").await? {
        let config_for = |ttl| {
            bench.config(
                &format!("grants-{}", backend.label),
                free_port()?,
                &backend.options(NO_BUDGET, Some(ttl)),
            )
        };
        let store = bench.open_store(&config_for("0s")?).await?;
        let mut seeded = grants::seed(bench, &store, 0..10, far_future()).await?;
        let body = upsert_frame(bench, &seeded[0].user_ref, &seeded[0].calendar_id)?;
        let mut figures = Vec::new();
        for stage in 0..2 {
            if stage == 1 {
                seeded.extend(grants::seed(bench, &store, 10..real, far_future()).await?);
                grants::add_copies(&backend.url, &seeded[0].user_ref, total - real as u64).await?;
            }
            let stored = if stage == 0 { 10 } else { total };
            let mut scrapes = Vec::new();
            let (p50, p99) = lookup_latency(&store, &seeded, lookups).await?;
            let mut rps = Vec::new();
            for ttl in ["0s", "5s"] {
                let server = bench
                    .start_calgate(&format!("calgate-grants-{}", backend.label), &config_for(ttl)?)
                    .await?;
                let mut per_run = Vec::new();
                for _ in 0..runs {
                    per_run.push(load(bench, report, &server, &body, 16, n).await?.rps);
                }
                let scrape = Instant::now();
                check_all_ok(report, &server, n * runs as u64).await?;
                scrapes.push(scrape.elapsed());
                server.stop().await?;
                rps.push(median(&per_run));
            }
            table.row(&[
                backend.label.into(),
                stored.to_string(),
                format!("{p50:.0}"),
                format!("{p99:.0}"),
                format!("{:.0}", rps[0]),
                format!("{:.0}", rps[1]),
                format!(
                    "{:.0}",
                    scrapes.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0
                ),
            ]);
            figures.push(rps);
        }
        for (c, cache) in ["off", "on (5 s)"].iter().enumerate() {
            let (small, large) = (figures[0][c], figures[1][c]);
            slowdowns.row(&[
                backend.label.into(),
                (*cache).into(),
                format!("{small:.0}"),
                format!("{large:.0}"),
                format!("{:+.1} %", (large / small - 1.0) * 100.0),
            ]);
        }
        drop(store);
        backend.drop_database().await;
    }
    report.section(
        &format!("Grant lookups and UpsertEvent (16 in flight) with 10 and {total} grants"),
        &format!("{}\n{}", table.finish(), slowdowns.finish()),
    );
    Ok(())
}

/// Median and 99th percentile of `Store::find_grant` by user_ref, one at a time, random grants.
async fn lookup_latency(store: &calgate::store::Store, seeded: &[Seeded], count: usize) -> anyhow::Result<(f64, f64)> {
    let mut rng = rand::rng();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let grant = seeded.choose(&mut rng).context("no grants")?;
        let selector = GrantSelector::UserRef(grant.user_ref.clone());
        let started = Instant::now();
        let found = store.find_grant(TENANT, &selector).await?;
        times.push(started.elapsed());
        anyhow::ensure!(found.is_some(), "grant {} not found", grant.user_ref);
    }
    times.sort_unstable();
    Ok((us(percentile(&times, 0.5)), us(percentile(&times, 0.99))))
}
