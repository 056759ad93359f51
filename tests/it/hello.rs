//! End-to-end: hello v1 (tickets), v2 (JWT with every key type), internal clients and every hello refusal.

use std::time::Duration;

use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, Hpb, INTERNAL_SECRET, RawReply, TestClient, TokenAlg,
    TokenOpts, error_code, free_config, free_config_multi, hmac_sha256_hex, random_string,
};
use serde_json::{Value, json};

/// Asserts `frame` is an error with `code` that echoes `id` and whose message mentions
/// every string of `mentions` (case-insensitive).
fn assert_error(frame: &Value, id: &str, code: &str, mentions: &[&str]) {
    assert_eq!(frame["type"], "error", "not an error frame: {frame}");
    assert_eq!(error_code(frame), code, "unexpected error code: {frame}");
    assert_eq!(
        frame["id"], id,
        "the error does not echo the request id: {frame}"
    );
    let message = frame["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error without a message: {frame}"))
        .to_lowercase();
    for m in mentions {
        assert!(
            message.contains(&m.to_lowercase()),
            "the error message should mention {m:?}: {frame}"
        );
    }
}

/// The string items of a JSON array (panics if it is not one).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("not a string: {x}"))
                .to_string()
        })
        .collect()
}

fn assert_sorted(features: &[String], what: &str) {
    let mut sorted = features.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        features, sorted,
        "{what} features are not sorted and unique"
    );
}

/// A successful hello reply of the right shape: echoes `id`, version, both ids, userid
/// always present, server version and features.
fn assert_hello_reply(frame: &Value, id: &str, version: &str, userid: &str) {
    assert_eq!(frame["type"], "hello", "{frame}");
    assert_eq!(frame["id"], id, "hello reply must echo the id: {frame}");
    let h = &frame["hello"];
    assert_eq!(h["version"], version, "{frame}");
    assert!(
        h["sessionid"].as_str().is_some_and(|s| !s.is_empty()),
        "{frame}"
    );
    assert!(
        h["resumeid"].as_str().is_some_and(|s| !s.is_empty()),
        "{frame}"
    );
    assert_ne!(h["sessionid"], h["resumeid"], "{frame}");
    assert_eq!(
        h["userid"], userid,
        "userid must always be present (empty for guests): {frame}"
    );
    assert!(
        h["server"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "hello reply needs server.version: {frame}"
    );
    let features = strings(&h["server"]["features"]);
    assert_sorted(&features, "hello server");
    assert!(features.iter().any(|f| f == "hello-v2"), "{frame}");
}

#[tokio::test]
async fn welcome_is_the_first_frame_with_sorted_features() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let first = c.recv(DEFAULT_TIMEOUT).await.expect("a first frame");
    assert_eq!(first["type"], "welcome", "first frame: {first}");
    assert!(first.get("id").is_none(), "welcome has no id: {first}");
    let w = &first["welcome"];
    assert!(
        w["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{first}"
    );
    let features = strings(&w["features"]);
    assert_sorted(&features, "welcome");
    // The union of the client and the internal-client lists.
    for f in [
        "audio-video-permissions",
        "hello-v2",
        "incall-all",
        "switchto",
        "federation",
        "welcome",
        "transient-data",
        "virtual-sessions",
    ] {
        assert!(
            features.iter().any(|x| x == f),
            "welcome lacks {f}: {first}"
        );
    }

    // The hello reply's server part matches the welcome version; a client gets the
    // client list (audio-video-permissions, not virtual-sessions).
    let hello = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_hello_reply(&hello.raw, "1", "1.0", "alice");
    let server = &hello.raw["hello"]["server"];
    assert_eq!(server["version"], w["version"], "{}", hello.raw);
    let client_features = strings(&server["features"]);
    assert!(
        client_features
            .iter()
            .any(|f| f == "audio-video-permissions")
    );
    assert!(!client_features.iter().any(|f| f == "virtual-sessions"));
}

#[tokio::test]
async fn hello_v1_user_checks_the_ticket_with_nextcloud() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let hello = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_hello_reply(&hello.raw, "1", "1.0", "alice");
    assert_eq!(hello.userid, "alice");

    let auth = nc.requests_of_type("auth");
    assert_eq!(auth.len(), 1, "one auth request: {auth:?}");
    let req = &auth[0];
    assert!(req.authenticated, "hpb must sign the auth request: {req:?}");
    assert_eq!(
        req.path, "/ocs/v2.php/apps/spreed/api/v3/signaling/backend",
        "signaling-v3 capability → v3 path"
    );
    assert_eq!(req.body["auth"]["version"], "1.0", "{:?}", req.body);
    assert_eq!(
        req.body["auth"]["params"],
        json!({"userid": "alice", "ticket": "alice-ticket"}),
        "params are forwarded verbatim"
    );
    assert_eq!(req.header("ocs-apirequest"), Some("true"));
}

