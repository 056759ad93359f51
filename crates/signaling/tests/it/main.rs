//! Integration tests of the signaling crate in-process: the real router on a loopback
//! port with a fake media plane (`harness::FakeMcu`), the fake Nextcloud and WebSocket
//! test clients of `hpb-test-support`. One test binary, one module per area.

mod harness;
mod mcu;
