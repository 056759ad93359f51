//! The in-process server for the tests: `Signaling::start_with_mcu` (or `start`) behind
//! `axum::serve` on 127.0.0.1:0, a fake Nextcloud with room `room1`, and a fake MCU that
//! records commands, answers with canned SDP, can fail on purpose and emits events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hpb_proto::mcu::{McuCommand, McuError, McuEvent, McuReply};
use hpb_signaling::config::BackendConfig;
use hpb_signaling::mcu::{Mcu, McuFuture};
use hpb_signaling::{Signaling, SignalingConfig};
use hpb_test_support::{DEFAULT_TIMEOUT, FakeNextcloud, HelloInfo, TestClient};
use serde_json::{Value, json};
use std::sync::Mutex;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::watch;

pub const ANSWER_SDP: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=sfu\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
pub const OFFER_SDP: &str = "v=0\r\no=- 3 3 IN IP4 127.0.0.1\r\ns=sfu\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
pub const CLIENT_SDP_AV: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
pub const CLIENT_SDP_AUDIO: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
pub const CANDIDATE: &str = "candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host";

/// The `type` of a command as it travels (`publish`, `subscribe`, `close_session`, ...).
pub fn kind(cmd: &McuCommand) -> String {
    serde_json::to_value(cmd).expect("commands serialize")["type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A media plane double.
#[derive(Default)]
pub struct FakeMcu {
    log: Mutex<Vec<McuCommand>>,
    seq: Option<watch::Sender<usize>>,
    /// Error replies by command kind.
    failures: Mutex<HashMap<String, McuError>>,
    /// Command kinds never answered.
    hang: Mutex<Vec<String>>,
}

impl FakeMcu {
    fn new() -> Self {
        Self {
            seq: Some(watch::channel(0).0),
            ..Self::default()
        }
    }

    /// Answer every command of `kind` with this error from now on.
    pub fn fail(&self, kind: &str, code: &str, message: &str) {
        self.failures.lock().expect("lock").insert(
            kind.to_string(),
            McuError {
                code: code.into(),
                message: message.into(),
            },
        );
    }

    pub fn commands(&self) -> Vec<McuCommand> {
        self.log.lock().expect("lock").clone()
    }

    pub fn of_kind(&self, k: &str) -> Vec<McuCommand> {
        self.commands()
            .into_iter()
            .filter(|c| kind(c) == k)
            .collect()
    }

    /// The first recorded command matching `pred`, waiting up to 5 s for it.
    pub async fn wait_command(&self, what: &str, pred: impl Fn(&McuCommand) -> bool) -> McuCommand {
        let mut rx = self.seq.as_ref().expect("seq").subscribe();
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        loop {
            if let Some(c) = self.commands().into_iter().find(&pred) {
                return c;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "no {what} command within {DEFAULT_TIMEOUT:?}; got {:?}",
                    self.commands()
                );
            }
        }
    }
}

impl Mcu for FakeMcu {
    fn request(&self, cmd: McuCommand) -> McuFuture {
        let k = kind(&cmd);
        let failure = self.failures.lock().expect("lock").get(&k).cloned();
        let hang = self.hang.lock().expect("lock").contains(&k);
        let reply = match (&cmd, failure) {
            (_, Some(e)) => McuReply::Error(e),
            (McuCommand::Publish { .. }, None) => McuReply::Answer {
                sdp: ANSWER_SDP.into(),
            },
            (McuCommand::Subscribe { sid, .. }, None) => McuReply::Offer {
                sdp: OFFER_SDP.into(),
                sid: if sid.is_empty() {
                    "sub-1".into()
                } else {
                    sid.clone()
                },
            },
            _ => McuReply::Done,
        };
        self.log.lock().expect("lock").push(cmd);
        if let Some(s) = &self.seq {
            s.send_modify(|n| *n += 1);
        }
        if hang {
            return Box::pin(std::future::pending());
        }
        Box::pin(async move { reply })
    }
}

/// A running server with its doubles.
pub struct Env {
    pub nc: FakeNextcloud,
    pub addr: SocketAddr,
    pub mcu: Arc<FakeMcu>,
    pub events: UnboundedSender<McuEvent>,
    pub signaling: Signaling,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Env {
    /// With the fake MCU.
    pub async fn start() -> Env {
        Self::start_with(true, |_| {}).await
    }

    /// `with_mcu`: plug the fake MCU in; `tweak` changes the configuration first.
    pub async fn start_with(with_mcu: bool, tweak: impl FnOnce(&mut SignalingConfig)) -> Env {
        let nc = FakeNextcloud::start().await;
        nc.add_public_room("room1");
        let mut cfg = SignalingConfig::new(b"0123456789abcdef0123456789abcdef".to_vec());
        cfg.internal_secret = Some(b"internal-secret".to_vec());
        cfg.backends = vec![BackendConfig {
            id: "nc".into(),
            urls: vec![hpb_proto::backend_url::canonical(&nc.base_url()).expect("url")],
            secret: nc.secret().into_bytes(),
            session_limit: 0,
            max_stream_bitrate: 0,
            max_screen_bitrate: 0,
        }];
        tweak(&mut cfg);
        let mcu = Arc::new(FakeMcu::new());
        let (tx, rx) = unbounded_channel();
        let signaling = if with_mcu {
            Signaling::start_with_mcu(cfg, mcu.clone(), rx).expect("start")
        } else {
            Signaling::start(cfg).expect("start")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = signaling
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Env {
            nc,
            addr,
            mcu,
            events: tx,
            signaling,
            task,
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A user's client after hello v1.
    pub async fn user(&self, user: &str) -> (TestClient, HelloInfo) {
        let mut c = TestClient::connect(self.addr).await;
        let hello = c
            .hello_v1(&self.nc.backend_url(), user, &self.nc.ticket(user))
            .await;
        (c, hello)
    }

    /// A user's client in `room1` with Talk session id `<user>-talk`.
    pub async fn in_room(&self, user: &str) -> (TestClient, HelloInfo) {
        let (mut c, h) = self.user(user).await;
        c.join("room1", format!("{user}-talk").as_str()).await;
        (c, h)
    }

    /// Nextcloud's `incall` request: `(user, flags)` for `<user>-talk` sessions.
    pub async fn incall(&self, entries: &[(&str, i64)]) {
        let list: Vec<Value> = entries
            .iter()
            .map(|(u, f)| json!({"inCall": f, "sessionId": format!("{u}-talk"), "userId": u}))
            .collect();
        let (status, _, text) = self
            .nc
            .post_room(
                &self.http(),
                "room1",
                json!({"type": "incall", "incall": {"incall": entries.first().map(|e| e.1).unwrap_or(0),
                    "changed": list, "users": list}}),
            )
            .await;
        assert_eq!(status, 200, "{text}");
    }

    /// Nextcloud's `participants` request setting `user`'s permissions.
    pub async fn permissions(&self, user: &str, perms: &[&str]) {
        let entry = json!({"inCall": 3, "sessionId": format!("{user}-talk"), "userId": user, "permissions": perms});
        let (status, _, text) = self
            .nc
            .post_room(
                &self.http(),
                "room1",
                json!({"type": "participants", "participants": {"changed": [entry], "users": [entry]}}),
            )
            .await;
        assert_eq!(status, 200, "{text}");
    }
}

/// The next `message` frame (others dropped), panicking after the default timeout.
pub async fn next_message(c: &mut TestClient) -> Value {
    c.wait_for(|f| f["type"] == "message", DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no message frame for {}", c.sessionid()))
}

/// The frame echoing request `id` (a reply or an error).
pub async fn reply(c: &mut TestClient, id: &str) -> Value {
    c.wait_reply(id, DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no frame with id {id}"))
}

impl FakeMcu {
    /// Never answer commands of `kind` from now on.
    pub fn hang(&self, kind: &str) {
        self.hang.lock().expect("lock").push(kind.to_string());
    }

    /// Answer normally again.
    pub fn failures_clear(&self) {
        self.failures.lock().expect("lock").clear();
    }
}
