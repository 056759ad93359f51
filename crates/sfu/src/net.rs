//! The SFU's transports as the worker sees them: the UDP media sockets (IPv4 and optionally
//! IPv6) and the ICE-TCP connections (RFC 6544 passive candidates, RFC 4571 framing: each
//! STUN, DTLS or SRTP packet prefixed with its 16-bit length). A TCP connection is read and
//! written by two small tasks on the worker's runtime; the worker gets whole frames from
//! them through one channel and hands frames to a connection's writer without waiting.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Duration;

use std::cell::RefCell;

use quinn_udp::{RecvMeta, UdpSocketState};

use crate::buffer_pool::BufferPool;
use crate::gso::Outbox;
use crate::metrics::{Metrics, inc};
use crate::relay_link::RelayPort;
use std::sync::Arc;
use tokio::io::Interest;

use str0m::net::{Protocol, Transmit};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::peer::PeerId;

/// Most ICE-TCP connections at once (each is two tasks and two buffers).
pub(crate) const MAX_TCP_CONNECTIONS: usize = 4096;

/// Frames queued towards one TCP connection before more are dropped (a stalled client then
/// loses media the way a full UDP socket buffer would, and does not hold the worker).
const TCP_QUEUE: usize = 1024;

/// How long a new TCP connection may take to send its first frame (a STUN Binding request).
const FIRST_FRAME: Duration = Duration::from_secs(10);

/// What a TCP connection's reader tells the worker (a frame's buffer goes back with
/// [`Net::recycle`]).
pub(crate) enum TcpIn {
    Frame { remote: SocketAddr, data: Vec<u8> },
    Closed { remote: SocketAddr },
}

/// One ICE-TCP connection as the worker holds it.
pub(crate) struct TcpConn {
    tx: mpsc::Sender<Vec<u8>>,
    /// Our candidate address this connection belongs to (str0m's `destination`).
    pub local: SocketAddr,
    /// The peer whose ICE checks arrived here, once one did.
    pub peer: Option<PeerId>,
    reader: AbortHandle,
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        // The writer ends when `tx` goes; the reader is stopped here.
        self.reader.abort();
    }
}

/// Datagrams received per system call (`recvmmsg`).
const RECV_BATCH: usize = 32;

/// Buffers for one batch of received datagrams.
pub(crate) struct RecvBatch {
    storage: Vec<u8>,
    meta: Vec<RecvMeta>,
    buf_len: usize,
}

impl RecvBatch {
    pub fn new(gro_segments: usize) -> RecvBatch {
        let buf_len = 2048 * gro_segments.max(1);
        RecvBatch {
            storage: vec![0u8; RECV_BATCH * buf_len],
            meta: vec![RecvMeta::default(); RECV_BATCH],
            buf_len,
        }
    }

    /// How many datagrams one receive takes at most.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// The datagrams of the last `n` received (a GRO buffer split into its segments).
    pub fn datagrams(&self, n: usize) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta
            .iter()
            .take(n)
            .enumerate()
            .flat_map(move |(i, m)| {
                let base = i * self.buf_len;
                let stride = m.stride.max(1);
                let data = self.storage.get(base..base + m.len).unwrap_or_default();
                data.chunks(stride).map(move |d| (m.addr, d))
            })
    }
}

/// A UDP media socket as the worker's runtime watches it: for reading only. Writes never
/// wait (a full buffer drops the datagram), and a socket registered for writability too
/// would have every sent datagram's release wake the worker's epoll (tokio's `UdpSocket`
/// registers both).
pub(crate) type MediaSocket = AsyncFd<std::net::UdpSocket>;

/// `socket` set up as a [`MediaSocket`] on the current runtime.
pub(crate) fn media_socket(socket: std::net::UdpSocket) -> io::Result<MediaSocket> {
    socket.set_nonblocking(true)?;
    // Deprecated for file descriptors a type does not own (tokio#8587); a std socket owns
    // its descriptor, and the AsyncFd owns the socket, so it is sound here. The
    // replacement is `unsafe`, which this workspace does not allow.
    #[allow(deprecated)]
    AsyncFd::with_interest(socket, Interest::READABLE)
}

