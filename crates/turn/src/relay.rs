//! The peer side of one allocation: a task that drains the relay socket in batches
//! (`recvmmsg` through quinn-udp), drops what has no permission or exceeds the bandwidth
//! caps, wraps the rest as ChannelData or Data indications and sends it to the client. It
//! also ends the allocation when its lifetime runs out.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;

use crate::allocation::{Allocation, ClientSink};
use crate::channel_data;
use crate::server::{AllocTable, Server, data_indication};

/// Datagrams per receive call.
pub const BATCH: usize = 8;
/// Per datagram: media packets fit in an MTU; a larger datagram is truncated and dropped.
pub const BUF: usize = 2048;

pub async fn run(server: Arc<Server>, alloc: Arc<Allocation>, table: Arc<AllocTable>) {
    let state = match UdpSocketState::new((&*alloc.relay).into()) {
        // quinn-udp turns GRO on; these small per-allocation buffers need one datagram each.
        Ok(s) => {
            let _ = nix::sys::socket::setsockopt(
                &*alloc.relay,
                nix::sys::socket::sockopt::UdpGroSegment,
                &false,
            );
            s
        }
        Err(e) => {
            tracing::warn!(relayed = %alloc.relayed, "relay socket setup failed: {e}");
            table.lock().remove(&alloc.client);
            server.release(&alloc);
            return;
        }
    };
    let mut storage = vec![0u8; BATCH * BUF];
    let mut meta = [RecvMeta::default(); BATCH];
    let mut frame = Vec::with_capacity(BUF + 64);
    let mut txid_counter: u64 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = alloc.relay.readable() => {
                if r.is_err() {
                    break;
                }
                loop {
                    let mut bufs: Vec<IoSliceMut<'_>> =
                        storage.chunks_mut(BUF).map(IoSliceMut::new).collect();
                    let n = match alloc.relay.try_io(Interest::READABLE, || {
                        state.recv((&*alloc.relay).into(), &mut bufs, &mut meta)
                    }) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(relayed = %alloc.relayed, "relay receive failed: {e}");
                            break;
                        }
                    };
                    drop(bufs);
                    for (i, m) in meta.iter().take(n).enumerate() {
                        let base = i * BUF;
                        if m.len > BUF {
                            continue;
                        }
                        let stride = m.stride.max(1);
                        let mut off = 0;
                        while off < m.len {
                            let end = (off + stride).min(m.len);
                            let data = &storage[base + off..base + end];
                            txid_counter = txid_counter.wrapping_add(1);
                            from_peer(&server, &alloc, m.addr, data, &mut frame, txid_counter).await;
                            off = end;
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let expired = {
                    let mut st = alloc.state.lock();
                    st.expire(now, &server.metrics);
                    st.expires <= now
                };
                if expired {
                    tracing::debug!(client = %alloc.client, relayed = %alloc.relayed, "allocation lifetime ended");
                    break;
                }
            }
            _ = alloc.close_notify.notified() => break,
        }
        if alloc.is_closed() {
            break;
        }
    }
    {
        let mut t = table.lock();
        if t.get(&alloc.client).is_some_and(|a| Arc::ptr_eq(a, &alloc)) {
            t.remove(&alloc.client);
        }
    }
    server.release(&alloc);
}

/// The IPv4 form of a v4-mapped source (a dual-stack socket reports those).
fn plain(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

async fn from_peer(
    server: &Server,
    alloc: &Allocation,
    peer: SocketAddr,
    data: &[u8],
    frame: &mut Vec<u8>,
    txid_counter: u64,
) {
    let peer = plain(peer);
    let now = Instant::now();
    let channel = {
        let mut st = alloc.state.lock();
        if !st.has_permission(peer.ip(), now) {
            server.metrics.dropped_no_permission.fetch_add(1, Relaxed);
            return;
        }
        if !st.down.take(data.len(), now) || !server.total_down.lock().take(data.len(), now) {
            server.metrics.dropped_bandwidth.fetch_add(1, Relaxed);
            return;
        }
        st.peer_channel(peer, now)
    };
    let stream = alloc.transport.is_stream();
    match channel {
        Some(c) => channel_data::encode(frame, c, data, stream),
        None => {
            let mut txid = [0u8; 12];
            txid[4..].copy_from_slice(&txid_counter.to_be_bytes());
            data_indication(frame, peer, data, txid);
        }
    }
    let sent = match &alloc.sink {
        ClientSink::Udp(sock) => sock.send_to(frame, alloc.client).await.is_ok(),
        ClientSink::Stream(tx) => tx.send(frame.clone()).await.is_ok(),
    };
    if sent {
        server.metrics.packets_to_client.fetch_add(1, Relaxed);
        server
            .metrics
            .bytes_to_client
            .fetch_add(data.len() as u64, Relaxed);
    } else if let ClientSink::Stream(_) = &alloc.sink {
        alloc.close();
    }
}
