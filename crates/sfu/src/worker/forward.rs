//! The worker's reactions to str0m events: publisher tracks, connection state, and the
//! forwarding of media frames, data channel messages and keyframe requests.

use str0m::format::Codec;
use str0m::rtp::RtpPacket;
use str0m::rtp::rtcp::Nack;

use super::*;
use crate::descriptor::PayloadInfo;
use crate::egress::{Incoming, Meta};

impl Worker {
    /// Act on events; `dirty` gets the peers whose Rtc got new input and needs polling.
    pub(super) fn on_events(
        &mut self,
        events: impl Iterator<Item = (PeerId, Ev)>,
        dirty: &mut Vec<PeerId>,
        net: &Net,
    ) {
        for (id, ev) in events {
            match ev {
                Ev::Connected => self.on_connected(id, dirty),
                Ev::MediaAdded { mid, kind } => self.on_media_added(id, mid, kind, &[], dirty),
                Ev::Rtp(pkt) => {
                    if let Err(e) = caught(|| self.forward_rtp(id, pkt, dirty, net)) {
                        self.fail_peer(id, e);
                    }
                }
                Ev::Nack(nack) => {
                    if let Some(slow) = self.on_nack(id, &nack, net) {
                        self.on_events(std::iter::once((id, slow)), dirty, net);
                    }
                }
                Ev::KeyframeRequest(req) => {
                    let Some(sub) = self.peers.get_mut(&id) else {
                        continue;
                    };
                    let Some(s) = sub.subscriber_state() else {
                        continue;
                    };
                    let pub_id = s.publisher;
                    let Some((source, layer)) = s
                        .tracks
                        .iter()
                        .find(|t| t.mid == req.mid)
                        .map(|t| (t.source, t.layer))
                    else {
                        continue;
                    };
                    // The layer the viewer decodes, or (none yet) the one it is to get.
                    let substream = self.selections.get(&id).and_then(|s| s.substream);
                    let rid = layer.or_else(|| self.layer_for(pub_id, source, substream));
                    self.request_keyframe(pub_id, source, rid, req.kind, dirty);
                }
                Ev::ChannelOpen(cid, label) => {
                    if let Some(s) = self.peers.get_mut(&id).and_then(|p| p.subscriber_state())
                        && (label == SUBSCRIBER_CHANNEL || s.channel == Some(cid))
                    {
                        s.channel = Some(cid);
                        s.channel_open = true;
                    }
                }
                Ev::ChannelData(d) => self.forward_channel(id, &d.data, d.binary, dirty),
                Ev::SlowLink { uplink, nacks } => {
                    let Some(p) = self.peers.get(&id) else {
                        continue;
                    };
                    inc(&self.metrics.slow_links, 1);
                    info!(peer = id, session = %p.session, publisher = %p.publisher, uplink, nacks, "slow link: many packets lost");
                    let _ = self.events.send(McuEvent::SlowLink {
                        session: p.session.clone(),
                        publisher: p.publisher.clone(),
                        stream: p.stream,
                        uplink,
                        nacks,
                    });
                }
            }
        }
    }

    pub(super) fn on_connected(&mut self, id: PeerId, dirty: &mut Vec<PeerId>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        info!(peer = id, session = %peer.session, publisher = %peer.publisher, stream = peer.stream.as_str(), "peer connected");
        match &mut peer.role {
            Role::Publisher(p) => {
                if !p.up_announced {
                    p.up_announced = true;
                    let _ = self.events.send(McuEvent::PublisherUp {
                        session: peer.session.clone(),
                        stream: peer.stream,
                    });
                }
            }
            Role::Subscriber(s) => {
                // A new viewer needs a keyframe to start decoding.
                let pub_id = s.publisher;
                let sources: Vec<Mid> = s.tracks.iter().map(|t| t.source).collect();
                let substream = self.selections.get(&id).and_then(|s| s.substream);
                for mid in sources {
                    let rid = self.layer_for(pub_id, mid, substream);
                    self.request_keyframe(pub_id, mid, rid, KeyframeRequestKind::Pli, dirty);
                }
            }
        }
    }

