"""The directory of medical centres and doctors, and duty slots.

Reading is open to everyone; changes are the manager's (the views check the role): a
manager of the whole service changes any, a manager bound to a centre that centre and
its doctors only (``check_manages``). Removing a centre or a doctor archives it:
consultations will keep pointing at it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit
from telemed.accounts import service as accounts
from telemed.accounts.models import Locale, Role, User
from telemed.errors import (
    CentreHasDoctors,
    Forbidden,
    InvalidState,
    InvalidValue,
    NotFound,
    Problem,
)
from telemed.scheduling.consultations import centre_scope, check_doctor_free, doctor_of
from telemed.scheduling.models import (
    Centre,
    Consultation,
    Doctor,
    DoctorPublic,
    DutySlot,
    SlotStatus,
)
from telemed.scheduling.slots import cut_slots
from telemed.scheduling.topics import topics_for


def clean_profiles(profiles: list[str]) -> list[str]:
    """Profiles trimmed, without blanks or repeats (case-insensitive), in given order."""
    seen: set[str] = set()
    result = []
    for profile in profiles:
        text = " ".join(profile.split())
        if text and text.lower() not in seen:
            seen.add(text.lower())
            result.append(text)
    return result


def check_manages(actor: User | None, centre_id: uuid.UUID | None) -> None:
    """Whether the actor may change this centre, or its doctors: ``Forbidden`` for a
    manager bound to another centre. ``centre_id`` None stands for the list of centres
    itself (adding or removing one), which only a manager of the whole service changes.
    ``actor`` None is the command line."""
    own = centre_scope(actor) if actor is not None else None
    if own is None:
        return
    if centre_id is None:
        raise Forbidden(
            "A manager of a centre cannot add or remove centres",
            details={"centre_id": str(own)},
        )
    if centre_id != own:
        raise Forbidden(
            "A manager of a centre manages that centre and its doctors only",
            details={"centre_id": str(own)},
        )


async def list_centres(
    session: AsyncSession, *, region: str | None = None, profile: str | None = None
) -> list[Centre]:
    statement = select(Centre).where(col(Centre.archived_at).is_(None)).order_by(col(Centre.name))
    if region:
        statement = statement.where(Centre.region == region)
    centres = list((await session.exec(statement)).all())
    if profile:
        wanted = profile.strip().lower()
        centres = [c for c in centres if wanted in (p.lower() for p in c.profiles)]
    return centres


async def get_centre(session: AsyncSession, centre_id: uuid.UUID) -> Centre:
    """A live centre; raises ``NotFound``."""
    centre = await session.get(Centre, centre_id)
    if centre is None or centre.archived_at is not None:
        raise NotFound("Medical centre not found")
    return centre


async def do_create_centre(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    name: str,
    region: str,
    profiles: list[str],
    description: str = "",
) -> Centre:
    check_manages(actor, None)
    centre = Centre(
        name=name,
        region=region,
        profiles=clean_profiles(profiles),
        description=description,
        created_at=now,
    )
    session.add(centre)
    await session.flush()
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="centre.created",
        object_type="centre",
        object_id=centre.id,
    )
    return centre


async def do_update_centre(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    centre_id: uuid.UUID,
    changes: dict[str, object],
) -> Centre:
    check_manages(actor, centre_id)
    centre = await get_centre(session, centre_id)
    if "profiles" in changes:
        profiles = changes["profiles"]
        assert isinstance(profiles, list)
        changes["profiles"] = clean_profiles(profiles)
    for name, value in changes.items():
        setattr(centre, name, value)
    session.add(centre)
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="centre.updated",
        object_type="centre",
        object_id=centre.id,
        details={"fields": sorted(changes)},
    )
    return centre


async def do_archive_centre(
    session: AsyncSession, *, actor: User, now: datetime, centre_id: uuid.UUID
) -> None:
    """Remove a centre from the directory; refused (409) while it still has doctors."""
    check_manages(actor, None)
    centre = await get_centre(session, centre_id)
    doctors = await session.exec(
        select(Doctor.id).where(Doctor.centre_id == centre.id, col(Doctor.archived_at).is_(None))
    )
    if doctors.first() is not None:
        raise CentreHasDoctors("Move or remove the centre's doctors first")
    centre.archived_at = now
    session.add(centre)
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="centre.archived",
        object_type="centre",
        object_id=centre.id,
    )


def doctor_public(doctor: Doctor, user: User, centre: Centre) -> DoctorPublic:
    return DoctorPublic(
        id=doctor.id,
        user_id=user.id,
        full_name=user.full_name,
        centre_id=centre.id,
        centre_name=centre.name,
        specialty=doctor.specialty,
        is_duty=doctor.is_duty,
        bio=doctor.bio,
        topics=topics_for(doctor.specialty),
    )


async def list_doctors(
    session: AsyncSession, *, centre_id: uuid.UUID | None = None, duty: bool | None = None
) -> list[DoctorPublic]:
    statement = (
        select(Doctor, User, Centre)
        .join(User, col(User.id) == col(Doctor.user_id))
        .join(Centre, col(Centre.id) == col(Doctor.centre_id))
        .where(col(Doctor.archived_at).is_(None))
        .order_by(col(User.full_name))
    )
    if centre_id is not None:
        statement = statement.where(Doctor.centre_id == centre_id)
    if duty is not None:
        statement = statement.where(Doctor.is_duty == duty)
    rows = (await session.exec(statement)).all()
    return [doctor_public(doctor, user, centre) for doctor, user, centre in rows]


async def get_doctor(session: AsyncSession, doctor_id: uuid.UUID) -> tuple[Doctor, User, Centre]:
    """A live doctor with account and centre; raises ``NotFound``."""
    row = (
        await session.exec(
            select(Doctor, User, Centre)
            .join(User, col(User.id) == col(Doctor.user_id))
            .join(Centre, col(Centre.id) == col(Doctor.centre_id))
            .where(Doctor.id == doctor_id, col(Doctor.archived_at).is_(None))
        )
    ).first()
    if row is None:
        raise NotFound("Doctor not found")
    return row[0], row[1], row[2]


async def do_create_doctor(
    session: AsyncSession,
    *,
    account: accounts.NewAccount,
    password_hash: str,
    actor: User | None,
    now: datetime,
    centre_id: uuid.UUID,
    specialty: str,
    is_duty: bool,
    locale: Locale,
    time_zone: str,
    bio: str = "",
    must_change_password: bool = True,
) -> tuple[Doctor, User, Centre]:
    """Create a doctor's account (role doctor, checked by ``check_new_account``, its
    password hashed beforehand) and profile at a live centre.

    The manager sets the first password, so by default the doctor must change it at
    the first sign-in. Raises ``Forbidden`` (``check_manages``), ``NotFound`` (centre)
    and the account errors.
    """
    check_manages(actor, centre_id)
    centre = await get_centre(session, centre_id)
    user = await accounts.do_create_user(
        session,
        account=account,
        password_hash=password_hash,
        role=Role.DOCTOR,
        now=now,
        locale=locale,
        time_zone=time_zone,
        must_change_password=must_change_password,
    )
    doctor = Doctor(
        user_id=user.id,
        centre_id=centre.id,
        specialty=specialty,
        is_duty=is_duty,
        bio=bio,
        created_at=now,
    )
    session.add(doctor)
    await session.flush()
    audit.record(
        session,
        now=now,
        actor_id=actor.id if actor else None,
        action="doctor.created",
        object_type="doctor",
        object_id=doctor.id,
    )
    return doctor, user, centre


async def do_update_doctor(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    doctor_id: uuid.UUID,
    changes: dict[str, object],
) -> tuple[Doctor, User, Centre]:
    doctor, user, centre = await get_doctor(session, doctor_id)
    check_manages(actor, centre.id)
    if "centre_id" in changes:
        new_centre = changes.pop("centre_id")
        assert isinstance(new_centre, uuid.UUID)
        check_manages(actor, new_centre)
        centre = await get_centre(session, new_centre)
        doctor.centre_id = centre.id
    if "full_name" in changes:
        name = " ".join(str(changes.pop("full_name")).split())
        if not name:
            raise InvalidValue("Enter the full name", problem=Problem.MISSING, field="full_name")
        user.full_name = name
        session.add(user)
    for name, value in changes.items():
        setattr(doctor, name, value)
    session.add(doctor)
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="doctor.updated",
        object_type="doctor",
        object_id=doctor.id,
    )
    return doctor, user, centre


async def do_archive_doctor(
    session: AsyncSession, *, actor: User, now: datetime, doctor_id: uuid.UUID
) -> None:
    """Remove a doctor from the directory: the account is closed and signed out."""
    doctor, user, centre = await get_doctor(session, doctor_id)
    check_manages(actor, centre.id)
    doctor.archived_at = now
    user.is_active = False
    session.add(doctor)
    session.add(user)
    await accounts.do_revoke_user_sessions(session, user_id=user.id, now=now)
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="doctor.archived",
        object_type="doctor",
        object_id=doctor.id,
    )


async def list_slots(
    session: AsyncSession, *, doctor_id: uuid.UUID, start: datetime, end: datetime
) -> list[DutySlot]:
    """A duty doctor's slots that start in ``[start, end)``."""
    await get_doctor(session, doctor_id)
    result = await session.exec(
        select(DutySlot)
        .where(
            DutySlot.doctor_id == doctor_id, DutySlot.starts_at >= start, DutySlot.starts_at < end
        )
        .order_by(col(DutySlot.starts_at))
    )
    return list(result.all())


