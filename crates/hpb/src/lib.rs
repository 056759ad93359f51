//! The hpb server as a library: the configuration layers, the listeners and the glue
//! between the signaling server, the SFU and the TURN server. The `hpb` binary
//! (`main.rs`) composes them; the fuzz targets in `fuzz/` reach the configuration parsers
//! through [`fuzzing`].

pub mod acme;
pub mod cli;
pub mod config;
pub mod health;
pub mod healthcheck;
pub mod http_listener;
pub mod lifecycle;
pub mod lingering;
pub mod media;
pub mod metrics;
pub mod public_port;
pub mod relay_link;
pub mod sd_notify;
pub mod tls;

/// The configuration parsers, public only for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::config::fuzzing::*;
}
