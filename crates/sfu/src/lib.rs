//! The built-in SFU that replaces Janus: one UDP port for all peers (demultiplexed by ICE
//! ufrag, then by 5-tuple; a second one for IPv6), ICE-TCP on its own listener or on the
//! shared public port (RFC 6544 passive, RFC 4571 framing), ICE-lite, the SFU as DTLS server, str0m state machines driven by
//! one worker thread, publisher → subscriber forwarding of media (sent by the SFU itself,
//! see `egress.rs`) and data channels.
//!
//! The signaling side talks to it only with [`McuCommand`]s ([`Sfu::request`]) and reads
//! [`McuEvent`]s from the receiver [`Sfu::start`] returns.
//!
//! Wiring notes for the signaling side:
//! - `Publish` → `Answer{sdp}`; the same `sid` again renegotiates the existing connection,
//!   another `sid` replaces it (old one closed with `PublisherClosed`).
//! - `Subscribe` → `Offer{sdp, sid}` (sid = a fresh decimal id, like a Janus handle); it waits
//!   up to [`SfuConfig::publisher_wait`] for the publisher, then `client_not_found`. Same sid
//!   again → an offer on the existing connection (unchanged if nothing changed); empty or other
//!   sid → a fresh subscription (the old one is dropped without an event).
//! - The SFU's host candidate is in every SDP it makes and is also sent once as
//!   `McuEvent::Candidate` (tagged with the sid and the first `a=mid`) right after the reply,
//!   for trickle-only clients. Candidates from clients: `Candidate`; empty = end-of-candidates.
//! - `McuEvent::Offer` = `update-sdp`: a publisher added tracks; the subscriber must answer
//!   with `SubscriberAnswer` (same sid).
//! - `PublisherUp` when the publisher's ICE+DTLS is up (`webrtcup`); `PublisherClosed` /
//!   `SubscriberClosed` on Unpublish/CloseSession, ICE timeout, replacement or a str0m panic.
//! - Publisher data channel messages (any label) reach subscribers on `JanusDataChannel`.
//! - Ending a connection is active, not silence: every closed peer (Unpublish, CloseSession,
//!   ICE timeout, replacement, SFU shutdown; a publisher's subscribers with it) gets RTCP BYE
//!   and DTLS close_notify through str0m's `Rtc::close`, so the client's transport closes at
//!   once (a str0m client reports `Event::Closed`, a browser's DTLS transport goes `closed`)
//!   instead of timing out. Only a peer whose str0m instance panicked is dropped silently.
//!   No `inactive` renegotiation is sent: Talk tears the subscriber connection down itself on
//!   the participants update, and a closed transport ends its tracks either way.
//! - Forwarding: publishers' str0m runs in RTP mode (decrypts and reports each packet);
//!   the SFU sends each packet to each viewer itself (`egress.rs`): the viewer's SSRC,
//!   payload type and header extensions, continuous sequence numbers and timestamps across
//!   simulcast and temporal-layer switches (VP8 picture ids continued too), encrypted once
//!   with the connection's SRTP keys straight into the send batch of its destination, plus
//!   the RTCP sender reports of those streams. str0m keeps ICE, DTLS, data channels and the
//!   viewers' RTCP (keyframe requests, REMB, NACKs).
//! - Loss recovery towards subscribers: every video codec offered to a subscriber has an RTX
//!   payload type (added when the publisher negotiated none) and NACK feedback, and the SFU
//!   answers their NACKs with RFC 4588 retransmissions from a history that references the
//!   publisher's payloads (one copy for all viewers); `hpb_sfu_nacks_received_total` and
//!   `hpb_sfu_retransmitted_packets_total` count that, `hpb_sfu_nacks_sent_total` the NACKs
//!   sent to publishers.
//! - Layer choice follows each subscriber's bandwidth estimate: subscribers are offered
//!   REMB feedback (not transport-cc), so their client estimates its downlink and reports
//!   it, and a simulcast viewer gets the best layer being sent, up to its selection, whose
//!   measured rate fits that estimate (going up needs 25 % headroom). No send-side
//!   estimation, so no pacer delays forwarded packets. `hpb_sfu_layer_switches_total` and
//!   `hpb_sfu_subscriber_estimated_bitrate_bps_sum` show it.
//! - Silent audio: with [`SfuConfig::thin_silent_audio`], a publisher's digitally silent
//!   audio (a muted microphone) goes to subscribers once per 400 ms instead of in full
//!   (`hpb_sfu_silent_audio_thinned_total`); off by default, as in Janus. With
//!   [`SfuConfig::opus_dtx`] publishers are asked for Opus DTX (`usedtx=1` in the answer),
//!   so that browsers do not send most of that silence in the first place.
//! - Client SDP without usable `a=ice-ufrag`, `a=ice-pwd` or `a=fingerprint` (sha-256) is
//!   refused with `invalid_sdp` naming the attribute; a refused subscriber answer leaves the
//!   offer outstanding, so a corrected answer still works.

