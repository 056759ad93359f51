//! Fuzz the STUN message parser and what the server reads from a parsed message: any bytes
//! must parse or give a precise error, and attribute access, XOR addresses and the
//! MESSAGE-INTEGRITY check must never panic on what parsed.
#![no_main]

use hpb_turn::message::Message;
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    let msg = match Message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = msg.transaction_id();
    let mut total = 0usize;
    for a in msg.attrs() {
        total += 4 + a.value.len();
        let _ = msg.xor_address(a.typ);
        let _ = msg.xor_addresses(a.typ);
        let _ = msg.u32_attr(a.typ);
    }
    assert!(total <= data.len());
    let _ = msg.unknown_required();
    let _ = msg.has_integrity();
    let _ = msg.check_integrity(b"fuzz-key");
    let _ = msg.check_integrity(&[0u8; 16]);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes behind a valid header (type and transaction ID from the input), so the
    // fuzzer reaches the attribute walk without first guessing the cookie and the length.
    if data.len() >= 14 {
        let body = &data[14..];
        let body = &body[..(body.len() / 4 * 4).min(65_532)];
        let mut buf = Vec::with_capacity(20 + body.len());
        buf.extend_from_slice(&[data[0] & 0x3f, data[1]]);
        buf.extend_from_slice(&(body.len() as u16).to_be_bytes());
        buf.extend_from_slice(&0x2112_a442u32.to_be_bytes());
        buf.extend_from_slice(&data[2..14]);
        buf.extend_from_slice(body);
        check(&buf);
    }
});
