"""The way to each consultation's video room from any node.

A room lives on one node, its owner (``telemed.media.placement`` pins it there); the
participants' sockets may be on any node. The node holding a socket (the socket side)
checks who the caller is and what it may do, then asks the room's owner (the owner
side) through ``telemed.cluster``: join, offer, answer, report, consent, start, stop,
leave. The owner answers, and reaches the participants' sockets, wherever they are,
through the Socket.IO manager (its ``rtc:offer`` and the room's events). With one node
the asking is a call, on the same path.

What each side remembers: the owner, its rooms (each participant's socket and that
socket's node); the socket side, which rooms each of its sockets joined and on which
node (``joined``). Every heartbeat each side looks at the other: a socket side whose
room's owner is gone tells the socket to join again (``room:rejoin``: the join places
the room on a live node); an owner drops the participants whose socket's node is gone
(they come back from another one). A stopping node hands its rooms over the same way
(``drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Literal, Protocol

import socketio

from telemed import live
from telemed.cluster import Cluster
from telemed.errors import Forbidden, InvalidState, Unavailable
from telemed.live import Publisher
from telemed.media.room import Participant, Room, Rooms
from telemed.settings import Settings
from telemed.signaling.events import (
    Answer,
    ConsentView,
    MediaView,
    ParticipantJoined,
    ParticipantLeft,
    RecordingView,
    RoomParticipant,
    RoomRejoin,
)
from telemed.signaling.namespace import video_room

logger = logging.getLogger(__name__)

Reason = Literal["node_stopping", "node_lost", "moved"]
MOVE_ATTEMPTS = 3
"""A join placed on a node that turned out to be stopping is placed again this often."""


class Placement(Protocol):
    """Room pins (``telemed.media.placement``)."""

    async def owner(self, consultation_id: str) -> str | None: ...

    async def place(
        self, consultation_id: str, *, candidates: list[str], replacing: str | None
    ) -> str: ...

    async def release(self, consultation_id: str) -> None: ...

    async def forget(self, consultation_id: str, *, owner: str) -> None: ...

    async def keep(self, consultation_ids: list[str]) -> list[str]: ...


class RoomDirectory:
    """This node's two sides: the rooms it holds, and its sockets' ways to theirs."""

    def __init__(
        self,
        *,
        rooms: Rooms,
        cluster: Cluster,
        placement: Placement,
        publisher: Publisher,
        sio: socketio.AsyncServer,
        settings: Settings,
    ) -> None:
        self.rooms = rooms
        self.cluster = cluster
        self.placement = placement
        self.publisher = publisher
        self.sio = sio
        self.settings = settings
        self.joined: dict[str, dict[str, str]] = {}
        """This node's sockets: sid → {consultation id: the room's node}."""
        self._moves: set[asyncio.Task[None]] = set()
        self._departing: dict[str, dict[str, str]] = {}
        """Closed sockets whose leave waits out ``TELEMED_ROOM_RETURN_SECONDS``
        (``leave_all``): sid → {consultation id: the room's node}."""
        self._departures: set[asyncio.Task[None]] = set()
        for op, handler in {
            "room.join": self._join,
            "room.offer": self._offer,
            "room.answer": self._answer,
            "room.candidate": self._candidate,
            "room.audio_only": self._audio_only,
            "room.stats": self._stats,
            "room.report": self._report,
            "room.consent": self._consent,
            "room.start": self._start_recording,
            "room.stop": self._stop_recording,
            "room.leave": self._leave,
            "room.close": self._close,
            "room.present": self._present,
        }.items():
            cluster.handle(op, handler)
        cluster.on_beat(self._look_around)

    @property
    def node(self) -> str:
        return self.cluster.node_id

    # The socket side: what this node's sockets ask.

    async def join(
        self, consultation_id: uuid.UUID, *, user_id: uuid.UUID, role: str, sid: str
    ) -> dict[str, Any]:
        """Enter the room wherever it is (placing it if need be); returns the owner's
        answer: ``participants`` and ``recording``."""
        cid = str(consultation_id)
        args = {"consultation_id": cid, "user_id": str(user_id), "role": role, "sid": sid}
        args["node"] = self.node
        for attempt in range(MOVE_ATTEMPTS):
            owner = await self._owner_for_join(cid)
            try:
                answer = await self.cluster.request(owner, "room.join", args)
                break
            except Unavailable as exc:
                if not exc.details.get("moving") or attempt == MOVE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        before = self.joined.setdefault(sid, {}).get(cid)
        self.joined[sid][cid] = owner
        if before is not None and before != owner:
            # The room moved: the old node lets go of this participant quietly.
            self._in_background(self._ask_quietly(before, "room.leave", {**args, "quiet": True}))
        previous_sid = answer.pop("previous_sid", None)
        if previous_sid is not None and previous_sid != sid:
            # The user's other socket (another tab or device, on any node) leaves the
            # room's events: the place is this socket's now.
            await self.sio.leave_room(previous_sid, video_room(cid))
        return answer

    async def ask(
        self, sid: str, consultation_id: uuid.UUID, op: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        """Ask the room this socket joined to do ``op``."""
        cid = str(consultation_id)
        owner = self.joined.get(sid, {}).get(cid)
        if owner is None:
            raise InvalidState("Join the room first (room:join)")
        if not self.cluster.alive(owner):
            raise Unavailable("The room is moving to another server: join again")
        return await self.cluster.request(owner, op, {**args, "consultation_id": cid, "sid": sid})

    async def leave(self, sid: str, consultation_id: uuid.UUID) -> None:
        """The socket leaves the room (``room:leave``): at once, also when its socket
        has closed meanwhile (a client that says it leaves, then closes its socket)."""
        cid = str(consultation_id)
        owner = self.joined.get(sid, {}).pop(cid, None)
        if owner is None:
            owner = self._departing.get(sid, {}).pop(cid, None)
        await self.sio.leave_room(sid, video_room(cid))
        if owner is not None:
            await self._ask_quietly(owner, "room.leave", {"consultation_id": cid, "sid": sid})

    async def leave_all(self, sid: str, *, on_purpose: bool = False) -> None:
        """The socket closed. Not while this node stops: its participants come back
        through another node and keep their place (an owner drops those that do not).

        Unless this server closed it ``on_purpose``, the socket leaves its rooms only
        after ``TELEMED_ROOM_RETURN_SECONDS``: its connection may have dropped with the
        network, and a page back on a new socket within them takes up its place, and
        its media connection with it, as it was (the join moves the place to the new
        socket, so the leave, asked for the old one, finds nobody). Meanwhile the others
        see the participant reconnecting. A client that goes away for good says so
        (``room:leave``)."""
        rooms = self.joined.pop(sid, {})
        if self.cluster.draining or not rooms:
            return
        if not on_purpose and self.settings.room_return_seconds > 0:
            self._departing[sid] = rooms
            task = asyncio.create_task(self._leave_later(sid))
            self._departures.add(task)
            task.add_done_callback(self._departures.discard)
            return
        for cid, owner in rooms.items():
            await self._ask_quietly(owner, "room.leave", {"consultation_id": cid, "sid": sid})

    async def _leave_later(self, sid: str) -> None:
        try:
            await asyncio.sleep(self.settings.room_return_seconds)
        finally:
            rooms = self._departing.pop(sid, {})
        for cid, owner in rooms.items():
            await self._ask_quietly(owner, "room.leave", {"consultation_id": cid, "sid": sid})

    async def close(self, consultation_id: uuid.UUID) -> None:
        """The consultation is over: its room closes, on whichever node holds it."""
        cid = str(consultation_id)
        owner = await self.placement.owner(cid)
        if owner is None:
            return
        if not self.cluster.alive(owner):
            # Not alive at the last heartbeat: maybe new since; decide on a fresh reading.
            with contextlib.suppress(Unavailable):
                await self.cluster.read_nodes()
        if self.cluster.alive(owner):
            await self._ask_quietly(owner, "room.close", {"consultation_id": cid})
        else:
            await self.placement.forget(cid, owner=owner)

    async def _owner_for_join(self, cid: str) -> str:
        """The room's live owner; a room without one is placed (pinned) now."""
        pinned = await self.placement.owner(cid)
        if pinned is not None and self.cluster.alive(pinned):
            return pinned
        # Not alive at the last heartbeat, or not pinned: decide on a fresh reading.
        nodes = await self.cluster.read_nodes()
        if pinned is not None and pinned in nodes:
            return pinned
        taking = sorted(
            (node for node, load in nodes.items() if load.takes_rooms()),
            key=lambda node: (nodes[node].cpu, node),
        )
        return await self.placement.place(cid, candidates=taking, replacing=pinned)

    async def _ask_quietly(self, node: str, op: str, args: dict[str, Any]) -> None:
        """Ask, logging instead of raising: what is asked is tidying up."""
        try:
            await self.cluster.request(node, op, args)
        except Exception as exc:
            logger.info("room %s: %s on node %s: %s", args["consultation_id"], op, node, exc)

    def _in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._moves.add(task)
        task.add_done_callback(self._moves.discard)

    # The owner side: what the nodes ask of the rooms this node holds.

    async def _join(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.cluster.draining:
            raise Unavailable("This server is stopping", details={"moving": True})
        cid = args["consultation_id"]
        if self.rooms.get(cid) is None:
            # The room opens here: which nodes are alive now decides which of its files
            # a dead node left open (``RecordingLog.interrupted``).
            with contextlib.suppress(Unavailable):
                await self.cluster.read_nodes()
        room = await self.rooms.open(cid)
        user_id = args["user_id"]
        before = room.participants.get(user_id)
        previous_sid = before.sid if before is not None else None
        participant = await room.join(
            user_id=user_id, role=args["role"], sid=args["sid"], node=args["node"]
        )
        if before is None:
            joined = ParticipantJoined(
                consultation_id=uuid.UUID(cid),
                user_id=uuid.UUID(user_id),
                role=participant.role,
            )
            await self._send(joined, to=video_room(cid), skip_sid=participant.sid)
        return {
            "participants": [
                participant_view(p).model_dump(mode="json") for p in room.participants.values()
            ],
            "recording": recording_view(room).model_dump(mode="json"),
            "previous_sid": previous_sid,
            "connection_kept": participant.connected(),
        }

    async def _offer(self, args: dict[str, Any]) -> dict[str, Any]:
        room, participant = self._member(args)
        answer = await room.offer(participant.user_id, args["sdp"])
        return Answer(sdp=answer).model_dump(mode="json")

    async def _candidate(self, args: dict[str, Any]) -> dict[str, Any]:
        room, participant = self._member(args)
        await room.candidate(
            participant.user_id,
            args["candidate"],
            sdp_mid=args["sdp_mid"],
            sdp_mline_index=args["sdp_mline_index"],
            username_fragment=args["username_fragment"],
        )
        return {}

    async def _audio_only(self, args: dict[str, Any]) -> dict[str, Any]:
        room, participant = self._member(args)
        await room.choose_audio_only(participant.user_id, args["active"])
        return {}

    async def _stats(self, args: dict[str, Any]) -> dict[str, Any]:
        room, participant = self._member(args)
        await room.stats(participant.user_id, args["figures"])
        return {}

    async def _answer(self, args: dict[str, Any]) -> dict[str, Any]:
        room, participant = self._member(args)
        await room.answer(participant.user_id, args["sdp"])
        return {}

    async def _report(self, args: dict[str, Any]) -> dict[str, Any]:
        room, participant = self._member(args)
        await room.report(
            participant.user_id,
            camera=args["camera"],
            microphone=args["microphone"],
            camera_enabled=args["camera_enabled"],
            microphone_enabled=args["microphone_enabled"],
        )
        return {}

    async def _consent(self, args: dict[str, Any]) -> dict[str, Any]:
        """Returns whether the consent changed (only a change is told and audited)."""
        room, participant = self._member(args)
        granted = bool(args["granted"])
        if room.consents.get(participant.user_id, False) == granted:
            return {"changed": False}
        await room.consent(participant.user_id, granted=granted)
        return {"changed": True}

    async def _start_recording(self, args: dict[str, Any]) -> dict[str, Any]:
        room, participant = self._member(args, doctor=True)
        await room.start_recording(participant.user_id)
        return {}

    async def _stop_recording(self, args: dict[str, Any]) -> dict[str, Any]:
        """Returns whether a recording was stopped."""
        room, _ = self._member(args, doctor=True)
        if not room.recording:
            return {"stopped": False}
        await room.stop_recording()
        return {"stopped": True}

    async def _leave(self, args: dict[str, Any]) -> dict[str, Any]:
        """The participant on socket ``sid`` leaves; told to the room unless ``quiet``
        (it moved to the room's new node) or this node is stopping."""
        room = self.rooms.get(args["consultation_id"])
        if room is not None:
            for participant in list(room.participants.values()):
                if participant.sid == args["sid"]:
                    quiet = bool(args.get("quiet")) or self.cluster.draining
                    await self._drop(room, participant, announce=not quiet)
        return {}

    async def _present(self, args: dict[str, Any]) -> dict[str, Any]:
        """Who is in the room here (a stopping node waits for its participants to be)."""
        room = self.rooms.get(args["consultation_id"])
        return {"users": list(room.participants) if room is not None else []}

    async def _close(self, args: dict[str, Any]) -> dict[str, Any]:
        cid = args["consultation_id"]
        await self.rooms.close(cid)
        await self.placement.release(cid)
        return {}

    def _member(self, args: dict[str, Any], *, doctor: bool = False) -> tuple[Room, Participant]:
        """The caller's place in the room, taken from the socket it asks from; with
        ``doctor``, the place must be the doctor's (the one rule for the doctor's
        commands)."""
        room = self.rooms.get(args["consultation_id"])
        participant = room.participants.get(args["user_id"]) if room is not None else None
        if room is None or participant is None or participant.sid != args["sid"]:
            raise InvalidState("Join the room first (room:join)")
        if doctor and participant.role != "doctor":
            raise Forbidden("Only the doctor does this")
        return room, participant

    async def _drop(self, room: Room, participant: Participant, *, announce: bool) -> None:
        if not await room.leave(participant.user_id):
            return
        if announce:
            left = ParticipantLeft(
                consultation_id=uuid.UUID(room.consultation_id),
                user_id=uuid.UUID(participant.user_id),
            )
            await self._send(left, to=video_room(room.consultation_id))

    async def _send(self, model: live.ServerEvent, *, to: str, skip_sid: str | None = None) -> None:
        await self.publisher.send([live.event(model, to=[to], skip_sid=skip_sid)])

    async def _rejoin(
        self,
        consultation_id: str,
        sids: list[str],
        reason: Literal["node_stopping", "node_lost", "moved"],
    ) -> None:
        if not sids:
            return
        await self.publisher.send(
            [
                live.event(
                    RoomRejoin(consultation_id=uuid.UUID(consultation_id), reason=reason), to=sids
                )
            ]
        )

    # Every heartbeat, and at the end.

    async def _look_around(self) -> None:
        """The socket side's rooms whose node is gone, the owner side's participants
        whose socket's node is gone, and this node's pins (one another node took means
        this node's room there is not the room any more)."""
        for sid, rooms in list(self.joined.items()):
            for cid, owner in list(rooms.items()):
                if not self.cluster.alive(owner):
                    del rooms[cid]
                    logger.info("room %s: its node %s is gone; the socket joins again", cid, owner)
                    await self._rejoin(cid, [sid], "node_lost")
        for room in self.rooms:
            for participant in list(room.participants.values()):
                if participant.node and not self.cluster.alive(participant.node):
                    await self._drop(room, participant, announce=True)
        held = [room.consultation_id for room in self.rooms]
        if not held or self.cluster.draining:  # a stopping node lets its pins go
            return
        for cid in await self.placement.keep(held):
            taken = self.rooms.get(cid)
            if taken is None:
                continue
            logger.warning("room %s: pinned to another node meanwhile; handing it over", cid)
            sids = [p.sid for p in taken.participants.values()]
            await self.rooms.close(cid, handing_over=True)
            await self._rejoin(cid, sids, "moved")

    async def drain(self) -> None:
        """This node stops. It takes no new rooms and lets go of its rooms' pins; each
        participant joins again, so placing the room on another node: one whose socket
        is on another node is told to (``room:rejoin``), one whose socket is here is
        disconnected (its client connects to another process and joins from there).
        Once everyone is in the room's new place, or after
        ``TELEMED_NODE_DRAIN_SECONDS``, the rooms here close, their recording files
        finished; the recording goes on where the rooms went."""
        if self.cluster.draining:
            return
        self.cluster.draining = True
        # The rooms here close or move; one held elsewhere drops the participants of a
        # node that is gone.
        for task in list(self._departures):
            task.cancel()
        await self.cluster.beat()
        held = list(self.rooms)
        try:
            nodes = await self.cluster.read_nodes()
        except Unavailable:
            nodes = {}  # no Redis: the rooms cannot move; they close
        others = [node for node, load in nodes.items() if node != self.node and load.takes_rooms()]
        if held and others:
            logger.info("stopping: %d room(s) moving to other nodes", len(held))
            for room in held:
                await self.placement.release(room.consultation_id)
            for room in held:
                participants = list(room.participants.values())
                away = [p.sid for p in participants if p.node != self.node]
                await self._rejoin(room.consultation_id, away, "node_stopping")
                for participant in participants:
                    if participant.node == self.node:
                        await self.sio.disconnect(participant.sid)
            try:
                async with asyncio.timeout(self.settings.node_drain_seconds):
                    for room in held:
                        await self._moved(room)
                logger.info("stopping: every participant moved")
            except TimeoutError:
                logger.warning(
                    "stopping: %d participant(s) did not move within %g s",
                    sum(len(room.participants) for room in held),
                    self.settings.node_drain_seconds,
                )
        await self.rooms.close_all(handing_over=True)
        for task in list(self._moves):
            with contextlib.suppress(Exception):
                await task

    async def _moved(self, room: Room) -> None:
        """Until each of the room's participants is in its new place (or left)."""
        cid = room.consultation_id
        while True:
            waiting = set(room.participants)
            owner = await self.placement.owner(cid)
            if waiting and owner is not None and owner != self.node:
                with contextlib.suppress(Unavailable):
                    there = await self.cluster.request(
                        owner, "room.present", {"consultation_id": cid}
                    )
                    waiting -= set(there["users"])
            if not waiting:
                return
            # Asked again: the joins happen on other nodes, which do not tell this one.
            await asyncio.sleep(0.2)


def participant_view(participant: Participant) -> RoomParticipant:
    return RoomParticipant(
        user_id=uuid.UUID(participant.user_id),
        role=participant.role,
        media=MediaView.model_validate(participant.status),
        video=participant.link.video,
        audio_only_reason=participant.link.reason,
        interrupted=participant.interrupted,
    )


def recording_view(room: Room) -> RecordingView:
    return RecordingView(
        active=room.recording,
        consents=[
            ConsentView(user_id=uuid.UUID(user_id), granted=granted)
            for user_id, granted in room.consents.items()
        ],
    )
