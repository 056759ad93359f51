//! The settings hpb understands: every section and key with its kind, which values are
//! secrets, and the upstream `server.conf` settings hpb accepts but does not implement.

/// How a value is written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A string that `config show` masks.
    Secret,
    /// `true`/`false` (server.conf also: yes/no, on/off, 1/0, t/f, y/n).
    Bool,
    /// A non-negative integer.
    UInt,
    /// A TOML array or a comma-separated string.
    List,
    /// A listen address (`host:port`; server.conf may give a space-separated list).
    Listen,
}

/// One key of a section.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
}

/// One `[section]` with its keys, in the order `config show` prints them.
#[derive(Debug)]
pub struct SectionDef {
    pub name: &'static str,
    pub keys: &'static [Key],
}

const fn k(name: &'static str, kind: Kind) -> Key {
    Key { name, kind }
}

/// The table of per-backend settings: `[backends.<id>]` in TOML, `[<id>]` in server.conf.
pub const BACKENDS: &str = "backends";

/// Every section hpb reads, in display order.
pub const SECTIONS: &[SectionDef] = &[
    SectionDef {
        name: "http",
        keys: &[
            k("listen", Kind::Listen),
            k("allowed_origins", Kind::List),
            k("shutdown_timeout", Kind::UInt),
        ],
    },
    SectionDef {
        name: "app",
        keys: &[
            k("trustedproxies", Kind::List),
            k("allowsubscribeany", Kind::Bool),
        ],
    },
    SectionDef {
        name: "sessions",
        keys: &[k("hashkey", Kind::Secret), k("blockkey", Kind::Secret)],
    },
    SectionDef {
        name: "clients",
        keys: &[k("internalsecret", Kind::Secret)],
    },
    SectionDef {
        name: "backend",
        keys: &[
            k("backendtype", Kind::Text),
            k("backends", Kind::List),
            k("allowall", Kind::Bool),
            k("secret", Kind::Secret),
            k("allowed", Kind::List),
            k("allowhttp", Kind::Bool),
            k("sessionlimit", Kind::UInt),
            k("maxstreambitrate", Kind::UInt),
            k("maxscreenbitrate", Kind::UInt),
            k("timeout", Kind::UInt),
            k("connectionsperhost", Kind::UInt),
            k("skipverify", Kind::Bool),
        ],
    },
    SectionDef {
        name: "mcu",
        keys: &[
            k("maxstreambitrate", Kind::UInt),
            k("maxscreenbitrate", Kind::UInt),
            k("timeout", Kind::UInt),
        ],
    },
    SectionDef {
        name: "turn",
        keys: &[
            k("apikey", Kind::Secret),
            k("secret", Kind::Secret),
            k("servers", Kind::List),
            k("port", Kind::UInt),
            k("domain", Kind::Text),
            k("host", Kind::Text),
            k("enabled", Kind::Bool),
            k("listen", Kind::List),
            k("tls_listen", Kind::Text),
            k("secrets", Kind::List),
            k("realm", Kind::Text),
            k("relay_range", Kind::Text),
            k("external_ip", Kind::List),
            k("allowed_peers", Kind::List),
            k("denied_peers", Kind::List),
            k("allow_loopback_peers", Kind::Bool),
            k("total_quota", Kind::UInt),
            k("user_quota", Kind::UInt),
            k("max_bps", Kind::UInt),
            k("workers", Kind::UInt),
            k("tcp_relay", Kind::Bool),
        ],
    },
    SectionDef {
        name: "https",
        keys: &[
            k("listen", Kind::Listen),
            k("certificate", Kind::Text),
            k("key", Kind::Text),
            k("acme_domains", Kind::List),
            k("acme_email", Kind::Text),
            k("acme_directory", Kind::Text),
            k("acme_cache", Kind::Text),
            k("acme_ca", Kind::Text),
        ],
    },
    SectionDef {
        name: "sfu",
        keys: &[
            k("listen", Kind::Text),
            k("external_ip", Kind::Text),
            k("listen_v6", Kind::Text),
            k("external_ip_v6", Kind::Text),
            k("tcp_listen", Kind::Text),
            k("thin_silent_audio", Kind::Bool),
            k("opus_dtx", Kind::Bool),
        ],
    },
    SectionDef {
        name: "tls",
        keys: &[k("certificate", Kind::Text), k("key", Kind::Text)],
    },
    SectionDef {
        name: "federation",
        keys: &[k("timeout", Kind::UInt), k("skipverify", Kind::Bool)],
    },
    SectionDef {
        name: "stats",
        keys: &[k("allowed_ips", Kind::List)],
    },
    SectionDef {
        name: "limits",
        keys: &[
            k("hello_timeout_ms", Kind::UInt),
            k("room_join_timeout_ms", Kind::UInt),
            k("resume_window_ms", Kind::UInt),
            k("ws_ping_interval_ms", Kind::UInt),
            k("ws_pong_timeout_ms", Kind::UInt),
            k("write_timeout_ms", Kind::UInt),
            k("room_ping_interval_ms", Kind::UInt),
            k("dialout_timeout_ms", Kind::UInt),
            k("max_message_size", Kind::UInt),
            k("max_queued_messages", Kind::UInt),
            k("client_rate", Kind::UInt),
            k("client_burst", Kind::UInt),
        ],
    },
    SectionDef {
        name: "log",
        keys: &[k("level", Kind::Text)],
    },
];

