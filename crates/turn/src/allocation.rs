//! One TURN allocation: its relay socket, the client it belongs to and how to reach it, and
//! its permissions and channel bindings with their lifetimes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustc_hash::FxHashMap as HashMap;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::limits::Bucket;
use crate::metrics::Metrics;
use crate::peer_policy::canonical;
use crate::write_queue::WriteTx;

/// The transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// How frames reach the client.
#[derive(Clone)]
pub enum ClientSink {
    /// The UDP listener socket (with its batching state) the client talks to.
    Udp(Arc<std::net::UdpSocket>, Arc<quinn_udp::UdpSocketState>),
    /// The writer of a TCP/TLS connection (frames already padded for the stream).
    Stream(WriteTx),
}

/// Why a ChannelBind was refused (400 Bad Request).
#[derive(Debug, PartialEq, Eq)]
pub enum BindError {
    ChannelTaken(SocketAddr),
    PeerTaken(u16),
    TooMany(usize),
}

impl BindError {
    pub fn explain(&self) -> String {
        match self {
            BindError::ChannelTaken(p) => format!("the channel is bound to another peer ({p})"),
            BindError::PeerTaken(c) => format!("the peer is bound to another channel ({c:#06x})"),
            BindError::TooMany(n) => format!("this allocation has {n} channels already"),
        }
    }
}

pub struct AllocState {
    pub expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
    pub up: Bucket,
    pub down: Bucket,
}

pub struct Allocation {
    pub client: SocketAddr,
    pub transport: Transport,
    pub username: String,
    pub user: String,
    pub key: [u8; 16],
    pub allocate_txid: [u8; 12],
    pub relay: Arc<UdpSocket>,
    /// Batching state of the relay socket (GSO sends, batched receives).
    pub relay_state: Arc<quinn_udp::UdpSocketState>,
    /// The relayed transport address told to the client.
    pub relayed: SocketAddr,
    pub sink: ClientSink,
    pub state: Mutex<AllocState>,
    pub closed: AtomicBool,
    pub close_notify: Notify,
    metrics: Arc<Metrics>,
}

pub struct NewAllocation {
    pub client: SocketAddr,
    pub transport: Transport,
    pub username: String,
    pub user: String,
    pub key: [u8; 16],
    pub allocate_txid: [u8; 12],
    pub relay: Arc<UdpSocket>,
    pub relay_state: Arc<quinn_udp::UdpSocketState>,
    pub relayed: SocketAddr,
    pub sink: ClientSink,
    pub lifetime: Duration,
    pub max_bps: u64,
}

impl Allocation {
    pub fn new(n: NewAllocation, metrics: Arc<Metrics>) -> Allocation {
        metrics.allocations.fetch_add(1, Ordering::Relaxed);
        metrics.allocations_total.fetch_add(1, Ordering::Relaxed);
        Allocation {
            client: n.client,
            transport: n.transport,
            username: n.username,
            user: n.user,
            key: n.key,
            allocate_txid: n.allocate_txid,
            relay: n.relay,
            relay_state: n.relay_state,
            relayed: n.relayed,
            sink: n.sink,
            state: Mutex::new(AllocState {
                expires: Instant::now() + n.lifetime,
                permissions: HashMap::default(),
                channels: HashMap::default(),
                by_peer: HashMap::default(),
                up: Bucket::new(n.max_bps),
                down: Bucket::new(n.max_bps),
            }),
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            metrics,
        }
    }

