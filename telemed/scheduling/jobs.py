"""Background work on consultations: reminders, no-shows, overdue requests.

Each item is claimed by an atomic UPDATE ... WHERE <not done yet> and handled in the
same transaction as the claim, so with several server processes every reminder and
alert goes out once: the process whose UPDATE matched the row does it, the others'
match nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import keys
from telemed.accounts.models import Role, User
from telemed.jobs import register_job, transaction
from telemed.notify.service import do_notify
from telemed.notify.texts import NotificationKind
from telemed.scheduling.consultations import do_move
from telemed.scheduling.lifecycle import Move, Party
from telemed.scheduling.models import Centre, Consultation, State

BATCH = 100
REMINDERS = (
    # (column, lead time, kind): each goes out once, when its lead time is reached.
    ("reminder_24h_at", timedelta(hours=24), NotificationKind.REMINDER_24H),
    ("reminder_1h_at", timedelta(hours=1), NotificationKind.REMINDER_1H),
)
STILL_TRUE = 0.75
"""A reminder is sent only while this share of its lead time is still ahead: the day-before
reminder at least 18 hours before, "in an hour" at least 45 minutes before."""


def setup(app: web.Application) -> None:
    register_job(app, "reminders", send_reminders)
    register_job(app, "no_shows", mark_no_shows)
    register_job(app, "overdue_requests", alert_overdue)


async def _claim(
    session: AsyncSession,
    consultation_id: uuid.UUID,
    column: str,
    now: datetime,
    state: State = State.SCHEDULED,
) -> bool:
    """Set ``column`` to ``now`` if it is still unset (and the state still holds)."""
    table = Consultation.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    result = await session.exec(
        sa.update(table)
        .where(table.c.id == consultation_id, table.c[column].is_(None), table.c.state == state)
        .values({column: now})
    )
    return bool(result.rowcount == 1)


async def send_reminders(app: web.Application, now: datetime) -> int:
    sent = 0
    for column, lead, kind in REMINDERS:
        async with transaction(app) as session:
            due = (
                await session.exec(
                    select(Consultation.id)
                    .where(
                        Consultation.state == State.SCHEDULED,
                        col(getattr(Consultation, column)).is_(None),
                        col(Consultation.starts_at) > now,
                        col(Consultation.starts_at) <= now + lead,
                    )
                    .limit(BATCH)
                )
            ).all()
        for consultation_id in due:
            async with transaction(app) as session:
                if not await _claim(session, consultation_id, column, now):
                    continue
                consultation = await session.get(Consultation, consultation_id)
                assert consultation is not None
                assert consultation.starts_at is not None
                if consultation.starts_at - now < lead * STILL_TRUE:
                    # Booked at short notice (or the job ran late): "in an hour" said
                    # 12 minutes before is not true, and the booking itself was the news.
                    # Claimed all the same, so it is never sent later.
                    continue
                patient = await session.get(User, consultation.patient_id)
                assert patient is not None
                await do_notify(
                    session,
                    brand=app[keys.SETTINGS].brand_name,
                    now=now,
                    user=patient,
                    kind=kind,
                    params={"when": consultation.starts_at},
                    consultation_id=consultation.id,
                    sms=True,
                    email=True,
                    dedupe_key=f"{kind.value}:{consultation.id}:{consultation.starts_at.isoformat()}",
                )
                sent += 1
    return sent


async def mark_no_shows(app: web.Application, now: datetime) -> int:
    """A scheduled consultation whose window closed without being started.

    If the patient never came it is a no-show (the state machine's system move). If the
    patient came and waited but the doctor never started it, it was not the patient's
    fault: it is cancelled with that reason. Either way the patient is told, and a
    manager sees it in the audit trail.
    """
    grace = timedelta(minutes=app[keys.SETTINGS].no_show_grace_minutes)
    async with transaction(app) as session:
        closed = (
            await session.exec(
                select(Consultation.id)
                .where(
                    Consultation.state == State.SCHEDULED,
                    col(Consultation.ends_at) < now - grace,
                )
                .limit(BATCH)
            )
        ).all()
    handled = 0
    for consultation_id in closed:
        async with transaction(app) as session:
            consultation = (
                await session.exec(
                    select(Consultation).where(Consultation.id == consultation_id).with_for_update()
                )
            ).first()
            if consultation is None or consultation.state is not State.SCHEDULED:
                continue  # another process got there first
            patient_came = consultation.patient_joined_at is not None
            changes: dict[str, object] = {"active_slot_id": None}
            if patient_came:
                changes["reason"] = "The doctor did not start the consultation"
            await do_move(
                session,
                consultation,
                # The patient came and waited, the doctor never started it: not the
                # patient's fault, so not a no-show.
                move=Move.CANCEL if patient_came else Move.MARK_NO_SHOW,
                party=Party.SYSTEM,
                actor_id=None,
                now=now,
                changes=changes,
                action="consultation.not_held" if patient_came else "consultation.no_show",
            )
            kind = NotificationKind.CANCELLED if patient_came else NotificationKind.NO_SHOW
            patient = await session.get(User, consultation.patient_id)
            assert patient is not None
            await do_notify(
                session,
                brand=app[keys.SETTINGS].brand_name,
                now=now,
                user=patient,
                kind=kind,
                params={"when": consultation.starts_at, "reason": consultation.reason},
                consultation_id=consultation.id,
                dedupe_key=f"closed:{consultation.id}",
            )
            handled += 1
    return handled


async def alert_overdue(app: web.Application, now: datetime) -> int:
    """Tell the managers (once) about each request whose response deadline has passed:
    those of the whole service, and those bound to the request's centre."""
    alerted = 0
    async with transaction(app) as session:
        overdue = (
            await session.exec(
                select(Consultation.id)
                .where(
                    Consultation.state == State.REQUESTED,
                    col(Consultation.notified_at).is_(None),
                    col(Consultation.overdue_alerted_at).is_(None),
                    col(Consultation.due_at) < now,
                )
                .limit(BATCH)
            )
        ).all()
    for consultation_id in overdue:
        async with transaction(app) as session:
            if not await _claim(
                session, consultation_id, "overdue_alerted_at", now, state=State.REQUESTED
            ):
                continue
            consultation = await session.get(Consultation, consultation_id)
            assert consultation is not None
            centre = await session.get(Centre, consultation.centre_id)
            managers = (
                await session.exec(
                    select(User).where(
                        col(User.role).in_([Role.MANAGER]),
                        col(User.is_active).is_(True),
                        sa.or_(
                            col(User.centre_id).is_(None),
                            col(User.centre_id) == consultation.centre_id,
                        ),
                    )
                )
            ).all()
            for manager in managers:
                await do_notify(
                    session,
                    brand=app[keys.SETTINGS].brand_name,
                    now=now,
                    user=manager,
                    kind=NotificationKind.SLA_OVERDUE,
                    params={"centre": centre.name if centre else "", "due": consultation.due_at},
                    consultation_id=consultation.id,
                )
            alerted += 1
    return alerted