#[tokio::test]
async fn hello_v1_guest_has_an_empty_userid() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let hello = c
        .hello_v1(&nc.backend_url(), None, &nc.guest_ticket())
        .await;
    assert_hello_reply(&hello.raw, "1", "1.0", "");
    let auth = nc.requests_of_type("auth");
    assert_eq!(auth.len(), 1);
    assert!(auth[0].body["auth"]["params"]["userid"].is_null());
    assert_eq!(auth[0].body["auth"]["params"]["ticket"], "guest-ticket");
}

#[tokio::test]
async fn hello_v1_forwards_nextcloud_errors_and_allows_a_retry() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;

    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", "bob-ticket")
        .await
        .expect_err("a wrong ticket is refused");
    assert_error(&err, "1", "invalid_ticket", &["ticket"]);

    let err = c
        .try_hello_v1(&nc.backend_url(), "mallory", "mallory-ticket")
        .await
        .expect_err("an unknown user is refused");
    assert_error(&err, "2", "no_such_user", &["user"]);

    let err = c
        .try_hello_v1(&nc.backend_url(), None, "alice-ticket")
        .await
        .expect_err("a guest with a user's ticket is refused");
    assert_error(&err, "3", "invalid_ticket", &[]);

    // The same socket still accepts a good hello.
    let hello = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_hello_reply(&hello.raw, "4", "1.0", "alice");
}

#[tokio::test]
async fn hello_v1_with_a_wrong_shared_secret_says_which_secret_differs() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    nc.set_secret("a-different-secret-in-talk");
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("Talk cannot verify the request");
    assert_error(&err, "1", "invalid_request", &["secret"]);
}

#[tokio::test]
async fn hello_v1_nextcloud_garbage_is_auth_failed_or_explained() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;

    // A valid OCS envelope whose data is neither `auth` nor `error`.
    let ocs = json!({"ocs": {"meta": {"status": "ok", "statuscode": 200, "message": "OK"},
        "data": {"type": "bogus", "bogus": {}}}});
    nc.set_raw_reply(
        "auth",
        Some(RawReply {
            status: 200,
            content_type: "application/json; charset=utf-8".into(),
            body: ocs.to_string(),
        }),
    );
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("garbage");
    assert_error(&err, "1", "auth_failed", &["bogus"]);

    // A login page instead of JSON: not a Talk answer at all.
    nc.set_raw_reply(
        "auth",
        Some(RawReply {
            status: 200,
            content_type: "text/html; charset=utf-8".into(),
            body: "<html><body>Login</body></html>".into(),
        }),
    );
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("html");
    assert_error(&err, "2", "internal_error", &["text/html", &nc.base_url()]);

    // An HTTP error status.
    nc.set_raw_reply(
        "auth",
        Some(RawReply {
            status: 503,
            content_type: "text/plain".into(),
            body: "maintenance".into(),
        }),
    );
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("503");
    assert_error(&err, "3", "internal_error", &["503"]);

    // JSON content type, but not JSON.
    nc.set_raw_reply(
        "auth",
        Some(RawReply {
            status: 200,
            content_type: "application/json".into(),
            body: "{\"ocs\": tru".into(),
        }),
    );
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("broken JSON");
    assert_error(&err, "4", "internal_error", &[&nc.base_url()]);

    nc.set_raw_reply("auth", None);
    let hello = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_hello_reply(&hello.raw, "5", "1.0", "alice");
}

