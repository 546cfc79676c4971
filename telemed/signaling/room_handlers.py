"""Socket.IO events of the video room: join, leave, the WebRTC offer/answer exchange,
device reports, recording, and the doctor ending the consultation. The media itself is
``telemed.media.room``; these methods are part of ``handlers.Namespace``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import redis.asyncio
from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit, keys, live
from telemed.accounts.models import User
from telemed.cluster import Cluster, Counts
from telemed.media.passthrough import check_aiortc
from telemed.media.placement import LonePlacement, RedisPlacement, RedisStateStore
from telemed.media.quality_log import QualityLog
from telemed.media.recordings import RecordingLog
from telemed.media.room import (
    Hooks,
    MemoryStateStore,
    Participant,
    Room,
    Rooms,
    ice_servers_of,
)
from telemed.media.service import check_join
from telemed.media.turn import ice_servers_for
from telemed.scheduling.consultations import check_end
from telemed.scheduling.lifecycle import LIVE, Moved
from telemed.scheduling.models import Consultation, Doctor
from telemed.signaling.directory import Placement, RoomDirectory, recording_view
from telemed.signaling.events import (
    Answer,
    AudioOnly,
    ConsultationEnd,
    ConsultationView,
    Empty,
    IceCandidate,
    MediaReport,
    MediaStats,
    MediaStatusChanged,
    MediaView,
    RecordingCommand,
    RecordingConsent,
    RecordingStateChanged,
    RoomDoctor,
    RoomJoin,
    RoomJoined,
    RoomLeave,
    SessionDescription,
)
from telemed.signaling.namespace import Ack, ok, video_room

if TYPE_CHECKING:
    from telemed.signaling.namespace import Realtime

    _Base = Realtime
else:
    _Base = object


class RoomEvents(_Base):
    """The video room's events (a part of ``handlers.Namespace``): who the caller is and
    what it may do are checked here, on the socket's node; the room itself answers
    from its own node (``directory.RoomDirectory``)."""

    @property
    def directory(self) -> RoomDirectory:
        return self.app[keys.DIRECTORY]

    async def on_room_join(self, sid: str, request: RoomJoin) -> Ack:
        """room:join {consultation_id} → {consultation, participants, ice_servers}"""
        settings = self.app[keys.SETTINGS]
        async with self.transaction(sid, write=True) as (session, user):
            consultation, party = await check_join(
                session,
                actor=user,
                now=self.clock.now(),
                settings=settings,
                consultation_id=request.consultation_id,
            )
            doctor = await room_doctor(session, consultation)
        answer = await self.directory.join(
            consultation.id, user_id=user.id, role=party.value, sid=sid
        )
        await self.enter_room(sid, video_room(consultation.id))
        return ok(
            RoomJoined.model_validate(
                {
                    **answer,
                    "consultation": ConsultationView.of(consultation),
                    "doctor": doctor,
                    "ice_servers": ice_servers_for(settings, user_id=user.id, now=self.clock.now()),
                }
            )
        )

    async def on_rtc_offer(self, sid: str, request: SessionDescription) -> Ack:
        """rtc:offer {consultation_id, sdp} → {sdp}"""
        answer = await self.ask(sid, request.consultation_id, "room.offer", sdp=request.sdp)
        return ok(Answer.model_validate(answer))

    async def on_rtc_candidate(self, sid: str, request: IceCandidate) -> Ack:
        """rtc:candidate {consultation_id, candidate, sdp_mid?, sdp_mline_index?,
        username_fragment?}"""
        await self.ask(
            sid,
            request.consultation_id,
            "room.candidate",
            candidate=request.candidate,
            sdp_mid=request.sdp_mid,
            sdp_mline_index=request.sdp_mline_index,
            username_fragment=request.username_fragment,
        )
        return ok(Empty())

    async def on_media_audio_only(self, sid: str, request: AudioOnly) -> Ack:
        """media:audio_only {consultation_id, active}"""
        await self.ask(sid, request.consultation_id, "room.audio_only", active=request.active)
        return ok(Empty())

    async def on_media_stats(self, sid: str, request: MediaStats) -> Ack:
        """media:stats {consultation_id, level, rtt_ms?, loss?, …}"""
        figures = request.model_dump(mode="json", exclude={"consultation_id"})
        await self.ask(sid, request.consultation_id, "room.stats", figures=figures)
        return ok(Empty())

    async def on_rtc_answer(self, sid: str, request: SessionDescription) -> Ack:
        """rtc:answer {consultation_id, sdp}"""
        await self.ask(sid, request.consultation_id, "room.answer", sdp=request.sdp)
        return ok(Empty())

    async def on_media_report(self, sid: str, request: MediaReport) -> Ack:
        """media:report {consultation_id, camera, microphone, camera_enabled?,
        microphone_enabled?}"""
        await self.ask(
            sid,
            request.consultation_id,
            "room.report",
            camera=request.camera,
            microphone=request.microphone,
            camera_enabled=request.camera_enabled,
            microphone_enabled=request.microphone_enabled,
        )
        return ok(Empty())

    async def on_recording_consent(self, sid: str, request: RecordingConsent) -> Ack:
        """recording:consent {consultation_id, granted}"""
        answer = await self.ask(
            sid, request.consultation_id, "room.consent", granted=request.granted
        )
        if answer["changed"]:  # no change: nothing to tell or to audit
            action = "recording.consent_" + ("given" if request.granted else "withdrawn")
            await self.recorded(sid, request.consultation_id, action)
        return ok(Empty())

    async def on_recording_start(self, sid: str, request: RecordingCommand) -> Ack:
        """recording:start {consultation_id} (the doctor)"""
        await self.ask(sid, request.consultation_id, "room.start")
        await self.recorded(sid, request.consultation_id, "recording.started")
        return ok(Empty())

    async def on_recording_stop(self, sid: str, request: RecordingCommand) -> Ack:
        """recording:stop {consultation_id} (the doctor)"""
        answer = await self.ask(sid, request.consultation_id, "room.stop")
        if answer["stopped"]:
            await self.recorded(sid, request.consultation_id, "recording.stopped")
        return ok(Empty())

    async def on_room_leave(self, sid: str, request: RoomLeave) -> Ack:
        """room:leave {consultation_id}"""
        await self.directory.leave(sid, request.consultation_id)
        return ok(Empty())

    async def on_consultation_end(self, sid: str, request: ConsultationEnd) -> Ack:
        """consultation:end {consultation_id} (the doctor): closes the room, as every
        move out of the live states does (``close_rooms_of``)."""
        async with self.transaction(sid, write=True) as (session, user):
            await check_end(
                session, actor=user, now=self.clock.now(), consultation_id=request.consultation_id
            )
        return ok(Empty())

    async def ask(
        self, sid: str, consultation_id: uuid.UUID, op: str, **args: Any
    ) -> dict[str, Any]:
        """Ask the room this socket joined, as the socket's user (whose session must
        still be valid)."""
        async with self.transaction(sid) as (_session, user):
            pass
        return await self.directory.ask(sid, consultation_id, op, {**args, "user_id": str(user.id)})

    async def recorded(self, sid: str, consultation_id: uuid.UUID, action: str) -> None:
        """Audit a consent or a start/stop of the recording."""
        async with self.transaction(sid, write=True) as (session, user):
            audit.record(
                session,
                now=self.clock.now(),
                actor_id=user.id,
                action=action,
                object_type="consultation",
                object_id=consultation_id,
            )

    async def leave_rooms_of(self, sid: str, *, on_purpose: bool = False) -> None:
        """A socket closed: it leaves the rooms it was in (unless this server closed it
        ``on_purpose``, after a while: ``RoomDirectory.leave_all``)."""
        await self.directory.leave_all(sid, on_purpose=on_purpose)


async def room_doctor(session: AsyncSession, consultation: Consultation) -> RoomDoctor | None:
    """The consultation's doctor as the room shows them: name and specialty."""
    if consultation.doctor_id is None:
        return None
    doctor = await session.get(Doctor, consultation.doctor_id)
    account = await session.get(User, doctor.user_id) if doctor is not None else None
    if doctor is None or account is None:
        return None
    return RoomDoctor(name=account.full_name, specialty=doctor.specialty)


