//! What the SFU reads from the start of a video RTP payload to forward it packet by packet:
//! whether the packet starts a keyframe, its temporal layer, and where VP8 keeps the picture
//! numbering a simulcast switch rewrites. VP8 (RFC 7741), VP9 (RFC 9628), H.264 (RFC 6184),
//! H.265 (RFC 7798) and AV1 (the AOM RTP spec); any other codec is opaque (every frame may
//! start a layer, as for audio). Parsing untrusted bytes: a malformed descriptor is an
//! error that says what is wrong, never a panic.

use str0m::format::Codec;

/// What one packet's payload descriptor says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// The packet belongs to a keyframe (for VP8, VP9 and AV1: is its first packet).
    pub keyframe: bool,
    /// The temporal layer of its frame, and whether a viewer may switch up to that layer
    /// here (VP8's `Y` bit; for VP9 only a keyframe).
    pub temporal: Option<(u8, bool)>,
    /// VP8 picture numbering, for rewriting on a simulcast switch.
    pub vp8: Option<Vp8Ids>,
}

/// Where VP8's picture id and TL0PICIDX sit in a payload, and their values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Ids {
    /// (offset, value, 15 bits wide rather than 7).
    pub picture_id: Option<(usize, u16, bool)>,
    /// (offset, value).
    pub tl0_pic_idx: Option<(usize, u8)>,
}

impl Vp8Ids {
    /// Write `picture_id` and `tl0_pic_idx` (taken modulo their field widths) into `payload`
    /// at the places these ids were read from.
    pub fn rewrite(&self, payload: &mut [u8], picture_id: u16, tl0_pic_idx: u8) {
        if let Some((at, _, wide)) = self.picture_id {
            if wide {
                if let Some(b) = payload.get_mut(at..at + 2) {
                    b[0] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
                    b[1] = picture_id as u8;
                }
            } else if let Some(b) = payload.get_mut(at) {
                *b = picture_id as u8 & 0x7f;
            }
        }
        if let Some((at, _)) = self.tl0_pic_idx
            && let Some(b) = payload.get_mut(at)
        {
            *b = tl0_pic_idx;
        }
    }
}

/// A payload descriptor that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("{codec} payload is empty")]
    Empty { codec: &'static str },
    #[error("{codec} payload descriptor ends early: {what} is missing")]
    Truncated {
        codec: &'static str,
        what: &'static str,
    },
}

fn truncated(codec: &'static str, what: &'static str) -> DescriptorError {
    DescriptorError::Truncated { codec, what }
}

/// Read the descriptor of one packet of `codec`.
pub fn parse(codec: Codec, payload: &[u8]) -> Result<PayloadInfo, DescriptorError> {
    match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => h264(payload),
        Codec::H265 => h265(payload),
        Codec::Av1 => av1(payload),
        _ => Ok(PayloadInfo {
            keyframe: true,
            ..Default::default()
        }),
    }
}

/// RFC 7741 §4.2.
fn vp8(p: &[u8]) -> Result<PayloadInfo, DescriptorError> {
    const C: &str = "VP8";
    let first = *p.first().ok_or(DescriptorError::Empty { codec: C })?;
    let start = first & 0x10 != 0 && first & 0x0f == 0;
    let mut at = 1;
    let mut ids = Vp8Ids::default();
    let mut temporal = None;
    if first & 0x80 != 0 {
        let x = *p.get(at).ok_or(truncated(C, "the X extension byte"))?;
        at += 1;
        if x & 0x80 != 0 {
            let b = *p.get(at).ok_or(truncated(C, "the picture id"))?;
            if b & 0x80 != 0 {
                let lo = *p
                    .get(at + 1)
                    .ok_or(truncated(C, "the picture id's second byte"))?;
                ids.picture_id = Some((at, u16::from(b & 0x7f) << 8 | u16::from(lo), true));
                at += 2;
            } else {
                ids.picture_id = Some((at, u16::from(b), false));
                at += 1;
            }
        }
        if x & 0x40 != 0 {
            let b = *p.get(at).ok_or(truncated(C, "TL0PICIDX"))?;
            ids.tl0_pic_idx = Some((at, b));
            at += 1;
        }
        if x & 0x30 != 0 {
            let b = *p.get(at).ok_or(truncated(C, "the TID/KEYIDX byte"))?;
            if x & 0x20 != 0 {
                temporal = Some((b >> 6, b & 0x20 != 0));
            }
            at += 1;
        }
    }
    // The VP8 payload header's P bit (RFC 6386 §9.1) is 0 in a keyframe.
    let keyframe = start && p.get(at).is_some_and(|h| h & 0x01 == 0);
    if let (true, Some((t, _))) = (keyframe, temporal) {
        temporal = Some((t, true));
    }
    Ok(PayloadInfo {
        keyframe,
        temporal,
        vp8: Some(ids),
    })
}

