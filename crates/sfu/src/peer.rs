//! One client connection of the SFU (a publisher or a subscriber): its str0m `Rtc`, the
//! per-role forwarding state, and panic-guarded calls into str0m that turn its output into
//! datagrams on the shared socket and [`Ev`]s for the worker.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use hpb_proto::mcu::StreamType;
use str0m::change::SdpPendingOffer;
use str0m::channel::{ChannelData, ChannelId};
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequest, MediaData, MediaKind, Mid, Rid};
use str0m::{Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::metrics::{Metrics, inc};

pub(crate) type PeerId = u64;

/// What a peer's str0m instance reported that the worker acts on.
// Events live briefly in one reused Vec; boxing MediaData would allocate per frame.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ev {
    Connected,
    MediaAdded { mid: Mid, kind: MediaKind },
    Media(MediaData),
    KeyframeRequest(KeyframeRequest),
    ChannelOpen(ChannelId, String),
    ChannelData(ChannelData),
}

/// Why a peer must be closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerFailure {
    #[error("str0m panicked")]
    Panic,
    #[error("str0m error: {0}")]
    Rtc(#[from] str0m::RtcError),
    #[error("the connection is closed")]
    NotAlive,
}

/// An incoming track of a publisher.
pub(crate) struct TrackIn {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Simulcast layers seen so far; the forwarded one is the highest.
    pub rids: Vec<Rid>,
    pub last_keyframe_request: Option<Instant>,
}

pub(crate) struct PublisherState {
    pub tracks: Vec<TrackIn>,
    pub subscribers: Vec<PeerId>,
    /// Negotiated codecs of the publisher, used to make subscriber offers that match.
    pub params: Vec<PayloadParams>,
    pub up_announced: bool,
}

/// A send-only track of a subscriber fed by publisher track `source`.
pub(crate) struct TrackOut {
    pub mid: Mid,
    pub source: Mid,
}

pub(crate) struct SubscriberState {
    pub publisher: PeerId,
    pub tracks: Vec<TrackOut>,
    pub channel: Option<ChannelId>,
    pub channel_open: bool,
    pub pending: Option<SdpPendingOffer>,
    pub last_offer: String,
}

pub(crate) enum Role {
    Publisher(PublisherState),
    Subscriber(SubscriberState),
}

pub(crate) struct Peer {
    pub id: PeerId,
    pub rtc: Rtc,
    pub ufrag: String,
    /// The signaling session this connection belongs to.
    pub session: String,
    /// The publishing session of the stream (== `session` for a publisher).
    pub publisher: String,
    pub stream: StreamType,
    pub sid: String,
    pub role: Role,
    pub next_timeout: Instant,
    pub last_rx: Instant,
    pub connected: bool,
    pub addrs: Vec<SocketAddr>,
    /// Publisher bitrate cap in bits/s sent as REMB (0 = none).
    pub max_bitrate: u64,
    pub next_remb: Instant,
}

/// Run `f` on the peer's `Rtc`, turning a panic into [`PeerFailure::Panic`].
pub(crate) fn guarded<T>(rtc: &mut Rtc, f: impl FnOnce(&mut Rtc) -> T) -> Result<T, PeerFailure> {
    catch_unwind(AssertUnwindSafe(|| f(rtc))).map_err(|_| PeerFailure::Panic)
}

impl Peer {
    pub fn publisher_state(&mut self) -> Option<&mut PublisherState> {
        match &mut self.role {
            Role::Publisher(p) => Some(p),
            Role::Subscriber(_) => None,
        }
    }

    pub fn subscriber_state(&mut self) -> Option<&mut SubscriberState> {
        match &mut self.role {
            Role::Subscriber(s) => Some(s),
            Role::Publisher(_) => None,
        }
    }

    pub fn handle_input(&mut self, input: Input) -> Result<(), PeerFailure> {
        if let Input::Receive(t, _) = &input {
            self.last_rx = *t;
        }
        guarded(&mut self.rtc, |rtc| rtc.handle_input(input))??;
        Ok(())
    }

    /// Drain str0m's output: send datagrams, collect events, remember the next timeout.
    pub fn poll(
        &mut self,
        socket: &UdpSocket,
        metrics: &Metrics,
        events: &mut Vec<(PeerId, Ev)>,
    ) -> Result<(), PeerFailure> {
        loop {
            if !self.rtc.is_alive() {
                return Err(PeerFailure::NotAlive);
            }
            let out = guarded(&mut self.rtc, |rtc| rtc.poll_output())??;
            match out {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    match socket.try_send_to(&t.contents, t.destination) {
                        Ok(n) => {
                            inc(&metrics.udp_tx_packets, 1);
                            inc(&metrics.udp_tx_bytes, n as u64);
                        }
                        // UDP: a full socket buffer drops the datagram, as the network would.
                        Err(e) => tracing::debug!(peer = self.id, error = %e, "send failed"),
                    }
                }
                Output::Event(e) => {
                    let ev = match e {
                        Event::Connected => {
                            self.connected = true;
                            Ev::Connected
                        }
                        Event::IceConnectionStateChange(state) => {
                            // Disconnected can recover (consent checks resume); a peer that
                            // stays silent is closed by the worker's ICE timeout instead.
                            tracing::debug!(peer = self.id, ?state, "ICE state");
                            continue;
                        }
                        Event::MediaAdded(m) => Ev::MediaAdded {
                            mid: m.mid,
                            kind: m.kind,
                        },
                        Event::MediaData(d) => Ev::Media(d),
                        Event::KeyframeRequest(r) => Ev::KeyframeRequest(r),
                        Event::ChannelOpen(id, label) => Ev::ChannelOpen(id, label),
                        Event::ChannelData(d) => Ev::ChannelData(d),
                        _ => continue,
                    };
                    events.push((self.id, ev));
                }
            }
        }
    }
}

/// Rank of a simulcast rid: higher is a better layer. Talk/janus.js use `h`/`m`/`l`,
/// Firefox and others `f`/`h`/`q` or `2`/`1`/`0`.
pub(crate) fn rid_rank(rid: &str) -> u8 {
    match rid {
        "f" | "hi" | "high" | "2" => 3,
        "h" => 2,
        "m" | "mid" | "1" => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_ranking_prefers_the_high_layer() {
        assert!(rid_rank("h") > rid_rank("m"));
        assert!(rid_rank("m") > rid_rank("l"));
        assert!(rid_rank("f") > rid_rank("h"));
        assert!(rid_rank("2") > rid_rank("1"));
    }

    #[test]
    fn panics_are_caught() {
        let mut rtc = Rtc::builder()
            .set_crypto_provider(std::sync::Arc::new(str0m::crypto::from_feature_flags()))
            .build(Instant::now());
        let r: Result<(), _> = guarded(&mut rtc, |_| panic!("boom"));
        assert!(matches!(r, Err(PeerFailure::Panic)));
    }
}
