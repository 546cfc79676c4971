"""aiortc client peers for room tests: a synthetic camera whose picture changes every
frame, a sine-tone microphone, and a client that joins a room over Socket.IO and counts
what it decodes of each other participant."""

from __future__ import annotations

import asyncio
import fractions
import math
import struct
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import av
import pytest
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from telemed.clock import FakeClock
from tests.factories import AppClient
from tests.flows import ok
from tests.realtime import Peer, open_peer

_FRAMES: dict[tuple[int, int, str], list[list[bytes]]] = {}


def _rendered(width: int, height: int, source: str) -> list[list[bytes]]:
    """Thirty frames of an ffmpeg test source as YUV 4:2:0 planes (rendered once per
    process; each camera makes frames of its own from them: an encoder must not see
    another camera change a frame it is encoding)."""
    key = (width, height, source)
    if key not in _FRAMES:
        frames = []
        blank = av.VideoFrame(width, height, "yuv420p")  # the rows of a camera's frames
        spec = source.format(size=f"{width}x{height}")
        with av.open(spec, format="lavfi") as container:
            for frame in container.decode(video=0):
                picture = frame.reformat(format="yuv420p")
                frames.append(
                    [
                        _restride(bytes(plane), plane.line_size, plane.height, into.line_size)
                        for plane, into in zip(picture.planes, blank.planes, strict=True)
                    ]
                )
                if len(frames) == 30:
                    break
        _FRAMES[key] = frames
    return _FRAMES[key]


def _restride(data: bytes, line_size: int, rows: int, into: int) -> bytes:
    """A plane's rows, from ``line_size`` bytes apart to ``into`` bytes apart."""
    width = min(line_size, into)
    return b"".join(
        data[row * line_size : row * line_size + width].ljust(into, b"\0") for row in range(rows)
    )


class SynthCamera(VideoStreamTrack):
    """640x480 at 30 fps; ``testsrc2`` moves every frame, ``black`` is a black picture."""

    def __init__(self, width: int = 640, height: int = 480, *, black: bool = False) -> None:
        super().__init__()
        source = "color=c=black:size={size}:rate=30" if black else "testsrc2=size={size}:rate=30"
        self._size = (width, height)
        self._frames = _rendered(width, height, source)
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        planes = self._frames[self._index % len(self._frames)]
        self._index += 1
        frame = av.VideoFrame(*self._size, "yuv420p")
        for plane, data in zip(frame.planes, planes, strict=True):
            plane.update(data)
        frame.pts, frame.time_base = pts, time_base
        return frame


class SineMicrophone(AudioStreamTrack):
    """A 440 Hz tone (or silence), 48 kHz stereo, 20 ms frames in real time."""

    RATE = 48000
    SAMPLES = 960

    def __init__(self, *, silent: bool = False) -> None:
        super().__init__()
        amplitude = 0 if silent else 8000
        pcm = b"".join(
            struct.pack("<hh", value, value)
            for value in (
                int(amplitude * math.sin(2 * math.pi * 440 * i / self.RATE))
                for i in range(self.RATE)
            )
        )
        step = self.SAMPLES * 4
        self._chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        self._index = 0
        self._began: float | None = None
        self._sent = 0

    async def recv(self) -> av.AudioFrame:
        if self._began is None:
            self._began = time.time()
        else:
            self._sent += self.SAMPLES
            await asyncio.sleep(self._began + self._sent / self.RATE - time.time())
        frame = av.AudioFrame(format="s16", layout="stereo", samples=self.SAMPLES)
        frame.planes[0].update(self._chunks[self._index % len(self._chunks)])
        self._index += 1
        frame.pts, frame.sample_rate = self._sent, self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


