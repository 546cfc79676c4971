"""What the FHIR interface reads, and who may read it: the same rules as the API.

Reads by id go through the services the API uses (``get_consultation``,
``get_document``, ``get_conclusions``, ``get_doctor``, ``get_centre``); searches use
the same rules in their SQL form (``parties.taking_part``, ``documents.service.readable``),
so a search never shows what a read would refuse.

Auditing: every resource with a patient's data that is shown to someone other than
that patient is written to the audit trail, one row per resource, in the read's own
transaction, with ``details.via = "fhir"`` (reads by id of documents and conclusions are
audited by their services, as in the API).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from telemed import audit
from telemed.accounts.models import Role, User
from telemed.documents import service as documents
from telemed.documents.models import Document
from telemed.errors import NotFound
from telemed.fhir.resources import APPOINTMENT_STATUS, Names, states_with_status
from telemed.fhir.search import Query, words_start_with
from telemed.scheduling import conclusions
from telemed.scheduling import service as directory
from telemed.scheduling.consultations import (
    actor_of_user,
    around,
    centre_scope,
    get_consultation,
)
from telemed.scheduling.models import Centre, Conclusion, Consultation, Doctor, Route, State
from telemed.scheduling.parties import taking_part

T = TypeVar("T")


@dataclass(frozen=True)
class Reader:
    """Who reads, when, and from where (for the audit trail)."""

    user: User
    now: datetime
    address: str | None
    doctor_access_days: int
    """How long the doctor of record reads a concluded consultation's documents."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a search, and how many match in all."""

    items: list[T]
    total: int


def _audit(
    session: AsyncSession,
    reader: Reader,
    *,
    action: str,
    object_type: str,
    object_id: uuid.UUID,
    subject_id: uuid.UUID,
    interaction: str,
) -> None:
    if subject_id == reader.user.id:
        return  # one's own data
    audit.record(
        session,
        now=reader.now,
        actor_id=reader.user.id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        subject_id=subject_id,
        address=reader.address,
        details={"via": "fhir", "interaction": interaction},
    )


async def _page(
    session: AsyncSession, statement: SelectOfScalar[T], query: Query, *order: Any
) -> Page[T]:
    total = (
        await session.exec(select(sa.func.count()).select_from(statement.order_by(None).subquery()))
    ).one()
    items: list[T] = []
    if query.count:
        items = list(
            (
                await session.exec(
                    statement.order_by(*order).limit(query.count).offset(query.offset)
                )
            ).all()
        )
    return Page(items, int(total))


def _in_memory(items: Sequence[T], query: Query) -> Page[T]:
    return Page(list(items[query.offset : query.offset + query.count]), len(items))


# --- Patients ---------------------------------------------------------------------


async def _visible_patients(session: AsyncSession, actor: User) -> sa.ColumnElement[bool]:
    """A patient is visible to themselves, and to whoever takes part in one of their
    consultations (``parties.taking_part``: its doctor, the doctors of its centre while
    it waits for one, a manager or admin of the service, and a manager or system client
    of its centre: so those see the patients with a consultation or referral there)."""
    taking = taking_part(await actor_of_user(session, actor))
    return sa.and_(
        col(User.role) == Role.PATIENT,
        sa.or_(
            col(User.id) == actor.id,
            col(User.id).in_(select(Consultation.patient_id).where(taking)),
        ),
    )


async def get_patient(session: AsyncSession, *, reader: Reader, patient_id: uuid.UUID) -> User:
    """A patient the reader may see (``_visible_patients``); ``NotFound`` otherwise."""
    statement = select(User).where(
        User.id == patient_id, await _visible_patients(session, reader.user)
    )
    user = (await session.exec(statement)).first()
    if user is None:
        raise NotFound("Patient not found")
    _audit(
        session,
        reader,
        action="patient.viewed",
        object_type="user",
        object_id=user.id,
        subject_id=user.id,
        interaction="read",
    )
    return user


async def search_patients(session: AsyncSession, *, reader: Reader, query: Query) -> Page[User]:
    statement = select(User).where(await _visible_patients(session, reader.user))
    if query.ids is not None:
        statement = statement.where(col(User.id).in_(query.ids))
    if query.phone is not None:
        statement = statement.where(User.phone == query.phone)
    page = await _page(session, statement, query, col(User.full_name), col(User.id))
    for user in page.items:
        _audit(
            session,
            reader,
            action="patient.viewed",
            object_type="user",
            object_id=user.id,
            subject_id=user.id,
            interaction="search",
        )
    return page


# --- The directory ------------------------------------------------------------------
#
# Open to every signed-in user, as the API's; but an account bound to a centre (a
# manager of the centre, a system client) sees its own centre and its doctors only: its
# view of the server is that centre, and every reference in it resolves there.


