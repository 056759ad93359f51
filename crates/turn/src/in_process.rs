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

use rustc_hash::FxHashMap;

use crate::allocation::Allocation;
use crate::outbox::{Outbox, StreamBatch, send_streams};
use crate::server::Server;

/// Destinations [`ToClients`] remembers at most between changes of the relay table.
const CACHE_MAX: usize = 4096;

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
    /// Relayed addresses looked up (our allocation, or none), valid while the server's relay
    /// generation is `generation`.
    cache: FxHashMap<SocketAddr, Option<Arc<Allocation>>>,
    generation: u64,
}

impl ToClients {
    pub fn new(server: Arc<Server>) -> ToClients {
        ToClients {
            server,
            out: Outbox::default(),
            streams: Vec::new(),
            cache: FxHashMap::default(),
            generation: u64::MAX,
        }
    }

    /// Our open UDP allocation whose relayed address is `to`, if any.
    fn target(&mut self, to: SocketAddr) -> Option<Arc<Allocation>> {
        let g = self.server.relays_generation();
        if g != self.generation || self.cache.len() >= CACHE_MAX {
            self.cache.clear();
            self.generation = g;
        }
        let server = &self.server;
        self.cache
            .entry(to)
            .or_insert_with(|| server.local_relay(to))
            .clone()
            .filter(|a| !a.is_closed())
    }

    /// Whether `to` is a relayed address of ours (so [`Self::send`] takes the datagram).
    pub fn owns(&mut self, to: SocketAddr) -> bool {
        self.target(to).is_some()
    }

    /// Relay `data` from the SFU's `from` to the client of the allocation at `to`; false
    /// when it is not ours or was refused (no permission for `from`, over a bandwidth cap).
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        let Some(alloc) = self.target(to) else {
            return false;
        };
        let sent = self
            .out
            .relay_to_client(&self.server, &alloc, from, data, Instant::now());
        if sent {
            self.out.tally.packets_from_sfu += 1;
        }
        sent
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
