//! OAuth `state`: sealed by calgate with AES-256-GCM under the state key, so it
//! is opaque to callers and browsers and cannot be forged or altered. It binds
//! tenant, data centre, redirect_uri, connect mode, user_ref, a nonce and an
//! expiry; single use is enforced by the store's redeemed-nonce record.

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for StateCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCodec([redacted])")
    }
}

impl StateCodec {
    /// Uses the configured 32-byte state key.
    pub fn new(key: &SecretBox<[u8; 32]>) -> StateCodec {
        StateCodec {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.expose_secret())),
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
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: AAD })
            .expect("AES-GCM encrypts any input under 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a state; None when it was not made by this key or was altered.
    pub fn open(&self, state: &str) -> Option<StateClaims> {
        if state.len() > MAX_STATE_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(state).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: AAD })
            .ok()?;
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

    fn codec(byte: u8) -> StateCodec {
        StateCodec::new(&SecretBox::new(Box::new([byte; 32])))
    }

    #[test]
    fn round_trips_and_is_opaque() {
        let original = claims();
        let state = codec(1).seal(&original);
        assert!(!state.contains("user-42") && !state.contains("acme"));
        assert!(
            state
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(codec(1).open(&state), Some(original));
    }

    #[test]
    fn altered_or_foreign_states_do_not_open() {
        let state = codec(1).seal(&claims());
        assert!(codec(2).open(&state).is_none(), "another key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&state).unwrap_or_default();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        assert!(
            codec(1).open(&URL_SAFE_NO_PAD.encode(bytes)).is_none(),
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
