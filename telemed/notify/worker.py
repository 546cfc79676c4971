"""Outbox delivery: claims due messages atomically and sends them through the senders.

Several server processes may share one database. A process first *claims* a batch in
one short transaction: an UPDATE sets ``claimed_by`` to its node id and
``claimed_until`` to the end of a lease, and only rows that still matched the claim
condition are won (on PostgreSQL the candidates are also locked ``FOR UPDATE SKIP
LOCKED`` so that two nodes pass each other by instead of queueing). It sends outside any
transaction, then records each outcome in a new transaction that only the claimant can
make (``WHERE claimed_by = me``). A node that dies mid-batch leaves its claims to lapse;
another node picks the messages up after the lease.

The log names message ids, channels and kinds, never recipients or texts.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import db, keys
from telemed.jobs import register_job
from telemed.notify.models import OutboxChannel, OutboxMessage, OutboxStatus
from telemed.notify.senders import DeliveryError, Kept, Sender, build_senders, keeps_clear_text
from telemed.settings import Settings

logger = logging.getLogger(__name__)

BATCH_SIZE = 20  # messages claimed at once
CONCURRENCY = 5  # of them in flight at once
MAX_BATCHES_PER_ROUND = 5  # leave some for the other nodes and the other jobs
MAX_BACKOFF = timedelta(hours=1)
# Beyond the senders' own timeouts: the worker gives up on a send after this much more.
SEND_GRACE_SECONDS = 5.0
ERROR_MAX_CHARS = 500


@dataclass
class Delivery:
    """The senders of this process and the HTTP client session they share."""

    http: aiohttp.ClientSession
    senders: dict[OutboxChannel, Sender]
    # Whether the kept messages' clear texts were masked since this process started
    # (``mask_kept_texts``: once, where clear texts are not kept).
    kept_masked: bool = False


_DELIVERY: web.AppKey[Delivery] = web.AppKey("notify_delivery", Delivery)


def send_timeout(settings: Settings) -> float:
    """How long one send may take before the worker counts it as failed."""
    return max(settings.sms_http_timeout_seconds, settings.smtp_timeout_seconds) + (
        SEND_GRACE_SECONDS
    )


def lease(settings: Settings) -> timedelta:
    """How long a claim holds: the slowest possible batch, with a margin.

    It must outlast the sends of one batch, or another node could claim a message that is
    still being sent.
    """
    rounds = math.ceil(BATCH_SIZE / CONCURRENCY)
    return timedelta(seconds=rounds * send_timeout(settings) + 30)


def retry_delay(settings: Settings, attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: base, 2×base, 4×base… ≤ 1 h."""
    seconds = settings.outbox_retry_base_seconds * 2 ** min(attempts - 1, 30)
    return min(timedelta(seconds=seconds), MAX_BACKOFF)


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    m = OutboxMessage
    return sa.and_(
        col(m.status) == OutboxStatus.PENDING,
        col(m.next_attempt_at) <= now,
        sa.or_(col(m.claimed_until).is_(None), col(m.claimed_until) < now),
    )


