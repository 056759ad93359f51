//! A fake Nextcloud Talk server that answers hpb's backend requests the way Talk's PHP
//! (`SignalingController`) does, serves the capabilities with the hello-v2 public key,
//! mints hello-v2 tokens, records every request, and plays Talk's `BackendNotifier`
//! towards hpb.
//!
//! Defaults: a random shared secret, users `alice`/`Alice`/`alice-ticket`,
//! `bob`/`Bob`/`bob-ticket`, `carol`/`Carol`/`carol-ticket`, guest ticket
//! `guest-ticket`, no rooms, ES256 tokens, features including `signaling-v3` and
//! `federation-v2`, `session-ping-limit` 200 (Talk's default). Everything can be changed
//! while the server runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use reqwest::header::HeaderMap;

use crate::{backend_checksum, ensure_crypto_provider, random_string};

/// Path of Talk's signaling backend endpoint (v3; v1 and v2 are served too).
pub const BACKEND_PATH_V3: &str = "ocs/v2.php/apps/spreed/api/v3/signaling/backend";
/// Path of Nextcloud's capabilities endpoint.
pub const CAPABILITIES_PATH: &str = "ocs/v2.php/cloud/capabilities";

const EC_PRIVATE: &str = include_str!("../keys/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../keys/ec-public.pem");
const EC_WRONG_PRIVATE: &str = include_str!("../keys/ec-wrong-private.pem");
const RSA_PRIVATE: &str = include_str!("../keys/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../keys/rsa-public.pem");
const RSA_WRONG_PRIVATE: &str = include_str!("../keys/rsa-wrong-private.pem");
const ED_PRIVATE: &str = include_str!("../keys/ed25519-private.pem");
const ED_PUBLIC: &str = include_str!("../keys/ed25519-public.pem");
const ED_WRONG_PRIVATE: &str = include_str!("../keys/ed25519-wrong-private.pem");

/// The signature algorithm of hello-v2 tokens (Talk's `signaling_token_alg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenAlg {
    /// ECDSA P-256 (Talk's default).
    #[default]
    Es256,
    /// RSA 2048 PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl TokenAlg {
    /// The jsonwebtoken algorithm.
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            TokenAlg::Es256 => jsonwebtoken::Algorithm::ES256,
            TokenAlg::Rs256 => jsonwebtoken::Algorithm::RS256,
            TokenAlg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// The public key (SPKI PEM) that verifies tokens of this algorithm.
    pub fn public_key_pem(self) -> &'static str {
        match self {
            TokenAlg::Es256 => EC_PUBLIC,
            TokenAlg::Rs256 => RSA_PUBLIC,
            TokenAlg::EdDsa => ED_PUBLIC,
        }
    }

    /// The private key (PKCS#8 PEM) that signs tokens of this algorithm; `wrong` gives a
    /// second key whose signatures the served public key does not verify.
    pub fn private_key_pem(self, wrong: bool) -> &'static str {
        match (self, wrong) {
            (TokenAlg::Es256, false) => EC_PRIVATE,
            (TokenAlg::Es256, true) => EC_WRONG_PRIVATE,
            (TokenAlg::Rs256, false) => RSA_PRIVATE,
            (TokenAlg::Rs256, true) => RSA_WRONG_PRIVATE,
            (TokenAlg::EdDsa, false) => ED_PRIVATE,
            (TokenAlg::EdDsa, true) => ED_WRONG_PRIVATE,
        }
    }

    fn encoding_key(self, wrong: bool) -> jsonwebtoken::EncodingKey {
        let pem = self.private_key_pem(wrong).as_bytes();
        let key = match self {
            TokenAlg::Es256 => jsonwebtoken::EncodingKey::from_ec_pem(pem),
            TokenAlg::Rs256 => jsonwebtoken::EncodingKey::from_rsa_pem(pem),
            TokenAlg::EdDsa => jsonwebtoken::EncodingKey::from_ed_pem(pem),
        };
        key.expect("the fixture private keys under tests/support/keys are valid PKCS#8 PEM")
    }
}

/// The raw Ed25519 public key (32 bytes, standard base64), the form Talk sometimes
/// publishes instead of a PEM.
pub fn ed25519_raw_public_key_base64() -> String {
    let body: String = ED_PUBLIC
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("the Ed25519 fixture public key is valid base64");
    // SPKI of Ed25519: 12 bytes of algorithm header, then the 32-byte key.
    base64::engine::general_purpose::STANDARD.encode(&der[der.len() - 32..])
}

/// Options for [`FakeNextcloud::token`].
#[derive(Clone, Debug)]
pub struct TokenOpts {
    /// Algorithm; `None` = the fake's configured algorithm (whose key the capabilities serve).
    pub alg: Option<TokenAlg>,
    /// Added to "now" for `iat` (negative = in the past).
    pub iat_offset_secs: i64,
    /// Added to "now" for `exp` (default +60, like Talk).
    pub exp_offset_secs: i64,
    /// Leave `iat` out.
    pub omit_iat: bool,
    /// Leave `exp` out.
    pub omit_exp: bool,
    /// Leave `sub` out (Talk does this for guests).
    pub omit_sub: bool,
    /// Sign with a different key of the same algorithm (signature does not verify).
    pub wrong_key: bool,
    /// `iss` instead of the fake's base URL.
    pub issuer: Option<String>,
    /// Display name in `userdata` (default: the configured user's display name; guests get
    /// no `userdata` unless this or `userdata` is set).
    pub displayname: Option<String>,
    /// The whole `userdata` claim (e.g. `{"actorId":..,"actorType":..}` for federation).
    pub userdata: Option<Value>,
}

impl Default for TokenOpts {
    fn default() -> Self {
        TokenOpts {
            alg: None,
            iat_offset_secs: 0,
            exp_offset_secs: 60,
            omit_iat: false,
            omit_exp: false,
            omit_sub: false,
            wrong_key: false,
            issuer: None,
            displayname: None,
            userdata: None,
        }
    }
}

