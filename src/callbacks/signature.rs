//! `Cronofy-HMAC-SHA256`: the base64 HMAC-SHA256 of a callback's raw body,
//! keyed with the application's client secret; while an application has
//! several active secrets, one value per secret, comma-separated. Cronofy
//! signs every kind of callback the same way (docs.cronofy.com
//! /developers/push-notifications/authentication).

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// The header Cronofy signs callbacks in.
pub const HEADER: &str = "cronofy-hmac-sha256";

/// Most comma-separated values read from one header: Cronofy sends one per
/// active secret, so a few; anything past this is ignored, never hashed.
const MAX_VALUES: usize = 8;

fn mac(secret: &SecretString, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Whether one of the header's values is the HMAC of `body` under one of
/// `secrets`. Every comparison runs in constant time.
pub fn verify(header: Option<&str>, body: &[u8], secrets: &[SecretString]) -> bool {
    let Some(header) = header else { return false };
    let expected: Vec<[u8; 32]> = secrets.iter().map(|secret| mac(secret, body)).collect();
    let mut matched = Choice::from(0);
    for value in header.split(',').take(MAX_VALUES) {
        let Ok(given) = STANDARD.decode(value.trim()) else {
            continue;
        };
        for mac in &expected {
            matched |= mac.as_slice().ct_eq(&given);
        }
    }
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    /// The example of docs.cronofy.com/developers/push-notifications/authentication.
    #[test]
    fn cronofys_documented_example_verifies() {
        let secrets = [secret("CRN_NggYusqPGLxwjw5FHOJYOqSrTPNXy8WQf14OID")];
        let body = br#"{"example":"well-known"}"#;
        assert!(verify(
            Some("5DxentQi5YSXODEzTVv06sRwJ3pULIz1KrYv20qxEK0="),
            body,
            &secrets
        ));
        assert!(!verify(
            Some("5DxentQi5YSXODEzTVv06sRwJ3pULIz1KrYv20qxEK0="),
            br#"{"example":"well-known "}"#,
            &secrets
        ));
    }

    #[test]
    fn any_value_may_match_any_configured_secret() {
        let body = b"{}";
        let current = secret("current");
        let previous = secret("previous");
        let signed_old = STANDARD.encode(mac(&previous, body));
        let signed_new = STANDARD.encode(mac(&current, body));
        let both = [current.clone(), previous.clone()];
        assert!(verify(Some(&format!("{signed_new},{signed_old}")), body, &both));
        assert!(verify(Some(&format!("garbage, {signed_old}")), body, &both));
        assert!(!verify(Some(&signed_old), body, &[current]));
        assert!(!verify(None, body, &both));
        assert!(!verify(Some(""), body, &both));
        assert!(!verify(Some("not base64!"), body, &both));
        assert!(!verify(Some(&STANDARD.encode([0u8; 32])), body, &both));
    }

    #[test]
    fn values_past_the_limit_are_not_read() {
        let body = b"{}";
        let key = secret("k");
        let good = STANDARD.encode(mac(&key, body));
        let padded = format!("{}{good}", "x,".repeat(MAX_VALUES));
        assert!(!verify(Some(&padded), body, &[key]));
    }
}
