//! RFC 6062 TCP relaying (off unless `tcp_relay` is set; browsers never use it, and it is
//! the path of the Slack TURN write-up, so the peer policy applies to every Connect and every
//! incoming peer). A TCP allocation is made on a TCP/TLS control connection and listens on a
//! relayed TCP port; Connect dials a peer, an incoming peer is announced with
//! ConnectionAttempt, and ConnectionBind on a new client connection turns that connection
//! into a raw pipe to the peer.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

use crate::allocation::{AllocState, ClientSink};
use crate::attr;
use crate::auth;
use crate::message::{Builder, Class, Message, method};
use crate::peer_policy::canonical;
use crate::server::{Authed, Incoming, Refusal, Reply, Server, refuse};
use crate::write_queue::WriteTx;

/// How long a peer connection waits for the client's ConnectionBind, and a Connect for the
/// peer to answer (RFC 6062 §5.2, §5.3).
const BIND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TcpAllocation {
    pub client: SocketAddr,
    pub username: String,
    pub user: String,
    pub key: [u8; 16],
    pub relayed: SocketAddr,
    control: WriteTx,
    pub state: Mutex<AllocState>,
    /// Peers with a connection (made or pending), for 446 Connection Already Exists.
    peers: Mutex<HashMap<SocketAddr, u32>>,
    closed: AtomicBool,
    close_notify: Notify,
}

struct Pending {
    stream: TcpStream,
    alloc: Arc<TcpAllocation>,
    peer: SocketAddr,
}

/// Every TCP allocation (by control connection) and the peer connections awaiting a bind.
#[derive(Default)]
pub struct TcpRelays {
    allocs: Mutex<HashMap<SocketAddr, Arc<TcpAllocation>>>,
    pending: Mutex<HashMap<u32, Pending>>,
    next_id: AtomicU32,
}

impl TcpRelays {
    fn new_id(&self) -> u32 {
        // Never 0, unpredictable enough that another client cannot guess a pending id.
        loop {
            let id = self
                .next_id
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(2_654_435_761)
                ^ rand::random::<u32>();
            if id != 0 && !self.pending.lock().contains_key(&id) {
                return id;
            }
        }
    }
}

fn send_control(a: &TcpAllocation, frame: Vec<u8>) {
    let _ = a.control.try_send(frame);
}

/// Handles the RFC 6062 part of a request; `None` when the request is not about TCP
/// relaying (the UDP path then takes it).
pub(crate) fn request(
    server: &Arc<Server>,
    make_sink: &dyn Fn() -> ClientSink,
    inc: &Incoming<'_>,
    msg: &Message<'_>,
    authed: &Authed,
    out: &mut Vec<u8>,
) -> Option<Reply> {
    let existing = server.tcp.allocs.lock().get(&inc.from).cloned();
    let result = match msg.method {
        method::ALLOCATE
            if msg.get(attr::REQUESTED_TRANSPORT).and_then(|v| v.first()) == Some(&6) =>
        {
            allocate(server, make_sink, inc, msg, authed, existing, out)
        }
        method::CONNECTION_BIND => return Some(connection_bind(server, inc, msg, authed, out)),
        method::CONNECT => connect(server, msg, authed, existing),
        method::CREATE_PERMISSION if existing.is_some() => existing.map_or(Ok(Reply::None), |a| {
            create_permission(server, msg, authed, &a, out)
        }),
        method::REFRESH if existing.is_some() => {
            existing.map_or(Ok(Reply::None), |a| refresh(server, msg, authed, &a, out))
        }
        method::CHANNEL_BIND if existing.is_some() => Err(refuse(
            400,
            "Bad Request: channels are for UDP allocations; this is a TCP allocation",
        )),
        _ => return None,
    };
    Some(match result {
        Ok(r) => r,
        Err(r) => {
            tracing::info!(client = %inc.from, username = %authed.username, "TURN {} refused: {} {}", method::name(msg.method), r.code, r.reason);
            server.signed_error(out, msg, authed, r);
            Reply::Send
        }
    })
}

fn reuse_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    Ok(s)
}

