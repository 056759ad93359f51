//! Frames towards clients, collected over one batch of relayed packets and sent together:
//! over UDP, each run of equal-sized frames to one client leaves as one GSO send; over a
//! stream, all of one client's frames go to its writer as one buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use quinn_udp::{Transmit, UdpSocketState};
use std::net::UdpSocket;

use crate::allocation::{Allocation, ClientSink};
use crate::channel_data;
use crate::metrics::{Metrics, Tally};
use crate::server::{Server, data_indication};
use crate::write_queue::{Refused, WriteTx};

struct Entry {
    alloc: Arc<Allocation>,
    frames: Vec<u8>,
    lens: Vec<usize>,
}

/// One stream client's frames of a batch, for its writer.
pub struct StreamBatch {
    tx: WriteTx,
    frames: Vec<u8>,
}

pub struct Outbox {
    entries: Vec<Entry>,
    spare: Vec<(Vec<u8>, Vec<usize>)>,
    scratch: Vec<u8>,
    txid: u64,
    /// Counters, added to the server's metrics as [`Tally`] says; a quiet thread flushes
    /// them itself.
    pub tally: Tally,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            entries: Vec::new(),
            spare: Vec::new(),
            scratch: Vec::with_capacity(2048),
            txid: rand::random(),
            tally: Tally::default(),
        }
    }
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

impl Outbox {
    fn entry(&mut self, alloc: &Arc<Allocation>) -> &mut Entry {
        let i = match self
            .entries
            .iter()
            .rposition(|e| Arc::ptr_eq(&e.alloc, alloc))
        {
            Some(i) => i,
            None => {
                let (frames, lens) = self.spare.pop().unwrap_or_default();
                self.entries.push(Entry {
                    alloc: alloc.clone(),
                    frames,
                    lens,
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[i]
    }

    /// Frames `data` from `peer` for `alloc`'s client (ChannelData when the peer has a
    /// channel, else a Data indication) unless the permission or the bandwidth caps say no;
    /// false when dropped.
    pub fn relay_to_client(
        &mut self,
        server: &Server,
        alloc: &Arc<Allocation>,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let peer = plain(peer);
        let channel = {
            let mut st = alloc.state.lock();
            if !st.has_permission(peer.ip(), now) {
                self.tally.dropped_no_permission += 1;
                return false;
            }
            if !st.down.take(data.len(), now) || !server.take_total_down(data.len(), now) {
                self.tally.dropped_bandwidth += 1;
                return false;
            }
            st.peer_channel(peer, now)
        };
        if channel.is_none() {
            self.txid = self.txid.wrapping_add(1);
            let mut txid = [0u8; 12];
            txid[4..].copy_from_slice(&self.txid.to_be_bytes());
            data_indication(&mut self.scratch, peer, data, txid);
        }
        let pad = alloc.transport.is_stream();
        let scratch = std::mem::take(&mut self.scratch);
        let e = self.entry(alloc);
        let before = e.frames.len();
        match channel {
            Some(c) => channel_data::append(&mut e.frames, c, data, pad),
            None => e.frames.extend_from_slice(&scratch),
        }
        let len = e.frames.len() - before;
        e.lens.push(len);
        self.scratch = scratch;
        self.tally.packets_to_client += 1;
        self.tally.bytes_to_client += data.len() as u64;
        true
    }

    /// Sends what UDP clients get and moves what stream clients get to `streams` (for
    /// [`send_streams`]); adds the counters to `metrics` when due.
    pub fn flush(&mut self, metrics: &Metrics, streams: &mut Vec<StreamBatch>) {
        for mut e in self.entries.drain(..) {
            if !e.alloc.is_closed() {
                match &e.alloc.sink {
                    ClientSink::Udp(sock, state) => {
                        send_runs(sock, state, e.alloc.client, &e.frames, &e.lens)
                    }
                    ClientSink::Stream(tx) => streams.push(StreamBatch {
                        tx: tx.clone(),
                        frames: std::mem::take(&mut e.frames),
                    }),
                }
            }
            e.frames.clear();
            e.lens.clear();
            self.spare.push((e.frames, e.lens));
        }
        self.tally.batch_done(metrics);
    }
}

/// Sends `frames` (back to back, each `lens` long) to a UDP client: each run of equal-sized
/// frames as one GSO send. A full socket buffer drops the rest, as the kernel would.
pub fn send_runs(
    sock: &UdpSocket,
    state: &UdpSocketState,
    to: SocketAddr,
    frames: &[u8],
    lens: &[usize],
) {
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
            destination: to,
            ecn: None,
            contents: &frames[off..end],
            segment_size: (j - i > 1).then_some(len),
            src_ip: None,
        };
        if let Err(e) = state.try_send(sock.into(), &t) {
            tracing::debug!(client = %to, "send to client failed: {e}");
        }
        off = end;
        i = j;
    }
}

/// Hands each stream client its frames; a full queue drops them. Never waits: between two
/// stream clients a wait would be backpressure on the sender's connection, and a client that
/// blocks writing to one connection while not reading the other closes a cycle through both
/// queues that stalls both (a `turnutils_uclient` TCP flood stalled so). A drop is what the
/// kernel does to a UDP relay socket that is not read. False when a writer is gone.
pub fn send_streams(streams: &mut Vec<StreamBatch>) -> bool {
    let mut all = true;
    for b in streams.drain(..) {
        match b.tx.try_send(b.frames) {
            Ok(()) => {}
            Err(Refused::Full) => {
                tracing::debug!("stream client not reading: relayed data dropped")
            }
            Err(Refused::Closed) => all = false,
        }
    }
    all
}
