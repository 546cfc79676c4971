"""Notifying users: the in-app bell, and SMS/e-mail queued in the outbox.

``do_notify`` writes in the caller's transaction, so a notification exists exactly when
the change it reports was committed; the outbox worker (``worker.py``) sends the queued
messages afterwards, with retries. Passwords and codes never stay readable: texts shown
in the app, to staff and in logs have them masked, and the outbox keeps the clear text
only until the message has gone, or, with no gateway in development mode, for staff to
pass on (``senders.keeps_clear_text``).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import live
from telemed.accounts.models import User
from telemed.errors import Forbidden, NotFound
from telemed.notify.models import Notification, OutboxChannel, OutboxMessage, OutboxStatus
from telemed.notify.outcomes import DeliveryStatus
from telemed.notify.texts import NotificationKind, email_text, render
from telemed.signaling.events import NotificationCreated

MASK = "••••••"
# Params that are never copied into a notification's ``data``.
SECRET_PARAMS = frozenset({"password", "code"})


@dataclass(frozen=True)
class Attachment:
    """A file sent with an e-mail (an ``.ics`` invitation), kept base64 in the outbox."""

    filename: str
    content_type: str
    content: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "content_base64": base64.b64encode(self.content).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> Attachment:
        return cls(
            filename=data["filename"],
            content_type=data["content_type"],
            content=base64.b64decode(data["content_base64"]),
        )


class OutboxMessagePublic(BaseModel):
    """An outbox message as staff see it: ``body`` is the masked text, never the clear one.

    ``kept_text`` is the one exception: a message kept in the outbox because no gateway
    is configured, in development mode, as the recipient would have got it (a referred
    patient's password, a reset code), for staff to pass on; null otherwise, and when it
    says nothing more than ``body``."""

    id: uuid.UUID
    channel: OutboxChannel
    kind: str
    recipient: str
    subject: str
    body: str
    kept_text: str | None = Field(
        description="Kept, not sent (no gateway, development mode): the full text, "
        "passwords and codes included; null otherwise"
    )
    status: OutboxStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime
    provider_message_id: str | None = Field(
        description="An SMS provider's id for the message it took (smsru, smsc, smsaero)"
    )
    delivery_status: DeliveryStatus | None = Field(
        description="What the SMS provider last reported: accepted, sent (to the operator), "
        "delivered, undelivered; null where no provider reports it"
    )


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``MASK`` (longest first, so that a secret
    that contains another is masked whole)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def json_safe(value: object, secrets: Sequence[str] = ()) -> Any:
    """``value`` as JSON: times in ISO 8601, ids and enums as strings, secrets masked."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value, secrets)
    if isinstance(value, str):
        return mask(value, secrets)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, secrets) for v in value]
    return mask(str(value), secrets)


def _dedupe_lock_id(key: str) -> int:
    return int.from_bytes(
        hashlib.sha256(b"notify:" + key.encode()).digest()[:8], "big", signed=True
    )


async def _lock_dedupe_key(session: AsyncSession, key: str) -> None:
    """Serialise notifiers of the same event until the end of the transaction.

    On PostgreSQL a transaction-scoped advisory lock makes the look-up of an earlier
    notification and the insert one step for concurrent transactions. SQLite allows one
    writer at a time; there the outbox's unique ``dedupe_key`` still stops a second SMS.
    """
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await session.exec(select(sa.func.pg_advisory_xact_lock(_dedupe_lock_id(key))))


async def _find_notification(
    session: AsyncSession, *, user_id: uuid.UUID, dedupe_key: str
) -> Notification | None:
    result = await session.exec(
        select(Notification)
        .where(
            Notification.user_id == user_id,
            col(Notification.data)["dedupe_key"].as_string() == dedupe_key,
        )
        .limit(1)
    )
    return result.first()


async def _queue(session: AsyncSession, message: OutboxMessage) -> bool:
    """Add ``message`` unless its ``dedupe_key`` was queued before; True if added.

    The insert runs in a SAVEPOINT: a duplicate key rolls back only the insert, and the
    caller's transaction goes on.
    """
    try:
        async with session.begin_nested():
            session.add(message)
    except IntegrityError:
        if message.dedupe_key is None:
            raise
        return False
    return True


