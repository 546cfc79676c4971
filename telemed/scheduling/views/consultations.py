"""HTTP routes of consultations: the three routes in, the list, one consultation, its
moves, its documents and its calendar entry."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import (
    BaseModel,
    Field,
    RootModel,
    StringConstraints,
    field_validator,
)

from telemed.accounts.models import Role
from telemed.api import (
    NONBLANK,
    Call,
    Instant,
    ListOf,
    RawResponse,
    RequestModel,
    Routes,
)
from telemed.scheduling import consultations
from telemed.scheduling.lifecycle import allowed_moves
from telemed.scheduling.models import (
    Channel,
    Consultation,
    DutyTopic,
    Route,
    State,
)
from telemed.scheduling.parties import Part, in_chat, readable

routes = Routes(tag="consultations")

DOCTORS = (Role.DOCTOR,)
MANAGERS = (Role.MANAGER,)

Text = Annotated[str, StringConstraints(max_length=4000)]
Reason = Annotated[str, StringConstraints(min_length=3, max_length=1000, pattern=NONBLANK)]


def _tidy_icd10(value: object) -> object:
    # Written as doctors type it ("i25.1 "); checked once tidied.
    if isinstance(value, str) and value.isascii():
        return value.strip(" \t\r\n").upper()
    return value


class InitiativeIn(RequestModel):
    route: Literal["initiative"]
    centre_id: uuid.UUID
    full_name: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NONBLANK)] | None
    ) = None
    age: int | None = Field(default=None, ge=0, le=130)
    diagnosis: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NONBLANK)]
    complaints: Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=NONBLANK)]
    preferred_times: Annotated[str, StringConstraints(max_length=500)] = Field(
        default="", description="When the patient would like the consultation, in their words"
    )
    document_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)


class DutyIn(RequestModel):
    route: Literal["duty"]
    slot_id: uuid.UUID
    channel: Channel = Channel.VIDEO
    topic: DutyTopic
    question: Text = ""
    document_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)


class ConsultationIn(RootModel[Annotated[InitiativeIn | DutyIn, Field(discriminator="route")]]):
    """Route 1 (``initiative``: a request to a centre) or route 2 (``duty``: book a slot)."""


class ConsultationQuery(RequestModel):
    state: list[State] | None = Field(default=None, description="Comma-separated states")
    route: Route | None = None
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None

    @field_validator("state", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return value.split(",") if isinstance(value, str) else value


class AttachIn(RequestModel):
    document_ids: list[uuid.UUID] = Field(min_length=1, max_length=50)


class ScheduleIn(RequestModel):
    starts_at: Instant
    duration_min: int = Field(default=30, ge=5, le=240)


class ReasonIn(RequestModel):
    reason: Reason


class PersonRef(BaseModel):
    id: uuid.UUID
    full_name: str


class CentreRef(BaseModel):
    id: uuid.UUID
    name: str


class DoctorRef(BaseModel):
    id: uuid.UUID
    full_name: str
    specialty: str


class ConsultationPublic(BaseModel):
    id: uuid.UUID
    route: Route
    state: State
    patient: PersonRef
    centre: CentreRef
    doctor: DoctorRef | None
    full_name: str
    age: int | None
    diagnosis: str
    icd10: str | None
    complaints: str
    preferred_times: str
    topic: DutyTopic | None
    question: str
    channel: Channel
    starts_at: datetime | None
    ends_at: datetime | None
    duration_min: int | None
    submitted_at: datetime
    due_at: datetime | None
    notified_at: datetime | None
    reason: str
    cancelled_by_id: uuid.UUID | None
    started_at: datetime | None
    ended_at: datetime | None
    concluded_at: datetime | None
    referring_organisation: str
    referring_doctor: str
    document_ids: list[uuid.UUID]
    allowed_moves: list[str] = Field(description="What the caller may do now")
    readable: list[Part] = Field(
        description="The parts with endpoints of their own that the caller may read"
        " (chat, recordings, call quality): a client asks for no other"
    )
    version: int
    updated_at: datetime


async def present(call: Call, items: list[Consultation]) -> list[ConsultationPublic]:
    """Consultations as the caller sees them: with the names of their patients, centres
    and doctors, their documents and the caller's allowed moves, read in a fixed number
    of queries however many there are (``consultations.around``)."""
    session = call.session
    doctor_self = await consultations.doctor_of(session, call.user)
    around = await consultations.around(session, items)
    result = []
    for consultation in items:
        doctor = around.doctors.get(consultation.doctor_id) if consultation.doctor_id else None
        party = consultations.party_in(call.user, doctor_self, consultation)
        result.append(
            ConsultationPublic(
                **consultation.model_dump(exclude=PRIVATE_FIELDS),
                patient=PersonRef(
                    id=consultation.patient_id,
                    full_name=around.names.get(consultation.patient_id, ""),
                ),
                centre=CentreRef(
                    id=consultation.centre_id,
                    name=around.centres.get(consultation.centre_id, ""),
                ),
                doctor=DoctorRef(
                    id=doctor.id,
                    full_name=around.names.get(doctor.user_id, ""),
                    specialty=doctor.specialty,
                )
                if doctor is not None
                else None,
                document_ids=around.documents.get(consultation.id, []),
                allowed_moves=[m.value for m in allowed_moves(consultation.state, party)]
                if party
                else [],
                readable=readable(
                    party,
                    chat_member=in_chat(
                        user_id=call.user.id,
                        doctor_profile_id=doctor_self.id if doctor_self else None,
                        patient_id=consultation.patient_id,
                        doctor_id=consultation.doctor_id,
                    ),
                    patient_reads_recordings=call.settings.recording_patient_access,
                )
                if party
                else [],
            )
        )
    return result


PRIVATE_FIELDS = {
    "patient_id",
    "centre_id",
    "doctor_id",
    "slot_id",
    "active_slot_id",
    "referral_import_id",
    "referral_key",
    "reminder_24h_at",
    "reminder_1h_at",
    "overdue_alerted_at",
    "patient_joined_at",
}
"""What of a consultation row the API does not show."""


async def _one(call: Call, consultation: Consultation) -> ConsultationPublic:
    return (await present(call, [consultation]))[0]


@routes.post("/consultations", status=201, errors=(404, 409))
async def create_consultation(call: Call, body: ConsultationIn) -> ConsultationPublic:
    """POST /consultations: a patient requests a consultation (route 1) or books a duty
    doctor's slot (route 2).

    Route 1: ``{route: "initiative", centre_id, full_name?, age?, diagnosis, complaints,
    preferred_times?, document_ids}``. Route 2: ``{route: "duty", slot_id, channel: "video", topic,
    question?}``; 409 ``slot_taken`` if someone was faster.
    """
    request = body.root
    if isinstance(request, InitiativeIn):
        consultation = await consultations.check_create_request(
            call.session,
            actor=call.user,
            now=call.now,
            settings=call.settings,
            centre_id=request.centre_id,
            full_name=request.full_name,
            age=request.age,
            diagnosis=request.diagnosis,
            complaints=request.complaints,
            preferred_times=request.preferred_times.strip(),
            document_ids=request.document_ids,
        )
    else:
        consultation = await consultations.check_book_duty(
            call.session,
            actor=call.user,
            now=call.now,
            settings=call.settings,
            slot_id=request.slot_id,
            topic=request.topic,
            channel=request.channel,
            question=request.question,
            document_ids=request.document_ids,
        )
    return await _one(call, consultation)


@routes.get("/consultations")
async def list_consultations(call: Call, query: ConsultationQuery) -> ListOf[ConsultationPublic]:
    """GET /consultations: the patient's own; a doctor's own and their centre's open
    requests; everything for a manager. Filters: ``state`` (repeatable or comma-separated),
    ``route``, ``from``/``to`` (on the start, else on the submission)."""
    found = await consultations.list_consultations(
        call.session,
        actor=call.user,
        states=query.state or (),
        route=query.route,
        start=query.from_,
        end=query.to,
    )
    return ListOf[ConsultationPublic](items=await present(call, found))


@routes.get("/consultations/{id}", writes=True)
async def get_consultation(call: Call) -> ConsultationPublic:
    """GET /consultations/{id}: one consultation the caller takes part in (reads by a
    manager are audited)."""
    seen = await consultations.get_consultation(
        call.session,
        actor=call.user,
        consultation_id=call.path_id(),
        audit_reads=True,
        now=call.now,
        address=call.address,
    )
    return await _one(call, seen.consultation)


@routes.post("/consultations/{id}/documents", errors=(409,))
async def attach_documents(call: Call, body: AttachIn) -> ConsultationPublic:
    """POST /consultations/{id}/documents: the patient attaches their documents to an open
    consultation; its doctor may then read them (each read audited)."""
    consultation = await consultations.check_attach_documents(
        call.session,
        actor=call.user,
        now=call.now,
        consultation_id=call.path_id(),
        document_ids=body.document_ids,
    )
    return await _one(call, consultation)


@routes.post("/consultations/{id}/schedule", roles=DOCTORS, errors=(409,))
async def schedule_consultation(call: Call, body: ScheduleIn) -> ConsultationPublic:
    """POST /consultations/{id}/schedule: a doctor assigns (or moves) the date and time.

    409 ``overlap`` if the doctor is busy then; 409 ``invalid_state`` from a state that
    cannot be scheduled."""
    consultation = await consultations.check_schedule(
        call.session,
        actor=call.user,
        now=call.now,
        settings=call.settings,
        consultation_id=call.path_id(),
        starts_at=body.starts_at,
        duration_min=body.duration_min,
    )
    return await _one(call, consultation)


@routes.post("/consultations/{id}/decline", roles=DOCTORS, errors=(409,))
async def decline_consultation(call: Call, body: ReasonIn) -> ConsultationPublic:
    """POST /consultations/{id}/decline: the centre refuses a request, with a reason."""
    consultation = await consultations.check_decline(
        call.session,
        brand=call.settings.brand_name,
        actor=call.user,
        now=call.now,
        consultation_id=call.path_id(),
        reason=body.reason,
    )
    return await _one(call, consultation)


@routes.post("/consultations/{id}/cancel", errors=(409,))
async def cancel_consultation(call: Call, body: ReasonIn) -> ConsultationPublic:
    """POST /consultations/{id}/cancel: the patient, the doctor or a manager cancels."""
    consultation = await consultations.check_cancel(
        call.session,
        actor=call.user,
        now=call.now,
        settings=call.settings,
        consultation_id=call.path_id(),
        reason=body.reason,
    )
    return await _one(call, consultation)


@routes.post("/consultations/{id}/start", roles=DOCTORS, errors=(409,))
async def start_consultation(call: Call) -> ConsultationPublic:
    """POST /consultations/{id}/start: the consultation's doctor opens the session."""
    consultation = await consultations.check_start(
        call.session,
        actor=call.user,
        now=call.now,
        settings=call.settings,
        consultation_id=call.path_id(),
    )
    return await _one(call, consultation)


@routes.post("/consultations/{id}/end", roles=DOCTORS, errors=(409,))
async def end_consultation(call: Call) -> ConsultationPublic:
    """POST /consultations/{id}/end: the consultation's doctor ends the session."""
    consultation = await consultations.check_end(
        call.session, actor=call.user, now=call.now, consultation_id=call.path_id()
    )
    return await _one(call, consultation)


@routes.get(
    "/consultations/{id}/calendar.ics",
    raw_response=RawResponse(content_types=("text/calendar",), description="iCalendar event"),
    errors=(409,),
)
async def consultation_calendar(call: Call) -> web.StreamResponse:
    """GET /consultations/{id}/calendar.ics: the consultation for a calendar app."""
    seen = await consultations.get_consultation(
        call.session, actor=call.user, consultation_id=call.path_id()
    )
    data = await consultations.calendar_for(
        call.session, settings=call.settings, consultation=seen.consultation, now=call.now
    )
    return web.Response(
        body=data,
        headers={
            "Content-Type": "text/calendar; charset=utf-8",
            "Content-Disposition": 'attachment; filename="consultation.ics"',
        },
    )
