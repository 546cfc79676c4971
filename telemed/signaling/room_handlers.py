"""Socket.IO events of the video room: join, leave, the WebRTC offer/answer exchange,
device reports, recording, and the doctor ending the consultation. The media itself is
``telemed.media.room``; these methods are part of ``handlers.Namespace``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from telemed import audit, keys, live
from telemed.errors import Forbidden, InvalidState
from telemed.media.passthrough import check_aiortc
from telemed.media.recordings import RecordingLog
from telemed.media.room import Hooks, Participant, Room, Rooms, ice_servers_of
from telemed.media.service import check_join
from telemed.media.turn import ice_servers_for
from telemed.scheduling.consultations import check_end
from telemed.scheduling.lifecycle import LIVE, Moved
from telemed.signaling.events import (
    Answer,
    ConsentView,
    ConsultationEnd,
    ConsultationView,
    Empty,
    MediaReport,
    MediaStatusChanged,
    MediaView,
    ParticipantJoined,
    ParticipantLeft,
    RecordingCommand,
    RecordingConsent,
    RecordingStateChanged,
    RecordingView,
    RoomJoin,
    RoomJoined,
    RoomLeave,
    RoomParticipant,
    SessionDescription,
)
from telemed.signaling.namespace import Ack, ok, video_room

if TYPE_CHECKING:
    from telemed.signaling.namespace import Realtime

    _Base = Realtime
else:
    _Base = object


class RoomEvents(_Base):
    """The video room's events (a part of ``handlers.Namespace``)."""

    @property
    def rooms(self) -> Rooms:
        return self.app[keys.ROOMS]

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
        cid = str(consultation.id)
        room = await self.rooms.open(cid)
        before = room.participants.get(str(user.id))
        previous_sid = before.sid if before is not None else None
        participant = await room.join(user_id=str(user.id), role=party.value, sid=sid)
        if previous_sid is not None and previous_sid != sid:
            await self.leave_room(previous_sid, video_room(cid))
        await self.enter_room(sid, video_room(cid))
        if before is None:
            await self.send(
                ParticipantJoined(
                    consultation_id=consultation.id, user_id=user.id, role=participant.role
                ),
                to=[video_room(cid)],
                skip_sid=sid,
            )
        return ok(
            RoomJoined(
                consultation=ConsultationView.of(consultation),
                recording=recording_view(room),
                participants=[
                    RoomParticipant.model_validate(
                        {
                            "user_id": p.user_id,
                            "role": p.role,
                            "media": MediaView.model_validate(p.status),
                        }
                    )
                    for p in room.participants.values()
                ],
                ice_servers=ice_servers_for(settings, user_id=user.id, now=self.clock.now()),
            )
        )

    async def on_rtc_offer(self, sid: str, request: SessionDescription) -> Ack:
        """rtc:offer {consultation_id, sdp} → {sdp}"""
        room, participant = await self.member(sid, request.consultation_id)
        return ok(Answer(sdp=await room.offer(participant.user_id, request.sdp)))

    async def on_rtc_answer(self, sid: str, request: SessionDescription) -> Ack:
        """rtc:answer {consultation_id, sdp}"""
        room, participant = await self.member(sid, request.consultation_id)
        await room.answer(participant.user_id, request.sdp)
        return ok(Empty())

    async def on_media_report(self, sid: str, request: MediaReport) -> Ack:
        """media:report {consultation_id, camera, microphone, camera_enabled?,
        microphone_enabled?}"""
        room, participant = await self.member(sid, request.consultation_id)
        await room.report(
            participant.user_id,
            camera=request.camera,
            microphone=request.microphone,
            camera_enabled=request.camera_enabled,
            microphone_enabled=request.microphone_enabled,
        )
        return ok(Empty())

    async def on_recording_consent(self, sid: str, request: RecordingConsent) -> Ack:
        """recording:consent {consultation_id, granted}"""
        room, participant = await self.member(sid, request.consultation_id)
        if room.consents.get(participant.user_id, False) == request.granted:
            return ok(Empty())  # no change: nothing to tell or to audit
        await self.recorded(
            sid,
            request.consultation_id,
            "recording.consent_" + ("given" if request.granted else "withdrawn"),
        )
        await room.consent(participant.user_id, granted=request.granted)
        return ok(Empty())

    async def on_recording_start(self, sid: str, request: RecordingCommand) -> Ack:
        """recording:start {consultation_id} (the doctor)"""
        room, participant = await self.member(sid, request.consultation_id, doctor=True)
        await room.start_recording(participant.user_id)
        await self.recorded(sid, request.consultation_id, "recording.started")
        return ok(Empty())

    async def on_recording_stop(self, sid: str, request: RecordingCommand) -> Ack:
        """recording:stop {consultation_id} (the doctor)"""
        room, _ = await self.member(sid, request.consultation_id, doctor=True)
        if room.recording:
            await room.stop_recording()
            await self.recorded(sid, request.consultation_id, "recording.stopped")
        return ok(Empty())

    async def on_room_leave(self, sid: str, request: RoomLeave) -> Ack:
        """room:leave {consultation_id}"""
        room = self.rooms.get(str(request.consultation_id))
        if room is not None:
            for participant in list(room.participants.values()):
                if participant.sid == sid:
                    await self._leave(room, participant)
        return ok(Empty())

    async def on_consultation_end(self, sid: str, request: ConsultationEnd) -> Ack:
        """consultation:end {consultation_id} (the doctor): closes the room, as every
        move out of the live states does (``close_rooms_of``)."""
        async with self.transaction(sid, write=True) as (session, user):
            await check_end(
                session, actor=user, now=self.clock.now(), consultation_id=request.consultation_id
            )
        return ok(Empty())

    async def member(
        self, sid: str, consultation_id: uuid.UUID, *, doctor: bool = False
    ) -> tuple[Room, Participant]:
        """The caller's place in a room it joined from this socket; with ``doctor``, the
        place must be the doctor's (the one rule for the doctor's commands)."""
        async with self.transaction(sid) as (_session, user):
            pass
        room = self.rooms.get(str(consultation_id))
        participant = room.participants.get(str(user.id)) if room is not None else None
        if room is None or participant is None or participant.sid != sid:
            raise InvalidState("Join the room first (room:join)")
        if doctor and participant.role != "doctor":
            raise Forbidden("Only the doctor does this")
        return room, participant

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

    async def _leave(self, room: Room, participant: Participant) -> None:
        await room.leave(participant.user_id)
        await self.leave_room(participant.sid, video_room(room.consultation_id))
        await self.send(
            ParticipantLeft(
                consultation_id=uuid.UUID(room.consultation_id),
                user_id=uuid.UUID(participant.user_id),
            ),
            to=[video_room(room.consultation_id)],
        )

    async def leave_rooms_of(self, sid: str) -> None:
        """A socket went away: it leaves the rooms it was in."""
        for room, participant in self.rooms.rooms_of(sid):
            await self._leave(room, participant)


