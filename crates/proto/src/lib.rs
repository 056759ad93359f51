//! The shared language of hpb: every wire type of the signaling protocol (client
//! WebSocket messages, backend requests in both directions), the error codes and feature
//! ids, and the pure functions both sides need (HMAC checksums, the session-id codec,
//! backend URL canonicalisation, TURN REST credentials). Nothing here does I/O.

pub mod backend;
pub mod backend_url;
pub mod checksum;
pub mod client;
pub mod error_code;
pub mod features;
pub mod mcu;
pub mod server;
pub mod session_id;
pub mod turn_credentials;

pub use error_code::ErrorCode;

/// The upstream signaling version we are wire-compatible with, reported to clients
/// (as semver build metadata, so version parsers keep working).
pub const COMPAT_VERSION: &str = concat!("2.1.1+hpb.", env!("CARGO_PKG_VERSION"));
