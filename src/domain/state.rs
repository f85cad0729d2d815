//! OAuth `state`: sealed by calgate with AES-256-GCM under the state key, so it
//! is opaque to callers and browsers and cannot be forged or altered. It binds
//! tenant, data centre, redirect_uri, connect mode, user_ref, a nonce and an
//! expiry; single use is enforced by the store's redeemed-nonce record.
//!
//! State keys rotate like the encryption keys: a state is `<key id>.<sealed>`,
//! made with the first configured key and opened with the key it names, so
//! consents begun before a rotation still complete. States of earlier
//! versions (no key id) are tried with every key.

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::EncryptionKey;

const NONCE_LEN: usize = 12;
const AAD: &[u8] = b"calgate/state/v1";
/// Longer inputs are refused before any decoding work.
pub const MAX_STATE_LEN: usize = 4096;

/// What a state binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// Tenant id.
    #[serde(rename = "t")]
    pub tenant: String,
    /// Data centre id.
    #[serde(rename = "d")]
    pub data_center: String,
    /// Redirect URI the code will be sent to.
    #[serde(rename = "r")]
    pub redirect_uri: String,
    /// `individual` or `enterprise`.
    #[serde(rename = "m")]
    pub connect_mode: String,
    /// The caller's id for the user, if any.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_ref: Option<String>,
    /// Random, recorded when redeemed.
    #[serde(rename = "n")]
    pub nonce: String,
    /// Expiry, unix seconds.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

impl StateClaims {
    /// Whether the state is past its expiry at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now.unix_timestamp() >= self.expires_at
    }
}

/// Seals and opens states.
pub struct StateCodec {
    /// (id, cipher); the first seals.
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for StateCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCodec([redacted])")
    }
}

impl StateCodec {
    /// Uses the configured state keys (config guarantees at least one, with
    /// ids of `a-z0-9-_` only).
    pub fn new(keys: &[EncryptionKey]) -> StateCodec {
        StateCodec {
            keys: keys
                .iter()
                .map(|key| {
                    (
                        key.id.clone(),
                        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.key.expose_secret())),
                    )
                })
                .collect(),
        }
    }

    /// A fresh random nonce for a new state.
    pub fn new_nonce() -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Seals claims into URL-safe text.
    pub fn seal(&self, claims: &StateClaims) -> String {
        let plain = serde_json::to_vec(claims).expect("state claims are plain strings and numbers");
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let (id, cipher) = &self.keys[0];
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: AAD })
            .expect("AES-GCM encrypts any input under 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a state; None when it was not made by this key or was altered.
    pub fn open(&self, state: &str) -> Option<StateClaims> {
        if state.len() > MAX_STATE_LEN {
            return None;
        }
        let (candidates, sealed): (Vec<&Aes256Gcm>, &str) = match state.split_once('.') {
            Some((id, sealed)) => (
                self.keys
                    .iter()
                    .filter(|(key_id, _)| key_id == id)
                    .map(|(_, cipher)| cipher)
                    .collect(),
                sealed,
            ),
            // Made before state keys had ids.
            None => (self.keys.iter().map(|(_, cipher)| cipher).collect(), state),
        };
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = candidates.into_iter().find_map(|cipher| {
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: AAD })
                .ok()
        })?;
        serde_json::from_slice(&plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> StateClaims {
        StateClaims {
            tenant: "acme".into(),
            data_center: "us".into(),
            redirect_uri: "https://acme.example/cb".into(),
            connect_mode: "individual".into(),
            user_ref: Some("user-42".into()),
            nonce: StateCodec::new_nonce(),
            expires_at: 2_000_000_000,
        }
    }

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey {
            id: id.into(),
            key: secrecy::SecretBox::new(Box::new([byte; 32])),
        }
    }

    fn codec(byte: u8) -> StateCodec {
        StateCodec::new(&[key("s1", byte)])
    }

    #[test]
    fn rotation_keeps_states_in_flight_and_retiring_ends_them() {
        let before = StateCodec::new(&[key("s1", 1)]);
        let in_flight = before.seal(&claims());
        assert!(in_flight.starts_with("s1."));
        let rotated = StateCodec::new(&[key("s2", 2), key("s1", 1)]);
        assert_eq!(rotated.open(&in_flight), Some(claims_of(&in_flight, &before)));
        let new = rotated.seal(&claims());
        assert!(new.starts_with("s2."));
        assert!(
            before.open(&new).is_none(),
            "an old replica cannot open the new key's states"
        );
        let retired = StateCodec::new(&[key("s2", 2)]);
        assert!(retired.open(&in_flight).is_none());
        assert!(retired.open(&new).is_some());
        // A state of an earlier version (no key id) is tried with every key.
        let legacy = in_flight.trim_start_matches("s1.");
        assert!(rotated.open(legacy).is_some());
        assert!(retired.open(legacy).is_none());
        // A state naming a key with another key's ciphertext does not open.
        assert!(rotated.open(&format!("s2.{legacy}")).is_none());
    }

    fn claims_of(state: &str, codec: &StateCodec) -> StateClaims {
        codec.open(state).expect("opens with its own codec")
    }

    #[test]
    fn round_trips_and_is_opaque() {
        let original = claims();
        let state = codec(1).seal(&original);
        assert!(!state.contains("user-42") && !state.contains("acme"));
        assert!(
            state
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        );
        assert_eq!(codec(1).open(&state), Some(original));
    }

    #[test]
    fn altered_or_foreign_states_do_not_open() {
        let state = codec(1).seal(&claims());
        assert!(codec(2).open(&state).is_none(), "another key");
        let sealed = state.trim_start_matches("s1.");
        let mut bytes = URL_SAFE_NO_PAD.decode(sealed).unwrap_or_default();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        assert!(
            codec(1)
                .open(&format!("s1.{}", URL_SAFE_NO_PAD.encode(bytes)))
                .is_none(),
            "one bit flipped"
        );
        assert!(codec(1).open("").is_none());
        assert!(codec(1).open("not base64 !").is_none());
        assert!(codec(1).open(&"A".repeat(MAX_STATE_LEN + 1)).is_none());
    }

    #[test]
    fn expiry_is_inclusive() {
        let c = claims();
        assert!(
            !c.is_expired(OffsetDateTime::from_unix_timestamp(c.expires_at - 1).unwrap_or(OffsetDateTime::UNIX_EPOCH))
        );
        assert!(c.is_expired(OffsetDateTime::from_unix_timestamp(c.expires_at).unwrap_or(OffsetDateTime::UNIX_EPOCH)));
    }
}