/// The worker's sockets and connections.
pub(crate) struct Net {
    pub udp4: MediaSocket,
    udp4_state: UdpSocketState,
    udp6_state: Option<UdpSocketState>,
    /// Outgoing UDP datagrams not sent yet (see [`Net::flush`]).
    outbox: RefCell<Outbox>,
    /// Our IPv4 candidate address (what str0m is told datagrams arrived at).
    pub udp4_candidate: SocketAddr,
    pub udp6: Option<(MediaSocket, SocketAddr)>,
    pub tcp: HashMap<SocketAddr, TcpConn>,
    inbox: mpsc::Sender<TcpIn>,
    /// Buffers of ICE-TCP frames in either direction.
    pool: Arc<BufferPool>,
    /// The TURN server of this process, for datagrams to its relayed addresses.
    relay: RefCell<Option<Box<dyn RelayPort>>>,
    /// A datagram built for a transport other than the UDP socket's batch.
    built: RefCell<Vec<u8>>,
    metrics: Arc<Metrics>,
}

impl Net {
    pub fn new(
        udp4: MediaSocket,
        udp4_candidate: SocketAddr,
        udp6: Option<(MediaSocket, SocketAddr)>,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Net, mpsc::Receiver<TcpIn>)> {
        let (inbox, rx) = mpsc::channel(1024);
        let udp4_state = UdpSocketState::new(udp4.get_ref().into())?;
        let udp6_state = match &udp6 {
            Some((s, _)) => Some(UdpSocketState::new(s.get_ref().into())?),
            None => None,
        };
        Ok((
            Net {
                udp4,
                udp4_state,
                udp6_state,
                outbox: RefCell::default(),
                udp4_candidate,
                udp6,
                tcp: HashMap::new(),
                inbox,
                pool: Arc::default(),
                relay: RefCell::new(None),
                built: RefCell::default(),
                metrics,
            },
            rx,
        ))
    }

    /// Buffers sized for what these sockets can coalesce.
    pub fn recv_batch(&self) -> RecvBatch {
        let gro = self
            .udp6_state
            .as_ref()
            .map_or(1, |s| s.gro_segments())
            .max(self.udp4_state.gro_segments());
        RecvBatch::new(gro)
    }