/// A Nextcloud user known to the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub displayname: String,
    /// The v1 signaling ticket the user's client sends in hello `auth.params.ticket`.
    pub ticket: String,
}

/// An error the fake answers instead of a successful room join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedError {
    pub code: String,
    pub message: String,
}

/// A Talk conversation known to the fake.
#[derive(Clone, Debug)]
pub struct Room {
    pub token: String,
    /// `properties` of the join reply.
    pub properties: Value,
    /// Users allowed to join (matched against `userid` or `actorid`); `None` = every user.
    pub allowed_users: Option<Vec<String>>,
    /// Whether sessions without a user id (guests) may join.
    pub guests: bool,
    /// Permissions of everyone without a more specific entry.
    pub permissions: Vec<String>,
    /// Permissions by user id (`""` = guests).
    pub user_permissions: HashMap<String, Vec<String>>,
    /// Permissions by Talk room session id (wins over `user_permissions`).
    pub session_permissions: HashMap<String, Vec<String>>,
    /// The optional `session` object of the join reply (e.g. `{"userid":"assigned"}`).
    pub session: Option<Value>,
    /// Answer joins with this error instead (e.g. `duplicate_session`).
    pub error: Option<ForcedError>,
}

/// Talk's default publishing permissions.
pub fn default_permissions() -> Vec<String> {
    ["publish-audio", "publish-video", "publish-screen"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl Room {
    /// A room everyone may join, guests included.
    pub fn public(token: &str) -> Room {
        Room {
            token: token.to_string(),
            properties: json!({"name": token, "type": 3, "lobby-state": 0, "read-only": 0, "listable": 0, "active-since": null, "sip-enabled": 0}),
            allowed_users: None,
            guests: true,
            permissions: default_permissions(),
            user_permissions: HashMap::new(),
            session_permissions: HashMap::new(),
            session: None,
            error: None,
        }
    }

    /// A room only the listed users may join (no guests).
    pub fn users_only(token: &str, users: &[&str]) -> Room {
        let mut room = Room::public(token);
        room.properties["type"] = json!(2);
        room.allowed_users = Some(users.iter().map(|u| u.to_string()).collect());
        room.guests = false;
        room
    }

    /// Replaces the properties.
    pub fn with_properties(mut self, properties: Value) -> Room {
        self.properties = properties;
        self
    }

    /// Sets the permissions of one user (`""` = guests).
    pub fn with_user_permissions(mut self, user: &str, permissions: &[&str]) -> Room {
        self.user_permissions.insert(
            user.to_string(),
            permissions.iter().map(|p| p.to_string()).collect(),
        );
        self
    }

    /// Sets the permissions of everyone without a more specific entry.
    pub fn with_permissions(mut self, permissions: &[&str]) -> Room {
        self.permissions = permissions.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Adds a `session` object to the join reply.
    pub fn with_session(mut self, session: Value) -> Room {
        self.session = Some(session);
        self
    }

    /// Makes joins fail with this error.
    pub fn with_error(mut self, code: &str, message: &str) -> Room {
        self.error = Some(ForcedError {
            code: code.to_string(),
            message: message.to_string(),
        });
        self
    }
}

/// A canned HTTP reply that replaces the normal answer (for error-path tests).
#[derive(Clone, Debug)]
pub struct RawReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Everything the fake answers with; change it any time with [`FakeNextcloud::configure`].
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The shared secret of the signaling backend API (both directions).
    pub secret: String,
    /// Users by id.
    pub users: HashMap<String, User>,
    /// The ticket guests send (without a user id); empty = guests refused.
    pub guest_ticket: String,
    /// Rooms by token.
    pub rooms: HashMap<String, Room>,
    /// `capabilities.spreed.features`.
    pub features: Vec<String>,
    /// `config.signaling.session-ping-limit`; `None` leaves it out.
    pub session_ping_limit: Option<u64>,
    /// `Cache-Control: max-age=N` on the capabilities; `None` sends no Cache-Control.
    pub max_age: Option<u64>,
    /// ETag of the capabilities; a matching `If-None-Match` is answered 304.
    pub etag: Option<String>,
    /// Algorithm of minted tokens and of the served `hello-v2-token-key`.
    pub token_alg: TokenAlg,
    /// Serve an Ed25519 key as raw base64 (32 bytes) instead of PEM.
    pub ed25519_raw_key: bool,
    /// Leave `hello-v2-token-key` out of the capabilities.
    pub omit_token_key: bool,
    /// Replaces the whole `capabilities.spreed` object when set.
    pub spreed_capabilities: Option<Value>,
    /// Delay before answering, by request type (`auth`, `room`, `ping`, `session`,
    /// `capabilities`; `*` = all).
    pub delays: HashMap<String, Duration>,
    /// Canned replies by request type (same keys as `delays`), sent even when the
    /// checksum is wrong.
    pub raw_replies: HashMap<String, RawReply>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        let users = [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")]
            .into_iter()
            .map(|(id, name)| {
                (
                    id.to_string(),
                    User {
                        id: id.to_string(),
                        displayname: name.to_string(),
                        ticket: format!("{id}-ticket"),
                    },
                )
            })
            .collect();
        FakeConfig {
            secret: format!("nc-secret-{}", random_string(32)),
            users,
            guest_ticket: "guest-ticket".to_string(),
            rooms: HashMap::new(),
            features: [
                "audio",
                "video",
                "chat-v2",
                "conversation-v4",
                "guest-signaling",
                "multi-room-users",
                "in-call-flags",
                "signaling-v3",
                "publishing-permissions",
                "federation-v1",
                "federation-v2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            session_ping_limit: Some(200),
            max_age: None,
            etag: None,
            token_alg: TokenAlg::Es256,
            ed25519_raw_key: false,
            omit_token_key: false,
            spreed_capabilities: None,
            delays: HashMap::new(),
            raw_replies: HashMap::new(),
        }
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
    pub raw_body: Vec<u8>,
    /// `body.type` for backend requests (`auth`, `room`, `ping`, `session`, ...),
    /// `capabilities` for the capabilities, `unknown-path` for anything else.
    pub kind: String,
    /// Whether random and checksum were valid (always false for GET requests).
    pub authenticated: bool,
}

impl Recorded {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The inner object of the body (`body[kind]`, e.g. the `room` object of a room request).
    pub fn inner(&self) -> &Value {
        &self.body[self.kind.as_str()]
    }
}

/// Options of [`FakeNextcloud::post_room_raw`] to produce broken requests.
#[derive(Clone, Debug, Default)]
pub struct RawOpts {
    /// Sign with this secret instead of the fake's.
    pub secret: Option<String>,
    /// Use this random instead of a fresh 64-character one.
    pub random: Option<String>,
    /// Send this checksum instead of the computed one.
    pub checksum: Option<String>,
    /// `Spreed-Signaling-Backend` instead of the fake's base URL.
    pub backend: Option<String>,
    /// `Content-Type` instead of `application/json`.
    pub content_type: Option<String>,
    pub omit_random: bool,
    pub omit_checksum: bool,
    pub omit_backend: bool,
    pub omit_content_type: bool,
}

struct Shared {
    base_url: String,
    config: Mutex<FakeConfig>,
    requests: Mutex<Vec<Recorded>>,
    seq: watch::Sender<usize>,
    capabilities_fetches: AtomicUsize,
}

impl Shared {
    fn record(&self, rec: Recorded) {
        self.requests.lock().push(rec);
        self.seq.send_modify(|n| *n += 1);
    }

    /// The delay and canned reply configured for a request type.
    fn overrides(&self, kind: &str) -> (Option<Duration>, Option<RawReply>) {
        let cfg = self.config.lock();
        let delay = cfg
            .delays
            .get(kind)
            .or_else(|| cfg.delays.get("*"))
            .copied();
        let raw = cfg
            .raw_replies
            .get(kind)
            .or_else(|| cfg.raw_replies.get("*"))
            .cloned();
        (delay, raw)
    }
}

/// A running fake Nextcloud (see the module documentation). Stops when dropped.
pub struct FakeNextcloud {
    addr: SocketAddr,
    shared: Arc<Shared>,
    http: reqwest::Client,
    task: JoinHandle<()>,
}

impl Drop for FakeNextcloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for FakeNextcloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeNextcloud")
            .field("base_url", &self.shared.base_url)
            .finish()
    }
}

impl FakeNextcloud {
    /// Starts a fake with the default configuration on 127.0.0.1 and a random port.
    pub async fn start() -> FakeNextcloud {
        Self::start_with(FakeConfig::default()).await
    }

    /// Starts a fake with this configuration on 127.0.0.1 and a random port.
    pub async fn start_with(config: FakeConfig) -> FakeNextcloud {
        ensure_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Nextcloud to 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Nextcloud");
        let (seq, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}/"),
            config: Mutex::new(config),
            requests: Mutex::new(Vec::new()),
            seq,
            capabilities_fetches: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route(
                "/ocs/v2.php/apps/spreed/api/{version}/signaling/backend",
                post(backend_handler),
            )
            .route("/ocs/v2.php/cloud/capabilities", get(capabilities_handler))
            .fallback(fallback_handler)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("fake Nextcloud stopped: {e}");
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build the fake Nextcloud's HTTP client");
        FakeNextcloud {
            addr,
            shared,
            http,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/` (with trailing slash), the URL to configure in hpb's
    /// `[backends.*] urls`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The full backend URL clients put into hello `auth.url`
    /// (`<base>ocs/v2.php/apps/spreed/api/v3/signaling/backend`).
    pub fn backend_url(&self) -> String {
        format!("{}{}", self.shared.base_url, BACKEND_PATH_V3)
    }

    /// The socket address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ----- configuration -----

    /// Changes the configuration (takes effect for the next request).
    pub fn configure<R>(&self, f: impl FnOnce(&mut FakeConfig) -> R) -> R {
        f(&mut self.shared.config.lock())
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> FakeConfig {
        self.shared.config.lock().clone()
    }

    /// The shared secret.
    pub fn secret(&self) -> String {
        self.shared.config.lock().secret.clone()
    }

    pub fn set_secret(&self, secret: &str) {
        self.configure(|c| c.secret = secret.to_string());
    }

    /// Adds or replaces a user.
    pub fn add_user(&self, id: &str, displayname: &str, ticket: &str) {
        self.configure(|c| {
            c.users.insert(
                id.to_string(),
                User {
                    id: id.to_string(),
                    displayname: displayname.to_string(),
                    ticket: ticket.to_string(),
                },
            )
        });
    }

    pub fn remove_user(&self, id: &str) {
        self.configure(|c| c.users.remove(id));
    }

    /// The ticket of a configured user (panics if unknown).
    pub fn ticket(&self, user: &str) -> String {
        self.configure(|c| c.users.get(user).map(|u| u.ticket.clone()))
            .unwrap_or_else(|| panic!("fake Nextcloud has no user {user:?}"))
    }

    pub fn guest_ticket(&self) -> String {
        self.shared.config.lock().guest_ticket.clone()
    }

    pub fn set_guest_ticket(&self, ticket: &str) {
        self.configure(|c| c.guest_ticket = ticket.to_string());
    }

    /// Adds or replaces a room.
    pub fn add_room(&self, room: Room) {
        self.configure(|c| c.rooms.insert(room.token.clone(), room));
    }

    /// Adds a room everyone (guests included) may join.
    pub fn add_public_room(&self, token: &str) {
        self.add_room(Room::public(token));
    }

    /// Changes a room (panics if unknown).
    pub fn update_room<R>(&self, token: &str, f: impl FnOnce(&mut Room) -> R) -> R {
        let mut cfg = self.shared.config.lock();
        let room = cfg
            .rooms
            .get_mut(token)
            .unwrap_or_else(|| panic!("fake Nextcloud has no room {token:?}"));
        f(room)
    }

    pub fn remove_room(&self, token: &str) {
        self.configure(|c| c.rooms.remove(token));
    }

    /// Makes joins of a room fail with `code` (or succeed again with `None`).
    pub fn set_room_error(&self, token: &str, error: Option<(&str, &str)>) {
        self.update_room(token, |r| {
            r.error = error.map(|(code, message)| ForcedError {
                code: code.to_string(),
                message: message.to_string(),
            })
        });
    }

    pub fn set_features(&self, features: &[&str]) {
        self.configure(|c| c.features = features.iter().map(|f| f.to_string()).collect());
    }

    pub fn set_session_ping_limit(&self, limit: Option<u64>) {
        self.configure(|c| c.session_ping_limit = limit);
    }

    pub fn set_max_age(&self, max_age: Option<u64>) {
        self.configure(|c| c.max_age = max_age);
    }

    pub fn set_token_alg(&self, alg: TokenAlg) {
        self.configure(|c| c.token_alg = alg);
    }

    pub fn set_ed25519_raw_key(&self, raw: bool) {
        self.configure(|c| c.ed25519_raw_key = raw);
    }

    /// Delays answers of one request type (`*` = all; `None` removes the delay).
    pub fn set_delay(&self, kind: &str, delay: Option<Duration>) {
        self.configure(|c| match delay {
            Some(d) => c.delays.insert(kind.to_string(), d),
            None => c.delays.remove(kind),
        });
    }

    /// Answers one request type with a canned reply (`*` = all; `None` restores normal
    /// answers).
    pub fn set_raw_reply(&self, kind: &str, reply: Option<RawReply>) {
        self.configure(|c| match reply {
            Some(r) => c.raw_replies.insert(kind.to_string(), r),
            None => c.raw_replies.remove(kind),
        });
    }

    // ----- recording -----

    /// How often the capabilities were requested.
    pub fn capabilities_fetches(&self) -> usize {
        self.shared.capabilities_fetches.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().clone()
    }

    /// The requests of one kind (`auth`, `room`, `ping`, `session`, `capabilities`, ...).
    pub fn requests_of_type(&self, kind: &str) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .iter()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }

    /// How many requests were received so far (a mark for [`Self::wait_for_new`]).
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().len()
    }

    pub fn clear_requests(&self) {
        self.shared.requests.lock().clear();
    }

    /// Waits until some request (already received or arriving within `timeout`) matches.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Option<Recorded> {
        self.wait_for_new(0, pred, timeout).await
    }

    /// Like [`Self::wait_for`], considering only requests after the first `since` ones
    /// (see [`Self::request_count`]; after [`Self::clear_requests`] counting starts anew).
    pub async fn wait_for_new(
        &self,
        since: usize,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Option<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.seq.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(found) = self
                .shared
                .requests
                .lock()
                .iter()
                .skip(since)
                .find(|r| pred(r))
            {
                return Some(found.clone());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    // ----- hello v2 tokens -----

    /// Mints a hello-v2 token for `user` (`None` = guest) like Talk's
    /// `Config::getSignalingTicketV2`.
    pub fn token(&self, user: Option<&str>, opts: TokenOpts) -> String {
        let cfg = self.config();
        let alg = opts.alg.unwrap_or(cfg.token_alg);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let mut claims = serde_json::Map::new();
        claims.insert(
            "iss".into(),
            json!(opts.issuer.clone().unwrap_or_else(|| self.base_url())),
        );
        if !opts.omit_iat {
            claims.insert("iat".into(), json!(now + opts.iat_offset_secs));
        }
        if !opts.omit_exp {
            claims.insert("exp".into(), json!(now + opts.exp_offset_secs));
        }
        if !opts.omit_sub {
            claims.insert("sub".into(), json!(user.unwrap_or("")));
        }
        let userdata = match (&opts.userdata, &opts.displayname, user) {
            (Some(data), _, _) => Some(data.clone()),
            (None, Some(name), _) => Some(json!({"displayname": name})),
            (None, None, Some(id)) => {
                let name = cfg
                    .users
                    .get(id)
                    .map(|u| u.displayname.clone())
                    .unwrap_or_else(|| id.to_string());
                Some(json!({"displayname": name}))
            }
            (None, None, None) => None,
        };
        if let Some(data) = userdata {
            claims.insert("userdata".into(), data);
        }
        let header = jsonwebtoken::Header::new(alg.algorithm());
        jsonwebtoken::encode(
            &header,
            &Value::Object(claims),
            &alg.encoding_key(opts.wrong_key),
        )
        .expect("sign the hello-v2 token")
    }

    /// The `hello-v2-token-key` the capabilities currently serve (`None` if omitted).
    pub fn served_token_key(&self) -> Option<String> {
        token_key(&self.shared.config.lock())
    }

    // ----- Talk's BackendNotifier -----

    /// POSTs `body` to `<hpb_base>/api/v1/room/<room>` signed like Talk's
    /// `BackendNotifier` (`ws://`/`wss://` bases are rewritten to http(s)).
    /// Returns status, headers and body of the reply.
    pub async fn post_room(
        &self,
        hpb_base: &str,
        room: &str,
        body: Value,
    ) -> (u16, HeaderMap, String) {
        self.post_room_raw(
            hpb_base,
            room,
            body.to_string().into_bytes(),
            RawOpts::default(),
        )
        .await
    }

    /// What Talk does when a call starts: puts every session of `room` in the call (flags
    /// 7: in call with audio and video) through hpb's backend API; asserts hpb took it.
    pub async fn put_everyone_in_call(&self, hpb_base: &str, room: &str) {
        let (status, _, body) = self
            .post_room(
                hpb_base,
                room,
                json!({"type": "incall", "incall": {"incall": 7, "all": true}}),
            )
            .await;
        assert_eq!(status, 200, "incall all for {room}: {body}");
    }

    /// Like [`Self::post_room`] with raw bytes and options to break the request.
    pub async fn post_room_raw(
        &self,
        hpb_base: &str,
        room: &str,
        body: impl Into<Vec<u8>>,
        opts: RawOpts,
    ) -> (u16, HeaderMap, String) {
        let url = room_url(hpb_base, room);
        self.signed_post(&url, body, opts).await
    }

    /// POSTs to any URL with Talk's signing headers (modified by `opts`).
    pub async fn signed_post(
        &self,
        url: &str,
        body: impl Into<Vec<u8>>,
        opts: RawOpts,
    ) -> (u16, HeaderMap, String) {
        let body: Vec<u8> = body.into();
        let secret = opts.secret.clone().unwrap_or_else(|| self.secret());
        let random = opts.random.clone().unwrap_or_else(|| random_string(64));
        let checksum = opts
            .checksum
            .clone()
            .unwrap_or_else(|| backend_checksum(&secret, &random, &body));
        let mut req = self.http.post(url);
        if !opts.omit_content_type {
            req = req.header(
                header::CONTENT_TYPE,
                opts.content_type.as_deref().unwrap_or("application/json"),
            );
        }
        if !opts.omit_random {
            req = req.header("Spreed-Signaling-Random", random);
        }
        if !opts.omit_checksum {
            req = req.header("Spreed-Signaling-Checksum", checksum);
        }
        if !opts.omit_backend {
            req = req.header(
                "Spreed-Signaling-Backend",
                opts.backend.clone().unwrap_or_else(|| self.base_url()),
            );
        }
        let resp = req
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url} failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the reply of POST {url} failed: {e}"));
        (status, headers, text)
    }
}

/// `<hpb_base>/api/v1/room/<room>` with ws(s) rewritten to http(s).
fn room_url(hpb_base: &str, room: &str) -> String {
    let base = if let Some(rest) = hpb_base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = hpb_base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if hpb_base.contains("://") {
        hpb_base.to_string()
    } else {
        format!("http://{hpb_base}")
    };
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/spreed").unwrap_or(base);
    format!("{base}/api/v1/room/{room}")
}

fn token_key(cfg: &FakeConfig) -> Option<String> {
    if cfg.omit_token_key {
        return None;
    }
    if cfg.token_alg == TokenAlg::EdDsa && cfg.ed25519_raw_key {
        return Some(ed25519_raw_public_key_base64());
    }
    Some(cfg.token_alg.public_key_pem().to_string())
}

// ----- server side -----

fn headers_vec(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn ocs(data: Value) -> Response {
    let body = json!({"ocs": {"meta": {"status": "ok", "statuscode": 200, "message": "OK"}, "data": data}});
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .expect("valid OCS response")
}

fn raw_response(raw: RawReply) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(raw.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, raw.content_type)
        .body(Body::from(raw.body))
        .expect("valid canned response")
}

fn error_data(code: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"code": code, "message": message}})
}

