//! Tests of the whole loading path: upstream server.conf, hpb.toml, environment, AIO
//! names, precedence, the dev sandbox, `config show` and the error messages.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;

const SERVER_CONF: &str = r#"
[http]
# IP and port to listen on for HTTP requests.
# Comment line with a ; below
; listen = 0.0.0.0:9999
listen = 127.0.0.1:8080 192.168.1.2:8080
# HTTP socket read timeout in seconds.
#readtimeout = 15

[app]
# Set to "true" to install pprof debug handlers.
debug = false
trustedproxies = 127.0.0.1, 10.0.0.0/8, fd00::/8

[sessions]
# Secret value used to generate checksums of sessions. This should be a random
# string of 32 or 64 bytes.
hashkey = 0123456789abcdef0123456789abcdef
# Optional key for encrypting data in the sessions. Must be either 16, 24 or
# 32 bytes.
blockkey = abcdefghijklmnop

[clients]
internalsecret = the-internal-secret ; trailing comment

[backend]
# Type of backend configuration.
backendtype = static
backends = backend-1, backend-2
allowall = false
#secret = the-shared-secret-for-allowall
timeout = 10
connectionsperhost = 8

[backend-1]
# URL of the Nextcloud instance
url = https://cloud.domain.invalid
secret = $(BACKEND1_SECRET)
sessionlimit = 5

[backend-2]
urls = https://Cloud.Other.invalid/nc/, https://cloud.other.invalid:8443
secret = the-shared-secret-2
maxstreambitrate = 500000

[nats]
# Url of NATS backend to use.
url = nats://localhost:4222

[mcu]
type = janus
url = ws://localhost:8188
maxstreambitrate = 1048576
maxscreenbitrate = 2097152

[turn]
apikey = the-api-key-for-the-rest-service
secret = 6d1c17a7-c736-4e22-b02c-e2955b7ecc64
servers = turn:1.2.3.4:9991?transport=udp,turn:1.2.3.4:9991?transport=tcp

[geoip]
url = none

[stats]
allowed_ips = 127.0.0.1, 192.168.0.0/24
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn ini(text: &str, e: &[(&str, &str)]) -> Result<Loaded> {
    load_from(
        Some((Path::new("/etc/signaling/server.conf"), text)),
        &env(e),
        &[],
    )
}

fn toml(text: &str, e: &[(&str, &str)]) -> Result<Loaded> {
    load_from(Some((Path::new("/etc/hpb/hpb.toml"), text)), &env(e), &[])
}

fn err(r: Result<Loaded>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn urls(b: &hpb_signaling::config::BackendConfig) -> Vec<&str> {
    b.urls.iter().map(url::Url::as_str).collect()
}

#[test]
fn upstream_server_conf_loads_unchanged() {
    let l = ini(SERVER_CONF, &[("BACKEND1_SECRET", "secret-1")]).expect("loads");
    assert_eq!(l.listen, "127.0.0.1:8080".parse().expect("addr"));
    assert!(l.generated_secrets.is_none());
    let c = &l.signaling;
    assert_eq!(c.hash_key, b"0123456789abcdef0123456789abcdef");
    assert_eq!(c.block_key, b"abcdefghijklmnop");
    assert_eq!(
        c.internal_secret.as_deref(),
        Some(&b"the-internal-secret"[..])
    );
    assert!(c.common.is_none());
    assert_eq!(c.backends.len(), 2);
    let b1 = &c.backends[0];
    assert_eq!(b1.id, "backend-1");
    assert_eq!(urls(b1), ["https://cloud.domain.invalid/"]);
    assert_eq!(b1.secret, b"secret-1");
    assert_eq!(b1.session_limit, 5);
    let b2 = &c.backends[1];
    assert_eq!(b2.id, "backend-2");
    assert_eq!(
        urls(b2),
        [
            "https://cloud.other.invalid/nc/",
            "https://cloud.other.invalid:8443/"
        ]
    );
    assert_eq!(b2.secret, b"the-shared-secret-2");
    assert_eq!(b2.max_stream_bitrate, 500_000);
    assert_eq!(c.backend_timeout, Duration::from_secs(10));
    assert_eq!(c.connections_per_host, 8);
    let proxies: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(proxies, ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]);
    let stats: Vec<String> = c
        .stats_allowed_ips
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(stats, ["127.0.0.1/32", "192.168.0.0/24"]);
    let turn = c.turn.as_ref().expect("turn");
    assert_eq!(turn.api_key, "the-api-key-for-the-rest-service");
    assert_eq!(
        turn.servers,
        [
            "turn:1.2.3.4:9991?transport=udp",
            "turn:1.2.3.4:9991?transport=tcp"
        ]
    );
    assert_eq!(c.mcu_max_stream_bitrate, 1_048_576);
    assert_eq!(c.mcu_max_screen_bitrate, 2_097_152);
    assert_eq!(l.log_level, "info");

    let w = l.warnings.join("\n");
    assert!(w.contains("ignores 192.168.1.2:8080"), "{w}");
    assert!(w.contains("line 12: hpb ignores [app] debug"), "{w}");
    assert!(w.contains("[nats] url"), "{w}");
    assert!(w.contains("[mcu] type, url"), "{w}");
    assert!(w.contains("[geoip] url"), "{w}");
    assert!(w.contains("[backend-1] url is deprecated"), "{w}");
}