    /// A publisher track became known; existing subscribers get it by renegotiation.
    pub(super) fn on_media_added(
        &mut self,
        id: PeerId,
        mid: Mid,
        kind: MediaKind,
        rids: &[Rid],
        dirty: &mut Vec<PeerId>,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Role::Publisher(p) = &mut peer.role else {
            return;
        };
        let is_new = !p.tracks.iter().any(|t| t.mid == mid);
        if is_new {
            p.tracks.push(TrackIn::new(mid, kind, rids.to_vec()));
        }
        let mut params = Vec::new();
        for t in &p.tracks {
            if let Some(media) = peer.rtc.media(t.mid) {
                let pts = media.remote_pts();
                params.extend(
                    peer.rtc
                        .codec_config()
                        .params()
                        .iter()
                        .filter(|p| pts.contains(&p.pt()))
                        .copied(),
                );
            }
        }
        debug!(
            peer = id,
            ?mid,
            ?kind,
            params = params.len(),
            "publisher track"
        );
        p.params = params;
        if !is_new || p.subscribers.is_empty() {
            return;
        }
        for sub_id in p.subscribers.clone() {
            self.update_subscriber(sub_id, dirty);
        }
    }

    /// Offer a subscriber the publisher tracks it lacks (`update-sdp`), if it can take an
    /// offer now; otherwise this runs again when its answer arrives.
    pub(super) fn update_subscriber(&mut self, sub_id: PeerId, dirty: &mut Vec<PeerId>) {
        let Some(Role::Subscriber(s)) = self.peers.get(&sub_id).map(|p| &p.role) else {
            return;
        };
        let Some(Role::Publisher(p)) = self.peers.get(&s.publisher).map(|p| &p.role) else {
            return;
        };
        let sources: Vec<(Mid, MediaKind)> = p.tracks.iter().map(|t| (t.mid, t.kind)).collect();
        let (reply, changed) = self.renegotiate(sub_id, &sources);
        let (McuReply::Offer { sdp, sid }, true) = (reply, changed) else {
            return;
        };
        dirty.push(sub_id);
        if let Some(sub) = self.peers.get(&sub_id) {
            let _ = self.events.send(McuEvent::Offer {
                subscriber: sub.session.clone(),
                publisher: sub.publisher.clone(),
                stream: sub.stream,
                sid,
                sdp,
            });
        }
    }

