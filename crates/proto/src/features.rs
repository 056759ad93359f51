//! Feature ids advertised to clients (welcome, hello `server.features`) and to Nextcloud
//! (the `X-Spreed-Signaling-Features` header). We advertise exactly what is implemented.

/// Features of the signaling core for regular clients, sorted.
pub const CLIENT_FEATURES: &[&str] = &[
    "audio-video-permissions",
    "chat-relay",
    "dialout",
    "federation",
    "hello-v2",
    "incall-all",
    "join-features",
    "recipient-call",
    "serverinfo",
    "switchto",
    "transient-data",
    "transient-sessiondata",
    "welcome",
];

/// Features for internal clients: `virtual-sessions` instead of `audio-video-permissions`.
pub const INTERNAL_FEATURES: &[&str] = &[
    "chat-relay",
    "dialout",
    "federation",
    "hello-v2",
    "incall-all",
    "join-features",
    "recipient-call",
    "serverinfo",
    "switchto",
    "transient-data",
    "transient-sessiondata",
    "virtual-sessions",
    "welcome",
];

/// Features that only exist while a media plane (SFU) is up.
pub const MCU_FEATURES: &[&str] = &["mcu", "simulcast", "update-sdp"];

/// Features Talk's PHP requires in every backend reply header (talk-clients §1.9).
pub const TALK_REQUIRED: &[&str] = &[
    "audio-video-permissions",
    "federation",
    "incall-all",
    "hello-v2",
    "switchto",
];

/// Client feature: wants chat comment bodies relayed instead of `refresh`.
pub const CLIENT_CHAT_RELAY: &str = "chat-relay";
/// Client feature: internal client manages its own inCall flags.
pub const CLIENT_INTERNAL_INCALL: &str = "internal-incall";
/// Client feature: an internal client (a SIP bridge) that can place dial-out calls.
pub const CLIENT_START_DIALOUT: &str = "start-dialout";

/// The sorted union of `base` and `extra` (for the welcome frame and MCU features).
pub fn merged(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = base.iter().chain(extra.iter()).copied().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The header value: comma+space separated.
pub fn header_value(features: &[&str]) -> String {
    features.join(", ")
}
