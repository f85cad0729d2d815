//! Token encryption at rest: AES-256-GCM with a random 96-bit nonce per value.
//! The first configured key encrypts; every configured key decrypts, so keys
//! rotate without downtime.

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::config::EncryptionKey;

const NONCE_LEN: usize = 12;

/// Why a stored ciphertext could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key named beside the ciphertext is not configured any more.
    #[error("encryption key `{0}` is not configured")]
    UnknownKey(String),
    /// Authentication failed: wrong key, tampered value, or copied to another grant.
    #[error("stored ciphertext does not authenticate")]
    Corrupt,
}

/// What a ciphertext is bound to, as AES-GCM associated data.
pub struct Binding<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Grant sub.
    pub sub: &'a str,
    /// `access_token` or `refresh_token`.
    pub purpose: &'static str,
}

impl Binding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        // Length-prefixed so that no two bindings share an encoding.
        let mut aad = Vec::with_capacity(32 + self.tenant.len() + self.sub.len());
        aad.extend_from_slice(b"calgate/token/v1");
        for part in [self.tenant, self.sub, self.purpose] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// The configured keys.
pub struct TokenCipher {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("TokenCipher").field("key_ids", &ids).finish()
    }
}

impl TokenCipher {
    /// Builds the cipher from the configured keys (config guarantees at least one).
    pub fn new(keys: &[EncryptionKey]) -> TokenCipher {
        TokenCipher {
            keys: keys
                .iter()
                .map(|key| {
                    let material = Key::<Aes256Gcm>::from_slice(key.key.expose_secret());
                    (key.id.clone(), Aes256Gcm::new(material))
                })
                .collect(),
        }
    }

    /// Id of the key new ciphertexts are made with.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Ids of every configured key, the current one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Encrypts with the current key: `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &SecretString, binding: &Binding<'_>) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = binding.associated_data();
        let sealed = self.keys[0]
            .1
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            // AES-GCM encryption fails only for inputs over 64 GiB.
            .expect("AES-GCM encrypts any input under 64 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a value sealed under `key_id` for `binding`.
    pub fn open(&self, key_id: &str, blob: &[u8], binding: &Binding<'_>) -> Result<SecretString, CryptoError> {
        let cipher = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        if blob.len() < NONCE_LEN {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let aad = binding.associated_data();
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| CryptoError::Corrupt)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| CryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey {
            id: id.into(),
            key: SecretBox::new(Box::new([byte; 32])),
        }
    }

    fn binding(sub: &str) -> Binding<'_> {
        Binding {
            tenant: "acme",
            sub,
            purpose: "access_token",
        }
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let cipher = TokenCipher::new(&[key("k1", 1)]);
        let token = SecretString::from("tok_plaintext_value".to_owned());
        let blob = cipher.seal(&token, &binding("acc_1"));
        assert!(!blob.windows(5).any(|w| w == b"tok_p"));
        let opened = cipher
            .open("k1", &blob, &binding("acc_1"))
            .map(|s| s.expose_secret().to_owned());
        assert_eq!(opened.ok().as_deref(), Some("tok_plaintext_value"));
    }

    #[test]
    fn a_ciphertext_moved_to_another_grant_does_not_open() {
        let cipher = TokenCipher::new(&[key("k1", 1)]);
        let blob = cipher.seal(&SecretString::from("t".to_owned()), &binding("acc_1"));
        assert!(matches!(
            cipher.open("k1", &blob, &binding("acc_2")),
            Err(CryptoError::Corrupt)
        ));
        let refresh = Binding {
            purpose: "refresh_token",
            ..binding("acc_1")
        };
        assert!(matches!(cipher.open("k1", &blob, &refresh), Err(CryptoError::Corrupt)));
    }

    #[test]
    fn old_keys_still_decrypt_after_rotation() {
        let old = TokenCipher::new(&[key("k1", 1)]);
        let blob = old.seal(&SecretString::from("t".to_owned()), &binding("acc_1"));
        let rotated = TokenCipher::new(&[key("k2", 2), key("k1", 1)]);
        assert_eq!(rotated.current_key_id(), "k2");
        assert!(rotated.open("k1", &blob, &binding("acc_1")).is_ok());
        let retired = TokenCipher::new(&[key("k2", 2)]);
        assert!(matches!(
            retired.open("k1", &blob, &binding("acc_1")),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let cipher = TokenCipher::new(&[key("k1", 1)]);
        let mut blob = cipher.seal(&SecretString::from("token".to_owned()), &binding("acc_1"));
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(matches!(
            cipher.open("k1", &blob, &binding("acc_1")),
            Err(CryptoError::Corrupt)
        ));
    }
}
