//! The SFU worker: one thread with its own current-thread runtime that owns the UDP socket
//! and every peer. This module has the loop, the demultiplexing of datagrams (5-tuple, then
//! STUN ufrag) and the polling of peers; `commands` runs the signaling side's commands,
//! `forward` moves media, data channel messages and keyframe requests, `timers` runs what is
//! due (str0m's timeouts, ICE timeouts, REMB, sender reports) and `closing` tears peers down.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpb_proto::mcu::{
    IceCandidate, McuCommand, McuError, McuEvent, McuReply, Selection, StreamType,
};
use rand::Rng;
use rand::distr::Alphanumeric;
use str0m::bwe::Bitrate;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::CodecConfig;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, IceCreds, Input, Output, Rtc};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::egress::Clock;
use crate::metrics::{Metrics, gauge, inc};
use crate::net::{Net, RecvBatch, TcpIn, media_socket};
use crate::peer::{
    Ev, Peer, PeerFailure, PeerId, PeerNames, PublisherState, Role, SubscriberState, TrackIn,
    TrackOut, caught, guarded,
};
use crate::sdp;
use crate::{SfuConfig, StartError};

mod closing;
mod commands;
mod forward;
mod timers;

use closing::Closing;

/// The label of the channel subscribers get publisher messages on (Talk reads it).
pub(crate) const SUBSCRIBER_CHANNEL: &str = "JanusDataChannel";

/// Most receive batches (system calls) in one wake-up before timers and commands get their
/// turn.
const RECV_ROUNDS: usize = 4;

/// How late a timer (str0m's: feedback, NACKs, handshake retransmissions; ours: REMB,
/// sender reports) may run when nothing else wakes the worker: while media flows,
/// datagrams wake it every few milliseconds and the due timers run then, so timers of
/// different peers share wake-ups instead of each costing one.
const TIMER_SLACK: Duration = Duration::from_millis(5);

pub(crate) struct Request {
    pub cmd: McuCommand,
    pub reply: oneshot::Sender<McuReply>,
}

pub(crate) fn error(code: &str, message: impl Into<String>) -> McuReply {
    McuReply::Error(McuError {
        code: code.to_owned(),
        message: message.into(),
    })
}

/// A Subscribe waiting for its publisher to appear.
struct PendingSubscribe {
    subscriber: String,
    publisher: String,
    stream: StreamType,
    sid: String,
    selection: Selection,
    deadline: Instant,
    reply: oneshot::Sender<McuReply>,
}

type SubKey = (String, String, StreamType);

pub(crate) struct Worker {
    cfg: SfuConfig,
    sockets: Option<Sockets>,
    /// Our UDP candidate addresses (IPv4, and IPv6 when listening there).
    candidate_addr: SocketAddr,
    candidate_addr6: Option<SocketAddr>,
    /// Our passive ICE-TCP candidates: the SFU's own TCP listener, and the shared public port
    /// whose connections arrive through [`crate::Sfu::accept_tcp`].
    tcp_candidate: Option<SocketAddr>,
    public_tcp_candidate: Option<SocketAddr>,
    events: mpsc::UnboundedSender<McuEvent>,
    requests: mpsc::UnboundedReceiver<Request>,
    metrics: Arc<Metrics>,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    next_id: PeerId,
    /// Looked up per datagram and per forwarded packet: FxHash, as the keys are the SFU's
    /// own ids and addresses that passed ICE, not what a client chooses freely.
    peers: FxHashMap<PeerId, Peer>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: FxHashMap<SocketAddr, PeerId>,
    publishers: HashMap<(String, StreamType), PeerId>,
    subscribers: HashMap<SubKey, PeerId>,
    /// Selected simulcast layer per subscriber peer.
    selections: FxHashMap<PeerId, Selection>,
    pending: Vec<PendingSubscribe>,
    /// Closed peers still draining their close output.
    closing: Vec<Closing>,
    /// Peers that got input since they were last polled: a receive batch is handed to str0m
    /// datagram by datagram, and each subscriber is polled once for the whole batch (polling
    /// a str0m instance costs several microseconds). A publisher is polled after each
    /// datagram: str0m's RTP mode holds only one received packet.
    touched: Vec<PeerId>,
    /// Buffers the per-packet path reuses instead of allocating per batch or packet.
    scratch: Scratch,
    /// The worker's clock against the wall clock (RTP header times, sender reports).
    clock: Clock,
}

