//! TURN over TCP and TLS (RFC 8656 §3.1, `turns:`): a task per connection that cuts the byte
//! stream into STUN messages and padded ChannelData frames, hands them to the server, and
//! writes replies and relayed data back through one writer. Allocations made on a
//! connection end with it. Garbage closes the connection without affecting others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::allocation::{ClientSink, Transport};
use crate::message::HEADER_LEN;
use crate::outbox::{Outbox, send_streams};
use crate::server::{AllocTable, Incoming, Reply, Server};
use crate::to_peer::PeerBatch;
use crate::write_queue::{self, WriteRx};

/// Bytes asked of the stream per read: a dozen media frames or more each time (the buffer
/// is kept per connection, so not more).
const READ_SIZE: usize = 16 * 1024;
/// Queued buffers are joined into one write up to about this size.
const WRITE_SIZE: usize = 64 * 1024;
/// A connection that sends nothing valid for this long is closed (slow-loris guard).
const IDLE: Duration = Duration::from_secs(60);
/// A quiet connection's task wakes this often (to drop stale cached destinations).
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const MAX_FRAME: usize = 4 + 65_535 + 3;

/// How long the next frame in `buf` is, if its header is complete; `Err` for garbage.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first >> 6 {
        0b00 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if len % 4 != 0 {
                return Err(format!("STUN length {len} is not a multiple of 4"));
            }
            if buf.len() >= 8 && buf[4..8] != crate::message::MAGIC_COOKIE.to_be_bytes() {
                return Err("no STUN magic cookie".into());
            }
            Ok(Some(HEADER_LEN + len))
        }
        0b01 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            Ok(Some(4 + len.div_ceil(4) * 4))
        }
        _ => Err(format!(
            "byte {first:#04x} starts neither STUN nor ChannelData"
        )),
    }
}

/// Serves one TURN stream (already past the TLS handshake for `turns:`).
pub async fn serve_stream<S>(server: Arc<Server>, stream: S, peer: SocketAddr, transport: Transport)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = write_queue::channel();
    // The writer hands the write half back when asked to stop without closing (a
    // ConnectionBind turns the connection into a pipe).
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(write_frames(wr, rx, stop_rx, transport));
    let mut pipe: Option<(tokio::net::TcpStream, Vec<u8>)> = None;
    let table: Arc<AllocTable> = Arc::new(Mutex::new(FxHashMap::default()));
    let sink_tx = tx.clone();
    let make_sink = move || ClientSink::Stream(sink_tx.clone());
    // Received bytes are `buf[..filled]`; the rest is zeroed once and reused, so a read
    // never initialises its buffer again (a TLS read would, each time).
    let mut buf: Vec<u8> = vec![0; READ_SIZE];
    let mut filled = 0;
    let mut out = Vec::with_capacity(2048);
    let mut to_peers = PeerBatch::default();
    let mut to_clients = Outbox::default();
    let mut streams = Vec::new();
    let mut idle = Duration::ZERO;
    'conn: loop {
        if buf.len() < filled + READ_SIZE {
            buf.resize(filled + READ_SIZE, 0);
        }
        match tokio::time::timeout(HOUSEKEEPING, rd.read(&mut buf[filled..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                // Quiet: let go of allocations the destination cache may hold and publish
                // the counters.
                to_peers.refresh(&server);
                to_clients.tally.flush(&server.metrics);
                idle += HOUSEKEEPING;
                if idle >= IDLE {
                    tracing::debug!(client = %peer, "TURN {} connection idle, closing", transport.as_str());
                    break;
                }
                continue;
            }
            Ok(Ok(n)) => {
                filled += n;
                idle = Duration::ZERO;
            }
        }
        // Every complete frame of what has arrived, then the data for peers in one batch.
        let mut pos = 0;
        let mut closing = false;
        loop {
            let rest = &buf[pos..filled];
            let len = match frame_len(rest) {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(why) => {
                    tracing::debug!(client = %peer, "closing TURN {} connection: {why}", transport.as_str());
                    server
                        .metrics
                        .dropped_malformed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    closing = true;
                    break;
                }
            };
            if len > MAX_FRAME {
                closing = true;
                break;
            }
            if rest.len() < len {
                break;
            }
            let inc = Incoming {
                from: peer,
                transport,
                data: &rest[..len],
            };
            pos += len;
            match server.handle(&table, &make_sink, inc, &mut out, &mut to_peers) {
                Reply::None => {}
                Reply::Send => {
                    if tx.send(out.clone()).await.is_err() {
                        closing = true;
                        break;
                    }
                }
                Reply::Pipe(peer_stream) => {
                    if tx.send(out.clone()).await.is_err() {
                        closing = true;
                        break;
                    }
                    pipe = Some((peer_stream, buf[pos..filled].to_vec()));
                    closing = true;
                    break;
                }
            }
        }
        if !to_peers.is_empty() {
            to_peers.flush(&server, &mut to_clients);
            to_clients.flush(&server.metrics, &mut streams);
            send_streams(&mut streams);
        }
        if closing {
            break 'conn;
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
    }
    to_clients.tally.flush(&server.metrics);
    let allocs: Vec<_> = table.lock().drain().map(|(_, a)| a).collect();
    for a in allocs {
        server.release(&a);
    }
    crate::tcp_relay::close(&server, peer);
    if let Some((peer_stream, early)) = pipe {
        drop(make_sink);
        let _ = stop_tx.send(());
        if let Ok(Some(wr)) = writer.await {
            let client = rd.unsplit(wr);
            crate::tcp_relay::splice(&server, client, peer_stream, early).await;
        }
        return;
    }
    // The writer ends (and closes the connection) once every sender is gone, including the
    // one `make_sink` holds; the relay tasks drop theirs as their allocations close.
    drop(make_sink);
    drop(tx);
    let _ = writer.await;
}