fn allocate(
    server: &Arc<Server>,
    make_sink: &dyn Fn() -> ClientSink,
    inc: &Incoming<'_>,
    msg: &Message<'_>,
    authed: &Authed,
    existing: Option<Arc<TcpAllocation>>,
    out: &mut Vec<u8>,
) -> Result<Reply, Refusal> {
    if !inc.transport.is_stream() {
        return Err(refuse(
            400,
            "Bad Request: TCP allocations are made over a TCP or TLS connection",
        ));
    }
    if existing.is_some() {
        return Err(refuse(
            437,
            "Allocation Mismatch: this connection already has an allocation",
        ));
    }
    let ClientSink::Stream(control) = make_sink() else {
        return Err(refuse(
            400,
            "Bad Request: TCP allocations need a stream connection",
        ));
    };
    let v6 = msg
        .get(attr::REQUESTED_ADDRESS_FAMILY)
        .and_then(|v| v.first())
        == Some(&attr::FAMILY_V6);
    let advertised = server.advertised_ip(inc.from, v6)?;
    let user = auth::user_part(&authed.username).to_string();
    if let Err(hit) = server.quotas.acquire(&user, inc.from.ip()) {
        server
            .metrics
            .quota_refusals
            .fetch_add(1, Ordering::Relaxed);
        return Err(refuse(
            486,
            format!("Allocation Quota Reached: {}", hit.explain()),
        ));
    }
    let bind_ip: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let (lo, hi) = (
        *server.cfg.relay_range.start(),
        *server.cfg.relay_range.end(),
    );
    let span = u32::from(hi - lo) + 1;
    let mut bound = None;
    for _ in 0..64 {
        let port = lo + (rand::random::<u32>() % span) as u16;
        if let Ok(s) = reuse_socket(SocketAddr::new(bind_ip, port))
            && let Ok(l) = s.listen(64)
        {
            bound = Some((l, port));
            break;
        }
    }
    let Some((listener, port)) = bound else {
        server.quotas.release(&user, inc.from.ip());
        return Err(refuse(
            508,
            "Insufficient Capacity: no free TCP port in [turn] relay_range",
        ));
    };
    let lifetime = match server.lifetime(msg)? {
        d if d.is_zero() => server.cfg.default_lifetime,
        d => d,
    };
    let a = Arc::new(TcpAllocation {
        client: inc.from,
        username: authed.username.clone(),
        user,
        key: authed.key,
        relayed: SocketAddr::new(advertised, port),
        control,
        state: Mutex::new(AllocState::new(lifetime, server.cfg.max_bps)),
        peers: Mutex::new(HashMap::new()),
        closed: AtomicBool::new(false),
        close_notify: Notify::new(),
    });
    server.tcp.allocs.lock().insert(inc.from, a.clone());
    server.metrics.allocations.fetch_add(1, Ordering::Relaxed);
    server
        .metrics
        .allocations_total
        .fetch_add(1, Ordering::Relaxed);
    tokio::spawn(accept_peers(
        server.clone(),
        a.clone(),
        listener,
        SocketAddr::new(bind_ip, port),
    ));
    tracing::info!(client = %inc.from, username = %a.username, relayed = %a.relayed, "TURN TCP allocation created");
    Builder::new(out, method::ALLOCATE, Class::Success, msg.transaction_id())
        .xor_address(attr::XOR_RELAYED_ADDRESS, a.relayed)
        .u32(attr::LIFETIME, lifetime.as_secs() as u32)
        .xor_address(attr::XOR_MAPPED_ADDRESS, inc.from)
        .integrity(&a.key)
        .fingerprint();
    Ok(Reply::Send)
}

/// Closes a TCP allocation (its control connection ended, or its lifetime).
pub(crate) fn close(server: &Server, client: SocketAddr) {
    let Some(a) = server.tcp.allocs.lock().remove(&client) else {
        return;
    };
    if !a.closed.swap(true, Ordering::AcqRel) {
        server.quotas.release(&a.user, a.client.ip());
        server.metrics.allocations.fetch_sub(1, Ordering::Relaxed);
        a.close_notify.notify_waiters();
        server
            .tcp
            .pending
            .lock()
            .retain(|_, p| !Arc::ptr_eq(&p.alloc, &a));
        tracing::info!(client = %a.client, relayed = %a.relayed, "TURN TCP allocation closed");
    }
}

