//! Fuzz the decoding of Nextcloud's answers to hpb: the OCS envelope around every reply, the
//! signaling backend's reply inside it, Talk's capabilities, and `Cache-Control: max-age`.
//! Input is the body as Nextcloud sent it, and the same bytes as the envelope's data.
#![no_main]

use hpb_signaling::nextcloud::{backend_reply, capabilities, ocs_data, parse_max_age};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const URL: &str = "https://cloud.example/ocs/v2.php/apps/spreed/api/v1/signaling/backend";

/// Refusals name the URL that answered (admins have several backends).
fn check_refusal(e: impl std::fmt::Display) {
    let text = e.to_string();
    assert!(text.contains(URL), "refusal without its URL: {text}");
}

/// Whatever the data, a reply either decodes or is refused with a message; capabilities
/// never fail (what is missing reads as absent).
fn check_data(data: Value) {
    let _ = capabilities(&data);
    if let Err(e) = backend_reply(URL, data) {
        check_refusal(e);
    }
}

fuzz_target!(|input: &[u8]| {
    match ocs_data(URL, 200, "application/json; charset=utf-8", input) {
        Ok(data) => {
            let empty = match &data {
                Value::Null => true,
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            assert!(!empty, "empty OCS data accepted: {data}");
            check_data(data);
        }
        Err(e) => check_refusal(e),
    }
    if let Ok(data) = serde_json::from_slice::<Value>(input) {
        check_data(data);
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = parse_max_age(text);
    }
});
