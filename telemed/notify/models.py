"""Notification tables and their data models."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from telemed.db import StrEnumType, UTCDateTime, new_id
from telemed.notify.outcomes import DeliveryStatus


class Notification(SQLModel, table=True):
    """An in-app notification (the bell). ``kind`` names the event; ``data`` has ids and
    times for the client to render it in the user's language."""

    __tablename__ = "notification"
    __table_args__ = (sa.Index("ix_notification_user_created", "user_id", "created_at"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user_account.id")
    kind: str = Field(max_length=48)
    consultation_id: uuid.UUID | None = Field(default=None, foreign_key="consultation.id")
    title: str = Field(max_length=300)
    body: str = Field(max_length=2000)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: datetime = Field(sa_type=UTCDateTime)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OutboxChannel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"  # a gateway (SMS) or a mail server took it
    # No gateway (the ``outbox`` backend): nothing left the server; the message stays
    # here for staff to read, in clear in development mode (``senders.keeps_clear_text``).
    KEPT = "kept"
    FAILED = "failed"  # gave up after the last retry


class OutboxMessage(SQLModel, table=True):
    """An SMS or e-mail waiting to go out, or gone.

    ``body`` is what the recipient gets; ``body_masked`` is what staff and logs may see
    (passwords and codes replaced). Once sent, ``body`` is overwritten with the masked
    text so that no password stays in the database. A message *kept* (no gateway) keeps
    its clear ``body`` only in development mode, where the outbox stands in for the
    gateway and staff read it to pass it on; otherwise it too is masked. A worker claims a
    message by setting
    ``claimed_until`` in one atomic UPDATE, so two server processes never send it twice.
    ``dedupe_key`` (unique) keeps one event from queueing the same message twice.
    """

    __tablename__ = "outbox_message"
    __table_args__ = (sa.Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    channel: OutboxChannel = Field(sa_type=StrEnumType(OutboxChannel, 8))
    user_id: uuid.UUID | None = Field(default=None, foreign_key="user_account.id", index=True)
    recipient: str = Field(max_length=254)
    subject: str = Field(default="", max_length=300)
    body: str = Field(max_length=8000)
    body_masked: str = Field(max_length=8000)
    attachments: list[dict[str, str]] = Field(default_factory=list, sa_type=sa.JSON)
    kind: str = Field(max_length=48)
    status: OutboxStatus = Field(
        default=OutboxStatus.PENDING, sa_type=StrEnumType(OutboxStatus, 16)
    )
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claimed_by: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, max_length=500)
    dedupe_key: str | None = Field(default=None, max_length=128, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # An SMS provider that names what it took (smsru, smsc, smsaero): its id there, the
    # delivery status it last reported, and when it was last asked.
    provider_message_id: str | None = Field(default=None, max_length=64)
    delivery_status: DeliveryStatus | None = Field(
        default=None, sa_type=StrEnumType(DeliveryStatus, 16)
    )
    delivery_checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class NotificationPublic(BaseModel):
    """A notification as its recipient sees it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    consultation_id: uuid.UUID | None
    title: str
    body: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None
