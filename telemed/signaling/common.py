"""What every Socket.IO handler uses: acks, payload parsing, the caller's session."""

from __future__ import annotations

import logging
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
from telemed.errors import ErrorCode, TelemedError, Unauthenticated

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


def acked(
    handler: Callable[[str, Any], Awaitable[Ack]],
) -> Callable[[str, Any], Awaitable[Ack]]:
    async def wrapped(sid: str, data: Any = None) -> Ack:
        try:
            return await handler(sid, data)
        except TelemedError as exc:
            return refused(exc)
        except Exception:
            logger.exception("socket event failed")
            return {
                "ok": False,
                "error": {
                    "code": ErrorCode.INTERNAL.value,
                    "message": "Something went wrong on our side",
                    "details": {},
                },
            }

    return wrapped
