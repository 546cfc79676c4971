"""Group commits for chat messages.

Committing each message on its own costs a transaction per message. The writer takes
the sends waiting at a moment and stores them together (``chat.service.store_batch``: a
few statements for the whole batch), commits once, and only then answers each sender:
"acked" still means "stored". The batch's live events leave after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import db, keys, live
from telemed.accounts.models import User
from telemed.accounts.service import get_session_user
from telemed.chat import service as chat
from telemed.chat.models import ChatMessage, ChatMessagePublic
from telemed.errors import TelemedError, Unauthenticated

logger = logging.getLogger(__name__)

MAX_BATCH = 200
TOKEN_RECHECK_SECONDS = 5.0
"""A socket's token is checked against the database at most this often for sends (a
sign-out cuts the socket off within this time; other events check every time)."""


@dataclass(frozen=True)
class Send:
    """A ``chat:send`` as the socket received it."""

    token: str
    doctor_id: uuid.UUID | None
    consultation_id: uuid.UUID
    client_id: str
    body: str
    document_ids: tuple[uuid.UUID, ...] = ()


@dataclass
class _Pending:
    send: Send
    done: asyncio.Future[ChatMessagePublic] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ChatWriter:
    """Stores the chat sends of all sockets of this process in shared transactions."""

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

    async def submit(self, send: Send) -> ChatMessagePublic:
        """Store ``send`` in the next group commit; returns the stored message once it is
        committed, or raises the ``TelemedError`` that refused it."""
        pending = _Pending(send)
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
        results: list[ChatMessagePublic | TelemedError] = []
        async with app[keys.SESSION_FACTORY]() as session:
            await db.begin_write(session)
            try:
                requests: list[chat.SendRequest] = []
                positions: list[int] = []
                for pending in batch:
                    try:
                        user = await self._user(session, pending.send.token, now)
                    except TelemedError as exc:
                        results.append(exc)
                        continue
                    send = pending.send
                    positions.append(len(results))
                    results.append(Unauthenticated("placeholder"))
                    requests.append(
                        chat.SendRequest(
                            chat.Sender(user, send.doctor_id),
                            send.consultation_id,
                            send.client_id,
                            send.body,
                            send.document_ids,
                        )
                    )
                for position, outcome in zip(
                    positions, await self._store_requests(session, requests, now), strict=True
                ):
                    if isinstance(outcome, TelemedError):
                        results[position] = outcome
                        continue
                    message, created = outcome
                    public = ChatMessagePublic.model_validate(message)
                    if created:
                        _announce(session, message, public)
                    results[position] = public
                await session.commit()
            except BaseException:
                live.drop(session)
                await session.rollback()
                raise
        await live.publish(app.get(keys.EMIT), live.take(session))
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, TelemedError):
                pending.done.set_exception(result)
            else:
                pending.done.set_result(result)

    async def _store_requests(
        self, session: AsyncSession, requests: list[chat.SendRequest], now: datetime
    ) -> list[chat.SendOutcome]:
        settings = self._app[keys.SETTINGS]
        try:
            async with session.begin_nested():
                return await chat.store_batch(session, requests, now=now, settings=settings)
        except IntegrityError:
            # Another node stored one of these client_ids at the same moment: go one by
            # one, so that resend finds the stored message.
            outcomes: list[chat.SendOutcome] = []
            for request in requests:
                try:
                    async with session.begin_nested():
                        outcomes.append(
                            await chat.check_send(
                                session,
                                sender=request.sender,
                                now=now,
                                settings=settings,
                                consultation_id=request.consultation_id,
                                client_id=request.client_id,
                                body=request.body,
                                document_ids=request.document_ids,
                            )
                        )
                except TelemedError as exc:
                    outcomes.append(exc)
            return outcomes

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


def _announce(session: AsyncSession, message: ChatMessage, public: ChatMessagePublic) -> None:
    live.queue(
        session,
        "chat:message_created",
        [f"consultation:{message.consultation_id}"],
        public.model_dump(mode="json"),
    )


async def run_writer(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the writer for the app's lifetime."""
    writer = ChatWriter(app)
    app[keys.CHAT_WRITER] = writer
    writer.start()
    yield
    await writer.stop()
