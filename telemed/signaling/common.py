"""What every Socket.IO handler uses: acks, payload parsing, the caller's session."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import socketio
from aiohttp import web
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import db, keys, live
from telemed.accounts.models import User
from telemed.accounts.service import get_session_user
from telemed.api import parse_model
from telemed.errors import ErrorCode, Forbidden, TelemedError, Unauthenticated

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Ack = dict[str, Any]


def ok(data: BaseModel | None = None) -> Ack:
    return {"ok": True, "data": data.model_dump(mode="json") if data is not None else {}}


def refused(error: TelemedError) -> Ack:
    return {"ok": False, "error": error.to_wire()}


parse = parse_model
"""Validate an event's payload: ``invalid_input`` with the fields' errors if it fails."""


@asynccontextmanager
async def caller(
    app: web.Application, sio: socketio.AsyncServer, sid: str, *, write: bool = False
) -> AsyncIterator[tuple[AsyncSession, User]]:
    """A transaction and the socket's user, whose token must still be valid."""
    saved = await sio.get_session(sid)
    now = app[keys.CLOCK].now()
    async with app[keys.SESSION_FACTORY]() as session:
        if write:
            await db.begin_write(session)
        found = await get_session_user(session, token=saved["token"], now=now)
        if found is None:
            raise Unauthenticated("The session has expired or was ended; sign in again")
        try:
            yield session, found[0]
            await session.commit()
        except BaseException:
            live.drop(session)
            await session.rollback()
            raise
        await live.publish(app[keys.EMIT], live.take(session))


class _Aimed(BaseModel):
    """What every client → server event names: its consultation."""

    consultation_id: uuid.UUID


async def check_scope(sio: socketio.AsyncServer, sid: str, data: Any) -> None:
    """A socket signed in with a join token acts on its consultation only: an event that
    names another one is ``forbidden`` (without looking it up), one that names none is
    ``invalid_input``. The scope is fixed when the token is issued, so the one saved at
    connect holds; expiry and revocation are checked as for any token."""
    scope = (await sio.get_session(sid)).get("consultation_id")
    if scope is None:
        return
    aimed = parse(_Aimed, data if isinstance(data, dict) else {})
    if str(aimed.consultation_id) != scope:
        raise Forbidden(
            "A join token acts on its own consultation only",
            details={"join_token_for": scope},
        )


def on(
    app: web.Application,
    sio: socketio.AsyncServer,
    event: str,
    handler: Callable[[str, Any], Awaitable[Ack]],
) -> None:
    """Register ``handler`` for a client → server ``event``: it answers with an ack (its
    errors in the one shape), counts against the caller's rate limits (``event.user``
    for every event, and the event's own, ``chat:typing`` → ``chat.typing``, where
    ``telemed.limits`` names one), and a join token's socket acts on its own
    consultation only (``check_scope``)."""
    limiter = app[keys.LIMITER]
    own_limit = event.replace(":", ".")
    limits = ["event.user", *([own_limit] if own_limit in limiter.limits else [])]

    async def wrapped(sid: str, data: Any = None) -> Ack:
        try:
            saved = await sio.get_session(sid)
            for name in limits:
                await limiter.hit(name, f"user:{saved['user_id']}")
            await check_scope(sio, sid, data)
            return await handler(sid, data)
        except TelemedError as exc:
            return refused(exc)
        except Exception:
            logger.exception("socket event %s failed", event)
            return {
                "ok": False,
                "error": {
                    "code": ErrorCode.INTERNAL.value,
                    "message": "Something went wrong on our side",
                    "details": {},
                },
            }

    sio.on(event, handler=wrapped)
