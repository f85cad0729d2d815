//! Configuration: a TOML file plus `CALGATE_…` environment overrides (contract §5),
//! resolved into typed [`Settings`] with secrets loaded from the environment or files.
//!
//! Loading happens in two steps so that every error names the key at fault:
//! [`RawConfig`] mirrors the file, [`Settings::resolve`] checks it and loads the secrets.

mod raw;
mod secrets;

use std::{collections::HashSet, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

pub use raw::RawConfig;
use raw::{RawEncryptionKey, RawTenant};
pub use secrets::SecretSource;

use crate::{
    cronofy::DataCenter,
    resilience::{BreakerPolicy, RateLimit, RetryPolicy},
};

/// Top-level keys that environment variables may override. Other `CALGATE_…`
/// variables (such as `CALGATE_CONFIG` or a secret named `CALGATE_KEY_K1`) are not config keys.
const ENV_KEYS: &[&str] = &[
    "listen",
    "metrics_listen",
    "store",
    "state",
    "encryption",
    "tenants",
    "callbacks",
    "tls",
    "log",
    "upstream",
    "state_ttl",
    "refresh_margin",
    "shutdown_grace",
];

/// A configuration problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("config: {0}")]
    Parse(String),
    /// A key holds an unacceptable value.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the key, e.g. `tenants[0].redirect_uris`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Fully checked settings; secrets are loaded and never printable.
#[derive(Debug)]
pub struct Settings {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus metrics listen address.
    pub metrics_listen: SocketAddr,
    /// Credential store.
    pub store: StoreSettings,
    /// Key that seals OAuth `state` values.
    pub state_key: SecretBox<[u8; 32]>,
    /// How long an authorize URL's state stays valid.
    pub state_ttl: Duration,
    /// Refresh access tokens that expire within this margin.
    pub refresh_margin: Duration,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Token encryption keys; the first encrypts, all decrypt.
    pub encryption_keys: Vec<EncryptionKey>,
    /// The tenants (internal products) calgate serves.
    pub tenants: Vec<TenantSettings>,
    /// TLS for the gRPC listener, when configured.
    pub tls: Option<TlsSettings>,
    /// Logging.
    pub log: LogSettings,
    /// Outbound HTTP to Cronofy.
    pub upstream: UpstreamSettings,
}

/// Where grants live.
#[derive(Debug)]
pub struct StoreSettings {
    /// `sqlite://path`, `sqlite::memory:`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Apply pending migrations at start-up (else run `calgate migrate` first).
    pub auto_migrate: bool,
    /// PostgreSQL password, kept out of `url` (from `password_env` / `password_file`).
    pub password: Option<SecretString>,
}

/// One token-encryption key.
#[derive(Debug)]
pub struct EncryptionKey {
    /// Short id stored beside every ciphertext it made.
    pub id: String,
    /// 32 bytes of key material.
    pub key: SecretBox<[u8; 32]>,
}

/// One tenant: an internal product with its own Cronofy OAuth client.
#[derive(Debug)]
pub struct TenantSettings {
    /// Stable tenant id (never sent by callers; their API key decides it).
    pub id: String,
    /// SHA-256 digests of the tenant's API keys.
    pub api_key_sha256: Vec<[u8; 32]>,
    /// Cronofy OAuth client id.
    pub client_id: String,
    /// Cronofy OAuth client secret.
    pub client_secret: SecretString,
    /// Cronofy data centre.
    pub data_center: DataCenter,
    /// Allowed redirect URIs, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Override of the data centre's API host (tests, new regions).
    pub api_base_url: Option<Url>,
    /// Override of the data centre's browser host.
    pub app_base_url: Option<Url>,
    /// Requests allowed to the tenant's Cronofy application.
    pub rate_limit: RateLimit,
}

/// TLS material for the gRPC listener.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub client_ca_file: Option<PathBuf>,
}

/// Log output.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `text` (human-readable) or `json`.
    pub json: bool,
    /// Default filter directive, overridden by `RUST_LOG`.
    pub level: String,
}

/// Outbound HTTP settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Whole-request timeout for one Cronofy call.
    pub request_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Circuit breaker per (tenant, data centre).
    pub breaker: BreakerPolicy,
}

impl Settings {
    /// Loads `path` (TOML) with `CALGATE_…` environment overrides and resolves it.
    pub fn load(path: &std::path::Path) -> Result<Settings, ConfigError> {
        let figment = Figment::from(Toml::file_exact(path)).merge(
            Env::prefixed("CALGATE_")
                .filter(|key| is_config_env_key(key.as_str()))
                .split("__"),
        );
        let raw: RawConfig = figment.extract().map_err(figment_error)?;
        Settings::resolve(raw, &SecretSource::Process)
    }

