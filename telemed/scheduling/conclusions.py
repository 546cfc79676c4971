"""The doctor's conclusion: issued once after the consultation, never changed; an
amendment is a new version with a reason, and every version stays readable."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit
from telemed.accounts.models import User
from telemed.errors import InvalidState, InvalidValue, NotFound, Problem
from telemed.notify.service import do_notify
from telemed.notify.texts import NotificationKind
from telemed.scheduling.conclusion_pdf import ConclusionSheet, render_conclusion_pdf
from telemed.scheduling.consultations import do_move, doctor_of, get_consultation
from telemed.scheduling.lifecycle import Move, Party, check_move
from telemed.scheduling.models import Centre, Conclusion, Consultation, Doctor, State

READERS = frozenset({Party.PATIENT, Party.DOCTOR, Party.MANAGER, Party.REGISTRY})


async def check_issue_conclusion(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    consultation_id: uuid.UUID,
    diagnosis: str,
    icd10: str | None,
    findings: str,
    recommendations: str,
    amendment_reason: str | None,
    brand: str,
) -> Conclusion:
    """The consultation's doctor issues the conclusion of a completed consultation
    (version 1, the consultation becomes ``concluded``), or amends an issued one: a new
    version, which needs ``amendment_reason``. The patient is told either way."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    consultation = seen.consultation
    move = Move.AMEND if consultation.state is State.CONCLUDED else Move.CONCLUDE
    check_move(consultation.state, move, seen.party)  # before the reason is checked
    if move is Move.AMEND and not amendment_reason:
        raise InvalidState(
            "The conclusion is already issued: give a reason to issue an amended version",
            details={"field": "amendment_reason"},
        )
    if move is Move.CONCLUDE and amendment_reason:
        raise InvalidValue(
            "A first conclusion has no amendment reason",
            problem=Problem.FIRST_CONCLUSION_AMENDED,
            field="amendment_reason",
        )
    doctor = await doctor_of(session, actor)
    assert doctor is not None  # the party is DOCTOR
    latest = await _latest(session, consultation.id)
    conclusion = Conclusion(
        consultation_id=consultation.id,
        version=(latest.version + 1) if latest else 1,
        doctor_id=doctor.id,
        diagnosis=diagnosis,
        icd10=icd10,
        findings=findings,
        recommendations=recommendations,
        amendment_reason=amendment_reason,
        issued_at=now,
    )
    session.add(conclusion)
    # (consultation_id, version) is unique: two doctors' clicks cannot both be version N.
    await session.flush()
    await do_move(
        session,
        consultation,
        move=move,
        party=seen.party,
        actor_id=actor.id,
        now=now,
        changes={"concluded_at": consultation.concluded_at or now},
        details={"version": conclusion.version},
    )
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="conclusion.issued" if move is Move.CONCLUDE else "conclusion.amended",
        object_type="conclusion",
        object_id=conclusion.id,
        subject_id=consultation.patient_id,
        details={"version": conclusion.version},
    )
    patient = await session.get(User, consultation.patient_id)
    assert patient is not None
    await do_notify(
        session,
        brand=brand,
        now=now,
        user=patient,
        kind=NotificationKind.CONCLUSION_ISSUED,
        params={"doctor": actor.full_name, "version": conclusion.version},
        consultation_id=consultation.id,
        sms=True,
        email=True,
        dedupe_key=f"conclusion:{consultation.id}:{conclusion.version}",
    )
    return conclusion


async def _latest(session: AsyncSession, consultation_id: uuid.UUID) -> Conclusion | None:
    return (
        await session.exec(
            select(Conclusion)
            .where(Conclusion.consultation_id == consultation_id)
            .order_by(col(Conclusion.version).desc())
        )
    ).first()


async def get_conclusions(
    session: AsyncSession,
    *,
    actor: User,
    consultation_id: uuid.UUID,
    now: datetime,
    address: str | None = None,
) -> tuple[Consultation, list[Conclusion]]:
    """Every version, newest first, for the patient, the consultation's doctor, the
    manager and a system client of its centre; reads by anyone but the patient are
    audited. ``NotFound`` before issue."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id)
    if seen.party not in READERS or (
        seen.party is Party.DOCTOR and seen.consultation.doctor_id is None
    ):
        raise NotFound("Conclusion not found")
    versions = list(
        (
            await session.exec(
                select(Conclusion)
                .where(Conclusion.consultation_id == consultation_id)
                .order_by(col(Conclusion.version).desc())
            )
        ).all()
    )
    if not versions:
        raise NotFound("The conclusion has not been issued yet")
    if seen.party is not Party.PATIENT:
        audit.record(
            session,
            now=now,
            actor_id=actor.id,
            action="conclusion.read",
            object_type="conclusion",
            object_id=versions[0].id,
            subject_id=seen.consultation.patient_id,
            address=address,
        )
    return seen.consultation, versions


@dataclass(frozen=True)
class RenderedConclusion:
    pdf: bytes
    file_name: str


async def render_pdf(
    session: AsyncSession,
    *,
    consultation: Consultation,
    conclusion: Conclusion,
    reader: User,
    service_name: str,
) -> RenderedConclusion:
    """The PDF of one version, in the reader's language and time zone."""
    patient = await session.get(User, consultation.patient_id)
    doctor = await session.get(Doctor, conclusion.doctor_id)
    doctor_user = await session.get(User, doctor.user_id) if doctor else None
    centre = await session.get(Centre, consultation.centre_id)
    assert patient is not None
    assert doctor is not None
    assert doctor_user is not None
    older = await session.exec(
        select(Conclusion.id).where(
            Conclusion.consultation_id == consultation.id,
            Conclusion.version < conclusion.version,
        )
    )
    sheet = ConclusionSheet(
        locale=reader.locale.value,
        time_zone=reader.time_zone,
        service_name=service_name,
        centre_name=centre.name if centre else "",
        doctor_name=doctor_user.full_name,
        doctor_specialty=doctor.specialty,
        patient_name=consultation.full_name or patient.full_name,
        patient_birth_date=patient.birth_date,
        consultation_started_at=consultation.started_at or consultation.starts_at,
        route=consultation.route.value,
        diagnosis=conclusion.diagnosis,
        icd10=conclusion.icd10,
        findings=conclusion.findings,
        recommendations=conclusion.recommendations,
        version=conclusion.version,
        issued_at=conclusion.issued_at,
        amendment_reason=conclusion.amendment_reason,
        consultation_id=str(consultation.id),
        previous_versions=len(older.all()),
    )
    # Laying out a long text takes a while: not on the event loop.
    pdf = await asyncio.to_thread(render_conclusion_pdf, sheet)
    name = f"conclusion-{consultation.id.hex[:8]}-v{conclusion.version}.pdf"
    return RenderedConclusion(pdf=pdf, file_name=name)