    /// Receive what one UDP socket has, up to a batch, in one system call; the number of
    /// entries filled, `WouldBlock` when there is nothing (the caller then clears the
    /// socket's readiness).
    pub fn recv(&self, v6: bool, batch: &mut RecvBatch) -> io::Result<usize> {
        let (socket, state) = match (&self.udp6, &self.udp6_state, v6) {
            (Some((s, _)), Some(st), true) => (s, st),
            _ => (&self.udp4, &self.udp4_state),
        };
        // On the stack: a receive allocates nothing.
        let mut chunks = batch.storage.chunks_mut(batch.buf_len);
        let mut bufs: [IoSliceMut<'_>; RECV_BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        state.recv(socket.get_ref().into(), &mut bufs, &mut batch.meta)
    }

    /// Send one of str0m's transmits on the transport it names (see [`Net::send_to`]).
    pub fn send(&self, t: &Transmit) -> io::Result<usize> {
        self.send_to(t.proto, t.source, t.destination, &t.contents)
    }

    /// Send one datagram from our candidate `source` to `destination`. UDP: a full socket
    /// buffer fails with `WouldBlock` (the datagram is lost, as on the network); TCP: a
    /// connection whose queue is full drops the frame the same way.
    /// UDP datagrams are collected into runs per destination and go out at the latest with
    /// [`Net::flush`], which the worker calls before it waits again.
    pub fn send_to(
        &self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> io::Result<usize> {
        match proto {
            Protocol::Udp => {
                if let Some(relay) = self.relay.borrow_mut().as_mut()
                    && let Some(relayed) = relay.send(source, destination, contents)
                {
                    // A client relayed by our own TURN server: handed over in-process.
                    if relayed {
                        inc(&self.metrics.turn_tx_packets, 1);
                    }
                    return Ok(contents.len());
                }
                Ok(self
                    .outbox
                    .borrow_mut()
                    .send(|to| self.udp_for(to), destination, contents))
            }
            Protocol::Tcp => {
                let conn = self.tcp.get(&destination).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotConnected, "no ICE-TCP connection")
                })?;
                let len = u16::try_from(contents.len()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "packet too big for RFC 4571")
                })?;
                let mut frame = self.pool.take();
                frame.extend_from_slice(&len.to_be_bytes());
                frame.extend_from_slice(contents);
                if let Err(e) = conn.tx.try_send(frame) {
                    self.pool.put_back(e.into_inner());
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                }
                Ok(contents.len())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the SFU speaks ICE over UDP and TCP only",
            )),
        }
    }

    /// Send a datagram of at most `max` bytes that `fill` writes (returning its length, or
    /// `None` for nothing to send): a UDP datagram for the socket is written straight into
    /// its destination's batch (see [`Net::send_to`] for the rest).
    pub fn send_built(
        &self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> io::Result<Option<usize>> {
        let relayed = || {
            self.relay
                .borrow_mut()
                .as_mut()
                .is_some_and(|r| r.relays(destination))
        };
        if proto == Protocol::Udp && !relayed() {
            return Ok(self.outbox.borrow_mut().send_with(
                |to| self.udp_for(to),
                destination,
                max,
                fill,
            ));
        }
        let mut built = self.built.borrow_mut();
        if built.len() < max {
            built.resize(max, 0);
        }
        let Some(n) = fill(&mut built[..max]).filter(|n| *n <= max) else {
            return Ok(None);
        };
        self.send_to(proto, source, destination, &built[..n])
            .map(Some)
    }

    fn udp_for(&self, to: SocketAddr) -> (&std::net::UdpSocket, &UdpSocketState) {
        match (&self.udp6, &self.udp6_state, to) {
            (Some((s, _)), Some(st), SocketAddr::V6(_)) => (s.get_ref(), st),
            _ => (self.udp4.get_ref(), &self.udp4_state),
        }
    }

    /// Send the UDP datagrams collected so far.
    pub fn flush(&self) {
        if let Some(relay) = self.relay.borrow_mut().as_mut() {
            relay.flush();
        }
        self.outbox.borrow_mut().flush(|to| self.udp_for(to));
    }

    /// Hand back the buffer of a received ICE-TCP frame once it is handled.
    pub fn recycle(&self, frame: Vec<u8>) {
        self.pool.put_back(frame);
    }

    /// From now on, datagrams for the relayed addresses of `port` go through it.
    pub fn attach_relay(&self, port: Box<dyn RelayPort>) {
        *self.relay.borrow_mut() = Some(port);
    }

    /// Our candidate address for a UDP datagram from `source`.
    pub fn udp_candidate(&self, source: SocketAddr) -> SocketAddr {
        match (&self.udp6, source) {
            (Some((_, c)), SocketAddr::V6(_)) => *c,
            _ => self.udp4_candidate,
        }
    }

    /// Start serving a new ICE-TCP connection that belongs to our candidate `local`; false
    /// when it is refused (too many connections, or its address is already connected).
    pub fn add_tcp(&mut self, stream: TcpStream, local: SocketAddr) -> bool {
        let Ok(remote) = stream.peer_addr() else {
            return false;
        };
        if self.tcp.len() >= MAX_TCP_CONNECTIONS || self.tcp.contains_key(&remote) {
            tracing::debug!(%remote, "refusing an ICE-TCP connection: too many, or a duplicate");
            return false;
        }
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        tokio::spawn(write_frames(write, rx, self.pool.clone()));
        let reader = tokio::spawn(read_frames(
            read,
            remote,
            self.inbox.clone(),
            self.pool.clone(),
        ))
        .abort_handle();
        self.tcp.insert(
            remote,
            TcpConn {
                tx,
                local,
                peer: None,
                reader,
            },
        );
        tracing::debug!(%remote, %local, "ICE-TCP connection");
        true
    }
}

