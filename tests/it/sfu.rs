//! End-to-end: a Talk call through the built-in SFU. aiortc clients (tests/media/talk_client.py)
//! do exactly what the Talk web client does with an MCU: one publishes audio, video and a data
//! channel with an offer to its own session, two others subscribe with `requestoffer`; the
//! subscribers decode the counter drawn into the publisher's frames.

use std::process::Stdio;
use std::time::Duration;

use hpb_test_support::free_port;
use hpb_test_support::{FakeNextcloud, Hpb, free_config};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

struct Client {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    sessionid: String,
}

fn script() -> String {
    format!("{}/media/talk_client.py", env!("CARGO_MANIFEST_DIR"))
}

async fn start(
    hpb: &Hpb,
    nc: &FakeNextcloud,
    role: &str,
    user: &str,
    seconds: u32,
    publisher: Option<&str>,
) -> Client {
    start_with(hpb, nc, role, user, seconds, publisher, &[]).await
}

async fn start_with(
    hpb: &Hpb,
    nc: &FakeNextcloud,
    role: &str,
    user: &str,
    seconds: u32,
    publisher: Option<&str>,
    extra: &[String],
) -> Client {
    let mut cmd = Command::new("python3");
    cmd.arg(script())
        .arg(role)
        .args(["--ws", &hpb.ws_url()])
        .args(["--backend", &nc.backend_url()])
        .args(["--user", user])
        .args(["--ticket", &nc.ticket(user)])
        .args(["--room", "call"])
        .args(["--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // `--opt=value`: a session id may start with '-', which argparse would take for an option.
    if let Some(p) = publisher {
        cmd.arg(format!("--publisher={p}"));
    }
    cmd.args(extra);
    let mut child = cmd
        .spawn()
        .expect("python3 with aiortc (cargo xtask deps installs it)");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the client joins within 20 s")
        .expect("client output")
        .expect("a ready line");
    let ready: Value = serde_json::from_str(&ready).expect("JSON ready line");
    let sessionid = ready["ready"].as_str().expect("session id").to_string();
    Client {
        child,
        lines,
        sessionid,
    }
}

async fn finish(mut c: Client) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), c.lines.next_line())
        .await
        .expect("the client finishes within 60 s")
        .expect("client output")
        .expect("a result line");
    let _ = c.child.wait().await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("result line {line:?}: {e}"))
}

/// The client's run ended without a failure.
fn succeeded(result: &Value, role: &str) {
    assert!(result.get("failure").is_none(), "{role}: {result}");
}

