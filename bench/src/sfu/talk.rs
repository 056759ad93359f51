//! The Talk web client's MCU flow over the signaling websocket, for the SFU benchmark: hello
//! v1 as a guest, room join, publishing with an `offer` to the own session, subscribing with
//! `requestoffer` + `answer`, and routing the server's trickled `candidate`s to the right
//! str0m peer (by the session they come from).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hpb_test_support::{FakeNextcloud, TestClient};
use serde_json::{Value, json};
use str0m::Candidate;
use tokio::sync::{mpsc, watch};

use super::media::{self, PubStats, Shape, SubReport, SubStats};
use super::note;

/// How long one signaling step (answer, offer) may take.
const STEP: Duration = Duration::from_secs(20);

enum Route {
    /// Candidates that arrived before their peer existed.
    Early(Vec<Candidate>),
    Live(mpsc::UnboundedSender<Candidate>),
}

pub struct Session {
    client: TestClient,
    /// The public session id.
    pub id: String,
    /// The Talk room session id given at join.
    pub room_session: String,
    name: String,
    /// The address its str0m peers bind to.
    ip: IpAddr,
    /// Candidate routes by the session id they come from.
    routes: HashMap<String, Route>,
}

pub type PublisherTask = tokio::task::JoinHandle<Result<()>>;
pub type SubscriberTask = tokio::task::JoinHandle<Result<SubReport>>;

impl Session {
    /// Connects, says hello (v1, guest) and joins `room`.
    pub async fn join(
        addr: &str,
        ip: IpAddr,
        nc: &FakeNextcloud,
        room: &str,
        name: &str,
    ) -> Result<Session> {
        let mut client = TestClient::try_connect(addr)
            .await
            .map_err(|e| anyhow!("connecting to {addr}: {e:?}"))?;
        client.request_timeout = STEP;
        let hello = client
            .try_hello_v1(&nc.backend_url(), None, &nc.guest_ticket())
            .await
            .map_err(|e| anyhow!("hello: {e}"))?;
        let room_session = format!("talk-{name}");
        client
            .try_join(room, room_session.as_str())
            .await
            .map_err(|e| anyhow!("joining {room}: {e}"))?;
        Ok(Session {
            client,
            id: hello.sessionid,
            room_session,
            name: name.to_string(),
            ip,
            routes: HashMap::new(),
        })
    }

    /// Sends `data` in a `message` to `to`; returns the request id.
    async fn send(&mut self, to: &str, data: Value) -> String {
        self.client.message_session(to, data).await
    }

