"""HTTP routes of consultations, duty slots, conclusions, referral imports and deadlines."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from telemed import keys
from telemed.accounts.models import Role, User
from telemed.api import (
    NONBLANK,
    Call,
    Instant,
    ListOf,
    QueryFlag,
    RawBody,
    RawResponse,
    RequestModel,
    Routes,
)
from telemed.documents.views import content_disposition
from telemed.errors import InvalidInput, NotFound, TooLarge
from telemed.forms import read_form
from telemed.scheduling import conclusions, consultations, referrals, service, sla
from telemed.scheduling.lifecycle import allowed_moves
from telemed.scheduling.models import (
    Centre,
    Channel,
    Consultation,
    Doctor,
    DutyTopic,
    ReferralImport,
    Route,
    SlotPublic,
    State,
)
from telemed.scheduling.models import Conclusion as ConclusionRow

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


ICD10 = Annotated[
    str,
    BeforeValidator(_tidy_icd10),
    StringConstraints(pattern=r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$"),
    WithJsonSchema(
        {"type": "string", "pattern": r"^[ \t\r\n]*[A-Za-z][0-9]{2}(\.[0-9]{1,2})?[ \t\r\n]*$"},
        mode="validation",
    ),
]
MAX_TABLE_BYTES = 5 * 1024 * 1024


class InitiativeIn(RequestModel):
    route: Literal["initiative"]
    centre_id: uuid.UUID
    full_name: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NONBLANK)] | None
    ) = None
    age: int | None = Field(default=None, ge=0, le=130)
    diagnosis: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NONBLANK)]
    complaints: Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=NONBLANK)]
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


class ConclusionIn(RequestModel):
    diagnosis: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NONBLANK)]
    icd10: ICD10 | None = None
    findings: Annotated[str, StringConstraints(min_length=1, max_length=8000, pattern=NONBLANK)]
    recommendations: Annotated[
        str, StringConstraints(min_length=1, max_length=8000, pattern=NONBLANK)
    ]
    amendment_reason: Reason | None = None


class SlotsIn(RequestModel):
    starts_at: Instant
    ends_at: Instant
    slot_minutes: int = Field(ge=10, le=120)


class PdfQuery(RequestModel):
    version: int | None = Field(default=None, ge=1)


class ImportQuery(RequestModel):
    dry_run: QueryFlag = False


class SlaQuery(RequestModel):
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None


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
    version: int
    updated_at: datetime


class ConclusionPublic(BaseModel):
    id: uuid.UUID
    version: int
    doctor_id: uuid.UUID
    diagnosis: str
    icd10: str | None
    findings: str
    recommendations: str
    amendment_reason: str | None
    issued_at: datetime


class ConclusionVersions(BaseModel):
    consultation_id: uuid.UUID
    current: ConclusionPublic
    versions: list[ConclusionPublic] = Field(description="Every version, newest first")


class ImportRowReport(BaseModel):
    row: int
    ok: bool
    status: str
    errors: list[dict[str, str]]
    consultation_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    note: str | None = None


class ImportReport(BaseModel):
    id: uuid.UUID
    dry_run: bool
    file_name: str
    created_at: datetime
    total_rows: int
    created: int
    invalid: int
    summary: str
    rows: list[ImportRowReport]


async def present(call: Call, items: list[Consultation]) -> list[ConsultationPublic]:
    """Consultations as the caller sees them (one query per kind of related row)."""
    session = call.session
    caller = call.user
    doctor_self = await consultations.doctor_of(session, caller)
    result = []
    cache_users: dict[uuid.UUID, User | None] = {}
    cache_centres: dict[uuid.UUID, Centre | None] = {}
    cache_doctors: dict[uuid.UUID, Doctor | None] = {}
    for consultation in items:
        if consultation.patient_id not in cache_users:
            cache_users[consultation.patient_id] = await session.get(User, consultation.patient_id)
        if consultation.centre_id not in cache_centres:
            cache_centres[consultation.centre_id] = await session.get(
                Centre, consultation.centre_id
            )
        doctor_ref = None
        if consultation.doctor_id is not None:
            if consultation.doctor_id not in cache_doctors:
                cache_doctors[consultation.doctor_id] = await session.get(
                    Doctor, consultation.doctor_id
                )
            doctor = cache_doctors[consultation.doctor_id]
            if doctor is not None:
                if doctor.user_id not in cache_users:
                    cache_users[doctor.user_id] = await session.get(User, doctor.user_id)
                doctor_user = cache_users[doctor.user_id]
                doctor_ref = DoctorRef(
                    id=doctor.id,
                    full_name=doctor_user.full_name if doctor_user else "",
                    specialty=doctor.specialty,
                )
        patient = cache_users[consultation.patient_id]
        centre = cache_centres[consultation.centre_id]
        party = consultations.party_in(caller, doctor_self, consultation)
        result.append(
            ConsultationPublic(
                **consultation.model_dump(
                    exclude={
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
                ),
                patient=PersonRef(
                    id=consultation.patient_id, full_name=patient.full_name if patient else ""
                ),
                centre=CentreRef(id=consultation.centre_id, name=centre.name if centre else ""),
                doctor=doctor_ref,
                document_ids=await consultations.documents_of(session, consultation.id),
                allowed_moves=[m.value for m in allowed_moves(consultation.state, party)]
                if party
                else [],
            )
        )
    return result


async def _one(call: Call, consultation: Consultation) -> ConsultationPublic:
    return (await present(call, [consultation]))[0]


@routes.post("/consultations", status=201, errors=(404, 409))
async def create_consultation(call: Call, body: ConsultationIn) -> ConsultationPublic:
    """POST /consultations: a patient requests a consultation (route 1) or books a duty
    doctor's slot (route 2).

    Route 1: ``{route: "initiative", centre_id, full_name?, age?, diagnosis, complaints,
    document_ids}``. Route 2: ``{route: "duty", slot_id, channel: "video", topic,
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


def _conclusion(row: ConclusionRow) -> ConclusionPublic:
    return ConclusionPublic.model_validate(row, from_attributes=True)


@routes.post("/consultations/{id}/conclusion", status=201, roles=DOCTORS, errors=(409,))
async def issue_conclusion(call: Call, body: ConclusionIn) -> ConclusionVersions:
    """POST /consultations/{id}/conclusion: the doctor issues the conclusion after the
    consultation; on an issued one, with ``amendment_reason``, a new version."""
    await conclusions.check_issue_conclusion(
        call.session,
        actor=call.user,
        now=call.now,
        consultation_id=call.path_id(),
        diagnosis=body.diagnosis,
        icd10=body.icd10,
        findings=body.findings,
        recommendations=body.recommendations,
        amendment_reason=body.amendment_reason,
    )
    return await get_conclusion(call)


@routes.get("/consultations/{id}/conclusion", writes=True)
async def get_conclusion(call: Call) -> ConclusionVersions:
    """GET /consultations/{id}/conclusion: the current conclusion and every version."""
    consultation, versions = await conclusions.get_conclusions(
        call.session,
        actor=call.user,
        consultation_id=call.path_id(),
        now=call.now,
        address=call.address,
    )
    return ConclusionVersions(
        consultation_id=consultation.id,
        current=_conclusion(versions[0]),
        versions=[_conclusion(v) for v in versions],
    )


@routes.get(
    "/consultations/{id}/conclusion.pdf",
    raw_response=RawResponse(content_types=("application/pdf",), description="The conclusion"),
    writes=True,
)
async def conclusion_pdf(call: Call, query: PdfQuery) -> web.StreamResponse:
    """GET /consultations/{id}/conclusion.pdf: the conclusion as a PDF (``?version=`` for
    an earlier one)."""
    consultation, versions = await conclusions.get_conclusions(
        call.session,
        actor=call.user,
        consultation_id=call.path_id(),
        now=call.now,
        address=call.address,
    )
    chosen = versions[0]
    if query.version is not None:
        matching = [v for v in versions if v.version == query.version]
        if not matching:
            raise NotFound("No such version of the conclusion", details={"field": "version"})
        chosen = matching[0]
    rendered = await conclusions.render_pdf(
        call.session,
        consultation=consultation,
        conclusion=chosen,
        reader=call.user,
        service_name="Телемед",
    )
    return web.Response(
        body=rendered.pdf,
        headers={
            "Content-Type": "application/pdf",
            "Content-Disposition": content_disposition(rendered.file_name, inline=False),
            "Cache-Control": "private, no-store",
        },
    )


@routes.post("/slots", status=201, roles=DOCTORS, errors=(409,))
async def publish_slots(call: Call, body: SlotsIn) -> ListOf[SlotPublic]:
    """POST /slots: a duty doctor publishes free slots ``{starts_at, ends_at, slot_minutes}``."""
    slots = await service.check_publish_slots(
        call.session,
        actor=call.user,
        now=call.now,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        slot_minutes=body.slot_minutes,
        horizon=call.settings.booking_horizon,
    )
    return ListOf[SlotPublic](items=[SlotPublic.model_validate(s) for s in slots])


@routes.delete("/slots/{id}", roles=DOCTORS, errors=(409,))
async def delete_slot(call: Call) -> None:
    """DELETE /slots/{id}: a duty doctor withdraws a free slot."""
    await service.check_delete_slot(
        call.session, actor=call.user, now=call.now, slot_id=call.path_id()
    )


@dataclass
class ReferralTable:
    """An uploaded referral table, whole in memory (at most ``MAX_TABLE_BYTES``)."""

    data: bytes
    file_name: str


async def _collect_table(chunks: AsyncIterator[bytes]) -> bytes:
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > MAX_TABLE_BYTES:
            raise TooLarge("The table is larger than 5 MB", details={"max_bytes": MAX_TABLE_BYTES})
    return bytes(data)


async def read_table(call: Call) -> ReferralTable:
    """The import form's one field ``file``, read before any transaction begins."""
    form = await read_form(
        call.request,
        file_field="file",
        receive=_collect_table,
        discard=lambda _data: None,
        idle_timeout=call.settings.upload_idle_timeout_seconds,
    )
    if form.file is None:
        raise InvalidInput("Attach the table as the field 'file'", details={"field": "file"})
    return ReferralTable(data=form.file, file_name=(form.file_name or "referrals")[:255])


IMPORT_BODY = RawBody(
    content_type="multipart/form-data",
    schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["file"],
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": "CSV (UTF-8 or Windows-1251) or XLSX",
            }
        },
    },
    read=read_table,
)


