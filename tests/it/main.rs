//! End-to-end tests: the real hpb binary against the fake Nextcloud of `tests/support` and
//! real WebSocket clients. One test binary (builds are the scarce resource); one module per
//! area of the protocol.

mod acme;
mod backend_api;
mod backends;
mod browser;
mod config_file;
mod deploy;
mod dialout;
mod events;
mod federation;
mod hello;
mod http_endpoints;
mod internal_clients;
mod limits;
mod load;
mod messages;
mod resume;
mod rooms;
mod sfu;
mod smoke;
mod tls;
mod transient;
mod turn;
