"""Chat tables and their data models."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from telemed.db import UTCDateTime, new_id


class ChatMessage(SQLModel, table=True):
    """One message of a consultation's chat.

    ``seq`` orders the messages of a consultation (1, 2, 3, … with no gaps); it is taken
    from ``Consultation.chat_seq`` by an atomic increment in the same transaction as the
    insert. ``client_id`` (unique per sender and consultation) makes a resend return the
    stored message instead of a second one.
    """

    __tablename__ = "chat_message"
    __table_args__ = (
        sa.UniqueConstraint("consultation_id", "seq"),
        sa.UniqueConstraint("consultation_id", "sender_id", "client_id"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    consultation_id: uuid.UUID = Field(foreign_key="consultation.id")
    seq: int
    sender_id: uuid.UUID = Field(foreign_key="user_account.id")
    client_id: str = Field(max_length=64)
    body: str = Field(max_length=4000)
    document_ids: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ChatReadState(SQLModel, table=True):
    """How far a participant has read a consultation's chat."""

    __tablename__ = "chat_read_state"

    consultation_id: uuid.UUID = Field(foreign_key="consultation.id", primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user_account.id", primary_key=True)
    seq: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)


class ChatMessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    consultation_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID
    client_id: str
    body: str
    document_ids: list[uuid.UUID]
    created_at: datetime
