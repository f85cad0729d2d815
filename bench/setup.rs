//! A run's options and the stores it runs against: what every scenario starts from.

use std::path::PathBuf;

use anyhow::Context;
use sqlx::{Connection, Executor};

use crate::harness::{Bench, CalgateOptions};

/// `calgate-bench run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Work folder (emptied first); the report is written to report.md there.
    #[arg(long, default_value = "target/bench")]
    pub(crate) out: PathBuf,
    /// Repetitions of each load run; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// A short smoke run (CI): few requests, small stores, one repetition.
    #[arg(long)]
    pub(crate) quick: bool,
    /// PostgreSQL admin URL: a database is created for the run and dropped after. Without it, PostgreSQL is skipped.
    #[arg(long, env = "CALGATE_BENCH_POSTGRES_URL")]
    pub(crate) postgres_url: Option<String>,
    /// Grants stored in the large-store scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) grants: u64,
    /// Grants expiring at once in the refresh scenario.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) expiring: usize,
    /// The tenant's request budget (per second) in the refresh scenario.
    #[arg(long, default_value_t = 1000)]
    pub(crate) refresh_budget: u32,
    /// How long each refresh-ahead case writes.
    #[arg(long, default_value_t = 300)]
    pub(crate) ahead_seconds: u64,
    /// The refresh-ahead write load, calls a second (the 5 by default).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) ahead_writes: f64,
    /// Refresh-ahead cases to run: steady, outage.
    #[arg(long, value_delimiter = ',', default_value = "steady,outage")]
    pub(crate) ahead_cases: Vec<String>,
    /// Queued writes in the queue scenario's burst.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) queue_writes: usize,
    /// Seconds Cronofy fails every write from the queue scenario's start.
    #[arg(long, default_value_t = 60)]
    pub(crate) queue_outage: u64,
    /// Stores the queue scenario runs on: sqlite, postgres (two runs side by side may each take one).
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub(crate) queue_stores: Vec<String>,
    /// Scenarios to run: throughput, startup, grants, expiry, changes, ahead, queue.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,startup,grants,expiry,changes,ahead,queue"
    )]
    pub(crate) only: Vec<String>,
    /// The calgate binary (default: the one built beside this harness).
    #[arg(long)]
    pub(crate) calgate: Option<PathBuf>,
}

/// A store to run against: SQLite in the work folder, or a PostgreSQL database made for the run.
pub(crate) struct Backend {
    pub(crate) label: &'static str,
    pub(crate) url: String,
    pub(crate) admin: Option<String>,
}

impl Backend {
    pub(crate) async fn all(args: &RunArgs, bench: &Bench, name: &str) -> anyhow::Result<Vec<Backend>> {
        let mut backends = vec![Backend {
            label: "sqlite",
            url: format!("sqlite://{}", bench.dir.join(format!("{name}.db")).display()),
            admin: None,
        }];
        if let Some(admin) = &args.postgres_url {
            let db = format!("calgate_bench_{name}_{}", hex::encode(rand::random::<[u8; 4]>()));
            let mut conn = sqlx::PgConnection::connect(admin)
                .await
                .context("connect to PostgreSQL")?;
            conn.execute(format!("CREATE DATABASE {db}").as_str()).await?;
            let mut url = url::Url::parse(admin)?;
            url.set_path(&db);
            backends.push(Backend {
                label: "postgres",
                url: url.to_string(),
                admin: Some(admin.clone()),
            });
        }
        Ok(backends)
    }

    pub(crate) async fn drop_database(&self) {
        let Some(admin) = &self.admin else { return };
        let name = self.url.rsplit('/').next().unwrap_or_default();
        if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }

    pub(crate) fn options(&self, per_second: u32, token_cache_ttl: Option<&'static str>) -> CalgateOptions {
        CalgateOptions {
            per_minute: None,
            store_url: self.url.clone(),
            per_second,
            extra: String::new(),
            token_cache_ttl,
        }
    }
}
