//! The pieces every scenario uses: a work folder with keys and configs, the
//! in-process fake Cronofy, child processes (calgate, the passthrough), their
//! health, memory and metrics.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use calgate::{config::Settings, store::Store};
use fake_cronofy::{ConnectedAccount, FakeCronofy};
use tokio::{
    process::{Child, Command},
    time::Instant,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// The tenant every scenario uses.
pub const TENANT: &str = "bench";
/// Its API key (a benchmark value, not a secret).
pub const API_KEY: &str = "bench-api-key-0123456789abcdef";
/// Its Cronofy OAuth client.
pub const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-client-secret";
/// The scope grants are connected with.
pub const SCOPE: &str = "free_busy_write";

/// How a calgate under test is configured beyond the defaults.
#[derive(Debug, Clone)]
pub struct CalgateOptions {
    /// `store.url`.
    pub store_url: String,
    /// `rate_limit.per_second`.
    pub per_second: u32,
    /// `rate_limit.per_minute` (default: 60 times per_second).
    pub per_minute: Option<u32>,
    /// `store.token_cache_ttl`, when set.
    pub token_cache_ttl: Option<&'static str>,
    /// More TOML tables, appended (e.g. `[callbacks]`, `[changes]`).
    pub extra: String,
}

/// The work folder and the fake Cronofy.
pub struct Bench {
    /// Keys, configs, databases, logs.
    pub dir: PathBuf,
    /// The fake Cronofy, in this process.
    pub fake: FakeCronofy,
    /// The calgate binary.
    pub calgate: PathBuf,
}

impl Bench {
    /// Prepares `dir` (emptied first) and starts the fake.
    pub async fn new(dir: PathBuf, calgate: PathBuf) -> anyhow::Result<Bench> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("state.key"), STANDARD.encode(rand::random::<[u8; 32]>()))?;
        std::fs::write(dir.join("k1.key"), STANDARD.encode(rand::random::<[u8; 32]>()))?;
        std::fs::write(dir.join("client.secret"), CLIENT_SECRET)?;
        let fake = FakeCronofy::start().await?;
        fake.register_client(CLIENT_ID, CLIENT_SECRET);
        // Tokens outlive every scenario; the expiry scenario makes calgate refresh on its own.
        fake.set_access_token_ttl(Duration::from_secs(24 * 3600));
        Ok(Bench { dir, fake, calgate })
    }

    /// A connected user account in the fake.
    pub fn connect(&self) -> ConnectedAccount {
        self.fake.connect_account(CLIENT_ID, SCOPE)
    }

    /// Writes `name.toml` for calgate on `listen`.
    pub fn config(&self, name: &str, listen: SocketAddr, options: &CalgateOptions) -> anyhow::Result<PathBuf> {
        let p = |file: &str| self.dir.join(file).display().to_string();
        let cache = options
            .token_cache_ttl
            .map(|ttl| format!("token_cache_ttl = \"{ttl}\"\n"))
            .unwrap_or_default();
        let toml = format!(
            r#"
listen = "{listen}"
metrics_listen = "127.0.0.1:{metrics}"
shutdown_grace = "2s"
drain_delay = "0s"

[store]
url = "{store}"
{cache}
[state]
signing_key_file = "{state}"

[encryption]
keys = [{{ id = "k1", key_file = "{key}" }}]

[log]
level = "warn"

[[tenants]]
id = "{TENANT}"
api_key_sha256 = ["{hash}"]
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
data_center = "uk"
redirect_uris = ["https://bench.example/cb"]
api_base_url = "{api}"
app_base_url = "{app}"
rate_limit = {{ per_second = {per_second}, per_minute = {per_minute} }}

{extra}
"#,
            metrics = free_port()?.port(),
            store = options.store_url,
            state = p("state.key"),
            key = p("k1.key"),
            hash = hex::encode(calgate::auth::hash_api_key(API_KEY)),
            secret = p("client.secret"),
            api = self.fake.api_base_url(),
            app = self.fake.app_base_url(),
            per_second = options.per_second,
            per_minute = options.per_minute.map_or(u64::from(options.per_second) * 60, u64::from),
            extra = options.extra,
        );
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml)?;
        Ok(path)
    }

    /// The store a config names, opened (and migrated) by this process.
    pub async fn open_store(&self, config: &Path) -> anyhow::Result<Store> {
        let settings = Settings::load(config)?;
        Ok(Store::connect(&settings.store, &settings.encryption_keys).await?)
    }

    /// Starts `calgate serve` with `config`; returns once it answers SERVING.
    pub async fn start_calgate(&self, name: &str, config: &Path) -> anyhow::Result<Server> {
        let settings = Settings::load(config)?;
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let started = Instant::now();
        let child = Command::new(&self.calgate)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.calgate.display()))?;
        let mut server = Server {
            name: name.to_owned(),
            child,
            addr: settings.listen,
            metrics_addr: Some(settings.metrics_listen),
            ready_after: Duration::ZERO,
        };
        server.ready_after = server.wait_serving(started).await?;
        Ok(server)
    }

    /// Starts the passthrough (this binary) forwarding with `account`'s token.
    pub async fn start_passthrough(&self, account: &ConnectedAccount) -> anyhow::Result<Server> {
        let addr = free_port()?;
        let log = std::fs::File::create(self.dir.join("passthrough.log"))?;
        let started = Instant::now();
        let child = Command::new(std::env::current_exe()?)
            .arg("passthrough")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--api-base-url")
            .arg(self.fake.api_base_url())
            .arg("--access-token-env")
            .arg("BENCH_ACCESS_TOKEN")
            .env("BENCH_ACCESS_TOKEN", &account.access_token)
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut server = Server {
            name: "passthrough".into(),
            child,
            addr,
            metrics_addr: None,
            ready_after: Duration::ZERO,
        };
        server.ready_after = server.wait_serving(started).await?;
        Ok(server)
    }
}

