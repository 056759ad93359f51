//! The worker's reactions to str0m events: publisher tracks, connection state, and the
//! forwarding of media frames, data channel messages and keyframe requests.

use super::*;

impl Worker {
    /// Act on events; returns the peers whose Rtc got new input and needs polling.
    pub(super) fn on_events(&mut self, events: Vec<(PeerId, Ev)>) -> Vec<PeerId> {
        let mut dirty = Vec::new();
        for (id, ev) in events {
            match ev {
                Ev::Connected => self.on_connected(id, &mut dirty),
                Ev::MediaAdded { mid, kind } => self.on_media_added(id, mid, kind, &[], &mut dirty),
                Ev::Media(data) => self.forward_media(id, data, &mut dirty),
                Ev::KeyframeRequest(req) => {
                    let Some(sub) = self.peers.get_mut(&id) else {
                        continue;
                    };
                    let Some(s) = sub.subscriber_state() else {
                        continue;
                    };
                    let pub_id = s.publisher;
                    let Some(source) = s.tracks.iter().find(|t| t.mid == req.mid).map(|t| t.source)
                    else {
                        continue;
                    };
                    let selection = self.selections.get(&id).copied().unwrap_or_default();
                    self.request_keyframe(pub_id, source, selection, req.kind, &mut dirty);
                }
                Ev::ChannelOpen(cid, label) => {
                    if let Some(s) = self.peers.get_mut(&id).and_then(|p| p.subscriber_state())
                        && (label == SUBSCRIBER_CHANNEL || s.channel == Some(cid))
                    {
                        s.channel = Some(cid);
                        s.channel_open = true;
                    }
                }
                Ev::ChannelData(d) => self.forward_channel(id, &d.data, d.binary, &mut dirty),
            }
        }
        dirty
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
                let selection = self.selections.get(&id).copied().unwrap_or_default();
                for mid in sources {
                    self.request_keyframe(pub_id, mid, selection, KeyframeRequestKind::Pli, dirty);
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
            let mut rids = rids.to_vec();
            rids.sort_by_key(|r| rid_rank(r));
            p.tracks.push(TrackIn {
                mid,
                kind,
                rids,
                last_keyframe_request: None,
            });
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

    pub(super) fn forward_media(
        &mut self,
        pub_id: PeerId,
        data: MediaData,
        dirty: &mut Vec<PeerId>,
    ) {
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        let Role::Publisher(p) = &mut publisher.role else {
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == data.mid) else {
            return;
        };
        if let Some(rid) = data.rid
            && !track.rids.contains(&rid)
        {
            track.rids.push(rid);
            track.rids.sort_by_key(|r| rid_rank(r));
        }
        let rids = track.rids.clone();
        let kind = track.kind;
        let subscribers = p.subscribers.clone();
        if !data.contiguous && track.kind == MediaKind::Video {
            let selection = Selection::default();
            self.request_keyframe(pub_id, data.mid, selection, KeyframeRequestKind::Pli, dirty);
        }
        for sub_id in subscribers {
            let selection = self.selections.get(&sub_id).copied().unwrap_or_default();
            let wanted_kind = match kind {
                MediaKind::Audio => selection.audio,
                MediaKind::Video => selection.video,
            };
            if wanted_kind == Some(false) {
                continue;
            }
            let want = pick_rid(
                &rids,
                self.selections.get(&sub_id).and_then(|s| s.substream),
            );
            if data.rid.is_some() && data.rid != want {
                continue;
            }
            let Some(sub) = self.peers.get_mut(&sub_id) else {
                continue;
            };
            let Role::Subscriber(s) = &sub.role else {
                continue;
            };
            let Some(out_mid) = s
                .tracks
                .iter()
                .find(|t| t.source == data.mid)
                .map(|t| t.mid)
            else {
                continue;
            };
            if !sub.connected {
                continue;
            }
            let written = guarded(&mut sub.rtc, |rtc| {
                let Some(w) = rtc.writer(out_mid) else {
                    return Ok(false);
                };
                let Some(pt) = w.match_params(data.params) else {
                    return Ok(false);
                };
                w.write(pt, data.network_time, data.time, data.data.clone())
                    .map(|_| true)
            });
            match written {
                Ok(Ok(true)) => {
                    inc(&self.metrics.media_forwarded, 1);
                    dirty.push(sub_id);
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => self.fail_peer(sub_id, PeerFailure::Rtc(e)),
                Err(e) => self.fail_peer(sub_id, e),
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
        for sub_id in p.subscribers.clone() {
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
    }

    /// Ask a publisher for a keyframe on one track, at most once per `keyframe_interval`.
    pub(super) fn request_keyframe(
        &mut self,
        pub_id: PeerId,
        mid: Mid,
        selection: Selection,
        kind: KeyframeRequestKind,
        dirty: &mut Vec<PeerId>,
    ) {
        let interval = self.cfg.keyframe_interval;
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
        let now = Instant::now();
        if track
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return;
        }
        track.last_keyframe_request = Some(now);
        let rid = pick_rid(&track.rids, selection.substream);
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