async def get_practitioner(
    session: AsyncSession, *, reader: Reader, doctor_id: uuid.UUID
) -> tuple[Doctor, User, Centre]:
    """A doctor of the directory (of the reader's centre, if bound to one)."""
    found = await directory.get_doctor(session, doctor_id)
    own = centre_scope(reader.user)
    if own is not None and found[2].id != own:
        raise NotFound("Doctor not found")
    return found


async def search_practitioners(
    session: AsyncSession, *, reader: Reader, query: Query
) -> Page[tuple[Doctor, User, Centre]]:
    statement = (
        select(Doctor, User, Centre)
        .join(User, col(User.id) == col(Doctor.user_id))
        .join(Centre, col(Centre.id) == col(Doctor.centre_id))
        .where(col(Doctor.archived_at).is_(None))
        .order_by(col(User.full_name), col(Doctor.id))
    )
    own = centre_scope(reader.user)
    if own is not None:
        statement = statement.where(col(Doctor.centre_id) == own)
    rows = (await session.exec(statement)).all()
    found = [
        (doctor, user, centre)
        for doctor, user, centre in rows
        if (query.ids is None or doctor.id in query.ids)
        and (query.organization is None or centre.id in query.organization)
        and (query.name is None or words_start_with(user.full_name, query.name))
    ]
    return _in_memory(found, query)


async def get_organization(
    session: AsyncSession, *, reader: Reader, centre_id: uuid.UUID
) -> Centre:
    """A medical centre (the reader's own only, if bound to one)."""
    own = centre_scope(reader.user)
    if own is not None and centre_id != own:
        raise NotFound("Medical centre not found")
    return await directory.get_centre(session, centre_id)


async def search_organizations(
    session: AsyncSession, *, reader: Reader, query: Query
) -> Page[Centre]:
    own = centre_scope(reader.user)
    centres = await directory.list_centres(session)
    found = [
        centre
        for centre in centres
        if (own is None or centre.id == own)
        and (query.ids is None or centre.id in query.ids)
        and (query.name is None or words_start_with(centre.name, query.name))
    ]
    return _in_memory(found, query)


# --- Consultations: Appointment and ServiceRequest ---------------------------------


def names_of(found: Any) -> Names:
    """``Names`` from what ``consultations.around`` found."""
    return Names(
        people=found.names,
        centres=found.centres,
        doctor_users={doctor.id: doctor.user_id for doctor in found.doctors.values()},
    )


async def get_consultation_as(
    session: AsyncSession, *, reader: Reader, consultation_id: uuid.UUID, referral: bool
) -> tuple[Consultation, Names]:
    """A consultation the reader takes part in (``get_consultation``); with ``referral``
    only a referral (route 3). ``NotFound`` otherwise."""
    seen = await get_consultation(session, actor=reader.user, consultation_id=consultation_id)
    consultation = seen.consultation
    if referral and consultation.route is not Route.REFERRAL:
        raise NotFound("Referral not found")
    _audit(
        session,
        reader,
        action="consultation.viewed",
        object_type="consultation",
        object_id=consultation.id,
        subject_id=consultation.patient_id,
        interaction="read",
    )
    return consultation, names_of(await around(session, [consultation]))


async def search_consultations(
    session: AsyncSession, *, reader: Reader, query: Query, referral: bool
) -> tuple[Page[Consultation], Names]:
    """Consultations the reader takes part in (``list_consultations``' rule), newest
    first by start (or, without one, by submission); with ``referral``, referrals only."""
    statement = select(Consultation).where(taking_part(await actor_of_user(session, reader.user)))
    if referral:
        statement = statement.where(Consultation.route == Route.REFERRAL)
    if query.ids is not None:
        statement = statement.where(col(Consultation.id).in_(query.ids))
    if query.patient is not None:
        statement = statement.where(col(Consultation.patient_id).in_(query.patient))
    if query.statuses is not None:
        states: list[State] = []
        for status in query.statuses:
            states.extend(states_with_status(status, APPOINTMENT_STATUS))
        statement = statement.where(col(Consultation.state).in_(states))
    for bound in query.dates:
        statement = statement.where(bound.condition(col(Consultation.starts_at)))
    when = sa.func.coalesce(col(Consultation.starts_at), col(Consultation.submitted_at))
    page = await _page(session, statement, query, when.desc(), col(Consultation.id))
    for consultation in page.items:
        _audit(
            session,
            reader,
            action="consultation.viewed",
            object_type="consultation",
            object_id=consultation.id,
            subject_id=consultation.patient_id,
            interaction="search",
        )
    return page, names_of(await around(session, page.items))


# --- Documents ----------------------------------------------------------------------


