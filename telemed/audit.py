"""The append-only audit trail of who read or changed what.

Rows are only ever inserted: the migration installs triggers that refuse UPDATE and
DELETE on the table, on SQLite and on PostgreSQL alike. Rows carry ids, never patient data.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed.db import UTCDateTime


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor_id: uuid.UUID | None = Field(default=None, index=True)
    action: str = Field(max_length=64)
    object_type: str = Field(max_length=32)
    object_id: str = Field(max_length=64)
    subject_id: uuid.UUID | None = Field(default=None, index=True)
    address: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)


def record(
    session: AsyncSession,
    *,
    now: datetime,
    actor_id: uuid.UUID | None,
    action: str,
    object_type: str,
    object_id: uuid.UUID | str,
    subject_id: uuid.UUID | None = None,
    address: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row to the caller's transaction (it lands or vanishes with the change).

    ``subject_id`` is the patient whose data was touched.
    """
    event = AuditEvent(
        at=now,
        actor_id=actor_id,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        subject_id=subject_id,
        address=address,
        details=details or {},
    )
    session.add(event)
    return event


def insert(connection: sa.Connection, events: list[AuditEvent]) -> None:
    """Insert audit rows on a plain connection (the chat's group commits), in its
    transaction."""
    if not events:
        return
    table = AuditEvent.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    connection.execute(
        sa.insert(table),
        [event.model_dump(exclude={"id"}) for event in events],
    )
