//! Every TURN message type and error code against a real server on loopback, with the
//! independent client in `client.rs`: Binding, the long-term credential dance (401, 438,
//! REST usernames, secret rotation), Allocate/Refresh/CreatePermission/ChannelBind and their
//! errors, Send/Data indications and ChannelData to a real UDP peer, expiry, quotas,
//! bandwidth caps, the peer deny-list, IPv6, TCP framing and garbage.

use std::net::SocketAddr;
use std::time::Duration;

use hpb_turn::{TurnConfig, TurnServer};

use crate::client::{
    Class, Client, Msg, Peer, attr, decode, method, rest_credentials, rest_password, unix_now,
};
use crate::support::{REALM, SECRET, loopback_config, metric, start, udp_addr, wait_metric};

fn auth_failures(reason: &str) -> String {
    format!("hpb_turn_auth_failures_total{{reason=\"{reason}\"}}")
}

async fn udp_client(s: &TurnServer, user: &str) -> Client {
    let (u, p) = rest_credentials(SECRET, user);
    Client::udp(udp_addr(s), &u, &p).await
}

async fn tcp_client(s: &TurnServer, user: &str) -> Client {
    let (u, p) = rest_credentials(SECRET, user);
    Client::tcp(s.tcp[0], &u, &p).await
}

fn allocate_msg() -> Msg {
    Msg::request(method::ALLOCATE).transport(17)
}

fn assert_error(r: &crate::client::Resp, code: u16) {
    assert_eq!(r.class, Class::Error, "expected {code}: {}", r.describe());
    assert_eq!(r.code(), Some(code), "expected {code}: {}", r.describe());
}

async fn start_with(f: impl FnOnce(&mut TurnConfig)) -> TurnServer {
    let mut cfg = loopback_config();
    f(&mut cfg);
    start(cfg).await
}

#[tokio::test]
async fn binding_udp_answers_xor_mapped_address_with_fingerprint() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    // With and without FINGERPRINT in the request, and a comprehension-optional attribute.
    for m in [
        Msg::request(method::BINDING),
        Msg::request(method::BINDING).attr(0x8777, b"optional"),
    ] {
        let r = c.transact(&m, None).await;
        assert_eq!((r.method, r.class), (method::BINDING, Class::Success));
        assert_eq!(r.txid, m.txid);
        assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(c.local_addr()));
        assert!(r.fingerprint);
    }
    let m = Msg::request(method::BINDING);
    let r = c.transact_raw(&m.encode(None, false), m.txid).await;
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(c.local_addr()));
    assert!(metric(&s, "hpb_turn_stun_bindings_total") >= 3);
}

#[tokio::test]
async fn binding_over_tcp() {
    let s = start(loopback_config()).await;
    let mut c = tcp_client(&s, "alice").await;
    let m = Msg::request(method::BINDING);
    let r = c.transact(&m, None).await;
    assert_eq!(r.class, Class::Success);
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(c.local_addr()));
}

#[tokio::test]
async fn allocate_is_challenged_with_realm_and_nonce_then_succeeds() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let m = allocate_msg();
    let r = c.transact(&m, None).await;
    assert_error(&r, 401);
    assert_eq!(r.get(attr::REALM), Some(REALM.as_bytes()));
    assert!(r.get(attr::NONCE).is_some_and(|n| !n.is_empty()));
    assert!(!r.has(attr::MESSAGE_INTEGRITY));
    c.learn(&r);
    let r = c.signed(&m.renew()).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    assert!(r.integrity_ok(&c.key()), "the success is signed");
    let relayed = r.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    assert_eq!(relayed.ip(), c.local_addr().ip());
    assert!(relayed.port() >= 49152);
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(c.local_addr()));
    assert_eq!(r.u32(attr::LIFETIME), Some(600));
    assert_eq!(metric(&s, "hpb_turn_allocations"), 1);
    assert_eq!(metric(&s, "hpb_turn_allocations_total"), 1);
}

#[tokio::test]
async fn wrong_password_is_401_and_counted() {
    let s = start(loopback_config()).await;
    let (u, _) = rest_credentials(SECRET, "mallory");
    let wrong = rest_password(b"another secret", &u);
    let mut c = Client::udp(udp_addr(&s), &u, &wrong).await;
    let r = c.request(allocate_msg()).await;
    assert_error(&r, 401);
    assert_eq!(r.get(attr::REALM), Some(REALM.as_bytes()));
    assert!(r.has(attr::NONCE));
    assert_eq!(metric(&s, &auth_failures("wrong_password")), 1);
    assert_eq!(metric(&s, "hpb_turn_allocations"), 0);
    // A plain string as password (not the REST HMAC) fails the same way.
    c.password = "password".into();
    let r = c.signed(&allocate_msg()).await;
    assert_error(&r, 401);
    assert_eq!(metric(&s, &auth_failures("wrong_password")), 2);
}

#[tokio::test]
async fn expired_username_is_401() {
    let s = start(loopback_config()).await;
    let u = format!("{}:alice", unix_now() - 10);
    let p = rest_password(SECRET.as_bytes(), &u);
    let mut c = Client::udp(udp_addr(&s), &u, &p).await;
    let r = c.request(allocate_msg()).await;
    assert_error(&r, 401);
    assert_eq!(metric(&s, &auth_failures("expired")), 1);
}