/// RFC 9628 §4.2.
fn vp9(p: &[u8]) -> Result<PayloadInfo, DescriptorError> {
    const C: &str = "VP9";
    let first = *p.first().ok_or(DescriptorError::Empty { codec: C })?;
    let (i, predicted, l, begins) = (
        first & 0x80 != 0,
        first & 0x40 != 0,
        first & 0x20 != 0,
        first & 0x08 != 0,
    );
    let mut at = 1;
    if i {
        let b = *p.get(at).ok_or(truncated(C, "the picture id"))?;
        at += if b & 0x80 != 0 { 2 } else { 1 };
        if at > p.len() {
            return Err(truncated(C, "the picture id's second byte"));
        }
    }
    let mut spatial = 0;
    let mut temporal = None;
    if l {
        let b = *p.get(at).ok_or(truncated(C, "the layer indices"))?;
        spatial = (b >> 1) & 0x07;
        temporal = Some(b >> 5);
    }
    let keyframe = begins && !predicted && spatial == 0;
    Ok(PayloadInfo {
        keyframe,
        temporal: temporal.map(|t| (t, keyframe)),
        vp8: None,
    })
}

/// H.264 NAL unit types that make a keyframe: an IDR slice, or the parameter sets that
/// precede one (RFC 6184 §5.3, ITU-T H.264 table 7-1).
fn h264_key_nal(t: u8) -> bool {
    matches!(t, 5 | 7 | 8)
}

/// RFC 6184 §5.2: single NAL unit, STAP-A (24) or FU-A (28).
fn h264(p: &[u8]) -> Result<PayloadInfo, DescriptorError> {
    const C: &str = "H.264";
    let first = *p.first().ok_or(DescriptorError::Empty { codec: C })?;
    let keyframe = match first & 0x1f {
        24 => aggregate_has_key(C, p, 1, |nal| h264_key_nal(nal & 0x1f))?,
        28 => {
            let fu = *p.get(1).ok_or(truncated(C, "the FU header"))?;
            fu & 0x80 != 0 && h264_key_nal(fu & 0x1f)
        }
        t => h264_key_nal(t),
    };
    Ok(PayloadInfo {
        keyframe,
        ..Default::default()
    })
}

/// Whether an aggregation packet (H.264 STAP-A, H.265 AP) whose NAL units start at `at`,
/// each behind its 16-bit size, holds one that `key` (given its first byte) calls a
/// keyframe's.
fn aggregate_has_key(
    codec: &'static str,
    p: &[u8],
    mut at: usize,
    key: impl Fn(u8) -> bool,
) -> Result<bool, DescriptorError> {
    let mut found = false;
    while at < p.len() {
        let len = p
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or(truncated(codec, "an aggregated NAL unit size"))?;
        let nal = *p
            .get(at + 2)
            .ok_or(truncated(codec, "an aggregated NAL unit"))?;
        found |= key(nal);
        at += 2 + len;
    }
    Ok(found)
}

/// H.265 NAL unit types of a keyframe: IRAP pictures (16..=21) and the parameter sets
/// (VPS, SPS, PPS: 32..=34).
fn h265_key_nal(t: u8) -> bool {
    (16..=21).contains(&t) || (32..=34).contains(&t)
}

/// RFC 7798 §4.4: single NAL unit, aggregation packet (48) or fragmentation unit (49).
fn h265(p: &[u8]) -> Result<PayloadInfo, DescriptorError> {
    const C: &str = "H.265";
    let first = *p.first().ok_or(DescriptorError::Empty { codec: C })?;
    if p.len() < 2 {
        return Err(truncated(C, "the second byte of the payload header"));
    }
    let keyframe = match (first >> 1) & 0x3f {
        48 => aggregate_has_key(C, p, 2, |nal| h265_key_nal((nal >> 1) & 0x3f))?,
        49 => {
            let fu = *p.get(2).ok_or(truncated(C, "the FU header"))?;
            fu & 0x80 != 0 && h265_key_nal(fu & 0x3f)
        }
        t => h265_key_nal(t),
    };
    Ok(PayloadInfo {
        keyframe,
        ..Default::default()
    })
}

