"""The stock aiortc design of a recorded 1:1 call, the baseline of ``bench/media.py``.

    stock_media_server.py --port PORT --out DIR [--no-record]

What aiortc's examples do: each participant's tracks are decoded by aiortc's receiver,
fanned out by one ``MediaRelay`` to the other participant (re-encoded by that
connection's sender) and to the participant's own ``MediaRecorder`` (re-encoded into a
WebM file under ``--out``). One peer connection per participant; ``POST /offer`` with
``{room, participant, sdp, type}`` answers ``{sdp, type}``. Participants of a room send
to each other both ways; a participant that is not there yet is waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import aioice.ice
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRecorder, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


def _loopback(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
    return ["127.0.0.1"]


aioice.ice.get_host_addresses = _loopback


class Forwarded(MediaStreamTrack):
    """What a participant receives of the other: frames of a relay subscription to the
    other's track, once the other has arrived."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._source: MediaStreamTrack | None = None
        self._arrived = asyncio.Event()

    def attach(self, source: MediaStreamTrack) -> None:
        self._source = source
        self._arrived.set()

    async def recv(self):  # type: ignore[no-untyped-def] # a frame, whatever aiortc gives
        await self._arrived.wait()
        if self._source is None or self.readyState != "live":
            raise MediaStreamError
        return await self._source.recv()


@dataclass
class Participant:
    name: str
    pc: RTCPeerConnection
    recorder: MediaRecorder | None
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    forwarded: dict[str, Forwarded] = field(default_factory=dict)


class Server:
    def __init__(self, out: Path, *, record: bool = True) -> None:
        self.out = out
        self.record = record
        self.relay = MediaRelay()
        self.rooms: dict[str, dict[str, Participant]] = {}

    async def offer(self, request: web.Request) -> web.Response:
        """POST /offer {room, participant, sdp, type} → {sdp, type}"""
        body = await request.json()
        room = self.rooms.setdefault(body["room"], {})
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        path = self.out / f"{body['room']}-{body['participant']}.webm"
        recorder = MediaRecorder(str(path)) if self.record else None
        participant = Participant(body["participant"], pc, recorder)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            participant.tracks[track.kind] = track

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        for kind, track in participant.tracks.items():
            forwarded = Forwarded(kind)
            participant.forwarded[kind] = forwarded
            pc.addTrack(forwarded)
            if recorder is not None:
                recorder.addTrack(self.relay.subscribe(track, buffered=False))
        for other in room.values():
            _connect(self.relay, other, participant)
            _connect(self.relay, participant, other)
        room[participant.name] = participant
        await pc.setLocalDescription(await pc.createAnswer())
        if recorder is not None:
            await recorder.start()
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def close(self, _app: web.Application) -> None:
        for room in self.rooms.values():
            for participant in room.values():
                if participant.recorder is not None:
                    with contextlib.suppress(Exception):
                        await participant.recorder.stop()
                with contextlib.suppress(Exception):
                    await participant.pc.close()
        self.rooms.clear()


def _connect(relay: MediaRelay, publisher: Participant, viewer: Participant) -> None:
    """``viewer`` receives ``publisher``'s tracks (through the relay)."""
    for kind, track in publisher.tracks.items():
        forwarded = viewer.forwarded.get(kind)
        if forwarded is not None:
            forwarded.attach(relay.subscribe(track, buffered=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory of the recordings")
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    server = Server(args.out, record=args.record)
    app = web.Application()
    app.router.add_post("/offer", server.offer)
    app.router.add_get("/healthz", server.healthz)
    app.on_shutdown.append(server.close)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