#[tokio::test]
async fn username_not_expiry_colon_user_is_401() {
    let s = start(loopback_config()).await;
    for u in ["alice", "tomorrow:alice", ":alice", "12ab:alice"] {
        let p = rest_password(SECRET.as_bytes(), u);
        let mut c = Client::udp(udp_addr(&s), u, &p).await;
        let r = c.request(allocate_msg()).await;
        assert_error(&r, 401);
    }
    assert_eq!(metric(&s, &auth_failures("bad_username")), 4);
    // Without a user part the REST username is valid.
    let u = format!("{}", unix_now() + 3600);
    let p = rest_password(SECRET.as_bytes(), &u);
    let mut c = Client::udp(udp_addr(&s), &u, &p).await;
    c.allocate().await;
}

#[tokio::test]
async fn every_configured_secret_is_accepted_for_rotation() {
    let s = start_with(|c| c.secrets = vec![b"old-secret".to_vec(), b"new-secret".to_vec()]).await;
    for secret in ["old-secret", "new-secret"] {
        let (u, p) = rest_credentials(secret, "alice");
        let mut c = Client::udp(udp_addr(&s), &u, &p).await;
        c.allocate().await;
    }
    let (u, p) = rest_credentials("retired-secret", "alice");
    let mut c = Client::udp(udp_addr(&s), &u, &p).await;
    assert_error(&c.request(allocate_msg()).await, 401);
    assert_eq!(metric(&s, "hpb_turn_allocations"), 2);
}

#[tokio::test]
async fn stale_nonce_is_438_with_a_new_nonce() {
    let s = start_with(|c| c.nonce_lifetime = Duration::from_secs(1)).await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    let first = c.nonce.clone().expect("nonce");
    // The nonce's issue time has a resolution of a second: poll (bounded) until it is stale.
    // CreatePermission with a valid nonce succeeds and changes nothing that matters here.
    let peer = Peer::v4().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let stale = loop {
        let r = c
            .signed(
                &Msg::request(method::CREATE_PERMISSION).xor(attr::XOR_PEER_ADDRESS, peer.addr()),
            )
            .await;
        if r.code() == Some(438) {
            break r;
        }
        assert_eq!(r.class, Class::Success, "{}", r.describe());
        assert!(
            std::time::Instant::now() < deadline,
            "the nonce never went stale"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!stale.has(attr::MESSAGE_INTEGRITY));
    assert_eq!(stale.get(attr::REALM), Some(REALM.as_bytes()));
    let fresh = stale.get(attr::NONCE).expect("438 carries a new NONCE");
    assert_ne!(fresh, first.as_slice());
    c.learn(&stale);
    c.permit(peer.addr()).await;
    assert!(metric(&s, &auth_failures("stale_nonce")) >= 1);
}

#[tokio::test]
async fn wrong_realm_is_401_with_our_realm() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let r = c.transact(&allocate_msg(), None).await;
    c.learn(&r);
    c.realm = Some("other.realm".into());
    let r = c.signed(&allocate_msg()).await;
    assert_error(&r, 401);
    assert_eq!(r.get(attr::REALM), Some(REALM.as_bytes()));
    assert_eq!(metric(&s, &auth_failures("wrong_realm")), 1);
}

/// RFC 8489 §9.2.4: MESSAGE-INTEGRITY without USERNAME, REALM or NONCE is 400, not 401.
#[tokio::test]
async fn integrity_without_username_realm_or_nonce_is_400() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let r = c.transact(&allocate_msg(), None).await;
    c.learn(&r);
    let nonce = c.nonce.clone().expect("nonce");
    let key = c.key();
    let m = allocate_msg()
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, &nonce);
    let r = c.transact(&m, Some(&key)).await;
    assert_error(&r, 400);
    assert!(!r.has(attr::NONCE) && !r.has(attr::REALM));
    let m = allocate_msg().attr(attr::USERNAME, c.username.clone().as_bytes());
    let r = c.transact(&m, Some(&key)).await;
    assert_error(&r, 400);
    assert_eq!(metric(&s, &auth_failures("incomplete")), 2);
}

#[tokio::test]
async fn unknown_comprehension_required_attribute_is_420() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let r = c
        .transact(&Msg::request(method::BINDING).attr(0x7777, b"x"), None)
        .await;
    assert_error(&r, 420);
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x77, 0x77][..]));
    // Authenticated: the 420 comes after the credentials are checked, signed, listing each.
    let r = c
        .request(allocate_msg().attr(0x7777, b"x").attr(0x0333, b"yz"))
        .await;
    assert_error(&r, 420);
    assert_eq!(
        r.get(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x77, 0x77, 0x03, 0x33][..])
    );
    assert_eq!(metric(&s, "hpb_turn_allocations"), 0);
}

#[tokio::test]
async fn allocate_without_requested_transport_is_400_and_tcp_is_442() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    assert_error(&c.request(Msg::request(method::ALLOCATE)).await, 400);
    assert_error(
        &c.request(Msg::request(method::ALLOCATE).transport(6)).await,
        442,
    );
    assert_error(
        &c.request(Msg::request(method::ALLOCATE).transport(99))
            .await,
        442,
    );
    assert_eq!(metric(&s, "hpb_turn_allocations"), 0);
    c.allocate().await;
}

