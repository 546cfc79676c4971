"""HTTP routes of referral imports (route 3): upload a table, read the reports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from pydantic import (
    BaseModel,
)

from telemed.accounts.models import Role
from telemed.api import (
    Call,
    ListOf,
    QueryFlag,
    RawBody,
    RequestModel,
    Routes,
)
from telemed.errors import InvalidInput, TooLarge
from telemed.forms import read_form
from telemed.scheduling import referrals
from telemed.scheduling.models import (
    ReferralImport,
)

routes = Routes(tag="referrals")

DOCTORS = (Role.DOCTOR,)
MANAGERS = (Role.MANAGER,)

MAX_TABLE_BYTES = 5 * 1024 * 1024


class ImportQuery(RequestModel):
    dry_run: QueryFlag = False


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