/// The AV1 RTP aggregation header: `N` marks the first packet of a coded video sequence,
/// which starts with a keyframe.
fn av1(p: &[u8]) -> Result<PayloadInfo, DescriptorError> {
    let first = *p.first().ok_or(DescriptorError::Empty { codec: "AV1" })?;
    Ok(PayloadInfo {
        keyframe: first & 0x08 != 0 && first & 0x80 == 0,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_temporal_layer_and_ids() {
        // X, S, PID 0 | I L T | 15-bit picture id 0x1234 | TL0PICIDX 9 | TID 2, Y | P=0
        let key = [0x90, 0xe0, 0x92, 0x34, 0x09, 0xa0, 0x10, 0x02];
        let info = parse(Codec::Vp8, &key).expect("parses");
        assert!(info.keyframe);
        assert_eq!(info.temporal, Some((2, true)));
        let ids = info.vp8.expect("vp8 ids");
        assert_eq!(ids.picture_id, Some((2, 0x1234, true)));
        assert_eq!(ids.tl0_pic_idx, Some((4, 9)));
        // A delta frame's first packet (P=1), TID 1 without Y; a 7-bit picture id.
        let delta = [0x90, 0xe0, 0x05, 0x07, 0x40, 0x11];
        let info = parse(Codec::Vp8, &delta).expect("parses");
        assert!(!info.keyframe);
        assert_eq!(info.temporal, Some((1, false)));
        assert_eq!(info.vp8.and_then(|v| v.picture_id), Some((2, 5, false)));
        // A middle packet of a keyframe (S=0) does not start one.
        let middle = [0x80, 0x80, 0x92, 0x34, 0x00];
        assert!(!parse(Codec::Vp8, &middle).expect("parses").keyframe);
        // Without the X byte.
        assert!(parse(Codec::Vp8, &[0x10, 0x00]).expect("parses").keyframe);
    }

    #[test]
    fn vp8_ids_are_rewritten_in_place() {
        let mut key = [0x90, 0xe0, 0x92, 0x34, 0x09, 0xa0, 0x10];
        let ids = parse(Codec::Vp8, &key).expect("parses").vp8.expect("ids");
        ids.rewrite(&mut key, 0x8001, 200);
        assert_eq!(key[2..5], [0x80, 0x01, 200], "15 bits kept, M bit set");
        let mut short = [0x90, 0x80, 0x05, 0x00];
        let ids = parse(Codec::Vp8, &short).expect("parses").vp8.expect("ids");
        ids.rewrite(&mut short, 0x1ff, 0);
        assert_eq!(short[2], 0x7f, "a 7-bit id stays 7 bits");
    }

    #[test]
    fn truncated_descriptors_are_refused_by_name() {
        let e = parse(Codec::Vp8, &[0x90, 0x80]).expect_err("no picture id");
        assert_eq!(
            e.to_string(),
            "VP8 payload descriptor ends early: the picture id is missing"
        );
        assert!(parse(Codec::Vp8, &[0x90, 0x80, 0x80]).is_err());
        assert!(parse(Codec::Vp8, &[]).is_err());
        assert!(parse(Codec::Vp9, &[0xa0]).is_err());
        assert!(parse(Codec::H264, &[24, 0, 9]).is_err());
        assert!(parse(Codec::H264, &[28]).is_err());
        assert!(parse(Codec::H265, &[0x60]).is_err());
        assert_eq!(
            parse(Codec::Av1, &[]).expect_err("empty").to_string(),
            "AV1 payload is empty"
        );
    }

    #[test]
    fn vp9_keyframes_and_layers() {
        // I with a 15-bit picture id, L: TID 1, SID 0; B set, P clear.
        let key = [0xa8, 0x80, 0x01, 0x20, 0x00];
        let info = parse(Codec::Vp9, &key).expect("parses");
        assert!(info.keyframe);
        assert_eq!(info.temporal, Some((1, true)));
        // Inter-predicted.
        assert!(
            !parse(Codec::Vp9, &[0xe8, 0x01, 0x20])
                .expect("parses")
                .keyframe
        );
        // Without layer indices: no temporal layer.
        assert_eq!(parse(Codec::Vp9, &[0x08]).expect("parses").temporal, None);
    }

    #[test]
    fn h264_keyframes_in_each_packetization() {
        // STAP-A with SPS and PPS.
        let stap = [24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        assert!(parse(Codec::H264, &stap).expect("parses").keyframe);
        // FU-A start of an IDR slice, and its continuation.
        assert!(
            parse(Codec::H264, &[0x7c, 0x85, 0])
                .expect("parses")
                .keyframe
        );
        assert!(
            !parse(Codec::H264, &[0x7c, 0x05, 0])
                .expect("parses")
                .keyframe
        );
        // A single non-IDR slice.
        assert!(!parse(Codec::H264, &[0x41, 0]).expect("parses").keyframe);
        assert!(parse(Codec::H264, &[0x65, 0]).expect("parses").keyframe);
    }

    #[test]
    fn h265_and_av1_keyframes() {
        // IDR_W_RADL (19) as a single NAL unit; a TRAIL_R (1) slice.
        assert!(parse(Codec::H265, &[19 << 1, 1]).expect("parses").keyframe);
        assert!(!parse(Codec::H265, &[1 << 1, 1]).expect("parses").keyframe);
        // FU start of an IDR.
        assert!(
            parse(Codec::H265, &[49 << 1, 1, 0x80 | 19])
                .expect("parses")
                .keyframe
        );
        // AV1: N set; Z (a continuation) set is not a start.
        assert!(parse(Codec::Av1, &[0x08]).expect("parses").keyframe);
        assert!(!parse(Codec::Av1, &[0x88]).expect("parses").keyframe);
        assert!(!parse(Codec::Av1, &[0x00]).expect("parses").keyframe);
    }

    #[test]
    fn other_codecs_are_opaque() {
        let info = parse(Codec::Opus, &[1, 2, 3]).expect("parses");
        assert!(info.keyframe);
        assert_eq!(info.temporal, None);
    }
}
