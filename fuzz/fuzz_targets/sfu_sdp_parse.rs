//! Fuzz what the SFU does with a client's SDP before str0m's state machine sees it: the
//! checks and str0m's SDP parser (run outside the panic guard) must refuse garbage with an
//! error that says what was wrong, never panic.
#![no_main]

use hpb_sfu::fuzzing::{extract_sim_groups, parse_answer, parse_offer};
use libfuzzer_sys::fuzz_target;

include!("sdp_template.rs");

/// What the worker does: SIM groups out, then the offer parse (publishers), or the answer
/// parse (subscribers).
fn check(sdp: &str, answer: bool) {
    let r = if answer {
        parse_answer(sdp).map(|_| ())
    } else {
        parse_offer(&extract_sim_groups(sdp).0).map(|_| ())
    };
    if let Err(e) = r {
        assert!(e.to_string().contains("SDP"), "{e}");
    }
}

fuzz_target!(|data: &[u8]| {
    let answer = data.first().is_some_and(|b| b & 0x40 != 0);
    if let Ok(text) = std::str::from_utf8(data) {
        check(text, answer);
    }
    if let Some(sdp) = spliced(data) {
        check(&sdp, answer);
    }
});