    /// Marks the allocation closed (idempotent); returns whether this call closed it.
    pub fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        let st = self.state.lock();
        self.metrics.allocations.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .permissions
            .fetch_sub(st.permissions.len() as i64, Ordering::Relaxed);
        self.metrics
            .channels
            .fetch_sub(st.channels.len() as i64, Ordering::Relaxed);
        drop(st);
        self.close_notify.notify_waiters();
        self.close_notify.notify_one();
        true
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl AllocState {
    /// A fresh state living `lifetime`, with `max_bps` caps each direction.
    pub fn new(lifetime: Duration, max_bps: u64) -> AllocState {
        AllocState {
            expires: Instant::now() + lifetime,
            permissions: HashMap::default(),
            channels: HashMap::default(),
            by_peer: HashMap::default(),
            up: Bucket::new(max_bps),
            down: Bucket::new(max_bps),
        }
    }

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&canonical(ip))
            .is_some_and(|exp| *exp > now)
    }

    /// Installs or refreshes a permission; false when `max` permissions exist already.
    pub fn add_permission(
        &mut self,
        ip: IpAddr,
        until: Instant,
        max: usize,
        metrics: &Metrics,
    ) -> bool {
        let ip = canonical(ip);
        if let Some(e) = self.permissions.get_mut(&ip) {
            *e = until;
            return true;
        }
        if self.permissions.len() >= max {
            return false;
        }
        self.permissions.insert(ip, until);
        metrics.permissions.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    /// Whether a permission for `ip` exists or one more fits under `max`.
    pub fn permission_fits(&self, ip: IpAddr, max: usize) -> bool {
        self.permissions.contains_key(&canonical(ip)) || self.permissions.len() < max
    }

    /// Binds `channel` to `peer` or refreshes that binding.
    pub fn bind_channel(
        &mut self,
        channel: u16,
        peer: SocketAddr,
        until: Instant,
        max: usize,
        metrics: &Metrics,
    ) -> Result<(), BindError> {
        if let Some((p, _)) = self.channels.get(&channel)
            && *p != peer
        {
            return Err(BindError::ChannelTaken(*p));
        }
        if let Some(c) = self.by_peer.get(&peer)
            && *c != channel
        {
            return Err(BindError::PeerTaken(*c));
        }
        if !self.channels.contains_key(&channel) {
            if self.channels.len() >= max {
                return Err(BindError::TooMany(self.channels.len()));
            }
            metrics.channels.fetch_add(1, Ordering::Relaxed);
        }
        self.channels.insert(channel, (peer, until));
        self.by_peer.insert(peer, channel);
        Ok(())
    }

    pub fn channel_peer(&self, channel: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|(_, exp)| *exp > now)
            .map(|(p, _)| *p)
    }

    pub fn peer_channel(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let c = *self.by_peer.get(&peer)?;
        self.channel_peer(c, now).map(|_| c)
    }

    /// Drops expired permissions and channels (a channel's peer keeps its slot for 5 more
    /// minutes per RFC 8656 §12, so it cannot be rebound to another channel at once).
    pub fn expire(&mut self, now: Instant, metrics: &Metrics) {
        let before = self.permissions.len();
        self.permissions.retain(|_, exp| *exp > now);
        metrics
            .permissions
            .fetch_sub((before - self.permissions.len()) as i64, Ordering::Relaxed);
        let grace = Duration::from_secs(300);
        let mut gone = Vec::new();
        for (c, (p, exp)) in &self.channels {
            if *exp + grace <= now {
                gone.push((*c, *p));
            }
        }
        for (c, p) in gone {
            self.channels.remove(&c);
            self.by_peer.remove(&p);
            metrics.channels.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AllocState {
        AllocState {
            expires: Instant::now(),
            permissions: HashMap::default(),
            channels: HashMap::default(),
            by_peer: HashMap::default(),
            up: Bucket::new(0),
            down: Bucket::new(0),
        }
    }

    #[test]
    fn permissions_expire_and_are_bounded() {
        let m = Metrics::default();
        let mut s = state();
        let now = Instant::now();
        let ip: IpAddr = "8.8.8.8".parse().expect("ip");
        assert!(s.add_permission(ip, now + Duration::from_secs(300), 1, &m));
        assert!(s.has_permission(ip, now));
        assert!(s.has_permission("::ffff:8.8.8.8".parse().expect("ip"), now));
        assert!(!s.add_permission("8.8.4.4".parse().expect("ip"), now, 1, &m));
        assert!(!s.has_permission(ip, now + Duration::from_secs(301)));
        s.expire(now + Duration::from_secs(301), &m);
        assert_eq!(s.permission_count(), 0);
        assert_eq!(m.permissions.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn channel_rules() {
        let m = Metrics::default();
        let mut s = state();
        let now = Instant::now();
        let until = now + Duration::from_secs(600);
        let a: SocketAddr = "8.8.8.8:1".parse().expect("addr");
        let b: SocketAddr = "8.8.8.8:2".parse().expect("addr");
        assert_eq!(s.bind_channel(0x4000, a, until, 10, &m), Ok(()));
        // Rebinding the same pair refreshes.
        assert_eq!(s.bind_channel(0x4000, a, until, 10, &m), Ok(()));
        assert_eq!(
            s.bind_channel(0x4000, b, until, 10, &m),
            Err(BindError::ChannelTaken(a))
        );
        assert_eq!(
            s.bind_channel(0x4001, a, until, 10, &m),
            Err(BindError::PeerTaken(0x4000))
        );
        assert_eq!(s.channel_peer(0x4000, now), Some(a));
        assert_eq!(s.peer_channel(a, now), Some(0x4000));
        assert_eq!(s.channel_peer(0x4000, until), None);
        s.expire(until + Duration::from_secs(301), &m);
        assert_eq!(s.bind_channel(0x4001, a, until, 10, &m), Ok(()));
        assert_eq!(m.channels.load(Ordering::Relaxed), 1);
    }
}
