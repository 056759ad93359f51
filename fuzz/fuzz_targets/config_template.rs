// Shared by the configuration fuzz targets (included with `include!`): a complete
// server.conf and hpb.toml of the shape admins write, into which one fuzzed setting is
// spliced, so the fuzzer reaches every value check without first writing a whole valid file.

#[allow(dead_code)]
pub const SERVER_CONF: &str = "\
[http]
listen = 127.0.0.1:8080

[app]
debug = false
trustedproxies = 127.0.0.1, ::1

[sessions]
hashkey = 0123456789abcdef0123456789abcdef
blockkey = 0123456789abcdef

[clients]
internalsecret = the-internal-secret-0123456789

[backend]
backends = backend-1
allowall = false
timeout = 10
connectionsperhost = 8

[backend-1]
url = https://cloud.example.com
secret = the-shared-secret-0123456789

[nats]
url = nats://loopback

[mcu]
type = janus
url = ws://127.0.0.1:8188

[turn]
apikey = the-api-key
secret = the-turn-secret-0123456789
servers = turn:127.0.0.1:3478?transport=udp
";

/// A complete hpb.toml as tables of `key = value` (values in TOML syntax).
#[allow(dead_code)]
pub const HPB_TOML: &[(&str, &[(&str, &str)])] = &[
    ("http", &[("listen", r#""127.0.0.1:8080""#), ("shutdown_timeout", "10")]),
    ("app", &[("trustedproxies", r#"["127.0.0.1", "::1"]"#)]),
    ("sessions", &[("hashkey", r#""0123456789abcdef0123456789abcdef""#)]),
    ("clients", &[("internalsecret", r#""the-internal-secret-0123456789""#)]),
    (
        "backends.cloud",
        &[
            ("urls", r#"["https://cloud.example.com"]"#),
            ("secret", r#""the-shared-secret-0123456789""#),
        ],
    ),
    (
        "turn",
        &[
            ("secret", r#""the-turn-secret-0123456789""#),
            ("listen", r#"["127.0.0.1:3478"]"#),
        ],
    ),
    ("sfu", &[("listen", r#""127.0.0.1:3479""#)]),
];

/// [`HPB_TOML`] with `section.key` set to `value` (replacing the template's, if any).
#[allow(dead_code)]
pub fn hpb_toml_with(section: &str, key: &str, value: &str) -> String {
    let mut out = String::new();
    let mut placed = false;
    for (name, entries) in HPB_TOML {
        out.push_str(&format!("[{name}]\n"));
        for (k, v) in *entries {
            if *name != section || *k != key {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        if *name == section {
            out.push_str(&format!("{key} = {value}\n"));
            placed = true;
        }
    }
    if !placed {
        out.push_str(&format!("[{section}]\n{key} = {value}\n"));
    }
    out
}

/// Config files name certificate paths, and loading reads them: a fuzzed path to a device
/// or a pseudo file (`/dev/zero`, `/dev/stdin`) would read forever. Such inputs are skipped.
#[allow(dead_code)]
pub fn names_special_file(text: &str) -> bool {
    ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p))
}

/// `(section, key, value)` from the input: the first byte picks the setting, the rest is
/// the value (a server.conf value is one line).
#[allow(dead_code)]
pub fn setting(data: &[u8]) -> Option<(&'static str, &'static str, &str)> {
    let (pick, rest) = data.split_first()?;
    let settings = hpb::fuzzing::settings();
    let (section, key) = settings[usize::from(*pick) % settings.len()];
    let value = std::str::from_utf8(rest).ok()?;
    Some((section, key, value))
}

/// A load's error must say something (a refusal without a reason is a defect).
#[allow(dead_code)]
pub fn check_load(name: &str, text: &str) {
    if let Err(e) = hpb::fuzzing::load_file_text(name, text) {
        assert!(!e.trim().is_empty(), "an empty configuration error");
    }
}
