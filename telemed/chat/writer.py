"""Group commits for chat messages.

Committing each message on its own costs a transaction per message, and with an async
driver every statement is a round trip through the event loop, which is busy with the
sockets. The writer takes the sends waiting at a moment and stores them together in one
transaction: ``BEGIN``, the batch's token checks and three statements for the whole
batch (``chat.service.store_batch``), ``COMMIT``; only then is each sender answered:
"acked" still means "stored". On SQLite the whole transaction runs in one call on the
writer's own thread and synchronous connection (one hand-off from the event loop per
batch); on PostgreSQL it runs on the writer's own async connection. The batch's live
events leave after the answers, in commit order, from a task of their own, while the
next batch is being stored.

One rare case takes the slow path, one by one through ``chat.service.check_send`` in an
ORM session: a batch whose insert hit a stored ``client_id`` (a resend), which the slow
path answers with the stored message. Both paths apply the same rules
(``chat.rules``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from telemed import db, live
from telemed.accounts.service import session_user_ids
from telemed.chat import service as chat
from telemed.chat.rules import Sender
from telemed.clock import Clock
from telemed.errors import TelemedError, Unauthenticated, Unavailable
from telemed.settings import Settings
from telemed.signaling.events import ChatMessageCreated

logger = logging.getLogger(__name__)

MAX_BATCH = 200
TOKEN_RECHECK_SECONDS = 5.0
"""A socket's token is checked against the database at most this often for sends (a
sign-out cuts the socket off within this time; other events check every time)."""

Wire = dict[str, Any]
"""A stored message as JSON data (``ChatMessagePublic`` dumped once for the sender's ack
and for the other sockets)."""

Result = Wire | TelemedError


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
    done: asyncio.Future[Wire] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    received: float = field(default_factory=time.perf_counter)


Delivered = tuple[live.LiveEvent, float]
"""A new message's event, and when its send arrived (``time.perf_counter()``)."""