#[tokio::test]
async fn second_allocate_is_437_and_a_retransmission_gets_the_same_success() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let r = c.transact(&allocate_msg(), None).await;
    c.learn(&r);
    let m = allocate_msg();
    let bytes = c.sign(&m);
    let first = c.transact_raw(&bytes, m.txid).await;
    assert_eq!(first.class, Class::Success, "{}", first.describe());
    let again = c.transact_raw(&bytes, m.txid).await;
    assert_eq!(again.class, Class::Success, "{}", again.describe());
    assert!(again.integrity_ok(&c.key()));
    for a in [attr::XOR_RELAYED_ADDRESS, attr::XOR_MAPPED_ADDRESS] {
        assert_eq!(first.xor(a), again.xor(a));
    }
    let r = c.request(allocate_msg()).await;
    assert_error(&r, 437);
    assert_eq!(metric(&s, "hpb_turn_allocations"), 1);
}

#[tokio::test]
async fn lifetime_is_honoured_and_clamped() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let (_, _, l) = c
        .allocate_with(allocate_msg().u32(attr::LIFETIME, 1200))
        .await;
    assert_eq!(l, 1200);
    for (asked, got) in [(Some(100_000), 3600), (Some(30), 600), (None, 600)] {
        let r = c.refresh(asked).await;
        assert_eq!(r.class, Class::Success, "{}", r.describe());
        assert_eq!(r.u32(attr::LIFETIME), Some(got), "asked {asked:?}");
    }
    let mut c2 = udp_client(&s, "bob").await;
    let (_, _, l) = c2
        .allocate_with(allocate_msg().u32(attr::LIFETIME, 1_000_000))
        .await;
    assert_eq!(l, 3600);
}

#[tokio::test]
async fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    let r = c.refresh(Some(0)).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    assert_eq!(r.u32(attr::LIFETIME), Some(0));
    assert_error(&c.create_permission(peer.addr()).await, 437);
    assert_error(&c.refresh(None).await, 437);
    assert_eq!(wait_metric(&s, "hpb_turn_allocations", |v| v == 0).await, 0);
    // The 5-tuple is free again.
    c.allocate().await;
}

#[tokio::test]
async fn requests_without_an_allocation_are_437() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    assert_error(&c.refresh(Some(600)).await, 437);
    assert_error(&c.create_permission(peer.addr()).await, 437);
    assert_error(&c.channel_bind(0x4000, peer.addr()).await, 437);
}

#[tokio::test]
async fn another_username_on_the_same_five_tuple_is_441() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    let (u, p) = rest_credentials(SECRET, "bob");
    c.username = u;
    c.password = p;
    for r in [
        c.create_permission(peer.addr()).await,
        c.refresh(None).await,
        c.request(allocate_msg()).await,
    ] {
        assert_error(&r, 441);
    }
}

#[tokio::test]
async fn connect_and_unknown_methods_are_400() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    let r = c
        .request(Msg::request(method::CONNECT).xor(attr::XOR_PEER_ADDRESS, peer.addr()))
        .await;
    assert_error(&r, 400);
    assert_error(&c.request(Msg::request(0x0123)).await, 400);
}

#[tokio::test]
async fn denied_peers_are_403_naming_the_range() {
    let s = start_with(|c| {
        c.allow_loopback_peers = false;
        c.relay_range = 61000..=61999;
    })
    .await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    for (peer, range) in [
        ("127.0.0.2:5000", "127.0.0.0/8"),
        ("10.0.0.1:5000", "10.0.0.0/8"),
        ("169.254.169.254:80", "169.254.0.0/16"),
        ("0.0.0.0:5000", "0.0.0.0/8"),
        ("192.168.1.1:5000", "192.168.0.0/16"),
        // IPv4-mapped IPv6, in the IPv6 XOR encoding.
        ("[::ffff:127.0.0.2]:5000", "127.0.0.0/8"),
        ("[::ffff:169.254.169.254]:80", "169.254.0.0/16"),
        ("[::ffff:10.0.0.1]:5000", "10.0.0.0/8"),
    ] {
        let peer: SocketAddr = peer.parse().expect("addr");
        let r = c.create_permission(peer).await;
        assert_error(&r, 403);
        let (_, reason) = r.error().expect("error");
        assert!(reason.contains(range), "{peer}: {reason}");
        let r = c.channel_bind(0x4000, peer).await;
        assert_error(&r, 403);
    }
    // The server's own address (127.0.0.1 here) only on its relay ports: never its other
    // services, in either encoding.
    for peer in ["127.0.0.1:80", "[::ffff:127.0.0.1]:80"] {
        let r = c.channel_bind(0x4001, peer.parse().expect("addr")).await;
        assert_error(&r, 403);
        let (_, reason) = r.error().expect("error");
        assert!(reason.contains("this server itself"), "{peer}: {reason}");
    }
    assert!(metric(&s, "hpb_turn_refused_peers_total") >= 18);
    // A Send indication to a denied peer is dropped and counted.
    let before = metric(&s, "hpb_turn_refused_peers_total");
    c.send_indication("10.0.0.1:5000".parse().expect("addr"), b"x")
        .await;
    assert_eq!(
        wait_metric(&s, "hpb_turn_refused_peers_total", |v| v > before).await,
        before + 1
    );
    // A local service on 127.0.0.1 (an ephemeral port, outside the relay range): the
    // permission for the server's own IP is allowed (relayed addresses share it), but
    // nothing is sent to that service.
    let mut local = Peer::v4().await;
    while (61000..=61999).contains(&local.addr().port()) {
        local = Peer::v4().await;
    }
    c.permit(local.addr()).await;
    c.send_indication(local.addr(), b"ssrf").await;
    assert_eq!(
        wait_metric(&s, "hpb_turn_refused_peers_total", |v| v > before + 1).await,
        before + 2
    );
    assert_error(&c.channel_bind(0x4002, local.addr()).await, 403);
    assert_eq!(
        metric(&s, "hpb_turn_relayed_packets_total{direction=\"to_peer\"}"),
        0
    );
}

