//! The transports besides one IPv4 UDP socket: ICE-TCP (RFC 6544 passive candidates, RFC 4571
//! framing) for clients that can reach the SFU only over TCP, on the SFU's own listener and
//! through connections handed over from a shared public port (garbage there is closed), and
//! IPv6 media on a second UDP socket.

use std::time::Duration;

use hpb_sfu::{McuCommand, McuEvent, McuReply, Sfu, SfuConfig, StreamType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::client::ClientEvent;
use crate::*;

async fn start_tcp(
    public: Option<std::net::SocketAddr>,
) -> (Sfu, tokio::sync::mpsc::UnboundedReceiver<McuEvent>) {
    init_log();
    Sfu::start(SfuConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tcp_listen: public
            .is_none()
            .then(|| "127.0.0.1:0".parse().expect("addr")),
        public_tcp: public,
        publisher_wait: Duration::from_millis(500),
        ..SfuConfig::default()
    })
    .await
    .expect("the SFU starts")
}

/// Publish over ICE-TCP; returns the client and the SFU's answer.
async fn publish_tcp(sfu: &Sfu) -> (client::Client, String) {
    let (pending, offer) = client::publisher_offer_tcp().await;
    let reply = sfu
        .request(McuCommand::Publish {
            session: "alice".into(),
            stream: StreamType::Video,
            sid: "1".into(),
            sdp: offer,
            max_bitrate: 1_000_000,
        })
        .await;
    let McuReply::Answer { sdp } = reply else {
        panic!("publish failed: {reply:?}");
    };
    (pending.accept_answer(&sdp), sdp)
}

async fn subscribe_tcp(sfu: &Sfu, name: &str) -> client::Client {
    let reply = sfu.request(subscribe_cmd(name, "alice", "")).await;
    let McuReply::Offer { sdp, sid } = reply else {
        panic!("subscribe failed: {reply:?}");
    };
    let (client, answer) = client::subscriber_from_offer_tcp(&sdp).await;
    let r = sfu
        .request(McuCommand::SubscriberAnswer {
            subscriber: name.into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            sid,
            sdp: answer,
        })
        .await;
    assert_eq!(r, McuReply::Done);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_only_publisher_and_subscribers_get_media_over_ice_tcp() {
    let (sfu, mut events) = start_tcp(None).await;
    let tcp = sfu.tcp_addr().expect("the SFU has a TCP listener");
    let (mut publisher, answer) = publish_tcp(&sfu).await;
    assert!(
        answer.contains(&format!(
            "127.0.0.1 {} typ host tcptype passive",
            tcp.port()
        )),
        "the answer offers the passive TCP candidate: {answer}"
    );
    // The TCP candidate is trickled too.
    event(&mut events, "the TCP candidate", |e| {
        matches!(e, McuEvent::Candidate { candidate, .. } if candidate.candidate.contains("tcptype passive"))
    })
    .await;
    publisher
        .wait_for("publisher connected over TCP", WAIT, |e| {
            matches!(e, ClientEvent::Connected)
        })
        .await;
    let mut bob = subscribe_tcp(&sfu, "bob").await;
    // A UDP subscriber of the TCP publisher works the same.
    let (mut carol, _) = subscribe(&sfu, "carol", "alice").await;
    expect_media(&mut bob).await;
    expect_media(&mut carol).await;
    assert!(metric(&sfu, "hpb_sfu_tcp_received_frames_total") > 0);
    assert!(metric(&sfu, "hpb_sfu_tcp_sent_frames_total") > 0);
    assert!(metric(&sfu, "hpb_sfu_tcp_sent_bytes_total") > 0);
    // Unpublishing closes the TCP subscriber actively (DTLS close_notify over TCP).
    let r = sfu
        .request(McuCommand::Unpublish {
            session: "alice".into(),
            stream: StreamType::Video,
        })
        .await;
    assert_eq!(r, McuReply::Done);
    bob.wait_for("close_notify over TCP", WAIT, |e| {
        matches!(e, ClientEvent::Closed | ClientEvent::Disconnected)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_handed_over_from_a_shared_port_carry_ice_tcp() {
    // The test plays hpb's public port: it accepts and hands each connection to the SFU.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let public = listener.local_addr().expect("addr");
    let (sfu, _events) = start_tcp(Some(public)).await;
    let sfu = std::sync::Arc::new(sfu);
    let acceptor = {
        let sfu = sfu.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                sfu.accept_tcp(s);
            }
        })
    };
    let (mut publisher, answer) = publish_tcp(&sfu).await;
    assert!(
        answer.contains(&format!(
            "127.0.0.1 {} typ host tcptype passive",
            public.port()
        )),
        "the shared port is the TCP candidate: {answer}"
    );
    publisher
        .wait_for("publisher connected via the shared port", WAIT, |e| {
            matches!(e, ClientEvent::Connected)
        })
        .await;
    let mut bob = subscribe_tcp(&sfu, "bob").await;
    expect_media(&mut bob).await;
    acceptor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_ice_tcp_port_is_closed_and_media_goes_on() {
    let (sfu, _events) = start_tcp(None).await;
    let tcp = sfu.tcp_addr().expect("listener");
    let (mut publisher, _) = publish_tcp(&sfu).await;
    publisher
        .wait_for("publisher connected", WAIT, |e| {
            matches!(e, ClientEvent::Connected)
        })
        .await;
    // Not STUN in the first frame: closed.
    let mut junk = tokio::net::TcpStream::connect(tcp).await.expect("connect");
    junk.write_all(b"\x00\x10GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, junk.read(&mut buf))
        .await
        .expect("the SFU closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // A framed STUN request for an unknown ufrag gets nothing, and the publisher is fine.
    let mut stranger = tokio::net::TcpStream::connect(tcp).await.expect("connect");
    let mut stun = vec![0x00, 0x14, 0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9u8; 12]);
    stranger.write_all(&stun).await.expect("write");
    let mut bob = subscribe_tcp(&sfu, "bob").await;
    expect_media(&mut bob).await;
    assert!(metric(&sfu, "hpb_sfu_tcp_ignored_frames_total") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_subscriber_gets_media_on_the_ipv6_socket() {
    init_log();
    let (sfu, _events) = Sfu::start(SfuConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        listen_v6: Some("[::1]:0".parse().expect("addr")),
        ..SfuConfig::default()
    })
    .await
    .expect("the SFU starts");
    let mut publisher = publish(&sfu, "alice").await;
    publisher
        .wait_for("publisher connected", WAIT, |e| {
            matches!(e, ClientEvent::Connected)
        })
        .await;
    let reply = sfu.request(subscribe_cmd("bob", "alice", "")).await;
    let McuReply::Offer { sdp, sid } = reply else {
        panic!("subscribe failed: {reply:?}");
    };
    assert!(
        sdp.contains(" ::1 "),
        "an IPv6 host candidate is offered: {sdp}"
    );
    let (mut bob, answer) = client::subscriber_from_offer_v6(&sdp).await;
    let r = sfu
        .request(McuCommand::SubscriberAnswer {
            subscriber: "bob".into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            sid,
            sdp: answer,
        })
        .await;
    assert_eq!(r, McuReply::Done);
    expect_media(&mut bob).await;
}
