"""A process of synthetic media clients for ``bench/media.py`` (started by it, not by hand).

    media_peer.py --design telemed|stock --url URL --media MEDIA.pickle --clients CLIENTS.json
                  [--no-record] [--spread REDIS_URL]

Each client opens one aiortc peer connection to the server and sends pre-encoded VP8
(640x480, 30 fps) and Opus (20 ms frames) as ``av.Packet``s, which aiortc's sender
re-packetises without encoding. What it receives is counted as encoded frames, taken
before aiortc's decoder (nothing is decoded), so a client costs little CPU.

- ``telemed``: the room protocol over Socket.IO: ``room:join``, ``recording:consent``,
  ``rtc:offer`` (ack: the answer), the server's ``rtc:offer`` answered with
  ``rtc:answer``; the doctor sends ``recording:start`` once the patient is in (not with
  ``--no-record``).
  With ``--spread`` (several server processes on one port, ``bench/scale.py``) each
  client first watches its consultation (``consultation:subscribe``) and reads from the
  servers' Redis which process its socket reached (``telemed:presence:<consultation>``);
  the doctor connects again until its socket is on another process than the patient's.
- ``stock``: one HTTP offer/answer with ``bench/stock_media_server.py``.

Control is line-based. On stdout: ``{"event": "ready"}`` once every client of the process
sends and receives both kinds (and, for Telemed, the recording is on), or
``{"event": "failed", ...}``. On stdin: ``log T0 T1`` answers ``{"event": "log",
"clients": [...]}``: for each client, when it sent each frame and when it received each
frame with which timestamp, from ``T0`` minus a margin on (``time.monotonic()``: one clock
for every process of the machine), and the keyframe requests it got in [T0, T1);
``bench/media.py`` matches them up. ``stop`` closes everything and answers
``{"event": "stopped"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import fractions
import json
import logging
import pickle
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import av
import redis.asyncio
import socketio
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


def _loopback(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
    return ["127.0.0.1"]


# aioice offers every interface but loopback; the bench runs on loopback only.
aioice.ice.get_host_addresses = _loopback

KINDS = ("video", "audio")
CLOCK = {"video": 90000, "audio": 48000}
STEP = {"video": 3000, "audio": 960}  # one frame: 1/30 s, 20 ms
INTERVAL = {"video": 1 / 30, "audio": 0.02}
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
LOG_MARGIN = 10.0
"""Seconds of frames logged before the window: enough to line up the two ends."""


@dataclass
class EncodedMedia:
    """Pre-encoded frames, cycled: VP8 (the first is a keyframe) and Opus."""

    video: list[bytes]
    video_keyframes: list[int]
    audio: list[bytes]

    @classmethod
    def load(cls, path: Path) -> EncodedMedia:
        data = pickle.loads(path.read_bytes())  # noqa: S301 - written by bench/media.py
        return cls(data["video"], data["video_keyframes"], data["audio"])


class EncodedTrack(MediaStreamTrack):
    """Sends pre-encoded frames in real time; a keyframe request (PLI/FIR from the
    server) makes the next frame the clip's next keyframe."""

    def __init__(self, kind: str, frames: list[bytes], keyframes: list[int]) -> None:
        super().__init__()
        self.kind = kind
        self._frames = frames
        self._keyframes = keyframes or [0]
        self._index = 0
        self._count = 0
        self._began: float | None = None
        self._time_base = fractions.Fraction(1, CLOCK[kind])
        self.sent: list[float] = []
        """When each frame went to the sender (monotonic); frame n has pts n * STEP."""
        self.keyframe_requests: list[float] = []

    def request_keyframe(self) -> None:
        self.keyframe_requests.append(time.monotonic())
        position = self._index % len(self._frames)
        later = [k for k in self._keyframes if k >= position]
        self._index += (later[0] if later else len(self._frames)) - position

    async def recv(self) -> av.Packet[Any]:  # a packet: the sender does not encode it
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._began is None:
            self._began = now
        due = self._began + self._count * INTERVAL[self.kind]
        if due > now:
            await asyncio.sleep(due - now)
        packet = av.Packet(self._frames[self._index % len(self._frames)])
        packet.pts = packet.dts = self._count * STEP[self.kind]
        packet.time_base = self._time_base
        self._index += 1
        self._count += 1
        self.sent.append(time.monotonic())
        return packet


class CountingQueue(queue.Queue[Any]):
    """Stands in for an aiortc receiver's decoder queue: notes the encoded frames and
    drops them (the decoder thread only ever sees the final ``None``)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[float] = []
        """When each frame arrived (monotonic; ``put`` runs on the event loop)."""
        self.timestamps: list[int] = []
        """Each frame's RTP timestamp as the receiver maps it (from 0)."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(item, block, timeout)
        else:
            self.frames.append(time.monotonic())
            self.timestamps.append(item[1].timestamp)


