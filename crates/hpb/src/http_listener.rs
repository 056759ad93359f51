//! The plain HTTP/WebSocket listener (`[http] listen`): every accepted connection gets
//! TCP_NODELAY. Signaling is many small messages, often two in a row (an offer, then its
//! candidate); with Nagle's algorithm the second waits for the client's delayed ACK, 40 ms
//! on Linux. The public TLS port does the same (`public_port.rs`), and Go's server, which
//! hpb replaces, has it by default.

use axum::serve::{ListenerExt as _, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// A listener that sets TCP_NODELAY on each connection it accepts (a concrete type, so
/// axum's `ConnectInfo<SocketAddr>` still applies).
pub type NoDelay = TapIo<TcpListener, fn(&mut TcpStream)>;

/// `listener`, with TCP_NODELAY set on each connection it accepts.
pub fn nodelay(listener: TcpListener) -> NoDelay {
    listener.tap_io(set_nodelay as fn(&mut TcpStream))
}

fn set_nodelay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let mut listener = nodelay(tcp);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await;
        assert!(stream.nodelay().expect("nodelay"), "TCP_NODELAY is set");
    }
}
