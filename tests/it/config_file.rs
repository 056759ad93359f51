//! End-to-end: the binary's configuration: upstream server.conf as admins write it, hpb.toml, env layers, config show, sandbox mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, Hpb, RunOutput, TestClient, free_config, random_string,
};
use serde_json::json;

use crate::http_endpoints::signed_room_post;

const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// A temporary directory for configuration files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let p = std::env::temp_dir().join(format!("hpb-config-test-{}", random_string(10)));
        std::fs::create_dir_all(&p).expect("create a temp dir");
        Dir(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write a config file");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// `hpb [--config path] config show` with `env`; asserts success.
async fn config_show(config: Option<&Path>, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut args: Vec<&str> = Vec::new();
    if let Some(p) = config {
        args.extend(["--config", path_str(p)]);
    }
    args.extend_from_slice(extra);
    args.extend(["config", "show"]);
    let out = Hpb::run(&args, env, RUN_TIMEOUT).await;
    assert!(out.success, "hpb {args:?} failed: {out:?}");
    out.stdout
}

/// The line of `config show` for `key` (`section.key`).
fn show_line<'a>(show: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    show.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{show}"))
}

/// Splits a `config show` line into value and source.
fn value_and_source(line: &str) -> (String, String) {
    let (left, source) = line
        .rsplit_once("# ")
        .unwrap_or_else(|| panic!("line without a source: {line}"));
    let value = left
        .split_once(" = ")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (value, source.trim().to_string())
}

async fn hello_and_join(hpb: &Hpb, nc: &FakeNextcloud, user: &str, room: &str) -> TestClient {
    let mut c = TestClient::connect(hpb.addr()).await;
    let h = c.hello_v1(&nc.backend_url(), user, &nc.ticket(user)).await;
    assert_eq!(h.userid, user);
    c.join(room, format!("{user}-talk").as_str()).await;
    c
}

// ----- upstream server.conf -----