#[tokio::test]
async fn channel_bind_rules() {
    let s = start(loopback_config()).await;
    let a = Peer::v4().await;
    let b = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    for bad in [0x0000, 0x3fff, 0x8000, 0xffff] {
        assert_error(&c.channel_bind(bad, a.addr()).await, 400);
    }
    let r = c
        .request(Msg::request(method::CHANNEL_BIND).xor(attr::XOR_PEER_ADDRESS, a.addr()))
        .await;
    assert_error(&r, 400);
    assert_error(
        &c.request(Msg::request(method::CHANNEL_BIND).channel(0x4000))
            .await,
        400,
    );
    let ok = |r: &crate::client::Resp| {
        assert_eq!(r.class, Class::Success, "{}", r.describe());
    };
    ok(&c.channel_bind(0x4000, a.addr()).await);
    // Rebinding the same pair refreshes it.
    ok(&c.channel_bind(0x4000, a.addr()).await);
    let r = c.channel_bind(0x4000, b.addr()).await;
    assert_error(&r, 400);
    let r = c.channel_bind(0x4001, a.addr()).await;
    assert_error(&r, 400);
    ok(&c.channel_bind(0x4001, b.addr()).await);
    assert_eq!(metric(&s, "hpb_turn_channels"), 2);
    // The bindings work.
    c.send_channel_data(0x4000, b"to a").await;
    c.send_channel_data(0x4001, b"to b").await;
    assert_eq!(a.recv().await.0, b"to a");
    assert_eq!(b.recv().await.0, b"to b");
}

#[tokio::test]
async fn send_and_data_indications_then_channel_data_relay_to_a_udp_peer() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    let relayed = c.allocate().await;
    c.permit(peer.addr()).await;
    c.send_indication(peer.addr(), b"hello peer").await;
    let (data, from) = peer.recv().await;
    assert_eq!(data, b"hello peer");
    assert_eq!(from, relayed, "the peer sees the relayed address");
    peer.send(b"hello client", relayed).await;
    let (p, d) = c.data_indication().await;
    assert_eq!((p, d.as_slice()), (peer.addr(), &b"hello client"[..]));
    let r = c.channel_bind(0x4abc, peer.addr()).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    c.send_channel_data(0x4abc, b"odd").await;
    let (data, from) = peer.recv().await;
    assert_eq!((data.as_slice(), from), (&b"odd"[..], relayed));
    peer.send(b"12345", relayed).await;
    let (ch, d, wire) = c.channel_data().await;
    assert_eq!((ch, d.as_slice(), wire), (0x4abc, &b"12345"[..], 9));
    // Send indications still work next to the channel.
    c.send_indication(peer.addr(), b"again").await;
    assert_eq!(peer.recv().await.0, b"again");
    // The counters move just after the send: wait for them (bounded).
    let to_peer = "hpb_turn_relayed_packets_total{direction=\"to_peer\"}";
    assert!(wait_metric(&s, to_peer, |v| v >= 3).await >= 3);
    let to_client = "hpb_turn_relayed_packets_total{direction=\"to_client\"}";
    assert!(wait_metric(&s, to_client, |v| v >= 2).await >= 2);
}

// Permissions are per IP address (ports do not count, RFC 8656 §9), and every peer here is on
// 127.0.0.1: what is dropped is proven by a counter and by what arrives first afterwards.
#[tokio::test]
async fn peer_data_without_permission_is_dropped() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    let relayed = c.allocate().await;
    peer.send(b"unsolicited", relayed).await;
    // Neither a Send indication nor ChannelData on an unbound channel reaches a peer
    // without a permission.
    c.send_indication(peer.addr(), b"nope").await;
    c.send_channel_data(0x4000, b"unbound").await;
    assert_eq!(
        wait_metric(&s, "hpb_turn_dropped_no_permission_total", |v| v >= 3).await,
        3
    );
    assert_eq!(
        metric(&s, "hpb_turn_relayed_packets_total{direction=\"to_peer\"}"),
        0
    );
    // Once permitted, the first thing each side gets is what was sent after the permission.
    c.permit(peer.addr()).await;
    peer.send(b"marker", relayed).await;
    let (p, d) = c.data_indication().await;
    assert_eq!((p, d.as_slice()), (peer.addr(), &b"marker"[..]));
    c.send_indication(peer.addr(), b"yes").await;
    assert_eq!(peer.recv().await.0, b"yes");
}

