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
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
from aiortc.clock import current_ms
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack

from telemed.clock import Clock
from telemed.errors import Forbidden, InvalidInput, InvalidState
from telemed.live import ServerEvent
from telemed.media.bandwidth import ViewerLink
from telemed.media.checks import MediaStatus, Permission, check_camera, check_microphone
from telemed.media.forwarding import ForwardedStream, FrameSink, Source
from telemed.media.passthrough import ask_keyframe
from telemed.media.quality import CallQuality, QualitySummary
from telemed.media.recorder import RemuxRecorder
from telemed.media.sdp import (
    Numbering,
    has_media,
    ice_ufrag,
    trickled_candidate,
    without_mdns_candidates,
)
from telemed.signaling.events import (
    MediaConnection,
    MediaQuality,
    MediaReceiving,
    ServerOffer,
    TrackLabel,
)

logger = logging.getLogger(__name__)

MAX_PARTICIPANTS = 4
KEYFRAME_REQUEST_GAP = 0.3
"""Seconds between two keyframe requests to one publisher (viewers ask in bursts)."""
KINDS = ("audio", "video")
VIDEO_FLOOR = 150_000
"""Bits/s under which a viewer gets audio only (``TELEMED_MEDIA_VIDEO_FLOOR_KBPS``)."""
TICK = 0.5
"""Seconds between two looks at the participants' links (``ViewerLink.tick``)."""
SAVE_QUALITY_EVERY = 30.0
"""Seconds between two stores of what the room measured of its participants' calls."""
BAD_DESCRIPTION = (ValueError, KeyError, IndexError, InvalidAccessError, InvalidStateError)
"""What aiortc raises for a session description it cannot take."""
SET_UP_SECONDS = 10.0
"""How long a connection being set up (its candidates gathered) is waited for before it
is closed anyway."""
SILENCE_MS = 1000
"""A publisher from whom nothing came for this long is interrupted (its network
dropped); a browser sends audio 50 times a second, even silence."""
CODECS = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}

Send = Callable[[ServerEvent, str], Awaitable[None]]
"""Send an event to one participant's socket (its sid)."""
Announce = Callable[["Room", "Participant"], Awaitable[None]]
"""Tell the room a participant's media status changed."""
AnnounceRecording = Callable[["Room"], Awaitable[None]]
"""Tell the room the recording started or stopped, or a consent changed."""


class QualityStore(Protocol):
    """Where rooms add what they measured of each participant's call
    (``telemed.media.quality_log.QualityLog``, in the database)."""

    async def add(
        self, *, consultation_id: uuid.UUID, user_id: uuid.UUID, gained: QualitySummary
    ) -> None: ...


class NoQualityStore:
    """Keeps nothing (rooms made without a database)."""

    async def add(
        self, *, consultation_id: uuid.UUID, user_id: uuid.UUID, gained: QualitySummary
    ) -> None:
        return None


class SegmentLog(Protocol):
    """Where a room's recording files go, and the record kept of each
    (``telemed.media.recordings.RecordingLog``, which keeps it in the database)."""

    @property
    def root(self) -> Path:
        """The directory of the recording files."""
        ...

    async def next_segment(self, *, consultation_id: uuid.UUID, user_id: uuid.UUID) -> int:
        """The number of the participant's next segment in the consultation (1, 2, …),
        whichever process wrote the earlier ones."""
        ...

    async def opened(
        self, *, consultation_id: uuid.UUID, user_id: uuid.UUID, segment: int, path: Path
    ) -> uuid.UUID:
        """A file was opened; returns the recording's id."""
        ...

    async def interrupted(self, consultation_id: uuid.UUID) -> int:
        """The consultation's files still being written by a room that is gone (its
        process died) are closed as interrupted; returns how many."""
        ...

    async def closed(
        self,
        recording_id: uuid.UUID,
        *,
        path: Path,
        duration: float,
        video_frames: int,
        audio_frames: int,
    ) -> None:
        """The recording's file is complete."""
        ...


@dataclass
class RoomState:
    """What of a room outlives the process that holds it: a room opened again on
    another node (its node died or is stopping) goes on from here, recording included."""

    recording: bool = False
    consents: dict[str, bool] = field(default_factory=dict)


