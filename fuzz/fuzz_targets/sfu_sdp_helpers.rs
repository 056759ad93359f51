//! Fuzz the SFU's own SDP text helpers (first mid, m-lines with rids, SIM group extraction,
//! ICE/DTLS attribute checks): no panic on any text, and the results stay consistent with
//! the SDP they came from.
#![no_main]

use hpb_sfu::fuzzing::{check_transport, extract_sim_groups, first_mid, media_sections, sim_rids};
use libfuzzer_sys::fuzz_target;

include!("sdp_template.rs");

fn check(sdp: &str) {
    if let Some(mid) = first_mid(sdp) {
        assert!(sdp.contains(&format!("a=mid:{mid}")));
    }
    let sections = media_sections(sdp);
    assert!(sections.len() <= sdp.matches("m=").count());
    for s in &sections {
        assert!(!s.mid.is_empty());
        assert!(sdp.contains(&s.mid));
    }
    let (out, groups) = extract_sim_groups(sdp);
    if groups.is_empty() {
        assert_eq!(out, sdp, "nothing to extract leaves the SDP alone");
    } else {
        // Only whole a=ssrc / a=ssrc-group lines are taken out.
        assert!(out.len() < sdp.len());
        let kept: Vec<&str> = sdp.split_inclusive('\n').collect();
        let mut it = kept.iter();
        for l in out.split_inclusive('\n') {
            assert!(it.any(|k| *k == l), "{l:?} is not a line of the input");
        }
        for g in &groups {
            assert!(g.layers.len() > 1);
            assert!(sim_rids(g.layers.len()).len() >= 2);
        }
        // What is left has no SIM group any more; extracting again finds nothing new
        // unless a later section repeated an SSRC.
        let _ = extract_sim_groups(&out);
    }
    if let Err(e) = check_transport(sdp) {
        assert!(e.to_string().contains("a="), "{e}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    if let Some(sdp) = spliced(data) {
        check(&sdp);
    }
});
