"""Consultations: the three routes in, every move of the state machine, and who may see
what.

Each ``check_*`` authorises and validates, then makes its change through one function:
``do_move`` for a move of the state machine, ``do_change`` for any other change, and
``do_open`` for a new consultation (made by ``new_consultation``). Those write the
change, keep ``version``, announce it live, write the audit event and tell the rest of
the system (``live.happened``); the ``check_*`` adds the notifications that its move
means for the people involved. All in the caller's transaction (never commits).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from telemed import audit, live
from telemed.accounts.models import Role, User
from telemed.documents.models import Document
from telemed.errors import (
    Forbidden,
    InvalidState,
    InvalidValue,
    NotFound,
    Overlap,
    Problem,
    SlotTaken,
    TooLate,
)
from telemed.notify.ics import consultation_event
from telemed.notify.service import Attachment, do_notify
from telemed.notify.texts import NotificationKind
from telemed.scheduling.lifecycle import HOLDS_TIME, OPEN, Move, Moved, Party, check_move, past
from telemed.scheduling.models import (
    Centre,
    Channel,
    Consultation,
    ConsultationDocument,
    Doctor,
    DutySlot,
    DutyTopic,
    Route,
    SlotStatus,
    State,
)
from telemed.scheduling.parties import Actor, party, taking_part
from telemed.settings import Settings
from telemed.signaling.events import ConsultationUpdated


@dataclass(frozen=True)
class Seen:
    """A consultation as one actor sees it, with the actor's part in it."""

    consultation: Consultation
    party: Party


async def doctor_of(session: AsyncSession, user: User) -> Doctor | None:
    """The live doctor profile of a doctor account (None for other roles)."""
    if user.role is not Role.DOCTOR:
        return None
    return (
        await session.exec(
            select(Doctor).where(Doctor.user_id == user.id, col(Doctor.archived_at).is_(None))
        )
    ).first()


def actor_of(user: User, doctor: Doctor | None) -> Actor:
    """A user as the participation rule sees them (``parties.Actor``): a doctor with
    the centre of their profile, a manager or system client with the centre their
    account is bound to."""
    return Actor(
        user_id=user.id,
        role=user.role,
        doctor_id=doctor.id if doctor is not None else None,
        centre_id=doctor.centre_id if doctor is not None else user.centre_id,
    )


def centre_scope(user: User) -> uuid.UUID | None:
    """The one centre a manager or system client is bound to (``parties.Actor.scope``):
    what their lists and reports are limited to. None for a manager of the whole
    service, and for the other roles (whose lists follow ``taking_part``)."""
    return actor_of(user, None).scope()


async def actor_of_user(session: AsyncSession, user: User) -> Actor:
    """``actor_of`` with the user's doctor profile looked up."""
    return actor_of(user, await doctor_of(session, user))


def party_in(user: User, doctor: Doctor | None, consultation: Consultation) -> Party | None:
    """The user's part in a consultation, or None (then it is hidden): ``parties.party``."""
    return party(
        actor_of(user, doctor),
        patient_id=consultation.patient_id,
        doctor_id=consultation.doctor_id,
        centre_id=consultation.centre_id,
        state=consultation.state,
    )


async def get_consultation(
    session: AsyncSession,
    *,
    actor: User,
    consultation_id: uuid.UUID,
    lock: bool = False,
    audit_reads: bool = False,
    now: datetime | None = None,
    address: str | None = None,
) -> Seen:
    """A consultation the actor takes part in; to anyone else it does not exist (404).

    With ``audit_reads``, a manager's (or system client's) read of the patient's
    consultation is audited."""
    statement = select(Consultation).where(Consultation.id == consultation_id)
    if lock:
        statement = statement.with_for_update()
    consultation = (await session.exec(statement)).first()
    doctor = await doctor_of(session, actor)
    party = party_in(actor, doctor, consultation) if consultation is not None else None
    if consultation is None or party is None:
        raise NotFound("Consultation not found")
    if audit_reads and party in (Party.MANAGER, Party.REGISTRY):
        assert now is not None
        audit.record(
            session,
            now=now,
            actor_id=actor.id,
            action="consultation.viewed",
            object_type="consultation",
            object_id=consultation.id,
            subject_id=consultation.patient_id,
            address=address,
        )
    return Seen(consultation, party)