    /// Forward one RTP packet of a publisher to its subscribers. Per subscriber video track
    /// one simulcast layer goes out: the best one being sent that the selection allows
    /// ([`TrackIn::choose_layer`]). Whether a frame goes to a viewer is decided at its first
    /// packet (its layer, its temporal layer, the viewer's estimate) and its other packets
    /// follow. A switch waits for a keyframe of the new layer (asked for while waiting) and
    /// continues the viewer's sequence numbers and timeline. The packet is sent by the SFU
    /// itself ([`crate::egress`]), encrypted once per viewer straight into the send buffer.
    pub(super) fn forward_rtp(
        &mut self,
        pub_id: PeerId,
        pkt: RtpPacket,
        dirty: &mut Vec<PeerId>,
        net: &Net,
    ) {
        let interval = self.cfg.keyframe_interval;
        let now = Instant::now();
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        let Peer {
            rtc,
            role,
            session,
            stream,
            ..
        } = publisher;
        let Role::Publisher(p) = role else {
            return;
        };
        let ssrc = *pkt.header.ssrc;
        let (mid, rid) = match p.ssrcs.iter().find(|(s, _, _)| *s == ssrc) {
            Some((_, m, r)) => (*m, *r),
            None => {
                let found = guarded(rtc, |rtc| {
                    rtc.direct_api()
                        .stream_rx(&pkt.header.ssrc)
                        .map(|s| (s.mid(), s.rid()))
                });
                let Ok(Some((m, r))) = found else {
                    return;
                };
                p.ssrcs.push((ssrc, m, r));
                (m, r)
            }
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let pt = *pkt.header.payload_type;
        let Some((codec, clock_hz)) = track.codec_of(pt, &p.params) else {
            return;
        };
        let arrival = pkt.timestamp;
        let bytes = pkt.payload.len();
        if let Some(rid) = rid {
            track.saw_layer(rid, now);
            track.rates.add(rid, bytes, now);
        }
        track.last_frame = Some(now);
        if !track.receiving {
            track.receiving = true;
            let _ = self.events.send(McuEvent::MediaReceiving {
                session: session.clone(),
                stream: *stream,
                kind: mcu_kind(track.kind),
                receiving: true,
            });
        }
        let kind = track.kind;
        let ext = &pkt.header.ext_vals;
        let thinned = kind == MediaKind::Audio
            && self.cfg.thin_silent_audio
            && !track.silence.forward(ext.audio_level, arrival);
        if thinned {
            inc(&self.metrics.silent_audio_thinned, 1);
        }
        if thinned || pkt.payload.is_empty() {
            // Not sent (left-out silence, padding only): the viewers' numbering closes up.
            let subscribers = self.scratch.subscribers(&p.subscribers);
            self.skip_for(&subscribers, mid, ssrc, *pkt.seq_no);
            self.scratch.subscribers = subscribers;
            return;
        }
        let info = if kind == MediaKind::Video {
            crate::descriptor::parse(codec, &pkt.payload).unwrap_or_else(|e| {
                debug!(peer = pub_id, error = %e, "forwarding a packet whose payload descriptor does not parse");
                PayloadInfo::default()
            })
        } else {
            PayloadInfo {
                keyframe: true,
                ..Default::default()
            }
        };
        let meta = Meta {
            marker: pkt.header.marker,
            audio_level: ext
                .audio_level
                .map(|l| (ext.voice_activity.unwrap_or(false), l.unsigned_abs())),
            video_orientation: ext.video_orientation.map(|o| o as u8),
        };
        let subscribers = self.scratch.subscribers(&p.subscribers);
        // Layers some viewer waits for a keyframe of (to start or switch).
        let mut want_keyframe: Vec<Option<Rid>> = Vec::new();
        let ts = pkt.header.timestamp;
        let seq = *pkt.seq_no;
        let max = crate::egress::Egress::max_len(bytes);
        // Viewers whose sending panicked: closed after the loop (only they).
        let mut failed: Vec<PeerId> = Vec::new();
        for &sub_id in &subscribers {
            let decided = match self.peers.get(&sub_id) {
                Some(Peer {
                    role: Role::Subscriber(s),
                    connected: true,
                    ..
                }) => s
                    .tracks
                    .iter()
                    .find(|t| t.source == mid)
                    .map(|t| t.decided(rid, ts)),
                _ => continue,
            };
            let Some(decided) = decided else {
                continue;
            };
            let forward = match decided {
                Some(d) => d,
                None => self.decide_frame(
                    pub_id,
                    sub_id,
                    (mid, rid, ts),
                    (kind, codec),
                    &info,
                    now,
                    &mut want_keyframe,
                ),
            };
            let Some(sub) = self.peers.get_mut(&sub_id) else {
                continue;
            };
            let estimate = sub.estimate;
            let Some((srtp, s, path)) = sub.media_out(&self.crypto) else {
                continue;
            };
            let Some(out) = s.tracks.iter_mut().find(|t| t.source == mid) else {
                continue;
            };
            let Some(egress) = out.egress.as_mut() else {
                continue;
            };
            if !forward {
                if out.ssrc_in == Some(ssrc) {
                    egress.seq.skip(seq);
                }
                continue;
            }
            if out.ssrc_in != Some(ssrc) {
                // A new layer (or the first packet, or a restarted publisher stream).
                if out.ssrc_in.is_some() {
                    out.timeline.switch(ts, arrival, clock_hz);
                    egress.switched_layer();
                }
                egress.seq.switch(seq);
                out.ssrc_in = Some(ssrc);
                if out.layer != rid {
                    debug!(peer = sub_id, mid = %out.mid, from = ?out.layer, to = ?rid, budget = ?estimate.video_budget(), "simulcast layer switch");
                    if out.layer.is_some() {
                        inc(&self.metrics.layer_switches, 1);
                    }
                    out.layer = rid;
                }
            }
            let ts_out = out.timeline.map(ts, arrival);
            let clock = self.clock;
            let plain = &mut self.scratch.plain;
            let incoming = Incoming {
                seq,
                pt,
                ts: ts_out,
                meta,
                payload: &pkt.payload,
                vp8: info.vp8.as_ref(),
                arrival,
            };
            let sent = caught(|| {
                net.send_built(path.0, path.1, path.2, max, |buf| {
                    egress.forward(srtp, &clock, buf, plain, &incoming, now)
                })
            });
            match sent {
                Ok(Ok(Some(n))) => self.metrics.sent(path.0, n),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => debug!(peer = sub_id, error = %e, "send failed"),
                Err(_) => {
                    failed.push(sub_id);
                    continue;
                }
            }
            inc(&self.metrics.packets_forwarded, 1);
            match kind {
                MediaKind::Audio => inc(&self.metrics.audio_bytes_forwarded, bytes as u64),
                MediaKind::Video => inc(&self.metrics.video_bytes_forwarded, bytes as u64),
            }
        }
        self.scratch.subscribers = subscribers;
        for id in failed {
            self.fail_peer(id, PeerFailure::Panic);
        }
        if kind == MediaKind::Video {
            for rid in want_keyframe {
                self.request_keyframe_at(pub_id, mid, rid, interval, now, dirty);
            }
        }
    }

    /// Publisher packet `seq` of incoming SSRC `ssrc` (track `mid`) is not sent to
    /// `subscribers`: the outgoing sequence numbers of those fed from that SSRC close up.
    fn skip_for(&mut self, subscribers: &[PeerId], mid: Mid, ssrc: u32, seq: u64) {
        for id in subscribers {
            let Some(Role::Subscriber(s)) = self.peers.get_mut(id).map(|p| &mut p.role) else {
                continue;
            };
            let Some(out) = s.tracks.iter_mut().find(|t| t.source == mid) else {
                continue;
            };
            if let (Some(e), true) = (out.egress.as_mut(), out.ssrc_in == Some(ssrc)) {
                e.seq.skip(seq);
            }
        }
    }

    /// Whether the frame (layer `rid`, timestamp `ts`) of publisher track `mid` goes to
    /// subscriber `sub_id`, decided at its first packet and remembered for the others: the
    /// layer its selection and estimate allow (a switch waits for a keyframe of it), the
    /// temporal layers selected, audio or video turned off.
    #[allow(clippy::too_many_arguments)]
    fn decide_frame(
        &mut self,
        pub_id: PeerId,
        sub_id: PeerId,
        (mid, rid, ts): (Mid, Option<Rid>, u32),
        (kind, codec): (MediaKind, Codec),
        info: &PayloadInfo,
        now: Instant,
        want_keyframe: &mut Vec<Option<Rid>>,
    ) -> bool {
        let selection = self.selections.get(&sub_id).copied().unwrap_or_default();
        if kind == MediaKind::Audio {
            // Every audio packet is a frame of its own, and only the selection decides.
            let forward = selection.audio != Some(false);
            if forward {
                inc(&self.metrics.media_forwarded, 1);
                inc(&self.metrics.audio_frames_forwarded, 1);
            }
            return forward;
        }
        let wanted_kind = selection.video;
        // A codec whose keyframes are not told apart: any frame may start a layer.
        let starts_layer = info.keyframe;
        // The subscriber's estimate and current layer decide among the layers sent.
        let (estimate, mut cap, current) = match self.peers.get(&sub_id) {
            Some(Peer {
                role: Role::Subscriber(s),
                estimate,
                ..
            }) => {
                let out = s.tracks.iter().find(|t| t.source == mid);
                (
                    *estimate,
                    out.map(|t| t.cap).unwrap_or_default(),
                    out.and_then(|t| t.layer),
                )
            }
            _ => (Default::default(), Default::default(), None),
        };
        let target = match (rid, self.peers.get(&pub_id)) {
            (Some(_), Some(pp)) => match &pp.role {
                Role::Publisher(p) => p.tracks.iter().find(|t| t.mid == mid).and_then(|t| {
                    t.choose_layer_within(selection.substream, now, &estimate, &mut cap, current)
                }),
                Role::Subscriber(_) => None,
            },
            _ => None,
        };
        let Some(Role::Subscriber(s)) = self.peers.get_mut(&sub_id).map(|p| &mut p.role) else {
            return false;
        };
        let Some(out) = s.tracks.iter_mut().find(|t| t.source == mid) else {
            return false;
        };
        out.cap = cap;
        let forward = (|| {
            if wanted_kind == Some(false) {
                return false;
            }
            if rid.is_some() {
                if target != out.layer && !want_keyframe.contains(&target) {
                    want_keyframe.push(target);
                }
                if rid != out.layer && (rid != target || !starts_layer) {
                    return false;
                }
            }
            // Temporal layers above the selection are left out.
            if let Some((layer, sync)) = info.temporal {
                let before = out.temporal;
                if !crate::temporal::admit(
                    &mut out.temporal,
                    selection.temporal,
                    layer,
                    sync,
                    starts_layer,
                ) {
                    if selection.temporal.is_none_or(|t| t > before)
                        && crate::temporal::up_needs_keyframe(codec)
                        && !want_keyframe.contains(&rid)
                    {
                        want_keyframe.push(rid);
                    }
                    return false;
                }
            }
            if out.needs_keyframe {
                if starts_layer {
                    out.needs_keyframe = false;
                } else if !want_keyframe.contains(&rid) {
                    want_keyframe.push(rid);
                }
            }
            true
        })();
        out.decide(rid, ts, forward);
        if forward {
            inc(&self.metrics.media_forwarded, 1);
            inc(&self.metrics.video_frames_forwarded, 1);
        }
        forward
    }

    /// A subscriber's NACK: each packet still kept is retransmitted on the stream's RTX SSRC
    /// (RFC 4588). Returns a slow-link report when the subscriber NACKs many packets.
    fn on_nack(&mut self, sub_id: PeerId, nack: &Nack, net: &Net) -> Option<Ev> {
        let now = Instant::now();
        let sub = self.peers.get_mut(&sub_id)?;
        let seqs = || {
            nack.reports.iter().flat_map(|e| {
                std::iter::once(e.pid).chain(
                    (0..16u16)
                        .filter(move |b| e.blp & (1 << b) != 0)
                        .map(move |b| e.pid.wrapping_add(b + 1)),
                )
            })
        };
        let count = seqs().count() as u64;
        inc(&self.metrics.nacks_received, count);
        let slow = sub.count_nacks(count, now);
        let Some((srtp, s, path)) = sub.media_out(&self.crypto) else {
            return slow;
        };
        let ssrc = *nack.ssrc;
        let Some(egress) = s
            .tracks
            .iter_mut()
            .filter_map(|t| t.egress.as_mut())
            .find(|e| e.ssrc == ssrc)
        else {
            return slow;
        };
        let plain = &mut self.scratch.plain;
        let resent = caught(|| {
            for seq in seqs() {
                let Some(len) = egress.resendable(seq, now) else {
                    continue;
                };
                let max = crate::egress::Egress::max_len(len);
                let sent = net.send_built(path.0, path.1, path.2, max, |buf| {
                    egress.resend(srtp, &self.clock, buf, plain, seq, now)
                });
                if let Ok(Some(n)) = sent {
                    self.metrics.sent(path.0, n);
                    inc(&self.metrics.retransmitted_packets, 1);
                }
            }
        });
        if let Err(e) = resent {
            self.fail_peer(sub_id, e);
            return None;
        }
        slow
    }

    pub(super) fn forward_channel(
        &mut self,
        pub_id: PeerId,
        data: &[u8],
        binary: bool,
        dirty: &mut Vec<PeerId>,
    ) {
        let Some(Role::Publisher(p)) = self.peers.get(&pub_id).map(|p| &p.role) else {
            return;
        };
        let subscribers = self.scratch.subscribers(&p.subscribers);
        for &sub_id in &subscribers {
            let Some(sub) = self.peers.get_mut(&sub_id) else {
                continue;
            };
            let Role::Subscriber(s) = &sub.role else {
                continue;
            };
            let (Some(cid), true) = (s.channel, s.channel_open) else {
                continue;
            };
            let r = guarded(&mut sub.rtc, |rtc| {
                rtc.channel(cid).map(|mut c| c.write(binary, data))
            });
            match r {
                Ok(Some(Ok(_))) => {
                    inc(&self.metrics.channel_messages_forwarded, 1);
                    dirty.push(sub_id);
                }
                Ok(Some(Err(e))) => debug!(peer = sub_id, error = %e, "channel write failed"),
                Ok(None) => {}
                Err(e) => self.fail_peer(sub_id, e),
            }
        }
        self.scratch.subscribers = subscribers;
    }

    /// The simulcast layer a viewer wanting `substream` of publisher track `mid` gets now.
    pub(super) fn layer_for(&self, pub_id: PeerId, mid: Mid, substream: Option<u8>) -> Option<Rid> {
        let Some(Role::Publisher(p)) = self.peers.get(&pub_id).map(|p| &p.role) else {
            return None;
        };
        let t = p.tracks.iter().find(|t| t.mid == mid)?;
        t.choose_layer(substream, Instant::now())
    }

    /// Ask a publisher for a keyframe on one layer of a track (`rid`; `None` without
    /// simulcast), at most once per `keyframe_interval` per layer.
    pub(super) fn request_keyframe(
        &mut self,
        pub_id: PeerId,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        dirty: &mut Vec<PeerId>,
    ) {
        let interval = self.cfg.keyframe_interval;
        self.request_keyframe_with(pub_id, mid, rid, kind, interval, Instant::now(), dirty);
    }

    fn request_keyframe_at(
        &mut self,
        pub_id: PeerId,
        mid: Mid,
        rid: Option<Rid>,
        interval: Duration,
        now: Instant,
        dirty: &mut Vec<PeerId>,
    ) {
        let pli = KeyframeRequestKind::Pli;
        self.request_keyframe_with(pub_id, mid, rid, pli, interval, now, dirty);
    }

    #[allow(clippy::too_many_arguments)]
    fn request_keyframe_with(
        &mut self,
        pub_id: PeerId,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        interval: Duration,
        now: Instant,
        dirty: &mut Vec<PeerId>,
    ) {
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        if !publisher.connected {
            return;
        }
        let Role::Publisher(p) = &mut publisher.role else {
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        // A simulcast track takes requests per layer only.
        let rid = rid.or_else(|| track.rids.last().copied());
        if !track.keyframe_request_due(rid, now, interval) {
            return;
        }
        let r = guarded(&mut publisher.rtc, |rtc| {
            rtc.direct_api()
                .stream_rx_by_mid(mid, rid)
                .map(|s| s.request_keyframe(kind))
        });
        match r {
            Ok(Some(())) => {
                inc(&self.metrics.keyframe_requests, 1);
                dirty.push(pub_id);
            }
            Ok(None) => debug!(peer = pub_id, %mid, ?rid, "no stream to ask for a keyframe"),
            Err(e) => self.fail_peer(pub_id, e),
        }
    }
}

pub(super) fn mcu_kind(kind: MediaKind) -> hpb_proto::mcu::MediaKind {
    match kind {
        MediaKind::Audio => hpb_proto::mcu::MediaKind::Audio,
        MediaKind::Video => hpb_proto::mcu::MediaKind::Video,
    }
}
