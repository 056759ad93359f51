//! Fuzz the upstream `server.conf` path: the INI parser on any text (what it returns must
//! be in the text, errors name a line of it), and the whole load of a server.conf (layers,
//! validation) on the input as a file and as one setting spliced into a complete one. None
//! may panic; every refusal must say why.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("config_template.rs");

fn check_ini(text: &str) {
    let lines = text.split('\n').count();
    match hpb::fuzzing::parse_ini(text) {
        Ok(ini) => {
            let mut last = 0;
            for s in &ini.sections {
                assert!(!s.name.is_empty() && !s.name.contains('\n'));
                assert!(s.line > last && s.line <= lines, "section lines in order");
                last = s.line;
                for e in &s.entries {
                    assert!(!e.key.is_empty() && !e.key.contains(['=', ':', '\n']));
                    assert!(e.line > last && e.line <= lines, "entry lines in order");
                    last = e.line;
                }
            }
        }
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines,
                "the error names a line of the text"
            );
            assert!(e.to_string().starts_with(&format!("line {}: ", e.line)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && !names_special_file(text)
    {
        check_ini(text);
        check_load("server.conf", text);
    }
    if let Some((section, key, value)) = setting(data) {
        let value = value.lines().next().unwrap_or_default();
        if names_special_file(value) {
            return;
        }
        // Backends are sections of their own in server.conf.
        let section = if section == "backends" {
            "backend-1"
        } else {
            section
        };
        let text = format!("{SERVER_CONF}\n[{section}]\n{key} = {value}\n");
        check_load("server.conf", &text);
    }
});
