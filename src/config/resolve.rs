//! Checking the tenants and encryption keys of a config, loading their secrets.

use std::collections::HashSet;

use secrecy::ExposeSecret;
use url::Url;

use super::RateLimit;
use super::{
    ConfigError, EncryptionKey, SecretSource, TenantSettings,
    raw::{RawEncryptionKey, RawTenant},
};
use crate::cronofy::DataCenter;

/// Checks a key list (`encryption.keys` or `state.keys`: `section` says
/// which) and loads the keys.
pub(super) fn resolve_keys(
    section: &str,
    raw: &[RawEncryptionKey],
    secrets: &SecretSource,
) -> Result<Vec<EncryptionKey>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid(section, "at least one key is required"));
    }
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(index, key)| {
            let path = format!("{section}[{index}]");
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

pub(super) fn resolve_tenants(raw: &[RawTenant], secrets: &SecretSource) -> Result<Vec<TenantSettings>, ConfigError> {
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
        // During a rotation Cronofy signs callbacks once per active secret; a
        // replica still configured with the old one keeps accepting them.
        let previous_client_secret =
            if tenant.previous_client_secret_env.is_some() || tenant.previous_client_secret_file.is_some() {
                Some(secrets.string(
                    &format!("{path}.previous_client_secret"),
                    tenant.previous_client_secret_env.as_deref(),
                    tenant.previous_client_secret_file.as_deref(),
                )?)
            } else {
                None
            };
        if previous_client_secret
            .as_ref()
            .is_some_and(|secret| secret.expose_secret().is_empty())
        {
            return Err(ConfigError::invalid(
                format!("{path}.previous_client_secret"),
                "is empty",
            ));
        }
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
        let allow_plain_http = tenant.allow_plain_http;
        let api_base_url = base_url(
            tenant.api_base_url.as_deref(),
            &format!("{path}.api_base_url"),
            allow_plain_http,
        )?;
        let app_base_url = base_url(
            tenant.app_base_url.as_deref(),
            &format!("{path}.app_base_url"),
            allow_plain_http,
        )?;
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
            previous_client_secret,
            data_center,
            redirect_uris: tenant.redirect_uris.clone(),
            api_base_url,
            app_base_url,
            rate_limit,
            count_batch_entries: tenant.rate_limit.count_batch_entries,
            avoid_linking: tenant.avoid_linking,
            allow_plain_http,
        });
    }
    check_shared_applications(&tenants)?;
    Ok(tenants)
}

/// Tenants naming one Cronofy application (client id and data centre) share
/// its budget and breaker, because Cronofy limits per application: they must
/// agree on its limit and secret, or whichever tenant came first would win.
fn check_shared_applications(tenants: &[TenantSettings]) -> Result<(), ConfigError> {
    for (index, tenant) in tenants.iter().enumerate() {
        let Some(first) = tenants[..index]
            .iter()
            .find(|other| other.client_id == tenant.client_id && other.data_center == tenant.data_center)
        else {
            continue;
        };
        if first.rate_limit != tenant.rate_limit || first.count_batch_entries != tenant.count_batch_entries {
            return Err(ConfigError::invalid(
                format!("tenants[{index}].rate_limit"),
                format!(
                    "tenant `{}` shares its Cronofy application with `{}` and so its request budget; \
                     give both the same rate_limit",
                    tenant.id, first.id
                ),
            ));
        }
        if first.client_secret.expose_secret() != tenant.client_secret.expose_secret() {
            return Err(ConfigError::invalid(
                format!("tenants[{index}].client_secret"),
                format!(
                    "tenant `{}` names the same client_id as `{}` with another client secret",
                    tenant.id, first.id
                ),
            ));
        }
    }
    Ok(())
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

/// An upstream base URL: https, or plain http on a loopback host (tests,
/// the sandbox) or when `allow_plain_http` says so outright — plain http
/// elsewhere would send client secrets and tokens in clear.
fn base_url(value: Option<&str>, key: &str, allow_plain_http: bool) -> Result<Option<Url>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let url = Url::parse(value).map_err(|error| ConfigError::invalid(key, format!("not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ConfigError::invalid(key, "must be an http(s) base URL"));
    }
    if url.scheme() == "http" && !is_loopback(&url) && !allow_plain_http {
        return Err(ConfigError::invalid(
            key,
            "must be https: plain http would send client secrets and tokens in clear \
             (loopback hosts may use http; else set allow_plain_http = true on the tenant)",
        ));
    }
    Ok(Some(url))
}

/// Whether the URL's host is this machine (127.0.0.0/8, ::1, localhost).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn is_identifier(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