mod buffer_pool;
mod bwe;
mod descriptor;
mod egress;
mod gso;
mod key_tap;
mod metrics;
mod net;
mod numbering;
mod peer;
mod recovery;
mod relay_link;
mod sdp;
mod silence;
mod srtp_tx;
mod stun;
mod temporal;
mod worker;

/// The SFU's own parsers of client input, public only for the fuzz targets in `fuzz/`; not
/// an API (it may change with any release).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::descriptor::{DescriptorError, PayloadInfo, Vp8Ids, parse as parse_descriptor};
    pub use crate::egress::{Clock, Egress, ExtIds, Incoming, Meta, PtMap, SeqMap};
    pub use crate::srtp_tx::{Keys, SrtpError, SrtpTx};
    pub use str0m::crypto::dtls::SrtpProfile;
    pub use str0m::format::Codec;

    /// The crypto provider the SFU uses (for [`SrtpTx::new`]).
    pub fn crypto() -> str0m::config::CryptoProvider {
        str0m::crypto::from_feature_flags()
    }
    pub use crate::sdp::{
        SdpProblem, Section, SimGroup, check_transport, extract_sim_groups, first_mid,
        media_sections, parse_answer, parse_offer, sim_rids,
    };
    pub use crate::stun::{is_stun, local_ufrag};
}

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use hpb_proto::mcu::{
    IceCandidate, McuCommand, McuError, McuEvent, McuReply, Selection, StreamType,
};
pub use relay_link::{RelayInbox, RelayPort};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::worker::{Request, Worker};

/// How the SFU is set up.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The UDP address all media uses (e.g. `127.0.0.1:0`, `0.0.0.0:3478`).
    pub listen: SocketAddr,
    /// The address announced in candidates when the host is behind 1:1 NAT; without it the
    /// listen IP is announced (an unspecified listen IP is then replaced by 127.0.0.1).
    pub external_ip: Option<IpAddr>,
    /// A second UDP socket for IPv6 media (e.g. `[::]:3478`), with its own host candidate.
    pub listen_v6: Option<SocketAddr>,
    /// The IPv6 address announced for `listen_v6` behind NAT (or a fixed public address).
    pub external_ip_v6: Option<IpAddr>,
    /// The SFU's own ICE-TCP listener (RFC 6544 passive candidate, RFC 4571 framing).
    pub tcp_listen: Option<SocketAddr>,
    /// The shared public TCP port whose ICE-TCP connections are handed over with
    /// [`Sfu::accept_tcp`]; announced as a passive TCP candidate (IP replaced by
    /// `external_ip` when set).
    pub public_tcp: Option<SocketAddr>,
    /// How long a Subscribe waits for its publisher to appear (Janus: 10 s).
    pub publisher_wait: Duration,
    /// A peer that has not connected, or has sent nothing, for this long is closed.
    pub ice_timeout: Duration,
    /// Minimum time between two keyframe requests forwarded to one publisher track.
    pub keyframe_interval: Duration,
    /// Forward a publisher's digitally silent audio (a muted microphone) once per 400 ms
    /// instead of every packet, as Opus DTX would send it (see `silence.rs`). Off by
    /// default, as Janus forwards all of it.
    pub thin_silent_audio: bool,
    /// Answer publishers with `usedtx=1` for Opus, so that browsers send silence as Opus
    /// DTX does (one packet per 400 ms) instead of 50 packets a second (see `silence.rs`).
    /// Off by default, as in Janus (its `opus_dtx` room option).
    pub opus_dtx: bool,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            external_ip: None,
            listen_v6: None,
            external_ip_v6: None,
            tcp_listen: None,
            public_tcp: None,
            publisher_wait: Duration::from_secs(10),
            ice_timeout: Duration::from_secs(30),
            keyframe_interval: Duration::from_millis(500),
            thin_silent_audio: false,
            opus_dtx: false,
        }
    }
}

/// Why the SFU could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the SFU's socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create a DTLS certificate: the crypto provider gave none")]
    Certificate,
    #[error("cannot start the SFU worker thread: {0}")]
    Thread(std::io::Error),
}