#[tokio::test]
async fn upstream_server_conf_is_read_unchanged_and_used() {
    let nc1 = FakeNextcloud::start().await;
    let nc2 = FakeNextcloud::start().await;
    nc1.add_public_room("room1");
    nc2.add_public_room("room1");
    let dir = Dir::new();
    let conf = format!(
        r#"# Configuration of the standalone signaling server, as shipped in server.conf.in
[http]
# IP and port to listen on for HTTP requests.
listen = 127.0.0.1:0
readtimeout = 15
writetimeout = 30

[app]
# Set to "true" to install pprof debug handlers.
debug = false

[sessions]
; Secret value used to generate checksums of sessions. This should be a random
; string of 32 or 64 bytes.
hashkey = $(SESSION_HASHKEY)
blockkey = 0123456789abcdef  ; 16 bytes

[clients]
internalsecret = the-internal-secret

[backend]
# Comma-separated list of backend ids allowed to connect.
backends = nc-one, nc-two
timeout = 10
connectionsperhost = 8

[nc-one]
# URL of the Nextcloud instance (deprecated single-URL form)
url = {url1}
secret = $(NC1_SECRET)

[nc-two]
urls = {url2}, https://unused.example.com/
secret = {secret2}  # trailing comment
sessionlimit = 10

[nats]
url = nats://127.0.0.1:4222

[mcu]
type = janus
url = ws://127.0.0.1:8188
maxstreambitrate = 1048576
maxscreenbitrate = 2097152

[stats]
# Leave empty (or commented) to only allow access from "127.0.0.1".
allowed_ips =

[turn]
apikey = the-turn-api-key
secret = the-turn-secret
servers = turn:127.0.0.1:3478?transport=udp,turn:127.0.0.1:3478?transport=tcp
"#,
        url1 = nc1.base_url(),
        url2 = nc2.base_url(),
        secret2 = nc2.secret(),
    );
    let path = dir.write("server.conf", &conf);
    let hashkey = random_string(32);
    let nc1_secret = nc1.secret();
    let env = [
        ("SESSION_HASHKEY", hashkey.as_str()),
        ("NC1_SECRET", nc1_secret.as_str()),
    ];
    let hpb = Hpb::start_with_file(&path, &env).await;

    // Upstream settings hpb does not implement are named in a warning, with the line.
    for needle in ["[nats] url", "[mcu] type, url", "server.conf line"] {
        assert!(
            hpb.wait_for_log(needle, DEFAULT_TIMEOUT).await,
            "no warning naming {needle:?}:\n{}",
            hpb.logs()
        );
    }

    // Both backends work, each with its own secret ($(NC1_SECRET) substituted).
    let _a1 = hello_and_join(&hpb, &nc1, "alice", "room1").await;
    let _a2 = hello_and_join(&hpb, &nc2, "alice", "room1").await;
    // The internal secret, the TURN settings and the room API are read too.
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc2.backend_url(), "the-internal-secret")
        .await;
    let r = crate::http_endpoints::http_get(
        hpb.addr(),
        "/turn/credentials?service=turn&key=the-turn-api-key",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["uris"].as_array().map(Vec::len), Some(2), "{r:?}");
    let r = crate::http_endpoints::http_get(hpb.addr(), "/api/v1/stats", &[]).await;
    assert_eq!(r.status, 200, "an empty allowed_ips means loopback: {r:?}");
    for nc in [&nc1, &nc2] {
        let (status, _, body) = nc
            .post_room(
                &hpb.http_url(),
                "room1",
                json!({"type": "message", "message": {"data": {"type": "x"}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // config show names each value's line.
    let show = config_show(Some(&path), &[], &env).await;
    let (value, source) = value_and_source(show_line(&show, "http.listen"));
    assert_eq!(value, "\"127.0.0.1:0\"");
    assert!(source.ends_with("server.conf line 4"), "{source}");
    let url_line = conf
        .lines()
        .position(|l| l.starts_with("url = "))
        .expect("the url line")
        + 1;
    let (_, source) = value_and_source(show_line(&show, "backends.nc-one.url"));
    assert!(
        source.ends_with(&format!("server.conf line {url_line}")),
        "{source}"
    );
    let (value, _) = value_and_source(show_line(&show, "backends.nc-two.urls"));
    assert!(value.contains(&nc2.base_url()), "{value}");
    assert!(value.contains("https://unused.example.com/"), "{value}");
    let (value, _) = value_and_source(show_line(&show, "backends.nc-two.sessionlimit"));
    assert_eq!(value, "10");
    for secret in [hashkey.as_str(), nc1_secret.as_str(), &nc2.secret()] {
        assert!(!show.contains(secret), "a secret is shown:\n{show}");
    }
    assert!(show.contains("hpb ignores [nats] url"), "{show}");
}

#[tokio::test]
async fn server_conf_common_secret_and_allowall() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let dir = Dir::new();
    let conf = format!(
        "[http]\nlisten = 127.0.0.1:0\n[sessions]\nhashkey = {}\n[backend]\nallowall = true\nallowhttp = yes\nsecret = {}\n",
        random_string(32),
        nc.secret()
    );
    let path = dir.write("server.conf", &conf);
    let hpb = Hpb::start_with_file(&path, &[]).await;
    let _alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
}

#[tokio::test]
async fn an_unset_variable_in_server_conf_is_warned_about_and_kept_as_text() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let dir = Dir::new();
    let conf = format!(
        "[http]\nlisten = 127.0.0.1:0\n[sessions]\nhashkey = {}\n[backend]\nbackends = nc\n[nc]\nurls = {}\nsecret = $(HPB_E2E_UNSET_SECRET)\n",
        random_string(32),
        nc.base_url()
    );
    let path = dir.write("server.conf", &conf);
    let hpb = Hpb::start_with_file(&path, &[]).await;
    assert!(
        hpb.wait_for_log("$(HPB_E2E_UNSET_SECRET) is not set", DEFAULT_TIMEOUT)
            .await,
        "{}",
        hpb.logs()
    );
    assert!(hpb.logs().contains("server.conf line 9"), "{}", hpb.logs());
    // Like upstream, the value is the variable's name.
    let body = json!({"type": "message", "message": {"data": {}}}).to_string();
    let r = signed_room_post(
        hpb.addr(),
        "room1",
        "HPB_E2E_UNSET_SECRET",
        Some(&nc.base_url()),
        &body,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

// ----- hpb.toml, environment and flags -----

#[tokio::test]
async fn hpb_toml_config_show_masks_secrets_and_names_sources() {
    let nc = FakeNextcloud::start().await;
    let cfg = free_config(
        &nc,
        "[turn]\napikey = \"turn-api-key-value\"\nsecret = \"turn-secret-value\"\nservers = [\"turn:t.example.com:3478\"]\n",
    );
    let hpb = Hpb::start(&cfg).await;
    let path = hpb.config_path().expect("config path").to_path_buf();
    let show = config_show(Some(&path), &[], &[]).await;
    let file = path_str(&path);
    for key in [
        "http.listen",
        "sessions.hashkey",
        "clients.internalsecret",
        "turn.apikey",
        "turn.secret",
        "backends.nc1.secret",
        "backends.nc1.urls",
    ] {
        let (_, source) = value_and_source(show_line(&show, key));
        assert!(source.starts_with(file), "{key} from {source}");
    }
    let (value, source) = value_and_source(show_line(&show, "backend.timeout"));
    assert_eq!((value.as_str(), source.as_str()), ("10", "default"));
    // Every value says where it came from.
    for l in show.lines().filter(|l| !l.starts_with('#')) {
        let (_, source) = value_and_source(l);
        assert!(!source.is_empty(), "{l}");
    }
    for secret in [
        nc.secret().as_str(),
        "turn-api-key-value",
        "turn-secret-value",
        hpb_test_support::INTERNAL_SECRET,
    ] {
        assert!(!show.contains(secret), "secret {secret} shown:\n{show}");
    }
    let (value, _) = value_and_source(show_line(&show, "backends.nc1.secret"));
    assert!(value.contains("****"), "{value}");
    // The file is really used.
    nc.add_public_room("room1");
    let _alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
}

#[tokio::test]
async fn hpb_env_overrides_the_file() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let dir = Dir::new();
    // The file has a wrong secret and a long hello timeout.
    let cfg = free_config(
        &nc,
        "[backends.nc1]\nsecret = \"stale-secret\"\n[limits]\nhello_timeout_ms = 30000\n",
    );
    let path = dir.write("hpb.toml", &cfg);
    let secret = nc.secret();
    let env = [
        ("HPB_BACKENDS__NC1__SECRET", secret.as_str()),
        ("HPB_LIMITS_HELLO_TIMEOUT_MS", "1500"),
    ];
    let show = config_show(Some(&path), &[], &env).await;
    let (_, source) = value_and_source(show_line(&show, "backends.nc1.secret"));
    assert_eq!(source, "env HPB_BACKENDS__NC1__SECRET");
    // A mistyped variable is named, with what the section accepts.
    let typo = config_show(Some(&path), &[], &[("HPB_HTTP_LISTNE", "127.0.0.1:0")]).await;
    assert!(
        typo.lines().any(|l| l.starts_with("# warning:")
            && l.contains("HPB_HTTP_LISTNE")
            && l.contains("listen")),
        "{typo}"
    );
    let (value, source) = value_and_source(show_line(&show, "limits.hello_timeout_ms"));
    assert_eq!(
        (value.as_str(), source.as_str()),
        ("1500", "env HPB_LIMITS_HELLO_TIMEOUT_MS")
    );

    let hpb = Hpb::start_with_file(&path, &env).await;
    let _alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
    // The environment's hello timeout is used: a silent client is sent away.
    let mut silent = TestClient::connect(hpb.addr()).await;
    let close = silent
        .recv_close(Duration::from_secs(10))
        .await
        .expect("closed after the hello timeout");
    assert_eq!(
        close.bye.as_ref().map(|b| b["bye"]["reason"].clone()),
        Some(json!("hello_timeout")),
        "{close:?}"
    );
}

#[tokio::test]
async fn aio_environment_names_are_mapped() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let secret = nc.secret();
    let domain = nc.base_url();
    let env = [
        ("NC_DOMAIN", domain.as_str()),
        ("SIGNALING_SECRET", secret.as_str()),
        ("INTERNAL_SECRET", "aio-internal-secret"),
        ("SKIP_CERT_VERIFY", "true"),
        ("TALK_MAX_STREAM_BITRATE", "500000"),
        ("TALK_MAX_SCREEN_BITRATE", "700000"),
        ("AIO_LOG_LEVEL", "warn"),
    ];
    let show = config_show(None, &[], &env).await;
    let expect = [
        ("backends.backend-1.urls", "env NC_DOMAIN (AIO)"),
        ("backends.backend-1.secret", "env SIGNALING_SECRET (AIO)"),
        ("clients.internalsecret", "env INTERNAL_SECRET (AIO)"),
        ("backend.skipverify", "env SKIP_CERT_VERIFY (AIO)"),
        ("mcu.maxstreambitrate", "env TALK_MAX_STREAM_BITRATE (AIO)"),
        ("mcu.maxscreenbitrate", "env TALK_MAX_SCREEN_BITRATE (AIO)"),
        ("log.level", "env AIO_LOG_LEVEL (AIO)"),
    ];
    for (key, source) in expect {
        let (_, s) = value_and_source(show_line(&show, key));
        assert_eq!(s, source, "{key}:\n{show}");
    }
    assert_eq!(
        value_and_source(show_line(&show, "backend.skipverify")).0,
        "true"
    );
    assert_eq!(
        value_and_source(show_line(&show, "mcu.maxstreambitrate")).0,
        "500000"
    );
    assert_eq!(
        value_and_source(show_line(&show, "log.level")).0,
        "\"warn\""
    );
    // Like the AIO container: all interfaces, port 8081.
    let (value, source) = value_and_source(show_line(&show, "http.listen"));
    assert_eq!(value, "\"[::]:8081\"", "{source}");
    assert!(!show.contains("aio-internal-secret"), "{show}");
    assert!(!show.contains(&secret), "{show}");

    // A bare domain becomes https://domain/, as in AIO.
    let bare = config_show(
        None,
        &[],
        &[
            ("NC_DOMAIN", "cloud.example.com"),
            ("SIGNALING_SECRET", "s"),
        ],
    )
    .await;
    let (value, _) = value_and_source(show_line(&bare, "backends.backend-1.urls"));
    assert_eq!(value, "[\"https://cloud.example.com\"]");

    // And it runs with them (on loopback for the test).
    let hpb = Hpb::start_args(&["--listen", "127.0.0.1:0"], &env).await;
    let alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
    drop(alice);
    let mut c = TestClient::connect(hpb.addr()).await;
    c.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    let room = c.join("room1", "bob-talk").await;
    assert_eq!(
        room["room"]["bandwidth"]["maxstreambitrate"], 500_000,
        "TALK_MAX_STREAM_BITRATE limits the stream bitrate: {room}"
    );
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc.backend_url(), "aio-internal-secret")
        .await;
}

#[tokio::test]
async fn command_line_flags_win_over_everything() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let dir = Dir::new();
    let cfg = free_config(
        &nc,
        "[http]\nlisten = \"127.0.0.1:1\"\n[log]\nlevel = \"debug\"\n",
    );
    let path = dir.write("hpb.toml", &cfg);
    let env = [
        ("HPB_HTTP_LISTEN", "127.0.0.1:2"),
        ("AIO_LOG_LEVEL", "info"),
    ];
    let show = config_show(
        Some(&path),
        &["--listen", "127.0.0.1:0", "--log-level", "warn"],
        &env,
    )
    .await;
    assert_eq!(
        value_and_source(show_line(&show, "http.listen")),
        ("\"127.0.0.1:0\"".to_string(), "--listen".to_string())
    );
    assert_eq!(
        value_and_source(show_line(&show, "log.level")),
        ("\"warn\"".to_string(), "--log-level".to_string())
    );
    let hpb = Hpb::start_args(
        &["--config", path_str(&path), "--listen", "127.0.0.1:0"],
        &env,
    )
    .await;
    assert!(![1, 2].contains(&hpb.addr().port()), "{}", hpb.addr());
    let _alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
}

