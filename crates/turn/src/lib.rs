//! hpb's STUN/TURN server (replacing coturn for Talk): STUN Binding and TURN (RFC 8656) over
//! UDP, TCP and TLS, TURN REST API credentials as Talk issues them, a secure-by-default peer
//! policy, quotas and bandwidth caps, and metrics. The protocol logic ([`server::Server`]) is
//! shared by every listener; [`TurnServer::start`] binds and runs them.

pub mod allocation;
pub mod attr;
pub mod auth;
pub mod channel_data;
pub mod config;
pub mod error;
pub mod in_process;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod peer_policy;
pub mod relay;
pub mod server;
pub mod stream;
pub mod tcp_relay;
pub mod to_peer;
pub mod udp;
pub mod write_queue;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use config::TurnConfig;
pub use error::ParseError;

/// A running TURN server.
pub struct TurnServer {
    pub server: Arc<server::Server>,
    /// Bound UDP and TCP addresses (same port each), in `listen` order.
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// Why the TURN server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("[turn] secret is empty: set it to the TURN secret entered in Talk's settings")]
    NoSecret,
    #[error("[turn] tls_listen {0} is set but no certificate is configured")]
    NoCertificate(SocketAddr),
    #[error(
        "could not listen for TURN on {addr} ({proto}): {source} (in use by coturn or another hpb? change [turn] listen)"
    )]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
}

/// Binds the UDP workers and the TCP listener on one port. For port 0 the port comes from
/// the TCP bind (exclusive, unlike the `SO_REUSEPORT` UDP sockets) and is retried while UDP
/// has it in use, so `127.0.0.1:0` never fails on a port only one protocol had free.
async fn bind_udp_and_tcp(
    server: &Arc<server::Server>,
    addr: SocketAddr,
    workers: usize,
) -> Result<(SocketAddr, tokio::net::TcpListener), StartError> {
    let err = |addr, proto, source| StartError::Bind {
        addr,
        proto,
        source,
    };
    if addr.port() != 0 {
        let bound = udp::spawn(server.clone(), addr, workers).map_err(|e| err(addr, "udp", e))?;
        let listener = tokio::net::TcpListener::bind(bound)
            .await
            .map_err(|e| err(bound, "tcp", e))?;
        return Ok((bound, listener));
    }
    let mut last = std::io::Error::from(std::io::ErrorKind::AddrInUse);
    for _ in 0..32 {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| err(addr, "tcp", e))?;
        let port = listener.local_addr().map_err(|e| err(addr, "tcp", e))?;
        match udp::spawn(server.clone(), port, workers) {
            Ok(bound) => return Ok((bound, listener)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(err(port, "udp", e)),
        }
    }
    Err(err(addr, "udp", last))
}

impl TurnServer {
    /// Binds every listener and starts serving (needs a tokio runtime for TCP and TLS).
    pub async fn start(cfg: TurnConfig) -> Result<TurnServer, StartError> {
        if cfg.secrets.is_empty() || cfg.secrets.iter().any(Vec::is_empty) {
            return Err(StartError::NoSecret);
        }
        if let Some(a) = cfg.tls_listen
            && cfg.tls.is_none()
        {
            return Err(StartError::NoCertificate(a));
        }
        let mut own: Vec<IpAddr> = cfg
            .listen
            .iter()
            .chain(cfg.tls_listen.iter())
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        own.extend(cfg.external_ip);
        own.extend(cfg.external_ip6);
        let server = Arc::new(server::Server::new(cfg.clone(), own));
        if cfg.allow_loopback_peers {
            tracing::warn!(
                "[turn] allow_loopback_peers is on: clients may relay to this machine's loopback services; use it for tests only"
            );
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in &cfg.listen {
            let (bound, listener) = bind_udp_and_tcp(&server, *addr, cfg.workers).await?;
            tokio::spawn(stream::accept_tcp(server.clone(), listener));
            udp.push(bound);
            tcp.push(bound);
        }
        let mut tls = None;
        if let (Some(addr), Some(cfg_tls)) = (cfg.tls_listen, cfg.tls.clone()) {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr,
                    proto: "tls",
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| StartError::Bind {
                addr,
                proto: "tls",
                source,
            })?;
            tokio::spawn(stream::accept_tls(server.clone(), listener, cfg_tls));
            tls = Some(bound);
        }
        tracing::info!(udp = ?udp, tcp = ?tcp, tls = ?tls, realm = %cfg.realm, "TURN server listening");
        Ok(TurnServer {
            server,
            udp,
            tcp,
            tls,
        })
    }

    pub fn metrics(&self) -> String {
        self.server.metrics.render()
    }
}