#[tokio::test]
async fn hello_v1_nextcloud_unreachable_is_internal_error() {
    let nc = FakeNextcloud::start().await;
    let config = free_config(&nc, "");
    let backend_url = nc.backend_url();
    let base = nc.base_url();
    drop(nc); // Nobody listens on its port any more.
    let hpb = Hpb::start(&config).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&backend_url, "alice", "alice-ticket")
        .await
        .expect_err("unreachable");
    assert_error(&err, "1", "internal_error", &["unreachable", &base]);
}

#[tokio::test]
async fn hello_v1_slow_nextcloud_times_out_with_the_setting_named() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "[backend]\ntimeout = 1\n")).await;
    nc.set_delay("auth", Some(Duration::from_secs(4)));
    let mut c = TestClient::connect(hpb.addr()).await;
    c.request_timeout = Duration::from_secs(10);
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("timeout");
    assert_error(&err, "1", "internal_error", &["[backend] timeout"]);
    nc.set_delay("auth", None);
    c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
}

#[tokio::test]
async fn auth_url_may_be_the_full_backend_url_or_the_base_url() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let v1_path = format!(
        "{}ocs/v2.php/apps/spreed/api/v1/signaling/backend",
        nc.base_url()
    );
    let without_slash = nc.base_url().trim_end_matches('/').to_string();
    for (i, url) in [nc.backend_url(), nc.base_url(), without_slash, v1_path]
        .iter()
        .enumerate()
    {
        let mut c = TestClient::connect(hpb.addr()).await;
        let hello = c
            .try_hello_v1(url, "bob", &nc.ticket("bob"))
            .await
            .unwrap_or_else(|e| panic!("auth.url {url} refused: {e}"));
        assert_hello_reply(&hello.raw, "1", "1.0", "bob");
        let auth = nc.requests_of_type("auth");
        assert_eq!(auth.len(), i + 1);
        assert_eq!(
            auth[i].path, "/ocs/v2.php/apps/spreed/api/v3/signaling/backend",
            "auth.url {url} must be reduced to the base URL"
        );
    }
}

#[tokio::test]
async fn unknown_backend_url_is_invalid_backend_naming_url_and_setting() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(
            "https://other.example/ocs/v2.php/apps/spreed/api/v3/signaling/backend",
            "alice",
            "alice-ticket",
        )
        .await
        .expect_err("unknown backend");
    assert_error(
        &err,
        "1",
        "invalid_backend",
        &["https://other.example/", "[backends."],
    );
    // Same host, other port.
    let other_port = format!("http://127.0.0.1:{}/", nc.addr().port().wrapping_add(1));
    let err = c
        .try_hello_v1(&other_port, "alice", "alice-ticket")
        .await
        .expect_err("other port");
    assert_error(&err, "2", "invalid_backend", &[&other_port]);
    assert!(
        nc.requests_of_type("auth").is_empty(),
        "no request for unknown backends"
    );
    // hello v2 and internal hellos check the backend too.
    let token = nc.token(Some("alice"), TokenOpts::default());
    let err = c
        .try_hello_v2("https://other.example/", &token)
        .await
        .expect_err("v2 unknown backend");
    assert_error(&err, "3", "invalid_backend", &["https://other.example/"]);
    let err = c
        .try_hello_internal("https://other.example/", INTERNAL_SECRET)
        .await
        .expect_err("internal unknown backend");
    assert_error(&err, "4", "invalid_backend", &["https://other.example/"]);
    c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
}

/// Sends a hello v2 with `token` that must be refused with `code`; `n` counts the
/// requests sent on `c` so far (for the echoed id).
async fn refuse(
    c: &mut TestClient,
    url: &str,
    n: &mut u64,
    token: String,
    code: &str,
    mentions: &[&str],
) {
    *n += 1;
    let err = c
        .try_hello_v2(url, &token)
        .await
        .expect_err("token must be refused");
    assert_error(&err, &n.to_string(), code, mentions);
}

