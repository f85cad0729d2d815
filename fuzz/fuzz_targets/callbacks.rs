//! Callback bodies and their `Cronofy-HMAC-SHA256` header from arbitrary
//! bytes: the signature check never panics, and accepts a header only when
//! one of its values is the HMAC the fake Cronofy (an independent
//! implementation) signs the body with; the body parser never panics.
#![no_main]

use calgate::{callbacks::signature, cronofy::enterprise::CallbackBody};
use fake_cronofy::sign_callback;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fuzz_target!(|data: &[u8]| {
    // First line: the header; the rest: the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let header = std::str::from_utf8(header).ok();
    let secrets = [SecretString::from("a-client-secret".to_owned())];
    if signature::verify(header, body, &secrets) {
        let expected = sign_callback("a-client-secret", body);
        let values = header.unwrap_or_default().split(',').take(8);
        assert!(values.map(str::trim).any(|value| value == expected));
    }
    let _ = serde_json::from_slice::<CallbackBody>(body);
});