/// Talk's `validateBackendRequest`: random of at least 32 characters, checksum equal to
/// hex(HMAC-SHA256(secret, random ‖ body)) (compared lower-cased).
fn verify_checksum(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> bool {
    let random = headers
        .get("spreed-signaling-random")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let checksum = headers
        .get("spreed-signaling-checksum")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if random.len() < 32 || checksum.is_empty() {
        return false;
    }
    backend_checksum(secret, random, body) == checksum.to_ascii_lowercase()
}

async fn backend_handler(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let kind = parsed["type"].as_str().unwrap_or("").to_string();
    let secret = shared.config.lock().secret.clone();
    let authenticated = verify_checksum(&secret, &headers, &body);
    shared.record(Recorded {
        method: "POST".into(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers_vec(&headers),
        body: parsed.clone(),
        raw_body: body.to_vec(),
        kind: kind.clone(),
        authenticated,
    });
    if !matches!(version.as_str(), "v1" | "v2" | "v3") {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("no such API version"))
            .expect("valid 404");
    }
    let (delay, raw) = shared.overrides(&kind);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(raw) = raw {
        return raw_response(raw);
    }
    if !authenticated {
        return ocs(error_data(
            "invalid_request",
            "The request could not be authenticated.",
        ));
    }
    let cfg = shared.config.lock().clone();
    let data = match kind.as_str() {
        "auth" => handle_auth(&cfg, &parsed),
        "room" => handle_room(&cfg, &parsed),
        "ping" | "session" => json!({"type": "room", "room": {"version": "1.0"}}),
        other => error_data(
            "unknown_type",
            &format!("The given type {other:?} is not supported."),
        ),
    };
    ocs(data)
}

fn handle_auth(cfg: &FakeConfig, body: &Value) -> Value {
    let params = &body["auth"]["params"];
    let userid = params["userid"].as_str().unwrap_or("");
    let ticket = params["ticket"].as_str().unwrap_or("");
    if userid.is_empty() {
        if cfg.guest_ticket.is_empty() || ticket != cfg.guest_ticket {
            return error_data(
                "invalid_ticket",
                "The given ticket is not valid for this user.",
            );
        }
        return json!({"type": "auth", "auth": {"version": "1.0"}});
    }
    match cfg.users.get(userid) {
        None => error_data("no_such_user", "The given user does not exist."),
        Some(user) if user.ticket != ticket => error_data(
            "invalid_ticket",
            "The given ticket is not valid for this user.",
        ),
        Some(user) => json!({"type": "auth", "auth": {
            "version": "1.0",
            "userid": user.id,
            "user": {"displayname": user.displayname},
        }}),
    }
}

fn handle_room(cfg: &FakeConfig, body: &Value) -> Value {
    let req = &body["room"];
    let roomid = req["roomid"].as_str().unwrap_or("");
    let userid = req["userid"].as_str().unwrap_or("");
    let actorid = req["actorid"].as_str().unwrap_or("");
    let sessionid = req["sessionid"].as_str().unwrap_or("");
    if req["action"].as_str() == Some("leave") {
        return json!({"type": "room", "room": {"version": "1.0"}});
    }
    let Some(room) = cfg.rooms.get(roomid) else {
        return error_data("no_such_room", "The user is not invited to this room.");
    };
    if let Some(err) = &room.error {
        return error_data(&err.code, &err.message);
    }
    let allowed = if userid.is_empty() && actorid.is_empty() {
        room.guests
    } else {
        room.allowed_users.as_ref().is_none_or(|list| {
            list.iter()
                .any(|u| u == userid || (!actorid.is_empty() && u == actorid))
        })
    };
    if !allowed {
        return error_data("no_such_room", "The user is not invited to this room.");
    }
    let permissions = room
        .session_permissions
        .get(sessionid)
        .or_else(|| room.user_permissions.get(userid))
        .unwrap_or(&room.permissions);
    let mut reply = json!({"type": "room", "room": {
        "version": "1.0",
        "roomid": room.token,
        "properties": room.properties,
        "permissions": permissions,
    }});
    if let Some(session) = &room.session {
        reply["room"]["session"] = session.clone();
    }
    reply
}

fn capabilities_data(cfg: &FakeConfig) -> Value {
    let spreed = match &cfg.spreed_capabilities {
        Some(spreed) => spreed.clone(),
        None => {
            let mut signaling = serde_json::Map::new();
            if let Some(key) = token_key(cfg) {
                signaling.insert("hello-v2-token-key".into(), json!(key));
            }
            if let Some(limit) = cfg.session_ping_limit {
                signaling.insert("session-ping-limit".into(), json!(limit));
            }
            json!({
                "features": cfg.features,
                "config": {"signaling": signaling},
                "version": "21.0.0",
            })
        }
    };
    json!({
        "version": {"major": 31, "minor": 0, "micro": 0, "string": "31.0.0", "edition": "", "extendedSupport": false},
        "capabilities": {"spreed": spreed},
    })
}

async fn capabilities_handler(
    State(shared): State<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    headers: axum::http::HeaderMap,
) -> Response {
    shared.record(Recorded {
        method: "GET".into(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers_vec(&headers),
        body: Value::Null,
        raw_body: Vec::new(),
        kind: "capabilities".into(),
        authenticated: false,
    });
    shared.capabilities_fetches.fetch_add(1, Ordering::SeqCst);
    let (delay, raw) = shared.overrides("capabilities");
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(raw) = raw {
        return raw_response(raw);
    }
    let ocs_header = headers
        .get("ocs-apirequest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ocs_header.eq_ignore_ascii_case("true") {
        return Response::builder()
            .status(StatusCode::PRECONDITION_FAILED)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(Body::from(r#"{"message":"CSRF check failed"}"#))
            .expect("valid 412");
    }
    let cfg = shared.config.lock().clone();
    if let Some(etag) = &cfg.etag {
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        if matches {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, etag.as_str())
                .body(Body::empty())
                .expect("valid 304");
        }
    }
    let mut resp = ocs(capabilities_data(&cfg));
    if let Some(max_age) = cfg.max_age {
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            format!("max-age={max_age}")
                .parse()
                .expect("valid Cache-Control"),
        );
    }
    if let Some(etag) = &cfg.etag {
        resp.headers_mut().insert(
            header::ETAG,
            etag.parse().expect("ETag is a valid header value"),
        );
    }
    resp
}

async fn fallback_handler(
    State(shared): State<Arc<Shared>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers_vec(&headers),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw_body: body.to_vec(),
        kind: "unknown-path".into(),
        authenticated: false,
    });
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(format!(
            "fake Nextcloud: nothing at {}",
            uri.path()
        )))
        .expect("valid 404")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_BODY: &str =
        r#"{"type":"auth","auth":{"version":"1.0","params":{"hello":"world"}}}"#;
    const EXAMPLE_RANDOM: &str = "afb6b872ab03e3376b31bf0af601067222ff7990335ca02d327071b73c0119c6";
    const EXAMPLE_CHECKSUM: &str =
        "3c4a69ff328299803ac2879614b707c807b4758cf19450755c60656cac46e3bc";

    fn client() -> reqwest::Client {
        ensure_crypto_provider();
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client")
    }

    /// POSTs a backend request as hpb would, returning the OCS `data`.
    async fn backend_post(fake: &FakeNextcloud, body: &str, random: &str, checksum: &str) -> Value {
        let resp = client()
            .post(fake.backend_url())
            .header("Content-Type", "application/json")
            .header("OCS-APIRequest", "true")
            .header("Spreed-Signaling-Random", random)
            .header("Spreed-Signaling-Checksum", checksum)
            .body(body.to_string())
            .send()
            .await
            .expect("POST to the fake");
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp.headers()["content-type"]
            .to_str()
            .expect("ascii content type")
            .to_string();
        assert_eq!(ct, "application/json; charset=utf-8");
        let v: Value = resp.json().await.expect("JSON reply");
        assert_eq!(v["ocs"]["meta"]["statuscode"], 200);
        v["ocs"]["data"].clone()
    }

    async fn signed(fake: &FakeNextcloud, body: Value) -> Value {
        let body = body.to_string();
        let random = random_string(64);
        let checksum = backend_checksum(&fake.secret(), &random, body.as_bytes());
        backend_post(fake, &body, &random, &checksum).await
    }

    #[tokio::test]
    async fn checksum_of_the_reference_example_is_accepted() {
        let fake = FakeNextcloud::start().await;
        fake.set_secret("MySecretValue");
        let data = backend_post(&fake, EXAMPLE_BODY, EXAMPLE_RANDOM, EXAMPLE_CHECKSUM).await;
        // Authenticated: the (param-less) auth request fails on the ticket, not the checksum.
        assert_eq!(data["error"]["code"], "invalid_ticket", "{data}");
        let rec = fake.requests_of_type("auth");
        assert_eq!(rec.len(), 1);
        assert!(rec[0].authenticated);
        assert_eq!(rec[0].body["auth"]["params"]["hello"], "world");
        assert_eq!(
            rec[0].header("Spreed-Signaling-Random"),
            Some(EXAMPLE_RANDOM)
        );
    }

    #[tokio::test]
    async fn wrong_checksum_short_random_and_wrong_secret_are_refused() {
        let fake = FakeNextcloud::start().await;
        fake.set_secret("MySecretValue");
        let wrong = EXAMPLE_CHECKSUM.replace('3', "4");
        let data = backend_post(&fake, EXAMPLE_BODY, EXAMPLE_RANDOM, &wrong).await;
        assert_eq!(data["type"], "error");
        assert_eq!(data["error"]["code"], "invalid_request");
        assert_eq!(
            data["error"]["message"],
            "The request could not be authenticated."
        );

        let short = "abc";
        let sum = backend_checksum("MySecretValue", short, EXAMPLE_BODY.as_bytes());
        let data = backend_post(&fake, EXAMPLE_BODY, short, &sum).await;
        assert_eq!(data["error"]["code"], "invalid_request");

        fake.set_secret("another secret");
        let data = backend_post(&fake, EXAMPLE_BODY, EXAMPLE_RANDOM, EXAMPLE_CHECKSUM).await;
        assert_eq!(data["error"]["code"], "invalid_request");
        assert!(fake.requests().iter().all(|r| !r.authenticated));
    }

    #[tokio::test]
    async fn auth_accepts_tickets_and_refuses_wrong_ones() {
        let fake = FakeNextcloud::start().await;
        let auth = |userid: Value, ticket: &str| json!({"type":"auth","auth":{"version":"1.0","params":{"userid": userid, "ticket": ticket}}});
        let ok = signed(&fake, auth(json!("alice"), "alice-ticket")).await;
        assert_eq!(
            ok,
            json!({"type":"auth","auth":{"version":"1.0","userid":"alice","user":{"displayname":"Alice"}}})
        );
        let bad = signed(&fake, auth(json!("alice"), "bob-ticket")).await;
        assert_eq!(bad["error"]["code"], "invalid_ticket");
        let nobody = signed(&fake, auth(json!("mallory"), "x")).await;
        assert_eq!(nobody["error"]["code"], "no_such_user");
        let guest = signed(&fake, auth(Value::Null, "guest-ticket")).await;
        assert_eq!(guest, json!({"type":"auth","auth":{"version":"1.0"}}));
        let bad_guest = signed(&fake, auth(json!(""), "alice-ticket")).await;
        assert_eq!(bad_guest["error"]["code"], "invalid_ticket");
        let unknown = signed(&fake, json!({"type":"nonsense"})).await;
        assert_eq!(unknown["error"]["code"], "unknown_type");
    }

    #[tokio::test]
    async fn room_join_leave_and_ping() {
        let fake = FakeNextcloud::start().await;
        fake.add_room(
            Room::users_only("priv", &["alice"]).with_user_permissions("alice", &["publish-audio"]),
        );
        fake.add_room(Room::public("pub").with_session(json!({"userid": "assigned"})));
        let room = |roomid: &str, userid: &str| json!({"type":"room","room":{"version":"1.0","roomid":roomid,"userid":userid,"sessionid":"s1"}});
        let r = signed(&fake, room("priv", "alice")).await;
        assert_eq!(r["type"], "room");
        assert_eq!(r["room"]["roomid"], "priv");
        assert_eq!(r["room"]["permissions"], json!(["publish-audio"]));
        assert_eq!(r["room"]["properties"]["type"], 2);
        assert_eq!(
            signed(&fake, room("priv", "bob")).await["error"]["code"],
            "no_such_room"
        );
        assert_eq!(
            signed(&fake, room("priv", "")).await["error"]["code"],
            "no_such_room"
        );
        assert_eq!(
            signed(&fake, room("nope", "alice")).await["error"]["code"],
            "no_such_room"
        );
        let g = signed(&fake, room("pub", "")).await;
        assert_eq!(g["room"]["session"]["userid"], "assigned");
        assert_eq!(g["room"]["permissions"], json!(default_permissions()));

        fake.set_room_error("pub", Some(("duplicate_session", "dup")));
        assert_eq!(
            signed(&fake, room("pub", "bob")).await["error"]["code"],
            "duplicate_session"
        );
        fake.set_room_error("pub", None);

        let leave = json!({"type":"room","room":{"version":"1.0","roomid":"pub","userid":"bob","sessionid":"s1","action":"leave"}});
        assert_eq!(
            signed(&fake, leave).await,
            json!({"type":"room","room":{"version":"1.0"}})
        );
        let ping = json!({"type":"ping","ping":{"version":"1.0","roomid":"pub","entries":[{"sessionid":"s1","userid":"bob"}]}});
        assert_eq!(
            signed(&fake, ping).await,
            json!({"type":"room","room":{"version":"1.0"}})
        );
        let pings = fake.requests_of_type("ping");
        assert_eq!(pings.len(), 1);
        assert_eq!(pings[0].inner()["entries"][0]["sessionid"], "s1");
        let found = fake
            .wait_for(
                |r| r.kind == "room" && r.inner()["action"] == "leave",
                Duration::from_millis(10),
            )
            .await;
        assert!(found.is_some());
    }

    #[tokio::test]
    async fn wait_for_sees_requests_arriving_later() {
        let fake = Arc::new(FakeNextcloud::start().await);
        let mark = fake.request_count();
        let f2 = fake.clone();
        let waiter = tokio::spawn(async move {
            f2.wait_for_new(mark, |r| r.kind == "session", Duration::from_secs(5))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        signed(
            &fake,
            json!({"type":"session","session":{"version":"1.0","action":"add"}}),
        )
        .await;
        let got = waiter.await.expect("waiter task");
        assert_eq!(got.expect("the session request").inner()["action"], "add");
        assert!(
            fake.wait_for(|r| r.kind == "ping", Duration::from_millis(20))
                .await
                .is_none()
        );
    }

    async fn get_capabilities(fake: &FakeNextcloud, ocs_header: bool) -> reqwest::Response {
        let mut req = client()
            .get(format!("{}{}", fake.base_url(), CAPABILITIES_PATH))
            .header("Accept", "application/json");
        if ocs_header {
            req = req.header("OCS-APIRequest", "true");
        }
        req.send().await.expect("GET capabilities")
    }

    #[tokio::test]
    async fn capabilities_are_served_and_counted() {
        let fake = FakeNextcloud::start().await;
        fake.set_max_age(Some(300));
        assert_eq!(get_capabilities(&fake, false).await.status().as_u16(), 412);
        let resp = get_capabilities(&fake, true).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["cache-control"], "max-age=300");
        let v: Value = resp.json().await.expect("JSON capabilities");
        let spreed = &v["ocs"]["data"]["capabilities"]["spreed"];
        let features: Vec<&str> = spreed["features"]
            .as_array()
            .expect("features")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(features.contains(&"signaling-v3"));
        assert!(features.contains(&"federation-v2"));
        assert_eq!(spreed["config"]["signaling"]["session-ping-limit"], 200);
        let key = spreed["config"]["signaling"]["hello-v2-token-key"]
            .as_str()
            .expect("token key");
        assert!(key.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(fake.capabilities_fetches(), 2);

        fake.configure(|c| c.etag = Some("\"v1\"".into()));
        let resp = client()
            .get(format!("{}{}", fake.base_url(), CAPABILITIES_PATH))
            .header("OCS-APIRequest", "true")
            .header("If-None-Match", "\"v1\"")
            .send()
            .await
            .expect("conditional GET");
        assert_eq!(resp.status().as_u16(), 304);

        fake.set_token_alg(TokenAlg::EdDsa);
        fake.set_ed25519_raw_key(true);
        let v: Value = get_capabilities(&fake, true)
            .await
            .json()
            .await
            .expect("JSON");
        let raw =
            v["ocs"]["data"]["capabilities"]["spreed"]["config"]["signaling"]["hello-v2-token-key"]
                .as_str()
                .expect("raw key")
                .to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .expect("base64");
        assert_eq!(bytes.len(), 32);
    }

    fn decode(token: &str, key_pem: &str, alg: TokenAlg) -> jsonwebtoken::errors::Result<Value> {
        let key = match alg {
            TokenAlg::Es256 => jsonwebtoken::DecodingKey::from_ec_pem(key_pem.as_bytes()),
            TokenAlg::Rs256 => jsonwebtoken::DecodingKey::from_rsa_pem(key_pem.as_bytes()),
            TokenAlg::EdDsa => jsonwebtoken::DecodingKey::from_ed_pem(key_pem.as_bytes()),
        }
        .expect("served key parses");
        let mut validation = jsonwebtoken::Validation::new(alg.algorithm());
        validation.set_required_spec_claims(&["exp", "iat"]);
        jsonwebtoken::decode::<Value>(token, &key, &validation).map(|d| d.claims)
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_the_served_key() {
        let fake = FakeNextcloud::start().await;
        for alg in [TokenAlg::Es256, TokenAlg::Rs256, TokenAlg::EdDsa] {
            fake.set_token_alg(alg);
            let v: Value = get_capabilities(&fake, true)
                .await
                .json()
                .await
                .expect("JSON");
            let key = v["ocs"]["data"]["capabilities"]["spreed"]["config"]["signaling"]["hello-v2-token-key"]
                .as_str()
                .expect("token key")
                .to_string();
            let token = fake.token(Some("alice"), TokenOpts::default());
            let header = jsonwebtoken::decode_header(&token).expect("token header");
            assert_eq!(header.alg, alg.algorithm());
            let claims = decode(&token, &key, alg).expect("token verifies with the served key");
            assert_eq!(claims["sub"], "alice");
            assert_eq!(claims["iss"], fake.base_url());
            assert_eq!(claims["userdata"]["displayname"], "Alice");
            let exp = claims["exp"].as_i64().expect("exp");
            let iat = claims["iat"].as_i64().expect("iat");
            assert_eq!(exp - iat, 60);

            let wrong = fake.token(
                Some("alice"),
                TokenOpts {
                    wrong_key: true,
                    ..Default::default()
                },
            );
            assert!(
                decode(&wrong, &key, alg).is_err(),
                "{alg:?} wrong key must not verify"
            );
        }
        fake.set_token_alg(TokenAlg::Es256);
        let guest = fake.token(
            None,
            TokenOpts {
                omit_exp: true,
                ..Default::default()
            },
        );
        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&guest)
            .expect("decodes")
            .claims;
        assert_eq!(claims["sub"], "");
        assert!(claims.get("exp").is_none());
        assert!(claims.get("userdata").is_none());
    }

    #[test]
    fn room_urls() {
        assert_eq!(
            room_url("http://127.0.0.1:1/", "r"),
            "http://127.0.0.1:1/api/v1/room/r"
        );
        assert_eq!(
            room_url("ws://127.0.0.1:1/spreed", "r"),
            "http://127.0.0.1:1/api/v1/room/r"
        );
        assert_eq!(
            room_url("127.0.0.1:1", "r"),
            "http://127.0.0.1:1/api/v1/room/r"
        );
        assert_eq!(
            room_url("https://h/standalone-signaling", "r"),
            "https://h/standalone-signaling/api/v1/room/r"
        );
    }

    #[tokio::test]
    async fn post_room_signs_like_talk() {
        // A stand-in hpb: another fake records what post_room sends.
        let target = FakeNextcloud::start().await;
        let sender = FakeNextcloud::start().await;
        let (status, _headers, _body) = sender
            .post_room(&target.base_url(), "room1", json!({"type":"update"}))
            .await;
        assert_eq!(status, 404);
        let rec = target.requests();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].path, "/api/v1/room/room1");
        let random = rec[0]
            .header("spreed-signaling-random")
            .expect("random header");
        assert_eq!(random.len(), 64);
        assert_eq!(
            rec[0].header("spreed-signaling-checksum"),
            Some(backend_checksum(&sender.secret(), random, &rec[0].raw_body).as_str())
        );
        assert_eq!(
            rec[0].header("spreed-signaling-backend"),
            Some(sender.base_url().as_str())
        );
        assert_eq!(rec[0].header("content-type"), Some("application/json"));

        let opts = RawOpts {
            omit_checksum: true,
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        sender
            .post_room_raw(&target.base_url(), "room1", "x", opts)
            .await;
        let rec = target.requests();
        assert!(rec[1].header("spreed-signaling-checksum").is_none());
        assert_eq!(rec[1].header("content-type"), Some("text/plain"));
    }
}