/// Reusable buffers of the forwarding path: taken, used, cleared and put back, so the
/// steady state allocates nothing of ours per packet (a nested use just gets a new one).
#[derive(Default)]
struct Scratch {
    /// The events of one polling round.
    events: Vec<(PeerId, Ev)>,
    /// The peers the events of one round touched (the next round's peers).
    dirty: Vec<PeerId>,
    /// The subscribers a packet or message is forwarded to.
    subscribers: Vec<PeerId>,
    /// A forwarded payload that differs from the publisher's (an RTX prefix, VP8 ids).
    plain: Vec<u8>,
    /// A compound RTCP packet being built (sender reports).
    rtcp: Vec<u8>,
    /// Its SRTCP form.
    srtcp: Vec<u8>,
    /// The peer polled right after its input.
    dirty_now: Vec<PeerId>,
}

impl Scratch {
    /// `of` copied into the subscriber buffer (give it back to `subscribers` after use).
    fn subscribers(&mut self, of: &[PeerId]) -> Vec<PeerId> {
        let mut subs = std::mem::take(&mut self.subscribers);
        subs.clear();
        subs.extend_from_slice(of);
        subs
    }
}

/// The worker's end of the link to the TURN server of this process ([`crate::relay_link`]):
/// its datagrams for us, and (once it runs) its side for our datagrams to its relayed
/// addresses.
pub(crate) struct Relay {
    pub inbox: crate::relay_link::RelayReceiver,
    /// Until the TURN server attaches (or never does).
    pub port: Option<tokio::sync::oneshot::Receiver<Box<dyn crate::relay_link::RelayPort>>>,
}

/// Datagrams from TURN taken in one wake-up at most, before sockets and timers get a turn.
const RELAYED_PER_WAKE: usize = 64;

/// The bound sockets, moved into the worker's runtime when it starts.
pub(crate) struct Sockets {
    pub udp4: std::net::UdpSocket,
    pub udp6: Option<std::net::UdpSocket>,
    pub tcp: Option<std::net::TcpListener>,
    /// Connections from the shared public port (already told apart as ICE-TCP).
    pub handoff: mpsc::UnboundedReceiver<std::net::TcpStream>,
    pub relay: Relay,
}

/// The address announced for a socket bound to `bound`: the external IP when set (for its
/// family), else the bound IP; an unspecified bound IP becomes loopback, with a warning.
fn announced(bound: SocketAddr, external: Option<IpAddr>, what: &str) -> SocketAddr {
    let ip = match (external, bound.ip()) {
        (Some(ip), b) if ip.is_ipv4() == b.is_ipv4() => ip,
        (_, ip) if ip.is_unspecified() => {
            warn!(
                "SFU {what} listens on {bound} without an external IP: announcing loopback, \
                 set the external IP so remote clients can reach the SFU"
            );
            if ip.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
        }
        (_, ip) => ip,
    };
    SocketAddr::new(ip, bound.port())
}

