//! The TURN state machine shared by every listener: STUN Binding, authentication, Allocate,
//! Refresh, CreatePermission, ChannelBind, Send indications and ChannelData from clients.
//! A listener hands it each datagram or stream frame with the table of allocations it owns;
//! it answers into a buffer and relays data through the allocations' relay sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use crate::allocation::{Allocation, BindError, ClientSink, NewAllocation, Transport};
use crate::attr;
use crate::auth::{self, AuthFailure, Nonces};
use crate::channel_data;
use crate::config::TurnConfig;
use crate::limits::{AuthFailures, Bucket, Quotas};
use crate::message::{self, Builder, Class, Message, method};
use crate::metrics::Metrics;
use crate::peer_policy::PeerPolicy;
use crate::to_peer::PeerBatch;

/// The allocations one listener (a UDP worker or one stream connection) owns, by client
/// (only authenticated clients within their quotas add entries, so a fast hash is fine).
pub type AllocTable = Mutex<FxHashMap<SocketAddr, Arc<Allocation>>>;

/// One datagram or stream frame from a client.
pub struct Incoming<'a> {
    pub from: SocketAddr,
    pub transport: Transport,
    pub data: &'a [u8],
}

/// What the listener does after a packet.
#[derive(Debug)]
pub enum Reply {
    None,
    /// Send the reply left in the output buffer.
    Send,
    /// Send the reply, then this stream connection carries raw data to and from the peer
    /// (RFC 6062 ConnectionBind).
    Pipe(tokio::net::TcpStream),
}

pub struct Server {
    pub cfg: TurnConfig,
    nonces: Nonces,
    pub policy: PeerPolicy,
    pub(crate) quotas: Quotas,
    auth_failures: AuthFailures,
    total_up: Mutex<Bucket>,
    total_down: Mutex<Bucket>,
    /// Every UDP allocation by its relayed address, for relaying between two of them
    /// in-process ([`TurnConfig::relay_short_circuit`]).
    relays: RwLock<FxHashMap<SocketAddr, Arc<Allocation>>>,
    /// Bumped whenever `relays` changes, so the listeners' caches of it know to refresh.
    relays_generation: AtomicU64,
    /// The built-in SFU of this process, which data for [`TurnConfig::sfu_addrs`] is handed
    /// to without a socket (set once both run; see [`crate::in_process`]).
    sfu: std::sync::OnceLock<Arc<dyn crate::in_process::SfuPeer>>,
    pub metrics: Arc<Metrics>,
    /// RFC 6062 TCP allocations and their peer connections.
    pub(crate) tcp: crate::tcp_relay::TcpRelays,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A bound relay socket, its batching state and the address told to the client.
type RelaySocket = (
    Arc<tokio::net::UdpSocket>,
    Arc<quinn_udp::UdpSocketState>,
    SocketAddr,
);

/// What an authenticated request carried.
pub(crate) struct Authed {
    pub(crate) username: String,
    pub(crate) key: [u8; 16],
}

/// An error response to send: code and reason.
pub(crate) struct Refusal {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

pub(crate) fn refuse(code: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

impl Server {
    pub fn new(cfg: TurnConfig, own_ips: Vec<IpAddr>) -> Server {
        let policy = PeerPolicy::new(
            cfg.allowed_peers.clone(),
            cfg.denied_peers.clone(),
            cfg.allow_loopback_peers,
            own_ips,
            cfg.relay_range.clone(),
            cfg.sfu_addrs.clone(),
        );
        Server {
            nonces: Nonces::new(cfg.nonce_lifetime),
            quotas: Quotas::new(cfg.total_quota, cfg.user_quota, cfg.ip_quota),
            auth_failures: AuthFailures::new(cfg.auth_failures_per_minute),
            total_up: Mutex::new(Bucket::new(cfg.total_bps)),
            total_down: Mutex::new(Bucket::new(cfg.total_bps)),
            relays: RwLock::new(FxHashMap::default()),
            relays_generation: AtomicU64::new(0),
            sfu: std::sync::OnceLock::new(),
            policy,
            metrics: Arc::new(Metrics::default()),
            tcp: crate::tcp_relay::TcpRelays::default(),
            cfg,
        }
    }

    /// Handles one packet from a client. `make_sink` gives the way back to this client when
    /// an allocation is created. A reply, if any, is left in `out`. Data for peers is
    /// collected in `batch`, which the caller flushes after its receive batch.
    pub fn handle(
        self: &Arc<Self>,
        table: &Arc<AllocTable>,
        make_sink: &dyn Fn() -> ClientSink,
        inc: Incoming<'_>,
        out: &mut Vec<u8>,
        batch: &mut PeerBatch,
    ) -> Reply {
        if channel_data::looks_like_channel_data(inc.data) {
            self.client_channel_data(table, &inc, batch);
            return Reply::None;
        }
        let msg = match Message::parse(inc.data) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.dropped_malformed.fetch_add(1, Relaxed);
                tracing::debug!(client = %inc.from, transport = inc.transport.as_str(), "dropping a packet: {e}");
                return Reply::None;
            }
        };
        match msg.class {
            Class::Request => self.request(table, make_sink, &inc, &msg, out),
            Class::Indication => {
                // RFC 8489 §6.3.2: an indication with unknown comprehension-required
                // attributes is discarded.
                if !msg.unknown_required().is_empty() {
                    self.metrics.dropped_malformed.fetch_add(1, Relaxed);
                } else if msg.method == method::SEND {
                    self.send_indication(table, &inc, &msg, batch);
                }
                Reply::None
            }
            Class::Success | Class::Error => Reply::None,
        }
    }

