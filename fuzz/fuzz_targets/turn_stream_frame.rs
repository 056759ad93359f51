//! Fuzz the TURN-over-TCP/TLS framer: any byte stream is cut into frames of a sane length or
//! refused, and each complete frame then goes through the STUN or ChannelData parser.
#![no_main]

use hpb_turn::{channel_data, message::Message, stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match stream::frame_len(rest) {
            Ok(Some(len)) => {
                assert!(len >= 4);
                if rest.len() < len {
                    return;
                }
                let frame = &rest[..len];
                if channel_data::looks_like_channel_data(frame) {
                    let _ = channel_data::parse(frame);
                } else {
                    let _ = Message::parse(frame);
                }
                rest = &rest[len..];
            }
            Ok(None) => return,
            Err(why) => {
                assert!(!why.is_empty());
                return;
            }
        }
    }
});
