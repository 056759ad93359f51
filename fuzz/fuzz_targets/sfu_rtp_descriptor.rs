//! Fuzz the SFU's reading of video RTP payload descriptors (VP8, VP9, H.264, H.265, AV1),
//! which come from publishers as they are: it must never panic, say why it refuses, and
//! the VP8 picture numbering it finds must lie inside the payload, where a rewrite changes
//! those bytes and nothing else.
#![no_main]

use hpb_sfu::fuzzing::{Codec, parse_descriptor};
use libfuzzer_sys::fuzz_target;

const CODECS: [Codec; 6] = [
    Codec::Vp8,
    Codec::Vp9,
    Codec::H264,
    Codec::H265,
    Codec::Av1,
    Codec::Opus,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let codec = CODECS[usize::from(pick) % CODECS.len()];
    let info = match parse_descriptor(codec, payload) {
        Ok(info) => info,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a refusal says why");
            return;
        }
    };
    if payload.is_empty() {
        assert!(!matches!(
            codec,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::H265 | Codec::Av1
        ));
    }
    let Some(ids) = info.vp8 else {
        return;
    };
    assert_eq!(codec, Codec::Vp8, "only VP8 has picture ids to rewrite");
    let mut changed: Vec<usize> = Vec::new();
    if let Some((at, value, wide)) = ids.picture_id {
        let len = if wide { 2 } else { 1 };
        assert!(
            at >= 2 && at + len <= payload.len(),
            "the picture id is inside"
        );
        assert!(value < if wide { 0x8000 } else { 0x80 });
        changed.extend(at..at + len);
    }
    if let Some((at, _)) = ids.tl0_pic_idx {
        assert!(at >= 2 && at < payload.len(), "TL0PICIDX is inside");
        changed.push(at);
    }
    // A rewrite touches those bytes only, and reads back as written.
    let (pid, tl0) = (u16::from(pick) * 257, pick ^ 0x5a);
    let mut rewritten = payload.to_vec();
    ids.rewrite(&mut rewritten, pid, tl0);
    for (i, (a, b)) in payload.iter().zip(&rewritten).enumerate() {
        if a != b {
            assert!(changed.contains(&i), "byte {i} outside the ids changed");
        }
    }
    let again = parse_descriptor(codec, &rewritten).expect("a rewrite keeps it readable");
    let ids2 = again.vp8.expect("still VP8");
    if let Some((_, v, wide)) = ids2.picture_id {
        assert_eq!(v, if wide { pid & 0x7fff } else { pid & 0x7f });
    }
    if let Some((_, v)) = ids2.tl0_pic_idx {
        assert_eq!(v, tl0);
    }
    assert_eq!(again.keyframe, info.keyframe);
    assert_eq!(again.temporal, info.temporal);
});