class StateStore(Protocol):
    """Where rooms keep their ``RoomState`` (``telemed.media.placement.RedisStateStore``
    across nodes, ``MemoryStateStore`` on one)."""

    async def load(self, consultation_id: str) -> RoomState: ...

    async def save(self, consultation_id: str, state: RoomState) -> None: ...

    async def forget(self, consultation_id: str) -> None: ...


class MemoryStateStore:
    """One process: rooms' state in its memory."""

    def __init__(self) -> None:
        self._states: dict[str, RoomState] = {}

    async def load(self, consultation_id: str) -> RoomState:
        return self._states.get(consultation_id) or RoomState()

    async def save(self, consultation_id: str, state: RoomState) -> None:
        self._states[consultation_id] = state

    async def forget(self, consultation_id: str) -> None:
        self._states.pop(consultation_id, None)


@dataclass
class Hooks:
    """What a room needs from the rest of the server."""

    send: Send
    media_changed: Announce
    recording_changed: AnnounceRecording
    log: SegmentLog
    clock: Clock
    """The app's clock: recording files are named by its time."""
    states: StateStore = field(default_factory=MemoryStateStore)
    quality: QualityStore = field(default_factory=NoQualityStore)


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
    tap: Source | None = None
    """Where its packets are forwarded from (and frames assembled, while wanted)."""
    _last_keyframe_request: float = 0.0

    @property
    def frames(self) -> int:
        """Frames received so far."""
        return self.tap.frames if self.tap is not None else 0

    def keyframe_due(self) -> bool:
        """Whether to ask the publisher for a keyframe now; at most one request per
        ``KEYFRAME_REQUEST_GAP`` (a measured interval: the monotonic clock, not the app's)."""
        moment = time.monotonic()
        if moment - self._last_keyframe_request < KEYFRAME_REQUEST_GAP:
            return False
        self._last_keyframe_request = moment
        return True


@dataclass
class Participant:
    user_id: str
    role: str
    sid: str
    node: str = ""
    """The node that holds the participant's socket (``telemed.cluster``)."""
    pc: RTCPeerConnection | None = None
    publications: dict[str, Publication] = field(default_factory=dict)
    # (publisher's user id, kind) → what this participant receives of that publisher,
    # and the transceiver that carries it (its mid tells the client whose track it is).
    viewing: dict[tuple[str, str], ForwardedStream] = field(default_factory=dict)
    carriers: dict[tuple[str, str], RTCRtpTransceiver] = field(default_factory=dict)
    negotiating: bool = False
    renegotiate_after: bool = False
    status: MediaStatus = field(default_factory=MediaStatus)
    numbering: Numbering | None = None
    """The payload types and header extension ids the participant's side chose."""
    checks: set[asyncio.Task[None]] = field(default_factory=set)
    """The media checks of the current connection (cancelled when it closes)."""
    set_up: asyncio.Event | None = None
    """Set once the current connection's answer is made (its ICE candidates gathered):
    closed before, aioice would leave the sockets it was opening open."""
    link: ViewerLink = field(default_factory=lambda: ViewerLink(floor=VIDEO_FLOOR))
    """What the participant's link takes: whether it is sent video, and how much."""
    interrupted: bool = False
    """Its media stopped coming (``SILENCE_MS``) and has not come back yet."""
    quality: CallQuality = field(default_factory=CallQuality)
    """How its call goes (its reports, ``media:stats``)."""

    def upload_counts(self) -> tuple[int, int]:
        """Packets lost and expected of what it sends, as the server counts them."""
        lost = expected = 0
        for publication in self.publications.values():
            if publication.tap is not None:
                for stream in publication.tap.statistics():
                    lost += max(0, stream.packets_lost)
                    expected += stream.packets_expected
        return lost, expected

    def silent(self, now_ms: int) -> bool:
        """Whether the participant publishes and nothing came from it lately. On a new
        connection nothing has come yet: an interrupted participant stays interrupted
        until its media does come (the others' pages wait rather than give up on
        their own connections)."""
        arrivals = [
            p.tap.last_arrival_ms
            for p in self.publications.values()
            if p.tap is not None and p.tap.last_arrival_ms is not None
        ]
        if not arrivals:
            return self.interrupted and bool(self.publications)
        return now_ms - max(arrivals) > SILENCE_MS

    def connected(self) -> bool:
        """Whether its media connection is up (a socket that dropped and came back may
        keep it: ``RoomJoined.connection_kept``)."""
        return self.pc is not None and self.pc.connectionState == "connected"


