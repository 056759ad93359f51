//! The SFU's end of the in-process link to a TURN server in the same process: datagrams a
//! TURN allocation relays to the SFU arrive through a [`RelayInbox`] instead of the UDP
//! socket, and datagrams for a relayed address of that server leave through a
//! [`RelayPort`] instead of the socket. To str0m both look like UDP on our candidate, so
//! ICE, DTLS and SRTP do not know the difference; only two kernel round trips are saved.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::buffer_pool::BufferPool;
use crate::metrics::{Metrics, inc};

/// Datagrams queued from TURN to the worker at most; past that they are dropped, as a full
/// socket buffer would drop them.
pub(crate) const INBOX_CAPACITY: usize = 4096;

/// The TURN server's side, driven on the SFU's worker thread.
pub trait RelayPort: Send {
    /// Relay `data` from our candidate `from` to the client behind the relayed address `to`:
    /// `None` when `to` is not a relayed address of the TURN server (the datagram goes out
    /// of the socket), else whether it was relayed (false: no permission for `from`, or
    /// over a bandwidth cap).
    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<bool>;
    /// Whether `to` is a relayed address of the TURN server, so datagrams for it go to
    /// [`RelayPort::send`] (the SFU builds them elsewhere than in its socket's batch then).
    fn relays(&mut self, to: SocketAddr) -> bool;
    /// Deliver what `send` collected (the worker calls it before it waits again).
    fn flush(&mut self);
}

/// A datagram from a TURN allocation's relayed address.
pub(crate) struct Relayed {
    pub from: SocketAddr,
    pub data: Vec<u8>,
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