    /// Parses TOML text without environment overrides (tests, tools).
    pub fn from_toml_str(toml: &str, secrets: &SecretSource) -> Result<Settings, ConfigError> {
        let raw: RawConfig = Figment::from(Toml::string(toml)).extract().map_err(figment_error)?;
        Settings::resolve(raw, secrets)
    }

    /// Checks every key and loads every secret.
    pub fn resolve(raw: RawConfig, secrets: &SecretSource) -> Result<Settings, ConfigError> {
        let store = StoreSettings {
            url: check_store_url(&raw.store.url)?,
            max_connections: match raw.store.max_connections {
                0 => return Err(ConfigError::invalid("store.max_connections", "must be at least 1")),
                n => n,
            },
            auto_migrate: raw.store.auto_migrate,
            password: match (&raw.store.password_env, &raw.store.password_file) {
                (None, None) => None,
                (env, file) => Some(secrets.string("store.password", env.as_deref(), file.as_deref())?),
            },
        };
        let state_key = secrets.key32(
            "state",
            raw.state.signing_key_env.as_deref(),
            raw.state.signing_key_file.as_deref(),
        )?;
        let encryption_keys = resolve_encryption_keys(&raw.encryption.keys, secrets)?;
        let tenants = resolve_tenants(&raw.tenants, secrets)?;
        let tls = match (raw.tls.cert_file, raw.tls.key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsSettings {
                cert_file,
                key_file,
                client_ca_file: raw.tls.client_ca_file,
            }),
            (None, None) if raw.tls.client_ca_file.is_some() => {
                return Err(ConfigError::invalid(
                    "tls.client_ca_file",
                    "needs tls.cert_file and tls.key_file",
                ));
            }
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::invalid("tls.key_file", "missing (tls.cert_file is set)")),
            (None, Some(_)) => return Err(ConfigError::invalid("tls.cert_file", "missing (tls.key_file is set)")),
        };
        let json = match raw.log.format.as_str() {
            "json" => true,
            "text" => false,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("`{other}` is not `text` or `json`"),
                ));
            }
        };
        positive(raw.state_ttl, "state_ttl")?;
        positive(raw.shutdown_grace, "shutdown_grace")?;
        positive(raw.upstream.request_timeout, "upstream.request_timeout")?;
        positive(raw.upstream.connect_timeout, "upstream.connect_timeout")?;
        positive(raw.upstream.retry_ceiling, "upstream.retry_ceiling")?;
        positive(raw.upstream.breaker.cool_down, "upstream.breaker.cool_down")?;
        if raw.upstream.max_attempts == 0 {
            return Err(ConfigError::invalid("upstream.max_attempts", "must be at least 1"));
        }
        if raw.upstream.breaker.failure_threshold == 0 {
            return Err(ConfigError::invalid(
                "upstream.breaker.failure_threshold",
                "must be at least 1",
            ));
        }
        if raw.upstream.backoff_base > raw.upstream.backoff_max {
            return Err(ConfigError::invalid(
                "upstream.backoff_base",
                "must not exceed upstream.backoff_max",
            ));
        }
        Ok(Settings {
            listen: raw.listen,
            metrics_listen: raw.metrics_listen,
            store,
            state_key,
            state_ttl: raw.state_ttl,
            refresh_margin: raw.refresh_margin,
            shutdown_grace: raw.shutdown_grace,
            encryption_keys,
            tenants,
            tls,
            log: LogSettings {
                json,
                level: raw.log.level,
            },
            upstream: UpstreamSettings {
                request_timeout: raw.upstream.request_timeout,
                connect_timeout: raw.upstream.connect_timeout,
                retry: RetryPolicy {
                    max_attempts: raw.upstream.max_attempts,
                    base_delay: raw.upstream.backoff_base,
                    max_delay: raw.upstream.backoff_max,
                    ceiling: raw.upstream.retry_ceiling,
                },
                breaker: BreakerPolicy {
                    failure_threshold: raw.upstream.breaker.failure_threshold,
                    cool_down: raw.upstream.breaker.cool_down,
                },
            },
        })
    }
}

/// Whether `CALGATE_{key}` overrides a config key (as opposed to naming a
/// secret such as `CALGATE_KEY_K1`): its first `__`-separated part must be a
/// top-level key. figment hands the key over with its original case.
fn is_config_env_key(key: &str) -> bool {
    let first = key.split("__").next().unwrap_or_default().to_ascii_lowercase();
    ENV_KEYS.contains(&first.as_str())
}

fn figment_error(error: figment::Error) -> ConfigError {
    // figment's messages already name the key path and the source (file or env var).
    ConfigError::Parse(error.to_string())
}

fn positive(value: Duration, key: &str) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(())
}

fn check_store_url(url: &str) -> Result<String, ConfigError> {
    if url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(url.to_owned())
    } else {
        Err(ConfigError::invalid(
            "store.url",
            "must start with sqlite: (one machine) or postgres:// (several replicas)",
        ))
    }
}

