//! The worker's reactions to str0m events: publisher tracks, connection state, and the
//! forwarding of media frames, data channel messages and keyframe requests.

use str0m::format::CodecExtra;
use str0m::media::MediaTime;

use super::*;

impl Worker {
    /// Act on events; `dirty` gets the peers whose Rtc got new input and needs polling.
    pub(super) fn on_events(
        &mut self,
        events: impl Iterator<Item = (PeerId, Ev)>,
        dirty: &mut Vec<PeerId>,
    ) {
        for (id, ev) in events {
            match ev {
                Ev::Connected => self.on_connected(id, dirty),
                Ev::MediaAdded { mid, kind } => self.on_media_added(id, mid, kind, &[], dirty),
                Ev::Media(data) => self.forward_media(id, data, dirty),
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
            if let Ok(Some(w)) = guarded(&mut peer.rtc, |rtc| {
                rtc.writer(t.mid)
                    .map(|w| w.payload_params().copied().collect::<Vec<_>>())
            }) {
                params.extend(w);
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

    /// Forward one frame of a publisher to its subscribers. Per subscriber video track one
    /// simulcast layer goes out: the best one being sent that the selection allows
    /// ([`TrackIn::choose_layer`]). A switch waits for a keyframe of the new layer (asked
    /// for while waiting) and maps its timestamps onto the subscriber's timeline.
    pub(super) fn forward_media(
        &mut self,
        pub_id: PeerId,
        data: MediaData,
        dirty: &mut Vec<PeerId>,
    ) {
        let interval = self.cfg.keyframe_interval;
        let now = Instant::now();
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        let Role::Publisher(p) = &mut publisher.role else {
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == data.mid) else {
            return;
        };
        if let Some(rid) = data.rid {
            track.saw_layer(rid, now);
            track.rates.add(rid, data.data.len(), now);
        }
        track.last_frame = Some(now);
        if !track.receiving {
            track.receiving = true;
            let _ = self.events.send(McuEvent::MediaReceiving {
                session: publisher.session.clone(),
                stream: publisher.stream,
                kind: mcu_kind(track.kind),
                receiving: true,
            });
        }
        let kind = track.kind;
        if kind == MediaKind::Audio
            && self.cfg.thin_silent_audio
            && !track
                .silence
                .forward(data.ext_vals.audio_level, data.network_time)
        {
            inc(&self.metrics.silent_audio_thinned, 1);
            return;
        }
        let subscribers = self.scratch.subscribers(&p.subscribers);
        // Layers some viewer waits for a keyframe of (to start or switch).
        let mut want_keyframe: Vec<Option<Rid>> = Vec::new();
        if !data.contiguous && kind == MediaKind::Video {
            want_keyframe.push(data.rid);
        }
        // A codec whose keyframes str0m cannot tell: any frame may start a layer.
        let starts_layer = data.is_keyframe() || matches!(data.codec_extra, CodecExtra::None);
        let clock_hz = data.time.frequency().get();
        let frame_layer = crate::temporal::frame_layer(&data.codec_extra);
        let ts = data.time.numer() as u32;
        for &sub_id in &subscribers {
            let substream = self.selections.get(&sub_id).and_then(|s| s.substream);
            let temporal = self.selections.get(&sub_id).and_then(|s| s.temporal);
            let wanted_kind = self.selections.get(&sub_id).and_then(|s| match kind {
                MediaKind::Audio => s.audio,
                MediaKind::Video => s.video,
            });
            if wanted_kind == Some(false) {
                continue;
            }
            // The subscriber's estimate and current layer decide among the layers sent.
            let (estimate, mut cap, current) = match self.peers.get(&sub_id) {
                Some(Peer {
                    role: Role::Subscriber(s),
                    estimate,
                    ..
                }) => {
                    let out = s.tracks.iter().find(|t| t.source == data.mid);
                    (
                        *estimate,
                        out.map(|t| t.cap).unwrap_or_default(),
                        out.and_then(|t| t.layer),
                    )
                }
                _ => (Default::default(), Default::default(), None),
            };
            let target = match (data.rid, self.peers.get(&pub_id)) {
                (Some(_), Some(pp)) => match &pp.role {
                    Role::Publisher(p) => {
                        p.tracks.iter().find(|t| t.mid == data.mid).and_then(|t| {
                            t.choose_layer_within(substream, now, &estimate, &mut cap, current)
                        })
                    }
                    Role::Subscriber(_) => None,
                },
                _ => None,
            };
            let Some(sub) = self.peers.get_mut(&sub_id) else {
                continue;
            };
            if !sub.connected {
                continue;
            }
            let Role::Subscriber(s) = &mut sub.role else {
                continue;
            };
            let Some(out) = s.tracks.iter_mut().find(|t| t.source == data.mid) else {
                continue;
            };
            out.cap = cap;
            // Changed only once the frame went out.
            let mut timeline = out.timeline;
            if data.rid.is_some() {
                if target != out.layer && !want_keyframe.contains(&target) {
                    want_keyframe.push(target);
                }
                if data.rid != out.layer {
                    if data.rid != target || !starts_layer {
                        continue;
                    }
                    timeline.switch(ts, data.network_time, clock_hz);
                }
            }
            // Temporal layers above the selection are left out.
            if let Some((layer, sync)) = frame_layer {
                let before = out.temporal;
                if !crate::temporal::admit(&mut out.temporal, temporal, layer, sync, starts_layer) {
                    if temporal.is_none_or(|t| t > before)
                        && crate::temporal::up_needs_keyframe(&data.codec_extra)
                        && !want_keyframe.contains(&data.rid)
                    {
                        want_keyframe.push(data.rid);
                    }
                    continue;
                }
            }
            if kind == MediaKind::Video && out.needs_keyframe {
                if starts_layer {
                    out.needs_keyframe = false;
                } else if !want_keyframe.contains(&data.rid) {
                    want_keyframe.push(data.rid);
                }
            }
            let out_mid = out.mid;
            let time = MediaTime::new(
                u64::from(timeline.map(ts, data.network_time)),
                data.time.frequency(),
            );
            let wallclock = out
                .last_wallclock
                .map_or(data.network_time, |last| last.max(data.network_time));
            let written = guarded(&mut sub.rtc, |rtc| {
                let Some(w) = rtc.writer(out_mid) else {
                    return Ok(false);
                };
                let Some(pt) = w.match_params(data.params) else {
                    return Ok(false);
                };
                w.write(pt, wallclock, time, data.data.clone())
                    .map(|_| true)
            });
            match written {
                Ok(Ok(true)) => {
                    sub.wrote = true;
                    out.last_wallclock = Some(wallclock);
                    if out.layer != data.rid {
                        debug!(peer = sub_id, mid = %out_mid, from = ?out.layer, to = ?data.rid, budget = ?sub.estimate.video_budget(), "simulcast layer switch");
                        if out.layer.is_some() {
                            inc(&self.metrics.layer_switches, 1);
                        }
                        out.layer = data.rid;
                    }
                    out.timeline = timeline;
                    inc(&self.metrics.media_forwarded, 1);
                    let bytes = data.data.len() as u64;
                    match kind {
                        MediaKind::Audio => {
                            inc(&self.metrics.audio_frames_forwarded, 1);
                            inc(&self.metrics.audio_bytes_forwarded, bytes);
                        }
                        MediaKind::Video => {
                            inc(&self.metrics.video_frames_forwarded, 1);
                            inc(&self.metrics.video_bytes_forwarded, bytes);
                        }
                    }
                    dirty.push(sub_id);
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => self.fail_peer(sub_id, PeerFailure::Rtc(e)),
                Err(e) => self.fail_peer(sub_id, e),
            }
        }
        self.scratch.subscribers = subscribers;
        if kind == MediaKind::Video {
            for rid in want_keyframe {
                self.request_keyframe_at(pub_id, data.mid, rid, interval, now, dirty);
            }
        }
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
            rtc.writer(mid).map(|mut w| w.request_keyframe(rid, kind))
        });
        match r {
            Ok(Some(Ok(()))) => {
                inc(&self.metrics.keyframe_requests, 1);
                dirty.push(pub_id);
            }
            Ok(Some(Err(e))) => debug!(peer = pub_id, error = %e, "keyframe request failed"),
            Ok(None) => {}
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
