//! The SFU's counters and gauges (lock-free atomics, written by the worker) and their
//! Prometheus text rendering under the `hpb_sfu_` prefix.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub publishers: AtomicI64,
    pub subscribers: AtomicI64,
    pub estimated_bitrate_sum: AtomicI64,
    pub udp_rx_packets: AtomicU64,
    pub udp_rx_bytes: AtomicU64,
    pub udp_tx_packets: AtomicU64,
    pub udp_tx_bytes: AtomicU64,
    pub udp_ignored_packets: AtomicU64,
    pub tcp_rx_frames: AtomicU64,
    pub tcp_tx_frames: AtomicU64,
    pub tcp_tx_bytes: AtomicU64,
    pub tcp_ignored_frames: AtomicU64,
    pub turn_rx_packets: AtomicU64,
    pub turn_tx_packets: AtomicU64,
    pub turn_dropped_packets: AtomicU64,
    pub media_forwarded: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub audio_frames_forwarded: AtomicU64,
    pub audio_bytes_forwarded: AtomicU64,
    pub video_frames_forwarded: AtomicU64,
    pub video_bytes_forwarded: AtomicU64,
    pub layer_switches: AtomicU64,
    pub silent_audio_thinned: AtomicU64,
    pub slow_links: AtomicU64,
    pub channel_messages_forwarded: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub nacks_received: AtomicU64,
    pub nacks_sent: AtomicU64,
    pub retransmitted_packets: AtomicU64,
    pub peer_panics: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// One packet of `len` bytes sent on `proto`.
    pub fn sent(&self, proto: str0m::net::Protocol, len: usize) {
        let (packets, bytes) = match proto {
            str0m::net::Protocol::Tcp => (&self.tcp_tx_frames, &self.tcp_tx_bytes),
            _ => (&self.udp_tx_packets, &self.udp_tx_bytes),
        };
        inc(packets, 1);
        inc(bytes, len as u64);
    }

    /// One packet received on `proto` that no peer took.
    pub fn ignored(&self, proto: str0m::net::Protocol) {
        match proto {
            str0m::net::Protocol::Tcp => inc(&self.tcp_ignored_frames, 1),
            _ => inc(&self.udp_ignored_packets, 1),
        }
    }
}

