//! Fuzz the SFU's sending of forwarded RTP to a subscriber: a stream of publisher packets
//! (sequence numbers, payload types, sizes, layer switches, temporal skips) and NACKs
//! decided by the input. Nothing may panic; every packet built fits the room asked for,
//! carries the stream's SSRC and the mapped payload type, and a retransmission goes out
//! on the RTX SSRC with the RTX payload type.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hpb_sfu::fuzzing::{
    Clock, Egress, ExtIds, Incoming, Keys, Meta, PtMap, SrtpProfile, SrtpTx, Vp8Ids, crypto,
};
use libfuzzer_sys::fuzz_target;

const SSRC: u32 = 0x1111_2222;
const RTX_SSRC: u32 = 0x3333_4444;

fuzz_target!(|data: &[u8]| {
    let Some((&setup, ops)) = data.split_first() else {
        return;
    };
    let profile = [
        SrtpProfile::AEAD_AES_128_GCM,
        SrtpProfile::AEAD_AES_256_GCM,
        SrtpProfile::AES128_CM_SHA1_80,
    ][usize::from(setup) % 3];
    let len = match profile {
        SrtpProfile::AEAD_AES_128_GCM => 56,
        SrtpProfile::AEAD_AES_256_GCM => 88,
        _ => 60,
    };
    let keys = Keys {
        profile,
        material: (0..len).map(|i| i as u8 ^ setup).collect(),
        active: setup & 0x80 != 0,
    };
    let Ok(mut srtp) = SrtpTx::new(&crypto(), &keys) else {
        return;
    };
    let pts = vec![
        PtMap {
            from: 96,
            to: 96,
            rtx: Some(97),
        },
        PtMap {
            from: 111,
            to: 109,
            rtx: None,
        },
    ];
    let ext = ExtIds {
        mid: Some((4, b"0".to_vec())),
        abs_send_time: (setup & 1 != 0).then_some(2),
        audio_level: (setup & 2 != 0).then_some(1),
        video_orientation: (setup & 4 != 0).then_some(13),
    };
    let mut e = Egress::new(
        SSRC,
        Some(RTX_SSRC),
        pts,
        ext,
        90_000,
        true,
        Duration::from_secs(1),
    );
    let clock = Clock::now();
    let t0 = Instant::now();
    let mut plain = Vec::new();
    let mut layer_base: u64 = 70_000;
    e.seq.switch(layer_base);
    for (i, op) in ops.chunks(4).enumerate() {
        let [kind, a, b, c] = *op else {
            break;
        };
        let now = t0 + Duration::from_millis(i as u64 * 5);
        let s = layer_base + u64::from(u16::from_be_bytes([a, b]));
        match kind % 4 {
            0 | 1 => {
                let size = usize::from(c) * 6;
                let payload: Arc<[u8]> = (0..size).map(|x| x as u8).collect::<Vec<_>>().into();
                let pt = if kind & 0x10 != 0 { 111 } else { 96 };
                let vp8 = (kind & 0x20 != 0 && size > 4).then(|| Vp8Ids {
                    picture_id: Some((2, u16::from(a) << 7 | u16::from(b), true)),
                    tl0_pic_idx: Some((4, c)),
                });
                let meta = Meta {
                    marker: kind & 0x40 != 0,
                    audio_level: (kind & 0x80 != 0).then_some((true, c & 0x7f)),
                    video_orientation: Some(c & 3),
                };
                let max = Egress::max_len(size);
                let mut out = vec![0u8; max];
                let pkt = Incoming {
                    seq: s,
                    pt,
                    ts: u32::from(c),
                    meta,
                    payload: &payload,
                    vp8: vp8.as_ref(),
                    arrival: now,
                };
                if let Some(n) = e.forward(&mut srtp, &clock, &mut out, &mut plain, &pkt, now) {
                    assert!(n <= max && n >= 12 + size + 10, "{n} bytes for {size}");
                    assert_eq!(out[0] >> 6, 2, "RTP version 2");
                    assert_eq!(out[8..12], SSRC.to_be_bytes());
                    assert_eq!(out[1] & 0x7f, if pt == 111 { 109 } else { 96 });
                }
                // Too small a buffer is refused, never overrun.
                let mut small = vec![0u8; max / 2];
                let next = Incoming { seq: s + 1, ..pkt };
                let _ = e.forward(&mut srtp, &clock, &mut small, &mut plain, &next, now);
            }
            2 => {
                if c & 1 == 0 {
                    e.seq.skip(s);
                } else {
                    layer_base = layer_base.wrapping_add(u64::from(c) << 16);
                    e.seq.switch(layer_base);
                    e.switched_layer();
                }
            }
            _ => {
                let seq = u16::from_be_bytes([a, b]);
                if let Some(len) = e.resendable(seq, now) {
                    let max = Egress::max_len(len);
                    let mut out = vec![0u8; max];
                    if let Some(n) = e.resend(&mut srtp, &clock, &mut out, &mut plain, seq, now) {
                        assert!(n <= max && n >= 12 + 2 + len + 10);
                        assert_eq!(out[8..12], RTX_SSRC.to_be_bytes());
                        assert_eq!(out[1] & 0x7f, 97);
                    }
                }
                let mut sr = Vec::new();
                e.sender_report(&clock, now, &mut sr);
                assert!(sr.is_empty() || sr.len() == 28);
            }
        }
    }
});
