//! The built-in SFU that replaces Janus: one UDP port for all peers (demultiplexed by ICE
//! ufrag, then by 5-tuple), ICE-lite, the SFU as DTLS server, str0m state machines driven by
//! one worker thread, publisher → subscriber forwarding of media and data channels.
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
//! - Loss recovery towards subscribers: every video codec offered to a subscriber has an RTX
//!   payload type (added when the publisher negotiated none) and NACK feedback, so str0m
//!   answers their NACKs with RFC 4588 retransmissions from its egress buffer;
//!   `hpb_sfu_nacks_received_total` and `hpb_sfu_retransmitted_packets_total` count that,
//!   `hpb_sfu_nacks_sent_total` the NACKs sent to publishers.
//! - Client SDP without usable `a=ice-ufrag`, `a=ice-pwd` or `a=fingerprint` (sha-256) is
//!   refused with `invalid_sdp` naming the attribute; a refused subscriber answer leaves the
//!   offer outstanding, so a corrected answer still works.

mod metrics;
mod peer;
mod recovery;
mod sdp;
mod stun;
mod worker;

/// The SFU's own parsers of client input, public only for the fuzz targets in `fuzz/`; not
/// an API (it may change with any release).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::recovery::rtp_ssrc;
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
    /// How long a Subscribe waits for its publisher to appear (Janus: 10 s).
    pub publisher_wait: Duration,
    /// A peer that has not connected, or has sent nothing, for this long is closed.
    pub ice_timeout: Duration,
    /// Minimum time between two keyframe requests forwarded to one publisher track.
    pub keyframe_interval: Duration,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            external_ip: None,
            publisher_wait: Duration::from_secs(10),
            ice_timeout: Duration::from_secs(30),
            keyframe_interval: Duration::from_millis(500),
        }
    }
}

/// Why the SFU could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the SFU's UDP socket on {addr}: {source}")]
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
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl Sfu {
    /// Bind the socket, start the worker and return the SFU with its event stream.
    pub async fn start(
        cfg: SfuConfig,
    ) -> Result<(Sfu, mpsc::UnboundedReceiver<McuEvent>), StartError> {
        let socket = std::net::UdpSocket::bind(cfg.listen).map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let local_addr = socket.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let worker = Worker::new(
            cfg,
            socket,
            local_addr,
            events_tx,
            requests_rx,
            metrics.clone(),
        )?;
        std::thread::Builder::new()
            .name("hpb-sfu".into())
            .spawn(move || worker.run())
            .map_err(StartError::Thread)?;
        tracing::info!(%local_addr, "SFU listening");
        Ok((
            Sfu {
                requests,
                local_addr,
                metrics,
            },
            events_rx,
        ))
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
