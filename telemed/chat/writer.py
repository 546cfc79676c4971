"""Group commits for chat messages.

Committing each message on its own costs a transaction per message, and with an async
driver every statement is a round trip through the event loop, which is busy with the
sockets. The writer takes the sends waiting at a moment and stores them together on its
own connection: ``BEGIN``, three statements for the whole batch
(``chat.service.store_batch``), ``COMMIT``; only then is each sender answered: "acked"
still means "stored". The batch's live events leave after that commit.

Rare cases take the slow path, one by one through ``chat.service.check_send`` in an ORM
session: a batch with attachments, and a batch whose insert hit a stored ``client_id``
(a resend), which the slow path answers with the stored message.
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
from sqlalchemy.ext.asyncio import AsyncConnection

from telemed import db, keys, live
from telemed.accounts.service import session_user_id
from telemed.chat import service as chat
from telemed.chat.models import ChatMessage, ChatMessagePublic
from telemed.errors import TelemedError, Unauthenticated, Unavailable

logger = logging.getLogger(__name__)

MAX_BATCH = 200
TOKEN_RECHECK_SECONDS = 5.0
"""A socket's token is checked against the database at most this often for sends (a
sign-out cuts the socket off within this time; other events check every time)."""

Result = ChatMessagePublic | TelemedError


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
        self._checked: dict[str, tuple[uuid.UUID, float]] = {}
        self._connection: AsyncConnection | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemed-chat-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Sends still waiting are refused, not left hanging (a resend will store them).
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(Unavailable("The server is shutting down; send again"))
        await self._drop_connection()

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
            results: list[Result | Exception]
            events: list[live.LiveEvent] = []
            try:
                results = list(await self._store(batch, events))
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(
                            Unavailable("The server is shutting down; send again")
                        )
                raise
            except Exception as exc:
                # Not the senders' fault: each gets "internal", and nothing was acked.
                logger.exception("chat batch of %d failed", len(batch))
                await self._drop_connection()
                results = [exc] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                if pending.done.done():
                    continue
                if isinstance(result, BaseException):
                    pending.done.set_exception(result)
                else:
                    pending.done.set_result(result)
            # Answer the senders first: a slow Redis must not hold back their acks.
            await live.publish(self._app.get(keys.EMIT), events)

    async def _store(self, batch: list[_Pending], events: list[live.LiveEvent]) -> list[Result]:
        """Store the batch; fills ``events`` with what to emit once answered."""
        now = self._app[keys.CLOCK].now()
        if any(p.send.document_ids for p in batch):
            return await self._one_by_one(batch, now, events)
        try:
            return await self._fast(batch, now, events)
        except IntegrityError:
            events.clear()
            return await self._one_by_one(batch, now, events)

    async def _fast(
        self, batch: list[_Pending], now: datetime, events: list[live.LiveEvent]
    ) -> list[Result]:
        connection = await self._writer_connection()
        results: list[Result] = []
        async with connection.begin():
            requests: list[chat.SendRequest] = []
            positions: list[int] = []
            for pending in batch:
                send = pending.send
                user_id = await self._user_id(connection, send.token, now)
                if user_id is None:
                    results.append(Unauthenticated("The session has expired; sign in again"))
                    continue
                positions.append(len(results))
                results.append(Unauthenticated("not stored"))  # replaced below
                requests.append(
                    chat.SendRequest(
                        chat.Sender(user_id, send.doctor_id),
                        send.consultation_id,
                        send.client_id,
                        send.body,
                    )
                )
            outcomes = await chat.store_batch(
                connection, requests, now=now, settings=self._app[keys.SETTINGS]
            )
            for position, outcome in zip(positions, outcomes, strict=True):
                results[position] = _result(outcome, events)
        return results

    async def _one_by_one(
        self, batch: list[_Pending], now: datetime, events: list[live.LiveEvent]
    ) -> list[Result]:
        app = self._app
        settings = app[keys.SETTINGS]
        results: list[Result] = []
        async with db.transaction(app[keys.SESSION_FACTORY]) as session:
            connection = await session.connection()
            for pending in batch:
                send = pending.send
                user_id = await self._user_id(connection, send.token, now)
                if user_id is None:
                    results.append(Unauthenticated("The session has expired; sign in again"))
                    continue
                try:
                    async with session.begin_nested():
                        outcome: chat.SendOutcome = await chat.check_send(
                            session,
                            sender=chat.Sender(user_id, send.doctor_id),
                            now=now,
                            settings=settings,
                            consultation_id=send.consultation_id,
                            client_id=send.client_id,
                            body=send.body,
                            document_ids=send.document_ids,
                        )
                except TelemedError as exc:
                    outcome = exc
                results.append(_result(outcome, events))
        return results

    async def _user_id(
        self, connection: AsyncConnection, token: str, now: datetime
    ) -> uuid.UUID | None:
        cached = self._checked.get(token)
        moment = time.monotonic()
        if cached is not None and moment - cached[1] < TOKEN_RECHECK_SECONDS:
            return cached[0]
        user_id = await session_user_id(connection, token=token, now=now)
        if user_id is None:
            self._checked.pop(token, None)
            return None
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[token] = (user_id, moment)
        return user_id

    async def _writer_connection(self) -> AsyncConnection:
        if self._connection is None or self._connection.closed:
            connection = await self._app[keys.ENGINE].connect()
            # Begins as a writer (SQLite: BEGIN IMMEDIATE; see telemed.db).
            await connection.execution_options(**db.WRITE)
            self._connection = connection
        return self._connection

    async def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


def _result(outcome: chat.SendOutcome, events: list[live.LiveEvent]) -> Result:
    """The sender's answer; a new message also becomes a live event (sent after commit)."""
    if isinstance(outcome, TelemedError):
        return outcome
    message, created = outcome
    public = ChatMessagePublic.model_validate(message)
    if created:
        events.append(_created(message, public))
    return public


def _created(message: ChatMessage | ChatMessagePublic, public: ChatMessagePublic) -> live.LiveEvent:
    return live.LiveEvent(
        "chat:message_created",
        (f"consultation:{message.consultation_id}",),
        public.model_dump(mode="json"),
    )


async def run_writer(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the writer for the app's lifetime."""
    writer = ChatWriter(app)
    app[keys.CHAT_WRITER] = writer
    writer.start()
    yield
    await writer.stop()