async def do_notify(
    session: AsyncSession,
    *,
    now: datetime,
    user: User,
    kind: NotificationKind,
    params: Mapping[str, object],
    consultation_id: uuid.UUID | None = None,
    sms: bool = False,
    email: bool = False,
    attachments: Sequence[Attachment] = (),
    secrets: Sequence[str] = (),
    dedupe_key: str | None = None,
    brand: str,
) -> Notification:
    """Notify ``user`` of ``kind``: always in the app, and by SMS / e-mail if asked.

    Texts are rendered in the user's locale and time zone, naming the service ``brand``
    (``TELEMED_BRAND_NAME``; ``texts.render``). The e-mail
    goes only to a user who has an address. ``secrets`` (passwords in ``params``) reach
    only the SMS/e-mail recipient: the in-app text, ``data``, the outbox's
    ``body_masked`` and the logs show them masked.

    ``dedupe_key`` names one event for this user (put the user's id in it: the outbox
    keys, ``<dedupe_key>:sms`` and ``<dedupe_key>:email``, are unique across users). A
    repeated call with the same key queues nothing and returns the first notification.

    Writes in the caller's transaction and never commits. Raises ``ValueError`` when the
    text of ``kind`` needs a param that ``params`` lacks.
    """
    kind = NotificationKind(kind)
    secret_values = [s for s in secrets if s]
    if dedupe_key is not None:
        await _lock_dedupe_key(session, dedupe_key)
        existing = await _find_notification(session, user_id=user.id, dedupe_key=dedupe_key)
        if existing is not None:
            return existing

    text = render(kind, locale=user.locale, params=params, time_zone=user.time_zone, brand=brand)
    data: dict[str, Any] = {
        name: json_safe(value, secret_values)
        for name, value in params.items()
        if name not in SECRET_PARAMS
    }
    if dedupe_key is not None:
        data["dedupe_key"] = dedupe_key
    notification = Notification(
        user_id=user.id,
        kind=kind.value,
        consultation_id=consultation_id,
        title=mask(text.title, secret_values)[:300],
        body=mask(text.body, secret_values)[:2000],
        data=data,
        created_at=now,
    )
    session.add(notification)
    await session.flush()
    live.queue(
        session,
        NotificationCreated.model_validate(notification, from_attributes=True),
        to=[f"user:{user.id}"],
    )

    def outbox(
        channel: OutboxChannel, recipient: str, subject: str, body: str, files: list[dict[str, str]]
    ) -> OutboxMessage:
        return OutboxMessage(
            channel=channel,
            user_id=user.id,
            recipient=recipient,
            subject=subject[:300],
            body=body[:8000],
            body_masked=mask(body, secret_values)[:8000],
            attachments=files,
            kind=kind.value,
            next_attempt_at=now,
            dedupe_key=f"{dedupe_key}:{channel.value}" if dedupe_key is not None else None,
            created_at=now,
        )

    if sms:
        await _queue(session, outbox(OutboxChannel.SMS, user.phone, "", text.sms, []))
    if email and user.email:
        body = email_text(text.body, locale=user.locale, brand=brand)
        files = [attachment.to_json() for attachment in attachments]
        await _queue(session, outbox(OutboxChannel.EMAIL, user.email, text.title, body, files))
    return notification


async def list_notifications(
    session: AsyncSession, *, user: User, unread_only: bool = False, limit: int = 50
) -> list[Notification]:
    """The user's own notifications, newest first."""
    statement = select(Notification).where(Notification.user_id == user.id)
    if unread_only:
        statement = statement.where(col(Notification.read_at).is_(None))
    statement = statement.order_by(
        col(Notification.created_at).desc(), col(Notification.id).desc()
    ).limit(limit)
    return list((await session.exec(statement)).all())


async def count_unread(session: AsyncSession, *, user: User) -> int:
    result = await session.exec(
        select(sa.func.count())
        .select_from(Notification)
        .where(Notification.user_id == user.id, col(Notification.read_at).is_(None))
    )
    return int(result.one())


async def do_mark_read(
    session: AsyncSession, *, user: User, notification_id: uuid.UUID, now: datetime
) -> Notification:
    """Mark one of the user's notifications read (again: keeps the first time).

    Raises ``NotFound`` for a notification that does not exist or is someone else's.
    """
    notification = await session.get(Notification, notification_id)
    if notification is None or notification.user_id != user.id:
        raise NotFound("Notification not found")
    if notification.read_at is None:
        notification.read_at = now
        session.add(notification)
    return notification


