"""HTTP routes of the document cabinet."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote

from aiohttp import web
from pydantic import Field

from telemed import keys, live
from telemed.api import (
    NONBLANK,
    Call,
    ListOf,
    QueryFlag,
    RawBody,
    RawResponse,
    RequestModel,
    Routes,
    parse_model,
)
from telemed.documents import service
from telemed.documents.filetypes import EXTENSIONS
from telemed.documents.models import DocumentKind, DocumentPublic
from telemed.documents.storage import StoredUpload
from telemed.errors import InvalidInput, TooLarge
from telemed.forms import read_form

routes = Routes(tag="documents")

# Multipart boundaries and part headers around the file.
MULTIPART_OVERHEAD = 16 * 1024


class DocumentFields(RequestModel):
    kind: DocumentKind
    title: str = Field(min_length=1, max_length=200, pattern=NONBLANK)


class ContentQuery(RequestModel):
    inline: QueryFlag = Field(
        default=False, description="Show in the browser (preview) instead of downloading"
    )


@dataclass
class DocumentUpload:
    """A received upload: the file in its temporary place, and its description."""

    stored: StoredUpload
    kind: DocumentKind
    title: str
    file_name: str


async def read_upload(call: Call) -> DocumentUpload:
    """The upload form, the file streamed to a temporary file as it arrives (before any
    transaction begins). Type and size are checked on the way: 415, 413."""
    limit = call.settings.document_max_bytes
    request = call.request
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
        raise TooLarge("The file is larger than allowed", details={"max_bytes": limit})
    store = call.app[keys.DOCUMENT_STORE]
    form = await read_form(
        request,
        file_field="file",
        receive=lambda chunks: store.receive(chunks, max_bytes=limit),
        discard=StoredUpload.discard,
        text_fields=("kind", "title"),
        idle_timeout=call.settings.upload_idle_timeout_seconds,
    )
    try:
        if form.file is None:
            raise InvalidInput("Attach the file", details={"field": "file"})
        meta = parse_model(DocumentFields, form.fields)
    except BaseException:
        if form.file is not None:
            form.file.discard()
        raise
    return DocumentUpload(
        stored=form.file,
        kind=meta.kind,
        title=meta.title,
        file_name=clean_file_name(form.file_name, form.file.content_type),
    )


UPLOAD_BODY = RawBody(
    content_type="multipart/form-data",
    schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["file", "kind", "title"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "kind": {"type": "string", "enum": [kind.value for kind in DocumentKind]},
            "title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NONBLANK},
        },
    },
    read=read_upload,
    discard=lambda upload: upload.stored.discard(),
)


def clean_file_name(raw: str | None, content_type: str) -> str:
    """The client's file name without path parts or control characters.

    Percent-escapes are decoded: the HTML form encoding escapes quotes and line breaks
    that way, and some clients (aiohttp among them) escape every non-ASCII byte.
    """
    name = unquote(raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    if not name:
        name = "document" + EXTENSIONS.get(content_type, "")
    return name[:255]


def content_disposition(file_name: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback plus the UTF-8 name (Cyrillic names survive)."""
    fallback = re.sub(r"[^A-Za-z0-9._-]+", "_", file_name).strip("_") or "document"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


@routes.post("/documents", status=201, raw_body=UPLOAD_BODY, errors=(413, 415))
async def upload_document(call: Call, body: DocumentUpload) -> DocumentPublic:
    """POST /documents: upload a medical document (multipart: file, kind, title).

    The file is streamed to disk, never held whole in memory, before the transaction
    begins. Its type comes from its content: PDF, JPEG, PNG or DICOM Part 10, anything
    else is 415. A file over the size limit, or one that would pass the owner's quota, is
    413; nothing is kept either way.
    """
    store = call.app[keys.DOCUMENT_STORE]
    document = await service.do_add_document(
        call.session,
        store=store,
        owner=call.user,
        upload=body.stored,
        kind=body.kind,
        title=body.title,
        file_name=body.file_name,
        quota_bytes=call.settings.document_quota_bytes,
        now=call.now,
    )
    live.on_rollback(call.session, lambda: store.remove(document.id))
    return DocumentPublic.model_validate(document)


@routes.get("/documents")
async def list_documents(call: Call) -> ListOf[DocumentPublic]:
    """GET /documents: the caller's own documents, newest first."""
    documents = await service.list_documents(call.session, owner=call.user)
    return ListOf[DocumentPublic](items=[DocumentPublic.model_validate(d) for d in documents])


@routes.get("/documents/{id}", writes=True)
async def get_document(call: Call) -> DocumentPublic:
    """GET /documents/{id}: a document's description."""
    document = await service.get_document(
        call.session,
        actor=call.user,
        document_id=call.path_id(),
        now=call.now,
        doctor_access_days=call.settings.doctor_document_access_days,
        address=call.address,
    )
    return DocumentPublic.model_validate(document)


@routes.get(
    "/documents/{id}/content",
    raw_response=RawResponse(
        content_types=("application/pdf", "image/jpeg", "image/png", "application/dicom"),
        description="The file, with its original name in Content-Disposition",
    ),
    writes=True,
    allow_system=True,
)
async def download_document(call: Call, query: ContentQuery) -> web.StreamResponse:
    """GET /documents/{id}/content: the file itself (``?inline=true`` to preview).

    The one endpoint outside ``/fhir/R4`` that a system client may call: a FHIR
    ``DocumentReference`` links here for its content."""
    document = await service.get_document(
        call.session,
        actor=call.user,
        document_id=call.path_id(),
        now=call.now,
        doctor_access_days=call.settings.doctor_document_access_days,
        action="document.downloaded",
        address=call.address,
    )
    path = call.app[keys.DOCUMENT_STORE].path_of(document.id)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": document.content_type,
            "Content-Disposition": content_disposition(document.file_name, inline=query.inline),
            "Cache-Control": "private, no-store",
        },
    )


@routes.delete("/documents/{id}")
async def delete_document(call: Call) -> None:
    """DELETE /documents/{id}: delete one of the caller's documents and its file."""
    document = await service.do_delete_document(
        call.session,
        actor=call.user,
        document_id=call.path_id(),
        now=call.now,
        address=call.address,
    )
    store = call.app[keys.DOCUMENT_STORE]
    live.after_commit(call.session, lambda: store.remove(document.id))


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, routes)
