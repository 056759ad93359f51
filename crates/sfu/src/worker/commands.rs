//! The worker's handling of [`McuCommand`]s: creating, renegotiating and closing publisher
//! and subscriber connections, remote candidates and layer selection.

use super::*;

/// str0m's interval for RTCP reports on subscriber connections: never (the SFU sends the
/// sender reports of the streams it feeds; str0m's would say nothing was sent).
const NO_STR0M_REPORTS: Duration = Duration::from_secs(1000 * 24 * 3600);

impl Worker {
    pub(super) fn on_request(&mut self, req: Request, net: &Net) {
        let Request { cmd, reply } = req;
        let out = match cmd {
            McuCommand::Publish {
                session,
                stream,
                sid,
                sdp,
                max_bitrate,
            } => self.publish(session, stream, sid, &sdp, max_bitrate, net),
            McuCommand::Subscribe {
                subscriber,
                publisher,
                stream,
                sid,
                selection,
            } => {
                if !self.publishers.contains_key(&(publisher.clone(), stream)) {
                    debug!(%subscriber, %publisher, "subscribe waits for the publisher");
                    self.pending.push(PendingSubscribe {
                        subscriber,
                        publisher,
                        stream,
                        sid,
                        selection,
                        deadline: Instant::now() + self.cfg.publisher_wait,
                        reply,
                    });
                    return;
                }
                self.subscribe(subscriber, publisher, stream, sid, selection, net)
            }
            McuCommand::SubscriberAnswer {
                subscriber,
                publisher,
                stream,
                sid,
                sdp,
            } => self.subscriber_answer(subscriber, publisher, stream, &sid, &sdp, net),
            McuCommand::Candidate {
                session,
                publisher,
                stream,
                sid: _,
                candidate,
            } => self.remote_candidate(session, publisher, stream, &candidate, net),
            McuCommand::SelectStream {
                subscriber,
                publisher,
                stream,
                selection,
            } => match self
                .subscribers
                .get(&(subscriber, publisher, stream))
                .copied()
            {
                Some(id) => {
                    self.select(id, selection, net);
                    McuReply::Done
                }
                None => error("client_not_found", "no such subscription on this SFU"),
            },
            McuCommand::Unpublish { session, stream } => {
                if let Some(id) = self.publishers.get(&(session, stream)).copied() {
                    self.close_peer(id, "unpublished", true);
                }
                McuReply::Done
            }
            McuCommand::CloseSession { session } => {
                let ids: Vec<PeerId> = self
                    .peers
                    .values()
                    .filter(|p| p.session == session)
                    .map(|p| p.id)
                    .collect();
                for id in ids {
                    self.close_peer(id, "the session closed", true);
                }
                let (gone, keep): (Vec<_>, Vec<_>) = self
                    .pending
                    .drain(..)
                    .partition(|p| p.subscriber == session);
                self.pending = keep;
                for p in gone {
                    let _ = p
                        .reply
                        .send(error("processing_failed", "the subscriber session closed"));
                }
                McuReply::Done
            }
        };
        let _ = reply.send(out);
    }