    fn client_channel_data(&self, table: &AllocTable, inc: &Incoming<'_>, batch: &mut PeerBatch) {
        let Ok((channel, data)) = channel_data::parse(inc.data) else {
            self.metrics.dropped_malformed.fetch_add(1, Relaxed);
            return;
        };
        // The table is this listener's own: holding it over the packet costs nothing, and
        // saves touching the allocation's shared reference count per packet.
        let table = table.lock();
        let Some(alloc) = table.get(&inc.from) else {
            return;
        };
        let now = Instant::now();
        let peer = {
            let mut st = alloc.state.lock();
            let Some(peer) = st.channel_peer(channel, now) else {
                self.metrics.dropped_no_permission.fetch_add(1, Relaxed);
                return;
            };
            if !st.has_permission(peer.ip(), now) {
                self.metrics.dropped_no_permission.fetch_add(1, Relaxed);
                return;
            }
            if !st.up.take(data.len(), now) || !self.take_total_up(data.len(), now) {
                self.metrics.dropped_bandwidth.fetch_add(1, Relaxed);
                return;
            }
            peer
        };
        batch.push(alloc, peer, data);
    }

    fn send_indication(
        &self,
        table: &AllocTable,
        inc: &Incoming<'_>,
        msg: &Message<'_>,
        batch: &mut PeerBatch,
    ) {
        let Some(alloc) = table.lock().get(&inc.from).cloned() else {
            return;
        };
        let (Ok(Some(peer)), Some(data)) =
            (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            self.metrics.dropped_malformed.fetch_add(1, Relaxed);
            return;
        };
        if let Err(r) = self.policy.check_destination(peer) {
            self.metrics.refused_peers.fetch_add(1, Relaxed);
            tracing::debug!(client = %inc.from, peer = %peer, "Send indication dropped: {}", r.reason);
            return;
        }
        let now = Instant::now();
        {
            let mut st = alloc.state.lock();
            if !st.has_permission(peer.ip(), now) {
                self.metrics.dropped_no_permission.fetch_add(1, Relaxed);
                return;
            }
            if !st.up.take(data.len(), now) || !self.take_total_up(data.len(), now) {
                self.metrics.dropped_bandwidth.fetch_add(1, Relaxed);
                return;
            }
        }
        batch.push(&alloc, peer, data);
    }

    /// Takes `bytes` from the server-wide upstream cap (`total_bps`).
    pub(crate) fn take_total_up(&self, bytes: usize, now: Instant) -> bool {
        self.cfg.total_bps == 0 || self.total_up.lock().take(bytes, now)
    }

    /// Takes `bytes` from the server-wide downstream cap (`total_bps`).
    pub(crate) fn take_total_down(&self, bytes: usize, now: Instant) -> bool {
        self.cfg.total_bps == 0 || self.total_down.lock().take(bytes, now)
    }

