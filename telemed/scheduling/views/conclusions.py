"""HTTP routes of conclusions: issue, amend, read, and the PDF."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from telemed.accounts.models import Role
from telemed.api import (
    NONBLANK,
    Call,
    RawResponse,
    RequestModel,
    Routes,
)
from telemed.documents.views import content_disposition
from telemed.errors import NotFound
from telemed.scheduling import conclusions
from telemed.scheduling.models import Conclusion as ConclusionRow
from telemed.scheduling.views.consultations import Reason

routes = Routes(tag="conclusions")

DOCTORS = (Role.DOCTOR,)
MANAGERS = (Role.MANAGER,)


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


class ConclusionIn(RequestModel):
    diagnosis: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NONBLANK)]
    icd10: ICD10 | None = None
    findings: Annotated[str, StringConstraints(min_length=1, max_length=8000, pattern=NONBLANK)]
    recommendations: Annotated[
        str, StringConstraints(min_length=1, max_length=8000, pattern=NONBLANK)
    ]
    amendment_reason: Reason | None = None


class PdfQuery(RequestModel):
    version: int | None = Field(default=None, ge=1)


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


def _conclusion(row: ConclusionRow) -> ConclusionPublic:
    return ConclusionPublic.model_validate(row, from_attributes=True)


@routes.post("/consultations/{id}/conclusion", status=201, roles=DOCTORS, errors=(409,))
async def issue_conclusion(call: Call, body: ConclusionIn) -> ConclusionVersions:
    """POST /consultations/{id}/conclusion: the doctor issues the conclusion after the
    consultation; on an issued one, with ``amendment_reason``, a new version."""
    await conclusions.check_issue_conclusion(
        call.session,
        brand=call.settings.brand_name,
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
        service_name=call.settings.brand_name,
    )
    return web.Response(
        body=rendered.pdf,
        headers={
            "Content-Type": "application/pdf",
            "Content-Disposition": content_disposition(rendered.file_name, inline=False),
            "Cache-Control": "private, no-store",
        },
    )
