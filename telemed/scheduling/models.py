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


class DutyTopic(StrEnum):
    CARDIOVASCULAR = "cardiovascular"
    GYNAECOLOGICAL = "gynaecological"
    HEALTHY_LIFESTYLE = "healthy_lifestyle"
    OTHER = "other"


class DoctorPublic(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    full_name: str
    centre_id: uuid.UUID
    centre_name: str
    specialty: str
    is_duty: bool
    bio: str
    topics: list[DutyTopic] = Field(
        description="The duty topics the doctor's specialty answers (scheduling/topics.py)"
    )


class SlotPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    doctor_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    status: SlotStatus


class Route(StrEnum):
    INITIATIVE = "initiative"  # the patient's own request to a medical centre
    DUTY = "duty"  # a booked slot of a duty doctor
    REFERRAL = "referral"  # imported from an attending doctor's table


class State(StrEnum):
    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CONCLUDED = "concluded"
    CANCELLED = "cancelled"
    DECLINED = "declined"
    NO_SHOW = "no_show"


class Channel(StrEnum):
    VIDEO = "video"


class Consultation(SQLModel, table=True):
    """One consultation, whichever route it came by (see ``lifecycle.py`` for its states).

    ``active_slot_id`` is set while the consultation holds its duty slot and cleared when
    it lets it go: its unique constraint is what books a slot at most once.
    ``referral_key`` (unique) makes a re-imported referral row a no-op.
    """

    __tablename__ = "consultation"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    route: Route = Field(sa_type=StrEnumType(Route, 16), index=True)
    state: State = Field(sa_type=StrEnumType(State, 16), index=True)
    patient_id: uuid.UUID = Field(foreign_key="user_account.id", index=True)
    centre_id: uuid.UUID = Field(foreign_key="centre.id", index=True)
    doctor_id: uuid.UUID | None = Field(default=None, foreign_key="doctor.id", index=True)
    slot_id: uuid.UUID | None = Field(default=None, foreign_key="duty_slot.id")
    active_slot_id: uuid.UUID | None = Field(default=None, foreign_key="duty_slot.id", unique=True)

    # What the patient (or the referral) says.
    full_name: str = Field(max_length=200)
    age: int | None = None
    diagnosis: str = Field(default="", max_length=1000)
    icd10: str | None = Field(default=None, max_length=16)
    complaints: str = Field(default="", max_length=4000)
    # Route 1: when the patient would like the consultation ("weekdays after 18:00"),
    # for the doctor who sets the time.
    preferred_times: str = Field(default="", max_length=500)
    topic: DutyTopic | None = Field(default=None, sa_type=StrEnumType(DutyTopic, 32))
    question: str = Field(default="", max_length=4000)
    channel: Channel = Field(default=Channel.VIDEO, sa_type=StrEnumType(Channel, 16))

    # When it happens.
    starts_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    duration_min: int | None = None
    ends_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # The response deadline (routes 1 and 3) and when it was met.
    submitted_at: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    notified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # How it went.
    cancelled_by_id: uuid.UUID | None = Field(default=None, foreign_key="user_account.id")
    reason: str = Field(default="", max_length=1000)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    patient_joined_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    concluded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # Referral (route 3).
    referral_import_id: uuid.UUID | None = Field(default=None, foreign_key="referral_import.id")
    referral_key: str | None = Field(default=None, max_length=64, unique=True)
    referring_organisation: str = Field(default="", max_length=300)
    referring_doctor: str = Field(default="", max_length=200)

    # Background work done, each claimed once by an atomic UPDATE.
    reminder_24h_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reminder_1h_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    overdue_alerted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # The last chat message's seq: the next message takes chat_seq + 1 (atomic increment).
    chat_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})

    version: int = 1
    updated_at: datetime = Field(sa_type=UTCDateTime)


class ConsultationDocument(SQLModel, table=True):
    """A patient's document attached to a consultation: its doctor may read it."""

    __tablename__ = "consultation_document"

    consultation_id: uuid.UUID = Field(
        foreign_key="consultation.id", primary_key=True, ondelete="CASCADE"
    )
    document_id: uuid.UUID = Field(
        foreign_key="document.id", primary_key=True, index=True, ondelete="CASCADE"
    )


class Conclusion(SQLModel, table=True):
    """A doctor's written conclusion. Never changed: an amendment is the next version."""

    __tablename__ = "conclusion"
    __table_args__ = (sa.UniqueConstraint("consultation_id", "version"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    consultation_id: uuid.UUID = Field(foreign_key="consultation.id", index=True)
    version: int
    doctor_id: uuid.UUID = Field(foreign_key="doctor.id")
    diagnosis: str = Field(max_length=1000)
    icd10: str | None = Field(default=None, max_length=16)
    findings: str = Field(max_length=8000)
    recommendations: str = Field(max_length=8000)
    amendment_reason: str | None = Field(default=None, max_length=1000)
    issued_at: datetime = Field(sa_type=UTCDateTime)


class ReferralImport(SQLModel, table=True):
    """One upload of a referral table, with its per-row report."""

    __tablename__ = "referral_import"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    created_by_id: uuid.UUID = Field(foreign_key="user_account.id")
    created_at: datetime = Field(sa_type=UTCDateTime)
    file_name: str = Field(max_length=255)
    sha256: str = Field(max_length=64)
    dry_run: bool
    total_rows: int
    created: int
    rows: list[dict[str, object]] = Field(default_factory=list, sa_type=sa.JSON)
