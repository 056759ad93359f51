//! UDP listeners: one worker thread per core, each with its own `SO_REUSEPORT` socket on the
//! listen address and its own single-threaded runtime, so a client's 5-tuple always lands on
//! the same worker, which owns that client's allocations and their relay sockets. Datagrams
//! are received in batches (`recvmmsg`, and GRO where the kernel has it, via quinn-udp); no
//! task and no allocation per packet.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::allocation::{ClientSink, Transport};
use crate::server::{AllocTable, Incoming, Reply, Server};

const BATCH: usize = 32;

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
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
    s.set_nonblocking(true)?;
    // Bursts of media must not overflow the receive queue while a worker is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds `workers` sockets on `addr` (port 0 picks one port for all) and starts a thread for
/// each. Returns the bound address.
pub fn spawn(server: Arc<Server>, addr: SocketAddr, workers: usize) -> std::io::Result<SocketAddr> {
    let first = reuseport_socket(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(reuseport_socket(bound)?);
    }
    for (i, sock) in sockets.into_iter().enumerate() {
        let server = server.clone();
        std::thread::Builder::new()
            .name(format!("turn-udp-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("TURN UDP worker {i} could not start: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    match UdpSocket::from_std(sock) {
                        Ok(sock) => worker(server, Arc::new(sock)).await,
                        Err(e) => tracing::error!("TURN UDP worker {i}: {e}"),
                    }
                });
            })?;
    }
    Ok(bound)
}

async fn worker(server: Arc<Server>, sock: Arc<UdpSocket>) {
    let state = match UdpSocketState::new((&*sock).into()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("TURN UDP socket setup failed: {e}");
            return;
        }
    };
    let table: Arc<AllocTable> = Arc::new(Mutex::new(HashMap::new()));
    let buf_len = 2048 * state.gro_segments().max(1);
    let mut storage = vec![0u8; BATCH * buf_len];
    let mut meta = [RecvMeta::default(); BATCH];
    let mut out = Vec::with_capacity(2048);
    let mut to_peers = crate::server::PeerBatch::default();
    let sink_sock = sock.clone();
    let sink_state = state.clone();
    let make_sink = move || ClientSink::Udp(sink_sock.clone(), sink_state.clone());
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        loop {
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.chunks_mut(buf_len).map(IoSliceMut::new).collect();
            let n = match sock.try_io(Interest::READABLE, || {
                state.recv((&*sock).into(), &mut bufs, &mut meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("TURN UDP receive failed: {e}");
                    break;
                }
            };
            drop(bufs);
            for (i, m) in meta.iter().take(n).enumerate() {
                let base = i * buf_len;
                let stride = m.stride.max(1);
                let mut off = 0;
                while off < m.len {
                    let end = (off + stride).min(m.len);
                    let inc = Incoming {
                        from: m.addr,
                        transport: Transport::Udp,
                        data: &storage[base + off..base + end],
                    };
                    if matches!(
                        server.handle(&table, &make_sink, inc, &mut out),
                        Reply::Send
                    ) {
                        let _ = sock.send_to(&out, m.addr).await;
                    }
                    off = end;
                }
            }
            if !to_peers.is_empty() {
                to_peers.flush(&server.metrics);
            }
        }
    }
}
