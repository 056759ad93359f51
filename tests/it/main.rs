//! End-to-end tests: the real hpb binary against the fake Nextcloud of `tests/support` and
//! real WebSocket clients. One test binary (builds are the scarce resource); one module per
//! area of the protocol.

mod smoke;
mod hello;
mod resume;
mod limits;
mod rooms;
mod events;
mod messages;
mod transient;
mod internal_clients;
mod backend_api;
mod http_endpoints;
mod config_file;
mod backends;
mod federation;
mod load;
