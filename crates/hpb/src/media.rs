//! Plugs the built-in SFU into signaling's MCU port: commands are queued to the SFU's worker
//! in the order signaling submits them; its events go straight to the hub.

use std::sync::Arc;

use hpb_signaling::mcu::{Mcu, McuCommand, McuFuture};

pub struct BuiltinSfu(pub Arc<hpb_sfu::Sfu>);

impl Mcu for BuiltinSfu {
    fn request(&self, cmd: McuCommand) -> McuFuture {
        Box::pin(self.0.submit(cmd))
    }
}
