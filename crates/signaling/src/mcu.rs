//! The port through which signaling talks to the media plane (ARCHITECTURE "MCU port"):
//! commands out, replies back, events pushed. `hpb` plugs the in-process SFU into it; a
//! cluster would plug a NATS-backed remote. Signaling never imports the SFU itself.

use std::future::Future;
use std::pin::Pin;

pub use hpb_proto::mcu::{McuCommand, McuError, McuEvent, McuReply};

/// A boxed future of a reply.
pub type McuFuture = Pin<Box<dyn Future<Output = McuReply> + Send + 'static>>;

/// The media plane as signaling sees it.
pub trait Mcu: Send + Sync + 'static {
    /// Sends one command and resolves to its reply.
    fn request(&self, cmd: McuCommand) -> McuFuture;
}
