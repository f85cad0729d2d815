//! Cronofy's answers as calgate reads them: token, 422 errors, batch 207 and
//! free/busy pages from arbitrary bytes. Never a panic; a next page is never
//! on another host.
#![no_main]

use calgate::cronofy::{DataCenter, Endpoints, Host, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let _ = parse::token(bytes);
        }
        1 => {
            let _ = parse::error(422, bytes);
            let _ = parse::error(u16::from(kind) * 3, bytes);
        }
        2 => {
            let _ = parse::batch(bytes, usize::from(kind % 50));
        }
        _ => {
            let endpoints = Endpoints::new(DataCenter::Us, None, None);
            if let Ok((_, Some(next))) = parse::free_busy_page(bytes, &endpoints) {
                assert_eq!(next.origin(), endpoints.url(Host::Api, &[]).origin());
            }
        }
    }
});
