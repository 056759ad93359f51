// A minimal Talk call client for headless Chromium (tests/it/browser.rs drives it through
// tests/media/chromium/driver.js). It speaks the standalone signaling protocol the way the
// Talk web client does with an MCU:
//
//   welcome → hello v1 {auth: {url, params: {userid, ticket}}} → room join;
//   publish: `message` offer to the own session (roomType video, sid, payload {type, sdp, nick}),
//            answer from the SFU, candidates trickled both ways in the nested shape
//            {candidate: {candidate, sdpMid, sdpMLineIndex}};
//   subscribe: `requestoffer` to the publisher (repeated until an offer comes), answer, candidates;
//   `selectStream` {substream, temporal} to the publisher for a simulcast layer.
//
// Simulcast comes in the two flavours Talk meets: `sendEncodings` with rids (as Firefox
// publishes) or the legacy `a=ssrc-group:SIM` SDP munging Talk does on Chromium. Everything
// here runs on 127.0.0.1; no ICE servers are configured.
'use strict';

const LOG = [];
function log(...args) {
  const line = args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
  LOG.push(`${(performance.now() / 1000).toFixed(2)} ${line}`);
}

class Signaling {
  constructor() {
    this.nextId = 0;
    this.pending = new Map();
    this.handlers = [];
    this.errors = [];
    this.sessionid = null;
  }

  open(url) {
    this.welcome = new Promise((resolve, reject) => {
      this.ws = new WebSocket(url);
      this.ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.type === 'welcome') {
          resolve(f.welcome);
          return;
        }
        this.onFrame(f);
      };
      this.ws.onerror = () => reject(new Error(`WebSocket ${url} failed`));
      this.ws.onclose = (e) => log('ws closed', e.code, e.reason);
    });
    return this.welcome;
  }

  onFrame(f) {
    if (f.type === 'error') {
      log('error frame', f);
      this.errors.push(f.error);
    }
    if (f.id && this.pending.has(f.id)) {
      this.pending.get(f.id)(f);
      this.pending.delete(f.id);
    }
    if (f.type === 'message') {
      // Talk's signaling.js: the sender of a call message is `from`.
      const data = Object.assign({}, f.message.data);
      data.from = f.message.sender && f.message.sender.sessionid;
      log('got', data.type, 'from', data.from);
      for (const h of this.handlers) {
        h(data, f);
      }
    }
  }

  send(frame) {
    this.nextId += 1;
    frame.id = String(this.nextId);
    this.ws.send(JSON.stringify(frame));
    return frame.id;
  }

  request(frame) {
    return new Promise((resolve) => {
      const id = this.send(frame);
      this.pending.set(id, resolve);
    });
  }

  async hello(backend, userid, ticket) {
    const reply = await this.request({
      type: 'hello',
      hello: { version: '1.0', auth: { url: backend, params: { userid, ticket } } },
    });
    if (reply.type !== 'hello') {
      throw new Error(`hello failed: ${JSON.stringify(reply)}`);
    }
    this.sessionid = reply.hello.sessionid;
    this.features = (reply.hello.server && reply.hello.server.features) || [];
    return reply.hello;
  }

  async join(roomid) {
    const reply = await this.request({
      type: 'room',
      room: { roomid, sessionid: `talk-${Math.random().toString(36).slice(2)}` },
    });
    if (reply.type !== 'room') {
      throw new Error(`room join failed: ${JSON.stringify(reply)}`);
    }
    return reply.room;
  }

  // Talk's sendCallMessage: data {to, sid, roomType, type, payload} to session `to`.
  callMessage(data) {
    log('send', data.type, 'to', data.to);
    return this.send({
      type: 'message',
      message: { recipient: { type: 'session', sessionid: data.to }, data },
    });
  }
}

