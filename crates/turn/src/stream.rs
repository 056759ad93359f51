//! TURN over TCP and TLS (RFC 8656 §3.1, `turns:`): a task per connection that cuts the byte
//! stream into STUN messages and padded ChannelData frames, hands them to the server, and
//! writes replies and relayed data back through one writer. Allocations made on a
//! connection end with it. Garbage closes the connection without affecting others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::allocation::{ClientSink, Transport};
use crate::message::HEADER_LEN;
use crate::server::{AllocTable, Incoming, Reply, Server};

/// Frames queued towards one stream client before relayed data waits.
const WRITE_QUEUE: usize = 256;
/// A connection that sends nothing valid for this long is closed (slow-loris guard).
const IDLE: Duration = Duration::from_secs(60);
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
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    // The writer hands the write half back when asked to stop without closing (a
    // ConnectionBind turns the connection into a pipe).
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                frame = rx.recv() => match frame {
                    Some(frame) => {
                        if wr.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = &mut stop_rx => {
                    // Flush what is queued (the ConnectionBind answer), keep the stream open.
                    while let Ok(frame) = rx.try_recv() {
                        if wr.write_all(&frame).await.is_err() {
                            return None;
                        }
                    }
                    return Some(wr);
                }
            }
        }
        let _ = wr.shutdown().await;
        None
    });
    let mut pipe: Option<(tokio::net::TcpStream, Vec<u8>)> = None;
    let table: Arc<AllocTable> = Arc::new(Mutex::new(HashMap::new()));
    let sink_tx = tx.clone();
    let make_sink = move || ClientSink::Stream(sink_tx.clone());
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(2048);
    'conn: loop {
        let n = match tokio::time::timeout(IDLE, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                tracing::debug!(client = %peer, "TURN {} connection idle, closing", transport.as_str());
                break;
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let len = match frame_len(&buf) {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(why) => {
                    tracing::debug!(client = %peer, "closing TURN {} connection: {why}", transport.as_str());
                    server
                        .metrics
                        .dropped_malformed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break 'conn;
                }
            };
            if len > MAX_FRAME {
                break 'conn;
            }
            if buf.len() < len {
                break;
            }
            let inc = Incoming {
                from: peer,
                transport,
                data: &buf[..len],
            };
            match server.handle(&table, &make_sink, inc, &mut out) {
                Reply::None => {}
                Reply::Send => {
                    if tx.send(out.clone()).await.is_err() {
                        break 'conn;
                    }
                }
                Reply::Pipe(peer_stream) => {
                    if tx.send(out.clone()).await.is_err() {
                        break 'conn;
                    }
                    buf.drain(..len);
                    pipe = Some((peer_stream, std::mem::take(&mut buf)));
                    break 'conn;
                }
            }
            buf.drain(..len);
        }
    }
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
