//! Closing peers: removing a peer and everything that points at it, and the short drain
//! in which a closed peer's str0m instance still sends its goodbyes (RTCP BYE, DTLS
//! close_notify).

use super::*;

/// How long a closed peer may take to send its goodbyes (RTCP BYE, DTLS close_notify).
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// A closed peer's str0m instance, kept only until its close output has been sent.
pub(super) struct Closing {
    id: PeerId,
    rtc: Rtc,
    /// Still routed here (in `by_addr`) until the drain ends.
    addrs: Vec<SocketAddr>,
    /// `Rtc::close` was refused and is tried again.
    retry_close: bool,
    pub(super) next: Instant,
    until: Instant,
}

impl Worker {
    /// A peer whose str0m instance failed or panicked: closed, and its session told why
    /// (after a panic without touching its state again).
    pub(super) fn fail_peer(&mut self, id: PeerId, why: PeerFailure) {
        let graceful = !matches!(why, PeerFailure::Panic);
        if !graceful {
            inc(&self.metrics.peer_panics, 1);
            warn!(peer = id, "str0m panicked; closing only this peer");
        }
        self.close_peer_with(id, &why.to_string(), true, graceful);
    }

    /// Remove a peer and everything that points at it; `notify` sends the McuEvent. The
    /// client is told too: its connection gets RTCP BYE and DTLS close_notify.
    pub(super) fn close_peer(&mut self, id: PeerId, reason: &str, notify: bool) {
        self.close_peer_with(id, reason, notify, true);
    }

    /// `graceful: false` (after a str0m panic) drops the peer's state without touching it.
    pub(super) fn close_peer_with(
        &mut self,
        id: PeerId,
        reason: &str,
        notify: bool,
        graceful: bool,
    ) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        gauge(
            &self.metrics.estimated_bitrate_sum,
            -(peer.estimate.bps() as i64),
        );
        info!(peer = id, session = %peer.session, publisher = %peer.publisher, stream = peer.stream.as_str(), reason, "closing peer");
        self.by_ufrag.remove(&peer.ufrag);
        // close() queues the goodbyes (RTCP BYE, DTLS close_notify) and drain_closing sends
        // them. str0m refuses to close while the data channel association is still being set
        // up (right after DTLS); such a peer keeps getting its datagrams and the close is
        // retried until it goes through or CLOSE_DRAIN ends.
        let closed = graceful.then(|| guarded(&mut peer.rtc, |rtc| rtc.close()));
        let keep = match closed {
            Some(Ok(r)) if peer.rtc.is_alive() => Some(r.is_err()),
            _ => None,
        };
        if let Some(retry_close) = keep {
            debug!(peer = id, retry_close, "draining the closed peer");
            let now = Instant::now();
            self.closing.push(Closing {
                id,
                rtc: peer.rtc,
                addrs: std::mem::take(&mut peer.addrs),
                retry_close,
                next: now,
                until: now + CLOSE_DRAIN,
            });
        } else {
            for a in &peer.addrs {
                self.by_addr.remove(a);
            }
        }
        self.selections.remove(&id);
        match peer.role {
            Role::Publisher(p) => {
                gauge(&self.metrics.publishers, -1);
                if self.publishers.get(&(peer.session.clone(), peer.stream)) == Some(&id) {
                    self.publishers.remove(&(peer.session.clone(), peer.stream));
                }
                if notify {
                    let _ = self.events.send(McuEvent::PublisherClosed {
                        session: peer.session.clone(),
                        stream: peer.stream,
                    });
                }
                for sub in p.subscribers {
                    self.close_peer(sub, "the publisher closed", notify);
                }
            }
            Role::Subscriber(s) => {
                gauge(&self.metrics.subscribers, -1);
                let key = (peer.session.clone(), peer.publisher.clone(), peer.stream);
                if self.subscribers.get(&key) == Some(&id) {
                    self.subscribers.remove(&key);
                }
                if let Some(p) = self
                    .peers
                    .get_mut(&s.publisher)
                    .and_then(|p| p.publisher_state())
                {
                    p.subscribers.retain(|x| *x != id);
                }
                if notify {
                    let _ = self.events.send(McuEvent::SubscriberClosed {
                        subscriber: peer.session,
                        publisher: peer.publisher,
                        stream: peer.stream,
                    });
                }
            }
        }
    }
}

impl Worker {
    /// Send what closed peers still have to say; forget those that are done (or too slow).
    pub(super) fn drain_closing(&mut self, now: Instant, net: &Net) {
        let metrics = &self.metrics;
        let mut gone = Vec::new();
        self.closing.retain_mut(|c| {
            let keep = now < c.until && (c.next > now || drain(c, now, net, metrics));
            if !keep {
                debug!(peer = c.id, "closed peer drained");
                gone.push((c.id, std::mem::take(&mut c.addrs)));
            }
            keep
        });
        for (id, addrs) in gone {
            for a in addrs {
                if self.by_addr.get(&a) == Some(&id) {
                    self.by_addr.remove(&a);
                }
            }
        }
    }

    /// A datagram for a peer that is closing (e.g. finishing its data channel setup).
    pub(super) fn on_closing_datagram(&mut self, id: PeerId, input: Input) -> bool {
        let Some(c) = self.closing.iter_mut().find(|c| c.id == id) else {
            return false;
        };
        if !matches!(
            guarded(&mut c.rtc, |rtc| rtc.handle_input(input)),
            Ok(Ok(()))
        ) {
            c.until = Instant::now();
        }
        c.next = Instant::now();
        true
    }
}

/// One round of a closing peer: retry the close if needed, send its output; false = done.
fn drain(c: &mut Closing, now: Instant, net: &Net, metrics: &Metrics) -> bool {
    let r = guarded(&mut c.rtc, |rtc| {
        if rtc.handle_input(Input::Timeout(now)).is_err() {
            return false;
        }
        if c.retry_close && rtc.close().is_ok() {
            c.retry_close = false;
        }
        // Bounded: the close output is a few datagrams.
        for _ in 0..256 {
            if !rtc.is_alive() {
                return false;
            }
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    if let Ok(n) = net.send(&t) {
                        metrics.sent(t.proto, n);
                    }
                }
                Ok(Output::Timeout(t)) => {
                    c.next = t;
                    return true;
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return false,
            }
        }
        c.next = now;
        true
    });
    r.unwrap_or(false)
}
