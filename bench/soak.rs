//! `calgate-bench soak`: steady load on calgate (release build, PostgreSQL)
//! for a while, with a share of Cronofy's answers failing (503, 429, 1.5 s
//! stalls) and one PostgreSQL restart half-way. Checks, and exits non-zero
//! when one fails:
//! - every call is OK — and then its event is at the fake — or ends with a
//!   documented status (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED with
//!   calgate's reasons);
//! - RSS and open file descriptors stay flat (the last samples against the
//!   first ones after warm-up, with a margin).
//!
//! Figures are printed (docs/security.md quotes one run), never judged.

use std::{collections::BTreeMap, path::PathBuf, process::Command as Shell, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use clap::Args;
use sqlx::{Connection, Executor};
use time::OffsetDateTime;
use tokio::{sync::Semaphore, time::Instant};
use tonic::{Code, Request, transport::Channel};
use tonic_types::StatusExt;

use crate::{
    grants::{self, Seeded},
    h2load::percentile,
    harness::{API_KEY, Bench, CalgateOptions, Server, free_port},
};

/// The soak run's options.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the load runs.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Calls a second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Share of Cronofy's answers that fail (0..=1).
    #[arg(long, default_value_t = 0.01)]
    faults: f64,
    /// PostgreSQL admin URL: a database is created for the run and dropped after.
    #[arg(long, env = "CALGATE_BENCH_POSTGRES_URL")]
    postgres_url: String,
    /// Restart PostgreSQL half-way with `pg_ctlcluster` (the server must be this machine's).
    #[arg(long)]
    restart_postgres: bool,
    /// Work folder (emptied first).
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// The calgate binary (default: the one built beside this harness).
    #[arg(long)]
    calgate: Option<PathBuf>,
}

/// Connected users the load is spread over.
const USERS: usize = 20;
/// Calls in flight at most (a stalled Cronofy must not pile up calls).
const IN_FLIGHT: usize = 256;
/// Each call's deadline.
const DEADLINE: &str = "5S";

/// What calgate may answer instead of OK under faults, by (code, reason).
fn documented(code: Code, reason: &str) -> bool {
    matches!(
        (code, reason),
        (Code::Unavailable, "UPSTREAM_UNAVAILABLE" | "STORE_UNAVAILABLE")
            | (
                Code::ResourceExhausted,
                "UPSTREAM_RATE_LIMITED" | "RATE_BUDGET_EXHAUSTED"
            )
            | (Code::DeadlineExceeded, _)
    )
}

/// One call's outcome.
enum Outcome {
    Ok {
        user: usize,
        event_id: String,
        latency: Duration,
    },
    Refused {
        code: Code,
        reason: String,
    },
}

/// Runs the soak and prints its figures.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let calgate = args.calgate.clone().unwrap_or_else(crate::sibling_calgate);
    let bench = Bench::new(args.out.clone(), calgate).await?;
    let database = format!("calgate_soak_{}", hex::encode(rand::random::<[u8; 4]>()));
    let mut admin = sqlx::PgConnection::connect(&args.postgres_url).await?;
    admin.execute(format!("CREATE DATABASE {database}").as_str()).await?;
    let mut store_url = url::Url::parse(&args.postgres_url)?;
    store_url.set_path(&database);
    let result = soak(&bench, &args, store_url.as_str()).await;
    let mut admin = sqlx::PgConnection::connect(&args.postgres_url).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
        .await?;
    result
}

