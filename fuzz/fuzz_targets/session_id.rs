//! Fuzz the session-id decoder: forged or garbage ids must be refused, never panic.
#![no_main]

use hpb_proto::session_id::SessionIdCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for block in [&b""[..], &[1u8; 16][..]] {
        if let Ok(codec) = SessionIdCodec::new(b"fuzz-hash-key", block) {
            let _ = codec.decode_private(text);
            let _ = codec.decode_public(text);
        }
    }
});