impl Worker {
    pub fn new(
        cfg: SfuConfig,
        sockets: Sockets,
        events: mpsc::UnboundedSender<McuEvent>,
        requests: mpsc::UnboundedReceiver<Request>,
        metrics: Arc<Metrics>,
    ) -> Result<Worker, StartError> {
        let crypto = Arc::new(crate::key_tap::provider(str0m::crypto::from_feature_flags()));
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or(StartError::Certificate)?;
        let bound = |r: std::io::Result<SocketAddr>, addr: SocketAddr| {
            r.map_err(|source| StartError::Bind { addr, source })
        };
        let candidate_addr = announced(
            bound(sockets.udp4.local_addr(), cfg.listen)?,
            cfg.external_ip,
            "UDP",
        );
        let candidate_addr6 = match (&sockets.udp6, cfg.listen_v6) {
            (Some(s), Some(l)) => Some(announced(
                bound(s.local_addr(), l)?,
                cfg.external_ip_v6,
                "UDP",
            )),
            _ => None,
        };
        let tcp_candidate = match (&sockets.tcp, cfg.tcp_listen) {
            (Some(s), Some(l)) => Some(announced(
                bound(s.local_addr(), l)?,
                cfg.external_ip,
                "ICE-TCP",
            )),
            _ => None,
        };
        let public_tcp_candidate = cfg
            .public_tcp
            .map(|a| announced(a, cfg.external_ip, "public TCP port"));
        Ok(Worker {
            cfg,
            sockets: Some(sockets),
            candidate_addr,
            candidate_addr6,
            tcp_candidate,
            public_tcp_candidate,
            events,
            requests,
            metrics,
            crypto,
            cert,
            next_id: 1,
            peers: FxHashMap::default(),
            by_ufrag: HashMap::new(),
            by_addr: FxHashMap::default(),
            publishers: HashMap::new(),
            subscribers: HashMap::new(),
            selections: FxHashMap::default(),
            pending: Vec::new(),
            closing: Vec::new(),
            touched: Vec::new(),
            scratch: Scratch::default(),
            clock: Clock::now(),
        })
    }