async fn soak(bench: &Bench, args: &SoakArgs, store_url: &str) -> anyhow::Result<()> {
    let options = CalgateOptions {
        per_minute: None,
        store_url: store_url.to_owned(),
        per_second: 10_000,
        extra: String::new(),
        token_cache_ttl: None,
    };
    let config = bench.config("soak", free_port()?, &options)?;
    let store = bench.open_store(&config).await?;
    let users = grants::seed(
        bench,
        &store,
        0..USERS,
        OffsetDateTime::now_utc() + time::Duration::hours(24),
    )
    .await?;
    drop(store);
    let server = bench.start_calgate("soak", &config).await?;
    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let client = CalendarWriteServiceClient::new(channel);
    bench.fake.set_chaos(args.faults);

    let users = Arc::new(users);
    let places = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut calls = tokio::task::JoinSet::new();
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    let started = Instant::now();
    let interval = Duration::from_secs(1) / args.rate.max(1);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut restarted = !args.restart_postgres;
    let mut next_sample = Duration::ZERO;
    let mut n: u64 = 0;
    while started.elapsed() < args.duration {
        ticker.tick().await;
        if started.elapsed() >= next_sample {
            let memory = server.memory()?;
            samples.push((started.elapsed(), memory.rss_kib, open_fds(&server)?));
            next_sample += Duration::from_secs(5);
        }
        if !restarted && started.elapsed() >= args.duration / 2 {
            restarted = true;
            restart_postgres()?;
            println!("PostgreSQL restarted at {:?}", started.elapsed());
        }
        let Ok(place) = places.clone().try_acquire_owned() else {
            continue; // calgate is stalled on Cronofy: do not pile up calls
        };
        n += 1;
        let user = (n % USERS as u64) as usize;
        let event_id = format!("soak-{n}");
        let request = upsert(&users[user], &event_id);
        let mut client = client.clone();
        calls.spawn(async move {
            let _place = place;
            let sent = Instant::now();
            match client.upsert_event(request).await {
                Ok(_) => Outcome::Ok {
                    user,
                    event_id,
                    latency: sent.elapsed(),
                },
                Err(status) => Outcome::Refused {
                    code: status.code(),
                    reason: status
                        .get_error_details()
                        .error_info()
                        .map(|info| info.reason.clone())
                        .unwrap_or_default(),
                },
            }
        });
    }
    let mut latencies = Vec::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut undocumented = 0u64;
    let mut missing = 0u64;
    while let Some(outcome) = calls.join_next().await {
        match outcome.context("a call's task")? {
            Outcome::Ok {
                user,
                event_id,
                latency,
            } => {
                latencies.push(latency);
                let seeded = &users[user];
                if bench.fake.event(&seeded.sub, &seeded.calendar_id, &event_id).is_none() {
                    missing += 1;
                }
            }
            Outcome::Refused { code, reason } => {
                if !documented(code, &reason) {
                    undocumented += 1;
                }
                *refused.entry(format!("{code:?} {reason}")).or_default() += 1;
            }
        }
    }
    let last = server.memory()?;
    samples.push((started.elapsed(), last.rss_kib, open_fds(&server)?));
    server.stop().await?;

    latencies.sort();
    let ok = latencies.len() as u64;
    println!(
        "soak: {:?} at {} calls/s, {:.1} % faults",
        args.duration,
        args.rate,
        args.faults * 100.0
    );
    println!("  calls            {n}");
    println!("  OK               {ok}");
    for (status, count) in &refused {
        println!("  {status:<16} {count}");
    }
    println!(
        "  latency OK       p50 {:?}  p99 {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    // Flat: the last samples against the first ones after a minute's warm-up (or the first third).
    let warm = samples.len() / 3;
    let early = &samples[warm.min(samples.len().saturating_sub(1))..(warm + 3).min(samples.len())];
    let late = &samples[samples.len().saturating_sub(3)..];
    let mean = |part: &[(Duration, u64, usize)], pick: fn(&(Duration, u64, usize)) -> u64| {
        part.iter().map(pick).sum::<u64>() / part.len().max(1) as u64
    };
    let (rss_early, rss_late) = (mean(early, |s| s.1), mean(late, |s| s.1));
    let (fds_early, fds_late) = (mean(early, |s| s.2 as u64), mean(late, |s| s.2 as u64));
    let peak = samples.iter().map(|s| s.1).max().unwrap_or_default();
    println!("  RSS KiB          after warm-up {rss_early}, at the end {rss_late}, peak {peak}");
    println!("  open fds         after warm-up {fds_early}, at the end {fds_late}");

    let mut failed = Vec::new();
    if undocumented > 0 {
        failed.push(format!("{undocumented} calls ended with an undocumented status"));
    }
    if missing > 0 {
        failed.push(format!("{missing} OK calls have no event at the fake"));
    }
    if ok == 0 {
        failed.push("no call succeeded".to_owned());
    }
    if rss_late > rss_early * 3 / 2 + 16 * 1024 {
        failed.push(format!("RSS grew from {rss_early} to {rss_late} KiB"));
    }
    if fds_late > fds_early + 32 {
        failed.push(format!("open fds grew from {fds_early} to {fds_late}"));
    }
    if !failed.is_empty() {
        bail!("soak checks failed: {}", failed.join("; "));
    }
    println!("soak checks passed");
    Ok(())
}

fn upsert(user: &Seeded, event_id: &str) -> Request<pb::UpsertEventRequest> {
    let mut request = Request::new(pb::UpsertEventRequest {
        mode: Default::default(),
        user: Some(pb::upsert_event_request::User::UserRef(user.user_ref.clone())),
        calendar_id: user.calendar_id.clone(),
        event: Some(pb::Event {
            event_id: event_id.to_owned(),
            summary: "Soak".into(),
            start: Some(at(1_780_000_000)),
            end: Some(at(1_780_003_600)),
            ..Default::default()
        }),
    });
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {API_KEY}").parse().expect("metadata"));
    metadata.insert("grpc-timeout", DEADLINE.parse().expect("metadata"));
    request
}

fn at(seconds: i64) -> pb::EventTime {
    pb::EventTime {
        value: Some(pb::event_time::Value::Time(prost_types::Timestamp {
            seconds,
            nanos: 0,
        })),
        tzid: None,
    }
}

/// Open file descriptors of the server process.
fn open_fds(server: &Server) -> anyhow::Result<usize> {
    let pid = server.pid().context("the server's pid")?;
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Restarts this machine's PostgreSQL cluster.
fn restart_postgres() -> anyhow::Result<()> {
    let version = std::fs::read_dir("/etc/postgresql")?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .next()
        .context("no cluster under /etc/postgresql")?;
    let status = Shell::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()?;
    if !status.success() {
        bail!("pg_ctlcluster restart failed: {status}");
    }
    Ok(())
}
