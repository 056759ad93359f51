//! Fuzz the hpb.toml path: the whole load (TOML, layers, validation) on the input as a file,
//! and one setting spliced into a complete hpb.toml, both as a TOML string and as a raw
//! TOML value (number, array, table, …). None may panic; every refusal must say why.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("config_template.rs");

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c) & 0xffff)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && !names_special_file(text)
    {
        check_load("hpb.toml", text);
    }
    if let Some((section, key, value)) = setting(data) {
        if names_special_file(value) {
            return;
        }
        let section = if section == "backends" {
            "backends.cloud"
        } else {
            section
        };
        let raw = value.lines().next().unwrap_or_default();
        for v in [toml_string(value), raw.to_string()] {
            check_load("hpb.toml", &hpb_toml_with(section, key, &v));
        }
    }
});