/// One fake Nextcloud per key type (capabilities are cached per URL).
struct KeyFakes {
    es: FakeNextcloud,
    rs: FakeNextcloud,
    ed: FakeNextcloud,
    ed_raw: FakeNextcloud,
}

async fn key_fakes() -> (KeyFakes, Hpb) {
    let es = FakeNextcloud::start().await;
    let rs = FakeNextcloud::start().await;
    rs.set_token_alg(TokenAlg::Rs256);
    let ed = FakeNextcloud::start().await;
    ed.set_token_alg(TokenAlg::EdDsa);
    let ed_raw = FakeNextcloud::start().await;
    ed_raw.set_token_alg(TokenAlg::EdDsa);
    ed_raw.set_ed25519_raw_key(true);
    let hpb = Hpb::start(&free_config_multi(
        &[("es", &es), ("rs", &rs), ("ed", &ed), ("edraw", &ed_raw)],
        "",
    ))
    .await;
    (KeyFakes { es, rs, ed, ed_raw }, hpb)
}

#[tokio::test]
async fn hello_v2_accepts_es256_rs256_and_eddsa_pem_and_raw_keys() {
    let (f, hpb) = key_fakes().await;
    assert!(
        f.ed_raw
            .served_token_key()
            .is_some_and(|k| !k.starts_with("-----")),
        "the raw fake serves a bare base64 key"
    );
    for (name, nc) in [
        ("ES256", &f.es),
        ("RS256", &f.rs),
        ("EdDSA PEM", &f.ed),
        ("EdDSA raw", &f.ed_raw),
    ] {
        let mut c = TestClient::connect(hpb.addr()).await;
        let token = nc.token(Some("alice"), TokenOpts::default());
        let hello = c
            .try_hello_v2(&nc.backend_url(), &token)
            .await
            .unwrap_or_else(|e| panic!("{name} token refused: {e}"));
        assert_hello_reply(&hello.raw, "1", "2.0", "alice");
        assert!(
            nc.requests_of_type("auth").is_empty(),
            "{name}: hello v2 needs no auth round trip"
        );
        assert!(
            nc.capabilities_fetches() >= 1,
            "{name}: key from capabilities"
        );

        // A guest token (sub "") gives an empty user id.
        let mut g = TestClient::connect(hpb.addr()).await;
        let token = nc.token(None, TokenOpts::default());
        let hello = g
            .try_hello_v2(&nc.backend_url(), &token)
            .await
            .unwrap_or_else(|e| panic!("{name} guest token refused: {e}"));
        assert_hello_reply(&hello.raw, "1", "2.0", "");

        // Signed with another key of the same type.
        let mut w = TestClient::connect(hpb.addr()).await;
        let wrong = nc.token(
            Some("alice"),
            TokenOpts {
                wrong_key: true,
                ..Default::default()
            },
        );
        let err = w
            .try_hello_v2(&nc.backend_url(), &wrong)
            .await
            .expect_err("a token signed by another key");
        assert_error(&err, "1", "invalid_token", &["signature"]);
    }
}

