//! The config file from arbitrary text: a clear error naming a key, or
//! settings; never a panic.
#![no_main]

use std::collections::HashMap;

use calgate::config::{SecretSource, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let secrets = SecretSource::Map(HashMap::from([
        (
            "STATE_KEY".to_owned(),
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".to_owned(),
        ),
        (
            "K1".to_owned(),
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_owned(),
        ),
        ("SECRET".to_owned(), "s3cret".to_owned()),
    ]));
    let _ = Settings::from_toml_str(text, &secrets);
});