#[tokio::test]
async fn permissions_expire() {
    let s = start_with(|c| c.permission_lifetime = Duration::from_secs(2)).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    let relayed = c.allocate().await;
    c.permit(peer.addr()).await;
    peer.send(b"while permitted", relayed).await;
    assert_eq!(c.data_indication().await.1, b"while permitted");
    c.send_indication(peer.addr(), b"out").await;
    assert_eq!(peer.recv().await.0, b"out");
    // Past the permission lifetime (the server compares with its own monotonic clock).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    peer.send(b"after expiry", relayed).await;
    c.send_indication(peer.addr(), b"late").await;
    assert_eq!(
        wait_metric(&s, "hpb_turn_dropped_no_permission_total", |v| v >= 2).await,
        2
    );
    c.permit(peer.addr()).await;
    peer.send(b"marker", relayed).await;
    let (p, d) = c.data_indication().await;
    assert_eq!((p, d.as_slice()), (peer.addr(), &b"marker"[..]));
    c.send_indication(peer.addr(), b"renewed").await;
    assert_eq!(peer.recv().await.0, b"renewed");
}

#[tokio::test]
async fn allocation_lifetime_expiry_closes_the_relay() {
    let s = start_with(|c| {
        c.default_lifetime = Duration::from_secs(1);
        c.max_lifetime = Duration::from_secs(1);
    })
    .await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    let (relayed, _, lifetime) = c.allocate_with(allocate_msg()).await;
    assert_eq!(lifetime, 1);
    // Poll with CreatePermission (which does not refresh the allocation) until it is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = c.create_permission(peer.addr()).await;
        if r.code() == Some(437) {
            break;
        }
        assert_eq!(r.class, Class::Success, "{}", r.describe());
        assert!(
            std::time::Instant::now() < deadline,
            "the allocation never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(wait_metric(&s, "hpb_turn_allocations", |v| v == 0).await, 0);
    // The relay socket is closed: its port can be bound again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("0.0.0.0", relayed.port())).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "relay port {} still bound",
            relayed.port()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_error(&c.refresh(None).await, 437);
}

#[tokio::test]
async fn user_quota_is_486_and_freed_by_deletion() {
    let s = start_with(|c| c.user_quota = 1).await;
    let mut a = udp_client(&s, "alice").await;
    a.allocate().await;
    // Another page load of the same user: another username, another client port.
    let u = format!("{}:alice", unix_now() + 7200);
    let p = rest_password(SECRET.as_bytes(), &u);
    let mut b = Client::udp(udp_addr(&s), &u, &p).await;
    let r = b.request(allocate_msg()).await;
    assert_error(&r, 486);
    assert!(r.error().expect("error").1.contains("user_quota"));
    assert_eq!(metric(&s, "hpb_turn_quota_refusals_total"), 1);
    let mut other = udp_client(&s, "bob").await;
    other.allocate().await;
    let r = a.refresh(Some(0)).await;
    assert_eq!(r.class, Class::Success);
    b.allocate().await;
}

#[tokio::test]
async fn total_quota_is_486() {
    let s = start_with(|c| c.total_quota = 2).await;
    let mut a = udp_client(&s, "alice").await;
    a.allocate().await;
    let mut b = udp_client(&s, "bob").await;
    b.allocate().await;
    let mut c = udp_client(&s, "carol").await;
    let r = c.request(allocate_msg()).await;
    assert_error(&r, 486);
    assert!(r.error().expect("error").1.contains("total_quota"));
    b.refresh(Some(0)).await;
    c.allocate().await;
}

#[tokio::test]
async fn max_bps_drops_what_exceeds_the_cap() {
    // 8000 bit/s = 1000 bytes/s with a one-second burst, each direction.
    let s = start_with(|c| c.max_bps = 8000).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    let relayed = c.allocate().await;
    let r = c.channel_bind(0x4000, peer.addr()).await;
    assert_eq!(r.class, Class::Success);
    let packet = [7u8; 400];
    for _ in 0..20 {
        c.send_channel_data(0x4000, &packet).await;
    }
    // Every packet is accounted for: relayed or dropped over the cap.
    let dropped = "hpb_turn_dropped_bandwidth_total";
    let sent = "hpb_turn_relayed_packets_total{direction=\"to_peer\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&s, dropped) + metric(&s, sent) < 20 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let up_dropped = metric(&s, dropped);
    assert_eq!(up_dropped + metric(&s, sent), 20);
    assert!(up_dropped > 0, "no packet dropped over the cap");
    assert!(metric(&s, sent) >= 1, "the first packets fit the burst");
    // Towards the client too.
    for _ in 0..20 {
        peer.send(&packet, relayed).await;
    }
    let got = "hpb_turn_relayed_packets_total{direction=\"to_client\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&s, dropped) - up_dropped + metric(&s, got) < 20
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down_dropped = metric(&s, dropped) - up_dropped;
    assert_eq!(down_dropped + metric(&s, got), 20);
    assert!(
        down_dropped > 0,
        "no packet dropped over the cap towards the client"
    );
}

#[tokio::test]
async fn ipv6_relay_to_an_ipv6_peer() {
    let s = start_with(|c| c.listen = vec!["[::1]:0".parse().expect("addr")]).await;
    let server = udp_addr(&s);
    assert!(server.is_ipv6());
    let (u, p) = rest_credentials(SECRET, "alice");
    let mut c = Client::udp(server, &u, &p).await;
    let r = c.transact(&Msg::request(method::BINDING), None).await;
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(c.local_addr()));
    let (relayed, mapped, _) = c
        .allocate_with(allocate_msg().attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]))
        .await;
    assert!(relayed.is_ipv6(), "relayed {relayed}");
    assert_eq!(mapped, c.local_addr());
    let peer = Peer::v6().await;
    c.permit(peer.addr()).await;
    assert_error(
        &c.create_permission("127.0.0.1:5000".parse().expect("addr"))
            .await,
        443,
    );
    // The same IPv4 peer written IPv4-mapped is no IPv6 peer either.
    assert_error(
        &c.create_permission("[::ffff:127.0.0.1]:5000".parse().expect("addr"))
            .await,
        443,
    );
    c.send_indication(peer.addr(), b"over v6").await;
    let (d, from) = peer.recv().await;
    assert_eq!((d.as_slice(), from), (&b"over v6"[..], relayed));
    peer.send(b"back", relayed).await;
    let (p, d) = c.data_indication().await;
    assert_eq!((p, d.as_slice()), (peer.addr(), &b"back"[..]));
    let r = c.channel_bind(0x4001, peer.addr()).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    c.send_channel_data(0x4001, b"channel v6").await;
    assert_eq!(peer.recv().await.0, b"channel v6");
    peer.send(b"channel back", relayed).await;
    let (ch, d, _) = c.channel_data().await;
    assert_eq!((ch, d.as_slice()), (0x4001, &b"channel back"[..]));
}