// Legacy simulcast as Talk enables it on Chromium (janus.js' munging, written anew): the
// first video section's SSRC and its RTX SSRC become the lowest of three layers, two more
// SSRC pairs are invented, and `a=ssrc-group:SIM low mid high` tells Chromium to send all three.
function mungeSimulcast(sdp) {
  const lines = sdp.split('\r\n').filter((l) => l.length > 0);
  const start = lines.findIndex((l) => l.startsWith('m=video'));
  if (start < 0) {
    return sdp;
  }
  let end = lines.findIndex((l, i) => i > start && l.startsWith('m='));
  if (end < 0) {
    end = lines.length;
  }
  const section = lines.slice(start, end);
  const fid = section.map((l) => l.match(/^a=ssrc-group:FID (\d+) (\d+)$/)).find(Boolean);
  if (!fid) {
    throw new Error('no FID group in the video section to munge');
  }
  const [primary, rtx] = [fid[1], fid[2]];
  const attrs = {};
  for (const l of section) {
    const m = l.match(new RegExp(`^a=ssrc:${primary} (cname|msid):(.+)$`));
    if (m) {
      attrs[m[1]] = m[2];
    }
  }
  const kept = section.filter(
    (l) => !l.startsWith('a=ssrc:') && !l.startsWith('a=ssrc-group:'),
  );
  const random = () => String(1 + Math.floor(Math.random() * 0xfffffffe));
  const ssrcs = [primary, random(), random()];
  const rtxs = [rtx, random(), random()];
  const added = [`a=ssrc-group:SIM ${ssrcs.join(' ')}`];
  for (let i = 0; i < 3; i++) {
    added.push(`a=ssrc-group:FID ${ssrcs[i]} ${rtxs[i]}`);
  }
  for (let i = 0; i < 3; i++) {
    for (const s of [ssrcs[i], rtxs[i]]) {
      for (const key of ['cname', 'msid']) {
        if (attrs[key]) {
          added.push(`a=ssrc:${s} ${key}:${attrs[key]}`);
        }
      }
    }
  }
  const out = [...lines.slice(0, start), ...kept, ...added, ...lines.slice(end)];
  return `${out.join('\r\n')}\r\n`;
}

// `candidate:<foundation> <component> <transport> ...`: is the transport TCP?
function isTcpCandidate(line) {
  const parts = line.replace(/^a=/, '').split(' ');
  return (parts[2] || '').toLowerCase() === 'tcp';
}

// The nested candidate shape Talk keeps for the mobile apps.
function candidatePayload(c) {
  return { candidate: { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } };
}

class Call {
  constructor() {
    this.sig = new Signaling();
    this.sig.handlers.push((data) => this.onCallMessage(data));
    this.pc = null;
    this.remoteSet = false;
    this.pendingRemote = [];
    this.role = null;
    this.sid = null;
    this.peer = null;
    this.channels = [];
    this.received = [];
    this.sentMessages = 0;
    this.offerSdp = null;
    this.answerSdp = null;
    this.localCandidates = [];
    this.remoteCandidates = [];
  }

  async connect({ ws, backend, user, ticket, room, iceTcp }) {
    this.user = user;
    // Only the SFU's TCP candidates are used, as for a client whose firewall lets only TCP
    // out: Chromium then connects actively to the SFU's passive ICE-TCP candidate.
    this.iceTcp = !!iceTcp;
    const welcome = await this.sig.open(ws);
    log('welcome', welcome);
    await this.sig.hello(backend, user, ticket);
    await this.sig.join(room);
    return { sessionid: this.sig.sessionid, features: this.sig.features };
  }

