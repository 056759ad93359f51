//! The worker's timers: when it must wake next, str0m's timeouts, ICE timeouts, idle
//! media, REMB bitrate caps for publishers and RTCP sender reports for subscribers.

use super::*;

/// How often a publisher is reminded of its bitrate cap.
const REMB_INTERVAL: Duration = Duration::from_secs(2);

/// How often the streams the SFU sends a subscriber get an RTCP sender report (str0m's
/// interval for video; the receiver maps RTP time to wall-clock time with them, for
/// lip sync).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A publisher track without a frame for this long is reported as not receiving (Janus'
/// `no_media_timer` is one second).
const MEDIA_IDLE: Duration = Duration::from_secs(1);

impl Worker {
    pub(super) fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut d = now + Duration::from_secs(1);
        for p in self.peers.values() {
            d = d.min(p.next_timeout);
            if matches!(p.role, Role::Subscriber(_)) {
                d = d.min(p.next_sr);
            }
        }
        for p in &self.pending {
            d = d.min(p.deadline);
        }
        for c in &self.closing {
            d = d.min(c.next);
        }
        d
    }

    pub(super) fn on_timers(&mut self, now: Instant, net: &Net) {
        let mut due = Vec::new();
        let mut idle = Vec::new();
        for (id, p) in &self.peers {
            if now.saturating_duration_since(p.last_rx) > self.cfg.ice_timeout {
                idle.push(*id);
            } else if p.next_timeout <= now {
                due.push(*id);
            }
        }
        for id in idle {
            self.close_peer(id, "ICE timeout: nothing received", true);
        }
        self.notice_idle_media(now);
        due.extend(self.send_rembs(now));
        for id in &due {
            if let Some(p) = self.peers.get_mut(id)
                && let Err(e) = p.handle_input(Input::Timeout(now))
            {
                self.fail_peer(*id, e);
            }
        }
        if !due.is_empty() {
            self.drive_ids(&mut due, net);
        }
        self.send_sender_reports(now, net);
        let (expired, waiting): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|p| p.deadline <= now);
        self.pending = waiting;
        for p in expired {
            let _ = p.reply.send(error(
                "client_not_found",
                format!(
                    "No MCU client found to send message to: {} has no {} stream on this SFU \
                     (waited {:?})",
                    p.publisher,
                    p.stream.as_str(),
                    self.cfg.publisher_wait
                ),
            ));
        }
    }

    /// RTCP sender reports for the streams the SFU sends subscribers, every
    /// [`SENDER_REPORT_INTERVAL`]: one compound packet per subscriber.
    fn send_sender_reports(&mut self, now: Instant, net: &Net) {
        let clock = self.clock;
        let mut plain = std::mem::take(&mut self.scratch.rtcp);
        let mut sealed = std::mem::take(&mut self.scratch.srtcp);
        let mut failed = Vec::new();
        for p in self.peers.values_mut() {
            if p.next_sr > now {
                continue;
            }
            p.next_sr = now + SENDER_REPORT_INTERVAL;
            let sent = caught(|| {
                let Some((srtp, s, (proto, from, to))) = p.media_out(&self.crypto) else {
                    return;
                };
                plain.clear();
                for e in s.tracks.iter().filter_map(|t| t.egress.as_ref()) {
                    e.sender_report(&clock, now, &mut plain);
                }
                if plain.is_empty() {
                    return;
                }
                if srtp.protect_rtcp(&plain, &mut sealed).is_ok()
                    && let Ok(n) = net.send_to(proto, from, to, &sealed)
                {
                    self.metrics.sent(proto, n);
                }
            });
            if sent.is_err() {
                failed.push(p.id);
            }
        }
        for id in failed {
            self.fail_peer(id, PeerFailure::Panic);
        }
        self.scratch.rtcp = plain;
        self.scratch.srtcp = sealed;
    }

    /// Cap publishers at their bitrate with a REMB every couple of seconds (Janus does the
    /// same); returns the publishers that have feedback to send.
    fn send_rembs(&mut self, now: Instant) -> Vec<PeerId> {
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for p in self.peers.values_mut() {
            if p.max_bitrate == 0 || !p.connected || now < p.next_remb {
                continue;
            }
            p.next_remb = now + REMB_INTERVAL;
            let Role::Publisher(state) = &p.role else {
                continue;
            };
            let bitrate = Bitrate::bps(p.max_bitrate);
            // On the best layer being sent (an announced layer may never get media).
            let video: Vec<(Mid, Option<Rid>)> = state
                .tracks
                .iter()
                .filter(|t| t.kind == MediaKind::Video)
                .map(|t| (t.mid, t.choose_layer(None, now)))
                .collect();
            let r = guarded(&mut p.rtc, |rtc| {
                let mut api = rtc.direct_api();
                for (mid, rid) in video {
                    if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                        rx.request_remb(bitrate);
                    }
                }
            });
            match r {
                Ok(()) => sent.push(p.id),
                Err(_) => failed.push(p.id),
            }
        }
        for id in failed {
            self.fail_peer(id, PeerFailure::Panic);
        }
        sent
    }

    /// Publisher tracks that stopped delivering frames: Janus' `media` `receiving: false`.
    fn notice_idle_media(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            let Role::Publisher(state) = &mut p.role else {
                continue;
            };
            for t in &mut state.tracks {
                let idle = t
                    .last_frame
                    .is_some_and(|at| now.saturating_duration_since(at) > MEDIA_IDLE);
                if t.receiving && idle {
                    t.receiving = false;
                    debug!(peer = p.id, mid = %t.mid, "no media for a while");
                    let _ = self.events.send(McuEvent::MediaReceiving {
                        session: p.session.clone(),
                        stream: p.stream,
                        kind: forward::mcu_kind(t.kind),
                        receiving: false,
                    });
                }
            }
        }
    }
}
