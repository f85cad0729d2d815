//! Configuration: a TOML file plus `CALGATE_…` environment overrides (contract §5),
//! resolved into typed [`Settings`] with secrets loaded from the environment or files.
//!
//! Loading happens in two steps so that every error names the key at fault:
//! [`RawConfig`] mirrors the file, [`Settings::resolve`] checks it and loads the secrets.

mod limits;
mod policy;
mod queue;
mod raw;
mod resolve;
mod secrets;
mod store;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::{SecretBox, SecretString};
use url::Url;

pub use limits::{
    AuditSettings, CallbackLimits, ChangeSettings, ErasureSettings, GrpcSettings, MAX_MESSAGE_BYTES,
    RefreshAheadSettings,
};
pub use raw::RawConfig;
pub use resolve::is_loopback;
use resolve::{resolve_keys, resolve_tenants};
pub use secrets::SecretSource;
pub use store::{DEFAULT_SPILL_DIR, StoreBackend, StoreSettings};
use store::{check_store_url, default_spill_dir};

pub use policy::{BreakerPolicy, BucketShape, RateLimit, Reserve, RetryPolicy};
pub use queue::QueueSettings;

use crate::cronofy::DataCenter;
pub use crate::telemetry::LogSettings;

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
    "drain_delay",
    "grpc",
    "changes",
    "audit",
    "erasure",
    "queue",
    "refresh_ahead",
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
    /// Keys of OAuth `state` values: the first seals, all open (so rotating
    /// does not break consents in flight). A config with the single
    /// `state.signing_key_env`/`_file` has one key, id [`LEGACY_STATE_KEY_ID`].
    pub state_keys: Vec<EncryptionKey>,
    /// How long an authorize URL's state stays valid.
    pub state_ttl: Duration,
    /// Refresh access tokens that expire within this margin.
    pub refresh_margin: Duration,
    /// How long in-flight calls may take to finish after SIGTERM (and the drain delay).
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long calgate reports NOT_SERVING while still
    /// serving, so load balancers and clients move to other replicas before
    /// it stops accepting calls. Zero stops accepting at once.
    pub drain_delay: Duration,
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
    /// The Enterprise Connect callback listener, when configured.
    pub callbacks: Option<CallbackSettings>,
    /// Limits of the gRPC listener.
    pub grpc: GrpcSettings,
    /// The change stream.
    pub changes: ChangeSettings,
    /// The audit trail.
    pub audit: AuditSettings,
    /// ForgetUser's wait for deleted events, and the erasure worker.
    pub erasure: ErasureSettings,
    /// Queued writes.
    pub queue: QueueSettings,
    /// The background refresher.
    pub refresh_ahead: RefreshAheadSettings,
}

/// Where Cronofy's Enterprise Connect callbacks arrive.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// Plain HTTP listener, separate from gRPC.
    pub listen: SocketAddr,
    /// How Cronofy reaches that listener (e.g. `https://calgate.example.com`).
    pub public_url: Url,
    /// How long an Enterprise Connect member authorization waits for its
    /// callback before it is EXPIRED.
    pub authorization_ttl: Duration,
    /// What the listener holds at most.
    pub limits: CallbackLimits,
}

/// The id of the key `state.signing_key_env`/`_file` configures.
pub const LEGACY_STATE_KEY_ID: &str = "state";

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
    /// A secret being rotated out: still accepted on signed callbacks, never sent.
    pub previous_client_secret: Option<SecretString>,
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
    /// Whether a `/v1/batch` request counts against `rate_limit` once per
    /// entry (default true: Cronofy does not say) or once.
    pub count_batch_entries: bool,
    /// Ask Cronofy not to link accounts authorized from one browser, unless a
    /// request chooses otherwise (default true).
    pub avoid_linking: bool,
    /// `api_base_url` / `app_base_url` may be plain `http://` on a host that
    /// is not loopback (client secrets and tokens then cross the network in
    /// clear; logged as a warning at start). Default false.
    pub allow_plain_http: bool,
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
    /// How often revokes Cronofy did not take are retried (the first pause;
    /// each further failure doubles it, up to an hour).
    pub revoke_retry_interval: Duration,
}