// ----- no configuration at all -----

#[tokio::test]
async fn without_configuration_a_loopback_sandbox_prints_what_to_paste_into_talk() {
    // The defaults: loopback, port 8080, any Nextcloud with a generated secret.
    let show = config_show(None, &[], &[]).await;
    assert_eq!(
        value_and_source(show_line(&show, "http.listen")),
        ("\"127.0.0.1:8080\"".to_string(), "default".to_string())
    );
    let (value, source) = value_and_source(show_line(&show, "backend.allowall"));
    assert_eq!(value, "true");
    assert!(source.contains("sandbox"), "{source}");
    let (_, source) = value_and_source(show_line(&show, "backend.secret"));
    assert_eq!(source, "generated");

    // Port 8080 may be taken on a test machine: the same sandbox on a free port.
    let hpb = Hpb::start_args(&["--listen", "127.0.0.1:0"], &[]).await;
    assert!(hpb.addr().ip().is_loopback(), "{}", hpb.addr());
    let url = hpb.http_url();
    let found = hpb
        .wait_for_log("occ talk:signaling:add", DEFAULT_TIMEOUT)
        .await;
    assert!(found, "{}", hpb.stdout());
    let out = hpb.stdout();
    assert!(
        out.contains(&format!("High-performance backend URL: {url}")),
        "{out}"
    );
    let secret = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Shared secret:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `Shared secret:` line in:\n{out}"))
        .to_string();
    assert!(secret.len() >= 32, "{secret}");
    assert!(
        out.contains(&format!("occ talk:signaling:add {url} {secret}")),
        "{out}"
    );

    // The printed secret really works: for Talk's room requests ...
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let body = json!({"type": "message", "message": {"data": {"type": "x"}}}).to_string();
    let r = signed_room_post(
        hpb.addr(),
        "room1",
        &secret,
        Some(&nc.base_url()),
        &body,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = signed_room_post(
        hpb.addr(),
        "room1",
        "wrong",
        Some(&nc.base_url()),
        &body,
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    // ... and for a Nextcloud that uses it (any URL, also http).
    nc.set_secret(&secret);
    let _alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
    // The generated internal secret is printed too, for a recording server or SIP bridge.
    let internal = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Internal client secret (recording server, SIP bridge):")
        })
        .map(str::trim)
        .unwrap_or_else(|| panic!("no internal secret line in:\n{out}"))
        .to_string();
    assert_ne!(internal, secret, "two different secrets");
    let mut recorder = TestClient::connect(hpb.addr()).await;
    recorder.hello_internal(&nc.backend_url(), &internal).await;
}