class ChatWriter:
    """Stores the chat sends of all sockets of this process in shared transactions.

    ``engine`` gives the writer its own connection (PostgreSQL), ``session_factory`` the
    ORM sessions of the slow path, ``publisher`` delivers the committed messages' events.
    ``stored`` is told how many new messages each batch stored, ``delivered`` the
    seconds from each new message's arrival to its event handed to the publisher (the
    process's metrics).
    """

    def __init__(
        self,
        *,
        session_factory: db.SessionFactory,
        engine: AsyncEngine,
        clock: Clock,
        settings: Settings,
        publisher: live.Publisher,
        stored: Callable[[int], None] = lambda count: None,
        delivered: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._session_factory = session_factory
        self._stored = stored
        self._delivered = delivered
        self._engine = engine
        self._clock = clock
        self._settings = settings
        self._publisher = publisher
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Committed batches' events, emitted in commit order by their own task, so that
        # the next batch is stored while the last one is still being delivered. Bounded:
        # storing never runs more than a batch or two ahead of delivering (else under
        # load the acks would stay fast while deliveries fell ever further behind).
        self._delivery: asyncio.Queue[list[Delivered]] = asyncio.Queue(maxsize=2)
        self._deliverer: asyncio.Task[None] | None = None
        self._checked: dict[str, tuple[uuid.UUID, float]] = {}
        self._connection: AsyncConnection | None = None
        # SQLite: batches are stored by a synchronous engine in a thread of their own.
        self._sqlite = db.create_sqlite_writer(settings.resolved_database_url)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "telemed-chat-writer")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemed-chat-writer")
        self._deliverer = asyncio.create_task(self._deliver(), name="telemed-chat-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._deliverer is not None:
            # Committed messages still on their way are delivered (clients would catch up
            # anyway, but there is no reason to make them).
            await self._delivery.join()
            self._deliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deliverer
        # Sends still waiting are refused, not left hanging (a resend will store them).
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(Unavailable("The server is shutting down; send again"))
        await self._drop_connection()
        self._thread.shutdown(wait=True)
        if self._sqlite is not None:
            self._sqlite.dispose()

    async def submit(self, send: Send) -> Wire:
        """Store ``send`` in the next group commit; returns the stored message (as JSON
        data) once it is committed, or raises the ``TelemedError`` that refused it."""
        pending = _Pending(send)
        await self._queue.put(pending)
        return await pending.done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            results: list[Result | Exception]
            events: list[Delivered] = []
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
            # Senders are answered first: a slow Redis must not hold back their acks.
            if events:
                self._stored(len(events))
                await self._delivery.put(events)

    async def _deliver(self) -> None:
        while True:
            events = await self._delivery.get()
            try:
                await self._publisher.send([event for event, _ in events])
                sent = time.perf_counter()
                for _, received in events:
                    self._delivered(sent - received)
            finally:
                self._delivery.task_done()

    async def _store(self, batch: list[_Pending], events: list[Delivered]) -> list[Result]:
        """Store the batch; fills ``events`` with what to emit once answered."""
        now = self._clock.now()
        try:
            return await self._fast(batch, now, events)
        except IntegrityError:
            events.clear()
            return await self._one_by_one(batch, now, events)

    async def _fast(
        self, batch: list[_Pending], now: datetime, events: list[Delivered]
    ) -> list[Result]:
        sends = [pending.send for pending in batch]
        known, stale = self._known_tokens(send.token for send in sends)
        outcomes: list[chat.SendOutcome]
        if self._sqlite is not None:
            # The whole transaction in one hand-off to the writer's thread, in its turn
            # among this process's writing transactions (``db.begin_write``).
            gate = db.write_gate(self._session_factory)
            assert gate is not None
            async with gate:
                checked, outcomes = await asyncio.get_running_loop().run_in_executor(
                    self._thread, self._store_in_thread, sends, known, stale, now
                )
        else:
            connection = await self._writer_connection()
            async with connection.begin():
                checked, outcomes = await connection.run_sync(
                    self._store_sync, sends, known, stale, now
                )
        self._remember(checked)
        return [
            _result(outcome, events, pending.received)
            for pending, outcome in zip(batch, outcomes, strict=True)
        ]

    def _store_in_thread(
        self,
        sends: list[Send],
        known: dict[str, uuid.UUID],
        stale: set[str],
        now: datetime,
    ) -> tuple[dict[str, uuid.UUID], list[chat.SendOutcome]]:
        assert self._sqlite is not None
        with self._sqlite.connect() as connection:
            writer = connection.execution_options(**db.WRITE)
            with writer.begin():
                return self._store_sync(writer, sends, known, stale, now)

    def _store_sync(
        self,
        connection: sa.Connection,
        sends: list[Send],
        known: dict[str, uuid.UUID],
        stale: set[str],
        now: datetime,
    ) -> tuple[dict[str, uuid.UUID], list[chat.SendOutcome]]:
        """One transaction: the tokens not checked lately (one query for all), then the
        sends of live tokens (``chat.service.store_batch``). Runs off the event loop."""
        checked = session_user_ids(connection, tokens=stale, now=now) if stale else {}
        users = known | checked
        outcomes: list[chat.SendOutcome] = []
        requests: list[chat.SendRequest] = []
        positions: list[int] = []
        for send in sends:
            user_id = users.get(send.token)
            if user_id is None:
                outcomes.append(Unauthenticated("The session has expired; sign in again"))
                continue
            positions.append(len(outcomes))
            outcomes.append(Unauthenticated("not stored"))  # replaced below
            requests.append(
                chat.SendRequest(
                    Sender(user_id, send.doctor_id),
                    send.consultation_id,
                    send.client_id,
                    send.body,
                    send.document_ids,
                )
            )
        stored = chat.store_batch(connection, requests, now=now, settings=self._settings)
        for position, outcome in zip(positions, stored, strict=True):
            outcomes[position] = outcome
        return checked, outcomes

    async def _one_by_one(
        self, batch: list[_Pending], now: datetime, events: list[Delivered]
    ) -> list[Result]:
        settings = self._settings
        results: list[Result] = []
        async with db.transaction(self._session_factory) as session:
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
                            sender=Sender(user_id, send.doctor_id),
                            now=now,
                            settings=settings,
                            consultation_id=send.consultation_id,
                            client_id=send.client_id,
                            body=send.body,
                            document_ids=send.document_ids,
                        )
                except TelemedError as exc:
                    outcome = exc
                results.append(_result(outcome, events, pending.received))
        return results

    def _known_tokens(self, tokens: Iterable[str]) -> tuple[dict[str, uuid.UUID], set[str]]:
        """The tokens checked lately (with their users) and those to check again."""
        moment = time.monotonic()
        known: dict[str, uuid.UUID] = {}
        stale: set[str] = set()
        for token in tokens:
            cached = self._checked.get(token)
            if cached is not None and moment - cached[1] < TOKEN_RECHECK_SECONDS:
                known[token] = cached[0]
            else:
                stale.add(token)
        for token in stale:
            self._checked.pop(token, None)
        return known, stale

    def _remember(self, checked: dict[str, uuid.UUID]) -> None:
        if len(self._checked) > 10_000:
            self._checked.clear()
        moment = time.monotonic()
        for token, user_id in checked.items():
            self._checked[token] = (user_id, moment)

    async def _user_id(
        self, connection: AsyncConnection, token: str, now: datetime
    ) -> uuid.UUID | None:
        known, stale = self._known_tokens([token])
        if not stale:
            return known[token]
        checked = await connection.run_sync(
            lambda sync: session_user_ids(sync, tokens=stale, now=now)
        )
        self._remember(checked)
        return checked.get(token)

    async def _writer_connection(self) -> AsyncConnection:
        if self._connection is None or self._connection.closed:
            connection = await self._engine.connect()
            # Begins as a writer (SQLite: BEGIN IMMEDIATE; see telemed.db).
            await connection.execution_options(**db.WRITE)
            self._connection = connection
        return self._connection

    async def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


def _result(outcome: chat.SendOutcome, events: list[Delivered], received: float) -> Result:
    """The sender's answer; a new message also becomes a live event (sent after commit,
    with ``received``, when its send arrived). The message is made JSON once, for both."""
    if isinstance(outcome, TelemedError):
        return outcome
    message, created = outcome
    event = live.event(
        ChatMessageCreated.model_validate(message, from_attributes=True),
        to=[f"consultation:{message.consultation_id}"],
    )
    if created:
        events.append((event, received))
    return event.payload
