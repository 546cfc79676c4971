"""What a change sends to others once it is committed: live events to Socket.IO rooms,
and domain facts (a consultation moved) to the listeners that act on them.

Services queue both in the transaction (``queue``, ``happened``); the unit of work
(``unit_of_work``) commits, then hands them to the app's ``Publisher``, so nobody is shown
a change that could still roll back. Every path that writes goes through it: the HTTP
API, the Socket.IO handlers, the background jobs and the chat writer. Services never
import socketio.

An event is an instance of its model (``ServerEvent``; the models are the protocol in
``telemed.signaling.events``): only documented events can be sent.

Rooms: ``user:<user id>`` (every socket of a user), ``consultation:<id>`` (sockets that
subscribed to it), ``centre:<id>`` (the centre's doctors), ``room:<id>`` (the video
room's participants), or one socket's id.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import db

logger = logging.getLogger(__name__)

_EVENTS = "telemed_live_events"
_FACTS = "telemed_domain_facts"
_AFTER_COMMIT = "telemed_after_commit"
_ON_ROLLBACK = "telemed_on_rollback"

F = TypeVar("F")


class ServerEvent(BaseModel):
    """A server → client event: its payload model, with its name in ``event``. Unknown
    fields are refused; every subclass that names an event is registered in ``EVENTS``
    (the protocol's list, which ``docs/realtime.md`` documents)."""

    model_config = ConfigDict(extra="forbid")

    event: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.event:
            EVENTS[cls.event] = cls


EVENTS: dict[str, type[ServerEvent]] = {}
"""Every server → client event by name."""


@dataclass(frozen=True)
class LiveEvent:
    """An event on its way: the model, where it goes, and which socket it skips."""

    model: ServerEvent
    rooms: tuple[str, ...]
    skip_sid: str | None = None

    @property
    def name(self) -> str:
        return self.model.event

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The payload as JSON data, made once however many rooms it goes to."""
        return self.model.model_dump(mode="json")


Emit = Callable[[LiveEvent], Awaitable[None]]


def event(model: ServerEvent, *, to: Sequence[str], skip_sid: str | None = None) -> LiveEvent:
    """An event for ``to`` (rooms, or a socket id); refuses one the protocol lacks."""
    if EVENTS.get(model.event) is not type(model):
        raise TypeError(f"{type(model).__name__} is not an event of the protocol")
    return LiveEvent(model, tuple(to), skip_sid)


def queue(
    session: AsyncSession, model: ServerEvent, *, to: Sequence[str], skip_sid: str | None = None
) -> None:
    """Send ``model`` to ``to`` once the session's transaction has committed."""
    session.info.setdefault(_EVENTS, []).append(event(model, to=to, skip_sid=skip_sid))


def happened(session: AsyncSession, fact: object) -> None:
    """Tell the app's listeners of ``fact`` (``Publisher.listen``) once the session's
    transaction has committed: for work in other parts of the system, such as closing the
    video room of a consultation that stopped taking place."""
    session.info.setdefault(_FACTS, []).append(fact)


def after_commit(session: AsyncSession, step: Callable[[], None]) -> None:
    """Run ``step`` once the transaction has committed (removing a deleted file)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(step)


def on_rollback(session: AsyncSession, step: Callable[[], None]) -> None:
    """Run ``step`` if the transaction rolls back (removing a file stored early)."""
    session.info.setdefault(_ON_ROLLBACK, []).append(step)


Listener = Callable[[Any], Awaitable[None]]


@dataclass
class Publisher:
    """Sends what committed transactions left: events through ``emit`` (set by the
    Socket.IO server; none, nothing is sent), then facts to their listeners. A failure is
    logged, never raised: the change is stored, and clients catch up from the database."""

    emit: Emit | None = None
    _listeners: list[tuple[type[Any], Listener]] = field(default_factory=list)

    def listen(self, kind: type[F], listener: Callable[[F], Awaitable[None]]) -> None:
        """Call ``listener`` with every committed fact of type ``kind``."""
        self._listeners.append((kind, listener))

    async def send(self, events: Sequence[LiveEvent]) -> None:
        if self.emit is None:
            return
        for item in events:
            try:
                await self.emit(item)
            except Exception:
                logger.exception("could not emit %s", item.name)

    async def publish(self, session: AsyncSession) -> None:
        """What ``session``'s committed transaction left: after-commit steps, events,
        facts."""
        for step in session.info.pop(_AFTER_COMMIT, []):
            try:
                step()
            except Exception:
                # The change is committed: the caller is told so; the clean-up is logged.
                logger.exception("an after-commit step failed")
        session.info.pop(_ON_ROLLBACK, None)
        await self.send(session.info.pop(_EVENTS, []))
        for fact in session.info.pop(_FACTS, []):
            for kind, listener in self._listeners:
                if isinstance(fact, kind):
                    try:
                        await listener(fact)
                    except Exception:
                        logger.exception("a listener of %s failed", kind.__name__)


def discard(session: AsyncSession) -> None:
    """Forget what a rolled-back transaction queued, and run its ``on_rollback`` steps."""
    session.info.pop(_EVENTS, None)
    session.info.pop(_FACTS, None)
    session.info.pop(_AFTER_COMMIT, None)
    for step in session.info.pop(_ON_ROLLBACK, []):
        try:
            step()
        except Exception:
            logger.exception("a rollback step failed")


@asynccontextmanager
async def unit_of_work(
    factory: db.SessionFactory, publisher: Publisher, *, write: bool = True
) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends, rolled back on any error; then
    what it queued is published (``Publisher.publish``), or discarded. ``write``: it
    will write (see ``db.begin_write``)."""
    async with factory() as session:
        try:
            if write:
                await db.begin_write(session)
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            discard(session)
            raise
    await publisher.publish(session)
