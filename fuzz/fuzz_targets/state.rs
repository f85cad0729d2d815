//! OAuth state decoding: anything a browser can put in `state` is refused
//! or opened, never a panic; what opens is what was sealed.
#![no_main]

use calgate::{config::EncryptionKey, domain::state::StateCodec};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretBox;

fuzz_target!(|data: &[u8]| {
    // Two keys, as during a rotation: a state names the key that opens it.
    let key = |id: &str, byte: u8| EncryptionKey {
        id: id.into(),
        key: SecretBox::new(Box::new([byte; 32])),
    };
    let codec = StateCodec::new(&[key("s2", 7), key("s1", 8)]);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(claims) = codec.open(text) {
            // Only a sealed state opens: sealing the claims again opens to the same claims.
            let again = codec.open(&codec.seal(&claims)).expect("a sealed state opens");
            assert_eq!(again.nonce, claims.nonce);
        }
    }
});