async def do_mark_all_read(session: AsyncSession, *, user: User, now: datetime) -> int:
    """Mark every unread notification of the user read; returns how many."""
    result = await session.exec(
        sa.update(Notification)
        .where(col(Notification.user_id) == user.id, col(Notification.read_at).is_(None))
        .values(read_at=now)
    )
    return int(result.rowcount)


async def list_outbox(
    session: AsyncSession,
    *,
    actor: User,
    status: OutboxStatus | None = None,
    channel: OutboxChannel | None = None,
    limit: int = 100,
    kept_text: bool = False,
) -> list[OutboxMessagePublic]:
    """Outbox messages for staff, newest first, with the masked text.

    The clear ``body`` column is loaded only for kept messages, and only with
    ``kept_text`` (development mode: ``senders.keeps_clear_text``), so it cannot leak
    through this path otherwise. The outbox is the whole service's (its messages name
    no centre): a manager bound to a centre is refused (``Forbidden``).
    """
    if actor.centre_id is not None:
        raise Forbidden(
            "The outbox is read by the managers of the whole service",
            details={"centre_id": str(actor.centre_id)},
        )
    m = OutboxMessage
    clear = (
        sa.case(
            (
                sa.and_(col(m.status) == OutboxStatus.KEPT, col(m.body) != col(m.body_masked)),
                col(m.body),
            ),
            else_=None,
        )
        if kept_text
        else sa.null()
    )
    # SQLModel types a column attribute as its value; at run time it is the attribute.
    statement = select(m, clear.label("kept_text")).options(defer(m.body))  # type: ignore[arg-type]
    if status is not None:
        statement = statement.where(m.status == status)
    if channel is not None:
        statement = statement.where(m.channel == channel)
    statement = statement.order_by(col(m.created_at).desc(), col(m.id).desc()).limit(limit)
    rows = (await session.exec(statement)).all()
    return [
        OutboxMessagePublic(
            id=message.id,
            channel=message.channel,
            kind=message.kind,
            recipient=message.recipient,
            subject=message.subject,
            body=message.body_masked,
            kept_text=text,
            status=message.status,
            attempts=message.attempts,
            last_error=message.last_error,
            created_at=message.created_at,
            sent_at=message.sent_at,
            next_attempt_at=message.next_attempt_at,
            provider_message_id=message.provider_message_id,
            delivery_status=message.delivery_status,
        )
        for message, text in rows
    ]


async def do_mask_kept(
    session: AsyncSession, *, user_id: uuid.UUID, kinds: Collection[NotificationKind]
) -> int:
    """Mask the clear text of the user's kept messages of these kinds (passwords and
    codes that a newer message replaced: only the live one stays readable to staff).
    Returns how many were masked."""
    m = OutboxMessage
    result = await session.exec(
        sa.update(m)
        .where(
            col(m.user_id) == user_id,
            col(m.kind).in_([NotificationKind(kind).value for kind in kinds]),
            col(m.status) == OutboxStatus.KEPT,
            col(m.body) != col(m.body_masked),
        )
        .values(body=m.body_masked)
    )
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class OutboxState:
    """The outbox at a moment: messages waiting to go (``pending``, with the time the
    oldest of them was queued), and those given up on (``failed``)."""

    pending: int
    failed: int
    oldest_pending_at: datetime | None


async def get_outbox_state(session: AsyncSession) -> OutboxState:
    """Counts by status and the oldest waiting message, in one aggregate over the
    ``(status, next_attempt_at)`` index: bounded by the backlog and the failures."""
    m = OutboxMessage
    rows = (
        await session.exec(
            select(m.status, sa.func.count(), sa.func.min(m.created_at))
            .where(col(m.status).in_([OutboxStatus.PENDING, OutboxStatus.FAILED]))
            .group_by(m.status)
        )
    ).all()
    counts = {status: (int(count), oldest) for status, count, oldest in rows}
    pending, oldest = counts.get(OutboxStatus.PENDING, (0, None))
    return OutboxState(
        pending=pending,
        failed=counts.get(OutboxStatus.FAILED, (0, None))[0],
        oldest_pending_at=oldest,
    )