    /// Our own UDP allocation whose relayed address is `dest`, if relaying between our
    /// allocations in-process is on.
    pub(crate) fn local_relay(&self, dest: SocketAddr) -> Option<Arc<Allocation>> {
        if !self.cfg.relay_short_circuit {
            return None;
        }
        self.relays.read().get(&dest).cloned()
    }

    /// Hand data for the SFU's addresses to `sfu` in-process from now on (ignored with
    /// `relay_short_circuit` off, and after the first call).
    pub fn set_sfu(&self, sfu: Arc<dyn crate::in_process::SfuPeer>) {
        if self.cfg.relay_short_circuit {
            let _ = self.sfu.set(sfu);
        }
    }

    /// The in-process SFU, when `dest` is one of its addresses.
    pub(crate) fn sfu_for(&self, dest: SocketAddr) -> Option<&Arc<dyn crate::in_process::SfuPeer>> {
        let sfu = self.sfu.get()?;
        self.cfg.sfu_addrs.contains(&dest).then_some(sfu)
    }

    /// Changes whenever an allocation is added to or removed from the in-process relay table.
    pub(crate) fn relays_generation(&self) -> u64 {
        self.relays_generation.load(Acquire)
    }

    fn request(
        self: &Arc<Self>,
        table: &Arc<AllocTable>,
        make_sink: &dyn Fn() -> ClientSink,
        inc: &Incoming<'_>,
        msg: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Reply {
        let txid = msg.transaction_id();
        // Binding has no authentication, so its unknown attributes are checked first; every
        // other request's after its credentials (RFC 8489 §6.3), and that 420 is signed.
        let unknown = msg.unknown_required();
        if msg.method == method::BINDING && !unknown.is_empty() {
            Builder::new(out, msg.method, Class::Error, txid)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &unknown_list(&unknown))
                .fingerprint();
            return Reply::Send;
        }
        if msg.method == method::BINDING {
            self.metrics.stun_bindings.fetch_add(1, Relaxed);
            Builder::new(out, method::BINDING, Class::Success, txid)
                .xor_address(attr::XOR_MAPPED_ADDRESS, inc.from)
                .fingerprint();
            return Reply::Send;
        }
        let now = Instant::now();
        if self.auth_failures.blocked(inc.from.ip(), now) {
            self.metrics.rate_limited.fetch_add(1, Relaxed);
            return Reply::None;
        }
        let authed = match self.authenticate(inc, msg) {
            Ok(a) => a,
            Err(why) => return self.challenge(inc, msg, why, out),
        };
        if !unknown.is_empty() {
            Builder::new(out, msg.method, Class::Error, txid)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &unknown_list(&unknown))
                .integrity(&authed.key)
                .fingerprint();
            return Reply::Send;
        }
        if self.cfg.tcp_relay
            && let Some(reply) = crate::tcp_relay::request(self, make_sink, inc, msg, &authed, out)
        {
            return reply;
        }
        let existing = table.lock().get(&inc.from).cloned();
        if let Some(a) = &existing
            && a.username != authed.username
        {
            self.signed_error(
                out,
                msg,
                &authed,
                refuse(
                    441,
                    "Wrong Credentials: the allocation belongs to another username",
                ),
            );
            return Reply::Send;
        }
        let result = match msg.method {
            method::ALLOCATE => self.allocate(table, make_sink, inc, msg, &authed, existing, out),
            method::REFRESH => self.refresh(table, inc, msg, &authed, existing, out),
            method::CREATE_PERMISSION => self.create_permission(msg, &authed, existing, out),
            method::CHANNEL_BIND => self.channel_bind(msg, &authed, existing, out),
            method::CONNECT | method::CONNECTION_BIND => Err(refuse(
                400,
                "Bad Request: RFC 6062 TCP relaying is not enabled on this server",
            )),
            _ => Err(refuse(400, "Bad Request: unsupported method")),
        };
        if let Err(r) = result {
            tracing::info!(
                client = %inc.from,
                transport = inc.transport.as_str(),
                username = %authed.username,
                "TURN {} refused: {} {}",
                method::name(msg.method),
                r.code,
                r.reason
            );
            self.signed_error(out, msg, &authed, r);
        }
        Reply::Send
    }

