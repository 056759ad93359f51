//! The plain HTTP/WebSocket listener (`[http] listen`): every accepted connection gets
//! TCP_NODELAY and closes by lingering ([`crate::lingering`]). Signaling is many small
//! messages, often two in a row (an offer, then its candidate); with Nagle's algorithm the
//! second waits for the client's delayed ACK, 40 ms on Linux. The public TLS port does the
//! same (`public_port.rs`), and Go's server, which hpb replaces, has it by default.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::lingering::Lingering;

/// A listener whose connections have TCP_NODELAY and linger when closed. Serve it with
/// [`serve_app`]: handlers then see the peer as axum's `ConnectInfo<SocketAddr>`, as with a
/// plain `TcpListener`.
pub struct HttpListener(TcpListener);

/// The peer of a connection of an [`HttpListener`] (axum implements its `Connected` for
/// `SocketAddr` only on its own listener types).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// `app` as the make-service for [`HttpListener`]: each request gets
/// `ConnectInfo<SocketAddr>` of its connection.
pub fn serve_app(
    app: axum::Router,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, PeerAddr> {
    app.layer(axum::middleware::map_request(
        |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<PeerAddr>,
         mut req: axum::extract::Request| async move {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer.0));
            req
        },
    ))
    .into_make_service_with_connect_info::<PeerAddr>()
}

impl HttpListener {
    /// `listener`, with TCP_NODELAY set on each connection it accepts, each lingering.
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Lingering<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop, with its handling of accept errors.
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        (Lingering::new(tcp), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
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
        let mut listener = HttpListener::new(tcp);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await;
        let tcp = stream.get_ref().expect("the connection");
        assert!(tcp.nodelay().expect("nodelay"), "TCP_NODELAY is set");
    }
}