async def claim(
    session: AsyncSession, *, node: str, now: datetime, until: datetime, limit: int
) -> list[OutboxMessage]:
    """Claim up to ``limit`` due messages for ``node``; returns those won.

    The UPDATE repeats the claim condition, so a message that another node claimed in the
    meantime is not taken (SQLite runs one writer at a time; on PostgreSQL the rows are
    locked, and skipped if another claimer holds them).
    """
    m = OutboxMessage
    candidates = (
        select(m.id)
        .where(_claimable(now))
        .order_by(col(m.next_attempt_at), col(m.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.exec(candidates)).all())
    if not ids:
        return []
    won = await session.exec(
        sa.update(m)
        .where(col(m.id).in_(ids), _claimable(now))
        .values(claimed_by=node, claimed_until=until)
        .returning(col(m.id))
    )
    won_ids = [row[0] for row in won.all()]
    if not won_ids:
        return []
    result = await session.exec(select(m).where(col(m.id).in_(won_ids)))
    return list(result.all())


async def mask_kept_texts(session: AsyncSession) -> int:
    """Mask the clear text of every kept message; returns how many were masked.

    A database used in development mode (the outbox kept clear texts for staff) and then
    in production mode must not go on holding passwords: production masks them once, at
    its first round."""
    m = OutboxMessage
    result = await session.exec(
        sa.update(m)
        .where(col(m.status) == OutboxStatus.KEPT, col(m.body) != col(m.body_masked))
        .values(body=m.body_masked)
    )
    return int(result.rowcount or 0)


async def _finish(
    app: web.Application, message: OutboxMessage, error: str | None, kept: Kept | None = None
) -> OutboxStatus | None:
    """Record the outcome of one send (``kept``: the sender kept it); returns the new
    status, or None if the claim was lost (the lease lapsed and another node took the
    message over)."""
    settings = app[keys.SETTINGS]
    now = app[keys.CLOCK].now()
    node = app[keys.NODE_ID]
    m = OutboxMessage
    attempts = message.attempts + 1
    values: dict[str, object]
    if error is None and kept is not None:
        # Nothing left the server. The clear text stays only where the outbox stands in
        # for the gateway (development mode), for staff to pass on.
        status = OutboxStatus.KEPT
        values = {"last_error": None} if kept.clear else {"body": m.body_masked, "last_error": None}
    elif error is None:
        status = OutboxStatus.SENT
        # Only the masked text stays: no password outlives the delivery.
        values = {"sent_at": now, "body": m.body_masked, "last_error": None}
    elif attempts >= settings.outbox_max_attempts:
        status = OutboxStatus.FAILED
        values = {"body": m.body_masked, "last_error": error[:ERROR_MAX_CHARS]}
    else:
        status = OutboxStatus.PENDING
        values = {
            "next_attempt_at": now + retry_delay(settings, attempts),
            "last_error": error[:ERROR_MAX_CHARS],
        }
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        result = await session.exec(
            sa.update(m)
            .where(
                col(m.id) == message.id,
                col(m.claimed_by) == node,
                col(m.status) == OutboxStatus.PENDING,
            )
            .values(status=status, attempts=m.attempts + 1, claimed_until=None, **values)
        )
        if result.rowcount != 1:
            logger.warning("outbox message %s: claim lost before the outcome was saved", message.id)
            return None
    if status is OutboxStatus.PENDING:
        logger.warning(
            "outbox message %s (%s) attempt %d failed, will retry: %s",
            message.id,
            message.channel.value,
            attempts,
            error,
        )
    elif status is OutboxStatus.FAILED:
        logger.error(
            "outbox message %s (%s) failed for good after %d attempts: %s",
            message.id,
            message.channel.value,
            attempts,
            error,
        )
    return status


async def _deliver(app: web.Application, delivery: Delivery, message: OutboxMessage) -> None:
    sender = delivery.senders[message.channel]
    error: str | None = None
    kept: Kept | None = None
    try:
        kept = await asyncio.wait_for(sender.send(message), send_timeout(app[keys.SETTINGS]))
    except DeliveryError as exc:
        error = str(exc) or type(exc).__name__
    except TimeoutError:
        error = "delivery timed out"
    except Exception as exc:
        # A bug in a sender: keep the traceback, count the attempt, go on with the rest.
        logger.exception("outbox message %s: sender crashed", message.id)
        error = f"internal error ({type(exc).__name__})"
    status = await _finish(app, message, error, kept)
    metrics = app.get(keys.METRICS)
    if metrics is not None and status is not None:
        outcome = "retry" if status is OutboxStatus.PENDING else status.value
        metrics.outbox_attempts.labels(message.channel.value, outcome).inc()


async def deliver_outbox(app: web.Application, now: datetime) -> int:
    """The job: deliver what is due at ``now``; returns how many messages were tried."""
    delivery = app[_DELIVERY]
    settings = app[keys.SETTINGS]
    node = app[keys.NODE_ID]
    gate = asyncio.Semaphore(CONCURRENCY)
    handled = 0

    async def one(message: OutboxMessage) -> None:
        async with gate:
            await _deliver(app, delivery, message)

    if not delivery.kept_masked and not keeps_clear_text(settings):
        async with db.transaction(app[keys.SESSION_FACTORY]) as session:
            masked = await mask_kept_texts(session)
        if masked:
            logger.warning("outbox: masked the clear text of %d kept messages", masked)
        delivery.kept_masked = True
    for _ in range(MAX_BATCHES_PER_ROUND):
        async with db.transaction(app[keys.SESSION_FACTORY]) as session:
            # The lease runs from the real start of the claim, later in a long round.
            until = max(now, app[keys.CLOCK].now()) + lease(settings)
            batch = await claim(session, node=node, now=now, until=until, limit=BATCH_SIZE)
        if not batch:
            break
        # Every send of the batch runs to its end even if recording one outcome fails
        # (the database went away): that message's claim lapses and it is tried again.
        outcomes = await asyncio.gather(*(one(m) for m in batch), return_exceptions=True)
        for message, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                logger.error(
                    "outbox message %s: outcome not recorded", message.id, exc_info=outcome
                )
            elif isinstance(outcome, BaseException):
                raise outcome
        handled += len(batch)
        if len(batch) < BATCH_SIZE:
            break
    return handled


async def _senders(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: one HTTP client session for the senders, closed at shutdown."""
    async with aiohttp.ClientSession() as http:
        app[_DELIVERY] = Delivery(http=http, senders=build_senders(app[keys.SETTINGS], http))
        yield


def setup(app: web.Application) -> None:
    """Register the outbox delivery job (and create the senders) on ``app``."""
    app.cleanup_ctx.append(_senders)
    register_job(app, "deliver_outbox", deliver_outbox)