def _report(record: ReferralImport) -> ImportReport:
    rows = [ImportRowReport.model_validate(row) for row in record.rows]
    invalid = sum(1 for row in rows if not row.ok)
    verb = "would be imported" if record.dry_run else "imported"
    summary = f"{record.created} of {record.total_rows} rows {verb}"
    if invalid:
        rows_word = "row has" if invalid == 1 else "rows have"
        summary += f"; {invalid} {rows_word} errors and were skipped, the other rows went through"
    return ImportReport(
        id=record.id,
        dry_run=record.dry_run,
        file_name=record.file_name,
        created_at=record.created_at,
        total_rows=record.total_rows,
        created=record.created,
        invalid=invalid,
        summary=summary,
        rows=rows,
    )


@routes.post(
    "/referral-imports",
    status=201,
    roles=MANAGERS,
    raw_body=IMPORT_BODY,
    errors=(413,),
    transaction=False,
)
async def import_referrals(call: Call, query: ImportQuery, body: ReferralTable) -> ImportReport:
    """POST /referral-imports: import a referral table (manager); ``?dry_run=true`` only
    reports. Answers the report row by row.

    A large table goes in several short transactions, so that other users' changes are
    not held up while it is imported."""
    request = call.request
    base = (call.settings.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    record = await referrals.import_referrals(
        call.transaction,
        actor=call.user,
        now=call.now,
        settings=call.settings,
        data=body.data,
        file_name=body.file_name,
        dry_run=query.dry_run,
        login_url=base + "/",
    )
    return _report(record)


@routes.get("/referral-imports", roles=MANAGERS)
async def list_referral_imports(call: Call) -> ListOf[ImportReport]:
    """GET /referral-imports: the kept import reports, newest first (manager)."""
    return ListOf[ImportReport](
        items=[_report(r) for r in await referrals.list_imports(call.session)]
    )


@routes.get("/referral-imports/{id}", roles=MANAGERS)
async def get_referral_import(call: Call) -> ImportReport:
    """GET /referral-imports/{id}: one kept import report (manager)."""
    return _report(await referrals.get_import(call.session, call.path_id()))


@routes.get("/sla", roles=MANAGERS)
async def sla_report(call: Call, query: SlaQuery) -> sla.SlaReport:
    """GET /sla: response deadlines — due soon, overdue and met, by centre and doctor."""
    return await sla.sla_report(
        call.session,
        now=call.now,
        due_soon_fraction=call.settings.sla_due_soon_fraction,
        start=query.from_,
        end=query.to,
    )


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, routes)
