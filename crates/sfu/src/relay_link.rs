//! The SFU's end of the in-process link to a TURN server in the same process: datagrams a
//! TURN allocation relays to the SFU arrive through a [`RelayInbox`] instead of the UDP
//! socket, and datagrams for a relayed address of that server leave through a
//! [`RelayPort`] instead of the socket. To str0m both look like UDP on our candidate, so
//! ICE, DTLS and SRTP do not know the difference; only two kernel round trips are saved.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

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
    metrics: Arc<Metrics>,
}

impl RelayInbox {
    pub(crate) fn new(metrics: Arc<Metrics>) -> (RelayInbox, mpsc::Receiver<Relayed>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        (RelayInbox { tx, metrics }, rx)
    }

    /// Queue a datagram from the relayed address `from`; false when it was dropped (the
    /// worker is behind by [`INBOX_CAPACITY`] datagrams, or stopped). Never blocks.
    pub fn deliver(&self, from: SocketAddr, data: &[u8]) -> bool {
        let queued = self
            .tx
            .try_send(Relayed {
                from,
                data: data.to_vec(),
            })
            .is_ok();
        if !queued {
            inc(&self.metrics.turn_dropped_packets, 1);
        }
        queued
    }
}
