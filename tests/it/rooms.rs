//! End-to-end: room join, leave and switch with Nextcloud's room requests, room-session takeover, periodic pings.
