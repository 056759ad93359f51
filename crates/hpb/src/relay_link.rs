//! Connects the built-in TURN server and the built-in SFU in-process (ARCHITECTURE: "a
//! relay whose peer is our own SFU is short-circuited in-process"): a relayed client's
//! datagrams for the SFU go to the SFU's worker without a relay socket, and the SFU's
//! datagrams for a relayed address go to the TURN client without the SFU's socket. Follows
//! TURN's `relay_short_circuit` (always on in hpb; tests turn it off to use the sockets).

use std::net::SocketAddr;
use std::sync::Arc;

use hpb_turn::in_process::{SfuPeer, ToClients};

/// TURN → SFU.
struct ToSfu(hpb_sfu::RelayInbox);

impl SfuPeer for ToSfu {
    fn deliver(&self, from: SocketAddr, _to: SocketAddr, data: &[u8]) -> bool {
        self.0.deliver(from, data)
    }
}

/// SFU → TURN clients.
struct ToTurn(ToClients);

impl hpb_sfu::RelayPort for ToTurn {
    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<bool> {
        self.0.send(from, to, data)
    }
    fn relays(&mut self, to: SocketAddr) -> bool {
        self.0.relays(to)
    }
    fn flush(&mut self) {
        self.0.flush();
    }
}

/// Link `turn` and `sfu` both ways (nothing when the short circuit is configured off).
pub fn connect(sfu: &hpb_sfu::Sfu, turn: &hpb_turn::TurnServer) {
    if !turn.server.cfg.relay_short_circuit {
        return;
    }
    turn.server.set_sfu(Arc::new(ToSfu(sfu.relay_inbox())));
    sfu.attach_relay(Box::new(ToTurn(ToClients::new(turn.server.clone()))));
    tracing::info!("TURN relays to and from the built-in SFU in-process");
}
