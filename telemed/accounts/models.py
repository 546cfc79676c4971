"""Account tables and their data models."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from telemed.db import StrEnumType, UTCDateTime, new_id


class Role(StrEnum):
    PATIENT = "patient"
    DOCTOR = "doctor"
    MANAGER = "manager"
    ADMIN = "admin"
    SYSTEM = "system"
    """A regional information system's machine account: bound to one centre, it reads
    that centre's data through the FHIR interface (``/fhir/R4``) and nothing else."""


class Locale(StrEnum):
    RU = "ru"
    EN = "en"


class User(SQLModel, table=True):
    """An account. Phone is the login everyone has (E.164); e-mail is optional."""

    __tablename__ = "user_account"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    full_name: str = Field(max_length=200)
    birth_date: date | None = None
    phone: str = Field(max_length=16, unique=True)
    email: str | None = Field(default=None, max_length=254, unique=True)
    password_hash: str = Field(max_length=255)
    role: Role = Field(sa_type=StrEnumType(Role, 16), index=True)
    locale: Locale = Field(default=Locale.RU, sa_type=StrEnumType(Locale, 8))
    time_zone: str = Field(default="Europe/Moscow", max_length=64)
    must_change_password: bool = False
    is_active: bool = True
    created_at: datetime = Field(sa_type=UTCDateTime)
    password_changed_at: datetime = Field(sa_type=UTCDateTime)
    # The consent to the processing of personal data given on registering (152-FZ):
    # the version of its text (accounts/consent.py) and when. Staff and referred
    # patients, whose accounts others made, have none.
    consent_version: str | None = Field(default=None, max_length=32)
    consent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The medical centre a manager or a system client is bound to: it then sees that
    # centre's consultations only (``scheduling.parties``). A manager without one runs
    # the whole service; a system client always has one; other roles never (a doctor's
    # centre is on the doctor's profile).
    centre_id: uuid.UUID | None = Field(default=None, foreign_key="centre.id")


CENTRE_BOUND = frozenset({Role.MANAGER, Role.SYSTEM})
"""The roles whose account may be bound to a centre (``User.centre_id``)."""


class AuthSession(SQLModel, table=True):
    """A login session, or a join token. Only the SHA-256 of the token is stored.

    A join token (``consultation_id`` set) is a session scoped to one consultation's
    room: the HTTP API refuses it (but ``GET /me`` and ``POST /auth/logout``), and on
    Socket.IO it acts on that consultation only.
    """

    __tablename__ = "auth_session"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user_account.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    user_agent: str | None = Field(default=None, max_length=300)
    consultation_id: uuid.UUID | None = Field(
        default=None, foreign_key="consultation.id", ondelete="CASCADE"
    )


class RateEvent(SQLModel, table=True):
    """One counted attempt at an action whose limit must hold across processes and
    restarts: a failed sign-in, a registration, a wrong current password.

    ``key`` names what is counted: ``login:acct:<account>``, ``login:addr:<ip>``,
    ``register:addr:<ip>``, ``password:user:<id>``, ``credentials:user:<id>``,
    ``reset:phone:<phone>``, ``reset:addr:<ip>``, ``reset-code:phone:<phone>``,
    ``reset-code:addr:<ip>``. Phones and accounts unknown by the database are named by
    the SHA-256 of the login: no login identifier is stored in the clear.
    """

    __tablename__ = "rate_event"
    __table_args__ = (sa.Index("ix_rate_event_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=100)
    at: datetime = Field(sa_type=UTCDateTime)


class PasswordResetCode(SQLModel, table=True):
    """A code sent by SMS to set a new password without the old one: short-lived, used
    once, and dead after ``MAX_CODE_FAILURES`` wrong tries. A user has at most one live
    code: a new request deletes the earlier ones. Only an HMAC of the code is stored."""

    __tablename__ = "password_reset_code"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user_account.id", index=True, ondelete="CASCADE")
    code_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failures: int = 0


class UserPublic(BaseModel):
    """What a user sees of their own account."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    full_name: str
    birth_date: date | None
    phone: str
    email: str | None
    role: Role
    locale: Locale
    time_zone: str
    must_change_password: bool
    created_at: datetime
    consent_version: str | None
    consent_at: datetime | None
    centre_id: uuid.UUID | None = None
