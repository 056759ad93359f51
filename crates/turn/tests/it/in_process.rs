//! The in-process link to a built-in SFU ([`hpb_turn::in_process`]): a recording stand-in
//! for the SFU on an address nothing listens on, against a real server and the independent
//! client. What arrives can only have come in-process; permissions still apply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpb_turn::in_process::{SfuPeer, ToClients};
use parking_lot::Mutex;

use crate::client::rest_credentials;
use crate::client::{Client, Peer};
use crate::support::{SECRET, loopback_config, start, udp_addr, wait_metric};

#[derive(Default)]
struct Recorder(Mutex<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>);

impl SfuPeer for Recorder {
    fn deliver(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        self.0.lock().push((from, to, data.to_vec()));
        true
    }
}

impl Recorder {
    /// What the SFU got, once it got something (bounded wait).
    async fn first(&self) -> (SocketAddr, SocketAddr, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(d) = self.0.lock().first().cloned() {
                return d;
            }
            assert!(Instant::now() < deadline, "the SFU got nothing in 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn data_to_and_from_the_sfu_skips_the_sockets_and_keeps_permissions() {
    // Nothing listens here: a datagram sent through a socket would be lost.
    let sfu: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let mut cfg = loopback_config();
    cfg.sfu_addrs = vec![sfu];
    let s = start(cfg).await;
    let recorder = Arc::new(Recorder::default());
    s.server.set_sfu(recorder.clone());
    let mut to_clients = ToClients::new(s.server.clone());
    let (u, p) = rest_credentials(SECRET, "alice");
    let mut c = Client::udp(udp_addr(&s), &u, &p).await;
    let relayed = c.allocate().await;
    assert_eq!(
        to_clients.send(sfu, sfu, b"elsewhere"),
        None,
        "not a relayed address: not taken"
    );

    // Our allocation's relayed address, but without a permission for the SFU's address the
    // client gets nothing from it.
    assert_eq!(to_clients.send(sfu, relayed, b"too early"), Some(false));
    to_clients.flush();
    c.permit(sfu).await;
    c.send_indication(sfu, b"to the sfu").await;
    let (from, to, data) = recorder.first().await;
    assert_eq!(
        (from, to, data.as_slice()),
        (relayed, sfu, &b"to the sfu"[..]),
        "the SFU sees the relayed address as the sender"
    );
    assert_eq!(to_clients.send(sfu, relayed, b"from the sfu"), Some(true));
    to_clients.flush();
    let (peer, d) = c.data_indication().await;
    assert_eq!((peer, d.as_slice()), (sfu, &b"from the sfu"[..]));

    // A peer that is not the SFU still goes through the relay socket.
    let other = Peer::v4().await;
    c.permit(other.addr()).await;
    c.send_indication(other.addr(), b"to a peer").await;
    assert_eq!(other.recv().await.0, b"to a peer");
    assert_eq!(
        recorder.0.lock().len(),
        1,
        "only the SFU's data went in-process"
    );

    drop(to_clients);
    let to_sfu = "hpb_turn_sfu_in_process_packets_total{direction=\"to_sfu\"}";
    assert_eq!(wait_metric(&s, to_sfu, |v| v >= 1).await, 1);
    let from_sfu = "hpb_turn_sfu_in_process_packets_total{direction=\"from_sfu\"}";
    assert_eq!(wait_metric(&s, from_sfu, |v| v >= 1).await, 1);
    let refused = "hpb_turn_dropped_no_permission_total";
    assert_eq!(wait_metric(&s, refused, |v| v >= 1).await, 1);
}
