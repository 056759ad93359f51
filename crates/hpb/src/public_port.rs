//! The one public TCP port (ARCHITECTURE "Ports"): each connection is told apart by its first
//! bytes. A TLS ClientHello is TLS: after the handshake ALPN `stun.turn` or a STUN message
//! means TURN over TLS, ALPN `acme-tls/1` is an ACME validation (closed after the handshake),
//! anything else is HTTPS and WSS signaling. A STUN message in the clear
//! is TURN over TCP; a STUN message behind a 16-bit length (RFC 4571 framing) is ICE-TCP,
//! handed to the built-in SFU. Plain HTTP gets a short answer saying to use https. Anything else, and a
//! connection that says nothing in time (slow-loris), is closed without affecting the others.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hpb_turn::allocation::Transport;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use crate::tls::{ALPN_ACME, ALPN_TURN};

/// How long a new connection may take to send its first bytes and finish TLS.
const FIRST_BYTES: Duration = Duration::from_secs(10);

/// A stream with bytes already read from it put back in front.
struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection's first bytes say it is.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Tls,
    Turn,
    IceTcp,
    Http,
    Garbage,
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// How many first bytes tell STUN (cookie at 4..8) from framed STUN (cookie at 6..10).
const STUN_PEEK: usize = 10;

fn classify(first: u8) -> Kind {
    match first {
        0x16 => Kind::Tls,
        // A STUN request (Binding, Allocate) is what a TURN client sends first; an RFC 4571
        // frame of one starts with its length, whose high byte is 0 too (see `classify_stun`).
        0x00 | 0x01 => Kind::Turn,
        b'A'..=b'Z' => Kind::Http,
        _ => Kind::Garbage,
    }
}

/// TURN over TCP (a STUN message) or ICE-TCP (a length, then a STUN message), from the
/// first [`STUN_PEEK`] bytes; anything else is garbage.
fn classify_stun(head: &[u8]) -> Kind {
    let stun_at = |i: usize| {
        head.get(i).is_some_and(|b| *b < 4) && head.get(i + 4..i + 8) == Some(&MAGIC_COOKIE)
    };
    if stun_at(0) {
        Kind::Turn
    } else if stun_at(2) {
        Kind::IceTcp
    } else {
        Kind::Garbage
    }
}

/// Peek until `STUN_PEEK` bytes are there (a STUN message is at least 20 and comes in one
/// segment, so this rarely waits), or what came when the client stops sending. `peek`
/// returns at once while fewer bytes are there, so the re-peeks back off (5 ms doubling to
/// 200 ms): a client that sends a byte and stalls costs a few wake-ups a second, not 200.
async fn peek_head(tcp: &TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; STUN_PEEK];
    let deadline = tokio::time::Instant::now() + FIRST_BYTES;
    let mut wait = Duration::from_millis(5);
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.peek(&mut head))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if n >= STUN_PEEK {
            return Some(head.to_vec());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// Everything the public port serves.
#[derive(Clone)]
pub struct Services {
    pub router: Router,
    pub tls: Arc<rustls::ServerConfig>,
    pub turn: Option<Arc<hpb_turn::server::Server>>,
    /// The built-in SFU, which takes ICE-TCP connections.
    pub sfu: Option<Arc<hpb_sfu::Sfu>>,
}

async fn serve_http<S>(services: &Services, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = services.router.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(crate::lingering::Lingering::new(io)), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(remote = %peer, "HTTPS connection ended: {e}");
    }
}