#[tokio::test]
async fn hello_v2_refusals_have_the_upstream_codes() {
    // The fake publishes an ES256 key.
    let nc = &FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(nc, "")).await;
    let url = nc.backend_url();
    let mut c = TestClient::connect(hpb.addr()).await;
    let mut n = 0u64;
    for alg in [TokenAlg::Es256, TokenAlg::Rs256, TokenAlg::EdDsa] {
        // A token of another algorithm than the published key, or signed by a wrong key.
        let wrong = nc.token(
            Some("alice"),
            TokenOpts {
                alg: Some(alg),
                wrong_key: true,
                ..Default::default()
            },
        );
        refuse(&mut c, &url, &mut n, wrong, "invalid_token", &[]).await;
    }
    let wrong = nc.token(
        Some("alice"),
        TokenOpts {
            wrong_key: true,
            ..Default::default()
        },
    );
    refuse(&mut c, &url, &mut n, wrong, "invalid_token", &["signature"]).await;
    let expired = nc.token(
        Some("alice"),
        TokenOpts {
            iat_offset_secs: -300,
            exp_offset_secs: -120,
            ..Default::default()
        },
    );
    refuse(&mut c, &url, &mut n, expired, "token_expired", &["expired"]).await;
    let future = nc.token(
        Some("alice"),
        TokenOpts {
            iat_offset_secs: 120,
            exp_offset_secs: 180,
            ..Default::default()
        },
    );
    refuse(
        &mut c,
        &url,
        &mut n,
        future,
        "token_not_valid_yet",
        &["clock"],
    )
    .await;
    let no_exp = nc.token(
        Some("alice"),
        TokenOpts {
            omit_exp: true,
            ..Default::default()
        },
    );
    refuse(&mut c, &url, &mut n, no_exp, "token_expired", &["exp"]).await;
    let no_iat = nc.token(
        Some("alice"),
        TokenOpts {
            omit_iat: true,
            ..Default::default()
        },
    );
    refuse(
        &mut c,
        &url,
        &mut n,
        no_iat,
        "token_not_valid_yet",
        &["iat"],
    )
    .await;
    let exp_before_iat = nc.token(
        Some("alice"),
        TokenOpts {
            iat_offset_secs: 30,
            exp_offset_secs: 10,
            ..Default::default()
        },
    );
    refuse(&mut c, &url, &mut n, exp_before_iat, "token_expired", &[]).await;
    refuse(
        &mut c,
        &url,
        &mut n,
        "not-a-jwt".into(),
        "invalid_token",
        &["jwt"],
    )
    .await;
    refuse(
        &mut c,
        &url,
        &mut n,
        String::new(),
        "invalid_format",
        &["auth.params.token"],
    )
    .await;
    // Params without a token at all are malformed too (upstream's validation).
    n += 1;
    let r = c
        .hello_raw(
            json!({"version": "2.0", "auth": {"type": "client", "url": url,
            "params": {"userid": "alice", "ticket": "alice-ticket"}}}),
        )
        .await;
    assert_error(&r, &n.to_string(), "invalid_format", &["token"]);

    // iat 30 s in the future is within the one-minute leeway.
    let skewed = nc.token(
        Some("alice"),
        TokenOpts {
            iat_offset_secs: 30,
            exp_offset_secs: 90,
            ..Default::default()
        },
    );
    let hello = c
        .try_hello_v2(&url, &skewed)
        .await
        .unwrap_or_else(|e| panic!("a token within the leeway must be accepted: {e}"));
    assert_hello_reply(&hello.raw, &(n + 1).to_string(), "2.0", "alice");
}

#[tokio::test]
async fn hello_v2_expired_within_leeway_is_accepted() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let token = nc.token(
        Some("carol"),
        TokenOpts {
            iat_offset_secs: -80,
            exp_offset_secs: -20,
            ..Default::default()
        },
    );
    let hello = c
        .try_hello_v2(&nc.backend_url(), &token)
        .await
        .unwrap_or_else(|e| panic!("exp 20 s ago is within the leeway: {e}"));
    assert_hello_reply(&hello.raw, "1", "2.0", "carol");
}

#[tokio::test]
async fn hello_v2_without_a_published_key_is_invalid_token() {
    let nc = FakeNextcloud::start().await;
    nc.configure(|c| c.omit_token_key = true);
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let token = nc.token(Some("alice"), TokenOpts::default());
    let err = c
        .try_hello_v2(&nc.backend_url(), &token)
        .await
        .expect_err("no key");
    assert_error(&err, "1", "invalid_token", &["hello-v2-token-key"]);
    // hello v1 still works against the same Nextcloud.
    c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
}