    pub(crate) fn signed_error(
        &self,
        out: &mut Vec<u8>,
        msg: &Message<'_>,
        a: &Authed,
        r: Refusal,
    ) {
        Builder::new(out, msg.method, Class::Error, msg.transaction_id())
            .error(r.code, &r.reason)
            .integrity(&a.key)
            .fingerprint();
    }

    /// 401 (or 438 for a stale nonce) with REALM and a fresh NONCE.
    fn challenge(
        &self,
        inc: &Incoming<'_>,
        msg: &Message<'_>,
        why: AuthFailure,
        out: &mut Vec<u8>,
    ) -> Reply {
        self.metrics.auth_failure(why);
        let now = Instant::now();
        let (code, reason) = match why {
            AuthFailure::StaleNonce | AuthFailure::BadNonce => (438, "Stale Nonce"),
            _ => (401, "Unauthorized"),
        };
        if !matches!(
            why,
            AuthFailure::Missing | AuthFailure::StaleNonce | AuthFailure::BadNonce
        ) {
            self.auth_failures.record(inc.from.ip(), now);
            let user = msg
                .get(attr::USERNAME)
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .unwrap_or_default();
            tracing::warn!(
                client = %inc.from,
                transport = inc.transport.as_str(),
                username = %user,
                reason = why.label(),
                "TURN authentication failed: {}",
                why.explain()
            );
        }
        if why == AuthFailure::Incomplete {
            // RFC 8489 §9.2.4: 400, without USERNAME, NONCE or REALM.
            Builder::new(out, msg.method, Class::Error, msg.transaction_id())
                .error(
                    400,
                    "Bad Request: MESSAGE-INTEGRITY needs USERNAME, REALM and NONCE",
                )
                .fingerprint();
            return Reply::Send;
        }
        let nonce = self.nonces.issue(inc.from, unix_now());
        Builder::new(out, msg.method, Class::Error, msg.transaction_id())
            .error(code, reason)
            .attr(attr::REALM, self.cfg.realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .fingerprint();
        Reply::Send
    }

    fn authenticate(&self, inc: &Incoming<'_>, msg: &Message<'_>) -> Result<Authed, AuthFailure> {
        if !msg.has_integrity() {
            return Err(AuthFailure::Missing);
        }
        let (Some(user), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            return Err(AuthFailure::Incomplete);
        };
        let now = unix_now();
        self.nonces.check(nonce, inc.from, now)?;
        if realm != self.cfg.realm.as_bytes() {
            return Err(AuthFailure::WrongRealm);
        }
        let username = std::str::from_utf8(user).map_err(|_| AuthFailure::BadUsername)?;
        auth::check_username(username, now)?;
        for secret in &self.cfg.secrets {
            let password = auth::rest_password(secret, username);
            let key = auth::long_term_key(username, &self.cfg.realm, &password);
            if msg.check_integrity(&key) {
                return Ok(Authed {
                    username: username.to_string(),
                    key,
                });
            }
        }
        Err(AuthFailure::WrongPassword)
    }

    pub(crate) fn lifetime(&self, msg: &Message<'_>) -> Result<Duration, Refusal> {
        let requested = msg
            .u32_attr(attr::LIFETIME)
            .map_err(|e| refuse(400, format!("Bad Request: {e}")))?;
        Ok(match requested {
            Some(0) => Duration::ZERO,
            Some(s) => Duration::from_secs(u64::from(s))
                .max(self.cfg.default_lifetime)
                .min(self.cfg.max_lifetime),
            None => self.cfg.default_lifetime,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate(
        self: &Arc<Self>,
        table: &Arc<AllocTable>,
        make_sink: &dyn Fn() -> ClientSink,
        inc: &Incoming<'_>,
        msg: &Message<'_>,
        authed: &Authed,
        existing: Option<Arc<Allocation>>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let txid = msg.transaction_id();
        if let Some(a) = existing {
            if a.allocate_txid == txid {
                // A retransmission: the same answer again.
                let lifetime = a
                    .state
                    .lock()
                    .expires
                    .saturating_duration_since(Instant::now());
                self.allocate_success(out, msg, &a, lifetime, inc.from);
                return Ok(());
            }
            return Err(refuse(
                437,
                "Allocation Mismatch: this client address already has an allocation",
            ));
        }
        let Some(rt) = msg.get(attr::REQUESTED_TRANSPORT) else {
            return Err(refuse(400, "Bad Request: REQUESTED-TRANSPORT is missing"));
        };
        match rt.first() {
            Some(17) => {}
            Some(6) => {
                return Err(refuse(
                    442,
                    "Unsupported Transport Protocol: TCP relaying (RFC 6062) is not enabled",
                ));
            }
            _ => {
                return Err(refuse(
                    442,
                    "Unsupported Transport Protocol: only UDP relaying is offered",
                ));
            }
        }
        if msg.has(attr::RESERVATION_TOKEN) {
            return Err(refuse(
                508,
                "Insufficient Capacity: port reservations are not offered",
            ));
        }
        let even = match msg.get(attr::EVEN_PORT) {
            Some(v) if v.first().is_some_and(|b| b & 0x80 != 0) => {
                return Err(refuse(
                    508,
                    "Insufficient Capacity: port reservations are not offered",
                ));
            }
            Some(_) => true,
            None => false,
        };
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some([attr::FAMILY_V4, ..]) => Some(attr::FAMILY_V4),
            Some([attr::FAMILY_V6, ..]) => Some(attr::FAMILY_V6),
            Some(_) => return Err(refuse(440, "Address Family not Supported")),
        };
        if family.is_some() && msg.has(attr::ADDITIONAL_ADDRESS_FAMILY) {
            return Err(refuse(
                400,
                "Bad Request: REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY together",
            ));
        }
        // RFC 8656 §7.2: the additional family can only be IPv6.
        if let Some(v) = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY)
            && v.first() != Some(&attr::FAMILY_V6)
        {
            return Err(refuse(
                400,
                "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6 (0x02)",
            ));
        }
        let lifetime = self.lifetime(msg)?;
        let lifetime = if lifetime.is_zero() {
            self.cfg.default_lifetime
        } else {
            lifetime
        };
        let v6 = family == Some(attr::FAMILY_V6);
        let user = auth::user_part(&authed.username).to_string();
        if let Err(hit) = self.quotas.acquire(&user, inc.from.ip()) {
            self.metrics.quota_refusals.fetch_add(1, Relaxed);
            return Err(refuse(
                486,
                format!("Allocation Quota Reached: {}", hit.explain()),
            ));
        }
        let (relay, relay_state, relayed) = match self.bind_relay(inc.from, v6, even) {
            Ok(r) => r,
            Err(r) => {
                self.quotas.release(&user, inc.from.ip());
                return Err(r);
            }
        };
        let alloc = Arc::new(Allocation::new(
            NewAllocation {
                client: inc.from,
                transport: inc.transport,
                username: authed.username.clone(),
                user,
                key: authed.key,
                allocate_txid: txid,
                relay,
                relay_state,
                relayed,
                sink: make_sink(),
                lifetime,
                max_bps: self.cfg.max_bps,
            },
            self.metrics.clone(),
        ));
        table.lock().insert(inc.from, alloc.clone());
        self.relays.write().insert(alloc.relayed, alloc.clone());
        self.relays_generation.fetch_add(1, Release);
        tokio::spawn(crate::relay::run(
            self.clone(),
            alloc.clone(),
            table.clone(),
        ));
        tracing::info!(
            client = %inc.from,
            transport = inc.transport.as_str(),
            username = %authed.username,
            relayed = %relayed,
            "TURN allocation created"
        );
        self.allocate_success(out, msg, &alloc, lifetime, inc.from);
        if msg.has(attr::ADDITIONAL_ADDRESS_FAMILY) {
            // Dual allocations are not offered: say so in ADDRESS-ERROR-CODE (RFC 8656 §7.2).
            // The builder already finished; rebuild with the extra attribute.
            let mut aec = vec![attr::FAMILY_V6, 0, 4, 40];
            aec.extend_from_slice(b"Address Family not Supported");
            Builder::new(out, method::ALLOCATE, Class::Success, txid)
                .xor_address(attr::XOR_RELAYED_ADDRESS, alloc.relayed)
                .u32(attr::LIFETIME, lifetime.as_secs() as u32)
                .xor_address(attr::XOR_MAPPED_ADDRESS, inc.from)
                .attr(attr::ADDRESS_ERROR_CODE, &aec)
                .integrity(&authed.key)
                .fingerprint();
        }
        Ok(())
    }

    fn allocate_success(
        &self,
        out: &mut Vec<u8>,
        msg: &Message<'_>,
        a: &Allocation,
        lifetime: Duration,
        client: SocketAddr,
    ) {
        Builder::new(out, method::ALLOCATE, Class::Success, msg.transaction_id())
            .xor_address(attr::XOR_RELAYED_ADDRESS, a.relayed)
            .u32(attr::LIFETIME, lifetime.as_secs() as u32)
            .xor_address(attr::XOR_MAPPED_ADDRESS, client)
            .integrity(&a.key)
            .fingerprint();
    }

    /// The address the server uses to reach `client` (the relayed address on an unspecified
    /// listener without `external_ip`).
    fn local_ip_towards(client: SocketAddr) -> Option<IpAddr> {
        let bind: SocketAddr = if client.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let s = StdUdpSocket::bind(bind).ok()?;
        s.connect(client).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    }

    /// The IP told to clients as the relayed address of a new allocation.
    pub(crate) fn advertised_ip(&self, client: SocketAddr, v6: bool) -> Result<IpAddr, Refusal> {
        let advertised = if v6 {
            self.cfg.external_ip6.or_else(|| {
                if client.is_ipv6() {
                    Self::local_ip_towards(client)
                } else {
                    Some(IpAddr::V6(Ipv6Addr::LOCALHOST)).filter(|_| client.ip().is_loopback())
                }
            })
        } else {
            self.cfg.external_ip.or_else(|| {
                if client.is_ipv4() {
                    Self::local_ip_towards(client)
                } else if client.ip().is_loopback() {
                    Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
                } else {
                    None
                }
            })
        };
        advertised.ok_or_else(|| {
            refuse(
                440,
                "Address Family not Supported: no relay address of that family (set [turn] external_ip)",
            )
        })
    }

    fn bind_relay(&self, client: SocketAddr, v6: bool, even: bool) -> Result<RelaySocket, Refusal> {
        let advertised = self.advertised_ip(client, v6)?;
        let bind_ip: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let (lo, hi) = (*self.cfg.relay_range.start(), *self.cfg.relay_range.end());
        let span = u32::from(hi - lo) + 1;
        for _ in 0..64 {
            let mut port = lo + (rand::random::<u32>() % span) as u16;
            if even && port % 2 == 1 {
                if port == hi {
                    continue;
                }
                port += 1;
            }
            let Ok(std) = bind_udp(SocketAddr::new(bind_ip, port), v6) else {
                continue;
            };
            // Room for a burst from the peer while the relay's thread is busy (a limit, not
            // memory taken up front).
            let _ = socket2::SockRef::from(&std).set_recv_buffer_size(1 << 20);
            let Ok(sock) = tokio::net::UdpSocket::from_std(std) else {
                continue;
            };
            let Ok(state) = quinn_udp::UdpSocketState::new((&sock).into()) else {
                continue;
            };
            // quinn-udp turns GRO on; the relay's small buffers take one datagram each.
            let _ = nix::sys::socket::setsockopt(
                &sock,
                nix::sys::socket::sockopt::UdpGroSegment,
                &false,
            );
            return Ok((
                Arc::new(sock),
                Arc::new(state),
                SocketAddr::new(advertised, port),
            ));
        }
        Err(refuse(
            508,
            "Insufficient Capacity: no free port in [turn] relay_range",
        ))
    }

    fn refresh(
        &self,
        table: &AllocTable,
        inc: &Incoming<'_>,
        msg: &Message<'_>,
        authed: &Authed,
        existing: Option<Arc<Allocation>>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let a = allocation_of(existing)?;
        // RFC 8656 §7.3: a REQUESTED-ADDRESS-FAMILY other than the allocation's is 443.
        if let Some(family) = msg
            .get(attr::REQUESTED_ADDRESS_FAMILY)
            .and_then(|v| v.first())
            && (*family == attr::FAMILY_V6) != a.relayed.is_ipv6()
        {
            return Err(refuse(
                443,
                "Peer Address Family Mismatch: REQUESTED-ADDRESS-FAMILY is not the allocation's",
            ));
        }
        let lifetime = self.lifetime(msg)?;
        if lifetime.is_zero() {
            table.lock().remove(&inc.from);
            self.release(&a);
        } else {
            a.state.lock().expires = Instant::now() + lifetime;
        }
        Builder::new(out, method::REFRESH, Class::Success, msg.transaction_id())
            .u32(attr::LIFETIME, lifetime.as_secs() as u32)
            .integrity(&authed.key)
            .fingerprint();
        Ok(())
    }

    /// Closes an allocation and gives its quota back.
    pub fn release(&self, a: &Allocation) {
        {
            let mut relays = self.relays.write();
            if relays
                .get(&a.relayed)
                .is_some_and(|r| std::ptr::eq(&**r, a))
            {
                relays.remove(&a.relayed);
                self.relays_generation.fetch_add(1, Release);
            }
        }
        if a.close() {
            self.quotas.release(&a.user, a.client.ip());
            tracing::info!(client = %a.client, relayed = %a.relayed, "TURN allocation closed");
        }
    }

    /// CreatePermission for any allocation (UDP here, RFC 6062 TCP in `tcp_relay`): every
    /// peer's family and the peer policy checked, then the permissions installed within
    /// the cap, and the success written to `out`.
    pub(crate) fn install_permissions(
        &self,
        msg: &Message<'_>,
        authed: &Authed,
        client: SocketAddr,
        relayed: SocketAddr,
        state: &parking_lot::Mutex<crate::allocation::AllocState>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let peers = msg
            .xor_addresses(attr::XOR_PEER_ADDRESS)
            .map_err(|e| refuse(400, format!("Bad Request: {e}")))?;
        if peers.is_empty() {
            return Err(refuse(400, "Bad Request: XOR-PEER-ADDRESS is missing"));
        }
        for p in &peers {
            if !family_matches(relayed, *p) {
                return Err(refuse(443, "Peer Address Family Mismatch"));
            }
            if let Err(r) = self.policy.check_ip(*p) {
                self.metrics.refused_peers.fetch_add(1, Relaxed);
                tracing::warn!(client = %client, peer = %p, "TURN peer refused: {}", r.reason);
                return Err(refuse(403, format!("Forbidden: {}", r.reason)));
            }
        }
        let until = Instant::now() + self.cfg.permission_lifetime;
        let mut st = state.lock();
        // All or nothing: a request whose peers do not all fit installs none.
        let new = peers
            .iter()
            .filter(|p| !st.permission_fits(p.ip(), 0))
            .map(|p| crate::peer_policy::canonical(p.ip()))
            .collect::<std::collections::HashSet<_>>()
            .len();
        if st.permission_count() + new > self.cfg.max_permissions {
            return Err(refuse(
                508,
                "Insufficient Capacity: too many permissions on this allocation",
            ));
        }
        for p in &peers {
            st.add_permission(p.ip(), until, self.cfg.max_permissions, &self.metrics);
        }
        drop(st);
        Builder::new(
            out,
            method::CREATE_PERMISSION,
            Class::Success,
            msg.transaction_id(),
        )
        .integrity(&authed.key)
        .fingerprint();
        Ok(())
    }

    fn create_permission(
        &self,
        msg: &Message<'_>,
        authed: &Authed,
        existing: Option<Arc<Allocation>>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let a = allocation_of(existing)?;
        self.install_permissions(msg, authed, a.client, a.relayed, &a.state, out)
    }

    fn channel_bind(
        &self,
        msg: &Message<'_>,
        authed: &Authed,
        existing: Option<Arc<Allocation>>,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let a = allocation_of(existing)?;
        let channel = match msg.get(attr::CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => return Err(refuse(400, "Bad Request: CHANNEL-NUMBER is missing")),
        };
        if !(channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL).contains(&channel) {
            return Err(refuse(
                400,
                "Bad Request: channel number outside 0x4000-0x7fff",
            ));
        }
        let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
            Ok(Some(p)) => p,
            Ok(None) => return Err(refuse(400, "Bad Request: XOR-PEER-ADDRESS is missing")),
            Err(e) => return Err(refuse(400, format!("Bad Request: {e}"))),
        };
        if !family_matches(a.relayed, peer) {
            return Err(refuse(443, "Peer Address Family Mismatch"));
        }
        if let Err(r) = self.policy.check_destination(peer) {
            self.metrics.refused_peers.fetch_add(1, Relaxed);
            tracing::warn!(client = %a.client, peer = %peer, "TURN peer refused: {}", r.reason);
            return Err(refuse(403, format!("Forbidden: {}", r.reason)));
        }
        let now = Instant::now();
        let mut st = a.state.lock();
        // Checked before binding: a refused ChannelBind changes nothing (RFC 8656 §12.2).
        if !st.permission_fits(peer.ip(), self.cfg.max_permissions) {
            return Err(refuse(
                508,
                "Insufficient Capacity: too many permissions on this allocation",
            ));
        }
        st.bind_channel(
            channel,
            peer,
            now + self.cfg.channel_lifetime,
            self.cfg.max_channels,
            &self.metrics,
        )
        .map_err(|e| match e {
            // RFC 8656 §12.2: a valid request the server cannot fulfil for a capacity limit.
            BindError::TooMany(_) => refuse(508, format!("Insufficient Capacity: {}", e.explain())),
            _ => refuse(400, format!("Bad Request: {}", e.explain())),
        })?;
        if !st.add_permission(
            peer.ip(),
            now + self.cfg.permission_lifetime,
            self.cfg.max_permissions,
            &self.metrics,
        ) {
            return Err(refuse(
                508,
                "Insufficient Capacity: too many permissions on this allocation",
            ));
        }
        drop(st);
        Builder::new(
            out,
            method::CHANNEL_BIND,
            Class::Success,
            msg.transaction_id(),
        )
        .integrity(&authed.key)
        .fingerprint();
        Ok(())
    }
}

/// The client's allocation for Refresh, CreatePermission and ChannelBind, or 437.
fn allocation_of(existing: Option<Arc<Allocation>>) -> Result<Arc<Allocation>, Refusal> {
    existing.ok_or_else(|| {
        refuse(
            437,
            "Allocation Mismatch: no allocation for this client address",
        )
    })
}

/// An IPv4 allocation takes IPv4 peers (also written IPv4-mapped); an IPv6 one takes IPv6
/// peers but not IPv4-mapped ones, which its IPv6-only relay socket cannot reach.
pub(crate) fn family_matches(relayed: SocketAddr, peer: SocketAddr) -> bool {
    match (relayed, peer.ip()) {
        (SocketAddr::V4(_), ip) => crate::peer_policy::canonical(ip).is_ipv4(),
        (SocketAddr::V6(_), std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_none(),
        (SocketAddr::V6(_), std::net::IpAddr::V4(_)) => false,
    }
}

/// The value of UNKNOWN-ATTRIBUTES: the types, two bytes each.
fn unknown_list(unknown: &[u16]) -> Vec<u8> {
    unknown.iter().flat_map(|t| t.to_be_bytes()).collect()
}

/// A non-blocking UDP socket bound to `addr` (v6 sockets are dual-stack off: v6 only).
pub fn bind_udp(addr: SocketAddr, v6only: bool) -> std::io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(v6only)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Builds a Data indication for `data` from `peer` into `out`.
pub fn data_indication(out: &mut Vec<u8>, peer: SocketAddr, data: &[u8], txid: [u8; 12]) {
    Builder::new(out, method::DATA, Class::Indication, txid)
        .xor_address(attr::XOR_PEER_ADDRESS, peer)
        .attr(attr::DATA, data)
        .finish();
}

/// Whether a buffer is STUN or ChannelData (for demultiplexing a shared port).
pub fn is_turn_packet(buf: &[u8]) -> bool {
    message::looks_like_stun(buf) || channel_data::looks_like_channel_data(buf)
}
