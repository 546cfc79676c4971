"""Recording files and their metadata; each participant's call quality."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from telemed.db import StrEnumType, UTCDateTime, new_id


class RecordingState(StrEnum):
    RECORDING = "recording"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  # the process stopped without closing the file


class Recording(SQLModel, table=True):
    """One WebM file: one participant's audio and video over one stretch of recording
    (a rejoin, or a stop and a new start, begins a new segment)."""

    __tablename__ = "recording"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    consultation_id: uuid.UUID = Field(foreign_key="consultation.id", index=True)
    user_id: uuid.UUID = Field(foreign_key="user_account.id")
    segment: int
    path: str = Field(max_length=300, description="Relative to the data dir")
    node: str = Field(default="", max_length=80, description="The process that writes it")
    state: RecordingState = Field(sa_type=StrEnumType(RecordingState, 16))
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    duration_seconds: float | None = None
    size: int | None = None
    sha256: str | None = Field(default=None, max_length=64)
    video_frames: int = 0
    audio_frames: int = 0


class RecordingPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    consultation_id: uuid.UUID
    user_id: uuid.UUID
    segment: int
    state: RecordingState
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float | None
    size: int | None
    sha256: str | None
    video_frames: int
    audio_frames: int


class CallQualityRecord(SQLModel, table=True):
    """How one participant's calls in one consultation went (``telemed.media.quality``):
    what every room life of the consultation measured, added up."""

    __tablename__ = "call_quality"
    __table_args__ = (sa.UniqueConstraint("consultation_id", "user_id"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    consultation_id: uuid.UUID = Field(foreign_key="consultation.id", index=True)
    user_id: uuid.UUID = Field(foreign_key="user_account.id")
    good_seconds: float = 0.0
    weak_seconds: float = 0.0
    poor_seconds: float = 0.0
    freezes: int = 0
    freeze_seconds: float = 0.0
    relay_seconds: float = 0.0
    audio_only_seconds: float = 0.0
    worst: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    reports: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)
