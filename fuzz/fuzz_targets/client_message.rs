//! Fuzz the client WebSocket message parser: any text must parse or give a precise error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = hpb_proto::client::parse(text) {
            assert!(!e.message.is_empty());
        }
    }
});
