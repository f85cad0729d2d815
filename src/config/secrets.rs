//! Secrets come only from environment variables or files (Kubernetes Secrets),
//! never inline in the config file.

use std::{collections::HashMap, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

use super::ConfigError;

/// Where `*_env` names are looked up.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// The process environment.
    Process,
    /// A fixed map, for tests and tools that must not touch the process environment.
    Map(HashMap<String, String>),
}

impl SecretSource {
    fn var(&self, name: &str) -> Option<String> {
        match self {
            SecretSource::Process => std::env::var(name).ok(),
            SecretSource::Map(map) => map.get(name).cloned(),
        }
    }

    /// Loads a text secret named by `{key}_env` or `{key}_file` (exactly one).
    pub(crate) fn string(
        &self,
        key: &str,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<SecretString, ConfigError> {
        let value = match (env, file) {
            (Some(name), None) => self.var(name).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{key}_env"),
                    format!("environment variable `{name}` is not set"),
                )
            })?,
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
                ConfigError::invalid(
                    format!("{key}_file"),
                    format!("cannot read `{}`: {}", path.display(), error.kind()),
                )
            })?,
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{key}_env"),
                    format!("set only one of {key}_env and {key}_file"),
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}_env"),
                    format!("one of {key}_env or {key}_file is required"),
                ));
            }
        };
        // Files written by editors and Secrets created with `echo` end in a newline.
        Ok(SecretString::from(value.trim_end_matches(['\n', '\r']).to_owned()))
    }

    /// Loads a base64-encoded 32-byte key named by `{key}.key_env`-style fields.
    pub(crate) fn key32(
        &self,
        key: &str,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<SecretBox<[u8; 32]>, ConfigError> {
        // The state section names its fields signing_key_env / signing_key_file.
        let prefix = if key == "state" {
            "state.signing_key".to_owned()
        } else {
            format!("{key}.key")
        };
        let text = self.string(&prefix, env, file)?;
        // Decoded key material is wiped from memory when dropped: only the SecretBox keeps it.
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.expose_secret().trim())
                .map_err(|_| ConfigError::invalid(&prefix, "is not valid base64"))?,
        );
        if decoded.len() != 32 {
            return Err(ConfigError::invalid(
                &prefix,
                "must decode to exactly 32 bytes (openssl rand -base64 32)",
            ));
        }
        let mut key = Box::new([0u8; 32]);
        key.copy_from_slice(&decoded);
        Ok(SecretBox::new(key))
    }
}