/// Binds the fixed default port 8080, so it runs alone (`exclusive_`, see .config/nextest.toml).
#[tokio::test]
async fn exclusive_hpb_without_arguments_serves_on_loopback_8080() {
    let hpb = Hpb::start_args(&[], &[]).await;
    assert_eq!(hpb.addr().to_string(), "127.0.0.1:8080");
    assert!(
        hpb.wait_for_log("Shared secret:", DEFAULT_TIMEOUT).await,
        "{}",
        hpb.stdout()
    );
    assert!(
        hpb.stdout()
            .contains("High-performance backend URL: http://127.0.0.1:8080"),
        "{}",
        hpb.stdout()
    );
    let r = crate::http_endpoints::http_get(hpb.addr(), "/api/v1/welcome", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

// ----- errors -----

fn assert_fails(out: &RunOutput, needles: &[&str]) {
    assert!(
        !out.success && !out.timed_out,
        "must exit non-zero: {out:?}"
    );
    assert_ne!(out.code, Some(0));
    for n in needles {
        assert!(out.stderr.contains(n), "stderr lacks {n:?}: {}", out.stderr);
    }
}

#[tokio::test]
async fn invalid_configuration_names_key_value_and_source() {
    let dir = Dir::new();
    let hashkey = random_string(32);

    let conf = dir.write(
        "server.conf",
        &format!(
            "[sessions]\nhashkey = {hashkey}\n\n[http]\n# where to listen\nlisten = nonsense:x\n"
        ),
    );
    let out = Hpb::run(&["--config", path_str(&conf)], &[], RUN_TIMEOUT).await;
    assert_fails(&out, &["[http] listen", "nonsense:x", "server.conf line 6"]);

    let conf = dir.write(
        "bool.conf",
        &format!("[sessions]\nhashkey = {hashkey}\n[backend]\nsecret = s\nallowall = maybe\n"),
    );
    let out = Hpb::run(&["--config", path_str(&conf)], &[], RUN_TIMEOUT).await;
    assert_fails(&out, &["[backend] allowall", "maybe", "bool.conf line 5"]);

    let toml = dir.write(
        "hpb.toml",
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{hashkey}\"\n[backend]\ntimeout = \"soon\"\n"
        ),
    );
    let out = Hpb::run(&["--config", path_str(&toml)], &[], RUN_TIMEOUT).await;
    assert_fails(&out, &["[backend] timeout", "soon", "hpb.toml line 6"]);

    let toml = dir.write(
        "typo.toml",
        &format!("[sessions]\nhashkey = \"{hashkey}\"\n[http]\nlistne = \"127.0.0.1:0\"\n"),
    );
    let out = Hpb::run(&["--config", path_str(&toml)], &[], RUN_TIMEOUT).await;
    assert_fails(&out, &["listne", "[http]", "typo.toml"]);

    let good = dir.write(
        "good.toml",
        &format!("[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{hashkey}\"\n"),
    );
    let out = Hpb::run(
        &["--config", path_str(&good)],
        &[("HPB_BACKEND_TIMEOUT", "later")],
        RUN_TIMEOUT,
    )
    .await;
    assert_fails(&out, &["[backend] timeout", "later", "HPB_BACKEND_TIMEOUT"]);

    let out = Hpb::run(
        &["--config", path_str(&good), "--listen", "bogus"],
        &[],
        RUN_TIMEOUT,
    )
    .await;
    assert_fails(&out, &["[http] listen", "bogus", "--listen"]);

    let conf = dir.write(
        "nosection.conf",
        &format!("[sessions]\nhashkey = {hashkey}\n[backend]\nbackends = one, two\n[one]\nurls = https://one.example.com/\nsecret = s\n"),
    );
    let out = Hpb::run(&["--config", path_str(&conf)], &[], RUN_TIMEOUT).await;
    assert_fails(&out, &["\"two\"", "[two]", "nosection.conf line 4"]);

    let conf = dir.write(
        "nourls.conf",
        &format!("[sessions]\nhashkey = {hashkey}\n[backend]\nbackends = one\n[one]\nsecret = s\n"),
    );
    let out = Hpb::run(&["--config", path_str(&conf)], &[], RUN_TIMEOUT).await;
    assert_fails(&out, &["\"one\"", "urls", "nourls.conf line 5"]);

    let conf = dir.write(
        "turn.conf",
        &format!("[sessions]\nhashkey = {hashkey}\n[turn]\nservers = turn:t.example.com:3478\n"),
    );
    let out = Hpb::run(&["--config", path_str(&conf)], &[], RUN_TIMEOUT).await;
    assert_fails(
        &out,
        &["[turn] apikey", "[turn] secret", "turn.conf line 4"],
    );

    let out = Hpb::run(
        &["--config", path_str(&dir.0.join("missing.conf"))],
        &[],
        RUN_TIMEOUT,
    )
    .await;
    assert_fails(&out, &["missing.conf"]);
}