/// Keys of one backend, in display order (`url` is upstream's deprecated single URL).
pub const BACKEND_KEYS: &[Key] = &[
    k("urls", Kind::List),
    k("url", Kind::Text),
    k("secret", Kind::Secret),
    k("sessionlimit", Kind::UInt),
    k("maxstreambitrate", Kind::UInt),
    k("maxscreenbitrate", Kind::UInt),
];

/// The section definition named `name` (exact, lower case).
pub fn section(name: &str) -> Option<&'static SectionDef> {
    SECTIONS.iter().find(|s| s.name == name)
}

/// The kind of `[section] key`, or `None` if hpb does not know it.
pub fn kind(section_name: &str, key: &str) -> Option<Kind> {
    section(section_name)?
        .keys
        .iter()
        .find(|x| x.name == key)
        .map(|x| x.kind)
}

/// The kind of a per-backend key.
pub fn backend_kind(key: &str) -> Option<Kind> {
    BACKEND_KEYS.iter().find(|x| x.name == key).map(|x| x.kind)
}

/// Comma-separated names of a section's keys, for "accepts: …" hints.
pub fn key_names(keys: &[Key]) -> String {
    keys.iter().map(|x| x.name).collect::<Vec<_>>().join(", ")
}

/// Comma-separated names of all sections, for "accepts: …" hints.
pub fn section_names() -> String {
    let mut v: Vec<&str> = SECTIONS.iter().map(|s| s.name).collect();
    v.push("backends.<id>");
    v.join(", ")
}

/// Values `config show` masks: secrets, session keys and the TURN API key.
pub fn is_secret(key: &str) -> bool {
    key.contains("secret") || matches!(key, "hashkey" | "blockkey" | "apikey" | "token_key")
}

/// Upstream server.conf sections hpb accepts but does not implement, with why.
pub const UNIMPLEMENTED_SECTIONS: &[(&str, &str)] = &[
    (
        "nats",
        "hpb runs single-node with an in-process message bus; NATS clustering is not implemented yet",
    ),
    ("etcd", "etcd discovery is not implemented"),
    ("grpc", "clustering over gRPC is not implemented"),
    ("geoip", "GeoIP lookups are not implemented"),
    ("geoip-overrides", "GeoIP lookups are not implemented"),
    ("continent-overrides", "GeoIP lookups are not implemented"),
];

/// Why hpb ignores an upstream key inside a section it otherwise reads.
pub fn unimplemented_key_hint(section_name: &str, key: &str) -> &'static str {
    match (section_name, key) {
        ("mcu", _) => "hpb has its own SFU: Janus and signaling-proxy settings are not used",
        ("http", "readtimeout" | "writetimeout") => "hpb uses its own HTTP timeouts",
        ("app", "debug") => "pprof debug handlers do not exist in hpb",
        ("backend", "backendprefix") => "etcd backends are not implemented",
        _ => "not an hpb setting (a typo?)",
    }
}

/// The hint for a whole ignored section, if it is a known upstream one.
pub fn unimplemented_section_hint(name: &str) -> Option<&'static str> {
    UNIMPLEMENTED_SECTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
}