    /// A str0m instance with our ICE credentials and certificate, and the slot its SRTP keys
    /// arrive in; `codecs` for a subscriber (the publisher's, with REMB feedback instead of
    /// transport-cc), str0m's defaults for a publisher (with `opus_dtx`, Opus asking for
    /// DTX). Towards subscribers the client estimates its link itself and reports it with
    /// REMB, which the layer choice follows: send-side estimation (TWCC) would bring str0m's
    /// pacer, which spreads every frame over most of a frame interval (10-60 ms more video
    /// latency in `cargo xtask bench sfu`) and queues a stream that is above its estimate.
    ///
    /// A publisher's str0m runs in RTP mode: it decrypts and reports each packet without
    /// reassembling frames, and the SFU forwards packets. A subscriber's str0m sends no
    /// media (the SFU does, [`crate::egress`]): it reports the client's RTCP (NACKs among
    /// them, as raw packets) and sends no sender reports of its own for streams it never
    /// fed (the SFU sends them).
    pub(super) fn new_rtc(
        &self,
        codecs: Option<CodecConfig>,
    ) -> (Rtc, String, Arc<crate::key_tap::KeySlot>) {
        let ufrag = random_string(8);
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass: random_string(24),
            });
        if codecs.is_none() && self.cfg.opus_dtx {
            let params = crate::silence::with_opus_dtx(cfg.codec_config().params());
            *cfg.codec_config() = CodecConfig::new_from_payload_params(params);
        }
        match codecs {
            None => {
                cfg = cfg
                    .set_rtp_mode(true)
                    .set_stats_interval(Some(crate::recovery::STATS_INTERVAL));
            }
            Some(c) => {
                *cfg.codec_config() = c;
                // Chrome's map without transport-wide-cc (3): no TWCC feedback, REMB instead.
                use str0m::rtp::Extension;
                cfg = cfg
                    .clear_extension_map()
                    .set_extension(1, Extension::AudioLevel)
                    .set_extension(2, Extension::AbsoluteSendTime)
                    .set_extension(4, Extension::RtpMid)
                    .set_extension(13, Extension::VideoOrientation)
                    .set_stats_interval(None)
                    .enable_raw_packets(true)
                    .set_rtcp_report_interval_audio(NO_STR0M_REPORTS)
                    .set_rtcp_report_interval_video(NO_STR0M_REPORTS);
            }
        }
        let (rtc, keys) = crate::key_tap::tapped(|| cfg.build(Instant::now()));
        (rtc, ufrag, keys)
    }

    /// Give each outgoing stream of a subscriber that answered the SFU's sending state (its
    /// SSRCs, payload types and header extensions as negotiated), or update it after a
    /// renegotiation.
    pub(super) fn setup_egress(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Peer { rtc, role, .. } = peer;
        let Role::Subscriber(s) = role else {
            return;
        };
        let r = guarded(rtc, |rtc| {
            for t in &mut s.tracks {
                let Some((ssrc, rtx)) = rtc
                    .direct_api()
                    .stream_tx_by_mid(t.mid, None)
                    .map(|tx| (*tx.ssrc(), tx.rtx().map(|r| *r)))
                else {
                    continue;
                };
                let Some(media) = rtc.media(t.mid) else {
                    continue;
                };
                let (pts, clock_rate, ext) = crate::egress::negotiated(
                    rtc.codec_config().params(),
                    media.remote_pts(),
                    media.remote_extmap(),
                    t.mid,
                    media.kind(),
                );
                match &mut t.egress {
                    Some(e) => e.renegotiated(pts, ext),
                    None => {
                        t.egress = Some(crate::egress::Egress::new(
                            ssrc,
                            rtx,
                            pts,
                            ext,
                            clock_rate,
                            media.kind() == MediaKind::Video,
                            crate::recovery::RTX_HISTORY,
                        ))
                    }
                }
            }
        });
        if r.is_err() {
            self.fail_peer(id, PeerFailure::Panic);
        }
    }

    /// Our candidates, in the order clients should prefer them: UDP (IPv4, IPv6), then
    /// passive ICE-TCP (own listener, shared public port).
    pub(super) fn local_candidates(&self) -> Vec<Candidate> {
        let udp = [Some(self.candidate_addr), self.candidate_addr6]
            .into_iter()
            .flatten()
            .filter_map(|a| Candidate::host(a, "udp").ok());
        let tcp = [self.tcp_candidate, self.public_tcp_candidate]
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Candidate::builder()
                    .tcp()
                    .host(a)
                    .tcptype(TcpType::Passive)
                    .build()
                    .ok()
            });
        udp.chain(tcp).collect()
    }

    pub(super) fn insert_peer(&mut self, mut peer: Peer) -> PeerId {
        let id = self.next_id;
        self.next_id += 1;
        peer.id = id;
        self.by_ufrag.insert(peer.ufrag.clone(), id);
        match &peer.role {
            Role::Publisher(_) => {
                gauge(&self.metrics.publishers, 1);
                self.publishers
                    .insert((peer.session.clone(), peer.stream), id);
            }
            Role::Subscriber(s) => {
                gauge(&self.metrics.subscribers, 1);
                let pub_id = s.publisher;
                self.subscribers.insert(
                    (peer.session.clone(), peer.publisher.clone(), peer.stream),
                    id,
                );
                if let Some(p) = self
                    .peers
                    .get_mut(&pub_id)
                    .and_then(|p| p.publisher_state())
                {
                    p.subscribers.push(id);
                }
            }
        }
        self.peers.insert(id, peer);
        id
    }

    pub(super) fn announce_candidate(&self, id: PeerId, sdp: &str) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        for c in self.local_candidates() {
            let _ = self.events.send(McuEvent::Candidate {
                session: peer.session.clone(),
                publisher: peer.publisher.clone(),
                stream: peer.stream,
                sid: peer.sid.clone(),
                candidate: IceCandidate {
                    candidate: c.to_sdp_string(),
                    sdp_mid: sdp::first_mid(sdp),
                    sdp_mline_index: Some(0),
                },
            });
        }
    }

    pub(super) fn publish(
        &mut self,
        session: String,
        stream: StreamType,
        sid: String,
        sdp_text: &str,
        max_bitrate: u64,
        net: &Net,
    ) -> McuReply {
        let (offer_text, sim_groups) = sdp::extract_sim_groups(sdp_text);
        let offer = match sdp::parse_offer(&offer_text) {
            Ok(o) => o,
            Err(e) => return error("invalid_sdp", format!("publisher offer refused: {e}")),
        };
        let key = (session.clone(), stream);
        if let Some(&id) = self.publishers.get(&key) {
            let same = self
                .peers
                .get(&id)
                .is_some_and(|p| !sid.is_empty() && p.sid == sid);
            if same {
                // Renegotiation of the existing publisher connection.
                let Some(peer) = self.peers.get_mut(&id) else {
                    return error("processing_failed", "publisher vanished");
                };
                peer.max_bitrate = max_bitrate;
                let r = guarded(&mut peer.rtc, |rtc| rtc.sdp_api().accept_offer(offer));
                return match r {
                    Ok(Ok(answer)) => {
                        let mut dirty = vec![id];
                        self.register_tracks(id, sdp_text, &sim_groups, &mut dirty);
                        self.drive(dirty, net);
                        McuReply::Answer {
                            sdp: answer.to_sdp_string(),
                        }
                    }
                    Ok(Err(e)) => error("invalid_sdp", format!("publisher offer refused: {e}")),
                    Err(e) => {
                        self.fail_peer(id, e);
                        error("processing_failed", "the SFU failed on this offer")
                    }
                };
            }
            self.close_peer(id, "replaced by a new offer", true);
        }
        let (mut rtc, ufrag, keys) = self.new_rtc(None);
        let cands = self.local_candidates();
        if cands.is_empty() {
            return error("processing_failed", "the SFU has no usable host candidate");
        }
        let r = guarded(&mut rtc, |rtc| {
            for c in cands {
                rtc.add_local_candidate(c);
            }
            rtc.sdp_api().accept_offer(offer)
        });
        let answer = match r {
            Ok(Ok(a)) => a.to_sdp_string(),
            Ok(Err(e)) => return error("invalid_sdp", format!("publisher offer refused: {e}")),
            Err(_) => {
                inc(&self.metrics.peer_panics, 1);
                return error(
                    "invalid_sdp",
                    "publisher offer refused: the SDP crashed the parser",
                );
            }
        };
        let names = PeerNames {
            session: session.clone(),
            publisher: session.clone(),
            stream,
            sid,
        };
        let role = Role::Publisher(PublisherState {
            tracks: Vec::new(),
            subscribers: Vec::new(),
            params: Vec::new(),
            up_announced: false,
            ssrcs: Vec::new(),
        });
        let id = self.insert_peer(Peer::new(rtc, ufrag, keys, names, role, max_bitrate));
        info!(peer = id, %session, stream = stream.as_str(), "publisher created");
        let mut dirty = vec![id];
        self.register_tracks(id, sdp_text, &sim_groups, &mut dirty);
        self.drive(dirty, net);
        self.announce_candidate(id, &answer);
        // Subscribers that were waiting for this stream.
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|p| p.publisher == session && p.stream == stream);
        self.pending = waiting;
        for p in ready {
            let r = self.subscribe(p.subscriber, p.publisher, p.stream, p.sid, p.selection, net);
            let _ = p.reply.send(r);
        }
        McuReply::Answer { sdp: answer }
    }

    /// Learn a publisher's tracks from its offer right away (str0m announces MediaAdded
    /// only once connected, and subscribers may come earlier); new tracks renegotiate
    /// existing subscribers.
    pub(super) fn register_tracks(
        &mut self,
        id: PeerId,
        offer: &str,
        sim_groups: &[sdp::SimGroup],
        dirty: &mut Vec<PeerId>,
    ) {
        self.declare_sim_layers(id, sim_groups);
        for section in sdp::media_sections(offer) {
            let kind = match section.kind.as_str() {
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                _ => continue,
            };
            let mid = Mid::from(section.mid.as_str());
            let mut rids: Vec<Rid> = section
                .send_rids
                .iter()
                .map(|r| Rid::from(r.as_str()))
                .collect();
            if let Some(g) = sim_groups.iter().find(|g| g.mid == section.mid) {
                rids = sdp::sim_rids(g.layers.len())
                    .iter()
                    .map(|r| Rid::from(*r))
                    .collect();
            }
            if self
                .peers
                .get(&id)
                .is_some_and(|p| p.rtc.media(mid).is_some())
            {
                self.on_media_added(id, mid, kind, &rids, dirty);
            }
        }
    }

    /// Give each SSRC of a legacy SIM group its own stream under a synthetic rid, so the
    /// layers are received (and selected) like rid simulcast.
    pub(super) fn declare_sim_layers(&mut self, id: PeerId, groups: &[sdp::SimGroup]) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        for g in groups {
            let mid = Mid::from(g.mid.as_str());
            if peer.rtc.media(mid).is_none() {
                continue;
            }
            let rids = sdp::sim_rids(g.layers.len());
            let r = guarded(&mut peer.rtc, |rtc| {
                let mut api = rtc.direct_api();
                for ((ssrc, rtx), rid) in g.layers.iter().zip(rids) {
                    api.expect_stream_rx(
                        (*ssrc).into(),
                        rtx.map(Into::into),
                        mid,
                        Some((*rid).into()),
                    );
                }
            });
            if r.is_err() {
                inc(&self.metrics.peer_panics, 1);
                warn!(peer = id, "declaring SIM simulcast layers panicked");
            }
            debug!(peer = id, mid = %g.mid, layers = g.layers.len(), "legacy SIM simulcast");
        }
    }

    pub(super) fn subscribe(
        &mut self,
        subscriber: String,
        publisher: String,
        stream: StreamType,
        sid: String,
        selection: Selection,
        net: &Net,
    ) -> McuReply {
        let Some(&pub_id) = self.publishers.get(&(publisher.clone(), stream)) else {
            return error(
                "client_not_found",
                "No MCU client found to send message to.",
            );
        };
        let Some(Role::Publisher(p)) = self.peers.get(&pub_id).map(|p| &p.role) else {
            return error(
                "client_not_found",
                "No MCU client found to send message to.",
            );
        };
        let sources: Vec<(Mid, MediaKind)> = p.tracks.iter().map(|t| (t.mid, t.kind)).collect();
        let params = p.params.clone();
        let key = (subscriber.clone(), publisher.clone(), stream);

        if let Some(&id) = self.subscribers.get(&key) {
            let same = self
                .peers
                .get(&id)
                .is_some_and(|p| !sid.is_empty() && p.sid == sid);
            if same {
                self.selections.insert(id, selection);
                let (reply, _) = self.renegotiate(id, &sources);
                self.drive(vec![id], net);
                return reply;
            }
            self.close_peer(id, "replaced by a fresh subscription", false);
        }

        let codecs = CodecConfig::new_from_payload_params(crate::bwe::with_remb(
            crate::recovery::with_rtx(params),
        ));
        let (mut rtc, ufrag, keys) = self.new_rtc(Some(codecs));
        let cands = self.local_candidates();
        if cands.is_empty() {
            return error("processing_failed", "the SFU has no usable host candidate");
        }
        let stream_id = format!("{publisher}-{}", stream.as_str());
        let r = guarded(&mut rtc, |rtc| {
            for c in cands {
                rtc.add_local_candidate(c);
            }
            let mut change = rtc.sdp_api();
            let mut tracks = Vec::new();
            for (source, kind) in &sources {
                let mid = change.add_media(
                    *kind,
                    Direction::SendOnly,
                    Some(stream_id.clone()),
                    None,
                    None,
                );
                tracks.push(TrackOut::new(mid, *source));
            }
            let cid = change.add_channel(SUBSCRIBER_CHANNEL.to_owned());
            change
                .apply()
                .map(|(offer, pending)| (offer, pending, tracks, cid))
        });
        let (offer, pending, tracks, cid) = match r {
            Ok(Some(x)) => x,
            Ok(None) => return error("processing_failed", "the SFU made no offer"),
            Err(_) => {
                inc(&self.metrics.peer_panics, 1);
                return error("processing_failed", "the SFU failed making the offer");
            }
        };
        let offer = offer.to_sdp_string();
        let new_sid = new_sid();
        let names = PeerNames {
            session: subscriber.clone(),
            publisher: publisher.clone(),
            stream,
            sid: new_sid.clone(),
        };
        let role = Role::Subscriber(SubscriberState {
            publisher: pub_id,
            tracks,
            channel: Some(cid),
            channel_open: false,
            pending: Some(pending),
            last_offer: offer.clone(),
        });
        let id = self.insert_peer(Peer::new(rtc, ufrag, keys, names, role, 0));
        self.selections.insert(id, selection);
        info!(peer = id, %subscriber, %publisher, stream = stream.as_str(), sid = %new_sid, "subscriber created");
        self.drive(vec![id], net);
        self.announce_candidate(id, &offer);
        McuReply::Offer {
            sdp: offer,
            sid: new_sid,
        }
    }

    /// Same-sid Subscribe: offer the publisher's current tracks on the existing connection.
    /// Returns the offer and whether it is a new one.
    pub(super) fn renegotiate(
        &mut self,
        id: PeerId,
        sources: &[(Mid, MediaKind)],
    ) -> (McuReply, bool) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return (error("client_not_found", "no such subscription"), false);
        };
        let sid = peer.sid.clone();
        let stream_id = format!("{}-{}", peer.publisher, peer.stream.as_str());
        let Role::Subscriber(s) = &mut peer.role else {
            return (error("processing_failed", "not a subscription"), false);
        };
        let missing: Vec<(Mid, MediaKind)> = sources
            .iter()
            .filter(|(m, _)| !s.tracks.iter().any(|t| t.source == *m))
            .copied()
            .collect();
        if missing.is_empty() || s.pending.is_some() {
            // Nothing changed (or an offer is outstanding): the current offer still stands.
            let offer = McuReply::Offer {
                sdp: s.last_offer.clone(),
                sid,
            };
            return (offer, false);
        }
        let r = guarded(&mut peer.rtc, |rtc| {
            let mut change = rtc.sdp_api();
            let mut added = Vec::new();
            for (source, kind) in &missing {
                let mid = change.add_media(
                    *kind,
                    Direction::SendOnly,
                    Some(stream_id.clone()),
                    None,
                    None,
                );
                added.push(TrackOut::new(mid, *source));
            }
            change.apply().map(|(o, p)| (o, p, added))
        });
        match r {
            Ok(Some((offer, pending, added))) => {
                let offer = offer.to_sdp_string();
                s.tracks.extend(added);
                s.pending = Some(pending);
                s.last_offer = offer.clone();
                (McuReply::Offer { sdp: offer, sid }, true)
            }
            Ok(None) => {
                let offer = McuReply::Offer {
                    sdp: s.last_offer.clone(),
                    sid,
                };
                (offer, false)
            }
            Err(e) => {
                self.fail_peer(id, e);
                (
                    error("processing_failed", "the SFU failed renegotiating"),
                    false,
                )
            }
        }
    }

    pub(super) fn subscriber_answer(
        &mut self,
        subscriber: String,
        publisher: String,
        stream: StreamType,
        sid: &str,
        sdp_text: &str,
        net: &Net,
    ) -> McuReply {
        let Some(&id) = self.subscribers.get(&(subscriber, publisher, stream)) else {
            return error(
                "client_not_found",
                "No MCU client found to send message to.",
            );
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return error(
                "client_not_found",
                "No MCU client found to send message to.",
            );
        };
        if !sid.is_empty() && peer.sid != sid {
            return error(
                "processing_failed",
                format!(
                    "answer for subscription {sid}, but the current one is {}",
                    peer.sid
                ),
            );
        }
        let answer = match sdp::parse_answer(sdp_text) {
            Ok(a) => a,
            Err(e) => return error("invalid_sdp", format!("subscriber answer refused: {e}")),
        };
        let Role::Subscriber(s) = &mut peer.role else {
            return error("processing_failed", "not a subscription");
        };
        let Some(pending) = s.pending.take() else {
            // Answer to an unchanged re-sent offer: nothing to apply.
            return McuReply::Done;
        };
        let r = guarded(&mut peer.rtc, |rtc| {
            rtc.sdp_api().accept_answer(pending, answer)
        });
        match r {
            Ok(Ok(())) => {
                // str0m declares the outgoing streams (and their RTX SSRCs) on the answer.
                self.setup_egress(id);
                let mut dirty = vec![id];
                // Tracks the publisher added while this offer was out.
                self.update_subscriber(id, &mut dirty);
                self.drive(dirty, net);
                McuReply::Done
            }
            Ok(Err(e)) => error("invalid_sdp", format!("subscriber answer refused: {e}")),
            Err(e) => {
                self.fail_peer(id, e);
                error("processing_failed", "the SFU failed on this answer")
            }
        }
    }

    pub(super) fn remote_candidate(
        &mut self,
        session: String,
        publisher: String,
        stream: StreamType,
        candidate: &IceCandidate,
        net: &Net,
    ) -> McuReply {
        let id = if session == publisher {
            self.publishers.get(&(session, stream)).copied()
        } else {
            self.subscribers.get(&(session, publisher, stream)).copied()
        };
        let Some(id) = id else {
            return error(
                "client_not_found",
                "No MCU client found to send message to.",
            );
        };
        let text = candidate.candidate.trim();
        let text = text.strip_prefix("a=").unwrap_or(text);
        if text.is_empty() {
            return McuReply::Done; // end-of-candidates
        }
        let c = match Candidate::from_sdp_string(text) {
            Ok(c) => c,
            Err(e) => {
                // Unusable candidates (mDNS names, TCP types we don't take) are ignored.
                debug!(peer = id, candidate = text, error = %e, "ignoring remote candidate");
                return McuReply::Done;
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return McuReply::Done;
        };
        if let Err(e) = guarded(&mut peer.rtc, |rtc| rtc.add_remote_candidate(c)) {
            self.fail_peer(id, e);
            return McuReply::Done;
        }
        self.drive(vec![id], net);
        McuReply::Done
    }

    pub(super) fn select(&mut self, id: PeerId, selection: Selection, net: &Net) {
        let old = self.selections.insert(id, selection).unwrap_or_default();
        if old.substream == selection.substream {
            return;
        }
        // The new layer needs a keyframe before the viewer can decode it.
        let Some(Role::Subscriber(s)) = self.peers.get(&id).map(|p| &p.role) else {
            return;
        };
        let pub_id = s.publisher;
        let sources: Vec<Mid> = s.tracks.iter().map(|t| t.source).collect();
        let mut dirty = Vec::new();
        for mid in sources {
            // The viewer switches at the new layer's next keyframe (see forward_media).
            let Some(Role::Publisher(p)) = self.peers.get_mut(&pub_id).map(|p| &mut p.role) else {
                break;
            };
            let Some(t) = p.tracks.iter_mut().find(|t| t.mid == mid) else {
                continue;
            };
            let rid = t.choose_layer(selection.substream, Instant::now());
            t.last_keyframe_request.retain(|(r, _)| *r != rid);
            self.request_keyframe(pub_id, mid, rid, KeyframeRequestKind::Pli, &mut dirty);
        }
        self.drive(dirty, net);
    }
}
