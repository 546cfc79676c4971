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
import uuid
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
from telemed.notify.outcomes import (
    DeliveryError,
    DeliveryStatus,
    Kept,
    PermanentDeliveryError,
    Sent,
)
from telemed.notify.senders import Sender, build_senders, keeps_clear_text, status_reporter
from telemed.settings import Settings

logger = logging.getLogger(__name__)

BATCH_SIZE = 20  # messages claimed at once
CONCURRENCY = 5  # of them in flight at once
MAX_BATCHES_PER_ROUND = 5  # leave some for the other nodes and the other jobs
MAX_BACKOFF = timedelta(hours=1)
# Beyond the senders' own timeouts: the worker gives up on a send after this much more.
SEND_GRACE_SECONDS = 5.0
ERROR_MAX_CHARS = 500
# Delivery status of SMS that a provider took (smsru, smsc, smsaero): asked this often,
# for this long after the send, this many messages per round.
DELIVERY_CHECK_EVERY = timedelta(minutes=5)
DELIVERY_CHECK_FOR = timedelta(hours=24)
DELIVERY_CHECK_BATCH = 50


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
    app: web.Application,
    message: OutboxMessage,
    error: str | None,
    outcome: Kept | Sent | None = None,
    *,
    permanent: bool = False,
) -> OutboxStatus | None:
    """Record the outcome of one send (``outcome``: the sender kept it, or a provider
    named it; ``permanent``: the error is final, no retry); returns the new status, or
    None if the claim was lost (the lease lapsed and another node took the message
    over)."""
    settings = app[keys.SETTINGS]
    now = app[keys.CLOCK].now()
    node = app[keys.NODE_ID]
    m = OutboxMessage
    attempts = message.attempts + 1
    values: dict[str, object]
    if error is None and isinstance(outcome, Kept):
        # Nothing left the server. The clear text stays only where the outbox stands in
        # for the gateway (development mode), for staff to pass on.
        status = OutboxStatus.KEPT
        values = (
            {"last_error": None} if outcome.clear else {"body": m.body_masked, "last_error": None}
        )
    elif error is None:
        status = OutboxStatus.SENT
        # Only the masked text stays: no password outlives the delivery.
        values = {"sent_at": now, "body": m.body_masked, "last_error": None}
        if isinstance(outcome, Sent):
            values |= {
                "provider_message_id": outcome.provider_id[:64],
                "delivery_status": outcome.status,
                "delivery_checked_at": now,
            }
    elif permanent or attempts >= settings.outbox_max_attempts:
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
    elif status is OutboxStatus.FAILED and permanent:
        logger.error(
            "outbox message %s (%s) failed for good at attempt %d, not retried: %s",
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
    outcome: Kept | Sent | None = None
    permanent = False
    try:
        outcome = await asyncio.wait_for(sender.send(message), send_timeout(app[keys.SETTINGS]))
    except DeliveryError as exc:
        error = str(exc) or type(exc).__name__
        permanent = isinstance(exc, PermanentDeliveryError)
    except TimeoutError:
        error = "delivery timed out"
    except Exception as exc:
        # A bug in a sender: keep the traceback, count the attempt, go on with the rest.
        logger.exception("outbox message %s: sender crashed", message.id)
        error = f"internal error ({type(exc).__name__})"
    status = await _finish(app, message, error, outcome, permanent=permanent)
    metrics = app.get(keys.METRICS)
    if metrics is not None and status is not None:
        counted = "retry" if status is OutboxStatus.PENDING else status.value
        metrics.outbox_attempts.labels(message.channel.value, counted).inc()


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


def _delivery_unknown(now: datetime) -> sa.ColumnElement[bool]:
    """SMS that a provider took, whose fate it has not reported yet, due to be asked."""
    m = OutboxMessage
    return sa.and_(
        col(m.channel) == OutboxChannel.SMS,
        col(m.status) == OutboxStatus.SENT,
        col(m.provider_message_id).is_not(None),
        col(m.delivery_status).in_([DeliveryStatus.ACCEPTED, DeliveryStatus.SENT]),
        col(m.sent_at) >= now - DELIVERY_CHECK_FOR,
        sa.or_(
            col(m.delivery_checked_at).is_(None),
            col(m.delivery_checked_at) <= now - DELIVERY_CHECK_EVERY,
        ),
    )


async def check_delivery(app: web.Application, now: datetime) -> int:
    """The job: ask the SMS provider what became of the messages it took (every
    ``DELIVERY_CHECK_EVERY``, for ``DELIVERY_CHECK_FOR`` after the send, until it reports
    delivered or undelivered); returns how many were asked.

    The messages are claimed first (``delivery_checked_at`` set in one UPDATE that repeats
    the condition), so that two nodes do not ask about the same one in a round; a question
    that fails is asked again at the next check."""
    reporter = status_reporter(app[_DELIVERY].senders)
    if reporter is None:
        return 0
    m = OutboxMessage
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        due = (
            select(m.id)
            .where(_delivery_unknown(now))
            .order_by(col(m.delivery_checked_at), col(m.id))
            .limit(DELIVERY_CHECK_BATCH)
        )
        ids = list((await session.exec(due)).all())
        if not ids:
            return 0
        won = await session.exec(
            sa.update(m)
            .where(col(m.id).in_(ids), _delivery_unknown(now))
            .values(delivery_checked_at=now)
            .returning(
                col(m.id), col(m.provider_message_id), col(m.recipient), col(m.delivery_status)
            )
        )
        claimed = [tuple(row) for row in won.all()]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def ask(
        message_id: uuid.UUID, provider_id: str, recipient: str, before: DeliveryStatus
    ) -> None:
        async with gate:
            try:
                status = await reporter.delivery_status(provider_id, recipient)
            except DeliveryError as exc:
                logger.warning("outbox message %s: delivery status not known: %s", message_id, exc)
                return
        if status is None or status == before:
            return
        async with db.transaction(app[keys.SESSION_FACTORY]) as session:
            await session.exec(
                sa.update(m).where(col(m.id) == message_id).values(delivery_status=status)
            )
        logger.info("outbox message %s: the provider reports it %s", message_id, status.value)

    outcomes = await asyncio.gather(*(ask(*row) for row in claimed), return_exceptions=True)
    for row, outcome in zip(claimed, outcomes, strict=True):
        if isinstance(outcome, Exception):
            logger.error(
                "outbox message %s: delivery status check failed", row[0], exc_info=outcome
            )
        elif isinstance(outcome, BaseException):
            raise outcome
    return len(claimed)


async def _senders(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: one HTTP client session for the senders, closed at shutdown."""
    async with aiohttp.ClientSession() as http:
        app[_DELIVERY] = Delivery(http=http, senders=build_senders(app[keys.SETTINGS], http))
        yield


def setup(app: web.Application) -> None:
    """Register the outbox delivery job (and create the senders) on ``app``."""
    app.cleanup_ctx.append(_senders)
    register_job(app, "deliver_outbox", deliver_outbox)
    register_job(app, "check_sms_delivery", check_delivery)