pub(crate) fn gauge(g: &AtomicI64, d: i64) {
    g.fetch_add(d, Ordering::Relaxed);
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges: [(&str, &str, &AtomicI64); 3] = [
            (
                "hpb_sfu_publishers",
                "Published streams on this SFU.",
                &self.publishers,
            ),
            (
                "hpb_sfu_subscribers",
                "Subscriptions on this SFU.",
                &self.subscribers,
            ),
            (
                "hpb_sfu_subscriber_estimated_bitrate_bps_sum",
                "Sum over subscriptions of the bitrate their link is estimated to take (TWCC or REMB; divide by hpb_sfu_subscribers for the mean).",
                &self.estimated_bitrate_sum,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let counters: [(&str, &str, &AtomicU64); 27] = [
            (
                "hpb_sfu_udp_received_packets_total",
                "UDP datagrams received.",
                &self.udp_rx_packets,
            ),
            (
                "hpb_sfu_udp_received_bytes_total",
                "UDP bytes received.",
                &self.udp_rx_bytes,
            ),
            (
                "hpb_sfu_udp_sent_packets_total",
                "UDP datagrams sent.",
                &self.udp_tx_packets,
            ),
            (
                "hpb_sfu_udp_sent_bytes_total",
                "UDP bytes sent.",
                &self.udp_tx_bytes,
            ),
            (
                "hpb_sfu_udp_ignored_packets_total",
                "UDP datagrams no peer accepted (unknown sender, not STUN for a known ufrag).",
                &self.udp_ignored_packets,
            ),
            (
                "hpb_sfu_tcp_received_frames_total",
                "ICE-TCP frames (RFC 4571) received.",
                &self.tcp_rx_frames,
            ),
            (
                "hpb_sfu_tcp_sent_frames_total",
                "ICE-TCP frames (RFC 4571) sent.",
                &self.tcp_tx_frames,
            ),
            (
                "hpb_sfu_tcp_sent_bytes_total",
                "ICE-TCP bytes sent (without the 2-byte frame length).",
                &self.tcp_tx_bytes,
            ),
            (
                "hpb_sfu_tcp_ignored_frames_total",
                "ICE-TCP frames no peer accepted (unknown sender, not STUN for a known ufrag).",
                &self.tcp_ignored_frames,
            ),
            (
                "hpb_sfu_turn_in_process_received_packets_total",
                "Datagrams the TURN server of this process relayed to the SFU without a socket (also in hpb_sfu_udp_received_packets_total).",
                &self.turn_rx_packets,
            ),
            (
                "hpb_sfu_turn_in_process_sent_packets_total",
                "Datagrams the SFU handed to the TURN server of this process for a relayed client without a socket (also in hpb_sfu_udp_sent_packets_total).",
                &self.turn_tx_packets,
            ),
            (
                "hpb_sfu_turn_in_process_dropped_packets_total",
                "Datagrams from the TURN server of this process dropped because the SFU worker was behind.",
                &self.turn_dropped_packets,
            ),
            (
                "hpb_sfu_media_forwarded_total",
                "Media frames written to subscribers.",
                &self.media_forwarded,
            ),
            (
                "hpb_sfu_packets_forwarded_total",
                "RTP packets sent to subscribers (retransmissions not counted).",
                &self.packets_forwarded,
            ),
            (
                "hpb_sfu_audio_frames_forwarded_total",
                "Audio frames written to subscribers.",
                &self.audio_frames_forwarded,
            ),
            (
                "hpb_sfu_audio_bytes_forwarded_total",
                "Audio payload bytes written to subscribers.",
                &self.audio_bytes_forwarded,
            ),
            (
                "hpb_sfu_video_frames_forwarded_total",
                "Video frames written to subscribers.",
                &self.video_frames_forwarded,
            ),
            (
                "hpb_sfu_video_bytes_forwarded_total",
                "Video payload bytes written to subscribers.",
                &self.video_bytes_forwarded,
            ),
            (
                "hpb_sfu_layer_switches_total",
                "Simulcast layer switches of subscriber tracks (on request or following the subscriber's bandwidth estimate).",
                &self.layer_switches,
            ),
            (
                "hpb_sfu_silent_audio_thinned_total",
                "Digitally silent audio packets of publishers not forwarded ([sfu] thin_silent_audio).",
                &self.silent_audio_thinned,
            ),
            (
                "hpb_sfu_slow_links_total",
                "Connections reported as slow (Janus' slowlink: many NACKs in a second).",
                &self.slow_links,
            ),
            (
                "hpb_sfu_channel_messages_forwarded_total",
                "Data channel messages relayed to subscribers.",
                &self.channel_messages_forwarded,
            ),
            (
                "hpb_sfu_keyframe_requests_total",
                "Keyframe requests sent to publishers.",
                &self.keyframe_requests,
            ),
            (
                "hpb_sfu_nacks_received_total",
                "RTCP NACK messages received from subscribers (counted from str0m's stats, so up to a second late).",
                &self.nacks_received,
            ),
            (
                "hpb_sfu_nacks_sent_total",
                "RTCP NACK messages sent to publishers for packets lost on their way in.",
                &self.nacks_sent,
            ),
            (
                "hpb_sfu_retransmitted_packets_total",
                "RTP packets retransmitted to subscribers on their RTX stream (RFC 4588) in answer to NACKs.",
                &self.retransmitted_packets,
            ),
            (
                "hpb_sfu_peer_panics_total",
                "Peers closed because str0m panicked.",
                &self.peer_panics,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        gauge(&m.publishers, 2);
        inc(&m.udp_rx_packets, 5);
        let text = m.render();
        assert!(
            text.contains("# TYPE hpb_sfu_publishers gauge\nhpb_sfu_publishers 2\n"),
            "{text}"
        );
        assert!(
            text.contains("hpb_sfu_udp_received_packets_total 5\n"),
            "{text}"
        );
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.starts_with("hpb_sfu_"))
        );
        for name in [
            "hpb_sfu_nacks_received_total",
            "hpb_sfu_nacks_sent_total",
            "hpb_sfu_retransmitted_packets_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} counter\n{name} 0\n")),
                "{text}"
            );
        }
    }
}