fn expire_later(server: Arc<Server>, id: u32) {
    tokio::spawn(async move {
        tokio::time::sleep(BIND_TIMEOUT).await;
        if let Some(p) = server.tcp.pending.lock().remove(&id) {
            p.alloc.peers.lock().remove(&p.peer);
        }
    });
}

async fn accept_peers(
    server: Arc<Server>,
    a: Arc<TcpAllocation>,
    listener: TcpListener,
    _local: SocketAddr,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, peer)) = r else { continue };
                let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
                let now = Instant::now();
                if !a.state.lock().has_permission(peer.ip(), now) {
                    server.metrics.dropped_no_permission.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let id = server.tcp.new_id();
                a.peers.lock().insert(peer, id);
                server.tcp.pending.lock().insert(id, Pending { stream, alloc: a.clone(), peer });
                expire_later(server.clone(), id);
                let mut frame = Vec::new();
                let txid: [u8; 12] = rand::random();
                Builder::new(&mut frame, method::CONNECTION_ATTEMPT, Class::Indication, txid)
                    .u32(attr::CONNECTION_ID, id)
                    .xor_address(attr::XOR_PEER_ADDRESS, peer)
                    .fingerprint();
                send_control(&a, frame);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let expired = {
                    let mut st = a.state.lock();
                    st.expire(now, &server.metrics);
                    st.expires <= now
                };
                if expired {
                    close(&server, a.client);
                    return;
                }
            }
            _ = a.close_notify.notified() => return,
        }
        if a.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

fn connect(
    server: &Arc<Server>,
    msg: &Message<'_>,
    authed: &Authed,
    existing: Option<Arc<TcpAllocation>>,
) -> Result<Reply, Refusal> {
    let Some(a) = existing else {
        return Err(refuse(
            437,
            "Allocation Mismatch: no TCP allocation on this connection",
        ));
    };
    let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
        Ok(Some(p)) => SocketAddr::new(canonical(p.ip()), p.port()),
        Ok(None) => return Err(refuse(400, "Bad Request: XOR-PEER-ADDRESS is missing")),
        Err(e) => return Err(refuse(400, format!("Bad Request: {e}"))),
    };
    if peer.is_ipv4() != a.relayed.is_ipv4() {
        return Err(refuse(443, "Peer Address Family Mismatch"));
    }
    if let Err(r) = server.policy.check_destination(peer) {
        server.metrics.refused_peers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(client = %a.client, peer = %peer, "TURN TCP peer refused: {}", r.reason);
        return Err(refuse(403, format!("Forbidden: {}", r.reason)));
    }
    if a.peers.lock().contains_key(&peer) {
        return Err(refuse(446, "Connection Already Exists"));
    }
    {
        let until = Instant::now() + server.cfg.permission_lifetime;
        let mut st = a.state.lock();
        if !st.add_permission(
            peer.ip(),
            until,
            server.cfg.max_permissions,
            &server.metrics,
        ) {
            return Err(refuse(
                508,
                "Insufficient Capacity: too many permissions on this allocation",
            ));
        }
    }
    let txid = msg.transaction_id();
    let key = authed.key;
    let server = server.clone();
    tokio::spawn(async move {
        // From an ephemeral port, as coturn does: leaving from the relayed port itself would
        // collide with the peer's own Connect back to us (simultaneous open, one of the two
        // fails), which client-to-client relaying does.
        let dial = TcpStream::connect(peer);
        let mut frame = Vec::new();
        match tokio::time::timeout(BIND_TIMEOUT, dial).await {
            Ok(Ok(stream)) => {
                let id = server.tcp.new_id();
                a.peers.lock().insert(peer, id);
                server.tcp.pending.lock().insert(
                    id,
                    Pending {
                        stream,
                        alloc: a.clone(),
                        peer,
                    },
                );
                expire_later(server.clone(), id);
                Builder::new(&mut frame, method::CONNECT, Class::Success, txid)
                    .u32(attr::CONNECTION_ID, id)
                    .integrity(&key)
                    .fingerprint();
            }
            Ok(Err(e)) => {
                tracing::info!(client = %a.client, peer = %peer, "TURN Connect failed: {e}");
                Builder::new(&mut frame, method::CONNECT, Class::Error, txid)
                    .error(447, &format!("Connection Timeout or Failure: {e}"))
                    .integrity(&key)
                    .fingerprint();
            }
            Err(_) => {
                Builder::new(&mut frame, method::CONNECT, Class::Error, txid)
                    .error(
                        447,
                        "Connection Timeout or Failure: the peer did not answer in 30 s",
                    )
                    .integrity(&key)
                    .fingerprint();
            }
        }
        send_control(&a, frame);
    });
    Ok(Reply::None)
}

