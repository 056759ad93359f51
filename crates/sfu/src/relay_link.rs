//! The SFU's end of the in-process link to a TURN server in the same process: datagrams a
//! TURN allocation relays to the SFU arrive through a [`RelayInbox`] instead of the UDP
//! socket, and datagrams for a relayed address of that server leave through a
//! [`RelayPort`] instead of the socket. To str0m both look like UDP on our candidate, so
//! ICE, DTLS and SRTP do not know the difference; only two kernel round trips are saved.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::metrics::{Metrics, inc};

/// Datagrams queued from TURN to the worker at most; past that they are dropped, as a full
/// socket buffer would drop them.
pub(crate) const INBOX_CAPACITY: usize = 4096;

/// Buffers kept for reuse at most: more than are in flight while the worker keeps up.
const POOL_BUFFERS: usize = 512;

/// Buffers larger than this are not kept (media datagrams are far smaller).
const POOL_BUFFER_BYTES: usize = 4096;

/// The TURN server's side, driven on the SFU's worker thread.
pub trait RelayPort: Send {
    /// Relay `data` from our candidate `from` to the client behind the relayed address `to`:
    /// `None` when `to` is not a relayed address of the TURN server (the datagram goes out
    /// of the socket), else whether it was relayed (false: no permission for `from`, or
    /// over a bandwidth cap).
    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<bool>;
    /// Deliver what `send` collected (the worker calls it before it waits again).
    fn flush(&mut self);
}

/// A datagram from a TURN allocation's relayed address.
pub(crate) struct Relayed {
    pub from: SocketAddr,
    pub data: Vec<u8>,
}

/// Buffers of delivered datagrams, back from the worker once it is done with them: a
/// steady stream of relayed media allocates nothing per datagram (the hot-path rule).
#[derive(Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// A buffer holding a copy of `data`, reused when one is free.
    fn copy_of(&self, data: &[u8]) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut free| free.pop());
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(data.len().max(1500)));
        buf.clear();
        buf.extend_from_slice(data);
        buf
    }

    fn put_back(&self, buf: Vec<u8>) {
        if buf.capacity() > POOL_BUFFER_BYTES {
            return;
        }
        if let Ok(mut free) = self.0.lock()
            && free.len() < POOL_BUFFERS
        {
            free.push(buf);
        }
    }

    #[cfg(test)]
    fn free(&self) -> usize {
        self.0.lock().map_or(0, |f| f.len())
    }
}

/// Where a TURN server in this process puts datagrams for the SFU; cheap to clone.
#[derive(Clone)]
pub struct RelayInbox {
    tx: mpsc::Sender<Relayed>,
    pool: Arc<BufferPool>,
    metrics: Arc<Metrics>,
}

/// The worker's end of a [`RelayInbox`]: takes the datagrams and gives their buffers back.
pub(crate) struct RelayReceiver {
    rx: mpsc::Receiver<Relayed>,
    pool: Arc<BufferPool>,
}

impl RelayReceiver {
    pub async fn recv(&mut self) -> Option<Relayed> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Relayed> {
        self.rx.try_recv().ok()
    }

    /// Hand a datagram's buffer back for the next delivery.
    pub fn recycle(&self, r: Relayed) {
        self.pool.put_back(r.data);
    }
}

impl RelayInbox {
    pub(crate) fn new(metrics: Arc<Metrics>) -> (RelayInbox, RelayReceiver) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let pool = Arc::new(BufferPool::default());
        (
            RelayInbox {
                tx,
                pool: pool.clone(),
                metrics,
            },
            RelayReceiver { rx, pool },
        )
    }

    /// Queue a datagram from the relayed address `from`; false when it was dropped (the
    /// worker is behind by `INBOX_CAPACITY` (4096) datagrams, or stopped). Never blocks.
    pub fn deliver(&self, from: SocketAddr, data: &[u8]) -> bool {
        // A full queue is checked before copying, so a drop costs no buffer.
        let queued = match self.tx.try_reserve() {
            Ok(slot) => {
                slot.send(Relayed {
                    from,
                    data: self.pool.copy_of(data),
                });
                true
            }
            Err(_) => false,
        };
        if !queued {
            inc(&self.metrics.turn_dropped_packets, 1);
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivered_buffers_come_back_and_are_reused() {
        let metrics = Arc::new(Metrics::default());
        let (inbox, mut rx) = RelayInbox::new(metrics.clone());
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert!(inbox.deliver(from, b"first"));
        let r = rx.recv().await.expect("a datagram");
        assert_eq!((r.from, r.data.as_slice()), (from, &b"first"[..]));
        let ptr = r.data.as_ptr();
        rx.recycle(r);
        assert_eq!(inbox.pool.free(), 1);
        // The next delivery takes the same buffer, and holds only its own bytes.
        assert!(inbox.deliver(from, b"2nd"));
        let r = rx.recv().await.expect("a datagram");
        assert_eq!(r.data.as_slice(), b"2nd");
        assert_eq!(r.data.as_ptr(), ptr, "the buffer was not reused");
        assert_eq!(inbox.pool.free(), 0);
        // A huge buffer is not kept.
        rx.recycle(Relayed {
            from,
            data: vec![0; POOL_BUFFER_BYTES + 1],
        });
        assert_eq!(inbox.pool.free(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::default());
        let (inbox, _rx) = RelayInbox::new(metrics.clone());
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        for _ in 0..INBOX_CAPACITY {
            assert!(inbox.deliver(from, b"x"));
        }
        assert!(!inbox.deliver(from, b"one too many"));
        assert_eq!(
            metrics
                .turn_dropped_packets
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