/// A running SFU; dropping it stops the worker and closes every peer.
pub struct Sfu {
    requests: mpsc::UnboundedSender<Request>,
    tcp_handoff: mpsc::UnboundedSender<std::net::TcpStream>,
    local_addr: SocketAddr,
    local_addr_v6: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    relay_inbox: RelayInbox,
    relay_port: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Box<dyn RelayPort>>>>,
}

impl Sfu {
    /// Bind the sockets, start the worker and return the SFU with its event stream.
    pub async fn start(
        cfg: SfuConfig,
    ) -> Result<(Sfu, mpsc::UnboundedReceiver<McuEvent>), StartError> {
        let udp = |addr: SocketAddr| {
            let bind = || {
                let s = std::net::UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Ok(s)
            };
            bind().map_err(|source| StartError::Bind { addr, source })
        };
        let udp4 = udp(cfg.listen)?;
        let local_addr = udp4.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let udp6 = cfg.listen_v6.map(udp).transpose()?;
        let local_addr_v6 = udp6.as_ref().and_then(|s| s.local_addr().ok());
        let tcp = cfg
            .tcp_listen
            .map(|addr| {
                let bind = || {
                    let l = std::net::TcpListener::bind(addr)?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                };
                bind().map_err(|source| StartError::Bind { addr, source })
            })
            .transpose()?;
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let (tcp_handoff, handoff) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let (relay_inbox, relay_in) = RelayInbox::new(metrics.clone());
        let (relay_port, relay_port_rx) = tokio::sync::oneshot::channel();
        let sockets = worker::Sockets {
            udp4,
            udp6,
            tcp,
            handoff,
            relay: worker::Relay {
                inbox: relay_in,
                port: Some(relay_port_rx),
            },
        };
        let worker = Worker::new(cfg, sockets, events_tx, requests_rx, metrics.clone())?;
        std::thread::Builder::new()
            .name("hpb-sfu".into())
            .spawn(move || worker.run())
            .map_err(StartError::Thread)?;
        tracing::info!(%local_addr, tcp = ?tcp_addr, "SFU listening");
        Ok((
            Sfu {
                requests,
                tcp_handoff,
                local_addr,
                local_addr_v6,
                tcp_addr,
                metrics,
                relay_inbox,
                relay_port: std::sync::Mutex::new(Some(relay_port)),
            },
            events_rx,
        ))
    }

    /// Where a TURN server of this process hands the datagrams its allocations send to the
    /// SFU's addresses (see [`RelayPort`] for the other direction).
    pub fn relay_inbox(&self) -> RelayInbox {
        self.relay_inbox.clone()
    }

    /// From now on, datagrams for the relayed addresses `port` owns leave through it instead
    /// of the UDP socket. Only the first call counts.
    pub fn attach_relay(&self, port: Box<dyn RelayPort>) {
        let tx = self.relay_port.lock().ok().and_then(|mut g| g.take());
        if let Some(tx) = tx {
            let _ = tx.send(port);
        }
    }

    /// Give the SFU an ICE-TCP connection that arrived on the shared public port (the
    /// caller has seen RFC 4571 framing around a STUN message in its first bytes, without
    /// consuming them). Ignored when `public_tcp` is not configured.
    pub fn accept_tcp(&self, stream: tokio::net::TcpStream) {
        match stream.into_std() {
            Ok(s) => {
                let _ = self.tcp_handoff.send(s);
            }
            Err(e) => tracing::debug!(error = %e, "cannot hand an ICE-TCP connection to the SFU"),
        }
    }

    /// Run one command; concurrent calls are fine.
    pub async fn request(&self, cmd: McuCommand) -> McuReply {
        self.submit(cmd).await
    }

    /// Like [`Sfu::request`], but the command is queued before this returns, so commands
    /// submitted one after another are processed in that order (signaling relies on it for
    /// one session's offer, candidates and answer).
    pub fn submit(
        &self,
        cmd: McuCommand,
    ) -> impl std::future::Future<Output = McuReply> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = self.requests.send(Request { cmd, reply }).is_ok();
        async move {
            if !queued {
                return worker::error("processing_failed", "the SFU worker has stopped");
            }
            rx.await.unwrap_or_else(|_| {
                worker::error("processing_failed", "the SFU worker has stopped")
            })
        }
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound IPv6 UDP address, when `listen_v6` is set.
    pub fn local_addr_v6(&self) -> Option<SocketAddr> {
        self.local_addr_v6
    }

    /// The bound address of the SFU's own ICE-TCP listener, when it has one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Prometheus text exposition of the `hpb_sfu_*` metrics.
    pub fn metrics(&self) -> String {
        self.metrics.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sfu_can_sit_behind_an_arc() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Sfu>();
        send_sync::<SfuConfig>();
    }
}