fn connection_bind(
    server: &Arc<Server>,
    inc: &Incoming<'_>,
    msg: &Message<'_>,
    authed: &Authed,
    out: &mut Vec<u8>,
) -> Reply {
    let fail = |out: &mut Vec<u8>, r: Refusal| {
        tracing::info!(client = %inc.from, "TURN ConnectionBind refused: {} {}", r.code, r.reason);
        server.signed_error(out, msg, authed, r);
        Reply::Send
    };
    if !inc.transport.is_stream() {
        return fail(
            out,
            refuse(
                400,
                "Bad Request: ConnectionBind goes over a new TCP or TLS connection",
            ),
        );
    }
    let id = match msg.u32_attr(attr::CONNECTION_ID) {
        Ok(Some(id)) => id,
        _ => return fail(out, refuse(400, "Bad Request: CONNECTION-ID is missing")),
    };
    let Some(p) = server.tcp.pending.lock().remove(&id) else {
        return fail(
            out,
            refuse(
                400,
                "Bad Request: no pending connection with this CONNECTION-ID",
            ),
        );
    };
    if p.alloc.username != authed.username {
        // Put it back: the rightful owner may still bind it.
        let alloc = p.alloc.clone();
        server.tcp.pending.lock().insert(id, p);
        drop(alloc);
        return fail(
            out,
            refuse(
                441,
                "Wrong Credentials: the connection belongs to another username",
            ),
        );
    }
    Builder::new(
        out,
        method::CONNECTION_BIND,
        Class::Success,
        msg.transaction_id(),
    )
    .integrity(&authed.key)
    .fingerprint();
    tracing::debug!(client = %inc.from, peer = %p.peer, "TURN TCP data connection bound");
    Reply::Pipe(p.stream)
}

fn create_permission(
    server: &Server,
    msg: &Message<'_>,
    authed: &Authed,
    a: &TcpAllocation,
    out: &mut Vec<u8>,
) -> Result<Reply, Refusal> {
    server
        .install_permissions(msg, authed, a.client, a.relayed, &a.state, out)
        .map(|()| Reply::Send)
}

fn refresh(
    server: &Server,
    msg: &Message<'_>,
    authed: &Authed,
    a: &TcpAllocation,
    out: &mut Vec<u8>,
) -> Result<Reply, Refusal> {
    let lifetime = server.lifetime(msg)?;
    if lifetime.is_zero() {
        close(server, a.client);
    } else {
        a.state.lock().expires = Instant::now() + lifetime;
    }
    Builder::new(out, method::REFRESH, Class::Success, msg.transaction_id())
        .u32(attr::LIFETIME, lifetime.as_secs() as u32)
        .integrity(&authed.key)
        .fingerprint();
    Ok(Reply::Send)
}

/// Copies bytes both ways between a bound client data connection and its peer until either
/// side closes; `early` are bytes the client sent right after its ConnectionBind.
pub(crate) async fn splice<S>(server: &Server, mut client: S, mut peer: TcpStream, early: Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    if !early.is_empty() && peer.write_all(&early).await.is_err() {
        return;
    }
    if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut peer).await {
        let m = &server.metrics;
        m.bytes_to_peer
            .fetch_add(up + early.len() as u64, Ordering::Relaxed);
        m.bytes_to_client.fetch_add(down, Ordering::Relaxed);
    }
}