impl Settings {
    /// The Cronofy applications (`client_id@data_centre`) that more than one
    /// tenant is configured with, each with its tenants' ids in config order.
    pub fn shared_applications(&self) -> Vec<(String, Vec<String>)> {
        let mut applications: Vec<(String, Vec<String>)> = Vec::new();
        for tenant in &self.tenants {
            let key = format!("{}@{}", tenant.client_id, tenant.data_center);
            match applications.iter_mut().find(|(application, _)| *application == key) {
                Some((_, tenants)) => tenants.push(tenant.id.clone()),
                None => applications.push((key, vec![tenant.id.clone()])),
            }
        }
        applications.retain(|(_, tenants)| tenants.len() > 1);
        applications
    }

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
            url: {
                check_store_url(&raw.store.url)?;
                raw.store.url.clone()
            },
            max_connections: match raw.store.max_connections {
                0 => return Err(ConfigError::invalid("store.max_connections", "must be at least 1")),
                n => n,
            },
            auto_migrate: raw.store.auto_migrate,
            password: match (&raw.store.password_env, &raw.store.password_file) {
                (None, None) => None,
                (env, file) => Some(secrets.string("store.password", env.as_deref(), file.as_deref())?),
            },
            token_cache_ttl: raw.store.token_cache_ttl,
            token_cache_entries: raw.store.token_cache_entries,
            upstream_request_timeout: raw.upstream.request_timeout,
            spill_dir: raw
                .store
                .spill_dir
                .clone()
                .or_else(|| default_spill_dir(&raw.store.url)),
        };
        let state_keys = match (&raw.state.signing_key_env, &raw.state.signing_key_file) {
            (None, None) if !raw.state.keys.is_empty() => resolve_keys("state.keys", &raw.state.keys, secrets)?,
            (env, file) if raw.state.keys.is_empty() => vec![EncryptionKey {
                id: LEGACY_STATE_KEY_ID.to_owned(),
                key: secrets.key32("state", env.as_deref(), file.as_deref())?,
            }],
            _ => {
                return Err(ConfigError::invalid(
                    "state.keys",
                    "set either state.keys or state.signing_key_env/_file, not both",
                ));
            }
        };
        let encryption_keys = resolve_keys("encryption.keys", &raw.encryption.keys, secrets)?;
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
        let callbacks = match raw.callbacks {
            None => None,
            Some(callbacks) => {
                let listen = callbacks
                    .listen
                    .ok_or_else(|| ConfigError::invalid("callbacks.listen", "is required in [callbacks]"))?;
                let public_url = callbacks
                    .public_url
                    .ok_or_else(|| ConfigError::invalid("callbacks.public_url", "is required in [callbacks]"))?;
                let public_url = Url::parse(&public_url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none())
                    .ok_or_else(|| {
                        ConfigError::invalid("callbacks.public_url", "must be an http(s) URL without query")
                    })?;
                positive(callbacks.authorization_ttl, "callbacks.authorization_ttl")?;
                let defaults = CallbackLimits::default();
                let limits = CallbackLimits {
                    max_connections: callbacks.max_connections.unwrap_or(defaults.max_connections),
                    max_waiting: callbacks.max_waiting.unwrap_or(defaults.max_waiting),
                    max_waiting_per_peer: callbacks.max_waiting_per_peer.unwrap_or(defaults.max_waiting_per_peer),
                    max_in_flight: callbacks.max_in_flight.unwrap_or(defaults.max_in_flight),
                    header_timeout: callbacks.header_timeout.unwrap_or(defaults.header_timeout),
                    body_timeout: callbacks.body_timeout.unwrap_or(defaults.body_timeout),
                    max_body_bytes: callbacks.max_body_bytes.unwrap_or(defaults.max_body_bytes),
                };
                limits.check()?;
                Some(CallbackSettings {
                    listen,
                    public_url,
                    authorization_ttl: callbacks.authorization_ttl,
                    limits,
                })
            }
        };
        raw.grpc.check()?;
        raw.changes.check()?;
        raw.audit.check()?;
        raw.erasure.check()?;
        raw.queue.check()?;
        raw.refresh_ahead.check()?;
        positive(raw.state_ttl, "state_ttl")?;
        positive(raw.shutdown_grace, "shutdown_grace")?;
        positive(raw.upstream.request_timeout, "upstream.request_timeout")?;
        positive(raw.upstream.connect_timeout, "upstream.connect_timeout")?;
        positive(raw.upstream.retry_ceiling, "upstream.retry_ceiling")?;
        positive(raw.upstream.revoke_retry_interval, "upstream.revoke_retry_interval")?;
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
            state_keys,
            state_ttl: raw.state_ttl,
            refresh_margin: raw.refresh_margin,
            shutdown_grace: raw.shutdown_grace,
            drain_delay: raw.drain_delay,
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
                revoke_retry_interval: raw.upstream.revoke_retry_interval,
            },
            callbacks,
            grpc: raw.grpc,
            changes: raw.changes,
            audit: raw.audit,
            erasure: raw.erasure,
            queue: raw.queue,
            refresh_ahead: raw.refresh_ahead,
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

#[cfg(test)]
mod tests;