#[tokio::test]
async fn unknown_requested_address_family_is_440() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let r = c
        .request(allocate_msg().attr(attr::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]))
        .await;
    assert_error(&r, 440);
    assert_eq!(metric(&s, "hpb_turn_allocations"), 0);
}

#[tokio::test]
async fn even_port_with_the_reserve_bit_is_508() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let r = c
        .request(allocate_msg().attr(attr::EVEN_PORT, &[0x80]))
        .await;
    assert_error(&r, 508);
    let (relayed, _, _) = c
        .allocate_with(allocate_msg().attr(attr::EVEN_PORT, &[0x00]))
        .await;
    assert_eq!(relayed.port() % 2, 0, "EVEN-PORT gives an even port");
}

#[tokio::test]
async fn garbage_datagrams_are_ignored_and_the_server_keeps_serving() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    let mut bad_fp = Msg::request(method::BINDING).encode(None, true);
    let last = bad_fp.len() - 1;
    bad_fp[last] ^= 0xff;
    let mut bad_len = Msg::request(method::BINDING).encode(None, false);
    bad_len[3] = 8;
    let mut overrun = Msg::request(method::BINDING)
        .attr(attr::SOFTWARE, b"abcd")
        .encode(None, false);
    overrun[23] = 200;
    let mut no_cookie = Msg::request(method::BINDING).encode(None, false);
    no_cookie[4] = 0;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 100],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        bad_fp,
        bad_len,
        overrun,
        no_cookie,
        vec![0x40, 0x00, 0x00, 0x10, 1, 2],
        vec![0x40],
        (0..=255u8).collect(),
    ];
    for g in &garbage {
        c.send_raw(g).await;
    }
    assert!(wait_metric(&s, "hpb_turn_dropped_malformed_total", |v| v >= 6).await >= 6);
    let m = Msg::request(method::BINDING);
    let r = c.transact(&m, None).await;
    assert_eq!(r.class, Class::Success);
    assert!(
        c.try_recv(Duration::from_millis(100)).await.is_none(),
        "garbage got no answer"
    );
    let peer = Peer::v4().await;
    c.permit(peer.addr()).await;
}

/// Too many failed authentications from one address: its requests are ignored for a while
/// (Binding still answered).
#[tokio::test]
async fn repeated_auth_failures_are_rate_limited() {
    let s = start_with(|c| c.auth_failures_per_minute = 2).await;
    let (u, _) = rest_credentials(SECRET, "mallory");
    let mut c = Client::udp(udp_addr(&s), &u, "wrong").await;
    assert_error(&c.request(allocate_msg()).await, 401);
    assert_error(&c.signed(&allocate_msg()).await, 401);
    let m = allocate_msg();
    let b = c.sign(&m);
    c.send_raw(&b).await;
    assert_eq!(
        wait_metric(&s, "hpb_turn_rate_limited_total", |v| v >= 1).await,
        1
    );
    let r = c.transact(&Msg::request(method::BINDING), None).await;
    assert_eq!(r.class, Class::Success);
}

