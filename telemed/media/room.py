"""A consultation's video room on this node: one server peer connection per participant,
encoded frames forwarded from each publisher to every other participant.

Signalling (``telemed.signaling.room_handlers``): a participant's ``rtc:offer`` makes a
new server peer connection for it (replacing the one it had: a reload or a broken
connection is a rejoin); its tracks are tapped and forwarded. What it should receive
from the others is added by the server, which then offers (``rtc:offer`` to the
participant's socket) and takes the participant's ``rtc:answer``. A viewer's tracks
belong to the publisher's identity, so a publisher's rejoin needs no renegotiation on
the viewers' side: the new connection's frames flow into the same tracks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack

from telemed.errors import Forbidden, InvalidInput, InvalidState
from telemed.live import ServerEvent
from telemed.media.checks import MediaStatus, Permission, check_camera, check_microphone
from telemed.media.passthrough import (
    PassthroughTrack,
    Tap,
    ask_keyframe,
    forward_keyframe_requests,
    tap_receiver,
)
from telemed.media.recorder import RemuxRecorder
from telemed.media.recordings import RecordingLog
from telemed.signaling.events import ServerOffer, TrackLabel

logger = logging.getLogger(__name__)

MAX_PARTICIPANTS = 4
KEYFRAME_REQUEST_GAP = 0.3
"""Seconds between two keyframe requests to one publisher (viewers ask in bursts)."""
KINDS = ("audio", "video")
CODECS = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}

Send = Callable[[ServerEvent, str], Awaitable[None]]
"""Send an event to one participant's socket (its sid)."""
Announce = Callable[["Room", "Participant"], Awaitable[None]]
"""Tell the room a participant's media status changed."""
AnnounceRecording = Callable[["Room"], Awaitable[None]]
"""Tell the room the recording started or stopped, or a consent changed."""


@dataclass
class Hooks:
    """What a room needs from the rest of the server."""

    send: Send
    media_changed: Announce
    recording_changed: AnnounceRecording
    log: RecordingLog


@dataclass
class Segment:
    """The file a participant is being recorded into."""

    recorder: RemuxRecorder
    recording_id: uuid.UUID


@dataclass
class Publication:
    """A track a participant sends, on its current connection."""

    kind: str
    receiver: RTCRtpReceiver
    track: MediaStreamTrack
    tap: Tap | None = None
    frames: int = 0
    _last_keyframe_request: float = 0.0

    def ask_keyframe(self) -> None:
        moment = time.monotonic()
        if moment - self._last_keyframe_request < KEYFRAME_REQUEST_GAP:
            return
        self._last_keyframe_request = moment
        task = asyncio.ensure_future(ask_keyframe(self.receiver))
        task.add_done_callback(_log_failure)


@dataclass
class Participant:
    user_id: str
    role: str
    sid: str
    pc: RTCPeerConnection | None = None
    publications: dict[str, Publication] = field(default_factory=dict)
    # (publisher's user id, kind) → what this participant receives of that publisher,
    # and the transceiver that carries it (its mid tells the client whose track it is).
    viewing: dict[tuple[str, str], PassthroughTrack] = field(default_factory=dict)
    carriers: dict[tuple[str, str], RTCRtpTransceiver] = field(default_factory=dict)
    negotiating: bool = False
    renegotiate_after: bool = False
    status: MediaStatus = field(default_factory=MediaStatus)
    numbering: Numbering | None = None
    """The payload types and header extension ids the participant's side chose."""
    checks: list[asyncio.Task[None]] = field(default_factory=list)


