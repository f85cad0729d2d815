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
    /// Accepted now so one file serves later versions; used by Enterprise Connect members.
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) callbacks: Option<RawCallbacks>,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default = "default_state_ttl", with = "humantime_serde")]
    pub(super) state_ttl: Duration,
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    pub(super) refresh_margin: Duration,
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub(super) shutdown_grace: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: String,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) signing_key_env: Option<String>,
    pub(super) signing_key_file: Option<PathBuf>,
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
    #[serde(default = "default_data_center")]
    pub(super) data_center: String,
    pub(super) redirect_uris: Vec<String>,
    pub(super) api_base_url: Option<String>,
    pub(super) app_base_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallbacks {
    #[allow(dead_code)]
    pub(super) listen: Option<SocketAddr>,
    #[allow(dead_code)]
    pub(super) public_url: Option<String>,
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
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50051))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
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
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