#[tokio::test]
async fn hello_validation_errors() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let url = nc.backend_url();

    let r = c
        .hello_raw(json!({"version": "3.0", "auth": {"url": url, "params": {"userid": "alice", "ticket": "alice-ticket"}}}))
        .await;
    assert_error(&r, "1", "invalid_hello_version", &["3.0", "1.0", "2.0"]);
    // Checked for resume too.
    let r = c
        .hello_raw(json!({"version": "1.1", "resumeid": "whatever"}))
        .await;
    assert_error(&r, "2", "invalid_hello_version", &["1.1"]);
    let r = c
        .hello_raw(
            json!({"version": "1.0", "auth": {"type": "bogus", "url": url, "params": {"x": 1}}}),
        )
        .await;
    assert_error(
        &r,
        "3",
        "invalid_format",
        &["unsupported auth type", "bogus"],
    );
    let r = c
        .hello_raw(json!({"version": "1.0", "auth": {"url": url}}))
        .await;
    assert_error(&r, "4", "invalid_format", &["params"]);
    let r = c
        .hello_raw(json!({"version": "1.0", "auth": {"url": url, "params": {}}}))
        .await;
    assert_error(&r, "5", "invalid_format", &["params"]);
    let r = c.hello_raw(json!({"version": "1.0"})).await;
    assert_error(&r, "6", "invalid_format", &["auth"]);
    let r = c
        .hello_raw(json!({"version": "1.0", "auth": {"params": {"userid": "alice", "ticket": "alice-ticket"}}}))
        .await;
    assert_error(&r, "7", "invalid_format", &["auth.url"]);
    let r = c
        .hello_raw(
            json!({"version": "1.0", "auth": {"url": "not a url", "params": {"ticket": "x"}}}),
        )
        .await;
    assert_error(&r, "8", "invalid_format", &["auth.url"]);
    let r = c.request(json!({"type": "hello"})).await;
    assert_error(&r, "9", "invalid_format", &["hello"]);
    assert!(nc.requests_of_type("auth").is_empty());

    // After all that, the socket still takes a good hello.
    let hello = c.hello_v1(&url, "alice", &nc.ticket("alice")).await;
    assert_hello_reply(&hello.raw, "10", "1.0", "alice");
}

#[tokio::test]
async fn messages_before_hello_are_hello_expected() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let r = c
        .request(json!({"type": "room", "room": {"roomid": "room1", "sessionid": "s1"}}))
        .await;
    assert_error(&r, "1", "hello_expected", &["hello"]);
    let r = c
        .request(json!({"type": "message", "message": {"recipient": {"type": "room"}, "data": {"x": 1}}}))
        .await;
    assert_error(&r, "2", "hello_expected", &[]);
    let r = c.request(json!({"type": "bye", "bye": {}})).await;
    assert_error(&r, "3", "hello_expected", &[]);
    assert!(
        nc.requests_of_type("room").is_empty(),
        "no room request before hello"
    );
    let hello = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_hello_reply(&hello.raw, "4", "1.0", "alice");
    c.join("room1", "s1").await;
}

#[tokio::test]
async fn json_garbage_and_binary_frames_are_invalid_format_and_keep_the_connection() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    c.wait_welcome(DEFAULT_TIMEOUT).await.expect("welcome");

    c.send_text("{this is not json").await;
    let e = c.expect_error("invalid_format").await;
    assert!(e.get("id").is_none(), "no id to echo: {e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("JSON")),
        "{e}"
    );

    c.send_text("[1,2,3]").await;
    c.expect_error("invalid_format").await;

    c.send(json!({"id": "x1", "hello": {}})).await;
    let e = c.expect_error("invalid_format").await;
    assert_eq!(e["id"], "x1", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("type")),
        "{e}"
    );

    c.send_binary(b"\x01\x02binary").await;
    let e = c.expect_error("invalid_format").await;
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("binary")),
        "{e}"
    );

    let hello = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_hello_reply(&hello.raw, "1", "1.0", "alice");

    // After hello too.
    c.send_binary(b"more").await;
    c.expect_error("invalid_format").await;
    c.send_text("nope").await;
    c.expect_error("invalid_format").await;
    // Unknown types after hello are ignored; the connection still works both ways.
    c.send(json!({"id": "u1", "type": "nonsense", "nonsense": {}}))
        .await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    let b = bob
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.message_session(&hello.sessionid, json!({"ping": 1}))
        .await;
    let m = c.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(m["message"]["data"], json!({"ping": 1}));
    c.message_session(&b.sessionid, json!({"pong": 1})).await;
    let m = bob.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(m["message"]["data"], json!({"pong": 1}));
}

