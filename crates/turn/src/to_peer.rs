//! Client data bound for peers, collected over one receive batch: runs of equal-sized
//! packets of one allocation to one peer leave its relay socket as one GSO send, and data
//! for another allocation's relayed address on this server goes to that allocation's client
//! in-process (through an [`Outbox`]), skipping two trips through the kernel; so does data
//! for the built-in SFU ([`crate::in_process`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::allocation::Allocation;
use crate::outbox::Outbox;
use crate::server::Server;

/// Destinations a listener remembers at most between changes of the relay table.
const CACHE_MAX: usize = 4096;

/// A v4 relay socket sends to the IPv4 form of a mapped address.
pub(crate) fn relay_destination(alloc: &Allocation, peer: SocketAddr) -> SocketAddr {
    match (alloc.relayed, crate::peer_policy::canonical(peer.ip())) {
        (SocketAddr::V4(_), ip @ IpAddr::V4(_)) => SocketAddr::new(ip, peer.port()),
        _ => peer,
    }
}

/// The batch; see the module comment. The order of each (allocation, peer) flow is kept.
#[derive(Default)]
pub struct PeerBatch {
    data: Vec<u8>,
    /// The batch's allocations, each once.
    allocs: Vec<Arc<Allocation>>,
    /// (index in `allocs`, destination, offset in `data`, length).
    items: Vec<(usize, SocketAddr, usize, usize)>,
    sent: Vec<bool>,
    run: Vec<u8>,
    /// Destinations that are relayed addresses of ours.
    local: RelayCache,
}

impl PeerBatch {
    pub(crate) fn push(&mut self, alloc: &Arc<Allocation>, peer: SocketAddr, data: &[u8]) {
        let a = match self.allocs.iter().rposition(|x| Arc::ptr_eq(x, alloc)) {
            Some(a) => a,
            None => {
                self.allocs.push(alloc.clone());
                self.allocs.len() - 1
            }
        };
        let start = self.data.len();
        self.data.extend_from_slice(data);
        self.items
            .push((a, relay_destination(alloc, peer), start, data.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forgets cached destinations once the server's relay table changed (so a closed
    /// allocation is not kept alive by the cache); listeners call it when idle too.
    pub fn refresh(&mut self, server: &Server) {
        self.local.refresh(server);
    }

    /// Sends everything collected (frames for our own clients go into `out`, which the
    /// caller flushes next) and empties the batch.
    pub fn flush(&mut self, server: &Server, out: &mut Outbox) {
        self.refresh(server);
        let n = self.items.len();
        self.sent.clear();
        self.sent.resize(n, false);
        let now = Instant::now();
        for i in 0..n {
            if self.sent[i] {
                continue;
            }
            self.sent[i] = true;
            let (a, peer, start, len) = self.items[i];
            let alloc = &self.allocs[a];
            if let Some(sfu) = server.sfu_for(peer) {
                // Our own SFU: straight into its worker, as if from the relayed address.
                if sfu.deliver(alloc.relayed, peer, &self.data[start..start + len]) {
                    out.tally.packets_to_peer += 1;
                    out.tally.bytes_to_peer += len as u64;
                    out.tally.packets_to_sfu += 1;
                }
                continue;
            }
            if let Some(target) = self
                .local
                .get(server, peer)
                .filter(|t| t.relayed.is_ipv4() == alloc.relayed.is_ipv4())
            {
                out.tally.packets_to_peer += 1;
                out.tally.bytes_to_peer += len as u64;
                let data = &self.data[start..start + len];
                out.relay_to_client(server, target, alloc.relayed, data, now);
                continue;
            }
            let max = alloc.relay_state.max_gso_segments().max(1);
            self.run.clear();
            self.run.extend_from_slice(&self.data[start..start + len]);
            let mut count = 1;
            for j in i + 1..n {
                if self.sent[j] {
                    continue;
                }
                let (a2, p2, s2, l2) = self.items[j];
                if a2 != a || p2 != peer {
                    continue;
                }
                if l2 != len || count >= max {
                    // The flow continues with another size: keep its order.
                    break;
                }
                self.run.extend_from_slice(&self.data[s2..s2 + l2]);
                self.sent[j] = true;
                count += 1;
            }
            let alloc = &self.allocs[a];
            let t = quinn_udp::Transmit {
                destination: peer,
                ecn: None,
                contents: &self.run,
                segment_size: (count > 1).then_some(len),
                src_ip: None,
            };
            match alloc.relay_state.try_send((&*alloc.relay).into(), &t) {
                Ok(()) => {
                    out.tally.packets_to_peer += count as u64;
                    out.tally.bytes_to_peer += (count * len) as u64;
                }
                Err(e) => tracing::debug!(peer = %peer, "relay send failed: {e}"),
            }
        }
        self.items.clear();
        self.allocs.clear();
        self.data.clear();
    }
}

/// Relayed addresses of this server looked up in its table: one of our allocations, or
/// none; valid while the server's relay generation is `generation`, so the shared table is
/// not read per packet. Used for data from one allocation to another and from the built-in
/// SFU to an allocation ([`crate::in_process`]).
#[derive(Default)]
pub(crate) struct RelayCache {
    map: FxHashMap<SocketAddr, Option<Arc<Allocation>>>,
    generation: u64,
}

impl RelayCache {
    /// Forgets what was looked up once the server's relay table changed (so a closed
    /// allocation is not kept alive by the cache).
    pub fn refresh(&mut self, server: &Server) {
        let g = server.relays_generation();
        if g != self.generation {
            self.map.clear();
            self.generation = g;
        }
    }

    /// Our open allocation whose relayed address `dest` is, if any.
    pub fn get(&mut self, server: &Server, dest: SocketAddr) -> Option<&Arc<Allocation>> {
        // Send indications may name any port of a permitted peer: keep the cache small.
        if self.map.len() >= CACHE_MAX && !self.map.contains_key(&dest) {
            self.map.clear();
        }
        self.map
            .entry(dest)
            .or_insert_with(|| server.local_relay(dest))
            .as_ref()
            .filter(|t| !t.is_closed())
    }
}
