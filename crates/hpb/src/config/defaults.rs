//! The lowest layers: built-in defaults (taken from `hpb_signaling`'s own defaults so
//! they cannot drift), the development sandbox's settings, and secrets generated at start.

use std::time::Duration;

use hpb_proto::checksum::random_hex;
use hpb_signaling::SignalingConfig;

use super::layer::{LayerBuilder, LayerKind, boolean, list, text, uint};

/// The listen address when nothing else is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How long a shutdown waits for clients to go (`[http] shutdown_timeout`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The log level when nothing else is configured.
pub const DEFAULT_LOG_LEVEL: &str = "info";

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `10.0.0.0/8`, but a single address without its `/32` or `/128`.
fn net_str(n: &ipnet::IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn usize_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Built-in defaults of every key that has one.
pub fn defaults_layer() -> LayerBuilder {
    let d = SignalingConfig::new(Vec::new());
    let mut b = LayerBuilder::new(LayerKind::Default, "default");
    let mut set = |path: &[&str], v| b.set(path, v, "default");
    set(&["http", "listen"], text(DEFAULT_LISTEN));
    set(
        &["http", "shutdown_timeout"],
        uint(DEFAULT_SHUTDOWN_TIMEOUT.as_secs()),
    );
    set(
        &["http", "allowed_origins"],
        list(d.allowed_origins.clone()),
    );
    set(
        &["app", "trustedproxies"],
        list(d.trusted_proxies.iter().map(net_str)),
    );
    set(
        &["app", "allowsubscribeany"],
        boolean(d.allow_subscribe_any),
    );
    set(&["backend", "allowall"], boolean(false));
    set(&["backend", "allowhttp"], boolean(false));
    set(&["backend", "allowed"], list(Vec::<String>::new()));
    set(&["backend", "sessionlimit"], uint(0));
    set(&["backend", "maxstreambitrate"], uint(0));
    set(&["backend", "maxscreenbitrate"], uint(0));
    set(&["backend", "timeout"], uint(d.backend_timeout.as_secs()));
    set(
        &["backend", "connectionsperhost"],
        uint(usize_u64(d.connections_per_host)),
    );
    set(&["backend", "skipverify"], boolean(d.backend_skip_verify));
    set(&["mcu", "maxstreambitrate"], uint(d.mcu_max_stream_bitrate));
    set(&["mcu", "maxscreenbitrate"], uint(d.mcu_max_screen_bitrate));
    set(&["sfu", "thin_silent_audio"], boolean(false));
    set(&["sfu", "opus_dtx"], boolean(false));
    set(&["turn", "servers"], list(Vec::<String>::new()));
    // The built-in TURN server (on when a TURN secret is set); defaults as coturn's.
    set(&["turn", "port"], uint(3478));
    set(&["turn", "relay_range"], text("49152-65535"));
    set(&["turn", "allow_loopback_peers"], boolean(false));
    set(&["turn", "total_quota"], uint(0));
    set(&["turn", "user_quota"], uint(0));
    set(&["turn", "max_bps"], uint(0));
    set(&["turn", "tcp_relay"], boolean(false));
    set(
        &["federation", "timeout"],
        uint(d.federation.timeout.as_secs()),
    );
    set(
        &["federation", "skipverify"],
        boolean(d.federation.skip_verify),
    );
    set(
        &["stats", "allowed_ips"],
        list(d.stats_allowed_ips.iter().map(net_str)),
    );
    let l = &d.limits;
    set(&["limits", "hello_timeout_ms"], uint(ms(l.hello_timeout)));
    set(
        &["limits", "room_join_timeout_ms"],
        uint(ms(l.room_join_timeout)),
    );
    set(&["limits", "resume_window_ms"], uint(ms(l.resume_window)));
    set(
        &["limits", "ws_ping_interval_ms"],
        uint(ms(l.ws_ping_interval)),
    );
    set(
        &["limits", "ws_pong_timeout_ms"],
        uint(ms(l.ws_pong_timeout)),
    );
    set(&["limits", "write_timeout_ms"], uint(ms(l.write_timeout)));
    set(
        &["limits", "room_ping_interval_ms"],
        uint(ms(l.room_ping_interval)),
    );
    set(
        &["limits", "dialout_timeout_ms"],
        uint(ms(l.dialout_timeout)),
    );
    set(
        &["limits", "max_message_size"],
        uint(usize_u64(l.max_message_size)),
    );
    set(
        &["limits", "max_queued_messages"],
        uint(usize_u64(l.max_queued_messages)),
    );
    set(&["limits", "client_rate"], uint(u64::from(l.client_rate)));
    set(&["limits", "client_burst"], uint(u64::from(l.client_burst)));
    set(&["log", "level"], text(DEFAULT_LOG_LEVEL));
    b
}

/// The development sandbox: any Nextcloud (also over http) with the common secret.
pub fn dev_layer() -> LayerBuilder {
    let origin = "dev sandbox (no configuration given)";
    let mut b = LayerBuilder::new(LayerKind::DevSandbox, origin);
    b.set(&["backend", "allowall"], boolean(true), origin);
    b.set(&["backend", "allowhttp"], boolean(true), origin);
    // Calls work in the sandbox too: the SFU on a loopback port of its own choosing.
    b.set(&["sfu", "listen"], text("127.0.0.1:0"), origin);
    b
}

/// Random secrets: session keys always (a restart ends all sessions, as in AIO), the
/// common backend secret and the internal-client secret only in the dev sandbox. Layers
/// above replace any of them.
pub fn generated_layer(dev: bool) -> LayerBuilder {
    let mut b = LayerBuilder::new(LayerKind::Generated, "generated");
    b.set(&["sessions", "hashkey"], text(random_hex(64)), "generated");
    b.set(&["sessions", "blockkey"], text(random_hex(32)), "generated");
    if dev {
        b.set(&["backend", "secret"], text(random_hex(32)), "generated");
        b.set(
            &["clients", "internalsecret"],
            text(random_hex(32)),
            "generated",
        );
    }
    b
}