async def list_consultations(
    session: AsyncSession,
    *,
    actor: User,
    states: Sequence[State] = (),
    route: Route | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 200,
) -> list[Consultation]:
    """Those the actor takes part in (``parties.taking_part``): a patient's own, a
    doctor's own and the open requests of their centre, all for a manager. Filters:
    states, route, and a time range on the start (or, without a start time, on the
    submission)."""
    statement = select(Consultation).where(taking_part(await actor_of_user(session, actor)))
    if states:
        statement = statement.where(col(Consultation.state).in_(list(states)))
    if route is not None:
        statement = statement.where(Consultation.route == route)
    when = sa.func.coalesce(col(Consultation.starts_at), col(Consultation.submitted_at))
    if start is not None:
        statement = statement.where(when >= start)
    if end is not None:
        statement = statement.where(when < end)
    statement = statement.order_by(when.desc(), col(Consultation.id)).limit(limit)
    return list((await session.exec(statement)).all())


async def _owned_documents(
    session: AsyncSession, *, owner_id: uuid.UUID, document_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """The given documents, all of which must be the owner's (else 404, revealing nothing)."""
    wanted = list(dict.fromkeys(document_ids))
    if not wanted:
        return []
    found = set(
        (
            await session.exec(
                select(Document.id).where(
                    col(Document.id).in_(wanted), Document.owner_id == owner_id
                )
            )
        ).all()
    )
    missing = [str(d) for d in wanted if d not in found]
    if missing:
        raise NotFound("Document not found", details={"field": "document_ids"})
    return wanted


def age_on(birth: date | None, today: date) -> int | None:
    """Full years on ``today`` (None without a birth date)."""
    if birth is None:
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def new_consultation(
    *,
    route: Route,
    patient_id: uuid.UUID,
    centre_id: uuid.UUID,
    full_name: str,
    now: datetime,
    settings: Settings,
    **fields: object,
) -> Consultation:
    """A new consultation of ``route``, in the state the route starts in: a request
    (route 1) or a referral (route 3) is ``requested`` and due after its route's response
    deadline; a duty booking (route 2) is ``scheduled`` (its time is the slot's, given in
    ``fields``) and its patient knows the time at once."""
    due = {Route.INITIATIVE: settings.sla_initiative, Route.REFERRAL: settings.sla_referral}
    consultation = Consultation(
        route=route,
        state=State.SCHEDULED if route is Route.DUTY else State.REQUESTED,
        patient_id=patient_id,
        centre_id=centre_id,
        full_name=full_name,
        submitted_at=now,
        due_at=now + due[route] if route in due else None,
        notified_at=now if route is Route.DUTY else None,
        updated_at=now,
    )
    for name, value in fields.items():
        setattr(consultation, name, value)
    return consultation


async def do_open(
    session: AsyncSession,
    consultation: Consultation,
    *,
    actor_id: uuid.UUID | None,
    now: datetime,
    action: str,
    details: dict[str, object] | None = None,
) -> Consultation:
    """Store a new consultation (``new_consultation``), audited as ``action`` and
    announced to everyone watching."""
    session.add(consultation)
    await session.flush()
    _record(session, consultation, actor_id=actor_id, now=now, action=action, details=details)
    _announce(session, consultation)
    return consultation


async def do_move(
    session: AsyncSession,
    consultation: Consultation,
    *,
    move: Move,
    party: Party,
    actor_id: uuid.UUID | None,
    now: datetime,
    changes: Mapping[str, object] | None = None,
    action: str | None = None,
    details: dict[str, object] | None = None,
) -> Consultation:
    """The one way a consultation changes state: the move is checked against the
    transition table (``InvalidState``, ``Forbidden``), ``changes`` are applied, the
    state set, the version kept, the change announced live and audited (``action``, by
    default ``consultation.<move in the past>``), and the move told to the rest of the
    system once committed (``lifecycle.Moved``: the video room closes when it leaves the
    live states). The caller holds the row (``get_consultation(lock=True)``) and adds
    the notifications of its move. ``party`` ``SYSTEM`` with no ``actor_id`` is the
    server's own work."""
    source = consultation.state
    target = check_move(source, move, party)
    for name, value in (changes or {}).items():
        setattr(consultation, name, value)
    consultation.state = target
    await do_change(
        session,
        consultation,
        actor_id=actor_id,
        now=now,
        action=action or f"consultation.{past(move)}",
        details=details,
    )
    live.happened(session, Moved(consultation.id, move, source, target))
    return consultation


async def do_change(
    session: AsyncSession,
    consultation: Consultation,
    *,
    actor_id: uuid.UUID | None,
    now: datetime,
    action: str,
    details: dict[str, object] | None = None,
) -> Consultation:
    """A change of a consultation (``do_move`` for its state): the next ``version``, the
    time of the change, the audit event and the live announcement."""
    consultation.version += 1
    consultation.updated_at = now
    session.add(consultation)
    await session.flush()
    _record(session, consultation, actor_id=actor_id, now=now, action=action, details=details)
    _announce(session, consultation)
    return consultation


def _record(
    session: AsyncSession,
    consultation: Consultation,
    *,
    actor_id: uuid.UUID | None,
    now: datetime,
    action: str,
    details: dict[str, object] | None,
) -> None:
    audit.record(
        session,
        now=now,
        actor_id=actor_id,
        action=action,
        object_type="consultation",
        object_id=consultation.id,
        subject_id=consultation.patient_id,
        details=details,
    )


def _announce(session: AsyncSession, consultation: Consultation) -> None:
    """``consultation:updated`` for everyone watching it, its patient and its centre's
    doctors (sent after the commit)."""
    live.queue(
        session,
        ConsultationUpdated.of(consultation),
        to=[
            f"consultation:{consultation.id}",
            f"user:{consultation.patient_id}",
            f"centre:{consultation.centre_id}",
        ],
    )


async def centre_doctors(session: AsyncSession, centre_id: uuid.UUID) -> list[User]:
    rows = await session.exec(
        select(User)
        .join(Doctor, col(Doctor.user_id) == col(User.id))
        .where(
            Doctor.centre_id == centre_id,
            col(Doctor.archived_at).is_(None),
            col(User.is_active).is_(True),
        )
    )
    return list(rows.all())


async def check_create_request(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    centre_id: uuid.UUID,
    diagnosis: str,
    complaints: str,
    document_ids: Sequence[uuid.UUID],
    full_name: str | None = None,
    age: int | None = None,
    preferred_times: str = "",
) -> Consultation:
    """Route 1: a patient's own request to a medical centre (with, if they like, the
    times that suit them, for the doctor who sets the time).

    Full name and age come from the account unless the patient corrects them. The
    attached documents must be the patient's. Due (response deadline) after
    ``sla_initiative``. Raises ``Forbidden`` (not a patient), ``NotFound`` (centre,
    documents).
    """
    if actor.role is not Role.PATIENT:
        raise Forbidden("Only a patient can request a consultation")
    centre = await session.get(Centre, centre_id)
    if centre is None or centre.archived_at is not None:
        raise NotFound("Medical centre not found", details={"field": "centre_id"})
    documents = await _owned_documents(session, owner_id=actor.id, document_ids=document_ids)
    consultation = new_consultation(
        route=Route.INITIATIVE,
        patient_id=actor.id,
        centre_id=centre.id,
        full_name=full_name or actor.full_name,
        now=now,
        settings=settings,
        age=age if age is not None else age_on(actor.birth_date, now.date()),
        diagnosis=diagnosis,
        complaints=complaints,
        preferred_times=preferred_times,
    )
    await do_open(
        session, consultation, actor_id=actor.id, now=now, action="consultation.requested"
    )
    for document_id in documents:
        session.add(ConsultationDocument(consultation_id=consultation.id, document_id=document_id))
    await do_notify(
        session,
        brand=settings.brand_name,
        now=now,
        user=actor,
        kind=NotificationKind.CONSULTATION_REQUESTED,
        params={"centre": centre.name, "due": consultation.due_at},
        consultation_id=consultation.id,
    )
    await notify_centre_doctors(
        session, now=now, centre=centre, consultation=consultation, brand=settings.brand_name
    )
    return consultation


async def notify_centre_doctors(
    session: AsyncSession,
    *,
    now: datetime,
    centre: Centre,
    consultation: Consultation,
    brand: str,
) -> None:
    """Tell every doctor of the centre that a request (or referral) waits for them."""
    for doctor_user in await centre_doctors(session, centre.id):
        await do_notify(
            session,
            brand=brand,
            now=now,
            user=doctor_user,
            kind=NotificationKind.NEW_REQUEST,
            params={"centre": centre.name, "due": consultation.due_at},
            consultation_id=consultation.id,
        )


async def check_book_duty(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    slot_id: uuid.UUID,
    topic: DutyTopic,
    channel: Channel,
    question: str,
    document_ids: Sequence[uuid.UUID],
) -> Consultation:
    """Route 2: book a duty doctor's free slot.

    The slot is booked at most once however many patients try at the same moment: the
    unique ``active_slot_id`` decides, and every loser gets ``SlotTaken`` (409).
    """
    if actor.role is not Role.PATIENT:
        raise Forbidden("Only a patient can book a duty doctor")
    slot = await session.get(DutySlot, slot_id)
    if slot is None:
        raise NotFound("Slot not found", details={"field": "slot_id"})
    doctor = await session.get(Doctor, slot.doctor_id)
    if doctor is None or doctor.archived_at is not None or not doctor.is_duty:
        raise NotFound("Slot not found", details={"field": "slot_id"})
    if slot.status is not SlotStatus.FREE:
        raise SlotTaken("This time has just been taken; pick another slot")
    if slot.starts_at <= now:
        raise TooLate("This slot has already begun; pick a later one")
    documents = await _owned_documents(session, owner_id=actor.id, document_ids=document_ids)
    consultation = new_consultation(
        route=Route.DUTY,
        patient_id=actor.id,
        centre_id=doctor.centre_id,
        full_name=actor.full_name,
        now=now,
        settings=settings,
        doctor_id=doctor.id,
        slot_id=slot.id,
        active_slot_id=slot.id,
        age=age_on(actor.birth_date, now.date()),
        topic=topic,
        question=question,
        channel=channel,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        duration_min=int((slot.ends_at - slot.starts_at).total_seconds() // 60),
    )
    try:
        async with session.begin_nested():
            await do_open(
                session, consultation, actor_id=actor.id, now=now, action="consultation.booked"
            )
    except IntegrityError:
        raise SlotTaken("This time has just been taken; pick another slot") from None
    # The winner marks the slot; losers never get here.
    slot.status = SlotStatus.BOOKED
    session.add(slot)
    for document_id in documents:
        session.add(ConsultationDocument(consultation_id=consultation.id, document_id=document_id))
    await _tell_scheduled(
        session,
        now=now,
        settings=settings,
        consultation=consultation,
        kind=NotificationKind.SCHEDULED,
    )
    doctor_user = await session.get(User, doctor.user_id)
    if doctor_user is not None:
        await do_notify(
            session,
            brand=settings.brand_name,
            now=now,
            user=doctor_user,
            kind=NotificationKind.NEW_BOOKING,
            params={"when": consultation.starts_at},
            consultation_id=consultation.id,
        )
    return consultation


async def check_doctor_free(
    session: AsyncSession,
    *,
    doctor: Doctor,
    starts_at: datetime,
    ends_at: datetime,
    except_id: uuid.UUID | None = None,
    any_slot: bool = False,
    message: str = "You already have a consultation or a duty slot at that time",
) -> None:
    """Raise ``Overlap`` if the doctor has another consultation or a published duty slot
    (a free one; with ``any_slot``, any) in ``[starts_at, ends_at)``. The doctor's row is
    locked first (PostgreSQL), so two changes to one doctor's time are decided one after
    the other."""
    await session.exec(select(Doctor.id).where(Doctor.id == doctor.id).with_for_update())
    statement = select(Consultation.id).where(
        Consultation.doctor_id == doctor.id,
        col(Consultation.state).in_(list(HOLDS_TIME)),
        col(Consultation.starts_at) < ends_at,
        col(Consultation.ends_at) > starts_at,
    )
    if except_id is not None:
        statement = statement.where(Consultation.id != except_id)
    clash = (await session.exec(statement)).first()
    if clash is None:
        slots = select(DutySlot.id).where(
            DutySlot.doctor_id == doctor.id,
            DutySlot.starts_at < ends_at,
            DutySlot.ends_at > starts_at,
        )
        if not any_slot:
            slots = slots.where(DutySlot.status == SlotStatus.FREE)
        clash = (await session.exec(slots)).first()
    if clash is not None:
        raise Overlap(message, details={"field": "starts_at"})


async def check_schedule(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
    starts_at: datetime,
    duration_min: int,
) -> Consultation:
    """A doctor assigns a time to a request (routes 1 and 3) or moves a scheduled one.

    Schedules a ``requested`` consultation (the doctor takes it) or reschedules a
    ``scheduled`` one. The time must be in the future and must not overlap the doctor's
    other consultations (``Overlap``, 409). The patient is told (in-app, SMS, e-mail with
    an ``.ics``); the first time the patient hears of a time is the deadline's proof.
    """
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    consultation = seen.consultation
    move = Move.SCHEDULE if consultation.state is State.REQUESTED else Move.RESCHEDULE
    check_move(consultation.state, move, seen.party)  # before anything else is checked
    if consultation.route is Route.DUTY:
        raise InvalidState("A duty booking keeps its slot; cancel it instead")
    if starts_at <= now:
        raise InvalidValue(
            "Choose a time in the future", problem=Problem.IN_PAST, field="starts_at"
        )
    if starts_at > now + settings.booking_horizon:
        raise InvalidValue(
            f"Choose a time within {settings.booking_horizon_days} days",
            problem=Problem.BEYOND_HORIZON,
            field="starts_at",
            params={"days": settings.booking_horizon_days},
            details={"horizon_days": settings.booking_horizon_days},
        )
    if not 5 <= duration_min <= settings.max_consultation_minutes:
        raise InvalidValue(
            f"The duration must be 5 to {settings.max_consultation_minutes} minutes",
            problem=Problem.DURATION,
            field="duration_min",
            params={"min": 5, "max": settings.max_consultation_minutes},
        )
    doctor = await doctor_of(session, actor)
    assert doctor is not None  # the party is DOCTOR
    ends_at = starts_at + timedelta(minutes=duration_min)
    await check_doctor_free(
        session, doctor=doctor, starts_at=starts_at, ends_at=ends_at, except_id=consultation.id
    )
    previous = consultation.starts_at
    await do_move(
        session,
        consultation,
        move=move,
        party=seen.party,
        actor_id=actor.id,
        now=now,
        changes={
            "doctor_id": doctor.id,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "duration_min": duration_min,
            "reminder_24h_at": None,
            "reminder_1h_at": None,
            # The first time the patient hears of a time: the deadline's proof.
            "notified_at": consultation.notified_at or now,
        },
        details={
            "starts_at": starts_at.isoformat(),
            "previous": previous.isoformat() if previous else None,
        },
    )
    await _tell_scheduled(
        session,
        now=now,
        settings=settings,
        consultation=consultation,
        kind=NotificationKind.SCHEDULED if move is Move.SCHEDULE else NotificationKind.RESCHEDULED,
    )
    return consultation


async def check_decline(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    consultation_id: uuid.UUID,
    reason: str,
    brand: str,
) -> Consultation:
    """A doctor of the centre declines a request, with a reason the patient will read."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    consultation = seen.consultation
    doctor = await doctor_of(session, actor)
    await do_move(
        session,
        consultation,
        move=Move.DECLINE,
        party=seen.party,
        actor_id=actor.id,
        now=now,
        changes={
            "doctor_id": doctor.id if doctor else None,
            "reason": reason,
            "notified_at": consultation.notified_at or now,
        },
    )
    patient = await session.get(User, consultation.patient_id)
    assert patient is not None
    await do_notify(
        session,
        brand=brand,
        now=now,
        user=patient,
        kind=NotificationKind.DECLINED,
        params={"reason": reason, "centre": await _centre_name(session, consultation)},
        consultation_id=consultation.id,
        sms=True,
        email=True,
        dedupe_key=f"declined:{consultation.id}",
    )
    return consultation


async def check_cancel(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
    reason: str,
) -> Consultation:
    """The patient, the doctor or a manager cancels, with a reason.

    A patient must cancel a scheduled consultation at least ``cancel_notice`` before it
    starts (``TooLate``, 409). Cancelling frees the duty slot for others. The other side
    is told.
    """
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    consultation = seen.consultation
    check_move(consultation.state, Move.CANCEL, seen.party)  # before the notice is checked
    if (
        seen.party is Party.PATIENT
        and consultation.starts_at is not None
        and consultation.starts_at - now < settings.cancel_notice
    ):
        minutes = settings.cancel_notice_minutes
        raise TooLate(
            f"A consultation can be cancelled up to {minutes} minutes before it starts",
            details={"cancel_notice_minutes": minutes},
        )
    was_scheduled = consultation.state is State.SCHEDULED
    await _release_slot(session, consultation, now)
    await do_move(
        session,
        consultation,
        move=Move.CANCEL,
        party=seen.party,
        actor_id=actor.id,
        now=now,
        changes={"reason": reason, "cancelled_by_id": actor.id},
        details={"by": seen.party.value},
    )
    params: dict[str, object] = {"reason": reason, "when": consultation.starts_at}
    attachments = []
    if was_scheduled:
        attachments.append(await _calendar_attachment(session, settings, consultation, now))
    patient = await session.get(User, consultation.patient_id)
    assert patient is not None
    if seen.party is not Party.PATIENT:
        await do_notify(
            session,
            brand=settings.brand_name,
            now=now,
            user=patient,
            kind=NotificationKind.CANCELLED,
            params=params,
            consultation_id=consultation.id,
            sms=True,
            email=True,
            attachments=attachments,
            dedupe_key=f"cancelled:{consultation.id}",
        )
    if consultation.doctor_id is not None and seen.party is not Party.DOCTOR:
        doctor = await session.get(Doctor, consultation.doctor_id)
        doctor_user = await session.get(User, doctor.user_id) if doctor else None
        if doctor_user is not None:
            await do_notify(
                session,
                brand=settings.brand_name,
                now=now,
                user=doctor_user,
                kind=NotificationKind.CANCELLED,
                params=params,
                consultation_id=consultation.id,
            )
    return consultation


def check_session_window(consultation: Consultation, *, now: datetime, settings: Settings) -> None:
    """A scheduled consultation's session (its room) opens ``room_opens_minutes`` before
    its start and closes at the end of its time plus the no-show grace."""
    assert consultation.starts_at is not None
    assert consultation.ends_at is not None
    opens = consultation.starts_at - timedelta(minutes=settings.room_opens_minutes)
    closes = consultation.ends_at + timedelta(minutes=settings.no_show_grace_minutes)
    if now < opens:
        raise TooLate(
            f"It is too early: the room opens {settings.room_opens_minutes} minutes before "
            "the consultation",
            details={"opens_at": opens.isoformat()},
        )
    if now > closes:
        raise TooLate("The consultation's time is over", details={"closed_at": closes.isoformat()})


async def check_start(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
) -> Consultation:
    """The consultation's doctor opens the session (from ``room_opens_minutes`` before the
    start until the end of its window)."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    consultation = seen.consultation
    check_move(consultation.state, Move.START, seen.party)  # before the window is checked
    check_session_window(consultation, now=now, settings=settings)
    return await do_move(
        session,
        consultation,
        move=Move.START,
        party=seen.party,
        actor_id=actor.id,
        now=now,
        changes={"started_at": now},
    )


async def check_end(
    session: AsyncSession, *, actor: User, now: datetime, consultation_id: uuid.UUID
) -> Consultation:
    """The consultation's doctor ends the session; the conclusion comes next."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    return await do_move(
        session,
        seen.consultation,
        move=Move.END,
        party=seen.party,
        actor_id=actor.id,
        now=now,
        changes={"ended_at": now, "active_slot_id": None},
    )


async def _release_slot(session: AsyncSession, consultation: Consultation, now: datetime) -> None:
    """Give the duty slot back (if it is still ahead, others can book it again)."""
    if consultation.active_slot_id is None:
        return
    slot = await session.get(DutySlot, consultation.active_slot_id)
    consultation.active_slot_id = None
    # The unique slot must be cleared in the database before another booking can take it.
    session.add(consultation)
    await session.flush()
    if slot is not None and slot.starts_at > now:
        slot.status = SlotStatus.FREE
        session.add(slot)


async def _centre_name(session: AsyncSession, consultation: Consultation) -> str:
    centre = await session.get(Centre, consultation.centre_id)
    return centre.name if centre else ""


async def _doctor_name(session: AsyncSession, consultation: Consultation) -> str:
    if consultation.doctor_id is None:
        return ""
    doctor = await session.get(Doctor, consultation.doctor_id)
    user = await session.get(User, doctor.user_id) if doctor else None
    return user.full_name if user else ""


async def _calendar_attachment(
    session: AsyncSession, settings: Settings, consultation: Consultation, now: datetime
) -> Attachment:
    return Attachment(
        filename="consultation.ics",
        content_type="text/calendar; method="
        + ("CANCEL" if consultation.state is State.CANCELLED else "REQUEST"),
        content=await calendar_for(session, settings=settings, consultation=consultation, now=now),
    )


async def calendar_for(
    session: AsyncSession, *, settings: Settings, consultation: Consultation, now: datetime
) -> bytes:
    """The consultation as an iCalendar event (cancelled ones as a cancellation)."""
    if consultation.starts_at is None or consultation.ends_at is None:
        raise InvalidState("The consultation has no time yet")
    centre = await _centre_name(session, consultation)
    doctor = await _doctor_name(session, consultation)
    base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    return consultation_event(
        uid=f"{consultation.id}@telemed",
        starts_at=consultation.starts_at,
        ends_at=consultation.ends_at,
        summary="Онлайн-консультация" + (f": {doctor}" if doctor else ""),
        description=f"{centre}. {doctor}".strip(". "),
        url=f"{base}/consultations/{consultation.id}",
        sequence=consultation.version,
        cancelled=consultation.state is State.CANCELLED,
        now=now,
    )


async def _tell_scheduled(
    session: AsyncSession,
    *,
    now: datetime,
    settings: Settings,
    consultation: Consultation,
    kind: NotificationKind,
) -> None:
    patient = await session.get(User, consultation.patient_id)
    assert patient is not None
    await do_notify(
        session,
        brand=settings.brand_name,
        now=now,
        user=patient,
        kind=kind,
        params={
            "when": consultation.starts_at,
            "doctor": await _doctor_name(session, consultation),
            "centre": await _centre_name(session, consultation),
        },
        consultation_id=consultation.id,
        sms=True,
        email=True,
        attachments=[await _calendar_attachment(session, settings, consultation, now)],
        dedupe_key=f"{kind.value}:{consultation.id}:{consultation.version}",
    )


async def check_attach_documents(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    consultation_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID],
) -> Consultation:
    """The patient attaches more of their documents to an open consultation (a referred
    patient uploads them after signing in), so that its doctor may read them."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id)
    consultation = seen.consultation
    if seen.party is not Party.PATIENT:
        raise Forbidden("Only the patient attaches their documents")
    if consultation.state not in OPEN:
        raise InvalidState(
            "Documents can be attached only while the consultation is open",
            details={"state": consultation.state.value},
        )
    wanted = await _owned_documents(session, owner_id=actor.id, document_ids=document_ids)
    already = set(await documents_of(session, consultation.id))
    added = [d for d in wanted if d not in already]
    for document_id in added:
        session.add(ConsultationDocument(consultation_id=consultation.id, document_id=document_id))
    if added:
        await do_change(
            session,
            consultation,
            actor_id=actor.id,
            now=now,
            action="consultation.documents_attached",
            details={"documents": [str(d) for d in added]},
        )
    return consultation


@dataclass(frozen=True)
class Around:
    """What is shown with a list of consultations, by id."""

    names: dict[uuid.UUID, str]  # user id → full name (patients and doctors)
    centres: dict[uuid.UUID, str]  # centre id → name
    doctors: dict[uuid.UUID, Doctor]  # doctor profile id → profile
    documents: dict[uuid.UUID, list[uuid.UUID]]  # consultation id → document ids


async def around(session: AsyncSession, items: Sequence[Consultation]) -> Around:
    """The names, centres, doctors and documents of ``items``, in four queries whatever
    their number (none for an empty list)."""
    if not items:
        return Around({}, {}, {}, {})
    doctor_ids = {c.doctor_id for c in items if c.doctor_id is not None}
    doctors = {
        doctor.id: doctor
        for doctor in (
            await session.exec(select(Doctor).where(col(Doctor.id).in_(doctor_ids)))
        ).all()
    }
    user_ids = {c.patient_id for c in items} | {d.user_id for d in doctors.values()}
    names = dict(
        (
            await session.exec(select(User.id, User.full_name).where(col(User.id).in_(user_ids)))
        ).all()
    )
    centre_ids = {c.centre_id for c in items}
    centres = dict(
        (
            await session.exec(select(Centre.id, Centre.name).where(col(Centre.id).in_(centre_ids)))
        ).all()
    )
    documents: dict[uuid.UUID, list[uuid.UUID]] = {}
    rows = await session.exec(
        select(ConsultationDocument.consultation_id, ConsultationDocument.document_id).where(
            col(ConsultationDocument.consultation_id).in_([c.id for c in items])
        )
    )
    for consultation_id, document_id in rows.all():
        documents.setdefault(consultation_id, []).append(document_id)
    return Around(names, centres, doctors, documents)


async def documents_of(session: AsyncSession, consultation_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.exec(
        select(ConsultationDocument.document_id).where(
            ConsultationDocument.consultation_id == consultation_id
        )
    )
    return list(rows.all())


async def may_read_attached_document(
    session: AsyncSession,
    *,
    actor: User,
    document_id: uuid.UUID,
    now: datetime,
    doctor_access_days: int,
) -> bool:
    """A participant may read a document while an open consultation links it: the
    patient's documents attached to their request (or shared in its chat) for its doctor
    (or, while unassigned, the doctors of its centre); a doctor's documents shared in the
    chat for the patient. The doctor who concluded the consultation keeps reading its
    documents for ``doctor_access_days`` after the conclusion (to amend it). A system
    client reads the documents attached to its centre's consultations, in every state
    (the regional system keeps the record); managers read none."""
    attached = await readable_attachments(
        session, actor=actor, now=now, doctor_access_days=doctor_access_days
    )
    row = (
        await session.exec(attached.where(col(ConsultationDocument.document_id) == document_id))
    ).first()
    return row is not None


async def readable_attachments(
    session: AsyncSession, *, actor: User, now: datetime, doctor_access_days: int
) -> SelectOfScalar[uuid.UUID]:
    """The ids of the documents ``may_read_attached_document`` lets the actor read, as a
    query (for lists)."""
    who = await actor_of_user(session, actor)
    readers = sa.and_(col(Consultation.state).in_(list(OPEN)), taking_part(who, staff=False))
    if who.role is Role.SYSTEM:
        readers = sa.or_(readers, col(Consultation.centre_id) == who.centre_id)
    if who.doctor_id is not None:
        readers = sa.or_(
            readers,
            sa.and_(
                col(Consultation.state) == State.CONCLUDED,
                col(Consultation.doctor_id) == who.doctor_id,
                col(Consultation.concluded_at) > now - timedelta(days=doctor_access_days),
            ),
        )
    return (
        select(ConsultationDocument.document_id)
        .join(Consultation, col(ConsultationDocument.consultation_id) == col(Consultation.id))
        .where(readers)
    )