#[tokio::test]
async fn tcp_allocation_relays_with_padded_channel_data() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = tcp_client(&s, "alice").await;
    let relayed = c.allocate().await;
    assert_error(&c.request(allocate_msg()).await, 437);
    c.permit(peer.addr()).await;
    c.send_indication(peer.addr(), b"via tcp").await;
    let (d, from) = peer.recv().await;
    assert_eq!((d.as_slice(), from), (&b"via tcp"[..], relayed));
    peer.send(b"data ind", relayed).await;
    let (p, d) = c.data_indication().await;
    assert_eq!((p, d.as_slice()), (peer.addr(), &b"data ind"[..]));
    let r = c.channel_bind(0x4000, peer.addr()).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    // Two padded frames and a Binding request in one write: the server cuts them apart.
    let mut burst = crate::client::channel_frame(0x4000, b"five5", true);
    assert_eq!(burst.len(), 12);
    burst.extend(crate::client::channel_frame(0x4000, b"sevenn7", true));
    let binding = Msg::request(method::BINDING);
    burst.extend(binding.encode(None, true));
    let r = c.transact_raw(&burst, binding.txid).await;
    assert_eq!(r.class, Class::Success);
    assert_eq!(peer.recv().await.0, b"five5");
    assert_eq!(peer.recv().await.0, b"sevenn7");
    // And padded frames towards the client.
    for data in [&b"a"[..], b"bb", b"ccc", b"dddd", b"eeeee"] {
        peer.send(data, relayed).await;
    }
    for data in [&b"a"[..], b"bb", b"ccc", b"dddd", b"eeeee"] {
        let (ch, d, wire) = c.channel_data().await;
        assert_eq!((ch, d.as_slice()), (0x4000, data));
        assert_eq!(wire, 4 + data.len().div_ceil(4) * 4);
    }
    let r = c.refresh(Some(0)).await;
    assert_eq!(r.class, Class::Success);
    assert_eq!(wait_metric(&s, "hpb_turn_allocations", |v| v == 0).await, 0);
}

#[tokio::test]
async fn tcp_close_releases_the_allocation_and_garbage_closes_only_that_connection() {
    let s = start(loopback_config()).await;
    let mut c = tcp_client(&s, "alice").await;
    c.allocate().await;
    assert_eq!(metric(&s, "hpb_turn_allocations"), 1);
    let mut bad = tcp_client(&s, "mallory").await;
    bad.send_raw(&[0xff, 0xee, 0xdd, 0xcc, 0, 0, 0, 0]).await;
    assert!(
        bad.closed_within(Duration::from_secs(10)).await,
        "the server closes a garbage stream"
    );
    let r = c.transact(&Msg::request(method::BINDING), None).await;
    assert_eq!(r.class, Class::Success);
    drop(c);
    assert_eq!(wait_metric(&s, "hpb_turn_allocations", |v| v == 0).await, 0);
    let mut again = tcp_client(&s, "alice").await;
    again.allocate().await;
}

#[tokio::test]
async fn stun_frames_from_the_server_decode_strictly() {
    // The decoder used for every response refuses what a sloppy server might send.
    let good = Msg::request(method::BINDING).encode(None, true);
    assert!(decode(&good).is_ok());
    let mut bad = good.clone();
    bad[2] = 0xff;
    assert!(decode(&bad).is_err());
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(decode(&bad).is_err());
}

/// A channel binding expires on its own (the permission it installed lives on, so peer data
/// comes as Data indications again), and binding the same pair again renews it.
#[tokio::test]
async fn channel_bindings_expire_and_rebinding_renews_them() {
    let s = start_with(|c| c.channel_lifetime = Duration::from_secs(2)).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    let relayed = c.allocate().await;
    let r = c.channel_bind(0x4000, peer.addr()).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    peer.send(b"bound", relayed).await;
    assert_eq!(c.channel_data().await.1, b"bound");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    peer.send(b"expired", relayed).await;
    let (p, d) = c.data_indication().await;
    assert_eq!((p, d.as_slice()), (peer.addr(), &b"expired"[..]));
    // ChannelData on the expired channel goes nowhere; a Send indication still does.
    c.send_channel_data(0x4000, b"stale channel").await;
    c.send_indication(peer.addr(), b"indication").await;
    assert_eq!(peer.recv().await.0, b"indication");
    let r = c.channel_bind(0x4000, peer.addr()).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    peer.send(b"rebound", relayed).await;
    let (ch, d, _) = c.channel_data().await;
    assert_eq!((ch, d.as_slice()), (0x4000, &b"rebound"[..]));
}

/// RFC 8656 §7.3: Refresh with a REQUESTED-ADDRESS-FAMILY other than the allocation's is 443.
#[tokio::test]
async fn refresh_with_another_address_family_is_443() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    let r = c
        .request(Msg::request(method::REFRESH).attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]))
        .await;
    assert_error(&r, 443);
    let r = c
        .request(Msg::request(method::REFRESH).attr(attr::REQUESTED_ADDRESS_FAMILY, &[1, 0, 0, 0]))
        .await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
}

#[tokio::test]
async fn ip_quota_is_486() {
    let s = start_with(|c| c.ip_quota = 1).await;
    let mut a = udp_client(&s, "alice").await;
    a.allocate().await;
    let mut b = udp_client(&s, "bob").await;
    let r = b.request(allocate_msg()).await;
    assert_error(&r, 486);
    assert!(r.error().expect("error").1.contains("per-IP"));
}