async def owner_roles(
    session: AsyncSession, documents_: Sequence[Document]
) -> dict[uuid.UUID, Role]:
    owners = {document.owner_id for document in documents_}
    if not owners:
        return {}
    rows = await session.exec(select(User.id, User.role).where(col(User.id).in_(owners)))
    return {user_id: Role(role) for user_id, role in rows.all()}


async def get_document(
    session: AsyncSession, *, reader: Reader, document_id: uuid.UUID
) -> Document:
    """A document the reader may read (``documents.service.get_document``, which audits)."""
    return await documents.get_document(
        session,
        actor=reader.user,
        document_id=document_id,
        now=reader.now,
        doctor_access_days=reader.doctor_access_days,
        address=reader.address,
    )


async def search_documents(
    session: AsyncSession, *, reader: Reader, query: Query
) -> Page[Document]:
    """Documents the reader may read (``documents.service.readable``), newest first."""
    statement = select(Document).where(
        await documents.readable(
            session,
            actor=reader.user,
            now=reader.now,
            doctor_access_days=reader.doctor_access_days,
        )
    )
    if query.ids is not None:
        statement = statement.where(col(Document.id).in_(query.ids))
    if query.patient is not None:
        statement = statement.where(col(Document.owner_id).in_(query.patient))
    page = await _page(session, statement, query, col(Document.created_at).desc(), col(Document.id))
    for document in page.items:
        _audit(
            session,
            reader,
            action="document.viewed",
            object_type="document",
            object_id=document.id,
            subject_id=document.owner_id,
            interaction="search",
        )
    return page


# --- Conclusions ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConclusionVersion:
    """One version of a conclusion, with its consultation and its place among the
    versions."""

    conclusion: Conclusion
    consultation: Consultation
    latest_version: int
    previous_id: uuid.UUID | None


async def _versions(
    session: AsyncSession, consultation_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[int, uuid.UUID]]:
    """Each consultation's conclusion ids by version."""
    found: dict[uuid.UUID, dict[int, uuid.UUID]] = {}
    if not consultation_ids:
        return found
    rows = await session.exec(
        select(Conclusion.consultation_id, Conclusion.version, Conclusion.id).where(
            col(Conclusion.consultation_id).in_(list(consultation_ids))
        )
    )
    for consultation_id, version, conclusion_id in rows.all():
        found.setdefault(consultation_id, {})[version] = conclusion_id
    return found


def _placed(
    conclusion: Conclusion, consultation: Consultation, versions: dict[int, uuid.UUID]
) -> ConclusionVersion:
    return ConclusionVersion(
        conclusion=conclusion,
        consultation=consultation,
        latest_version=max(versions, default=conclusion.version),
        previous_id=versions.get(conclusion.version - 1),
    )


async def get_conclusion(
    session: AsyncSession, *, reader: Reader, conclusion_id: uuid.UUID
) -> tuple[ConclusionVersion, Names]:
    """One version of a conclusion, for those who may read the consultation's
    conclusion (``conclusions.get_conclusions``, which audits)."""
    row = await session.get(Conclusion, conclusion_id)
    if row is None:
        raise NotFound("Conclusion not found")
    consultation, versions = await conclusions.get_conclusions(
        session,
        actor=reader.user,
        consultation_id=row.consultation_id,
        now=reader.now,
        address=reader.address,
    )
    by_version = {version.version: version.id for version in versions}
    return _placed(row, consultation, by_version), names_of(await around(session, [consultation]))


async def search_conclusions(
    session: AsyncSession, *, reader: Reader, query: Query
) -> tuple[Page[ConclusionVersion], Names]:
    """Conclusions of the consultations the reader takes part in (a conclusion exists
    only once its doctor is assigned: ``get_conclusions``' readers), newest first."""
    statement = (
        select(Conclusion, Consultation)
        .join(Consultation, col(Consultation.id) == col(Conclusion.consultation_id))
        .where(taking_part(await actor_of_user(session, reader.user)))
    )
    if query.ids is not None:
        statement = statement.where(col(Conclusion.id).in_(query.ids))
    if query.patient is not None:
        statement = statement.where(col(Consultation.patient_id).in_(query.patient))
    page: Page[tuple[Conclusion, Consultation]] = await _page(
        session,
        statement,  # type: ignore[arg-type]  # a select of two entities pages alike
        query,
        col(Conclusion.issued_at).desc(),
        col(Conclusion.id),
    )
    rows = page.items
    versions = await _versions(session, [consultation.id for _, consultation in rows])
    placed = [
        _placed(conclusion, consultation, versions.get(consultation.id, {}))
        for conclusion, consultation in rows
    ]
    for item in placed:
        _audit(
            session,
            reader,
            action="conclusion.read",
            object_type="conclusion",
            object_id=item.conclusion.id,
            subject_id=item.consultation.patient_id,
            interaction="search",
        )
    names = names_of(await around(session, [consultation for _, consultation in rows]))
    return Page(placed, page.total), names
