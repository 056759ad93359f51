//! End-to-end: nothing lost under load; slow clients disconnected with a reason.
//!
//! Upstream drops a session's messages past 64 queued ones; hpb must deliver every
//! message to every session, and a client that stops reading must be disconnected with a
//! close reason instead of being starved silently.

use std::collections::HashMap;
use std::time::Duration;

use hpb_test_support::{DEFAULT_TIMEOUT, FakeNextcloud, Hpb, TestClient, free_config};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const SESSIONS: usize = 1000;
const SENDERS: usize = 5;
const MESSAGES_PER_SENDER: usize = 40;
/// Generous bound for one phase of the test on a loaded 2-core machine (debug build).
const PHASE_TIMEOUT: Duration = Duration::from_secs(240);

/// Connects `n` guests and joins them to `room`, `parallel` at a time.
async fn join_guests(hpb: &Hpb, nc: &FakeNextcloud, room: &str, n: usize) -> Vec<TestClient> {
    let mut clients = Vec::with_capacity(n);
    let parallel = 25;
    for chunk in 0..n.div_ceil(parallel) {
        let mut set = JoinSet::new();
        for i in chunk * parallel..((chunk + 1) * parallel).min(n) {
            let addr = hpb.addr();
            let backend = nc.backend_url();
            let ticket = nc.guest_ticket();
            let room = room.to_string();
            set.spawn(async move {
                let mut c = TestClient::connect(addr).await;
                c.request_timeout = Duration::from_secs(30);
                c.hello_v1(&backend, None, &ticket).await;
                c.join(&room, format!("talk-session-{i}").as_str()).await;
                (i, c)
            });
        }
        let mut batch: Vec<(usize, TestClient)> = set.join_all().await;
        batch.sort_by_key(|(i, _)| *i);
        clients.extend(batch.into_iter().map(|(_, c)| c));
    }
    clients
}

/// Reads frames until `expected` room messages arrived (or the timeout passed); returns
/// the `seq` numbers received per sender.
async fn collect_messages(
    mut client: TestClient,
    expected: usize,
) -> (TestClient, HashMap<String, Vec<u64>>) {
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while count < expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = client.recv(left).await else {
            break;
        };
        if frame["type"] == "message" && frame["message"]["data"]["type"] == "burst" {
            let sender = frame["message"]["sender"]["sessionid"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            let seq = frame["message"]["data"]["seq"].as_u64().unwrap_or(u64::MAX);
            got.entry(sender).or_default().push(seq);
            count += 1;
        }
    }
    (client, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_1000_sessions_gets_every_message_of_a_burst() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("big-room");
    let hpb = Hpb::start(&free_config(&nc, "")).await;

    let mut clients = join_guests(&hpb, &nc, "big-room", SESSIONS).await;
    assert_eq!(clients.len(), SESSIONS);
    let sender_ids: Vec<String> = clients[..SENDERS]
        .iter()
        .map(|c| c.sessionid().to_string())
        .collect();

    // The senders burst while nobody reads: every receiver's frames pile up in hpb's
    // queues (upstream drops a session's messages past 64 queued ones).
    let mut sending = JoinSet::new();
    for mut s in clients.drain(..SENDERS) {
        sending.spawn(async move {
            for seq in 0..MESSAGES_PER_SENDER {
                s.message_room(json!({"type": "burst", "seq": seq, "pad": "x".repeat(200)}))
                    .await;
            }
            s
        });
    }
    let senders = sending.join_all().await;

    let mut reading = JoinSet::new();
    for r in clients.drain(..) {
        reading.spawn(collect_messages(r, SENDERS * MESSAGES_PER_SENDER));
    }
    for s in senders {
        // A sender sees the other senders' messages, not its own.
        reading.spawn(collect_messages(s, (SENDERS - 1) * MESSAGES_PER_SENDER));
    }
    let results = reading.join_all().await;
    let mut lost = Vec::new();
    assert_eq!(results.len(), SESSIONS);
    for (client, got) in &results {
        let me = client.sessionid().to_string();
        for sender in &sender_ids {
            if *sender == me {
                assert!(!got.contains_key(sender), "{me} got its own room message");
                continue;
            }
            let seqs = got.get(sender).cloned().unwrap_or_default();
            let want: Vec<u64> = (0..MESSAGES_PER_SENDER as u64).collect();
            if seqs != want {
                lost.push(format!(
                    "{me}: from {sender} got {} of {MESSAGES_PER_SENDER} (in order: {}), closed: {}",
                    seqs.len(),
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    client.is_closed()
                ));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} (receiver, sender) pairs lost or reordered messages, e.g.:\n{}",
        lost.len(),
        SESSIONS * SENDERS,
        lost.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_with_a_reason() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    // A small queue so the test fills it quickly.
    let hpb = Hpb::start(&free_config(
        &nc,
        "[limits]\nmax_queued_messages = 50\nclient_rate = 100000\nclient_burst = 100000\n",
    ))
    .await;

    let mut slow = TestClient::connect(hpb.addr()).await;
    let slow_info = slow
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    slow.join("room1", "alice-session").await;
    let mut fast = TestClient::connect(hpb.addr()).await;
    fast.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    fast.join("room1", "bob-session").await;

    // Large messages fill the kernel's socket buffers first, then hpb's queue. `slow`
    // reads nothing meanwhile.
    let pad = "y".repeat(32 * 1024);
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut disconnected = false;
    while tokio::time::Instant::now() < deadline {
        for _ in 0..20 {
            fast.message_session(&slow_info.sessionid, json!({"type": "fill", "pad": pad}))
                .await;
            sent += 1;
        }
        // The hub reports the disconnect to the room as a leave event.
        if let Some(leave) = fast
            .wait_for(
                |f| {
                    f["type"] == "event"
                        && f["event"]["type"] == "leave"
                        && f["event"]["leave"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|s| s == slow_info.sessionid.as_str()))
                },
                Duration::from_millis(50),
            )
            .await
        {
            let _: Value = leave;
            disconnected = true;
            break;
        }
        if hpb.logs().contains("too slow") {
            disconnected = true;
            break;
        }
    }
    assert!(
        disconnected,
        "hpb did not disconnect a client that read nothing after {sent} frames of 32 KiB"
    );
    assert!(
        hpb.wait_for_log("too slow", DEFAULT_TIMEOUT).await,
        "the disconnect is logged with its reason"
    );

    // When the slow client reads again it finds the close with the reason (after whatever
    // the kernel had buffered).
    let close = slow
        .recv_close(Duration::from_secs(30))
        .await
        .expect("the slow client's connection ends");
    assert!(close.reason.contains("too slow"), "close: {close:?}");
    assert!(
        close.reason.contains("max_queued_messages"),
        "the reason names the setting: {close:?}"
    );
    let bye = close.bye.as_ref().expect("a bye before the close");
    assert_eq!(bye["bye"]["reason"], "slow_client", "{bye}");

    // The fast client is unaffected.
    let bye = fast.bye().await;
    assert_eq!(bye["type"], "bye", "{bye}");
}