async def check_publish_slots(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    starts_at: datetime,
    ends_at: datetime,
    slot_minutes: int,
    horizon: timedelta,
) -> list[DutySlot]:
    """A duty doctor publishes free slots, up to ``horizon`` ahead. Refused (``Overlap``)
    where they would overlap the doctor's existing slots or scheduled consultations."""
    doctor = await doctor_of(session, actor)
    if doctor is None or not doctor.is_duty:
        raise Forbidden("Only a duty doctor publishes slots")
    ranges = cut_slots(starts_at, ends_at, slot_minutes, now=now, horizon=horizon)
    await check_doctor_free(
        session,
        doctor=doctor,
        starts_at=ranges[0][0],
        ends_at=ranges[-1][1],
        any_slot=True,
        message="These slots overlap your slots or consultations",
    )
    slots = [DutySlot(doctor_id=doctor.id, starts_at=s, ends_at=e) for s, e in ranges]
    session.add_all(slots)
    await session.flush()
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="slots.published",
        object_type="doctor",
        object_id=doctor.id,
        details={"count": len(slots)},
    )
    return slots


async def check_delete_slot(
    session: AsyncSession, *, actor: User, now: datetime, slot_id: uuid.UUID
) -> None:
    """A duty doctor withdraws one of their free slots (a booked one must be cancelled)."""
    doctor = await doctor_of(session, actor)
    slot = await session.get(DutySlot, slot_id)
    if slot is None or doctor is None or slot.doctor_id != doctor.id:
        raise NotFound("Slot not found")
    if slot.status is not SlotStatus.FREE:
        raise InvalidState("The slot is booked: cancel the consultation instead")
    # Earlier bookings of a free slot were all cancelled; they keep their own times, so
    # they let go of the slot they pointed at.
    await session.exec(
        sa.update(Consultation).where(col(Consultation.slot_id) == slot.id).values(slot_id=None)
    )
    await session.delete(slot)
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="slot.deleted",
        object_type="duty_slot",
        object_id=slot.id,
    )