#[test]
fn unset_substitution_variable_is_used_literally_with_a_warning() {
    let l = ini(SERVER_CONF, &[]).expect("loads");
    assert_eq!(l.signaling.backends[0].secret, b"BACKEND1_SECRET");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("line 38: $(BACKEND1_SECRET) is not set")),
        "{:?}",
        l.warnings
    );
}

const HPB_TOML: &str = r#"
[http]
listen = "0.0.0.0:9000"
allowed_origins = ["https://cloud.example.com/"]

[app]
trustedproxies = "10.1.0.0/16, 10.2.0.1"
allowsubscribeany = true

[sessions]
hashkey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

[clients]
internalsecret = "int"

[backend]
secret = "common"
timeout = 5

[backends.one]
urls = ["https://cloud.example.com"]
sessionlimit = 10

[backends.two]
urls = "https://two.example.com, http://127.0.0.1:8081/"
secret = "two-secret"

[mcu]
maxstreambitrate = 2000000

[federation]
timeout = 3
skipverify = true

[limits]
hello_timeout_ms = 1500
client_rate = 50
dialout_timeout_ms = 20000

[log]
level = "debug"
"#;

#[test]
fn hpb_toml_loads() {
    let l = toml(HPB_TOML, &[]).expect("loads");
    assert_eq!(l.listen, "0.0.0.0:9000".parse().expect("addr"));
    let c = &l.signaling;
    assert_eq!(c.allowed_origins, ["https://cloud.example.com"]);
    assert_eq!(c.trusted_proxies.len(), 2);
    assert!(c.allow_subscribe_any);
    assert!(c.block_key.is_empty());
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.backends[0].id, "one");
    assert_eq!(
        c.backends[0].secret, b"common",
        "falls back to [backend] secret"
    );
    assert_eq!(c.backends[0].session_limit, 10);
    assert_eq!(
        urls(&c.backends[1]),
        ["https://two.example.com/", "http://127.0.0.1:8081/"]
    );
    assert_eq!(c.backends[1].secret, b"two-secret");
    assert!(
        c.common.is_none(),
        "a common secret alone does not allow other hosts"
    );
    assert_eq!(c.backend_timeout, Duration::from_secs(5));
    assert_eq!(c.mcu_max_stream_bitrate, 2_000_000);
    assert_eq!(c.federation.timeout, Duration::from_secs(3));
    assert!(c.federation.skip_verify);
    assert_eq!(c.limits.hello_timeout, Duration::from_millis(1500));
    assert_eq!(c.limits.client_rate, 50);
    assert_eq!(c.limits.client_burst, 1000);
    assert_eq!(c.limits.dialout_timeout, Duration::from_secs(20));
    assert_eq!(
        crate::config::load(&Default::default())
            .expect("the sandbox loads")
            .signaling
            .limits
            .dialout_timeout,
        Duration::from_secs(45),
        "upstream's wait by default"
    );
    assert_eq!(l.log_level, "debug");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn env_overrides_the_file() {
    let l = toml(
        HPB_TOML,
        &[
            ("HPB_HTTP_LISTEN", "127.0.0.1:7000"),
            (
                "HPB_HTTP_ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("HPB_BACKEND_SECRET", "from-env"),
            ("HPB_BACKENDS__TWO__SESSIONLIMIT", "7"),
            ("HPB_LIMITS_CLIENT_BURST", "10"),
            ("HPB_BIN", "/usr/bin/hpb"),
        ],
    )
    .expect("loads");
    assert_eq!(l.listen, "127.0.0.1:7000".parse().expect("addr"));
    assert_eq!(
        l.signaling.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(l.signaling.backends[0].secret, b"from-env");
    assert_eq!(l.signaling.backends[1].session_limit, 7);
    assert_eq!(l.signaling.limits.client_burst, 10);
    assert!(
        l.warnings.is_empty(),
        "HPB_BIN is not ours: {:?}",
        l.warnings
    );
    let shown = show(&l);
    assert!(shown.contains("# env HPB_HTTP_LISTEN"), "{shown}");
    assert!(shown.contains("backends.two.sessionlimit = 7"), "{shown}");
}

#[test]
fn env_defines_backends_and_adds_them_to_a_listed_file() {
    let text = "[sessions]\nhashkey = 0123456789abcdef0123456789abcdef\n[backend]\nbackends = a\n[a]\nurls = https://a.example\nsecret = sa\n";
    let l = ini(
        text,
        &[
            ("HPB_BACKENDS__B__URLS", "https://b.example"),
            ("HPB_BACKENDS__B__SECRET", "sb"),
            ("HPB_SESSION_HASHKEY", "x"),
        ],
    )
    .expect("loads");
    let ids: Vec<&str> = l.signaling.backends.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("HPB_SESSION_HASHKEY") && w.contains("no [session] section")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn aio_environment() {
    let l = load_from(
        None,
        &env(&[
            ("NC_DOMAIN", "cloud.example.com"),
            ("SIGNALING_SECRET", "sig"),
            ("INTERNAL_SECRET", "int"),
            ("TURN_SECRET", "turn"),
            ("TALK_PORT", "3478"),
            ("SKIP_CERT_VERIFY", "true"),
            ("TALK_MAX_STREAM_BITRATE", "123"),
            ("TALK_MAX_SCREEN_BITRATE", "456"),
            ("AIO_LOG_LEVEL", "warning"),
        ]),
        &[],
    )
    .expect("loads");
    assert!(l.generated_secrets.is_none(), "AIO is not the dev sandbox");
    assert_eq!(l.listen, "[::]:8081".parse().expect("addr"));
    let c = &l.signaling;
    assert_eq!(c.backends.len(), 1);
    assert_eq!(c.backends[0].id, "backend-1");
    assert_eq!(urls(&c.backends[0]), ["https://cloud.example.com/"]);
    assert_eq!(c.backends[0].secret, b"sig");
    assert!(c.common.is_none());
    assert_eq!(c.internal_secret.as_deref(), Some(&b"int"[..]));
    assert!(c.backend_skip_verify);
    assert_eq!(c.connections_per_host, 32);
    assert_eq!(
        (c.mcu_max_stream_bitrate, c.mcu_max_screen_bitrate),
        (123, 456)
    );
    assert_eq!(c.hash_key.len(), 64, "generated like AIO does");
    assert_eq!(c.block_key.len(), 32);
    assert_eq!(l.log_level, "warn");
    let shown = show(&l);
    assert!(shown.contains("# env NC_DOMAIN (AIO)"), "{shown}");
    assert!(shown.contains("turn.port = 3478"), "{shown}");
    assert!(
        shown.contains("turn.secret = \"****\" (4 chars)"),
        "{shown}"
    );
    assert!(
        shown.contains("sessions.hashkey = \"****\" (64 chars)"),
        "{shown}"
    );

    let e = err(load_from(None, &env(&[("SIGNALING_SECRET", "sig")]), &[]));
    assert!(
        e.contains("SIGNALING_SECRET is set but NC_DOMAIN is not"),
        "{e}"
    );
}

#[test]
fn precedence_default_file_env_aio_cli() {
    let text = "[sessions]\nhashkey = 0123456789abcdef0123456789abcdef\n[log]\nlevel = error\n[http]\nlisten = 127.0.0.1:1\n";
    let l = ini(text, &[]).expect("file");
    assert_eq!(l.log_level, "error");
    let l = ini(text, &[("HPB_LOG_LEVEL", "debug")]).expect("env");
    assert_eq!(l.log_level, "debug");
    let l = ini(
        text,
        &[("HPB_LOG_LEVEL", "debug"), ("AIO_LOG_LEVEL", "trace")],
    )
    .expect("aio");
    assert_eq!(l.log_level, "trace");
    let overrides = [
        ("log.level".to_string(), "off".to_string()),
        ("http.listen".to_string(), "127.0.0.1:3".to_string()),
    ];
    let l = load_from(
        Some((Path::new("server.conf"), text)),
        &env(&[
            ("HPB_LOG_LEVEL", "debug"),
            ("AIO_LOG_LEVEL", "trace"),
            ("HPB_HTTP_LISTEN", "127.0.0.1:2"),
        ]),
        &overrides,
    )
    .expect("cli");
    assert_eq!(l.log_level, "off");
    assert_eq!(l.listen.port(), 3);
    let shown = show(&l);
    assert!(shown.contains("log.level = \"off\""), "{shown}");
    assert!(shown.contains("# --log-level"), "{shown}");
    assert!(shown.contains("# --listen"), "{shown}");
    assert!(shown.contains("app.allowsubscribeany = false"), "{shown}");
    assert!(shown.contains("# server.conf line 2"), "{shown}");
}

#[test]
fn dev_sandbox_without_any_configuration() {
    let l = load_from(
        None,
        &env(&[("PATH", "/bin"), ("HPB_HTTP_LISTEN", "127.0.0.1:9")]),
        &[],
    )
    .expect("loads");
    assert_eq!(l.listen, "127.0.0.1:9".parse().expect("addr"));
    let g = l.generated_secrets.as_ref().expect("generated");
    assert_eq!(g.signaling_secret.len(), 32);
    let common = l.signaling.common.as_ref().expect("allowall");
    assert!(common.allow_all && common.allow_http);
    assert_eq!(common.secret, g.signaling_secret.as_bytes());
    assert_eq!(l.signaling.hash_key.len(), 64);
    assert!(l.signaling.internal_secret.is_some());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let shown = show(&l);
    assert!(
        shown.contains("backend.secret = \"****\" (32 chars)"),
        "{shown}"
    );
    assert!(shown.contains("# generated"), "{shown}");
    assert!(shown.contains("backend.allowall = true"), "{shown}");
    assert!(shown.contains("# dev sandbox"), "{shown}");
    assert!(
        !shown.contains(&g.signaling_secret),
        "secret must be masked"
    );

    let l = load_from(
        None,
        &BTreeMap::new(),
        &[("http.listen".to_string(), "0.0.0.0:8080".to_string())],
    )
    .expect("loads");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("reachable from other hosts")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn hashkey_is_required_with_a_config_file() {
    let e = err(toml(
        "[backends.a]\nurls = \"https://a.example\"\nsecret = \"s\"\n",
        &[],
    ));
    assert!(e.contains("[sessions] hashkey is not set"), "{e}");
    assert!(e.contains("HPB_SESSIONS_HASHKEY"), "{e}");
}

#[test]
fn bad_blockkey_names_its_source() {
    let e = err(toml(HPB_TOML, &[("HPB_SESSIONS_BLOCKKEY", "12345")]));
    assert!(e.contains("[sessions] blockkey must be 16, 24 or 32 bytes, it has 5 (from env HPB_SESSIONS_BLOCKKEY)"), "{e}");
    let e = err(ini(
        "[sessions]\nhashkey = 0123456789abcdef0123456789abcdef\nblockkey = abc\n",
        &[],
    ));
    assert!(
        e.contains("it has 3 (from /etc/signaling/server.conf line 3)"),
        "{e}"
    );
}

#[test]
fn listed_backend_without_section() {
    let text = "[sessions]\nhashkey = 0123456789abcdef0123456789abcdef\n[backend]\nbackends = a, b\n[a]\nurls = https://a.example\nsecret = s\n";
    let e = err(ini(text, &[]));
    assert!(
        e.contains("/etc/signaling/server.conf line 4: [backend] backends lists \"b\" but there is no [b] section"),
        "{e}"
    );
    let e = err(toml(
        "[sessions]\nhashkey = \"k\"\n[backend]\nbackends = [\"x\"]\n",
        &[],
    ));
    assert!(e.contains("there is no [backends.x] table"), "{e}");
}

#[test]
fn duplicate_url_names_both_backends() {
    let text = "[sessions]\nhashkey = 0123456789abcdef0123456789abcdef\n[backend]\nbackends = a, b\nsecret = s\n[a]\nurls = https://cloud.example.com\n[b]\nurls = https://CLOUD.example.com:443/\n";
    let e = err(ini(text, &[]));
    assert!(
        e.contains("backend URL https://cloud.example.com/ belongs to backend \"a\""),
        "{e}"
    );
    assert!(
        e.contains("line 7") && e.contains("to backend \"b\"") && e.contains("line 9"),
        "{e}"
    );
}

#[test]
fn unknown_toml_key_is_an_error() {
    let e = err(toml("[http]\nlistne = \"x\"\n", &[]));
    assert!(e.contains("/etc/hpb/hpb.toml: unknown key `listne` in [http]; [http] accepts: listen, allowed_origins"), "{e}");
    let e = err(toml("[backends.a]\nulrs = \"x\"\n", &[]));
    assert!(e.contains("unknown key `ulrs` in [backends.a]"), "{e}");
    let e = err(toml("[nats]\nurl = \"nats://x\"\n", &[]));
    assert!(e.contains("unknown section [nats]"), "{e}");
    let e = err(toml("[http\n", &[]));
    assert!(e.contains("is not valid TOML"), "{e}");
}

#[test]
fn bad_ini_line_is_an_error_with_its_line() {
    let e = err(ini(
        "[http]\nlisten = 127.0.0.1:8080\nthis is not valid\n",
        &[],
    ));
    assert!(
        e.starts_with("/etc/signaling/server.conf line 3: expected `key = value`"),
        "{e}"
    );
}

#[test]
fn value_errors_name_key_value_and_source() {
    let e = err(toml(HPB_TOML, &[("HPB_BACKEND_ALLOWALL", "maybe")]));
    assert!(e.contains("[backend] allowall must be true or false, it is \"maybe\" (from env HPB_BACKEND_ALLOWALL)"), "{e}");
    let e = err(toml(HPB_TOML, &[("HPB_BACKENDS__ONE__URLS", "not a url")]));
    assert!(
        e.contains("[backends.one] urls:") && e.contains("env HPB_BACKENDS__ONE__URLS"),
        "{e}"
    );
    let e = err(toml(
        HPB_TOML,
        &[("HPB_APP_TRUSTEDPROXIES", "10.0.0.0/8, nope")],
    ));
    assert!(e.contains("\"nope\" is not an IP address or CIDR"), "{e}");
    let e = err(toml(HPB_TOML, &[("HPB_HTTP_LISTEN", "example.com:80")]));
    assert!(
        e.contains("[http] listen \"example.com:80\" is not an address"),
        "{e}"
    );
    let e = err(toml(HPB_TOML, &[("HPB_LIMITS_CLIENT_RATE", "0")]));
    assert!(
        e.contains("[limits] client_rate must be greater than 0"),
        "{e}"
    );
    let e = err(toml(HPB_TOML, &[("HPB_TURN_SERVERS", "turn:x:3478")]));
    assert!(
        e.contains("[turn] apikey and [turn] secret are required"),
        "{e}"
    );
    let e = err(toml(HPB_TOML, &[("HPB_BACKEND_BACKENDTYPE", "etcd")]));
    assert!(e.contains("is not supported by hpb"), "{e}");
    let e = err(ini(
        "[sessions]\nhashkey = k\n[backend]\nbackends = a\n[a]\nurls = https://a.example\n",
        &[],
    ));
    assert!(
        e.contains("backend \"a\" has no secret") && e.contains("its [a] section"),
        "{e}"
    );
    let e = err(ini(
        "[sessions]\nhashkey = k\n[backend]\nallowall = true\n",
        &[],
    ));
    assert!(
        e.contains("allowall = true needs the common [backend] secret"),
        "{e}"
    );
    let e = err(load_from(
        None,
        &BTreeMap::new(),
        &[("nope.key".to_string(), "1".to_string())],
    ));
    assert!(e.contains("override `nope.key`"), "{e}");
}

#[test]
fn show_is_stable_and_masks_every_secret() {
    let l = ini(SERVER_CONF, &[("BACKEND1_SECRET", "secret-1")]).expect("loads");
    let a = show(&l);
    assert_eq!(a, show(&l));
    for secret in [
        "secret-1",
        "the-shared-secret-2",
        "the-internal-secret",
        "0123456789abcdef",
        "abcdefghijklmnop",
        "the-api-key",
    ] {
        assert!(!a.contains(secret), "{secret} leaked:\n{a}");
    }
    assert!(a.contains("backends.backend-2.urls = [\"https://Cloud.Other.invalid/nc/\", \"https://cloud.other.invalid:8443\"]"), "{a}");
    assert!(a.contains("# /etc/signaling/server.conf line 42"), "{a}");
    assert!(a.contains("# warning: "), "{a}");
    let http = a.find("http.listen").expect("http");
    let log = a.find("log.level").expect("log");
    let backends = a.find("backends.backend-1").expect("backends");
    assert!(http < log && log < backends, "{a}");
}

#[test]
fn https_with_acme() {
    let base = "[sessions]\nhashkey = \"0123456789abcdef0123456789abcdef\"\n[backends.a]\nurls = [\"https://a.example\"]\nsecret = \"s\"\n";
    let l = toml(
        &format!("{base}[https]\nlisten = \"0.0.0.0:443\"\nacme_domains = [\"HPB.example.com.\", \"hpb.example.com\"]\nacme_email = \"admin@example.com\"\n"),
        &[],
    )
    .expect("loads");
    let Some(h) = &l.https else {
        panic!("no [https]")
    };
    let CertSource::Acme(a) = &h.source else {
        panic!("not ACME: {:?}", h.source)
    };
    assert_eq!(a.domains, ["hpb.example.com"]);
    assert_eq!(a.contact, ["mailto:admin@example.com"]);
    assert_eq!(a.directory, LETS_ENCRYPT);
    assert_eq!(a.cache, Path::new("acme"));
    assert!(a.ca.is_none());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    let e = err(toml(
        &format!(
            "{base}[https]\nlisten = \"0.0.0.0:443\"\nacme_domains = [\"hpb.example.com\"]\ncertificate = \"/c.pem\"\nkey = \"/k.pem\"\n"
        ),
        &[],
    ));
    assert!(e.contains("together with [https] acme_domains"), "{e}");
    let e = err(toml(
        &format!("{base}[https]\nlisten = \"0.0.0.0:443\"\nacme_domains = [\"*.example.com\"]\n"),
        &[],
    ));
    assert!(e.contains("wildcard"), "{e}");
    let e = err(toml(
        &format!(
            "{base}[https]\nlisten = \"0.0.0.0:443\"\nacme_domains = [\"hpb.example.com\"]\nacme_directory = \"http://ca.example/dir\"\n"
        ),
        &[],
    ));
    assert!(e.contains("https:// URL of an ACME directory"), "{e}");
    let e = err(toml(
        &format!("{base}[https]\nlisten = \"0.0.0.0:443\"\n"),
        &[],
    ));
    assert!(e.contains("acme_domains"), "{e}");
    let l = toml(
        &format!(
            "{base}[https]\nlisten = \"0.0.0.0:8443\"\nacme_domains = [\"hpb.example.com\"]\n"
        ),
        &[],
    )
    .expect("loads");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("port 443 must reach this port")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn sfu_transports() {
    let base = "[backend]\nsecret = \"s\"\nallowall = true\n[clients]\ninternalsecret = \"i\"\n[sessions]\nhashkey = \"h\"\n";
    let l = toml(
        &format!(
            "{base}[sfu]\nlisten = \"0.0.0.0:3479\"\nexternal_ip = \"203.0.113.4\"\nlisten_v6 = \"[::]:3479\"\nexternal_ip_v6 = \"2001:db8::4\"\ntcp_listen = \"0.0.0.0:3479\"\n"
        ),
        &[],
    )
    .expect("loads");
    let s = l.sfu.expect("the SFU is on");
    assert_eq!(s.listen_v6, Some("[::]:3479".parse().expect("addr")));
    assert_eq!(s.external_ip_v6, Some("2001:db8::4".parse().expect("ip")));
    assert_eq!(s.tcp_listen, Some("0.0.0.0:3479".parse().expect("addr")));
    assert!(!s.thin_silent_audio, "off unless asked for");
    assert!(!s.opus_dtx, "off unless asked for");
    let l = toml(
        &format!(
            "{base}[sfu]\nlisten = \"0.0.0.0:3479\"\nthin_silent_audio = true\nopus_dtx = true\n"
        ),
        &[],
    )
    .expect("loads");
    let s = l.sfu.expect("the SFU is on");
    assert!(s.thin_silent_audio && s.opus_dtx);
    for key in ["thin_silent_audio", "opus_dtx"] {
        let e = err(toml(
            &format!("{base}[sfu]\nlisten = \"0.0.0.0:3479\"\n{key} = \"sometimes\"\n"),
            &[],
        ));
        assert!(e.contains(key) && e.contains("sometimes"), "{e}");
    }
    let e = err(toml(
        &format!("{base}[sfu]\nlisten = \"0.0.0.0:3479\"\nlisten_v6 = \"0.0.0.0:3480\"\n"),
        &[],
    ));
    assert!(e.contains("listen_v6") && e.contains("IPv4"), "{e}");
    let e = err(toml(
        &format!("{base}[sfu]\nlisten = \"0.0.0.0:3479\"\ntcp_listen = \"nope\"\n"),
        &[],
    ));
    assert!(e.contains("tcp_listen") && e.contains("TCP address"), "{e}");
}

#[test]
fn https_listens_on_443_when_a_certificate_is_given_without_listen() {
    let base = "[backend]\nsecret = \"s\"\nallowall = true\n[clients]\ninternalsecret = \"i\"\n[sessions]\nhashkey = \"h\"\n";
    let l = toml(
        &format!("{base}[https]\ncertificate = \"/c.pem\"\nkey = \"/k.pem\"\n"),
        &[],
    )
    .expect("loads");
    let h = l.https.expect("TLS is on");
    assert_eq!(h.listen, "0.0.0.0:443".parse().expect("addr"));
    let e = err(toml(
        &format!("{base}[https]\ncertificate = \"/c.pem\"\n"),
        &[],
    ));
    assert!(e.contains("[https] key"), "{e}");
    let l = toml(
        &format!("{base}[https]\nacme_domains = [\"hpb.example.com\"]\n"),
        &[],
    )
    .expect("loads");
    assert_eq!(
        l.https.expect("TLS is on").listen,
        "0.0.0.0:443".parse().expect("addr")
    );
    let l = toml(base, &[]).expect("loads");
    assert!(l.https.is_none(), "no TLS without any [https] setting");
}
