//! Connection IO that closes the way TCP wants when it is dropped: it sends its end of the
//! stream (FIN, or TLS close_notify then FIN) and reads on, discarding, until the client
//! closes too or [`LINGER`] passes, and only then closes the socket.
//!
//! Linux answers `close()` on a socket with unread input with a reset, and a reset makes
//! the client's stack throw away what it had not read yet. When hpb refuses a client that
//! is still sending (a WebSocket message over `[limits] max_message_size`, which is never
//! read to its end), that was the Close frame telling the client why: it saw "connection
//! reset" instead of code 1009 and its reason.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// How long a dropped connection may wait for the client to close its end.
pub const LINGER: Duration = Duration::from_secs(2);

/// `T`, lingering when dropped (see the module docs). Reads and writes go straight to `T`.
pub struct Lingering<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<T>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<T> {
    pub fn new(io: T) -> Self {
        Self { io: Some(io) }
    }

    /// The connection (always there until the drop).
    pub fn get_ref(&self) -> Option<&T> {
        self.io.as_ref()
    }

    fn io(&mut self) -> io::Result<&mut T> {
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection dropped"))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<T> {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else {
            return;
        };
        // Outside a runtime (or while it shuts down) the socket just closes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(io));
        }
    }
}

/// Send our end, then read and discard until the client's end (or an error, or `LINGER`).
async fn linger<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut buf = [0u8; 4096];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected (client, server) pair where the client has sent more than the server
    /// will ever read.
    async fn client_still_sending() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(&[7u8; 32 * 1024]).await.expect("send");
        (client, server)
    }

    /// The client is still sending when the server drops its connection after a last
    /// message: the client reads that message and a clean end, not a reset.
    #[tokio::test]
    async fn a_dropped_connection_with_unread_input_delivers_its_last_bytes() {
        let (mut client, server) = client_still_sending().await;
        let mut server = Lingering::new(server);
        server.write_all(b"goodbye").await.expect("reply");
        drop(server);
        let mut got = Vec::new();
        client
            .read_to_end(&mut got)
            .await
            .expect("a clean end of the stream, not a reset");
        assert_eq!(got, b"goodbye");
    }

    /// Without the wrapper the same drop resets the connection (what the test above guards
    /// against; if Linux ever stops doing this, the wrapper is no longer needed).
    #[tokio::test]
    async fn a_plain_drop_with_unread_input_resets() {
        let (mut client, mut server) = client_still_sending().await;
        server.write_all(b"goodbye").await.expect("reply");
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = Vec::new();
        let r = client.read_to_end(&mut got).await;
        assert_eq!(
            r.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset),
            "read {} bytes",
            got.len()
        );
    }
}