class MediaClient:
    """A room participant: joins over its socket, sends its tracks, decodes the others'."""

    def __init__(
        self,
        peer: Peer,
        consultation_id: str,
        *,
        camera: Callable[[], MediaStreamTrack] | None = None,
        microphone: Callable[[], MediaStreamTrack] | None = None,
        configuration: Callable[[], RTCConfiguration] | None = None,
    ) -> None:
        """``camera`` and ``microphone`` make a fresh track for each peer connection;
        ``configuration`` its ICE servers and policy (none: host candidates only)."""
        self.peer = peer
        self.configuration = configuration or (lambda: RTCConfiguration(iceServers=[]))
        self.consultation_id = consultation_id
        self.camera = camera
        self.microphone = microphone
        self.pc: RTCPeerConnection | None = None
        self.decoded: dict[str, int] = defaultdict(int)
        self.sizes: set[tuple[int, int]] = set()
        self.server_offers = 0
        self.labels: dict[str, dict[str, Any]] = {}
        self._consumers: list[asyncio.Task[None]] = []
        self.moves: list[str] = []
        """The reasons of the ``room:rejoin`` events followed."""
        self._moving: asyncio.Task[None] | None = None
        self.trickled: list[dict[str, Any]] = []
        self.attach(peer)

    def attach(self, peer: Peer) -> None:
        """Use ``peer``'s socket (a new connection, maybe to another node) from now on;
        follow the room when the server says it moves (``room:rejoin``)."""
        self.peer = peer
        peer.sio.on("rtc:offer", self._on_server_offer)
        peer.sio.on("room:rejoin", self._on_rejoin)

    def receives_video(self) -> bool:
        return self.decoded["video"] >= 10

    async def join(self) -> dict[str, Any]:
        return await self.peer.call("room:join", {"consultation_id": self.consultation_id})

    async def rejoin(self, seconds: float = 20) -> None:
        """Join again and connect new media, as a browser does after a drop or a
        ``room:rejoin``: trying again while the server says it is ``unavailable`` (the
        room's node is gone, and the room not placed anew yet)."""
        async with asyncio.timeout(seconds):
            while True:
                joined = await self.join()
                if joined["ok"]:
                    offered = await self.connect_media()
                    if offered["ok"]:
                        return
                    joined = offered
                assert joined["error"]["code"] == "unavailable", joined
                await asyncio.sleep(0.5)

    async def _on_rejoin(self, data: dict[str, Any]) -> None:
        if data["consultation_id"] != self.consultation_id:
            return
        self.moves.append(data["reason"])
        # Not in the event handler: the socket's other events (the new room's offer) must
        # go on arriving meanwhile.
        self._moving = asyncio.ensure_future(self.rejoin())

    async def moved(self) -> None:
        """Wait for the rejoin a ``room:rejoin`` started (raising what it raised)."""
        assert self._moving is not None, "no room:rejoin came"
        await self._moving

    async def connect_media(self, *, trickle: bool = False) -> dict[str, Any]:
        """A new peer connection (the first, or a rejoin): offer it, apply the answer.
        ``trickle``: the offer goes without its candidates, which follow the answer as
        ``rtc:candidate`` events (aiortc gathers before it offers: this is how a browser
        that trickles looks to the server); ``self.trickled`` keeps their acks."""
        if self.pc is not None:
            await self.pc.close()
        pc = RTCPeerConnection(self.configuration())
        self.pc = pc
        if self.camera is not None:
            pc.addTrack(self.camera())
        if self.microphone is not None:
            pc.addTrack(self.microphone())
        if self.camera is None and self.microphone is None:
            pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._consumers.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        lines = sdp.split("\r\n")
        candidates = [line.removeprefix("a=") for line in lines if line.startswith("a=candidate:")]
        if trickle:
            sdp = "\r\n".join(
                x for x in lines if not x.startswith(("a=candidate:", "a=end-of-candidates"))
            )
        ack = await self.peer.call(
            "rtc:offer", {"consultation_id": self.consultation_id, "sdp": sdp}
        )
        if ack["ok"]:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=ack["data"]["sdp"], type="answer")
            )
            if trickle:
                ufrag = next(x for x in lines if x.startswith("a=ice-ufrag:")).split(":", 1)[1]
                for line in [*candidates, ""]:
                    self.trickled.append(await self.trickle(line, username_fragment=ufrag))
        return ack

    async def estimate(self, bitrate: int) -> None:
        """Say, as a browser's REMB does, that this link takes ``bitrate`` bits/s of the
        video it receives. The client's own estimator is switched off first, so that
        only these figures reach the server."""
        assert self.pc is not None
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if transceiver.kind != "video" or transceiver.direction == "sendonly":
                continue
            state = receiver.__dict__
            state["_RTCRtpReceiver__remote_bitrate_estimator"] = None
            sources = [source.source for source in receiver.getSynchronizationSources()]
            if not sources:
                continue
            await receiver._send_rtcp(
                RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP,
                    ssrc=state["_RTCRtpReceiver__rtcp_ssrc"],
                    media_ssrc=0,
                    fci=pack_remb_fci(bitrate, sources),
                )
            )

    async def trickle(self, line: str, **fields: Any) -> dict[str, Any]:
        """One ``rtc:candidate`` (on the first media section)."""
        return await self.peer.call(
            "rtc:candidate",
            {"consultation_id": self.consultation_id, "candidate": line, "sdp_mid": "0", **fields},
        )

    async def _on_server_offer(self, data: dict[str, Any]) -> None:
        pc = self.pc
        if pc is None or data["consultation_id"] != self.consultation_id:
            return
        self.server_offers += 1
        self.labels = {label["mid"]: label for label in data["tracks"]}
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        ack = await self.peer.sio.call(
            "rtc:answer",
            {"consultation_id": self.consultation_id, "sdp": pc.localDescription.sdp},
            timeout=10,
        )
        assert ack["ok"], ack

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.decoded[track.kind] += 1
            if isinstance(frame, av.VideoFrame):
                self.sizes.add((frame.width, frame.height))

    async def close(self) -> None:
        if self._moving is not None:
            self._moving.cancel()
        for task in self._consumers:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()


@pytest.fixture
async def media(peers: list[Peer]) -> AsyncIterator[list[MediaClient]]:
    """The media clients a test opened, closed after it."""
    opened: list[MediaClient] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
async def room(booked: dict[str, Any], client: AppClient, clock: FakeClock) -> dict[str, Any]:
    """A booked consultation, five minutes before its start (the room is open)."""
    consultation = await ok(
        client, "GET", f"/consultations/{booked['id']}", booked["patient"]["token"]
    )
    starts = datetime.fromisoformat(consultation["starts_at"])
    clock.advance(starts - timedelta(minutes=5) - clock.now())
    return booked


async def participant(
    client: AppClient, peers: list[Peer], media: list[MediaClient], token: str, cid: str
) -> MediaClient:
    """A media client with the synthetic camera and microphone (not joined yet)."""
    peer = await open_peer(client, peers, token)
    member = MediaClient(peer, cid, camera=SynthCamera, microphone=SineMicrophone)
    media.append(member)
    return member


@pytest.fixture
async def room_doctor(
    room: dict[str, Any], client: AppClient, peers: list[Peer], media: list[MediaClient]
) -> MediaClient:
    """The doctor (an aiortc peer) in the room, sending and receiving."""
    doctor = await participant(client, peers, media, room["doctor"]["token"], room["id"])
    assert (await doctor.join())["ok"]
    assert (await doctor.connect_media())["ok"]
    return doctor
