//! Counters of the TURN server (allocations, permissions, channels, relayed bytes and
//! packets per direction, authentication failures by reason, refused peers), rendered in
//! the Prometheus text format for hpb's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::auth::AuthFailure;

const AUTH_REASONS: [AuthFailure; 8] = [
    AuthFailure::Missing,
    AuthFailure::Incomplete,
    AuthFailure::BadUsername,
    AuthFailure::Expired,
    AuthFailure::BadNonce,
    AuthFailure::StaleNonce,
    AuthFailure::WrongRealm,
    AuthFailure::WrongPassword,
];

#[derive(Default)]
pub struct Metrics {
    pub allocations: AtomicI64,
    pub allocations_total: AtomicU64,
    pub permissions: AtomicI64,
    pub channels: AtomicI64,
    pub bytes_to_peer: AtomicU64,
    pub packets_to_peer: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub packets_to_client: AtomicU64,
    pub refused_peers: AtomicU64,
    pub quota_refusals: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Packets dropped: no permission for the peer, over the bandwidth cap, or unparsable.
    pub dropped_no_permission: AtomicU64,
    pub dropped_bandwidth: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub stun_bindings: AtomicU64,
    /// Packets between allocations and the built-in SFU that skipped the sockets
    /// ([`crate::in_process`]): client data to the SFU, and SFU media to clients.
    pub packets_to_sfu: AtomicU64,
    pub packets_from_sfu: AtomicU64,
    auth_failures: [AtomicU64; 8],
}

/// Relay counters gathered by one thread over its batches of packets and added to
/// [`Metrics`] now and then (every 64 batches or 100 ms, and when the thread goes quiet), so
/// the hot path does not write the counters every thread shares per packet.
#[derive(Default)]
pub struct Tally {
    pub packets_to_peer: u64,
    pub bytes_to_peer: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub dropped_no_permission: u64,
    pub dropped_bandwidth: u64,
    pub packets_to_sfu: u64,
    pub packets_from_sfu: u64,
    batches: u32,
    since: Option<Instant>,
}

impl Tally {
    /// Ends a batch: adds the counts to `m` if they are due.
    pub fn batch_done(&mut self, m: &Metrics) {
        self.batches += 1;
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self.batches >= 64 || now.saturating_duration_since(since) >= FLUSH_EVERY {
            self.flush(m);
            self.since = Some(now);
        }
    }

    /// Adds the counts to `m` and starts over.
    pub fn flush(&mut self, m: &Metrics) {
        let add = |c: &AtomicU64, v: &mut u64| {
            if *v != 0 {
                c.fetch_add(*v, Relaxed);
                *v = 0;
            }
        };
        add(&m.packets_to_peer, &mut self.packets_to_peer);
        add(&m.bytes_to_peer, &mut self.bytes_to_peer);
        add(&m.packets_to_client, &mut self.packets_to_client);
        add(&m.bytes_to_client, &mut self.bytes_to_client);
        add(&m.dropped_no_permission, &mut self.dropped_no_permission);
        add(&m.dropped_bandwidth, &mut self.dropped_bandwidth);
        add(&m.packets_to_sfu, &mut self.packets_to_sfu);
        add(&m.packets_from_sfu, &mut self.packets_from_sfu);
        self.batches = 0;
    }
}

/// A counter family's `direction` labels and their counters.
type PerDirection<'a> = [(&'a str, &'a AtomicU64); 2];

/// The longest a busy thread keeps counts before adding them to [`Metrics`].
const FLUSH_EVERY: Duration = Duration::from_millis(100);

impl Metrics {
    pub fn auth_failure(&self, why: AuthFailure) {
        if let Some(i) = AUTH_REASONS.iter().position(|r| *r == why) {
            self.auth_failures[i].fetch_add(1, Relaxed);
        }
    }

    pub fn auth_failures(&self, why: AuthFailure) -> u64 {
        AUTH_REASONS
            .iter()
            .position(|r| *r == why)
            .map(|i| self.auth_failures[i].load(Relaxed))
            .unwrap_or(0)
    }

    /// The Prometheus exposition of every counter (namespace `hpb_turn`).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut gauge = |name: &str, help: &str, v: i64| {
            let _ = writeln!(
                s,
                "# HELP hpb_turn_{name} {help}\n# TYPE hpb_turn_{name} gauge\nhpb_turn_{name} {v}"
            );
        };
        gauge(
            "allocations",
            "Current TURN allocations.",
            self.allocations.load(Relaxed),
        );
        gauge(
            "permissions",
            "Current permissions over all allocations.",
            self.permissions.load(Relaxed),
        );
        gauge(
            "channels",
            "Current channel bindings over all allocations.",
            self.channels.load(Relaxed),
        );
        let counters = [
            (
                "allocations_total",
                "Allocations created.",
                &self.allocations_total,
            ),
            (
                "stun_bindings_total",
                "STUN Binding requests answered.",
                &self.stun_bindings,
            ),
            (
                "refused_peers_total",
                "Peer addresses refused by the peer policy.",
                &self.refused_peers,
            ),
            (
                "quota_refusals_total",
                "Allocations refused by a quota (486).",
                &self.quota_refusals,
            ),
            (
                "rate_limited_total",
                "Requests ignored after too many failed authentications.",
                &self.rate_limited,
            ),
            (
                "dropped_malformed_total",
                "Packets that were neither STUN nor ChannelData.",
                &self.dropped_malformed,
            ),
            (
                "dropped_no_permission_total",
                "Relayed packets dropped for lack of a permission.",
                &self.dropped_no_permission,
            ),
            (
                "dropped_bandwidth_total",
                "Relayed packets dropped over a bandwidth cap.",
                &self.dropped_bandwidth,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                s,
                "# HELP hpb_turn_{name} {help}\n# TYPE hpb_turn_{name} counter\nhpb_turn_{name} {}",
                c.load(Relaxed)
            );
        }
        let directions: [(&str, &str, PerDirection<'_>); 3] = [
            (
                "relayed_bytes_total",
                "Relayed payload bytes.",
                [
                    ("to_peer", &self.bytes_to_peer),
                    ("to_client", &self.bytes_to_client),
                ],
            ),
            (
                "relayed_packets_total",
                "Relayed packets.",
                [
                    ("to_peer", &self.packets_to_peer),
                    ("to_client", &self.packets_to_client),
                ],
            ),
            (
                "sfu_in_process_packets_total",
                "Relayed packets between allocations and the built-in SFU handed over in-process (no socket).",
                [
                    ("to_sfu", &self.packets_to_sfu),
                    ("from_sfu", &self.packets_from_sfu),
                ],
            ),
        ];
        for (name, help, per_direction) in directions {
            let _ = writeln!(
                s,
                "# HELP hpb_turn_{name} {help}\n# TYPE hpb_turn_{name} counter"
            );
            for (direction, c) in per_direction {
                let _ = writeln!(
                    s,
                    "hpb_turn_{name}{{direction=\"{direction}\"}} {}",
                    c.load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP hpb_turn_auth_failures_total Failed authentications by reason.\n# TYPE hpb_turn_auth_failures_total counter"
        );
        for (i, r) in AUTH_REASONS.iter().enumerate() {
            let _ = writeln!(
                s,
                "hpb_turn_auth_failures_total{{reason=\"{}\"}} {}",
                r.label(),
                self.auth_failures[i].load(Relaxed)
            );
        }
        s
    }
}
