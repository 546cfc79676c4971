"""Who takes part in a consultation, and as what: the one rule, in Python and in SQL.

Pure: no I/O. ``party`` decides for one consultation; ``taking_part`` is the same rule as
a condition on the ``consultation`` table, for lists (a test checks that the two agree);
``in_chat`` narrows it to the chat's two participants.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import col

from telemed.accounts.models import Role
from telemed.scheduling.lifecycle import Party
from telemed.scheduling.models import Consultation, State

STAFF = frozenset({Role.MANAGER, Role.ADMIN})


@dataclass(frozen=True)
class Actor:
    """A user as the rule sees them: a doctor's profile and centre, if a doctor; the
    centre a manager or a system client is bound to (``User.centre_id``), if any."""

    user_id: uuid.UUID
    role: Role
    doctor_id: uuid.UUID | None = None
    centre_id: uuid.UUID | None = None

    @property
    def service_wide(self) -> bool:
        """A manager or admin of the whole service (not bound to one centre)."""
        return self.role in STAFF and self.centre_id is None

    def scope(self) -> uuid.UUID | None:
        """The one centre whose consultations this manager or system client oversees:
        None for the rest (and for a manager of the whole service)."""
        if self.role is Role.SYSTEM or self.role in STAFF:
            return self.centre_id
        return None


def party(
    actor: Actor,
    *,
    patient_id: uuid.UUID,
    doctor_id: uuid.UUID | None,
    centre_id: uuid.UUID,
    state: State,
) -> Party | None:
    """The actor's part in a consultation, or None (then it is hidden from them).

    Its patient; a manager or admin (every consultation, or those of the centre the
    manager is bound to); a system client (those of its centre, to read); its doctor;
    and, while a request waits for a doctor, every doctor of its centre (to review and
    schedule it).
    """
    if actor.user_id == patient_id:
        return Party.PATIENT
    if actor.role is Role.SYSTEM:
        return Party.REGISTRY if centre_id == actor.centre_id else None
    if actor.role in STAFF:
        return Party.MANAGER if actor.service_wide or centre_id == actor.centre_id else None
    if actor.doctor_id is not None and (
        doctor_id == actor.doctor_id
        or (doctor_id is None and state is State.REQUESTED and centre_id == actor.centre_id)
    ):
        return Party.DOCTOR
    return None


def taking_part(actor: Actor, *, staff: bool = True) -> sa.ColumnElement[bool]:
    """``party(...) is not None`` as a condition on consultations; without ``staff``,
    the part of those who oversee (a manager, an admin, a system client) does not count:
    the rule of documents (``consultations.readable_attachments``) has its own for them."""
    if staff and actor.service_wide:
        return sa.true()
    clauses: list[sa.ColumnElement[bool]] = [col(Consultation.patient_id) == actor.user_id]
    centre = actor.scope()
    if centre is not None and staff:
        clauses.append(col(Consultation.centre_id) == centre)
    if actor.doctor_id is not None:
        clauses.append(col(Consultation.doctor_id) == actor.doctor_id)
        clauses.append(
            sa.and_(
                col(Consultation.doctor_id).is_(None),
                col(Consultation.state) == State.REQUESTED,
                col(Consultation.centre_id) == actor.centre_id,
            )
        )
    return sa.or_(*clauses)


def in_chat(
    *,
    user_id: uuid.UUID,
    doctor_profile_id: uuid.UUID | None,
    patient_id: uuid.UUID,
    doctor_id: uuid.UUID | None,
) -> bool:
    """Whether a user is one of the chat's two participants: the consultation's patient,
    or its assigned doctor (a doctor of the centre reviewing an unassigned request is
    not: the chat opens once a doctor takes it)."""
    return user_id == patient_id or (doctor_id is not None and doctor_id == doctor_profile_id)


class Part(StrEnum):
    """A part of a consultation read through endpoints of its own, which not every party
    may read: a client asks only for the parts it is offered (``readable``)."""

    CHAT = "chat"
    RECORDINGS = "recordings"
    CALL_QUALITY = "call_quality"


def readable(party: Party, *, chat_member: bool, patient_reads_recordings: bool) -> list[Part]:
    """The parts of a consultation its party may read: the chat for its two participants
    (``in_chat``); recordings and call quality for the doctor and the manager, recordings
    also for the patient where the service allows it (``TELEMED_RECORDING_PATIENT_ACCESS``).
    A system client reads none: the FHIR interface has no such resources."""
    parts = [Part.CHAT] if chat_member else []
    if party is Party.REGISTRY:
        return parts
    if party is not Party.PATIENT or patient_reads_recordings:
        parts.append(Part.RECORDINGS)
    if party is not Party.PATIENT:
        parts.append(Part.CALL_QUALITY)
    return parts
