#!/usr/bin/env python3
"""A Talk call client for hpb's end-to-end tests: speaks the signaling protocol the way the
Talk web client does with an MCU (hello v1, room join, offer to its own session to publish,
requestoffer to subscribe, trickled candidates in Talk's nested shape) and does WebRTC with
aiortc.

  talk_client.py publish   --ws URL --backend URL --user U --ticket T --room R --seconds S
  talk_client.py subscribe --ws URL --backend URL --user U --ticket T --room R --seconds S
                           --publisher SESSIONID
  talk_client.py screenshare ... --targets ID,ID   (publish roomType screen, then sendoffer
                           to the targets; at the end unshareScreen)
  talk_client.py watch ...  (answer the first screen offer pushed to us)

With --turn URL --turn-user U --turn-password P the media goes only through that TURN
server (relay-only ICE, as a client behind a strict firewall).

With --ipv6 the client's only ICE address is ::1 (IPv6 media).

With --drop-video-every N a subscriber throws away every Nth video RTP datagram it receives
(not retransmissions, not audio or RTCP) before aiortc sees it: forced loss, which aiortc
reports with RTCP NACKs and the SFU repairs with RTX retransmissions.

The publisher sends video whose frames carry a counter (black and white blocks) and a 440 Hz
tone, and sends `status` data-channel messages. The subscriber decodes the counter from the
frames it receives and prints one JSON line with what it saw. Everything stays on 127.0.0.1.
"""

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from fractions import Fraction

import aioice.ice
import av
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

# aioice skips loopback addresses when gathering; the tests run on 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


class ForcedLoss:
    """Drops every Nth RTP datagram of the given payload types (RFC 5761 demux: RTP has
    version 2 and a payload type outside RTCP's 64-95 after masking the marker bit)."""

    def __init__(self):
        self.every = 0
        self.pts = set()
        self.seen = 0
        self.dropped = 0

    def drop(self, data):
        if self.every <= 0 or len(data) < 12 or data[0] & 0xC0 != 0x80:
            return False
        if (data[1] & 0x7F) not in self.pts:
            return False
        self.seen += 1
        if self.seen % self.every == 0:
            self.dropped += 1
            return True
        return False


LOSS = ForcedLoss()
_datagram_received = aioice.ice.StunProtocol.datagram_received


def _lossy_datagram_received(self, data, addr):
    if isinstance(data, bytes) and LOSS.drop(data):
        return
    _datagram_received(self, data, addr)


aioice.ice.StunProtocol.datagram_received = _lossy_datagram_received


def video_primary_pts(sdp):
    """Payload types of the video codecs in an SDP, without their RTX ones."""
    pts, video = set(), False
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video")
        elif video and line.startswith("a=rtpmap:"):
            pt, codec = line[len("a=rtpmap:"):].split(" ", 1)
            if not codec.lower().startswith(("rtx/", "red/", "ulpfec/")):
                pts.add(int(pt))
    return pts

WIDTH, HEIGHT = 320, 240
BITS = 16
BLOCK = WIDTH // BITS  # 20 px wide blocks in the top band
BAND = 40