class Room:
    """One consultation's video room on this node. The tasks it starts (offers,
    announcements, media checks, keyframe requests) are its own: a failure is logged,
    and ``close`` cancels and awaits those still running."""

    def __init__(
        self,
        consultation_id: str,
        *,
        hooks: Hooks,
        ice_servers: list[RTCIceServer],
        state: RoomState | None = None,
        video_floor: int = VIDEO_FLOOR,
    ) -> None:
        self.consultation_id = consultation_id
        self.video_floor = video_floor
        self._ticking: asyncio.Task[None] | None = None
        self._hooks = hooks
        self._send = hooks.send
        self._announce = hooks.media_changed
        self._ice_servers = ice_servers
        self.participants: dict[str, Participant] = {}
        self.closed = False
        # Recording: consents by user (identity, not connection), whether the doctor
        # has it on (both may come from the room's earlier life on another node), and
        # each recorded participant's current file.
        state = state or RoomState()
        self.consents: dict[str, bool] = dict(state.consents)
        self.recording = state.recording
        self._segments: dict[str, Segment] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, *, user_id: str, role: str, sid: str, node: str = "") -> Participant:
        """Enter the room, or take over one's place in it from a new socket (``node``
        holds the socket)."""
        if self.closed:
            raise InvalidState("The consultation's room is closed")
        participant = self.participants.get(user_id)
        if participant is None:
            if len(self.participants) >= MAX_PARTICIPANTS:
                raise InvalidState(
                    f"A room holds at most {MAX_PARTICIPANTS} participants",
                    details={"max": MAX_PARTICIPANTS},
                )
            participant = Participant(
                user_id=user_id, role=role, sid=sid, link=ViewerLink(floor=self.video_floor)
            )
            self.participants[user_id] = participant
        if self._ticking is None:
            self._ticking = self._start(self._watch_links())
        moved = participant.sid != sid
        participant.sid = sid
        participant.node = node
        pc = participant.pc
        if moved and pc is not None and pc.signalingState == "have-local-offer":
            # The socket that should have answered the server's offer is gone: offer the
            # new one the same description (the connection is still waiting for it).
            self._start(self._send_offer(participant, pc))
        if self.recording and not self.consents.get(user_id, False):
            # Everyone present must have consented: a newcomer who has not stops it.
            await self.stop_recording()
        return participant

    async def leave(self, user_id: str) -> bool:
        """Leave the room; returns whether the user was in it."""
        participant = self.participants.pop(user_id, None)
        if participant is None:
            return False
        await self._save_quality(participant)
        await self._close_segment(user_id)
        await self._close_connection(participant)
        for other in self.participants.values():
            for kind in KINDS:
                stream = other.viewing.get((user_id, kind))
                if stream is not None:
                    # Kept (the m-line stays) but idle; a return feeds it again.
                    stream.restart()
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
        set_up = participant.set_up = asyncio.Event()
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
            publication.tap = self._forwarder(participant, publication)
            participant.publications[track.kind] = publication
            arrived.append(publication)

        @pc.on("iceconnectionstatechange")
        def on_ice_state() -> None:
            logger.info(
                "room %s: user %s: ICE connection state %s",
                self.consultation_id,
                user_id,
                pc.iceConnectionState,
            )

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            logger.info(
                "room %s: user %s: connection state %s",
                self.consultation_id,
                user_id,
                pc.connectionState,
            )
            if participant.pc is not pc:
                return
            if pc.connectionState == "connected" and participant.renegotiate_after:
                participant.renegotiate_after = False
                self._schedule_renegotiation(participant)
            # "failed": the participant rejoins with a new offer; until then nothing flows.

        try:
            try:
                if not has_media(sdp):
                    raise ValueError("no media section")
                await pc.setRemoteDescription(
                    RTCSessionDescription(sdp=without_mdns_candidates(sdp), type="offer")
                )
            except BAD_DESCRIPTION as exc:
                set_up.set()
                if participant.pc is pc:
                    await self._close_connection(participant)
                raise InvalidInput("The offer is not a valid session description") from exc
            for transceiver in pc.getTransceivers():
                _prefer_codecs(transceiver)
            await pc.setLocalDescription(await pc.createAnswer())
        finally:
            set_up.set()
        if participant.pc is not pc or self.participants.get(user_id) is not participant:
            # It left, or the room closed, or a newer offer came, while this was made
            # (a participant that left may still hold it: nothing else would close it).
            if participant.pc is pc:
                await self._close_connection(participant)
            raise InvalidState("The media connection was closed meanwhile")
        for publication in arrived:
            for other in self.participants.values():
                stream = other.viewing.get((user_id, publication.kind))
                if stream is not None:
                    stream.restart()
            self._ask_keyframe(publication)
        self._check_media(participant)
        if self.recording:
            # A rejoin while recording: the recording goes on, in a new segment file.
            await self._open_segment(participant)
        # What this participant should receive, and the others of its new tracks, come
        # in server offers (this participant's once its connection is up).
        for member in list(self.participants.values()):
            self._schedule_renegotiation(member)
        return str(pc.localDescription.sdp)

    async def candidate(
        self,
        user_id: str,
        line: str,
        *,
        sdp_mid: str | None = None,
        sdp_mline_index: int | None = None,
        username_fragment: str | None = None,
    ) -> None:
        """A candidate the participant's browser gathered after its offer (trickle ICE).
        An empty ``line`` (the browser's end of candidates) changes nothing: the server
        keeps taking the browser's checks until one pair succeeds, and a browser whose
        connection fails sends a new offer. A candidate of an earlier connection (another
        username fragment) is ignored."""
        participant = self._member(user_id)
        pc = participant.pc
        if pc is None or pc.remoteDescription is None:
            raise InvalidState("No media connection takes candidates yet: send rtc:offer first")
        if not line:
            return
        if sdp_mid is None and sdp_mline_index is None:
            raise InvalidInput("A candidate needs its sdp_mid or sdp_mline_index")
        try:
            candidate = trickled_candidate(line, sdp_mid=sdp_mid, sdp_mline_index=sdp_mline_index)
        except ValueError as exc:
            raise InvalidInput("The candidate is not a valid ICE candidate") from exc
        current = ice_ufrag(pc.remoteDescription.sdp)
        if candidate is None or (username_fragment and username_fragment != current):
            return
        await pc.addIceCandidate(candidate)

    async def answer(self, user_id: str, sdp: str) -> None:
        """A participant's answer to the server's last offer."""
        participant = self._member(user_id)
        pc = participant.pc
        if pc is None or pc.signalingState != "have-local-offer":
            raise InvalidState("No offer of the server is waiting for an answer")
        try:
            if not has_media(sdp):
                raise ValueError("no media section")
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=without_mdns_candidates(sdp), type="answer")
            )
        except BAD_DESCRIPTION as exc:
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

        async def announce() -> None:
            await self._announce(self, participant)

        async def run(check: Awaitable[None]) -> None:
            await check
            if participant.status is status and participant.pc is not None:
                await announce()

        checks: list[Coroutine[Any, Any, None]] = []
        if video is not None and video.tap is not None:
            checks.append(run(check_camera(video.track, video.tap, status.camera)))
        if audio is not None and audio.tap is not None:
            checks.append(run(check_microphone(audio.track, audio.tap, status.microphone)))
        for check in checks:
            task = self._start(check)
            participant.checks.add(task)
            task.add_done_callback(participant.checks.discard)
        self._start(announce())

    async def consent(self, user_id: str, *, granted: bool) -> None:
        """A participant consents to the recording, or withdraws (which stops it)."""
        self._member(user_id)
        self.consents[user_id] = granted
        if not granted and self.recording:
            await self.stop_recording()
        else:
            await self._save()
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
        await self._save()
        for member in self.participants.values():
            await self._open_segment(member)
        await self._hooks.recording_changed(self)

    async def stop_recording(self) -> None:
        if not self.recording:
            return
        self.recording = False
        await self._save()
        await self._close_segments()
        await self._hooks.recording_changed(self)

    async def _close_segments(self) -> None:
        for user_id in list(self._segments):
            await self._close_segment(user_id)

    async def _save(self) -> None:
        state = RoomState(recording=self.recording, consents=dict(self.consents))
        await self._hooks.states.save(self.consultation_id, state)

    @property
    def streams(self) -> int:
        """The streams this room carries: each one received, and each one sent."""
        return sum(len(p.publications) + len(p.viewing) for p in self.participants.values())

    async def _open_segment(self, participant: Participant) -> None:
        kinds = tuple(kind for kind in KINDS if kind in participant.publications)
        if not kinds or participant.user_id in self._segments:
            return
        number = await self._hooks.log.next_segment(
            consultation_id=uuid.UUID(self.consultation_id),
            user_id=uuid.UUID(participant.user_id),
        )
        if participant.user_id in self._segments or participant.pc is None or not self.recording:
            return  # opened, gone or stopped meanwhile
        started = int(self._hooks.clock.now().timestamp())
        path = (
            self._hooks.log.root
            / self.consultation_id
            / f"{participant.user_id}-{number:03d}-{started}.webm"
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
            self._ask_keyframe(video)  # the file starts at a keyframe: do not wait for one

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

    async def close(self, *, handing_over: bool = False) -> None:
        """Stop the recording, close every connection, and end the room's tasks. When
        ``handing_over`` (this node stops; the participants rejoin on another), the
        recording's files are closed but its state is kept for the room's next node."""
        if handing_over:
            await self._close_segments()
        else:
            await self.stop_recording()
            await self._hooks.states.forget(self.consultation_id)
        self.closed = True
        for participant in list(self.participants.values()):
            with contextlib.suppress(Exception):  # what was measured is not worth a stuck close
                await self._save_quality(participant)
            await self._close_connection(participant)
        self.participants.clear()
        current = asyncio.current_task()
        # Closing a connection can start a task (a state change): until none is left.
        while pending := [task for task in self._tasks if task is not current]:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task of this room: kept until it is done, its failure
        logged, cancelled by ``close``."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("a task of room %s failed", self.consultation_id, exc_info=error)

    def _ask_keyframe(self, publication: Publication) -> None:
        """Ask the publisher of ``publication`` for a keyframe (unless just asked)."""
        if publication.keyframe_due():
            self._start(ask_keyframe(publication.receiver))

    def _asker(self, key: tuple[str, str]) -> Callable[[], None]:
        """Ask the current publication of ``key`` for a keyframe (whichever connection)."""

        def ask() -> None:
            publisher = self.participants.get(key[0])
            publication = publisher.publications.get(key[1]) if publisher else None
            if publication is not None:
                self._ask_keyframe(publication)

        return ask

    # -- bandwidth (telemed.media.bandwidth) ----------------------------------------------

    async def choose_audio_only(self, user_id: str, active: bool) -> None:
        """The participant wants no video (its data plan, its link), or wants it back."""
        participant = self._member(user_id)
        if participant.link.choose_audio_only(active):
            await self._receiving_changed(participant)

    async def stats(self, user_id: str, figures: dict[str, Any]) -> None:
        """A participant's figures of the last few seconds (``media:stats``): its quality
        summary grows, and the room hears when its level changes."""
        participant = self._member(user_id)
        quality = participant.quality
        upload_loss = quality.upload_loss(*participant.upload_counts())
        changed = quality.report(
            figures,
            now=time.monotonic(),
            moment=self._hooks.clock.now(),
            audio_only=not participant.link.video,
            upload_loss=upload_loss,
        )
        if not changed or quality.level is None:
            return
        event = MediaQuality(
            consultation_id=uuid.UUID(self.consultation_id),
            user_id=uuid.UUID(user_id),
            level=quality.level,
        )
        for member in list(self.participants.values()):
            await self._send(event, member.sid)

    def _estimates_of(self, viewer: Participant) -> Callable[[int], None]:
        def estimated(bitrate: int) -> None:
            viewer.link.observe(bitrate, time.monotonic())
            if viewer.link.tick(time.monotonic()):
                self._start(self._receiving_changed(viewer))
            else:
                self._start(self._limit_publishers())

        return estimated

    async def _watch_links(self) -> None:
        """Move every participant's link on with time (a pause lasts, a try ends), and
        tell the room whose media stopped coming or came back."""
        saved = time.monotonic()
        while not self.closed:
            await asyncio.sleep(TICK)
            if time.monotonic() - saved >= SAVE_QUALITY_EVERY:
                saved = time.monotonic()
                for participant in list(self.participants.values()):
                    await self._save_quality(participant)
            for participant in list(self.participants.values()):
                if participant.link.tick(time.monotonic()):
                    await self._receiving_changed(participant)
                silent = participant.silent(current_ms())
                if silent != participant.interrupted:
                    participant.interrupted = silent
                    await self._connection_changed(participant)

    async def _save_quality(self, participant: Participant) -> None:
        gained = participant.quality.unsaved()
        if gained is not None:
            await self._hooks.quality.add(
                consultation_id=uuid.UUID(self.consultation_id),
                user_id=uuid.UUID(participant.user_id),
                gained=gained,
            )

    async def _connection_changed(self, participant: Participant) -> None:
        logger.info(
            "room %s: user %s: media %s",
            self.consultation_id,
            participant.user_id,
            "interrupted" if participant.interrupted else "back",
        )
        event = MediaConnection(
            consultation_id=uuid.UUID(self.consultation_id),
            user_id=uuid.UUID(participant.user_id),
            state="interrupted" if participant.interrupted else "connected",
        )
        for member in list(self.participants.values()):
            await self._send(event, member.sid)

    async def _receiving_changed(self, viewer: Participant) -> None:
        """The viewer gets video again, or no more: its streams follow, the room is told,
        and its publishers' limits change."""
        video = viewer.link.video
        for (_publisher, kind), stream in viewer.viewing.items():
            if kind == "video":
                if video:
                    stream.resume()
                else:
                    stream.pause()
        logger.info(
            "room %s: user %s: %s",
            self.consultation_id,
            viewer.user_id,
            "video" if video else f"audio only ({viewer.link.reason})",
        )
        event = MediaReceiving(
            consultation_id=uuid.UUID(self.consultation_id),
            user_id=uuid.UUID(viewer.user_id),
            video=video,
            reason=viewer.link.reason,
        )
        for member in list(self.participants.values()):
            await self._send(event, member.sid)
        await self._limit_publishers()

    async def _limit_publishers(self) -> None:
        """Hold each publisher's video to what the weakest of its viewers takes."""
        for publisher in list(self.participants.values()):
            publication = publisher.publications.get("video")
            if publication is None or publication.tap is None:
                continue
            caps = [
                viewer.link.cap(publishers=sum(kind == "video" for _, kind in viewer.viewing))
                for viewer in self.participants.values()
                if (publisher.user_id, "video") in viewer.viewing
            ]
            limits = [cap for cap in caps if cap is not None]
            await publication.tap.limit(min(limits) if limits else None)

    def _member(self, user_id: str) -> Participant:
        participant = self.participants.get(user_id)
        if participant is None:
            raise InvalidState("Join the room first (room:join)")
        return participant

    def _forwarder(self, publisher: Participant, publication: Publication) -> Source:
        """Take over ``publication``'s receiver: its packets go to whoever views the
        publisher's track now; its frames are assembled for the publisher's recording
        while one runs (and for the media check)."""
        kind = publication.kind
        key = (publisher.user_id, kind)

        def viewers() -> list[ForwardedStream]:
            return [
                stream
                for viewer in self.participants.values()
                if (stream := viewer.viewing.get(key)) is not None
            ]

        writing: tuple[RemuxRecorder, FrameSink] | None = None

        def frames() -> FrameSink | None:
            nonlocal writing
            segment = self._segments.get(publisher.user_id)
            if segment is None or publisher.publications.get(kind) is not publication:
                return None
            recorder = segment.recorder
            if writing is None or writing[0] is not recorder:

                def write(_codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
                    recorder.write(kind, frame)

                writing = (recorder, write)
            return writing[1]

        return Source(publication.receiver, kind, viewers=viewers, frames=frames)

    def _schedule_renegotiation(self, participant: Participant) -> None:
        self._start(self._renegotiate(participant))

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
            for kind in publisher.publications:
                key = (publisher.user_id, kind)
                if key in participant.viewing:
                    continue
                stream = ForwardedStream(kind, ask_keyframe=self._asker(key))
                stream.on_estimate = self._estimates_of(participant)
                if kind == "video" and not participant.link.video:
                    stream.pause()
                transceiver = pc.addTransceiver(stream.track, direction="sendonly")
                _prefer_codecs(transceiver)
                stream.attach(transceiver.sender)
                participant.viewing[key] = stream
                participant.carriers[key] = transceiver
                # No keyframe request yet: the stream asks once its sender starts (after
                # the answer). One asked for now would be dropped before it could be
                # sent, and browsers make at most one keyframe per 300 ms.
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
        pc, set_up = participant.pc, participant.set_up
        participant.pc = participant.set_up = None
        for task in participant.checks:
            task.cancel()
        participant.checks.clear()
        participant.publications.clear()
        for stream in participant.viewing.values():
            stream.finish()
        participant.viewing.clear()
        participant.carriers.clear()
        if pc is not None:
            if set_up is not None and not set_up.is_set():
                # Still gathering (an offer being answered): closed only once it is done.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(set_up.wait(), SET_UP_SECONDS)
            with contextlib.suppress(Exception):
                await pc.close()


class Rooms:
    """The rooms of this node, by consultation."""

    def __init__(
        self, *, hooks: Hooks, ice_servers: list[RTCIceServer], video_floor: int = VIDEO_FLOOR
    ) -> None:
        self._hooks = hooks
        self._ice_servers = ice_servers
        self._video_floor = video_floor
        self._rooms: dict[str, Room] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    @property
    def streams(self) -> int:
        return sum(room.streams for room in self._rooms.values())

    def get(self, consultation_id: str) -> Room | None:
        return self._rooms.get(consultation_id)

    async def open(self, consultation_id: str) -> Room:
        """The consultation's room, opened if this node has none: with the state its
        earlier life left (``StateStore``), after closing the files that life left
        open. One at a time per consultation: two joins at once open one room."""
        room = self._rooms.get(consultation_id)
        if room is not None:
            return room
        lock = self._opening.setdefault(consultation_id, asyncio.Lock())
        try:
            async with lock:
                room = self._rooms.get(consultation_id)
                if room is None:
                    state = await self._hooks.states.load(consultation_id)
                    await self._hooks.log.interrupted(uuid.UUID(consultation_id))
                    room = Room(
                        consultation_id,
                        hooks=self._hooks,
                        ice_servers=self._ice_servers,
                        state=state,
                        video_floor=self._video_floor,
                    )
                    self._rooms[consultation_id] = room
        finally:
            if not lock.locked():
                self._opening.pop(consultation_id, None)
        return room

    async def close(self, consultation_id: str, *, handing_over: bool = False) -> None:
        room = self._rooms.pop(consultation_id, None)
        if room is not None:
            await room.close(handing_over=handing_over)

    async def close_all(self, *, handing_over: bool = False) -> None:
        for consultation_id in list(self._rooms):
            await self.close(consultation_id, handing_over=handing_over)

    def rooms_of(self, sid: str) -> list[tuple[Room, Participant]]:
        return [
            (room, participant)
            for room in self._rooms.values()
            for participant in room.participants.values()
            if participant.sid == sid
        ]


def ice_servers_of(configured: list[dict[str, Any]]) -> list[RTCIceServer]:
    """The server side's ICE servers from ``TELEMED_ICE_SERVERS``; raises ``ValueError``
    for one that is not an ICE server (checked when the app is made, not at a join)."""
    return [_ice_server(server) for server in configured]


def _ice_server(server: dict[str, Any]) -> RTCIceServer:
    try:
        return RTCIceServer(**server)
    except TypeError:
        raise ValueError(
            f"TELEMED_ICE_SERVERS: {sorted(server)} is not an ICE server: use the keys "
            '"urls", "username" and "credential"'
        ) from None


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
