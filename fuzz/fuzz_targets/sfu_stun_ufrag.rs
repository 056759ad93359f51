//! Fuzz the SFU's datagram classifiers used to demultiplex its one UDP port: the STUN check
//! and the USERNAME ufrag lookup must never panic, and what they return must come from the
//! datagram itself.
#![no_main]

use hpb_sfu::fuzzing::{is_stun, local_ufrag};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Some(ufrag) = local_ufrag(data) {
        assert!(is_stun(data), "a ufrag from a non-STUN datagram");
        assert!(!ufrag.contains(':'), "the ufrag is the part before ':'");
        let at = (ufrag.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        assert!(
            at >= 20 && at + ufrag.len() <= data.len(),
            "the ufrag is inside the body"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes behind a valid STUN header (length = the rest, rounded to 4), and as a
    // USERNAME attribute value, so the fuzzer reaches the attribute walk and the ufrag split
    // without guessing the magic cookie and the lengths first.
    if data.len() >= 2 {
        let body = &data[2..];
        let body = &body[..(body.len() / 4 * 4).min(65_532)];
        let mut buf = Vec::with_capacity(20 + body.len());
        buf.extend_from_slice(&[data[0] & 0x3f, data[1]]);
        buf.extend_from_slice(&(body.len() as u16).to_be_bytes());
        buf.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        buf.extend_from_slice(&[7; 12]);
        buf.extend_from_slice(body);
        check(&buf);

        let value = &data[..data.len().min(512)];
        let padded = value.len().div_ceil(4) * 4;
        let mut buf = vec![0x00, 0x01];
        buf.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        buf.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        buf.extend_from_slice(&[7; 12]);
        buf.extend_from_slice(&0x0006u16.to_be_bytes());
        buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        buf.extend_from_slice(value);
        buf.resize(20 + 4 + padded, 0);
        check(&buf);
    }
});