#[tokio::test]
async fn internal_hello_good_bad_and_short_random() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;

    let mut good = TestClient::connect(hpb.addr()).await;
    let hello = good.hello_internal(&nc.base_url(), INTERNAL_SECRET).await;
    assert_hello_reply(&hello.raw, "1", "1.0", "");
    let features = strings(&hello.raw["hello"]["server"]["features"]);
    assert!(
        features.iter().any(|f| f == "virtual-sessions"),
        "internal clients get the internal feature list: {}",
        hello.raw
    );
    assert!(!features.iter().any(|f| f == "audio-video-permissions"));
    assert!(
        nc.requests_of_type("auth").is_empty(),
        "internal hello needs no Nextcloud round trip"
    );

    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_internal(&nc.base_url(), "not-the-secret")
        .await
        .expect_err("wrong secret");
    assert_error(&err, "1", "invalid_token", &["internalsecret"]);

    let random = random_string(16);
    let token = hmac_sha256_hex(INTERNAL_SECRET.as_bytes(), random.as_bytes());
    let err = c
        .hello_raw(json!({"version": "1.0", "auth": {"type": "internal",
            "params": {"random": random, "token": token, "backend": nc.base_url()}}}))
        .await;
    assert_error(&err, "2", "invalid_token", &["32"]);

    let err = c
        .hello_raw(json!({"version": "1.0", "auth": {"type": "internal",
            "params": {"random": random_string(40), "token": "x"}}}))
        .await;
    assert_error(&err, "3", "invalid_format", &["backend"]);

    // The full backend URL works as internal `backend` too.
    let hello = c.hello_internal(&nc.backend_url(), INTERNAL_SECRET).await;
    assert_hello_reply(&hello.raw, "4", "1.0", "");
}

#[tokio::test]
async fn internal_hello_without_an_internal_secret_is_invalid_client_type() {
    let nc = FakeNextcloud::start().await;
    // Without the key at all…
    let base = free_config(&nc, "");
    let without: String = base
        .lines()
        .filter(|l| !l.trim_start().starts_with("internalsecret"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!without.contains("internalsecret"), "{without}");
    // …and with an empty one: both disable internal clients.
    let empty = free_config(&nc, "[clients]\ninternalsecret = \"\"\n");
    for config in [without, empty] {
        let hpb = Hpb::start(&config).await;
        let mut c = TestClient::connect(hpb.addr()).await;
        let err = c
            .try_hello_internal(&nc.base_url(), INTERNAL_SECRET)
            .await
            .expect_err("internal clients are disabled");
        assert_error(
            &err,
            "1",
            "invalid_client_type",
            &["[clients] internalsecret"],
        );
        // An empty secret must not turn into "HMAC with an empty key".
        let err = c
            .try_hello_internal(&nc.base_url(), "")
            .await
            .expect_err("empty secret");
        assert_error(&err, "2", "invalid_client_type", &[]);
        c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
            .await;
    }
}

#[tokio::test]
async fn a_second_hello_after_success_is_ignored() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let first = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    let auth_before = nc.requests_of_type("auth").len();

    // Another hello (even for another user, or broken) gets no reply at all.
    let second = c
        .send_with_id(json!({"type": "hello", "hello": {"version": "1.0",
            "auth": {"url": nc.backend_url(), "params": {"userid": "bob", "ticket": "bob-ticket"}}}}))
        .await;
    let third = c
        .send_with_id(json!({"type": "hello", "hello": {"version": "1.0", "resumeid": "garbage"}}))
        .await;
    // A marker: bob gets a message sent after the hellos, so they were processed; alice
    // gets bob's answer after whatever replies the hellos caused.
    let mut bob = TestClient::connect(hpb.addr()).await;
    let b = bob
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    c.message_session(&b.sessionid, json!({"marker": true}))
        .await;
    let got = bob.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(
        got["message"]["sender"]["sessionid"],
        first.sessionid.as_str()
    );
    assert_eq!(
        got["message"]["sender"]["userid"], "alice",
        "still alice: {got}"
    );
    bob.message_session(&first.sessionid, json!({"marker": true}))
        .await;
    let frames = {
        let mut frames = Vec::new();
        loop {
            let f = c
                .recv(DEFAULT_TIMEOUT)
                .await
                .expect("the marker message arrives");
            if f["type"] == "message" && f["message"]["data"]["marker"] == true {
                break;
            }
            frames.push(f);
        }
        frames
    };
    assert!(
        frames
            .iter()
            .all(|f| f["id"] != second.as_str() && f["id"] != third.as_str()),
        "a hello on an authenticated connection is ignored: {frames:?}"
    );
    assert_eq!(
        nc.requests_of_type("auth").len(),
        auth_before + 1,
        "only bob's hello reached Nextcloud"
    );
}