    /// Reads frames until `pred` matches one (candidates are routed meanwhile); an error reply
    /// to `request` fails.
    async fn wait(
        &mut self,
        what: &str,
        request: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.client.recv(left).await else {
                bail!("{}: no {what} within {STEP:?}", self.name);
            };
            if std::env::var_os("HPB_BENCH_DEBUG").is_some() {
                let text: String = frame.to_string().chars().take(300).collect();
                note(&format!("{}: got {text}", self.name));
            }
            if frame["type"] == "error" && frame["id"] == request {
                bail!("{}: {what} refused: {frame}", self.name);
            }
            if frame["type"] != "message" {
                continue;
            }
            if frame["message"]["data"]["type"] == "candidate" {
                self.route(&frame);
                continue;
            }
            if pred(&frame) {
                return Ok(frame);
            }
        }
    }

    fn route(&mut self, frame: &Value) {
        let data = &frame["message"]["data"];
        let from = data["from"]
            .as_str()
            .or_else(|| frame["message"]["sender"]["sessionid"].as_str())
            .unwrap_or_default()
            .to_string();
        if std::env::var_os("HPB_BENCH_DEBUG").is_some() {
            note(&format!(
                "{}: candidate from {from}: {}",
                self.name, data["payload"]
            ));
        }
        let Some(c) = data["payload"]["candidate"]["candidate"]
            .as_str()
            .and_then(media::parse_candidate)
        else {
            return;
        };
        match self
            .routes
            .entry(from)
            .or_insert_with(|| Route::Early(Vec::new()))
        {
            Route::Early(v) => v.push(c),
            Route::Live(tx) => {
                let _ = tx.send(c);
            }
        }
    }

    /// The candidate channel of the peer for `from`, with any early candidates in it.
    fn candidates(&mut self, from: &str) -> media::Candidates {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(Route::Early(v)) = self.routes.remove(from) {
            for c in v {
                let _ = tx.send(c);
            }
        }
        self.routes.insert(from.to_string(), Route::Live(tx));
        rx
    }

    /// Publishes audio + video as `room_type`: offer to the own session, the answer back.
    pub async fn publish(
        &mut self,
        shape: Shape,
        room_type: &str,
        stop: watch::Receiver<bool>,
    ) -> Result<(std::sync::Arc<PubStats>, PublisherTask)> {
        let (pending, offer) = media::publisher_offer(self.ip).await?;
        let own = self.id.clone();
        let sid = format!("{}", super::payload::now_us() + 1_000_000_000);
        let req = self
            .send(
                &own,
                json!({"to": own, "type": "offer", "sid": sid, "roomType": room_type,
                       "payload": {"type": "offer", "sdp": offer, "nick": self.name}}),
            )
            .await;
        let answer = self
            .wait("answer", &req, |f| f["message"]["data"]["type"] == "answer")
            .await?;
        let sdp = answer["message"]["data"]["payload"]["sdp"]
            .as_str()
            .context("answer without sdp")?;
        let (peer, audio, video) = pending.accept_answer(sdp)?;
        let candidates = self.candidates(&own);
        Ok(media::spawn_publisher(
            peer,
            (audio, video),
            shape,
            candidates,
            stop,
        ))
    }

    /// Subscribes to `publisher`'s `room_type` stream: requestoffer (retried while the server
    /// does not know the publisher yet), the offer, our answer.
    pub async fn subscribe(
        &mut self,
        publisher: &str,
        room_type: &str,
        stop: watch::Receiver<bool>,
    ) -> Result<(std::sync::Arc<SubStats>, SubscriberTask)> {
        let deadline = Instant::now() + STEP;
        let offer = loop {
            let req = self
                .send(
                    publisher,
                    json!({"to": publisher, "type": "requestoffer", "roomType": room_type}),
                )
                .await;
            let from_publisher = |f: &Value| {
                let d = &f["message"]["data"];
                d["type"] == "offer"
                    && (d["from"] == publisher || f["message"]["sender"]["sessionid"] == publisher)
            };
            match self.wait("offer", &req, from_publisher).await {
                Ok(offer) => break offer,
                Err(e) if Instant::now() < deadline => {
                    note(&format!("{e}; retrying"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let data = &offer["message"]["data"];
        let sid = data["sid"].clone();
        let room_type = data["roomType"].as_str().unwrap_or(room_type).to_string();
        let sdp = data["payload"]["sdp"]
            .as_str()
            .context("offer without sdp")?
            .to_string();
        let (peer, answer) = media::subscriber_from_offer(self.ip, &sdp).await?;
        self.send(
            publisher,
            json!({"to": publisher, "type": "answer", "sid": sid, "roomType": room_type,
                   "payload": {"type": "answer", "sdp": answer, "nick": self.name}}),
        )
        .await;
        let candidates = self.candidates(publisher);
        Ok(media::spawn_subscriber(peer, candidates, stop))
    }

    /// Keeps routing trickled candidates (and reading the socket) until `stop`.
    pub fn pump(mut self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    frame = self.client.recv(Duration::from_secs(3600)) => {
                        let Some(frame) = frame else { return };
                        if frame["type"] == "message"
                            && frame["message"]["data"]["type"] == "candidate"
                        {
                            self.route(&frame);
                        }
                    }
                }
            }
        })
    }
}

/// Puts every session of `room` in the call (flags 7) through the backend API, as Talk does
/// when participants join the call; both the `changed` list (all servers) and `all`.
pub async fn everyone_in_call(
    nc: &FakeNextcloud,
    base: &str,
    room: &str,
    sessions: &[&Session],
) -> Result<()> {
    let entries: Vec<Value> = sessions
        .iter()
        .map(|s| {
            json!({"inCall": 7, "sessionId": s.room_session, "participantType": 4,
                   "lastPing": 0, "actorType": "guests", "actorId": s.name,
                   "participantPermissions": 254,
                   "permissions": ["publish-media", "publish-audio", "publish-video", "publish-screen"]})
        })
        .collect();
    let body =
        json!({"type": "incall", "incall": {"incall": 7, "changed": entries, "users": entries}});
    let (status, _, text) = nc.post_room(base, room, body).await;
    if status != 200 {
        bail!("incall for {room}: HTTP {status}: {text}");
    }
    Ok(())
}