class CounterTrack(MediaStreamTrack):
    """Video frames whose top band encodes the frame number in binary."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        target = self.start + self.n / 30
        await asyncio.sleep(max(0, target - time.time()))
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        y = bytearray([128]) * (frame.planes[0].line_size * HEIGHT)
        stride = frame.planes[0].line_size
        for bit in range(BITS):
            on = (self.n >> (BITS - 1 - bit)) & 1
            value = 235 if on else 16
            for row in range(BAND):
                base = row * stride + bit * BLOCK
                y[base : base + BLOCK] = bytes([value]) * BLOCK
        frame.planes[0].update(bytes(y))
        for p in (1, 2):
            plane = frame.planes[p]
            plane.update(bytes([128]) * (plane.line_size * (HEIGHT // 2)))
        frame.pts = self.n * 3000
        frame.time_base = Fraction(1, 90000)
        self.n += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames of 48 kHz mono s16."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.samples = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        target = self.start + self.samples / 48000
        await asyncio.sleep(max(0, target - time.time()))
        n = 960
        data = bytearray()
        for i in range(n):
            v = int(8000 * math.sin(2 * math.pi * 440 * (self.samples + i) / 48000))
            data += v.to_bytes(2, "little", signed=True)
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(bytes(data))
        frame.sample_rate = 48000
        frame.pts = self.samples
        frame.time_base = Fraction(1, 48000)
        self.samples += n
        return frame


def read_counter(frame):
    """The counter in a received frame's top band, or None if it is not readable."""
    f = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
    plane = f.planes[0]
    stride = plane.line_size
    buf = bytes(plane)
    n = 0
    for bit in range(BITS):
        x = bit * BLOCK + BLOCK // 2
        v = buf[(BAND // 2) * stride + x]
        if 60 < v < 190:
            return None
        n = (n << 1) | (1 if v >= 190 else 0)
    return n


class Signaling:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.sessionid = None
        self.userid = None
        self.queue = asyncio.Queue()

    async def send(self, frame):
        self.next_id += 1
        frame["id"] = str(self.next_id)
        await self.ws.send(json.dumps(frame))
        return frame["id"]

    async def reader(self):
        async for text in self.ws:
            await self.queue.put(json.loads(text))

    async def wait(self, pred, timeout=10):
        deadline = time.time() + timeout
        kept = []
        try:
            while True:
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError("no matching frame")
                frame = await asyncio.wait_for(self.queue.get(), left)
                if pred(frame):
                    return frame
                kept.append(frame)
        finally:
            for f in kept:
                self.queue.put_nowait(f)

    async def hello(self, backend, user, ticket):
        rid = await self.send(
            {
                "type": "hello",
                "hello": {
                    "version": "1.0",
                    "auth": {"url": backend, "params": {"userid": user, "ticket": ticket}},
                },
            }
        )
        reply = await self.wait(lambda f: f.get("id") == rid)
        if reply["type"] != "hello":
            raise RuntimeError(f"hello failed: {reply}")
        self.sessionid = reply["hello"]["sessionid"]
        self.userid = reply["hello"]["userid"]

    async def join(self, room):
        rid = await self.send(
            {"type": "room", "room": {"roomid": room, "sessionid": f"talk-{uuid.uuid4()}"}}
        )
        reply = await self.wait(lambda f: f.get("id") == rid)
        if reply["type"] != "room":
            raise RuntimeError(f"join failed: {reply}")

    async def message(self, to, data):
        return await self.send(
            {
                "type": "message",
                "message": {"recipient": {"type": "session", "sessionid": to}, "data": data},
            }
        )


async def add_candidate(pc, payload):
    c = payload.get("candidate", {})
    text = c.get("candidate", "")
    if not text:
        return
    cand = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
    cand.sdpMid = c.get("sdpMid")
    cand.sdpMLineIndex = c.get("sdpMLineIndex")
    await pc.addIceCandidate(cand)


def is_mcu(frame, kind):
    return frame.get("type") == "message" and frame["message"]["data"].get("type") == kind


def peer_connection(args):
    if not args.turn:
        return RTCPeerConnection()
    server = RTCIceServer(urls=[args.turn], username=args.turn_user, credential=args.turn_password)
    return RTCPeerConnection(
        configuration=RTCConfiguration(
            iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY
        )
    )


def selected_remote(pc):
    """The remote address of the pair in use."""
    for t in pc.getTransceivers():
        ice = t.sender.transport.transport
        for p in (getattr(ice._connection, "_nominated", {}) or {}).values():
            return p.remote_candidate.host
    return None


def selected_pair(pc):
    """The local candidate type of the pair in use ("relay" when through TURN)."""
    for t in pc.getTransceivers():
        ice = t.sender.transport.transport
        pair = getattr(ice._connection, "_nominated", {}) or {}
        for p in pair.values():
            return p.local_candidate.type
    for sctp in [pc.sctp] if pc.sctp else []:
        ice = sctp.transport.transport
        for p in (getattr(ice._connection, "_nominated", {}) or {}).values():
            return p.local_candidate.type
    return None


async def publish(sig, args, result, room_type="video"):
    pc = peer_connection(args)
    video, audio = CounterTrack(), ToneTrack()
    if room_type == "video":
        pc.addTrack(audio)
    pc.addTrack(video)
    channel = pc.createDataChannel("status")
    sid = str(int(time.time() * 1000))
    await pc.setLocalDescription(await pc.createOffer())
    rid = await sig.message(
        sig.sessionid,
        {
            "to": sig.sessionid,
            "type": "offer",
            "sid": sid,
            "roomType": room_type,
            "payload": {"type": "offer", "sdp": pc.localDescription.sdp, "nick": args.user},
        },
    )
    reply = await sig.wait(lambda f: f.get("id") == rid or is_mcu(f, "answer"))
    if reply["type"] == "error":
        raise RuntimeError(f"publish refused: {reply}")
    data = reply["message"]["data"]
    result["answer_sender"] = reply["message"]["sender"]
    result["answer_sid"] = data.get("sid")
    await pc.setRemoteDescription(RTCSessionDescription(data["payload"]["sdp"], "answer"))
    if room_type == "screen":
        for target in filter(None, (args.targets or "").split(",")):
            await sig.message(target, {"to": target, "type": "sendoffer", "roomType": "screen"})
    end = time.time() + args.seconds
    sent = 0
    while time.time() < end:
        try:
            frame = await sig.wait(lambda f: is_mcu(f, "candidate"), timeout=0.5)
            await add_candidate(pc, frame["message"]["data"]["payload"])
        except (TimeoutError, asyncio.TimeoutError):
            pass
        if channel.readyState == "open":
            channel.send(json.dumps({"type": "speaking", "n": sent}))
            sent += 1
    result["ice"] = pc.iceConnectionState
    result["candidate_type"] = selected_pair(pc)
    result["remote_address"] = selected_remote(pc)
    result["frames_sent"] = video.n
    result["datachannel_sent"] = sent
    if room_type == "screen":
        # Talk's "stop sharing": the SFU closes the screen publisher a second later.
        await sig.message(sig.sessionid, {"to": sig.sessionid, "type": "unshareScreen", "roomType": "screen"})
        print(json.dumps({"unshared": True}), flush=True)
        await asyncio.sleep(args.linger)
    await pc.close()


async def subscribe(sig, args, result):
    pc = peer_connection(args)
    counters, audio = [], {"frames": 0, "energy": 0.0}
    messages = []

    @pc.on("track")
    def on_track(track):
        async def consume():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                if track.kind == "video":
                    c = read_counter(frame)
                    if c is not None:
                        counters.append(c)
                else:
                    audio["frames"] += 1
                    pcm = bytes(frame.planes[0])
                    if len(pcm) >= 2:
                        s = sum(abs(int.from_bytes(pcm[i : i + 2], "little", signed=True)) for i in range(0, len(pcm) - 1, 64))
                        audio["energy"] += s / (len(pcm) / 64)

        asyncio.ensure_future(consume())

    @pc.on("datachannel")
    def on_channel(channel):
        result.setdefault("channels", []).append(channel.label)

        @channel.on("message")
        def on_message(m):
            messages.append(m)

    offer = None
    if args.role == "watch":
        offer = await sig.wait(lambda f: is_mcu(f, "offer"), timeout=15)
        args.publisher = offer["message"]["data"].get("from")
        result["room_type"] = offer["message"]["data"].get("roomType")
    deadline = time.time() + 15
    while offer is None and time.time() < deadline:
        rid = await sig.message(
            args.publisher, {"to": args.publisher, "type": "requestoffer", "roomType": "video"}
        )
        try:
            offer = await sig.wait(
                lambda f: f.get("id") == rid and f["type"] == "error" or is_mcu(f, "offer"),
                timeout=2,
            )
        except (TimeoutError, asyncio.TimeoutError):
            continue
        if offer["type"] == "error":
            result.setdefault("errors", []).append(offer["error"])
            offer = None
            await asyncio.sleep(0.5)
    if offer is None:
        raise RuntimeError(f"no offer from the SFU: {result}")
    data = offer["message"]["data"]
    if args.drop_video_every:
        LOSS.every = args.drop_video_every
        LOSS.pts = video_primary_pts(data["payload"]["sdp"])
        result["lossy_pts"] = sorted(LOSS.pts)
    result["offer_sender"] = offer["message"]["sender"]
    result["offer_from"] = data.get("from")
    sid = data.get("sid")
    await pc.setRemoteDescription(RTCSessionDescription(data["payload"]["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await sig.message(
        args.publisher,
        {
            "to": args.publisher,
            "type": "answer",
            "sid": sid,
            "roomType": data.get("roomType", "video"),
            "payload": {"type": "answer", "sdp": pc.localDescription.sdp, "nick": args.user},
        },
    )
    end = time.time() + args.seconds
    while time.time() < end:
        try:
            frame = await sig.wait(lambda f: is_mcu(f, "candidate"), timeout=0.5)
            await add_candidate(pc, frame["message"]["data"]["payload"])
        except (TimeoutError, asyncio.TimeoutError):
            pass
    result["ice"] = pc.iceConnectionState
    result["candidate_type"] = selected_pair(pc)
    result["remote_address"] = selected_remote(pc)
    result["video_frames"] = len(counters)
    result["first_counter"] = counters[0] if counters else None
    result["last_counter"] = counters[-1] if counters else None
    result["monotonic"] = all(b > a for a, b in zip(counters, counters[1:]))
    result["audio_frames"] = audio["frames"]
    result["audio_energy"] = audio["energy"] / max(1, audio["frames"])
    result["datachannel_messages"] = len(messages)
    result["dropped_video_packets"] = LOSS.dropped
    await pc.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["publish", "subscribe", "screenshare", "watch"])
    p.add_argument("--ws", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--ticket", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--publisher")
    p.add_argument("--targets")
    p.add_argument("--linger", type=float, default=3)
    p.add_argument("--turn")
    p.add_argument("--turn-user")
    p.add_argument("--turn-password")
    p.add_argument("--drop-video-every", type=int, default=0)
    p.add_argument("--ipv6", action="store_true")
    args = p.parse_args()
    if args.ipv6:
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["::1"]
    result = {"role": args.role}
    async with websockets.connect(args.ws) as ws:
        sig = Signaling(ws)
        reader = asyncio.ensure_future(sig.reader())
        await sig.hello(args.backend, args.user, args.ticket)
        result["sessionid"] = sig.sessionid
        await sig.join(args.room)
        # Tell the test our session id at once (it starts subscribers with it).
        print(json.dumps({"ready": sig.sessionid}), flush=True)
        try:
            if args.role == "publish":
                await publish(sig, args, result)
            elif args.role == "screenshare":
                await publish(sig, args, result, room_type="screen")
            else:
                await subscribe(sig, args, result)
        except Exception as e:  # reported to the test as data, not a traceback
            result["failure"] = f"{type(e).__name__}: {e}"
        reader.cancel()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
