"""Socket.IO handlers of the video room: join, leave, the WebRTC offer/answer exchange,
and the doctor ending the consultation. The media itself is ``telemed.media.room``."""

from __future__ import annotations

import uuid
from typing import Any

import aioice.ice
import socketio
from aiohttp import web

from telemed import audit, keys, live
from telemed.errors import Forbidden, InvalidState
from telemed.media.passthrough import check_aiortc
from telemed.media.recordings import RecordingLog
from telemed.media.room import Hooks, Participant, Room, Rooms
from telemed.media.service import check_join
from telemed.media.turn import ice_servers_for
from telemed.scheduling.consultations import check_end, live_view
from telemed.signaling.common import Ack, caller, ok, on, parse
from telemed.signaling.events import (
    Answer,
    ConsentView,
    ConsultationEnd,
    ConsultationView,
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


def register(app: web.Application, sio: socketio.AsyncServer) -> None:
    settings = app[keys.SETTINGS]
    check_aiortc()
    if settings.media_addresses:
        bind_media_addresses(settings.media_addresses)

    async def send(sid: str, event: str, payload: dict[str, Any]) -> None:
        await sio.emit(event, payload, to=sid)

    async def announce(room: Room, participant: Participant) -> None:
        status = MediaView.model_validate(participant.status)
        changed = MediaStatusChanged(
            consultation_id=uuid.UUID(room.consultation_id),
            user_id=uuid.UUID(participant.user_id),
            camera=status.camera,
            microphone=status.microphone,
        )
        await sio.emit(
            "media:status_changed",
            changed.model_dump(mode="json"),
            room=_room(room.consultation_id),
        )

    async def recording_changed(room: Room) -> None:
        changed = RecordingStateChanged(
            consultation_id=uuid.UUID(room.consultation_id), recording=recording_view(room)
        )
        await sio.emit(
            "recording:state_changed",
            changed.model_dump(mode="json"),
            room=_room(room.consultation_id),
        )

    hooks = Hooks(
        send=send,
        media_changed=announce,
        recording_changed=recording_changed,
        log=RecordingLog(app),
    )
    rooms = Rooms(hooks=hooks, ice_servers=settings.ice_servers)
    app[keys.ROOMS] = rooms

    async def close_rooms(_app: web.Application) -> None:
        await rooms.close_all()

    app.on_shutdown.append(close_rooms)

    async def join(sid: str, data: Any) -> Ack:
        """room:join {consultation_id} → {consultation, participants, ice_servers}"""
        request = parse(RoomJoin, data)
        async with caller(app, sio, sid, write=True) as (session, user):
            consultation, party = await check_join(
                session,
                actor=user,
                now=app[keys.CLOCK].now(),
                settings=settings,
                consultation_id=request.consultation_id,
            )
        cid = str(consultation.id)
        room = rooms.open(cid)
        before = room.participants.get(str(user.id))
        previous_sid = before.sid if before is not None else None
        participant = await room.join(user_id=str(user.id), role=party.value, sid=sid)
        if previous_sid is not None and previous_sid != sid:
            await sio.leave_room(previous_sid, _room(cid))
        await sio.enter_room(sid, _room(cid))
        if before is None:
            joined = ParticipantJoined(
                consultation_id=consultation.id, user_id=user.id, role=participant.role
            )
            await sio.emit(
                "room:participant_joined",
                joined.model_dump(mode="json"),
                room=_room(cid),
                skip_sid=sid,
            )
        return ok(
            RoomJoined(
                consultation=ConsultationView.model_validate(live_view(consultation)),
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
                ice_servers=ice_servers_for(settings, user_id=user.id, now=app[keys.CLOCK].now()),
            )
        )

    async def offer(sid: str, data: Any) -> Ack:
        """rtc:offer {consultation_id, sdp} → {sdp}"""
        request = parse(SessionDescription, data)
        room, participant = await member(sid, request.consultation_id)
        return ok(Answer(sdp=await room.offer(participant.user_id, request.sdp)))

    async def answer(sid: str, data: Any) -> Ack:
        """rtc:answer {consultation_id, sdp}"""
        request = parse(SessionDescription, data)
        room, participant = await member(sid, request.consultation_id)
        await room.answer(participant.user_id, request.sdp)
        return ok()

    async def report(sid: str, data: Any) -> Ack:
        """media:report {consultation_id, camera, microphone, camera_enabled?,
        microphone_enabled?}"""
        request = parse(MediaReport, data)
        room, participant = await member(sid, request.consultation_id)
        await room.report(
            participant.user_id,
            camera=request.camera,
            microphone=request.microphone,
            camera_enabled=request.camera_enabled,
            microphone_enabled=request.microphone_enabled,
        )
        return ok()

    async def consent(sid: str, data: Any) -> Ack:
        """recording:consent {consultation_id, granted}"""
        request = parse(RecordingConsent, data)
        room, participant = await member(sid, request.consultation_id)
        if room.consents.get(participant.user_id, False) == request.granted:
            return ok()  # no change: nothing to tell or to audit
        await recorded(
            sid,
            request.consultation_id,
            "recording.consent_" + ("given" if request.granted else "withdrawn"),
        )
        await room.consent(participant.user_id, granted=request.granted)
        return ok()

    async def start_recording(sid: str, data: Any) -> Ack:
        """recording:start {consultation_id} (the doctor)"""
        request = parse(RecordingCommand, data)
        room, participant = await member(sid, request.consultation_id)
        await room.start_recording(participant.user_id)
        await recorded(sid, request.consultation_id, "recording.started")
        return ok()

    async def stop_recording(sid: str, data: Any) -> Ack:
        """recording:stop {consultation_id} (the doctor)"""
        request = parse(RecordingCommand, data)
        room, participant = await member(sid, request.consultation_id)
        if participant.role != "doctor":
            raise Forbidden("Only the doctor stops the recording")
        if room.recording:
            await room.stop_recording()
            await recorded(sid, request.consultation_id, "recording.stopped")
        return ok()

    async def recorded(sid: str, consultation_id: uuid.UUID, action: str) -> None:
        """Audit a consent or a start/stop of the recording."""
        async with caller(app, sio, sid, write=True) as (session, user):
            audit.record(
                session,
                now=app[keys.CLOCK].now(),
                actor_id=user.id,
                action=action,
                object_type="consultation",
                object_id=consultation_id,
            )

    async def leave(sid: str, data: Any) -> Ack:
        """room:leave {consultation_id}"""
        request = parse(RoomLeave, data)
        room = rooms.get(str(request.consultation_id))
        if room is not None:
            for participant in list(room.participants.values()):
                if participant.sid == sid:
                    await _leave(room, participant)
        return ok()

    async def end(sid: str, data: Any) -> Ack:
        """consultation:end {consultation_id} (the doctor)"""
        request = parse(ConsultationEnd, data)
        async with caller(app, sio, sid, write=True) as (session, user):
            await check_end(
                session,
                actor=user,
                now=app[keys.CLOCK].now(),
                consultation_id=request.consultation_id,
            )
        await rooms.close(str(request.consultation_id))
        return ok()

    async def member(sid: str, consultation_id: uuid.UUID) -> tuple[Room, Participant]:
        """The caller's place in a room it joined from this socket."""
        async with caller(app, sio, sid) as (_session, user):
            pass
        room = rooms.get(str(consultation_id))
        participant = room.participants.get(str(user.id)) if room is not None else None
        if room is None or participant is None or participant.sid != sid:
            raise InvalidState("Join the room first (room:join)")
        return room, participant

    async def _leave(room: Room, participant: Participant) -> None:
        await room.leave(participant.user_id)
        await sio.leave_room(participant.sid, _room(room.consultation_id))
        left = ParticipantLeft(
            consultation_id=uuid.UUID(room.consultation_id),
            user_id=uuid.UUID(participant.user_id),
        )
        await sio.emit(
            "room:participant_left", left.model_dump(mode="json"), room=_room(room.consultation_id)
        )

    async def disconnected(sid: str) -> None:
        for room, participant in rooms.rooms_of(sid):
            await _leave(room, participant)

    app[keys.ROOM_DISCONNECT] = disconnected

    # A consultation that stops taking place (ended over HTTP, cancelled, a no-show)
    # closes its room: its connections and recordings end with it.
    plain_emit = app[keys.EMIT]

    async def emit(event: live.LiveEvent) -> None:
        await plain_emit(event)
        if event.event == "consultation:updated" and event.payload.get("state") not in LIVE:
            await rooms.close(str(event.payload["id"]))

    app[keys.EMIT] = emit
    on(app, sio, "room:join", join)
    on(app, sio, "rtc:offer", offer)
    on(app, sio, "rtc:answer", answer)
    on(app, sio, "media:report", report)
    on(app, sio, "recording:consent", consent)
    on(app, sio, "recording:start", start_recording)
    on(app, sio, "recording:stop", stop_recording)
    on(app, sio, "room:leave", leave)
    on(app, sio, "consultation:end", end)


LIVE = frozenset({"scheduled", "in_progress"})


def recording_view(room: Room) -> RecordingView:
    return RecordingView(
        active=room.recording,
        consents=[
            ConsentView(user_id=uuid.UUID(user_id), granted=granted)
            for user_id, granted in room.consents.items()
        ],
    )


def bind_media_addresses(addresses: list[str]) -> None:
    """Offer only these local addresses as ICE host candidates (aioice would offer every
    interface but loopback; tests and closed networks need exactly these)."""
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
        return list(chosen)

    aioice.ice.get_host_addresses = host_addresses


def _room(consultation_id: str) -> str:
    return f"room:{consultation_id}"
