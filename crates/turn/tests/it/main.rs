//! Integration tests of the TURN server: coturn's own clients (`turnutils_uclient`,
//! `turnutils_peer`) against it, and a small Rust client for every message type and error.

mod client;
mod in_process;
mod protocol;
mod support;
mod uclient;
