"""Response deadlines (SLA): a route 1 request is due ``sla_initiative`` after it was
submitted, a referral ``sla_referral`` after it was registered. The deadline is met
when the patient is told a time (or the refusal); ``notified_at`` keeps that moment."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed.accounts.models import User
from telemed.scheduling.consultations import centre_scope
from telemed.scheduling.models import Centre, Consultation, Doctor, Route, State


class DeadlineStatus(StrEnum):
    ON_TRACK = "on_track"
    DUE_SOON = "due_soon"  # the given share of the window (75 %) is gone
    OVERDUE = "overdue"
    MET = "met"  # notified in time
    MET_LATE = "met_late"  # notified, but after the deadline


def deadline_status(
    *,
    submitted_at: datetime,
    due_at: datetime,
    notified_at: datetime | None,
    now: datetime,
    due_soon_fraction: float,
) -> DeadlineStatus:
    """Pure rule for one consultation's deadline."""
    if notified_at is not None:
        return DeadlineStatus.MET if notified_at <= due_at else DeadlineStatus.MET_LATE
    if now > due_at:
        return DeadlineStatus.OVERDUE
    if now >= submitted_at + (due_at - submitted_at) * due_soon_fraction:
        return DeadlineStatus.DUE_SOON
    return DeadlineStatus.ON_TRACK


class DeadlineItem(BaseModel):
    consultation_id: uuid.UUID
    route: Route
    state: State
    centre_id: uuid.UUID
    centre_name: str
    doctor_id: uuid.UUID | None
    doctor_name: str | None
    submitted_at: datetime
    due_at: datetime
    notified_at: datetime | None
    status: DeadlineStatus
    hours_left: float


class DeadlineCounts(BaseModel):
    id: uuid.UUID | None
    name: str
    on_track: int = 0
    due_soon: int = 0
    overdue: int = 0
    met: int = 0
    met_late: int = 0


class SlaReport(BaseModel):
    now: datetime
    due_soon: list[DeadlineItem]
    overdue: list[DeadlineItem]
    met: list[DeadlineItem]
    by_centre: list[DeadlineCounts]
    by_doctor: list[DeadlineCounts]


@dataclass(frozen=True)
class _Names:
    centres: dict[uuid.UUID, str]
    doctors: dict[uuid.UUID, str]


async def sla_report(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    due_soon_fraction: float,
    start: datetime | None = None,
    end: datetime | None = None,
) -> SlaReport:
    """Every consultation with a deadline (submitted in ``[start, end)``), by status,
    counted by centre and by doctor, for a manager: of the whole service, or of the
    centre the manager is bound to (``centre_scope``). Unassigned requests count under
    "no doctor"."""
    # A request its own patient withdrew before any answer has no deadline left to meet;
    # one cancelled by the centre or a manager still counts (else cancelling would hide
    # an overdue request).
    statement = select(Consultation).where(
        col(Consultation.due_at).is_not(None),
        sa.or_(
            col(Consultation.state) != State.CANCELLED,
            col(Consultation.notified_at).is_not(None),
            col(Consultation.cancelled_by_id) != col(Consultation.patient_id),
        ),
    )
    if start is not None:
        statement = statement.where(Consultation.submitted_at >= start)
    if end is not None:
        statement = statement.where(Consultation.submitted_at < end)
    centre_id = centre_scope(actor)
    if centre_id is not None:
        statement = statement.where(Consultation.centre_id == centre_id)
    consultations = list((await session.exec(statement)).all())
    names = _Names(
        centres={c.id: c.name for c in (await session.exec(select(Centre))).all()},
        doctors={
            d.id: u.full_name
            for d, u in (
                await session.exec(
                    select(Doctor, User).join(User, col(User.id) == col(Doctor.user_id))
                )
            ).all()
        },
    )
    items = []
    for consultation in consultations:
        assert consultation.due_at is not None
        status = deadline_status(
            submitted_at=consultation.submitted_at,
            due_at=consultation.due_at,
            notified_at=consultation.notified_at,
            now=now,
            due_soon_fraction=due_soon_fraction,
        )
        items.append(
            DeadlineItem(
                consultation_id=consultation.id,
                route=consultation.route,
                state=consultation.state,
                centre_id=consultation.centre_id,
                centre_name=names.centres.get(consultation.centre_id, ""),
                doctor_id=consultation.doctor_id,
                doctor_name=names.doctors.get(consultation.doctor_id)
                if consultation.doctor_id
                else None,
                submitted_at=consultation.submitted_at,
                due_at=consultation.due_at,
                notified_at=consultation.notified_at,
                status=status,
                hours_left=round((consultation.due_at - now).total_seconds() / 3600, 1),
            )
        )
    items.sort(key=lambda item: item.due_at)
    by_centre: dict[uuid.UUID | None, DeadlineCounts] = {}
    by_doctor: dict[uuid.UUID | None, DeadlineCounts] = {}
    for item in items:
        for table, key, name in (
            (by_centre, item.centre_id, item.centre_name),
            (by_doctor, item.doctor_id, item.doctor_name or ""),
        ):
            counts = table.setdefault(key, DeadlineCounts(id=key, name=name))
            setattr(counts, item.status.value, getattr(counts, item.status.value) + 1)
    grouped: dict[DeadlineStatus, list[DeadlineItem]] = defaultdict(list)
    for item in items:
        grouped[item.status].append(item)
    return SlaReport(
        now=now,
        due_soon=grouped[DeadlineStatus.DUE_SOON],
        overdue=grouped[DeadlineStatus.OVERDUE],
        met=grouped[DeadlineStatus.MET] + grouped[DeadlineStatus.MET_LATE],
        by_centre=sorted(by_centre.values(), key=lambda c: c.name),
        by_doctor=sorted(by_doctor.values(), key=lambda c: c.name),
    )


async def get_overdue_counts(session: AsyncSession, *, now: datetime) -> dict[Route, int]:
    """Requests still waiting for a time past their response deadline, by route (the
    ``overdue`` of ``deadline_status`` among those not yet answered: what needs doing
    now). One aggregate over the open requests (``state`` is indexed), so its cost is
    bounded by the queue of open requests, not by the history."""
    c = Consultation
    rows = (
        await session.exec(
            select(c.route, sa.func.count())
            .where(
                c.state == State.REQUESTED,
                col(c.notified_at).is_(None),
                col(c.due_at) < now,
            )
            .group_by(c.route)
        )
    ).all()
    return {Route(route): int(count) for route, count in rows}