/// A viewer decoded at least `frames` video frames carrying the publisher's counter, and
/// the counter only increased.
fn decoded_counter(viewer: &Value, frames: u64) {
    succeeded(viewer, "viewer");
    assert!(
        viewer["video_frames"].as_u64().unwrap_or(0) >= frames,
        "decoded frames with the publisher's counter: {viewer}"
    );
    assert_eq!(
        viewer["monotonic"], true,
        "the counter only increases: {viewer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_sfu_with_one_publisher_and_two_subscribers() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("call");
    let hpb = Hpb::start(&free_config(&nc, "[sfu]\nlisten = \"127.0.0.1:0\"\n")).await;

    let alice = start(&hpb, &nc, "publish", "alice", 10, None).await;
    let bob = start(&hpb, &nc, "subscribe", "bob", 6, Some(&alice.sessionid)).await;
    let carol = start(&hpb, &nc, "subscribe", "carol", 6, Some(&alice.sessionid)).await;
    // Talk puts the participants in the call through the backend; requestoffer needs it.
    nc.put_everyone_in_call(&hpb.http_url(), "call").await;
    let alice_id = alice.sessionid.clone();

    let (a, b, c) = tokio::join!(finish(alice), finish(bob), finish(carol));
    succeeded(&a, "publisher");
    assert_eq!(a["answer_sender"]["sessionid"], alice_id.as_str(), "{a}");
    assert!(a["frames_sent"].as_u64().unwrap_or(0) > 100, "{a}");
    for sub in [&b, &c] {
        decoded_counter(sub, 30);
        // The offer comes "from" the publisher, as Janus' did through upstream signaling.
        assert_eq!(sub["offer_sender"]["sessionid"], alice_id.as_str(), "{sub}");
        assert_eq!(sub["offer_from"], alice_id.as_str(), "{sub}");
        assert!(sub["audio_frames"].as_u64().unwrap_or(0) >= 50, "{sub}");
        assert!(
            sub["audio_energy"].as_f64().unwrap_or(0.0) > 100.0,
            "the 440 Hz tone arrives: {sub}"
        );
        assert!(
            sub["datachannel_messages"].as_u64().unwrap_or(0) > 0,
            "the publisher's data channel messages reach the subscriber: {sub}"
        );
    }
}

/// Clients behind a firewall that lets only TURN through: relay-only ICE via hpb's own TURN
/// server, with credentials from hpb's `/turn/credentials` as Talk hands them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_through_hpbs_own_turn_with_relay_only_ice() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("call");
    let turn_port = free_port();
    let hpb = Hpb::start(&free_config(
        &nc,
        &format!(
            "[sfu]\nlisten = \"127.0.0.1:0\"\n\n\
             [turn]\nsecret = \"turn-secret\"\napikey = \"api-key\"\ndomain = \"127.0.0.1\"\nlisten = [\"127.0.0.1:{turn_port}\"]\n"
        ),
    ))
    .await;
    let creds: Value = reqwest::get(format!(
        "{}/turn/credentials?service=turn&key=api-key",
        hpb.http_url()
    ))
    .await
    .expect("GET /turn/credentials")
    .json()
    .await
    .expect("JSON credentials");
    let uri = creds["uris"][0].as_str().expect("a TURN URI").to_string();
    assert!(uri.ends_with("transport=udp"), "{creds}");
    let turn_args = vec![
        "--turn".to_string(),
        uri.split('?').next().unwrap_or_default().to_string(),
        "--turn-user".to_string(),
        creds["username"].as_str().expect("username").to_string(),
        "--turn-password".to_string(),
        creds["password"].as_str().expect("password").to_string(),
    ];

    let alice = start_with(&hpb, &nc, "publish", "alice", 10, None, &turn_args).await;
    let bob = start_with(
        &hpb,
        &nc,
        "subscribe",
        "bob",
        6,
        Some(&alice.sessionid),
        &turn_args,
    )
    .await;
    nc.put_everyone_in_call(&hpb.http_url(), "call").await;
    let (a, b) = tokio::join!(finish(alice), finish(bob));
    succeeded(&a, "publisher");
    decoded_counter(&b, 30);
    assert_eq!(
        a["candidate_type"], "relay",
        "the publisher's media went through TURN: {a}"
    );
    assert_eq!(
        b["candidate_type"], "relay",
        "the subscriber's media went through TURN: {b}"
    );
    // No loopback exception was configured: the relay to our own SFU is allowed by itself.
    let metrics = reqwest::get(format!("{}/metrics", hpb.http_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("hpb_turn_refused_peers_total 0"),
        "no peer refused: {metrics}"
    );
    // TURN and the SFU share the process: the relayed media skipped the sockets between
    // them both ways, and every datagram the SFU got came that way.
    let count = |name: &str| metric(&metrics, name).unwrap_or(0);
    assert!(
        count("hpb_turn_sfu_in_process_packets_total{direction=\"to_sfu\"}") > 100,
        "client media reached the SFU in-process: {metrics}"
    );
    assert!(
        count("hpb_turn_sfu_in_process_packets_total{direction=\"from_sfu\"}") > 100,
        "SFU media reached the clients in-process: {metrics}"
    );
    let relayed_in = count("hpb_sfu_turn_in_process_received_packets_total");
    assert_eq!(
        relayed_in,
        count("hpb_sfu_udp_received_packets_total"),
        "every UDP datagram the SFU received came from TURN in-process: {metrics}"
    );
    assert!(
        count("hpb_sfu_turn_in_process_sent_packets_total") > 100,
        "the SFU sent to the relayed clients in-process: {metrics}"
    );
    assert_eq!(count("hpb_sfu_turn_in_process_dropped_packets_total"), 0);
}

/// The value of an unlabelled metric line.
pub(crate) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Talk's screen share: a publish with roomType screen, `sendoffer` to every other session
/// (the SFU pushes them an offer as if from the sharer), and `unshareScreen` at the end,
/// after which the SFU closes the screen publisher and its subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_share_is_pushed_with_sendoffer_and_ends_with_unshare_screen() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("call");
    let hpb = Hpb::start(&free_config(&nc, "[sfu]\nlisten = \"127.0.0.1:0\"\n")).await;
    let bob = start(&hpb, &nc, "watch", "bob", 5, None).await;
    let carol = start(&hpb, &nc, "watch", "carol", 5, None).await;
    let targets = format!("{},{}", bob.sessionid, carol.sessionid);
    let alice = start_with(
        &hpb,
        &nc,
        "screenshare",
        "alice",
        6,
        None,
        &[
            format!("--targets={targets}"),
            "--linger".into(),
            "10".into(),
        ],
    )
    .await;
    let alice_id = alice.sessionid.clone();
    let (b, c) = tokio::join!(finish(bob), finish(carol));
    let mut alice = alice;
    let unshared = tokio::time::timeout(Duration::from_secs(30), alice.lines.next_line())
        .await
        .expect("the sharer stops sharing")
        .expect("output")
        .expect("a line");
    assert!(unshared.contains("unshared"), "{unshared}");
    // While the sharer's connection is still open, the SFU closes the screen publisher and
    // its subscriptions because of unshareScreen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let text = reqwest::get(format!("{}/metrics", hpb.http_url()))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        let (p, s) = (
            metric(&text, "hpb_sfu_publishers"),
            metric(&text, "hpb_sfu_subscribers"),
        );
        if p == Some(0) && s == Some(0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the screen publisher and its subscribers are still there: {p:?} {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = finish(alice).await;
    succeeded(&a, "sharer");
    for w in [&b, &c] {
        decoded_counter(w, 20);
        assert_eq!(w["room_type"], "screen", "{w}");
        assert_eq!(w["offer_from"], alice_id.as_str(), "{w}");
    }
}

/// Forced loss: the subscriber loses every 15th video packet on arrival. aiortc asks again
/// with RTCP NACKs, the SFU answers them with RTX retransmissions from its send buffer, and
/// the subscriber keeps decoding the publisher's counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_nacked_and_recovered_with_rtx() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("call");
    let hpb = Hpb::start(&free_config(&nc, "[sfu]\nlisten = \"127.0.0.1:0\"\n")).await;
    let alice = start(&hpb, &nc, "publish", "alice", 10, None).await;
    let drop = ["--drop-video-every".to_string(), "15".to_string()];
    let bob = start_with(
        &hpb,
        &nc,
        "subscribe",
        "bob",
        7,
        Some(&alice.sessionid),
        &drop,
    )
    .await;
    nc.put_everyone_in_call(&hpb.http_url(), "call").await;
    let (a, b) = tokio::join!(finish(alice), finish(bob));
    succeeded(&a, "publisher");
    decoded_counter(&b, 30);
    let dropped = b["dropped_video_packets"].as_u64().unwrap_or(0);
    assert!(dropped >= 10, "the forced loss happened: {b}");
    let metrics = reqwest::get(format!("{}/metrics", hpb.http_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    // NACK counts come from str0m's stats, up to a second late; the client has finished
    // by now and hpb keeps the totals.
    let nacks = metric(&metrics, "hpb_sfu_nacks_received_total").unwrap_or(0);
    let rtx = metric(&metrics, "hpb_sfu_retransmitted_packets_total").unwrap_or(0);
    eprintln!("forced loss: {dropped} video packets dropped, {nacks} NACKs, {rtx} RTX sent");
    assert!(nacks > 0, "aiortc NACKed the losses: {b}\n{metrics}");
    assert!(
        rtx * 2 >= dropped,
        "most of the {dropped} lost packets were retransmitted (RTX sent: {rtx}): {b}\n{metrics}"
    );
}

/// IPv6 media: with `[sfu] listen_v6` the SFU has a second socket and announces it; clients
/// whose only address is ::1 publish and subscribe over IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_publish_and_subscribe_on_the_ipv6_socket() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("call");
    let hpb = Hpb::start(&free_config(
        &nc,
        "[sfu]\nlisten = \"127.0.0.1:0\"\nlisten_v6 = \"[::1]:0\"\n",
    ))
    .await;
    let v6 = ["--ipv6".to_string()];
    let alice = start_with(&hpb, &nc, "publish", "alice", 8, None, &v6).await;
    let bob = start_with(
        &hpb,
        &nc,
        "subscribe",
        "bob",
        5,
        Some(&alice.sessionid),
        &v6,
    )
    .await;
    nc.put_everyone_in_call(&hpb.http_url(), "call").await;
    let (a, b) = tokio::join!(finish(alice), finish(bob));
    succeeded(&a, "publisher");
    decoded_counter(&b, 30);
    assert_eq!(b["remote_address"], "::1", "media came over IPv6: {b}");
}
