//! UDP listeners: one receive thread per core, each with its own `SO_REUSEPORT` socket on
//! the listen address, so a client's 5-tuple always lands on the same worker, which owns that
//! client's allocations. The thread blocks in `recvmmsg` (back as soon as one datagram is
//! there, with whatever else is queued; a one-second read timeout wakes it for housekeeping),
//! hands the batch to the server and sends what it produced in batches (GSO runs): one system
//! call per wake-up to receive, no task, no reactor, no allocation per packet. The relay
//! sockets of the worker's allocations live on a companion thread's single-threaded runtime.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use parking_lot::Mutex;
use quinn_udp::UdpSocketState;
use rustc_hash::FxHashMap;

use crate::allocation::{ClientSink, Transport};
use crate::outbox::{Outbox, send_streams};
use crate::server::{AllocTable, Incoming, Reply, Server};
use crate::to_peer::PeerBatch;

/// Datagrams per receive call.
const BATCH: usize = 32;
/// Per datagram: a TURN message or ChannelData frame fits in an MTU; a larger datagram is
/// truncated and dropped.
const BUF: usize = 2048;
/// The longest a receive thread sleeps before its housekeeping.
const HOUSEKEEPING: std::time::Duration = std::time::Duration::from_secs(1);

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // Bursts of media must not overflow the receive queue while a worker is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds `workers` sockets on `addr` (port 0 picks one port for all) and starts the threads
/// of each. Returns the bound address.
pub fn spawn(server: Arc<Server>, addr: SocketAddr, workers: usize) -> std::io::Result<SocketAddr> {
    let first = reuseport_socket(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(reuseport_socket(bound)?);
    }
    for (i, sock) in sockets.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let relays = rt.handle().clone();
        std::thread::Builder::new()
            .name(format!("turn-relay-{i}"))
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        let server = server.clone();
        std::thread::Builder::new()
            .name(format!("turn-udp-{i}"))
            .spawn(move || {
                // Allocations made here spawn their relay tasks on the companion runtime.
                let _rt = relays.enter();
                worker(server, Arc::new(sock));
            })?;
    }
    Ok(bound)
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// One received datagram: source, length, and whether it was truncated.
#[derive(Clone, Copy)]
struct Got {
    from: Option<SocketAddr>,
    len: usize,
    truncated: bool,
}

/// The receive loop. The socket is blocking: the thread sleeps in recvmmsg, and sends block
/// only on a full send buffer (4 MiB), which a congested interface answers with drops long
/// before.
fn worker(server: Arc<Server>, sock: Arc<UdpSocket>) {
    let state = match UdpSocketState::new((&*sock).into()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("TURN UDP socket setup failed: {e}");
            return;
        }
    };
    // quinn-udp makes the socket non-blocking; this thread sleeps in recvmmsg instead, at
    // most a second at a time for housekeeping.
    if let Err(e) = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(HOUSEKEEPING)))
    {
        tracing::error!("TURN UDP socket setup failed: {e}");
        return;
    }
    // quinn-udp turns GRO on; these buffers take one datagram each (GSO sends stay).
    let _ = nix::sys::socket::setsockopt(&*sock, nix::sys::socket::sockopt::UdpGroSegment, &false);
    let table: Arc<AllocTable> = Arc::new(Mutex::new(FxHashMap::default()));
    let mut storage = vec![0u8; BATCH * BUF];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut got = [Got {
        from: None,
        len: 0,
        truncated: false,
    }; BATCH];
    let mut out = Vec::with_capacity(2048);
    let mut to_peers = PeerBatch::default();
    let mut to_clients = Outbox::default();
    let mut streams = Vec::new();
    let sink_sock = sock.clone();
    let sink_state = state.clone();
    let make_sink = move || ClientSink::Udp(sink_sock.clone(), sink_state.clone());
    let fd = sock.as_raw_fd();
    loop {
        let n = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = storage
                .chunks_mut(BUF)
                .map(|c| [IoSliceMut::new(c)])
                .collect();
            match recvmmsg(
                fd,
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => {
                    let mut n = 0;
                    for (g, m) in got.iter_mut().zip(msgs) {
                        *g = Got {
                            from: m.address.as_ref().and_then(socket_addr),
                            len: m.bytes,
                            truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
                        };
                        n += 1;
                    }
                    n
                }
                Err(Errno::EAGAIN) => {
                    // The read timeout: quiet, let go of allocations the cache may hold and
                    // publish the counters.
                    to_peers.refresh(&server);
                    to_clients.tally.flush(&server.metrics);
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::debug!("TURN UDP receive failed: {e}");
                    continue;
                }
            }
        };
        for (i, g) in got.iter().take(n).enumerate() {
            let Some(from) = g.from else { continue };
            if g.truncated || g.len > BUF {
                continue;
            }
            let inc = Incoming {
                from,
                transport: Transport::Udp,
                data: &storage[i * BUF..i * BUF + g.len],
            };
            if matches!(
                server.handle(&table, &make_sink, inc, &mut out, &mut to_peers),
                Reply::Send
            ) && let Err(e) = sock.send_to(&out, from)
            {
                tracing::debug!(client = %from, "TURN UDP reply failed: {e}");
            }
        }
        if !to_peers.is_empty() {
            to_peers.flush(&server, &mut to_clients);
            to_clients.flush(&server.metrics, &mut streams);
            send_streams(&mut streams);
        }
    }
}