/// A CreatePermission naming one refused peer installs none of its peers.
#[tokio::test]
async fn create_permission_with_a_refused_peer_installs_nothing() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    let relayed = c.allocate().await;
    let r = c
        .request(
            Msg::request(method::CREATE_PERMISSION)
                .xor(attr::XOR_PEER_ADDRESS, peer.addr())
                .xor(
                    attr::XOR_PEER_ADDRESS,
                    "169.254.169.254:80".parse().expect("addr"),
                ),
        )
        .await;
    assert_error(&r, 403);
    peer.send(b"dropped", relayed).await;
    assert_eq!(
        wait_metric(&s, "hpb_turn_dropped_no_permission_total", |v| v >= 1).await,
        1
    );
    assert_eq!(metric(&s, "hpb_turn_permissions"), 0);
    // Several peers in one request are all installed.
    let other: SocketAddr = "127.0.0.2:9".parse().expect("addr");
    let r = c
        .request(
            Msg::request(method::CREATE_PERMISSION)
                .xor(attr::XOR_PEER_ADDRESS, other)
                .xor(attr::XOR_PEER_ADDRESS, peer.addr()),
        )
        .await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    assert_eq!(metric(&s, "hpb_turn_permissions"), 2);
    peer.send(b"allowed", relayed).await;
    assert_eq!(c.data_indication().await.1, b"allowed");
    assert_error(
        &c.request(Msg::request(method::CREATE_PERMISSION)).await,
        400,
    );
}

/// The caps on permissions and channels per allocation: 508 Insufficient Capacity.
#[tokio::test]
async fn permission_and_channel_caps_are_508() {
    let s = start_with(|c| {
        c.max_permissions = 2;
        c.max_channels = 1;
    })
    .await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    for ip in ["127.0.0.2:1", "127.0.0.3:1"] {
        c.permit(ip.parse().expect("addr")).await;
    }
    // Refreshing an existing one is fine; a third is not.
    c.permit("127.0.0.3:2".parse().expect("addr")).await;
    assert_error(
        &c.create_permission("127.0.0.4:1".parse().expect("addr"))
            .await,
        508,
    );
    // A ChannelBind to a third peer needs a permission that does not fit: 508, and the
    // channel stays unbound (binding it to another peer below works).
    let r = c
        .channel_bind(0x4000, "127.0.0.4:1".parse().expect("addr"))
        .await;
    assert_error(&r, 508);
    let r = c
        .channel_bind(0x4000, "127.0.0.2:1".parse().expect("addr"))
        .await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    let r = c
        .channel_bind(0x4001, "127.0.0.3:1".parse().expect("addr"))
        .await;
    assert_error(&r, 508);
}

/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §7.2): dual allocations are not offered, which the
/// success says in ADDRESS-ERROR-CODE; with REQUESTED-ADDRESS-FAMILY it is 400.
#[tokio::test]
async fn additional_address_family_gets_an_address_error_code() {
    let s = start(loopback_config()).await;
    let mut c = udp_client(&s, "alice").await;
    let r = c
        .request(
            allocate_msg()
                .attr(attr::REQUESTED_ADDRESS_FAMILY, &[1, 0, 0, 0])
                .attr(0x8000, &[2, 0, 0, 0]),
        )
        .await;
    assert_error(&r, 400);
    // The additional family can only be IPv6.
    let r = c.request(allocate_msg().attr(0x8000, &[1, 0, 0, 0])).await;
    assert_error(&r, 400);
    let r = c.request(allocate_msg().attr(0x8000, &[2, 0, 0, 0])).await;
    assert_eq!(r.class, Class::Success, "{}", r.describe());
    assert!(
        r.xor(attr::XOR_RELAYED_ADDRESS)
            .is_some_and(|a| a.is_ipv4())
    );
    let aec = r.get(0x8001).expect("ADDRESS-ERROR-CODE");
    assert_eq!(aec[0], 2, "about IPv6");
    assert_eq!(u16::from(aec[2] & 7) * 100 + u16::from(aec[3]), 440);
}

/// RFC 8489 §6.3.2: an indication with an unknown comprehension-required attribute is
/// discarded (and never answered).
#[tokio::test]
async fn send_indication_with_an_unknown_required_attribute_is_discarded() {
    let s = start(loopback_config()).await;
    let peer = Peer::v4().await;
    let mut c = udp_client(&s, "alice").await;
    c.allocate().await;
    c.permit(peer.addr()).await;
    let m = Msg::indication(method::SEND)
        .xor(attr::XOR_PEER_ADDRESS, peer.addr())
        .attr(attr::DATA, b"must not arrive")
        .attr(0x7777, b"?");
    c.send_raw(&m.encode(None, true)).await;
    // Comprehension-optional unknown attributes are fine.
    let m = Msg::indication(method::SEND)
        .xor(attr::XOR_PEER_ADDRESS, peer.addr())
        .attr(attr::DATA, b"arrives")
        .attr(0x8777, b"?");
    c.send_raw(&m.encode(None, true)).await;
    assert_eq!(peer.recv().await.0, b"arrives");
    let r = c.transact(&Msg::request(method::BINDING), None).await;
    assert_eq!(
        r.class,
        Class::Success,
        "no answer to the indication came first"
    );
}
