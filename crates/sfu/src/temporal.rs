//! Temporal layer selection (`selectStream` `temporal`): which frames of a VP8 or VP9 track
//! with temporal scalability a viewer gets. Frames of temporal layers above the selected
//! one are not forwarded (they are references only for their own and higher layers, so the
//! rest still decodes); going down is immediate, going up waits for a frame the higher layer
//! can start from (a layer sync frame or a keyframe).

use str0m::format::Codec;

/// All temporal layers.
pub(crate) const ALL: u8 = u8::MAX;

/// Whether going up to a higher temporal layer needs a keyframe (the codec's switching
/// points are not read: VP9's `U` bit is left aside, as before packet forwarding).
pub(crate) fn up_needs_keyframe(codec: Codec) -> bool {
    codec == Codec::Vp9
}

/// Decide for one frame whether a viewer gets it. `cap` is the highest temporal layer being
/// forwarded to the viewer (updated here), `want` the one selected (`None`: all),
/// `keyframe` whether the frame is one (which every layer can start from).
pub(crate) fn admit(cap: &mut u8, want: Option<u8>, layer: u8, sync: bool, keyframe: bool) -> bool {
    let want = want.unwrap_or(ALL);
    if want < *cap {
        *cap = want;
    }
    if keyframe {
        *cap = want;
    } else if layer > *cap && layer <= want && sync {
        *cap = layer;
    }
    layer <= *cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_at_once_up_at_a_sync_frame() {
        let mut cap = ALL;
        // Everything without a selection.
        assert!(admit(&mut cap, None, 2, false, false));
        // Temporal 0: layers 1 and 2 are dropped from the next frame on.
        assert!(!admit(&mut cap, Some(0), 2, false, false));
        assert!(!admit(&mut cap, Some(0), 1, false, false));
        assert!(admit(&mut cap, Some(0), 0, false, false));
        // Back up to 2: layer 1 waits for its sync frame, then layer 2 for its own.
        assert!(!admit(&mut cap, Some(2), 1, false, false));
        assert!(!admit(&mut cap, Some(2), 2, false, false));
        assert!(admit(&mut cap, Some(2), 1, true, false));
        assert!(!admit(&mut cap, Some(2), 2, false, false));
        assert!(admit(&mut cap, Some(2), 2, true, false));
        assert!(admit(&mut cap, Some(2), 2, false, false));
        // A keyframe opens every selected layer at once.
        assert!(admit(&mut cap, Some(0), 0, false, false));
        assert!(admit(&mut cap, Some(1), 0, false, true));
        assert!(admit(&mut cap, Some(1), 1, false, false));
        assert!(
            !admit(&mut cap, Some(1), 2, true, false),
            "above the selection"
        );
    }
}