def recording_view(room: Room) -> RecordingView:
    return RecordingView(
        active=room.recording,
        consents=[
            ConsentView(user_id=uuid.UUID(user_id), granted=granted)
            for user_id, granted in room.consents.items()
        ],
    )


def setup_rooms(app: web.Application) -> None:
    """This node's video rooms, what they tell the participants, and their closing: at
    shutdown, and whenever a consultation leaves the live states (ended, cancelled, a
    no-show), whichever part of the system moved it. The rooms are made at start-up,
    once the database is open (their recording log writes to it)."""
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

    async def open_rooms(app: web.Application) -> None:
        clock = app[keys.CLOCK]
        log = RecordingLog(
            session_factory=app[keys.SESSION_FACTORY], clock=clock, data_dir=settings.data_dir
        )
        hooks = Hooks(
            send=send,
            media_changed=media_changed,
            recording_changed=recording_changed,
            log=log,
            clock=clock,
        )
        app[keys.ROOMS] = Rooms(hooks=hooks, ice_servers=ice_servers)

    async def close_rooms_of(moved: Moved) -> None:
        rooms = app.get(keys.ROOMS)
        if rooms is not None and moved.target not in LIVE:
            await rooms.close(str(moved.consultation_id))

    async def close_rooms(app: web.Application) -> None:
        rooms = app.get(keys.ROOMS)
        if rooms is not None:
            await rooms.close_all()

    app.on_startup.append(open_rooms)
    publisher.listen(Moved, close_rooms_of)
    app.on_shutdown.append(close_rooms)
