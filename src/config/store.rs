//! `[store]`: which database, how it is reached, where refused token pairs wait.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;

use super::ConfigError;

/// Where grants live.
#[derive(Debug)]
pub struct StoreSettings {
    /// `sqlite://path`, `sqlite::memory:`, `postgres://…` (checked at load).
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Apply pending migrations at start-up (else run `calgate migrate` first).
    pub auto_migrate: bool,
    /// PostgreSQL password, kept out of `url` (from `password_env` / `password_file`).
    pub password: Option<SecretString>,
    /// How long a replica reuses a grant's decrypted access token without
    /// reading the store again; zero turns the cache off.
    pub token_cache_ttl: Duration,
    /// Most grants whose access tokens are cached.
    pub token_cache_entries: u64,
    /// `upstream.request_timeout`, copied: a refresh lease holds its
    /// transaction through one Cronofy attempt at most, and PostgreSQL ends a
    /// transaction idle for longer than that plus 5 s (freeing its row locks).
    pub upstream_request_timeout: Duration,
    /// Where refreshed token pairs the store refused are kept, encrypted,
    /// until it takes them (survives a restart). None: memory only.
    pub spill_dir: Option<PathBuf>,
}

impl StoreSettings {
    /// The database `url` names (checked when the config was loaded; an
    /// unknown scheme counts as PostgreSQL, whose driver then refuses it).
    pub fn backend(&self) -> StoreBackend {
        StoreBackend::of(&self.url).unwrap_or(StoreBackend::Postgres)
    }
}

/// Which database a `store.url` names, decided once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// `sqlite:…`: one machine.
    Sqlite,
    /// `postgres://…`: several replicas.
    Postgres,
}

impl StoreBackend {
    /// The backend `url` names, if any.
    pub fn of(url: &str) -> Option<StoreBackend> {
        if url.starts_with("sqlite:") {
            Some(StoreBackend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(StoreBackend::Postgres)
        } else {
            None
        }
    }
}

pub(super) fn check_store_url(url: &str) -> Result<StoreBackend, ConfigError> {
    match StoreBackend::of(url) {
        Some(StoreBackend::Sqlite) => return Ok(StoreBackend::Sqlite),
        Some(StoreBackend::Postgres) => {
            check_postgres_tls(url)?;
            return Ok(StoreBackend::Postgres);
        }
        None => {}
    }
    Err(ConfigError::invalid(
        "store.url",
        "must start with sqlite: (one machine) or postgres:// (several replicas)",
    ))
}

/// Where refreshed pairs the store refused go when `store.spill_dir` is not
/// set: beside a SQLite file (`calgate-spill` in its directory), or
/// [`DEFAULT_SPILL_DIR`] for PostgreSQL. An in-memory SQLite store keeps
/// nothing across a restart anyway: none.
pub(super) fn default_spill_dir(url: &str) -> Option<PathBuf> {
    match StoreBackend::of(url)? {
        StoreBackend::Postgres => Some(PathBuf::from(DEFAULT_SPILL_DIR)),
        StoreBackend::Sqlite => {
            let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path.contains(":memory:") || path.starts_with("file::memory:") {
                return None;
            }
            let dir = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new(""));
            Some(if dir.as_os_str().is_empty() {
                PathBuf::from("calgate-spill")
            } else {
                dir.join("calgate-spill")
            })
        }
    }
}

/// `store.spill_dir` of a PostgreSQL store when none is configured.
pub const DEFAULT_SPILL_DIR: &str = "/var/lib/calgate/spill";

/// Refuses a PostgreSQL URL that would fall back to plaintext silently:
/// `sslmode` absent (the driver's default is `prefer`), `prefer` or `allow`,
/// to a host other than this machine. `verify-full` is what production wants;
/// `require` encrypts without checking the server; `disable` is plaintext on
/// purpose. The URL is read by sqlx itself — `host=` and `hostaddr=`
/// override the authority, the last `sslmode` wins, `ssl-mode` is an alias,
/// `PGSSLMODE`/`PGHOST` fill what the URL leaves out — so what is checked is
/// what calgate will connect with.
fn check_postgres_tls(url: &str) -> Result<(), ConfigError> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    // sqlx's own error may quote the URL (and its password): not repeated.
    let options: PgConnectOptions = url.parse().map_err(|_| {
        ConfigError::invalid(
            "store.url",
            "is not a PostgreSQL URL sqlx accepts (check host, port and sslmode)",
        )
    })?;
    // A Unix socket or loopback never crosses a network.
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host == "localhost"
        // An IPv6 host keeps its brackets.
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mode = match options.get_ssl_mode() {
        PgSslMode::Disable | PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => return Ok(()),
        _ if local => return Ok(()),
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
    };
    Err(ConfigError::invalid(
        "store.url",
        format!(
            "sslmode={mode} (also what an absent sslmode means) falls back to plaintext silently to {host}; \
             use sslmode=verify-full (or require), or sslmode=disable for plaintext on purpose"
        ),
    ))
}