fn resolve_encryption_keys(
    raw: &[RawEncryptionKey],
    secrets: &SecretSource,
) -> Result<Vec<EncryptionKey>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid("encryption.keys", "at least one key is required"));
    }
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(index, key)| {
            let path = format!("encryption.keys[{index}]");
            if !is_identifier(&key.id, 32) {
                return Err(ConfigError::invalid(
                    format!("{path}.id"),
                    "must be 1-32 characters of a-z, 0-9, '-' or '_'",
                ));
            }
            if !seen.insert(key.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{path}.id"),
                    format!("duplicate key id `{}`", key.id),
                ));
            }
            Ok(EncryptionKey {
                id: key.id.clone(),
                key: secrets.key32(&path, key.key_env.as_deref(), key.key_file.as_deref())?,
            })
        })
        .collect()
}

fn resolve_tenants(raw: &[RawTenant], secrets: &SecretSource) -> Result<Vec<TenantSettings>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid("tenants", "at least one tenant is required"));
    }
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    let mut tenants = Vec::with_capacity(raw.len());
    for (index, tenant) in raw.iter().enumerate() {
        let path = format!("tenants[{index}]");
        if !is_identifier(&tenant.id, 64) {
            return Err(ConfigError::invalid(
                format!("{path}.id"),
                "must be 1-64 characters of a-z, 0-9, '-' or '_'",
            ));
        }
        if !ids.insert(tenant.id.clone()) {
            return Err(ConfigError::invalid(
                format!("{path}.id"),
                format!("duplicate tenant id `{}`", tenant.id),
            ));
        }
        if tenant.api_key_sha256.is_empty() {
            return Err(ConfigError::invalid(
                format!("{path}.api_key_sha256"),
                "at least one digest is required",
            ));
        }
        let mut api_key_sha256 = Vec::with_capacity(tenant.api_key_sha256.len());
        for (n, digest) in tenant.api_key_sha256.iter().enumerate() {
            let key = format!("{path}.api_key_sha256[{n}]");
            let bytes: [u8; 32] = hex::decode(digest.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| ConfigError::invalid(&key, "must be 64 hex digits (see `calgate hash-key`)"))?;
            if !digests.insert(bytes) {
                return Err(ConfigError::invalid(
                    key,
                    "this API key is configured twice; a key must decide one tenant",
                ));
            }
            api_key_sha256.push(bytes);
        }
        if tenant.client_id.trim().is_empty() {
            return Err(ConfigError::invalid(format!("{path}.client_id"), "must not be empty"));
        }
        let client_secret = secrets.string(
            &format!("{path}.client_secret"),
            tenant.client_secret_env.as_deref(),
            tenant.client_secret_file.as_deref(),
        )?;
        let data_center = tenant
            .data_center
            .parse::<DataCenter>()
            .map_err(|problem| ConfigError::invalid(format!("{path}.data_center"), problem))?;
        if tenant.redirect_uris.is_empty() {
            return Err(ConfigError::invalid(
                format!("{path}.redirect_uris"),
                "at least one URI is required",
            ));
        }
        for (n, uri) in tenant.redirect_uris.iter().enumerate() {
            check_redirect_uri(uri)
                .map_err(|problem| ConfigError::invalid(format!("{path}.redirect_uris[{n}]"), problem))?;
        }
        let api_base_url = base_url(tenant.api_base_url.as_deref(), &format!("{path}.api_base_url"))?;
        let app_base_url = base_url(tenant.app_base_url.as_deref(), &format!("{path}.app_base_url"))?;
        let rate_limit = RateLimit {
            per_second: tenant.rate_limit.per_second,
            per_minute: tenant.rate_limit.per_minute,
        };
        if rate_limit.per_second == 0 || rate_limit.per_minute == 0 {
            return Err(ConfigError::invalid(
                format!("{path}.rate_limit"),
                "per_second and per_minute must be at least 1",
            ));
        }
        if client_secret.expose_secret().is_empty() {
            return Err(ConfigError::invalid(format!("{path}.client_secret"), "is empty"));
        }
        tenants.push(TenantSettings {
            id: tenant.id.clone(),
            api_key_sha256,
            client_id: tenant.client_id.clone(),
            client_secret,
            data_center,
            redirect_uris: tenant.redirect_uris.clone(),
            api_base_url,
            app_base_url,
            rate_limit,
        });
    }
    Ok(tenants)
}

/// A redirect URI must be an absolute http(s) URL without a fragment (RFC 6749 §3.1.2).
fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let parsed = Url::parse(uri).map_err(|error| format!("not an absolute URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be http or https".into());
    }
    if parsed.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(())
}

fn base_url(value: Option<&str>, key: &str) -> Result<Option<Url>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let url = Url::parse(value).map_err(|error| ConfigError::invalid(key, format!("not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ConfigError::invalid(key, "must be an http(s) base URL"));
    }
    Ok(Some(url))
}

fn is_identifier(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