/// Writes `frames` (whole frames back to back) to a TLS stream, each frame in its own write
/// and so its own TLS record: some clients (coturn's own tools) take one frame per record
/// and would leave the rest of a record unread until more data arrives.
async fn write_records<W>(wr: &mut W, frames: &[u8]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut off = 0;
    while off < frames.len() {
        let rest = &frames[off..];
        let len = match frame_len(rest) {
            Ok(Some(l)) => l.min(rest.len()),
            _ => rest.len(),
        };
        wr.write_all(&rest[..len]).await?;
        off += len;
    }
    Ok(())
}

/// The connection's writer: over TCP, what is queued when it wakes goes out in one write.
/// Ends (and shuts the stream down) when every sender is gone; on `stop`, writes what is
/// queued and hands the write half back instead.
async fn write_frames<W>(
    mut wr: W,
    mut rx: WriteRx,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    transport: Transport,
) -> Option<W>
where
    W: AsyncWrite + Unpin,
{
    let mut joined: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            biased;
            frame = rx.recv() => match frame {
                Some(first) => {
                    let ok = if transport == Transport::Tls {
                        let mut ok = write_records(&mut wr, &first).await.is_ok();
                        while ok && let Some(more) = rx.try_recv() {
                            ok = write_records(&mut wr, &more).await.is_ok();
                        }
                        ok
                    } else {
                        match rx.try_recv() {
                            None => wr.write_all(&first).await.is_ok(),
                            Some(second) => {
                                joined.clear();
                                joined.extend_from_slice(&first);
                                joined.extend_from_slice(&second);
                                while joined.len() < WRITE_SIZE {
                                    match rx.try_recv() {
                                        Some(more) => joined.extend_from_slice(&more),
                                        None => break,
                                    }
                                }
                                wr.write_all(&joined).await.is_ok()
                            }
                        }
                    };
                    // TLS keeps records it could not write yet until the next write or flush.
                    if !ok || wr.flush().await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = &mut stop => {
                // Flush what is queued (the ConnectionBind answer), keep the stream open.
                while let Some(frame) = rx.try_recv() {
                    if wr.write_all(&frame).await.is_err() {
                        return None;
                    }
                }
                if wr.flush().await.is_err() {
                    return None;
                }
                return Some(wr);
            }
        }
    }
    let _ = wr.shutdown().await;
    None
}

/// Accepts TURN-over-TCP connections on `listener`.
pub async fn accept_tcp(server: Arc<Server>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((s, peer)) => {
                let _ = s.set_nodelay(true);
                tokio::spawn(serve_stream(server.clone(), s, peer, Transport::Tcp));
            }
            Err(e) => {
                tracing::warn!("TURN TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts TURN-over-TLS connections (`turns:`) on `listener`.
pub async fn accept_tls(
    server: Arc<Server>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        match listener.accept().await {
            Ok((s, peer)) => {
                let _ = s.set_nodelay(true);
                let acceptor = acceptor.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await {
                        Ok(Ok(tls)) => serve_stream(server, tls, peer, Transport::Tls).await,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, "TURN TLS handshake failed: {e}")
                        }
                        Err(_) => tracing::debug!(client = %peer, "TURN TLS handshake timed out"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!("TURN TLS accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 1, 0, 8]), Ok(Some(28)));
        assert!(frame_len(&[0, 1, 0, 7]).is_err());
        assert_eq!(frame_len(&[0x40, 0, 0, 5]), Ok(Some(12)));
        // A TLS ClientHello on the plain port: no magic cookie.
        assert!(frame_len(&[0x16, 3, 1, 0, 0xf4, 1, 0, 0, 0xf0]).is_err());
        assert!(frame_len(&[0xff, 0, 0, 0]).is_err());
    }
}
