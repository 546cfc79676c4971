"""Live events: services queue them in the transaction; they are emitted only after it
commits (by the HTTP layer or the Socket.IO handlers), so nobody is shown a change that
could still roll back. Services never import socketio: they call ``queue``.

Rooms: ``user:<user id>`` (every socket of a user), ``consultation:<id>`` (sockets that
subscribed to it), ``centre:<id>`` (the centre's doctors).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

logger = logging.getLogger(__name__)

_KEY = "telemed_live_events"


@dataclass(frozen=True)
class LiveEvent:
    event: str
    rooms: tuple[str, ...]
    payload: dict[str, Any]


Emit = Callable[[LiveEvent], Awaitable[None]]


def queue(session: AsyncSession, event: str, rooms: list[str], payload: dict[str, Any]) -> None:
    """Send ``event`` to ``rooms`` once the session's transaction has committed."""
    session.info.setdefault(_KEY, []).append(LiveEvent(event, tuple(rooms), payload))


def take(session: AsyncSession) -> list[LiveEvent]:
    """The queued events, removed from the session (call after a successful commit)."""
    events: list[LiveEvent] = session.info.pop(_KEY, [])
    return events


def drop(session: AsyncSession) -> None:
    """Forget the queued events (the transaction rolled back)."""
    session.info.pop(_KEY, None)


async def publish(emit: Emit | None, events: list[LiveEvent]) -> None:
    """Emit committed events. A failure is logged, never raised: the change is stored and
    clients catch up from the database when they resubscribe."""
    if emit is None:
        return
    for event in events:
        try:
            await emit(event)
        except Exception:
            logger.exception("could not emit %s", event.event)
