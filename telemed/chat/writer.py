"""Group commits for chat messages.

Committing each message on its own costs a disk flush per message. The writer takes the
sends waiting at a moment and stores them in one transaction, each in its own savepoint
(a refused message rolls back alone), commits once, and only then answers each sender:
"acked" still means "stored". Live events of the batch leave after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import db, keys, live
from telemed.accounts.models import User
from telemed.accounts.service import get_session_user
from telemed.errors import TelemedError, Unauthenticated

logger = logging.getLogger(__name__)

MAX_BATCH = 200

Work = Callable[[AsyncSession, User, datetime], Awaitable[Any]]
"""One unit of work: given the batch's session, the caller's user and the time."""

TOKEN_RECHECK_SECONDS = 5.0
"""A socket's token is checked against the database at most this often (a sign-out cuts
the socket off within this time)."""


@dataclass
class _Pending:
    token: str
    work: Work
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class BatchWriter:
    """Runs units of work of many callers in shared transactions (one commit per batch)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._checked: dict[str, tuple[User, float]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemed-chat-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, token: str, work: Work) -> Any:
        """Do ``work`` for the user of ``token`` in the next batch; returns its result once
        the batch has committed, or raises its ``TelemedError``."""
        pending = _Pending(token, work)
        await self._queue.put(pending)
        return await pending.done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._store(batch)
            except Exception as exc:
                logger.exception("chat batch of %d failed", len(batch))
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)

    async def _store(self, batch: list[_Pending]) -> None:
        app = self._app
        now = app[keys.CLOCK].now()
        outcomes: list[tuple[_Pending, bool, Any]] = []
        async with app[keys.SESSION_FACTORY]() as session:
            await db.begin_write(session)
            try:
                for pending in batch:
                    try:
                        async with session.begin_nested():
                            user = await self._user(session, pending.token, now)
                            result = await pending.work(session, user, now)
                        outcomes.append((pending, True, result))
                    except TelemedError as exc:
                        outcomes.append((pending, False, exc))
                await session.commit()
            except BaseException:
                live.drop(session)
                await session.rollback()
                raise
        await live.publish(app.get(keys.EMIT), live.take(session))
        for pending, succeeded, value in outcomes:
            if succeeded:
                pending.done.set_result(value)
            else:
                pending.done.set_exception(value)

    async def _user(self, session: AsyncSession, token: str, now: datetime) -> User:
        cached = self._checked.get(token)
        moment = time.monotonic()
        if cached is not None and moment - cached[1] < TOKEN_RECHECK_SECONDS:
            return cached[0]
        found = await get_session_user(session, token=token, now=now)
        if found is None:
            self._checked.pop(token, None)
            raise Unauthenticated("The session has expired or was ended; sign in again")
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[token] = (found[0], moment)
        return found[0]


async def run_writer(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the writer for the app's lifetime."""
    writer = BatchWriter(app)
    app[keys.CHAT_WRITER] = writer
    writer.start()
    yield
    await writer.stop()