def setup_rooms(app: web.Application) -> None:
    """This node's video rooms and the way to every room from its sockets
    (``directory``), what the rooms tell the participants, and their closing: whenever a
    consultation leaves the live states (ended, cancelled, a no-show), whichever node
    moved it and whichever holds the room; and at shutdown, when the rooms move to
    other nodes (``RoomDirectory.drain``). Made at start-up, once the database is open
    (the recording log writes to it)."""
    settings = app[keys.SETTINGS]
    check_aiortc()
    # Checked now: a bad TELEMED_ICE_SERVERS stops the start, not a join.
    ice_servers = ice_servers_of(settings.ice_servers)
    publisher = app[keys.PUBLISHER]

    async def media_changed(room: Room, participant: Participant) -> None:
        status = MediaView.model_validate(participant.status)
        changed = MediaStatusChanged(
            consultation_id=uuid.UUID(room.consultation_id),
            user_id=uuid.UUID(participant.user_id),
            camera=status.camera,
            microphone=status.microphone,
        )
        await publisher.send([live.event(changed, to=[video_room(room.consultation_id)])])

    async def recording_changed(room: Room) -> None:
        changed = RecordingStateChanged(
            consultation_id=uuid.UUID(room.consultation_id), recording=recording_view(room)
        )
        await publisher.send([live.event(changed, to=[video_room(room.consultation_id)])])

    async def send(model: live.ServerEvent, sid: str) -> None:
        await publisher.send([live.event(model, to=[sid])])

    async def run_rooms(app: web.Application) -> AsyncIterator[None]:
        clock = app[keys.CLOCK]
        node = app[keys.NODE_ID]
        client = (
            redis.asyncio.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
            if settings.redis_url
            else None
        )
        sockets = app[keys.SOCKETS]
        cluster = Cluster(
            node_id=node,
            settings=settings,
            client=client,
            counts=lambda: Counts(rooms=len(rooms), streams=rooms.streams, sockets=len(sockets)),
        )
        app[keys.CLUSTER] = cluster
        log = RecordingLog(
            session_factory=app[keys.SESSION_FACTORY],
            clock=clock,
            data_dir=settings.data_dir,
            node=node,
            alive=cluster.alive,
        )
        hooks = Hooks(
            send=send,
            media_changed=media_changed,
            recording_changed=recording_changed,
            log=log,
            clock=clock,
            states=RedisStateStore(client) if client is not None else MemoryStateStore(),
            quality=QualityLog(session_factory=app[keys.SESSION_FACTORY], clock=clock),
        )
        rooms = Rooms(
            hooks=hooks,
            ice_servers=ice_servers,
            video_floor=settings.media_video_floor_kbps * 1000,
        )
        app[keys.ROOMS] = rooms
        placement: Placement = (
            RedisPlacement(client, node=node, node_lost_seconds=settings.node_lost_seconds)
            if client is not None
            else LonePlacement(node=node)
        )
        app[keys.DIRECTORY] = RoomDirectory(
            rooms=rooms,
            cluster=cluster,
            placement=placement,
            publisher=publisher,
            sio=app[keys.SIO],
            settings=settings,
        )
        app[keys.HEALTH_CHECKS].append(("nodes", cluster.check))
        await cluster.start()
        yield
        await cluster.stop()
        if client is not None:
            await client.aclose()

    async def close_rooms_of(moved: Moved) -> None:
        directory = app.get(keys.DIRECTORY)
        if directory is not None and moved.target not in LIVE:
            await directory.close(moved.consultation_id)

    async def drain(app: web.Application) -> None:
        directory = app.get(keys.DIRECTORY)
        if directory is not None:
            await directory.drain()

    app.cleanup_ctx.append(run_rooms)
    publisher.listen(Moved, close_rooms_of)
    app.on_shutdown.append(drain)