  newPc(to) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    pc.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) {
        return;
      }
      this.localCandidates.push(e.candidate.candidate);
      this.sig.callMessage({
        to,
        sid: this.sid,
        roomType: 'video',
        type: 'candidate',
        payload: candidatePayload(e.candidate),
      });
    };
    pc.oniceconnectionstatechange = () => log('ice', pc.iceConnectionState);
    pc.onconnectionstatechange = () => log('connection', pc.connectionState);
    return pc;
  }

  async addRemoteCandidate(payload) {
    const c = payload && payload.candidate;
    if (!c || !c.candidate) {
      return;
    }
    this.remoteCandidates.push(c.candidate);
    if (this.iceTcp && !isTcpCandidate(c.candidate)) {
      return;
    }
    if (!this.remoteSet) {
      this.pendingRemote.push(c);
      return;
    }
    try {
      await this.pc.addIceCandidate(c);
    } catch (e) {
      log('addIceCandidate failed', String(e));
    }
  }

  // The SFU's SDP as this client uses it: without UDP candidates when only TCP is allowed.
  remoteSdp(sdp) {
    if (!this.iceTcp) {
      return sdp;
    }
    return sdp
      .split('\r\n')
      .filter((l) => !l.startsWith('a=candidate:') || isTcpCandidate(l))
      .join('\r\n');
  }

  async remoteDescriptionSet() {
    this.remoteSet = true;
    const pending = this.pendingRemote.splice(0);
    for (const c of pending) {
      await this.pc.addIceCandidate(c).catch((e) => log('addIceCandidate failed', String(e)));
    }
  }

  onCallMessage(data) {
    if (data.type === 'candidate') {
      this.addRemoteCandidate(data.payload);
    } else if (data.type === 'answer' && this.role === 'publisher') {
      this.answerSdp = data.payload.sdp;
      this.gotAnswer(data);
    } else if (data.type === 'offer' && this.role === 'subscriber' && !this.offerSdp) {
      this.offerSdp = data.payload.sdp;
      this.gotOffer(data);
    }
  }

  // Publish camera and microphone (fake devices) with an offer to our own session.
  async publish({ simulcast, width, height }) {
    this.role = 'publisher';
    const me = this.sig.sessionid;
    this.peer = me;
    this.sid = String(Date.now());
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { exact: width }, height: { exact: height }, frameRate: 30 },
    });
    document.getElementById('local').srcObject = stream;
    const pc = this.newPc(me);
    this.pc = pc;
    const [audio] = stream.getAudioTracks();
    const [video] = stream.getVideoTracks();
    this.audioTrack = audio;
    pc.addTrack(audio, stream);
    if (simulcast === 'rid') {
      pc.addTransceiver(video, {
        direction: 'sendrecv',
        streams: [stream],
        sendEncodings: [
          { rid: 'low', scaleResolutionDownBy: 4, maxBitrate: 100000 },
          { rid: 'medium', scaleResolutionDownBy: 2, maxBitrate: 300000 },
          { rid: 'high', scaleResolutionDownBy: 1, maxBitrate: 900000 },
        ],
      });
    } else {
      pc.addTrack(video, stream);
    }
    // Keep the layers' sizes fixed under CPU load (the test compares them).
    const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'video');
    const params = sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    await sender.setParameters(params).catch((e) => log('setParameters', String(e)));
    // Talk opens its data channels on the publisher connection; with an MCU the messages to
    // everybody go this way and the SFU passes them on.
    const status = pc.createDataChannel('status');
    status.onopen = () => {
      log('status channel open');
      this.statusTimer = setInterval(() => {
        this.sentMessages += 1;
        status.send(JSON.stringify({ type: this.sentMessages % 2 ? 'speaking' : 'stoppedSpeaking', n: this.sentMessages }));
      }, 200);
    };
    this.answered = new Promise((resolve) => {
      this.answerResolve = resolve;
    });
    const offer = await pc.createOffer();
    let sdp = offer.sdp;
    if (simulcast === 'sim') {
      sdp = mungeSimulcast(sdp);
    }
    await pc.setLocalDescription({ type: 'offer', sdp });
    this.localOffer = sdp;
    this.sig.callMessage({
      to: me,
      sid: this.sid,
      roomType: 'video',
      type: 'offer',
      payload: { type: 'offer', sdp, nick: this.user },
    });
    await this.answered;
    return { sid: this.sid };
  }

  async gotAnswer(data) {
    await this.pc.setRemoteDescription({ type: 'answer', sdp: this.remoteSdp(data.payload.sdp) });
    await this.remoteDescriptionSet();
    this.answerResolve();
  }

  // Subscribe to `publisher` with requestoffer, repeated until the SFU's offer arrives.
  async subscribe(publisher) {
    this.role = 'subscriber';
    this.peer = publisher;
    const pc = this.newPc(publisher);
    this.pc = pc;
    pc.ontrack = (e) => {
      log('track', e.track.kind);
      if (e.track.kind === 'video') {
        document.getElementById('remote').srcObject = e.streams[0] || new MediaStream([e.track]);
      }
    };
    pc.ondatachannel = (e) => {
      const ch = e.channel;
      this.channels.push(ch.label);
      log('datachannel', ch.label);
      ch.onmessage = (m) => this.received.push({ label: ch.label, data: m.data });
    };
    const answered = new Promise((resolve) => {
      this.answerSent = resolve;
    });
    for (let i = 0; i < 20 && !this.offerSdp; i++) {
      this.sig.callMessage({ to: publisher, roomType: 'video', type: 'requestoffer' });
      await Promise.race([answered, new Promise((r) => setTimeout(r, 1000))]);
    }
    await Promise.race([answered, new Promise((r) => setTimeout(r, 5000))]);
    if (!this.offerSdp) {
      throw new Error(`no offer from the SFU; errors: ${JSON.stringify(this.sig.errors)}`);
    }
    return { sid: this.sid };
  }

  async gotOffer(data) {
    this.sid = data.sid;
    await this.pc.setRemoteDescription({ type: 'offer', sdp: this.remoteSdp(data.payload.sdp) });
    await this.remoteDescriptionSet();
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.answerSdp = answer.sdp;
    this.sig.callMessage({
      to: this.peer,
      sid: this.sid,
      roomType: data.roomType || 'video',
      type: 'answer',
      payload: { type: 'answer', sdp: answer.sdp, nick: this.user },
    });
    this.answerSent();
  }

  // Talk's Peer.selectSimulcastStream.
  selectStream(substream, temporal) {
    this.sig.callMessage({
      to: this.peer,
      sid: this.sid,
      roomType: 'video',
      type: 'selectStream',
      payload: { substream, temporal },
    });
  }

  // Mute or unmute the microphone the way Talk does: the track stays, disabled (WebRTC then
  // sends silence).
  muteAudio(muted) {
    if (this.audioTrack) {
      this.audioTrack.enabled = !muted;
    }
  }

  async stats() {
    const out = {
      ice: this.pc ? this.pc.iceConnectionState : null,
      connection: this.pc ? this.pc.connectionState : null,
      channels: this.channels.slice(),
      received: this.received.length,
      lastReceived: this.received.length ? this.received[this.received.length - 1] : null,
      sentMessages: this.sentMessages,
      errors: this.sig.errors.slice(),
      outbound: [],
    };
    if (!this.pc) {
      return out;
    }
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.video = {
          framesDecoded: s.framesDecoded || 0,
          framesReceived: s.framesReceived || 0,
          frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0,
          keyFramesDecoded: s.keyFramesDecoded || 0,
          pliCount: s.pliCount || 0,
          nackCount: s.nackCount || 0,
          packetsLost: s.packetsLost || 0,
          ssrc: s.ssrc,
        };
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.audio = { packetsReceived: s.packetsReceived || 0, totalSamplesReceived: s.totalSamplesReceived || 0 };
      } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        out.audioOut = { packetsSent: s.packetsSent || 0 };
      } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.outbound.push({
          rid: s.rid || null,
          ssrc: s.ssrc,
          frameWidth: s.frameWidth || 0,
          framesEncoded: s.framesEncoded || 0,
          scalabilityMode: s.scalabilityMode || null,
          active: s.active,
          qualityLimitationReason: s.qualityLimitationReason,
        });
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        const remote = pair && byId.get(pair.remoteCandidateId);
        out.pair = {
          local: local ? `${local.address}:${local.port} ${local.protocol} ${local.candidateType}` : null,
          remote: remote ? `${remote.address}:${remote.port} ${remote.protocol} ${remote.candidateType}` : null,
        };
        out.dtls = { state: s.dtlsState, cipher: s.srtpCipher || null, role: s.dtlsRole || null };
      }
    });
    out.outbound.sort((a, b) => a.frameWidth - b.frameWidth);
    // The RTP timestamp of the last video packet received (and when, in ms): shows whether
    // the timeline stays continuous across a simulcast layer switch.
    const rx = this.pc.getReceivers().find((r) => r.track && r.track.kind === 'video');
    const src = rx && rx.getSynchronizationSources()[0];
    if (out.video && src) {
      out.video.rtpTimestamp = src.rtpTimestamp;
      out.video.rtpAt = Math.round(src.timestamp);
    }
    return out;
  }

  debug() {
    return {
      log: LOG.slice(-80),
      localOffer: this.localOffer || null,
      offerSdp: this.offerSdp,
      answerSdp: this.answerSdp,
      localCandidates: this.localCandidates,
      remoteCandidates: this.remoteCandidates,
    };
  }
}

window.talk = new Call();
