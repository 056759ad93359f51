//! Deterministic "nothing more is coming" for tests: a message with a recipient type that
//! does not exist is answered with `invalid_format` in order with everything else, so every
//! frame queued before it has arrived once its reply is read. No sleeping, no timing.

use serde_json::{Value, json};

use crate::{DEFAULT_TIMEOUT, FakeNextcloud, HelloInfo, Hpb, TestClient, error_code};

/// Connects and says hello v1 as `user` of `nc`.
pub async fn connect_user(hpb: &Hpb, nc: &FakeNextcloud, user: &str) -> (TestClient, HelloInfo) {
    let mut c = TestClient::connect(hpb.addr()).await;
    let hello = c.hello_v1(&nc.backend_url(), user, &nc.ticket(user)).await;
    (c, hello)
}

/// Every frame the server queued for `c` before now.
pub async fn sync(c: &mut TestClient) -> Vec<Value> {
    let id = c
        .send_with_id(json!({"type": "message", "message": {"recipient": {"type": "sync-barrier"}, "data": {}}}))
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = c
            .recv(DEFAULT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no reply to the sync barrier; frames so far: {frames:?}"));
        if frame["id"] == id.as_str() {
            assert_eq!(error_code(&frame), "invalid_format", "{frame}");
            return frames;
        }
        frames.push(frame);
    }
}

/// Waits until everything the clients caused so far has been delivered and drops it: one
/// barrier each makes sure the server finished their earlier requests (a join reply is
/// sent before the join events), a second one collects what those requests sent.
pub async fn settle(clients: &mut [&mut TestClient]) {
    for c in clients.iter_mut() {
        sync(c).await;
    }
    for c in clients.iter_mut() {
        sync(c).await;
    }
}
