//! The peer side of one allocation: a task that drains the relay socket in batches
//! (`recvmmsg` through quinn-udp) and hands each datagram to an [`Outbox`], which drops what
//! has no permission or exceeds the bandwidth caps and sends the rest to the client as
//! ChannelData or Data indications. It also ends the allocation when its lifetime runs out.

use std::io::IoSliceMut;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;
use tokio::io::Interest;

use crate::allocation::Allocation;
use crate::outbox::{Outbox, send_streams};
use crate::server::{AllocTable, Server};

/// Datagrams per receive call.
pub const BATCH: usize = 8;
/// Per datagram: media packets fit in an MTU; a larger datagram is truncated and dropped.
pub const BUF: usize = 2048;

pub async fn run(server: Arc<Server>, alloc: Arc<Allocation>, table: Arc<AllocTable>) {
    let state = alloc.relay_state.clone();
    let mut storage = vec![0u8; BATCH * BUF];
    let mut meta = [RecvMeta::default(); BATCH];
    let mut out = Outbox::default();
    let mut streams = Vec::new();
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
                    // A short batch means the socket is drained: answering WouldBlock then
                    // clears the readiness without another receive call just to hear EAGAIN
                    // (tokio keeps readiness that a datagram arriving meanwhile set).
                    let mut n = 0;
                    let drained = match alloc.relay.try_io(Interest::READABLE, || {
                        n = state.recv((&*alloc.relay).into(), &mut bufs, &mut meta)?;
                        if n < BATCH {
                            Err(std::io::ErrorKind::WouldBlock.into())
                        } else {
                            Ok(())
                        }
                    }) {
                        Ok(()) => false,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                        Err(e) => {
                            tracing::debug!(relayed = %alloc.relayed, "relay receive failed: {e}");
                            break;
                        }
                    };
                    drop(bufs);
                    let now = Instant::now();
                    for (i, m) in meta.iter().take(n).enumerate() {
                        if m.len > BUF {
                            continue;
                        }
                        let data = &storage[i * BUF..i * BUF + m.len];
                        out.relay_to_client(&server, &alloc, m.addr, data, now);
                    }
                    out.flush(&server.metrics, &mut streams);
                    if !streams.is_empty() && !send_streams(&mut streams) {
                        // The stream client is gone.
                        server.release(&alloc);
                    }
                    if drained {
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                out.tally.flush(&server.metrics);
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
    out.tally.flush(&server.metrics);
    {
        let mut t = table.lock();
        if t.get(&alloc.client).is_some_and(|a| Arc::ptr_eq(a, &alloc)) {
            t.remove(&alloc.client);
        }
    }
    server.release(&alloc);
}