/// Read RFC 4571 frames until the connection ends; the first must be STUN and come in time.
async fn read_frames(
    read: tokio::net::tcp::OwnedReadHalf,
    remote: SocketAddr,
    inbox: mpsc::Sender<TcpIn>,
    pool: Arc<BufferPool>,
) {
    let mut r = BufReader::with_capacity(16 * 1024, read);
    let mut first = true;
    loop {
        let frame = async {
            let len = r.read_u16().await?;
            let mut data = pool.zeroed(usize::from(len));
            r.read_exact(&mut data).await?;
            io::Result::Ok(data)
        };
        let data = if first {
            match tokio::time::timeout(FIRST_FRAME, frame).await {
                Ok(Ok(d)) if crate::stun::is_stun(&d) => d,
                Ok(Ok(_)) => {
                    tracing::debug!(%remote, "ICE-TCP connection did not start with STUN: closed");
                    break;
                }
                _ => break,
            }
        } else {
            match frame.await {
                Ok(d) => d,
                Err(_) => break,
            }
        };
        first = false;
        if data.is_empty() {
            continue;
        }
        if inbox.send(TcpIn::Frame { remote, data }).await.is_err() {
            return;
        }
    }
    let _ = inbox.send(TcpIn::Closed { remote }).await;
}

/// Write queued frames, as many per system call as are waiting.
async fn write_frames(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    pool: Arc<BufferPool>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        pool.put_back(frame);
        while buf.len() < 60 * 1024 {
            match rx.try_recv() {
                Ok(f) => {
                    buf.extend_from_slice(&f);
                    pool.put_back(f);
                }
                Err(_) => break,
            }
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_go_out_with_their_length_and_come_back_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("test setup");
        let cand = udp.local_addr().expect("test setup");
        let udp = media_socket(udp).expect("test setup");
        let (mut net, mut inbox) =
            Net::new(udp, cand, None, Default::default()).expect("test setup");
        let mut client = TcpStream::connect(addr).await.expect("test setup");
        let (server, remote) = listener.accept().await.expect("test setup");
        assert!(net.add_tcp(server, addr));
        // A STUN Binding request header (20 bytes, magic cookie), split over two writes.
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7u8; 12]);
        client.write_all(&[0x00, 20]).await.expect("test setup");
        client.write_all(&stun[..5]).await.expect("test setup");
        client.flush().await.expect("test setup");
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&stun[5..]).await.expect("test setup");
        match inbox.recv().await {
            Some(TcpIn::Frame { remote: r, data }) => {
                assert_eq!(r, remote);
                assert_eq!(data, stun);
                net.recycle(data);
            }
            _ => panic!("no frame"),
        }
        let t = Transmit {
            proto: Protocol::Tcp,
            source: addr,
            destination: remote,
            contents: vec![1u8, 2, 3].into(),
        };
        assert_eq!(net.send(&t).expect("test setup"), 3);
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.expect("test setup");
        assert_eq!(got, [0, 3, 1, 2, 3]);
        // The frame's buffer went back to the pool once written, and is taken again.
        assert_eq!(net.pool.free(), 1);
        assert_eq!(net.send(&t).expect("test setup"), 3);
        client.read_exact(&mut got).await.expect("test setup");
        assert_eq!(net.pool.free(), 1);
        drop(client);
        assert!(matches!(inbox.recv().await, Some(TcpIn::Closed { .. })));
    }

    #[tokio::test]
    async fn a_connection_that_does_not_start_with_stun_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("test setup");
        let cand = udp.local_addr().expect("test setup");
        let udp = media_socket(udp).expect("test setup");
        let (mut net, mut inbox) =
            Net::new(udp, cand, None, Default::default()).expect("test setup");
        let mut client = TcpStream::connect(addr).await.expect("test setup");
        let (server, _) = listener.accept().await.expect("test setup");
        assert!(net.add_tcp(server, addr));
        client
            .write_all(&[0, 4, b'G', b'E', b'T', b' '])
            .await
            .expect("test setup");
        assert!(matches!(inbox.recv().await, Some(TcpIn::Closed { .. })));
        // Unknown destinations are an error, not a panic.
        let t = Transmit {
            proto: Protocol::Tcp,
            source: addr,
            destination: "127.0.0.1:9".parse().expect("test setup"),
            contents: vec![1u8].into(),
        };
        assert!(net.send(&t).is_err());
    }
}