/// A server under test, in its own process.
pub struct Server {
    /// Its label in reports.
    pub name: String,
    child: Child,
    /// gRPC address.
    pub addr: SocketAddr,
    /// Prometheus address (calgate only).
    pub metrics_addr: Option<SocketAddr>,
    /// From spawn to the first SERVING answer.
    pub ready_after: Duration,
}

/// Resident and peak resident memory, KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl Server {
    /// The gRPC URL of a method, for h2load.
    pub fn url(&self, method: &str) -> String {
        format!("http://{}/calgate.v1.CalendarWriteService/{method}", self.addr)
    }

    /// Polls the standard health service every millisecond from `started` until SERVING.
    async fn wait_serving(&mut self, started: Instant) -> anyhow::Result<Duration> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_millis(200));
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up ({status}); see its log", self.name);
            }
            if let Ok(channel) = endpoint.connect().await {
                let mut health = HealthClient::new(channel);
                let answer = health.check(HealthCheckRequest { service: String::new() }).await;
                if answer.is_ok_and(|a| a.into_inner().status == ServingStatus::Serving as i32) {
                    return Ok(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        bail!("{} did not report SERVING within 30 s", self.name)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident and peak memory, from /proc.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self.child.id().context("process gone")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or_default()
        };
        Ok(Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        })
    }

    /// CPU time the process has used so far (user + system).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.child.id().context("process gone")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("odd /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // The kernel reports clock ticks of 1/100 s (USER_HZ on Linux).
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Context switches of all the process's threads so far (voluntary and not).
    pub fn context_switches(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("process gone")?;
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let status = std::fs::read_to_string(task?.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(total)
    }

    /// The sum of a Prometheus counter over the series whose labels contain all of `labels`.
    pub async fn counter(&self, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let addr = self.metrics_addr.context("no metrics listener")?;
        let body = reqwest::get(format!("http://{addr}/metrics")).await?.text().await?;
        Ok(body
            .lines()
            .filter(|line| line.starts_with(name) && labels.iter().all(|label| line.contains(label)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Stops the process with SIGTERM and returns what it printed on stdout.
    pub async fn stop(self) -> anyhow::Result<String> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let output = tokio::time::timeout(Duration::from_secs(10), self.child.wait_with_output()).await??;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