class Room:
    def __init__(
        self, consultation_id: str, *, hooks: Hooks, ice_servers: list[RTCIceServer]
    ) -> None:
        self.consultation_id = consultation_id
        self._hooks = hooks
        self._send = hooks.send
        self._announce = hooks.media_changed
        self._ice_servers = ice_servers
        self.participants: dict[str, Participant] = {}
        self.closed = False
        # Recording: consents by user (identity, not connection), and each recorded
        # participant's current file.
        self.consents: dict[str, bool] = {}
        self.recording = False
        self._segments: dict[str, Segment] = {}
        self._segment_counts: dict[str, int] = {}

    async def join(self, *, user_id: str, role: str, sid: str) -> Participant:
        """Enter the room, or take over one's place in it from a new socket."""
        if self.closed:
            raise InvalidState("The consultation's room is closed")
        participant = self.participants.get(user_id)
        if participant is None:
            if len(self.participants) >= MAX_PARTICIPANTS:
                raise InvalidState(
                    f"A room holds at most {MAX_PARTICIPANTS} participants",
                    details={"max": MAX_PARTICIPANTS},
                )
            participant = Participant(user_id=user_id, role=role, sid=sid)
            self.participants[user_id] = participant
        moved = participant.sid != sid
        participant.sid = sid
        pc = participant.pc
        if moved and pc is not None and pc.signalingState == "have-local-offer":
            # The socket that should have answered the server's offer is gone: offer the
            # new one the same description (the connection is still waiting for it).
            resend = asyncio.ensure_future(self._send_offer(participant, pc))
            resend.add_done_callback(_log_failure)
        if self.recording and not self.consents.get(user_id, False):
            # Everyone present must have consented: a newcomer who has not stops it.
            await self.stop_recording()
        return participant

    async def leave(self, user_id: str) -> bool:
        """Leave the room; returns whether the user was in it."""
        participant = self.participants.pop(user_id, None)
        if participant is None:
            return False
        await self._close_segment(user_id)
        await self._close_connection(participant)
        for other in self.participants.values():
            for kind in KINDS:
                track = other.viewing.get((user_id, kind))
                if track is not None:
                    # Kept (the m-line stays) but idle; a return feeds it again.
                    track.restart()
        return True

    async def offer(self, user_id: str, sdp: str) -> str:
        """A participant's offer: a new server connection for it; returns the answer."""
        participant = self._member(user_id)
        await self._close_segment(user_id)
        await self._close_connection(participant)
        # Everything on one transport, also in the server's own offers (aiortc's default
        # policy would offer new m-lines unbundled, and browsers then move them away).
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        participant.pc = pc
        participant.negotiating = False
        participant.renegotiate_after = False
        participant.numbering = Numbering.of(sdp)
        arrived: list[Publication] = []

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver = _transceiver_of(pc, track)
            if transceiver is None or track.kind not in KINDS:
                return
            publication = Publication(track.kind, transceiver.receiver, track)
            publication.tap = tap_receiver(
                transceiver.receiver, self._forwarder(participant, publication)
            )
            participant.publications[track.kind] = publication
            arrived.append(publication)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if participant.pc is not pc:
                return
            if pc.connectionState == "connected" and participant.renegotiate_after:
                participant.renegotiate_after = False
                self._schedule_renegotiation(participant)
            elif pc.connectionState == "failed":
                # The participant rejoins with a new offer; until then nothing flows.
                logger.info("a media connection failed in a room")

        try:
            if not _has_media(sdp):
                raise ValueError("no media section")
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=without_mdns_candidates(sdp), type="offer")
            )
        except (ValueError, KeyError, IndexError, InvalidAccessError, InvalidStateError) as exc:
            await pc.close()
            participant.pc = None
            raise InvalidInput("The offer is not a valid session description") from exc
        for transceiver in pc.getTransceivers():
            _prefer_codecs(transceiver)
        await pc.setLocalDescription(await pc.createAnswer())
        for publication in arrived:
            for other in self.participants.values():
                track = other.viewing.get((user_id, publication.kind))
                if track is not None:
                    track.restart()
            publication.ask_keyframe()
        self._check_media(participant)
        if self.recording:
            # A rejoin while recording: the recording goes on, in a new segment file.
            await self._open_segment(participant)
        # What this participant should receive, and the others of its new tracks, come
        # in server offers (this participant's once its connection is up).
        for member in list(self.participants.values()):
            self._schedule_renegotiation(member)
        return str(pc.localDescription.sdp)

    async def answer(self, user_id: str, sdp: str) -> None:
        """A participant's answer to the server's last offer."""
        participant = self._member(user_id)
        pc = participant.pc
        if pc is None or pc.signalingState != "have-local-offer":
            raise InvalidState("No offer of the server is waiting for an answer")
        try:
            if not _has_media(sdp):
                raise ValueError("no media section")
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=without_mdns_candidates(sdp), type="answer")
            )
        except (ValueError, KeyError, IndexError, InvalidAccessError, InvalidStateError) as exc:
            raise InvalidInput("The answer is not a valid session description") from exc
        participant.negotiating = False
        if participant.renegotiate_after:
            participant.renegotiate_after = False
            self._schedule_renegotiation(participant)

    async def report(
        self,
        user_id: str,
        *,
        camera: Permission,
        microphone: Permission,
        camera_enabled: bool = True,
        microphone_enabled: bool = True,
    ) -> None:
        """What the participant's browser said of its camera and microphone, and whether
        the user has switched them off."""
        participant = self._member(user_id)
        participant.status.camera.permission = camera
        participant.status.microphone.permission = microphone
        participant.status.camera.enabled = camera_enabled
        participant.status.microphone.enabled = microphone_enabled
        await self._announce(self, participant)

    def _check_media(self, participant: Participant) -> None:
        """Check what the participant's new connection publishes; tell the room now
        (checking, or missing) and once each check is done."""
        status = participant.status
        fresh = MediaStatus()
        fresh.camera.permission = status.camera.permission
        fresh.microphone.permission = status.microphone.permission
        fresh.camera.enabled = status.camera.enabled
        fresh.microphone.enabled = status.microphone.enabled
        participant.status = status = fresh
        video = participant.publications.get("video")
        audio = participant.publications.get("audio")
        status.camera.state = "checking" if video else "missing"
        status.microphone.state = "checking" if audio else "missing"

        async def run(check: Awaitable[None]) -> None:
            await check
            if participant.status is status and participant.pc is not None:
                await self._announce(self, participant)

        if video is not None and video.tap is not None:
            check = check_camera(video.track, video.tap, status.camera)
            participant.checks.append(asyncio.ensure_future(run(check)))
        if audio is not None and audio.tap is not None:
            check = check_microphone(audio.track, audio.tap, status.microphone)
            participant.checks.append(asyncio.ensure_future(run(check)))
        for task in participant.checks:
            task.add_done_callback(_log_failure)
        announced = asyncio.ensure_future(self._announce(self, participant))
        announced.add_done_callback(_log_failure)

    async def consent(self, user_id: str, *, granted: bool) -> None:
        """A participant consents to the recording, or withdraws (which stops it)."""
        self._member(user_id)
        self.consents[user_id] = granted
        if not granted and self.recording:
            await self.stop_recording()
        else:
            await self._hooks.recording_changed(self)

    def missing_consents(self) -> list[str]:
        return [uid for uid in self.participants if not self.consents.get(uid, False)]

    async def start_recording(self, user_id: str) -> None:
        """The doctor starts the recording, once everyone present has consented."""
        participant = self._member(user_id)
        if participant.role != "doctor":
            raise Forbidden("Only the doctor starts the recording")
        missing = self.missing_consents()
        if missing:
            raise InvalidState(
                "Everyone in the room must consent to the recording first",
                details={"without_consent": missing},
            )
        if self.recording:
            return
        self.recording = True
        for member in self.participants.values():
            await self._open_segment(member)
        await self._hooks.recording_changed(self)

    async def stop_recording(self) -> None:
        if not self.recording:
            return
        self.recording = False
        for user_id in list(self._segments):
            await self._close_segment(user_id)
        await self._hooks.recording_changed(self)

    async def _open_segment(self, participant: Participant) -> None:
        kinds = tuple(kind for kind in KINDS if kind in participant.publications)
        if not kinds or participant.user_id in self._segments:
            return
        number = self._segment_counts.get(participant.user_id, 0) + 1
        self._segment_counts[participant.user_id] = number
        path = (
            self._hooks.log.root
            / self.consultation_id
            / f"{participant.user_id}-{number:03d}-{int(time.time())}.webm"
        )
        recorder = RemuxRecorder(path, kinds)
        recording_id = await self._hooks.log.opened(
            consultation_id=uuid.UUID(self.consultation_id),
            user_id=uuid.UUID(participant.user_id),
            segment=number,
            path=path,
        )
        self._segments[participant.user_id] = Segment(recorder, recording_id)
        video = participant.publications.get("video")
        if video is not None:
            video.ask_keyframe()  # the file starts at a keyframe: do not wait for one

    async def _close_segment(self, user_id: str) -> None:
        segment = self._segments.pop(user_id, None)
        if segment is None:
            return
        recorder = segment.recorder
        await recorder.close()
        await self._hooks.log.closed(
            segment.recording_id,
            path=recorder.path,
            duration=recorder.duration,
            video_frames=recorder.counts.video,
            audio_frames=recorder.counts.audio,
        )

    async def close(self) -> None:
        await self.stop_recording()
        self.closed = True
        for participant in list(self.participants.values()):
            await self._close_connection(participant)
        self.participants.clear()

    def _member(self, user_id: str) -> Participant:
        participant = self.participants.get(user_id)
        if participant is None:
            raise InvalidState("Join the room first (room:join)")
        return participant

    def _forwarder(
        self, publisher: Participant, publication: Publication
    ) -> Callable[[RTCRtpCodecParameters, JitterFrame], None]:
        key = (publisher.user_id, publication.kind)

        def forward(codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
            publication.frames += 1
            for viewer in self.participants.values():
                track = viewer.viewing.get(key)
                if track is not None:
                    track.feed(codec, frame)
            segment = self._segments.get(publisher.user_id)
            if segment is not None and publisher.publications.get(publication.kind) is publication:
                segment.recorder.write(publication.kind, frame)

        return forward

    def _schedule_renegotiation(self, participant: Participant) -> None:
        task = asyncio.ensure_future(self._renegotiate(participant))
        task.add_done_callback(_log_failure)

    async def _renegotiate(self, participant: Participant) -> None:
        """Add what ``participant`` does not receive yet, and offer it."""
        pc = participant.pc
        if pc is None or pc.connectionState == "closed" or self.closed:
            return
        if (
            participant.negotiating
            or pc.signalingState != "stable"
            # Not before the participant's side is connected: only then has it surely
            # applied the server's answer and can take an offer.
            or pc.connectionState != "connected"
        ):
            participant.renegotiate_after = True
            return
        added = False
        for publisher in self.participants.values():
            if publisher is participant:
                continue
            for kind, publication in publisher.publications.items():
                key = (publisher.user_id, kind)
                if key in participant.viewing:
                    continue
                track = PassthroughTrack(kind, ask_keyframe=_asker(self, key))
                transceiver = pc.addTransceiver(track, direction="sendonly")
                _prefer_codecs(transceiver)
                forward_keyframe_requests(transceiver.sender, _asker(self, key))
                participant.viewing[key] = track
                participant.carriers[key] = transceiver
                publication.ask_keyframe()
                added = True
        if not added:
            return
        participant.negotiating = True
        offer = await pc.createOffer()
        # aiortc numbers the payload types and header extensions of a new offer its own
        # way; a browser refuses a renegotiation that renumbers header extensions, and
        # switches its own streams to renumbered payload types, which the receivers
        # started on the old numbers then drop. Keep the participant's numbers.
        aligned = participant.numbering.apply(offer.sdp) if participant.numbering else offer.sdp
        await pc.setLocalDescription(RTCSessionDescription(sdp=aligned, type="offer"))
        if participant.pc is not pc:  # replaced meanwhile
            return
        await self._send_offer(participant, pc)

    async def _send_offer(self, participant: Participant, pc: RTCPeerConnection) -> None:
        offer = ServerOffer(
            consultation_id=uuid.UUID(self.consultation_id),
            sdp=pc.localDescription.sdp,
            tracks=[
                TrackLabel(mid=transceiver.mid, user_id=uuid.UUID(user_id), kind=kind)
                for (user_id, kind), transceiver in participant.carriers.items()
            ],
        )
        await self._send(offer, participant.sid)

    async def _close_connection(self, participant: Participant) -> None:
        pc = participant.pc
        participant.pc = None
        for task in participant.checks:
            task.cancel()
        participant.checks.clear()
        participant.publications.clear()
        for track in participant.viewing.values():
            track.finish()
        participant.viewing.clear()
        participant.carriers.clear()
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()


class Rooms:
    """The rooms of this node, by consultation."""

    def __init__(self, *, hooks: Hooks, ice_servers: list[dict[str, Any]]) -> None:
        self._hooks = hooks
        # Checked here, at start-up: a bad TELEMED_ICE_SERVERS fails now, not at a join.
        self._ice_servers = [_ice_server(server) for server in ice_servers]
        self._rooms: dict[str, Room] = {}

    def get(self, consultation_id: str) -> Room | None:
        return self._rooms.get(consultation_id)

    def open(self, consultation_id: str) -> Room:
        room = self._rooms.get(consultation_id)
        if room is None:
            room = Room(consultation_id, hooks=self._hooks, ice_servers=self._ice_servers)
            self._rooms[consultation_id] = room
        return room

    async def close(self, consultation_id: str) -> None:
        room = self._rooms.pop(consultation_id, None)
        if room is not None:
            await room.close()

    async def close_all(self) -> None:
        for consultation_id in list(self._rooms):
            await self.close(consultation_id)

    def rooms_of(self, sid: str) -> list[tuple[Room, Participant]]:
        return [
            (room, participant)
            for room in self._rooms.values()
            for participant in room.participants.values()
            if participant.sid == sid
        ]


def _ice_server(server: dict[str, Any]) -> RTCIceServer:
    try:
        return RTCIceServer(**server)
    except TypeError:
        raise ValueError(
            f"TELEMED_ICE_SERVERS: {sorted(server)} is not an ICE server: use the keys "
            '"urls", "username" and "credential"'
        ) from None


def _asker(room: Room, key: tuple[str, str]) -> Callable[[], None]:
    """Ask the current publication of ``key`` for a keyframe (whichever connection)."""

    def ask() -> None:
        publisher = room.participants.get(key[0])
        publication = publisher.publications.get(key[1]) if publisher else None
        if publication is not None:
            publication.ask_keyframe()

    return ask


def _transceiver_of(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpTransceiver | None:
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.track is track:
            return transceiver
    return None


def _prefer_codecs(transceiver: RTCRtpTransceiver) -> None:
    """VP8 and Opus only: both legs of a forwarded stream must use the same codec."""
    kind = transceiver.kind
    if kind not in CODECS:
        return
    capabilities = RTCRtpSender.getCapabilities(kind)
    preferred = [c for c in capabilities.codecs if c.mimeType.lower() in CODECS[kind]]
    transceiver.setCodecPreferences(preferred)


_EXTMAP = re.compile(r"^a=extmap:(\d+)(/\w+)? (\S+)(.*)$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)")
_APT = re.compile(r"^a=fmtp:(\d+) apt=(\d+)")
_PT_LINE = re.compile(r"^(a=(?:rtpmap|fmtp|rtcp-fb)):(\d+)(.*)$")


def _payload_types(sdp: str) -> tuple[dict[int, tuple[str, int]], dict[int, int]]:
    """An SDP's payload types (number → (codec name, clock rate)) and its RTX payload
    types' ``apt`` (number → the number they repeat)."""
    names: dict[int, tuple[str, int]] = {}
    apt: dict[int, int] = {}
    for line in sdp.splitlines():
        if match := _RTPMAP.match(line):
            names[int(match.group(1))] = (match.group(2).lower(), int(match.group(3)))
        elif match := _APT.match(line):
            apt[int(match.group(1))] = int(match.group(2))
    return names, apt


@dataclass
class Numbering:
    """How one side numbered codecs and header extensions in its description, to offer
    it the same numbers again."""

    payload_types: dict[tuple[str, int], int]
    """(codec name, clock rate) → payload type; RTX by ("rtx:" + its codec's name)."""
    extensions: dict[str, int]

    @classmethod
    def of(cls, sdp: str) -> Numbering:
        names, apt = _payload_types(sdp)
        payload_types: dict[tuple[str, int], int] = {}
        extensions: dict[str, int] = {}
        for line in sdp.splitlines():
            if match := _EXTMAP.match(line):
                extensions.setdefault(match.group(3), int(match.group(1)))
        for pt, (name, clock) in names.items():
            if name == "rtx":
                continue
            payload_types.setdefault((name, clock), pt)
        for pt, target in apt.items():
            if target in names and payload_types.get(names[target]) == target:
                payload_types.setdefault(("rtx:" + names[target][0], names[target][1]), pt)
        return cls(payload_types, extensions)

    def apply(self, sdp: str) -> str:
        """``sdp`` (an offer of ours) with these numbers; anything this side never
        numbered gets a number it does not use."""
        names, apt = _payload_types(sdp)
        used = set(self.payload_types.values())
        spare = (n for n in range(96, 128) if n not in used)
        renumber: dict[int, int] = {}
        for pt, (name, clock) in names.items():
            key = (name, clock)
            if name == "rtx" and pt in apt and apt[pt] in names:
                key = ("rtx:" + names[apt[pt]][0], names[apt[pt]][1])
            renumber[pt] = self.payload_types.get(key) or next(spare)
        taken = set(self.extensions.values())
        free_ids = (n for n in range(1, 15) if n not in taken)
        ids = dict(self.extensions)
        lines = []
        for line in sdp.split("\r\n"):
            if line.startswith("m=audio ") or line.startswith("m=video "):
                head, _, formats = line.partition(" UDP/TLS/RTP/SAVPF ")
                if formats:
                    numbers = " ".join(str(renumber.get(int(f), int(f))) for f in formats.split())
                    line = f"{head} UDP/TLS/RTP/SAVPF {numbers}"
            elif match := _PT_LINE.match(line):
                pt = renumber.get(int(match.group(2)), int(match.group(2)))
                rest = match.group(3)
                if apt_match := re.match(r" apt=(\d+)(.*)", rest):
                    target = renumber.get(int(apt_match.group(1)), int(apt_match.group(1)))
                    rest = f" apt={target}{apt_match.group(2)}"
                line = f"{match.group(1)}:{pt}{rest}"
            elif match := _EXTMAP.match(line):
                uri = match.group(3)
                if uri not in ids:
                    ids[uri] = next(free_ids)
                line = f"a=extmap:{ids[uri]}{match.group(2) or ''} {uri}{match.group(4)}"
            lines.append(line)
        return "\r\n".join(lines)


def without_mdns_candidates(sdp: str) -> str:
    """Drop a browser's ``….local`` host candidates. A browser hides its addresses behind
    mDNS names while it has no camera permission; a server cannot resolve them (aioice
    would try multicast DNS, delaying the answer), and needs them not: the browser's
    connectivity checks reveal its address to the server (peer-reflexive candidates)."""
    lines = sdp.split("\r\n")
    kept = [line for line in lines if not (line.startswith("a=candidate:") and ".local " in line)]
    return "\r\n".join(kept)


def _has_media(sdp: str) -> bool:
    lines = sdp.splitlines()
    return bool(lines) and lines[0].strip() == "v=0" and any(x.startswith("m=") for x in lines)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("room task failed", exc_info=task.exception())