    /// The thread body: build a runtime for the sockets and loop until the Sfu is dropped.
    pub fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "SFU worker cannot build its runtime");
                return;
            }
        };
        rt.block_on(async move {
            let Some(sockets) = self.sockets.take() else {
                return;
            };
            let registered = (|| {
                let udp4 = media_socket(sockets.udp4)?;
                let udp6 = match sockets.udp6 {
                    Some(s) => Some(media_socket(s)?),
                    None => None,
                };
                let tcp = match sockets.tcp {
                    Some(l) => Some(TcpListener::from_std(l)?),
                    None => None,
                };
                std::io::Result::Ok((udp4, udp6, tcp))
            })();
            let (udp4, udp6, tcp) = match registered {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "SFU worker cannot register its sockets");
                    return;
                }
            };
            let udp6 = udp6.zip(self.candidate_addr6);
            let (mut net, tcp_in) =
                match Net::new(udp4, self.candidate_addr, udp6, self.metrics.clone()) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(error = %e, "SFU worker cannot set up its UDP sockets");
                        return;
                    }
                };
            self.event_loop(
                &mut net,
                tcp.as_ref(),
                sockets.handoff,
                tcp_in,
                sockets.relay,
            )
            .await;
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                self.close_peer(id, "the SFU stopped", false);
            }
            self.drain_closing(Instant::now(), &net);
            net.flush();
        });
    }

    async fn event_loop(
        &mut self,
        net: &mut Net,
        listener: Option<&TcpListener>,
        mut handoff: mpsc::UnboundedReceiver<std::net::TcpStream>,
        mut tcp_in: mpsc::Receiver<TcpIn>,
        mut relay: Relay,
    ) {
        let mut batch = net.recv_batch();
        let mut handoff_open = true;
        loop {
            let deadline = self.next_deadline();
            // A timer in the future may wait a little longer for a wake-up of its own: the
            // next datagram (a few milliseconds away in a call) services it on the way.
            // One due already waits a millisecond: a str0m instance asking for "now" again and
            // again must not make the worker spin.
            let now = Instant::now();
            let wake = if deadline <= now {
                now + Duration::from_millis(1)
            } else {
                deadline.max(now + Duration::from_millis(1)) + TIMER_SLACK
            };
            let udp6 = net.udp6.as_ref().map(|(s, _)| s);
            tokio::select! {
                req = self.requests.recv() => match req {
                    None => return,
                    Some(req) => self.on_request(req, net),
                },
                r = net.udp4.readable() => match r {
                    Err(e) => {
                        warn!(error = %e, "SFU socket failed");
                        return;
                    }
                    Ok(mut ready) => {
                        if self.read_udp(&mut batch, net, false) {
                            ready.clear_ready();
                        }
                    }
                },
                r = async { udp6?.readable().await.ok() }, if udp6.is_some() => {
                    if let Some(mut ready) = r
                        && self.read_udp(&mut batch, net, true)
                    {
                        ready.clear_ready();
                    }
                }
                a = async { listener?.accept().await.ok() }, if listener.is_some() => {
                    if let (Some((stream, _)), Some(local)) = (a, self.tcp_candidate) {
                        net.add_tcp(stream, local);
                    }
                }
                s = handoff.recv(), if handoff_open => match s {
                    None => handoff_open = false,
                    Some(s) => self.on_handoff(s, net),
                },
                Some(m) = tcp_in.recv() => self.on_tcp(m, net),
                Some(r) = relay.inbox.recv() => {
                    self.on_relayed(r, &relay.inbox, net);
                    for _ in 0..RELAYED_PER_WAKE {
                        let Some(r) = relay.inbox.try_recv() else { break };
                        self.on_relayed(r, &relay.inbox, net);
                    }
                    self.drive_touched(net);
                }
                p = async { relay.port.as_mut()?.await.ok() }, if relay.port.is_some() => {
                    relay.port = None;
                    if let Some(p) = p {
                        net.attach_relay(p);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            // Timers only when one is due: a busy socket must not cost a scan per datagram.
            let now = Instant::now();
            if now >= deadline {
                self.on_timers(now, net);
            }
            if !self.closing.is_empty() {
                self.drain_closing(Instant::now(), net);
            }
            net.flush();
        }
    }

    /// Read what one UDP socket has, a few batches at most before timers and commands get
    /// their turn; true when it is drained (its readiness is to be cleared).
    fn read_udp(&mut self, batch: &mut RecvBatch, net: &Net, v6: bool) -> bool {
        for _ in 0..RECV_ROUNDS {
            let n = match net.recv(v6, batch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                // e.g. ICMP port unreachable reported on the next read.
                Err(e) => {
                    debug!(error = %e, "SFU recv error");
                    break;
                }
            };
            for (src, data) in batch.datagrams(n) {
                self.on_datagram(data, src, net);
            }
            self.drive_touched(net);
            if n < batch.capacity() {
                // The socket had no more: drained without another call to learn it (a
                // datagram arriving meanwhile is a new readiness event for the runtime).
                return true;
            }
        }
        false
    }

    /// A connection from the public port, already recognised as ICE-TCP by its first bytes.
    fn on_handoff(&mut self, stream: std::net::TcpStream, net: &mut Net) {
        let Some(local) = self.public_tcp_candidate else {
            return;
        };
        match TcpStream::from_std(stream) {
            Ok(s) => {
                net.add_tcp(s, local);
            }
            Err(e) => debug!(error = %e, "cannot take an ICE-TCP connection"),
        }
    }

    fn on_tcp(&mut self, m: TcpIn, net: &mut Net) {
        match m {
            TcpIn::Closed { remote } => {
                debug!(%remote, "ICE-TCP connection closed");
                net.tcp.remove(&remote);
            }
            TcpIn::Frame { remote, data } => {
                inc(&self.metrics.tcp_rx_frames, 1);
                let Some(conn) = net.tcp.get(&remote) else {
                    return;
                };
                let (local, known) = (conn.local, conn.peer);
                if let Some(id) = self.receive(Protocol::Tcp, &data, remote, local, known, net)
                    && let Some(c) = net.tcp.get_mut(&remote)
                {
                    c.peer = Some(id);
                }
                net.recycle(data);
                self.drive_touched(net);
            }
        }
    }

    // ---- network input -------------------------------------------------------------

    /// A datagram the TURN server of this process relayed to us: a UDP datagram from the
    /// relayed address, as far as str0m is concerned. Its buffer goes back to `inbox`.
    fn on_relayed(
        &mut self,
        r: crate::relay_link::Relayed,
        inbox: &crate::relay_link::RelayReceiver,
        net: &Net,
    ) {
        inc(&self.metrics.turn_rx_packets, 1);
        self.on_datagram(&r.data, r.from, net);
        inbox.recycle(r);
    }

    fn on_datagram(&mut self, data: &[u8], source: SocketAddr, net: &Net) {
        inc(&self.metrics.udp_rx_packets, 1);
        inc(&self.metrics.udp_rx_bytes, data.len() as u64);
        let mapped = self.by_addr.get(&source).copied();
        let destination = net.udp_candidate(source);
        if let Some(id) = self.receive(Protocol::Udp, data, source, destination, mapped, net) {
            debug!(peer = id, %source, "new 5-tuple for peer");
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.addrs.push(source);
            }
            if let Some(old) = self.by_addr.insert(source, id)
                && old != id
                && let Some(p) = self.peers.get_mut(&old)
            {
                p.addrs.retain(|a| *a != source);
            }
        }
    }

    /// Hand one packet to its peer: STUN names its peer by ufrag (a 5-tuple may move to a
    /// new connection of the same client); everything else goes by the 5-tuple's peer
    /// (`mapped`). Returns the peer when this 5-tuple is new to it and was accepted.
    fn receive(
        &mut self,
        proto: Protocol,
        data: &[u8],
        source: SocketAddr,
        destination: SocketAddr,
        mapped: Option<PeerId>,
        net: &Net,
    ) -> Option<PeerId> {
        let by_ufrag = crate::stun::local_ufrag(data).and_then(|u| self.by_ufrag.get(u).copied());
        let known = match (by_ufrag, mapped) {
            (Some(u), Some(m)) if u != m => None,
            (_, m) => m,
        };
        let Some(id) = by_ufrag.or(known) else {
            self.metrics.ignored(proto);
            return None;
        };
        let Ok(contents) = data.try_into() else {
            self.metrics.ignored(proto);
            return None;
        };
        let now = Instant::now();
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let Some(peer) = self.peers.get_mut(&id) else {
            if !self.on_closing_datagram(id, input) {
                if proto == Protocol::Udp {
                    self.by_addr.remove(&source);
                }
                self.metrics.ignored(proto);
            }
            return None;
        };
        if known.is_none() && !peer.rtc.accepts(&input) {
            self.metrics.ignored(proto);
            return None;
        }
        let is_publisher = matches!(peer.role, Role::Publisher(_));
        if known.is_some() && !is_publisher && !crate::stun::is_stun(data) {
            // The client's own datagrams travel its nominated candidate pair.
            peer.path = Some((proto, destination, source));
        }
        if let Err(e) = peer.handle_input(input) {
            self.fail_peer(id, e);
            return None;
        }
        if is_publisher {
            // str0m's RTP mode holds one received packet until the next poll: take it now.
            let mut ids = std::mem::take(&mut self.scratch.dirty_now);
            ids.clear();
            ids.push(id);
            self.drive_ids(&mut ids, net);
            self.scratch.dirty_now = ids;
        } else {
            self.touched.push(id);
        }
        known.is_none().then_some(id)
    }

    /// Poll the peers that got input (see `touched`).
    fn drive_touched(&mut self, net: &Net) {
        if !self.touched.is_empty() {
            let mut ids = std::mem::take(&mut self.touched);
            self.drive_ids(&mut ids, net);
            // The buffer goes back for the next batch (unless peers were touched meanwhile).
            ids.clear();
            if self.touched.is_empty() {
                self.touched = ids;
            }
        }
    }

    /// Poll the given peers, act on their events, and repeat for the peers that touched.
    fn drive(&mut self, mut ids: Vec<PeerId>, net: &Net) {
        self.drive_ids(&mut ids, net);
    }

    /// [`Self::drive`] on a buffer of the caller's, left with what could not be polled.
    fn drive_ids(&mut self, ids: &mut Vec<PeerId>, net: &Net) {
        let mut events = std::mem::take(&mut self.scratch.events);
        let mut next = std::mem::take(&mut self.scratch.dirty);
        // Bounded: events of one round (e.g. media → subscribers) cause at most a few more.
        for _ in 0..8 {
            if ids.is_empty() {
                break;
            }
            ids.sort_unstable();
            ids.dedup();
            events.clear();
            for id in ids.iter() {
                let Some(p) = self.peers.get_mut(id) else {
                    continue;
                };
                if let Err(e) = p.poll(net, &self.metrics, &mut events) {
                    self.fail_peer(*id, e);
                }
            }
            next.clear();
            self.on_events(events.drain(..), &mut next, net);
            std::mem::swap(ids, &mut next);
        }
        // Whatever is left is polled on the next timer round, right away.
        let now = Instant::now();
        for id in ids.iter() {
            if let Some(p) = self.peers.get_mut(id) {
                p.next_timeout = now;
            }
        }
        self.scratch.events = events;
        self.scratch.dirty = next;
    }
}

/// The simulcast layer a viewer gets: `substream` (0 = lowest) among the layers, the highest
/// when unset or out of range; if that layer is not being sent (`active`), the nearest lower
/// one that is, else the nearest higher one; the wanted one when none is. `None` without
/// simulcast.
pub(crate) fn pick_rid(
    rids_ascending: &[Rid],
    substream: Option<u8>,
    active: impl Fn(Rid) -> bool,
) -> Option<Rid> {
    let last = rids_ascending.len().checked_sub(1)?;
    let want = substream.map_or(last, |s| usize::from(s).min(last));
    let is_active = |i: &usize| rids_ascending.get(*i).is_some_and(|r| active(*r));
    let i = (0..=want)
        .rev()
        .find(is_active)
        .or_else(|| (want + 1..=last).find(is_active))
        .unwrap_or(want);
    rids_ascending.get(i).copied()
}

fn random_string(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A fresh subscription id: decimal like Janus' handle ids, below 2^53 for JavaScript.
fn new_sid() -> String {
    (rand::random::<u64>() >> 11).max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_picking() {
        let rids: Vec<Rid> = vec!["l".into(), "m".into(), "h".into()];
        let all = |_: Rid| true;
        assert_eq!(pick_rid(&rids, None, all), Some("h".into()));
        assert_eq!(pick_rid(&rids, Some(0), all), Some("l".into()));
        assert_eq!(pick_rid(&rids, Some(1), all), Some("m".into()));
        assert_eq!(pick_rid(&rids, Some(9), all), Some("h".into()));
        assert_eq!(pick_rid(&[], Some(1), all), None);
        // Chromium sends two of three announced layers: the best one sent.
        let two = |r: Rid| r != Rid::from("h");
        assert_eq!(pick_rid(&rids, None, two), Some("m".into()));
        assert_eq!(pick_rid(&rids, Some(2), two), Some("m".into()));
        assert_eq!(pick_rid(&rids, Some(0), two), Some("l".into()));
        // Only the top one sent: the nearest higher layer rather than nothing.
        let top = |r: Rid| r == Rid::from("h");
        assert_eq!(pick_rid(&rids, Some(0), top), Some("h".into()));
        // Nothing sent yet: the wanted layer.
        assert_eq!(pick_rid(&rids, Some(1), |_| false), Some("m".into()));
    }

    #[test]
    fn ids_look_like_janus_handles() {
        let sid = new_sid();
        assert!(
            sid.parse::<u64>().is_ok_and(|v| v > 0 && v < (1 << 53)),
            "{sid}"
        );
        assert_eq!(random_string(8).len(), 8);
    }
}
