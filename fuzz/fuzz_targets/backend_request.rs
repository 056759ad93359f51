//! Fuzz the parser of Nextcloud's room requests (`POST /api/v1/room/{id}` bodies).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = hpb_proto::backend::parse_room_request(data) {
        assert!(!e.to_string().is_empty());
    }
});