#[tokio::test]
async fn hello_v2_userdata_becomes_the_session_user_and_guests_may_omit_sub() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;

    let mut alice = TestClient::connect(hpb.addr()).await;
    let token = nc.token(
        Some("alice"),
        TokenOpts {
            displayname: Some("Alice from the JWT".into()),
            ..Default::default()
        },
    );
    let a = alice.hello_v2(&nc.backend_url(), &token).await;
    alice.join("room1", "alice-room-session").await;

    // Talk leaves `sub` out for guests.
    let mut guest = TestClient::connect(hpb.addr()).await;
    let token = nc.token(
        None,
        TokenOpts {
            omit_sub: true,
            ..Default::default()
        },
    );
    let g = guest.hello_v2(&nc.backend_url(), &token).await;
    assert_hello_reply(&g.raw, "1", "2.0", "");
    let joined = guest.join("room1", "guest-room-session").await;
    assert_eq!(joined["id"], "2");

    let join = guest
        .wait_for(
            |f| {
                f["event"]["type"] == "join"
                    && f["event"]["join"]
                        .as_array()
                        .is_some_and(|j| j.iter().any(|e| e["sessionid"] == a.sessionid.as_str()))
            },
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("the guest sees alice in the room");
    let entry = join["event"]["join"]
        .as_array()
        .and_then(|j| j.iter().find(|e| e["sessionid"] == a.sessionid.as_str()))
        .cloned()
        .expect("alice's entry");
    assert_eq!(entry["userid"], "alice", "{entry}");
    assert_eq!(
        entry["user"]["displayname"], "Alice from the JWT",
        "the JWT's userdata is the session's user: {entry}"
    );
}

/// base64url without padding (JWT segments).
fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn b64url_matches_known_vectors() {
    assert_eq!(b64url(b"f"), "Zg");
    assert_eq!(b64url(b"fo"), "Zm8");
    assert_eq!(b64url(b"foo"), "Zm9v");
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

#[tokio::test]
async fn hello_v2_refuses_symmetric_and_unsigned_tokens() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let key = nc.served_token_key().expect("the fake publishes a key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = b64url(
        json!({"iss": nc.base_url(), "iat": now, "exp": now + 60, "sub": "alice",
            "userdata": {"displayname": "Mallory"}})
        .to_string()
        .as_bytes(),
    );
    // The classic key confusion: HS256 with the public key as the HMAC secret.
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing_input = format!("{header}.{claims}");
    let mac = hex_to_bytes(&hmac_sha256_hex(key.as_bytes(), signing_input.as_bytes()));
    let hs256 = format!("{signing_input}.{}", b64url(&mac));
    // And no signature at all.
    let none = format!("{}.{claims}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));

    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v2(&nc.backend_url(), &hs256)
        .await
        .expect_err("HS256 must be refused");
    assert_error(&err, "1", "invalid_token", &["HS256"]);
    let err = c
        .try_hello_v2(&nc.backend_url(), &none)
        .await
        .expect_err("alg none must be refused");
    assert_error(&err, "2", "invalid_token", &[]);
}
