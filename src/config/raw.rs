//! The configuration file as written, before checking (contract §5).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// The TOML file, key for key. Unknown keys are refused so typos surface at start-up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub(super) listen: SocketAddr,
    #[serde(default = "default_metrics_listen")]
    pub(super) metrics_listen: SocketAddr,
    pub(super) store: RawStore,
    pub(super) state: RawState,
    pub(super) encryption: RawEncryption,
    #[serde(default)]
    pub(super) tenants: Vec<RawTenant>,
    #[serde(default)]
    pub(super) callbacks: Option<RawCallbacks>,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) grpc: super::GrpcSettings,
    #[serde(default)]
    pub(super) changes: super::ChangeSettings,
    #[serde(default)]
    pub(super) audit: super::AuditSettings,
    #[serde(default)]
    pub(super) erasure: super::ErasureSettings,
    #[serde(default)]
    pub(super) queue: super::QueueSettings,
    #[serde(default)]
    pub(super) refresh_ahead: super::RefreshAheadSettings,
    #[serde(default = "default_state_ttl", with = "humantime_serde")]
    pub(super) state_ttl: Duration,
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    pub(super) refresh_margin: Duration,
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub(super) shutdown_grace: Duration,
    #[serde(default = "default_drain_delay", with = "humantime_serde")]
    pub(super) drain_delay: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: String,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: u32,
    #[serde(default = "default_true")]
    pub(super) auto_migrate: bool,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    #[serde(default = "default_token_cache_ttl", with = "humantime_serde")]
    pub(super) token_cache_ttl: Duration,
    #[serde(default = "default_token_cache_entries")]
    pub(super) token_cache_entries: u64,
    pub(super) spill_dir: Option<PathBuf>,
}

fn default_token_cache_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_token_cache_entries() -> u64 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) signing_key_env: Option<String>,
    pub(super) signing_key_file: Option<PathBuf>,
    /// Rotating state keys, like `encryption.keys`: the first seals, all open.
    #[serde(default)]
    pub(super) keys: Vec<RawEncryptionKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncryption {
    pub(super) keys: Vec<RawEncryptionKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncryptionKey {
    pub(super) id: String,
    pub(super) key_env: Option<String>,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub(super) id: String,
    pub(super) api_key_sha256: Vec<String>,
    pub(super) client_id: String,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) previous_client_secret_env: Option<String>,
    pub(super) previous_client_secret_file: Option<PathBuf>,
    #[serde(default = "default_data_center")]
    pub(super) data_center: String,
    pub(super) redirect_uris: Vec<String>,
    pub(super) api_base_url: Option<String>,
    pub(super) app_base_url: Option<String>,
    #[serde(default)]
    pub(super) rate_limit: RawRateLimit,
    /// Send `avoid_linking=true` unless a request chooses otherwise.
    #[serde(default = "default_avoid_linking")]
    pub(super) avoid_linking: bool,
    /// Allow plain `http://` upstream URLs on hosts other than loopback.
    #[serde(default)]
    pub(super) allow_plain_http: bool,
}

fn default_avoid_linking() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    #[serde(default = "default_per_second")]
    pub(super) per_second: u32,
    #[serde(default = "default_per_minute")]
    pub(super) per_minute: u32,
    /// Whether a `/v1/batch` request counts one request per entry.
    #[serde(default = "default_count_batch_entries")]
    pub(super) count_batch_entries: bool,
}

/// Cronofy does not say how a batch counts against its limit: assume each entry does.
fn default_count_batch_entries() -> bool {
    true
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            per_second: default_per_second(),
            per_minute: default_per_minute(),
            count_batch_entries: default_count_batch_entries(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallbacks {
    pub(super) listen: Option<SocketAddr>,
    pub(super) public_url: Option<String>,
    #[serde(default = "default_authorization_ttl", with = "humantime_serde")]
    pub(super) authorization_ttl: Duration,
    pub(super) max_connections: Option<u32>,
    pub(super) max_waiting: Option<u32>,
    pub(super) max_waiting_per_peer: Option<u32>,
    pub(super) max_in_flight: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub(super) header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) body_timeout: Option<Duration>,
    pub(super) max_body_bytes: Option<usize>,
}

fn default_authorization_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "default_log_format")]
    pub(super) format: String,
    #[serde(default = "default_log_level")]
    pub(super) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub(super) request_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub(super) connect_timeout: Duration,
    #[serde(default = "default_max_attempts")]
    pub(super) max_attempts: u32,
    #[serde(default = "default_backoff_base", with = "humantime_serde")]
    pub(super) backoff_base: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub(super) backoff_max: Duration,
    #[serde(default = "default_retry_ceiling", with = "humantime_serde")]
    pub(super) retry_ceiling: Duration,
    #[serde(default)]
    pub(super) breaker: RawBreaker,
    #[serde(default = "default_revoke_retry_interval", with = "humantime_serde")]
    pub(super) revoke_retry_interval: Duration,
}

fn default_revoke_retry_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            revoke_retry_interval: default_revoke_retry_interval(),
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
            max_attempts: default_max_attempts(),
            backoff_base: default_backoff_base(),
            backoff_max: default_backoff_max(),
            retry_ceiling: default_retry_ceiling(),
            breaker: RawBreaker::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    #[serde(default = "default_failure_threshold")]
    pub(super) failure_threshold: u32,
    #[serde(default = "default_cool_down", with = "humantime_serde")]
    pub(super) cool_down: Duration,
}

impl Default for RawBreaker {
    fn default() -> Self {
        RawBreaker {
            failure_threshold: default_failure_threshold(),
            cool_down: default_cool_down(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50051))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}
fn default_true() -> bool {
    true
}
fn default_max_connections() -> u32 {
    8
}
fn default_data_center() -> String {
    "us".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_state_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_refresh_margin() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(20)
}
fn default_drain_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_attempts() -> u32 {
    4
}
fn default_backoff_base() -> Duration {
    Duration::from_millis(100)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_ceiling() -> Duration {
    Duration::from_secs(30)
}
fn default_failure_threshold() -> u32 {
    5
}
fn default_cool_down() -> Duration {
    Duration::from_secs(30)
}
// Cronofy's documented default per application.
fn default_per_second() -> u32 {
    50
}
fn default_per_minute() -> u32 {
    500
}