@dataclass
class ClientSpec:
    name: str
    role: str  # "patient" or "doctor"
    room: str  # the consultation id (Telemed) or a room name (stock)
    token: str = ""


@dataclass
class Client:
    spec: ClientSpec
    media: EncodedMedia
    pc: RTCPeerConnection | None = None
    sio: socketio.AsyncClient | None = None
    sending: dict[str, EncodedTrack] = field(default_factory=dict)
    receiving: dict[str, CountingQueue] = field(default_factory=dict)
    ready_seconds: float = 60.0
    record: bool = True
    """Whether the doctor starts the recording (Telemed)."""
    spread: str | None = None
    """The servers' Redis URL: put the doctor's socket on another process than the
    patient's (Telemed)."""
    node: str | None = None
    """The server process the socket reached (with ``spread``)."""
    connects: int = 0
    recording: bool = False
    server_offers: int = 0
    error: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "room": self.spec.room,
            "name": self.spec.name,
            "recording": self.recording,
            "state": self.pc.connectionState if self.pc is not None else "none",
            "node": self.node,
            "connects": self.connects,
        }

    def log(self, began: float, ended: float) -> dict[str, Any]:
        """The frames sent and received from ``began - LOG_MARGIN`` on (monotonic seconds),
        and the keyframe requests in [began, ended)."""
        since = began - LOG_MARGIN
        sent = {}
        for kind, track in self.sending.items():
            first = bisect.bisect_left(track.sent, since)
            sent[kind] = {"first": first, "times": [round(t, 6) for t in track.sent[first:]]}
        received = {}
        for kind, tap in self.receiving.items():
            first = bisect.bisect_left(tap.frames, since)
            received[kind] = {
                "times": [round(t, 6) for t in tap.frames[first:]],
                "timestamps": tap.timestamps[first:],
            }
        requests = sum(
            bisect.bisect_left(t.keyframe_requests, ended)
            - bisect.bisect_left(t.keyframe_requests, began)
            for t in self.sending.values()
        )
        return self.status() | {
            "sent": sent,
            "received": received,
            "keyframe_requests": requests,
        }

    def flowing(self) -> bool:
        return all(
            kind in self.sending
            and self.sending[kind].sent
            and kind in self.receiving
            and len(self.receiving[kind].frames) >= 5
            for kind in KINDS
        )

    def new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        video = EncodedTrack("video", self.media.video, self.media.video_keyframes)
        audio = EncodedTrack("audio", self.media.audio, [])
        for track in (video, audio):
            sender = pc.addTrack(track)
            self.sending[track.kind] = track
            _obey_keyframe_requests(sender, track)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    self.receiving[track.kind] = _tap(transceiver.receiver)

        return pc

    async def connect(self, url: str) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("rtc:offer", self._on_server_offer)
        sio.on("recording:state_changed", self._on_recording)
        await sio.connect(
            url, auth={"token": self.spec.token}, transports=["websocket"], wait_timeout=30
        )
        self.sio = sio
        self.connects += 1
        return sio

    async def spread_out(self, url: str, redis_url: str) -> None:
        """Connect until this socket's process is known and, for the doctor, is not the
        patient's (a new connection lands on any process sharing the port)."""
        key = f"telemed:presence:{self.spec.room}"
        store = redis.asyncio.from_url(redis_url)
        try:
            async with asyncio.timeout(self.ready_seconds):
                while True:
                    sio = await self.connect(url)
                    await self._call("consultation:subscribe", {"consultation_id": self.spec.room})
                    nodes = {}
                    while True:  # presence is written after the subscribe's answer
                        members = [m.decode().split("|") for m in await store.zrange(key, 0, -1)]
                        nodes = {sid: node for _user, node, sid in members}
                        mine = nodes.get(sio.get_sid() or "")
                        others = {node for sid, node in nodes.items() if sid != sio.get_sid()}
                        if mine and (self.spec.role == "patient" or others):
                            break
                        await asyncio.sleep(0.1)
                    self.node = mine
                    if self.spec.role == "patient" or mine not in others:
                        return
                    await sio.disconnect()
        finally:
            await store.aclose()

    async def start_telemed(self, url: str) -> None:
        if self.spread:
            await self.spread_out(url, self.spread)
        else:
            await self.connect(url)
        sio = self.sio
        assert sio is not None
        room = {"consultation_id": self.spec.room}
        joined = await self._call("room:join", room)
        self.recording = joined["recording"]["active"]
        # Consent before publishing: the doctor starts the recording once it sees us.
        await self._call("recording:consent", {**room, "granted": True})
        pc = self.new_pc()
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self._call("rtc:offer", {**room, "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        if self.spec.role == "doctor" and self.record:
            async with asyncio.timeout(self.ready_seconds):
                while not self.flowing():  # noqa: ASYNC110 - counters, not an event
                    await asyncio.sleep(0.1)
                while not self.recording:  # the patient's consent may still be on its way
                    ack = await sio.call("recording:start", room, timeout=30)
                    if ack["ok"]:
                        self.recording = True
                        break
                    await asyncio.sleep(0.2)

    async def start_stock(self, url: str, http: aiohttp.ClientSession) -> None:
        pc = self.new_pc()
        await pc.setLocalDescription(await pc.createOffer())
        body = {
            "room": self.spec.room,
            "participant": self.spec.name,
            "sdp": pc.localDescription.sdp,
            "type": pc.localDescription.type,
        }
        async with http.post(f"{url}/offer", json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        self.recording = self.record  # the stock server records from the first frame

    async def _call(self, event: str, data: dict[str, Any]) -> Any:
        assert self.sio is not None
        ack = await self.sio.call(event, data, timeout=30)
        if not ack["ok"]:
            raise RuntimeError(f"{event}: {ack['error']}")
        return ack["data"]

    async def _on_server_offer(self, data: dict[str, Any]) -> None:
        pc = self.pc
        if pc is None or data["consultation_id"] != self.spec.room:
            return
        self.server_offers += 1
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._call(
            "rtc:answer", {"consultation_id": self.spec.room, "sdp": pc.localDescription.sdp}
        )

    async def _on_recording(self, data: dict[str, Any]) -> None:
        if data["consultation_id"] == self.spec.room:
            self.recording = data["recording"]["active"]

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        if self.sio is not None and self.sio.connected:
            await self.sio.disconnect()


def _tap(receiver: RTCRtpReceiver) -> CountingQueue:
    """Count ``receiver``'s encoded frames instead of decoding them. Call inside
    ``pc.on("track")``, before the receiver starts its decoder thread."""
    tap = CountingQueue()
    setattr(receiver, _DECODER_QUEUE, tap)
    return tap


def _obey_keyframe_requests(sender: RTCRtpSender, track: EncodedTrack) -> None:
    """A sender of packets has no encoder to force a keyframe: let the track do it."""
    sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign] # private


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace, media: EncodedMedia, specs: list[ClientSpec]) -> None:
    clients = [
        Client(
            spec, media, ready_seconds=args.ready_seconds, record=args.record, spread=args.spread
        )
        for spec in specs
    ]
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    async with aiohttp.ClientSession() as http:

        async def start(client: Client) -> None:
            try:
                if args.design == "telemed":
                    await client.start_telemed(args.url)
                else:
                    await client.start_stock(args.url, http)
                async with asyncio.timeout(client.ready_seconds):
                    while not (  # noqa: ASYNC110 - counters, not an event
                        client.flowing() and client.recording == client.record
                    ):
                        await asyncio.sleep(0.1)
            except Exception as exc:
                client.error = f"{type(exc).__name__}: {exc}"
                raise

        results = await asyncio.gather(*(start(c) for c in clients), return_exceptions=True)
        failures = [c.status() | {"error": c.error} for c in clients if c.error]
        if any(isinstance(r, BaseException) for r in results):
            emit({"event": "failed", "clients": failures})
        else:
            emit({"event": "ready"})
        while line := (await commands.readline()).decode().strip():
            command, *values = line.split()
            if command == "log":
                began, ended = (float(v) for v in values)
                emit({"event": "log", "clients": [c.log(began, ended) for c in clients]})
            elif command == "stop":
                break
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    emit({"event": "stopped"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--design", choices=("telemed", "stock"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--media", required=True, help="pre-encoded frames (bench/media.py)")
    parser.add_argument("--clients", required=True, help="JSON list of client specs")
    parser.add_argument("--ready-seconds", type=float, default=60)
    parser.add_argument(
        "--no-record", dest="record", action="store_false", help="nobody starts a recording"
    )
    parser.add_argument(
        "--spread", metavar="REDIS_URL", help="the doctor's socket on another process (Telemed)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    media = EncodedMedia.load(Path(args.media))
    specs = [ClientSpec(**spec) for spec in json.loads(Path(args.clients).read_text())]
    asyncio.run(run(args, media, specs))


if __name__ == "__main__":
    main()
