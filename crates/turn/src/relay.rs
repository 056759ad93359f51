//! The peer side of one allocation: a task that drains the relay socket in batches
//! (`recvmmsg` through quinn-udp), drops what has no permission or exceeds the bandwidth
//! caps, wraps the rest as ChannelData or Data indications and sends it to the client. It
//! also ends the allocation when its lifetime runs out.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, Transmit};
use tokio::io::Interest;

use crate::allocation::{Allocation, ClientSink};
use crate::channel_data;
use crate::server::{AllocTable, Server, data_indication};

/// Datagrams per receive call.
pub const BATCH: usize = 8;
/// Per datagram: media packets fit in an MTU; a larger datagram is truncated and dropped.
pub const BUF: usize = 2048;

pub async fn run(server: Arc<Server>, alloc: Arc<Allocation>, table: Arc<AllocTable>) {
    let state = alloc.relay_state.clone();
    let mut storage = vec![0u8; BATCH * BUF];
    let mut meta = [RecvMeta::default(); BATCH];
    // The batch's frames towards the client, back to back, and each one's length.
    let mut frames: Vec<u8> = Vec::with_capacity(BATCH * (BUF + 40));
    let mut lens: Vec<usize> = Vec::with_capacity(BATCH);
    let mut scratch: Vec<u8> = Vec::with_capacity(BUF + 40);
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
                    frames.clear();
                    lens.clear();
                    let now = Instant::now();
                    for (i, m) in meta.iter().take(n).enumerate() {
                        if m.len > BUF {
                            continue;
                        }
                        let data = &storage[i * BUF..i * BUF + m.len];
                        txid_counter = txid_counter.wrapping_add(1);
                        let before = frames.len();
                        if frame_for_client(&server, &alloc, m.addr, data, &mut frames, &mut scratch, txid_counter, now) {
                            lens.push(frames.len() - before);
                        }
                    }
                    if !lens.is_empty() && !to_client(&alloc, &frames, &lens).await {
                        alloc.close();
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

/// Appends the frame carrying `data` from `peer` to `frames` (ChannelData when the peer has
/// a channel, else a Data indication built in `scratch`); false when the packet is dropped.
#[allow(clippy::too_many_arguments)]
fn frame_for_client(
    server: &Server,
    alloc: &Allocation,
    peer: SocketAddr,
    data: &[u8],
    frames: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    txid_counter: u64,
    now: Instant,
) -> bool {
    let peer = plain(peer);
    let channel = {
        let mut st = alloc.state.lock();
        if !st.has_permission(peer.ip(), now) {
            server.metrics.dropped_no_permission.fetch_add(1, Relaxed);
            return false;
        }
        if !st.down.take(data.len(), now) || !server.total_down.lock().take(data.len(), now) {
            server.metrics.dropped_bandwidth.fetch_add(1, Relaxed);
            return false;
        }
        st.peer_channel(peer, now)
    };
    match channel {
        Some(c) => channel_data::append(frames, c, data, alloc.transport.is_stream()),
        None => {
            let mut txid = [0u8; 12];
            txid[4..].copy_from_slice(&txid_counter.to_be_bytes());
            data_indication(scratch, peer, data, txid);
            frames.extend_from_slice(scratch);
        }
    }
    server.metrics.packets_to_client.fetch_add(1, Relaxed);
    server
        .metrics
        .bytes_to_client
        .fetch_add(data.len() as u64, Relaxed);
    true
}

/// Sends a batch of frames to the client: over UDP, runs of equal-sized frames go out as one
/// GSO send (one trip through the kernel's stack for the run); over a stream, in order.
/// False when a stream client is gone.
async fn to_client(alloc: &Allocation, frames: &[u8], lens: &[usize]) -> bool {
    match &alloc.sink {
        ClientSink::Udp(sock, state) => {
            let max_segments = state.max_gso_segments().max(1);
            let mut off = 0;
            let mut i = 0;
            while i < lens.len() {
                let len = lens[i];
                let mut j = i + 1;
                while j < lens.len() && lens[j] == len && j - i < max_segments {
                    j += 1;
                }
                let end = off + len * (j - i);
                let t = Transmit {
                    destination: alloc.client,
                    ecn: None,
                    contents: &frames[off..end],
                    segment_size: (j - i > 1).then_some(len),
                    src_ip: None,
                };
                loop {
                    if sock.writable().await.is_err() {
                        return true;
                    }
                    match sock.try_io(Interest::WRITABLE, || state.try_send((&**sock).into(), &t)) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => {
                            tracing::debug!(client = %alloc.client, "send to client failed: {e}");
                            break;
                        }
                    }
                }
                off = end;
                i = j;
            }
            true
        }
        ClientSink::Stream(tx) => {
            let mut off = 0;
            for len in lens {
                if tx.send(frames[off..off + len].to_vec()).await.is_err() {
                    return false;
                }
                off += len;
            }
            true
        }
    }
}
