"""Directory and schedule tables with their data models."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from telemed.db import StrEnumType, UTCDateTime, new_id


class Centre(SQLModel, table=True):
    """A medical centre. Removing one archives it, so history keeps pointing at it."""

    __tablename__ = "centre"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=200)
    region: str = Field(max_length=200)
    profiles: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    description: str = Field(default="", max_length=4000)
    created_at: datetime = Field(sa_type=UTCDateTime)
    archived_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Doctor(SQLModel, table=True):
    """A doctor's profile: one per doctor account."""

    __tablename__ = "doctor"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user_account.id", unique=True)
    centre_id: uuid.UUID = Field(foreign_key="centre.id", index=True)
    specialty: str = Field(max_length=200)
    is_duty: bool = Field(default=False, index=True)
    bio: str = Field(default="", max_length=4000)
    created_at: datetime = Field(sa_type=UTCDateTime)
    archived_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SlotStatus(StrEnum):
    FREE = "free"
    BOOKED = "booked"


class DutySlot(SQLModel, table=True):
    """A bookable time of a duty doctor."""

    __tablename__ = "duty_slot"
    __table_args__ = (sa.UniqueConstraint("doctor_id", "starts_at"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    doctor_id: uuid.UUID = Field(foreign_key="doctor.id", index=True)
    starts_at: datetime = Field(sa_type=UTCDateTime, index=True)
    ends_at: datetime = Field(sa_type=UTCDateTime)
    status: SlotStatus = Field(default=SlotStatus.FREE, sa_type=StrEnumType(SlotStatus, 16))


class CentrePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    region: str
    profiles: list[str]
    description: str


class DoctorPublic(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    full_name: str
    centre_id: uuid.UUID
    centre_name: str
    specialty: str
    is_duty: bool
    bio: str


class SlotPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    doctor_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    status: SlotStatus
