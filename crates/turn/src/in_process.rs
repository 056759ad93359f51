//! The in-process link between this TURN server and the built-in SFU of the same process
//! (ARCHITECTURE: "a relay whose peer is our own SFU is short-circuited in-process"). A
//! client's data for one of the SFU's addresses goes to the SFU's worker through
//! [`SfuPeer`] instead of out of a relay socket and back in through the SFU's socket; the
//! SFU's datagrams for one of our relayed addresses go to that allocation's client through
//! [`ToClients`] instead of through the SFU's socket and the relay socket. Permissions and
//! bandwidth caps apply exactly as on the socket path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::outbox::{Outbox, StreamBatch, send_streams};
use crate::server::Server;
use crate::to_peer::RelayCache;

/// The SFU's side: takes a datagram that the allocation with relayed address `from` sends
/// to the SFU's address `to`. False when it was dropped (the SFU's queue is full, as a full
/// socket buffer would drop it). Called on TURN's listener threads; must not block.
pub trait SfuPeer: Send + Sync {
    fn deliver(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> bool;
}

/// The TURN side for the SFU's thread: datagrams the SFU sends from its address `from` to
/// one of our relayed addresses, relayed to that allocation's client. One per SFU worker.
pub struct ToClients {
    server: Arc<Server>,
    out: Outbox,
    streams: Vec<StreamBatch>,
    relays: RelayCache,
}

impl ToClients {
    pub fn new(server: Arc<Server>) -> ToClients {
        ToClients {
            server,
            out: Outbox::default(),
            streams: Vec::new(),
            relays: RelayCache::default(),
        }
    }

    /// Relay `data` from the SFU's `from` to the client of our allocation at `to`: `None`
    /// when `to` is no open relayed address of ours (the datagram is not for us), else
    /// whether it was relayed (false: no permission for `from`, or over a bandwidth cap).
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<bool> {
        self.relays.refresh(&self.server);
        let alloc = self.relays.get(&self.server, to)?;
        let sent = self
            .out
            .relay_to_client(&self.server, alloc, from, data, Instant::now());
        if sent {
            self.out.tally.packets_from_sfu += 1;
        }
        Some(sent)
    }

    /// Whether `to` is an open relayed address of ours (datagrams for it go to [`Self::send`]).
    pub fn relays(&mut self, to: SocketAddr) -> bool {
        self.relays.refresh(&self.server);
        self.relays.get(&self.server, to).is_some()
    }

    /// Deliver what [`Self::send`] collected to the clients.
    pub fn flush(&mut self) {
        self.out.flush(&self.server.metrics, &mut self.streams);
        send_streams(&mut self.streams);
    }
}

impl Drop for ToClients {
    fn drop(&mut self) {
        self.out.tally.flush(&self.server.metrics);
    }
}
