"""HTTP routes of referral imports (route 3): upload a table, read the reports, issue a
referred patient new credentials."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    Field,
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
from telemed.settings import SmsBackend

routes = Routes(tag="referrals")

DOCTORS = (Role.DOCTOR,)
MANAGERS = (Role.MANAGER,)

MAX_TABLE_BYTES = 5 * 1024 * 1024


class ImportQuery(RequestModel):
    dry_run: QueryFlag = False


class ImportCellError(BaseModel):
    """One problem of a row: ``code`` (a ``Problem``) and ``params`` for the client to word
    it in its user's language; ``message`` in English. Reports stored before codes were
    kept have no code (the client shows the message)."""

    column: str
    code: str | None = None
    params: dict[str, Any] = {}
    message: str


class ImportRowReport(BaseModel):
    row: int
    ok: bool
    status: str
    errors: list[ImportCellError]
    consultation_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    note: str | None = None
    note_code: str | None = None


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


def _login_url(call: Call) -> str:
    """Where patients sign in, for the SMS: the public URL, or the request's own host."""
    request = call.request
    base = (call.settings.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    return base + "/"


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
    record = await referrals.import_referrals(
        call.transaction,
        actor=call.user,
        now=call.now,
        settings=call.settings,
        data=body.data,
        file_name=body.file_name,
        dry_run=query.dry_run,
        login_url=_login_url(call),
    )
    return _report(record)


@routes.get("/referral-imports", roles=MANAGERS)
async def list_referral_imports(call: Call) -> ListOf[ImportReport]:
    """GET /referral-imports: the kept import reports, newest first (manager; a manager
    bound to a centre reads those of its centre's managers)."""
    return ListOf[ImportReport](
        items=[_report(r) for r in await referrals.list_imports(call.session, actor=call.user)]
    )


@routes.get("/referral-imports/{id}", roles=MANAGERS)
async def get_referral_import(call: Call) -> ImportReport:
    """GET /referral-imports/{id}: one kept import report (manager)."""
    return _report(
        await referrals.get_import(call.session, actor=call.user, import_id=call.path_id())
    )


class CredentialsIssued(BaseModel):
    patient_id: uuid.UUID
    login: str = Field(description="The patient's login (the phone the SMS goes to)")
    issued_at: datetime
    kept_in_outbox: bool = Field(
        description="No SMS gateway is configured: the SMS is kept in the outbox "
        "(GET /outbox) instead of sent"
    )


@routes.post(
    "/patients/{id}/credentials",
    status=201,
    roles=MANAGERS,
    errors=(429,),
    transaction=False,
)
async def issue_credentials(call: Call) -> CredentialsIssued:
    """POST /patients/{id}/credentials: issue a referred patient a new temporary password
    (manager), sent by SMS.

    The old password stops working, the patient's sessions end, and the new password
    must be changed at the next sign-in. Only patients with a referral (route 3) are
    found here (404 otherwise); at most ``credentials.patient`` issues per patient
    (429). Audited."""
    async with call.transaction() as session:
        patient = await referrals.check_issue_credentials(
            session,
            actor=call.user,
            patient_id=call.path_id(),
            now=call.now,
            limit=call.settings.limits["credentials.patient"],
        )
        patient_id = patient.id
    password, password_hash = await asyncio.to_thread(referrals.new_temporary_password)
    async with call.transaction() as session:
        patient = await referrals.do_issue_credentials(
            session,
            brand=call.settings.brand_name,
            patient_id=patient_id,
            password=password,
            password_hash=password_hash,
            actor=call.user,
            now=call.now,
            login_url=_login_url(call),
            address=call.address,
        )
        login = patient.phone
    return CredentialsIssued(
        patient_id=patient_id,
        login=login,
        issued_at=call.now,
        kept_in_outbox=call.settings.sms_backend is SmsBackend.OUTBOX,
    )