async fn handle(services: Services, tcp: TcpStream, peer: SocketAddr) {
    let mut first = [0u8; 1];
    let mut kind = match tokio::time::timeout(FIRST_BYTES, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => classify(first[0]),
        _ => return,
    };
    if kind == Kind::Turn {
        kind = match peek_head(&tcp).await {
            Some(head) => classify_stun(&head),
            None => return,
        };
    }
    match kind {
        Kind::Tls => {
            let acceptor = tokio_rustls::TlsAcceptor::from(services.tls.clone());
            let mut tls = match tokio::time::timeout(FIRST_BYTES, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(remote = %peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(remote = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let alpn = tls.get_ref().1.alpn_protocol();
            if alpn == Some(ALPN_ACME) {
                // tls-alpn-01: the certificate was the answer; nothing else is spoken.
                tracing::info!(remote = %peer, "acme: answered a tls-alpn-01 validation");
                let _ = tls.shutdown().await;
                return;
            }
            let alpn_turn = alpn == Some(ALPN_TURN);
            // Without ALPN the first decrypted bytes decide: STUN, else HTTP.
            let mut prefix = vec![0u8; 1];
            let turn = if alpn_turn {
                prefix.clear();
                true
            } else {
                match tokio::time::timeout(FIRST_BYTES, tls.read(&mut prefix)).await {
                    Ok(Ok(1)) => classify(prefix[0]) == Kind::Turn,
                    _ => return,
                }
            };
            let stream = Rewind {
                prefix,
                pos: 0,
                inner: tls,
            };
            if turn {
                match &services.turn {
                    Some(t) => {
                        hpb_turn::stream::serve_stream(t.clone(), stream, peer, Transport::Tls)
                            .await
                    }
                    None => {
                        tracing::debug!(remote = %peer, "TURN over TLS, but the TURN server is off ([turn] secret)")
                    }
                }
            } else {
                serve_http(&services, stream, peer).await;
            }
        }
        Kind::Turn => match &services.turn {
            Some(t) => hpb_turn::stream::serve_stream(t.clone(), tcp, peer, Transport::Tcp).await,
            None => {
                tracing::debug!(remote = %peer, "TURN over TCP on the public port, but the TURN server is off")
            }
        },
        Kind::IceTcp => match &services.sfu {
            Some(sfu) => sfu.accept_tcp(tcp),
            None => {
                tracing::debug!(remote = %peer, "ICE-TCP on the public port, but the SFU is off ([sfu] listen)")
            }
        },
        Kind::Http => {
            let mut tcp = tcp;
            let body = "this port speaks TLS: use https:// (and wss:// for signaling)\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(reply.as_bytes()).await;
            let _ = tcp.shutdown().await;
        }
        Kind::Garbage => {
            tracing::debug!(remote = %peer, first = first[0], "closing a connection that is neither TLS, STUN, ICE-TCP nor HTTP");
        }
    }
}

/// Accepts connections on the public port until the process ends.
pub async fn serve(listener: TcpListener, services: Services) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(handle(services.clone(), tcp, peer));
            }
            Err(e) => {
                tracing::warn!("accept on the public port failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(classify(0x16), Kind::Tls);
        assert_eq!(classify(0x00), Kind::Turn);
        assert_eq!(classify(0x01), Kind::Turn);
        assert_eq!(classify(b'G'), Kind::Http);
        assert_eq!(classify(b'P'), Kind::Http);
        assert_eq!(classify(0xff), Kind::Garbage);
        assert_eq!(classify(b'\r'), Kind::Garbage);
    }

    #[test]
    fn stun_and_framed_stun() {
        // An Allocate request in the clear: TURN over TCP.
        let turn = [0x00, 0x03, 0x00, 0x24, 0x21, 0x12, 0xa4, 0x42, 1, 2];
        assert_eq!(classify_stun(&turn), Kind::Turn);
        // A Binding request behind its RFC 4571 length (0x0064): ICE-TCP.
        let ice = [0x00, 0x64, 0x00, 0x01, 0x00, 0x50, 0x21, 0x12, 0xa4, 0x42];
        assert_eq!(classify_stun(&ice), Kind::IceTcp);
        // A long one (length 0x01xx) too.
        let ice = [0x01, 0x04, 0x00, 0x01, 0x00, 0xf0, 0x21, 0x12, 0xa4, 0x42];
        assert_eq!(classify_stun(&ice), Kind::IceTcp);
        assert_eq!(classify_stun(&[0x00; 10]), Kind::Garbage);
        assert_eq!(classify_stun(&[0x00, 0x01]), Kind::Garbage);
    }
}
