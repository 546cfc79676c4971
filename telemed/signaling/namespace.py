"""The Socket.IO API as a class: one method per client → server event.

``chat:send`` is handled by ``on_chat_send``, ``room:join`` by ``on_room_join``, and so on
(``Realtime.trigger_event``): the payload is parsed into the event's model from the
protocol (``events.PROTOCOL``) before the method runs, the method's return value is the
ack (``{"ok": true, "data": …}``), and every error becomes ``{"ok": false, "error": …}``
in the one shape. Every event counts against the caller's rate limits, and a join
token's socket may act on its own consultation only. Per-connection data lives in the
Socket.IO session (``save_session``), never on the namespace (one object serves every
connection).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import socketio
from aiohttp import web
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import keys, live
from telemed.accounts.models import User
from telemed.accounts.service import get_session_user
from telemed.api import parse_model
from telemed.errors import ErrorCode, Forbidden, TelemedError, Unauthenticated
from telemed.signaling.events import PROTOCOL, EventSpec

logger = logging.getLogger(__name__)

Ack = dict[str, Any]
CLIENT_EVENTS: dict[str, EventSpec] = {
    spec.name: spec for spec in PROTOCOL if spec.direction == "client→server"
}


def ok(data: BaseModel | dict[str, Any] | None = None) -> Ack:
    """A successful ack; ``data`` a model, or JSON data made already (a chat message)."""
    if isinstance(data, BaseModel):
        return {"ok": True, "data": data.model_dump(mode="json")}
    return {"ok": True, "data": data if data is not None else {}}


def refused(error: TelemedError) -> Ack:
    return {"ok": False, "error": error.to_wire()}


INTERNAL = {
    "ok": False,
    "error": {
        "code": ErrorCode.INTERNAL.value,
        "message": "Something went wrong on our side",
        "details": {},
    },
}


class _Aimed(BaseModel):
    """What every client → server event names: its consultation."""

    consultation_id: uuid.UUID


class Realtime(socketio.AsyncNamespace):  # type: ignore[misc]  # python-socketio has no types
    """What every event handler shares: dispatch, acks, limits, scope, the caller's
    transaction, and sending events. Subclasses add ``on_<event>`` methods."""

    def __init__(self, app: web.Application) -> None:
        super().__init__("/")
        self.app = app
        self.publisher = app[keys.PUBLISHER]
        self.limiter = app[keys.LIMITER]
        self.clock = app[keys.CLOCK]

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        spec = CLIENT_EVENTS.get(event)
        handler = getattr(self, "on_" + event.replace(":", "_"), None) if spec else None
        if spec is None or handler is None:
            return None  # not an event of the protocol: ignored, as python-socketio does
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        try:
            await self._admit(sid, event, data)
            return await handler(sid, parse_model(spec.payload, data))
        except TelemedError as exc:
            return refused(exc)
        except Exception:
            logger.exception("socket event %s failed", event)
            return INTERNAL

    async def _admit(self, sid: str, event: str, data: Any) -> None:
        """The caller's rate limits (``event.user`` for every event, and the event's own,
        ``chat:typing`` → ``chat.typing``, where ``telemed.limits`` names one), then a
        join token's scope: it acts on its own consultation only, and an event that
        names another one is ``forbidden`` before anything is looked up (one that names
        none is ``invalid_input``)."""
        saved = await self.get_session(sid)
        who = f"user:{saved['user_id']}"
        await self.limiter.hit("event.user", who)
        own = event.replace(":", ".")
        if own in self.limiter.limits:
            await self.limiter.hit(own, who)
        scope = saved.get("consultation_id")
        if scope is not None:
            aimed = parse_model(_Aimed, data if isinstance(data, dict) else {})
            if str(aimed.consultation_id) != scope:
                raise Forbidden(
                    "A join token acts on its own consultation only",
                    details={"join_token_for": scope},
                )

    @asynccontextmanager
    async def transaction(
        self, sid: str, *, write: bool = False
    ) -> AsyncIterator[tuple[AsyncSession, User]]:
        """A unit of work (``live.unit_of_work``) and the socket's user, whose token must
        still be valid."""
        saved = await self.get_session(sid)
        async with live.unit_of_work(
            self.app[keys.SESSION_FACTORY], self.publisher, write=write
        ) as session:
            found = await get_session_user(session, token=saved["token"], now=self.clock.now())
            if found is None:
                raise Unauthenticated("The session has expired or was ended; sign in again")
            yield session, found[0]

    async def send(
        self, model: live.ServerEvent, *, to: Sequence[str], skip_sid: str | None = None
    ) -> None:
        """Send an event now (rooms, or socket ids); only the protocol's events go."""
        await self.publisher.send([live.event(model, to=to, skip_sid=skip_sid)])


def emitter(sio: socketio.AsyncServer) -> Callable[[live.LiveEvent], Awaitable[None]]:
    """The publisher's way out: one emit to all of an event's rooms (a socket in several
    gets it once), through Redis to the other nodes when configured."""

    async def emit(item: live.LiveEvent) -> None:
        await sio.emit(item.name, item.payload, room=list(item.rooms), skip_sid=item.skip_sid)

    return emit


def consultation_room(consultation_id: uuid.UUID | str) -> str:
    """The room of a consultation's watchers (chat, state, presence)."""
    return f"consultation:{consultation_id}"


def video_room(consultation_id: uuid.UUID | str) -> str:
    """The room of a consultation's video room participants."""
    return f"room:{consultation_id}"
