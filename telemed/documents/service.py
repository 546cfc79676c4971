"""The document cabinet: who may reach a document, storing, listing, reading, deleting.

Access is decided here, per object: the owner, and (for now) an admin. Anyone else is
told the document does not exist. Every read by someone other than the owner is
written to the audit trail in the same transaction as the read.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit
from telemed.accounts.models import Role, User
from telemed.documents.models import Document, DocumentKind
from telemed.documents.storage import DocumentStore, StoredUpload
from telemed.errors import NotFound, QuotaExceeded
from telemed.scheduling.consultations import may_read_attached_document, readable_attachments


def can_read(actor: User, document: Document) -> bool:
    return actor.id == document.owner_id or actor.role is Role.ADMIN


async def readable(
    session: AsyncSession, *, actor: User, now: datetime, doctor_access_days: int
) -> sa.ColumnElement[bool]:
    """``get_document``'s rule as a condition on the document table, for lists: the
    actor's own documents, every document for an admin, and those attached to an open
    consultation the actor takes part in (``may_read_attached_document``)."""
    if actor.role is Role.ADMIN:
        return sa.true()
    return sa.or_(
        col(Document.owner_id) == actor.id,
        col(Document.id).in_(
            await readable_attachments(
                session, actor=actor, now=now, doctor_access_days=doctor_access_days
            )
        ),
    )


def can_delete(actor: User, document: Document) -> bool:
    return actor.id == document.owner_id


async def list_documents(session: AsyncSession, *, owner: User) -> list[Document]:
    result = await session.exec(
        select(Document)
        .where(Document.owner_id == owner.id)
        .order_by(col(Document.created_at).desc(), col(Document.id))
    )
    return list(result.all())


async def used_bytes(session: AsyncSession, *, owner_id: uuid.UUID) -> int:
    result = await session.exec(
        select(sa.func.coalesce(sa.func.sum(Document.size), 0)).where(Document.owner_id == owner_id)
    )
    return int(result.one())


async def do_add_document(
    session: AsyncSession,
    *,
    store: DocumentStore,
    owner: User,
    upload: StoredUpload,
    kind: DocumentKind,
    title: str,
    file_name: str,
    quota_bytes: int,
    now: datetime,
) -> Document:
    """Register a received upload in the owner's cabinet and move it into place.

    Raises ``QuotaExceeded`` when the owner's documents would pass ``quota_bytes``;
    the owner's row is locked first so that parallel uploads cannot both slip under
    the quota. The caller discards the upload if this raises, and removes the stored
    file if the transaction then fails to commit.
    """
    await session.exec(select(User.id).where(User.id == owner.id).with_for_update())
    used = await used_bytes(session, owner_id=owner.id)
    if used + upload.size > quota_bytes:
        raise QuotaExceeded(
            "Your documents would exceed the storage quota",
            details={"quota_bytes": quota_bytes, "used_bytes": used, "file_bytes": upload.size},
        )
    document = Document(
        owner_id=owner.id,
        kind=kind,
        title=title,
        file_name=file_name,
        content_type=upload.content_type,
        size=upload.size,
        sha256=upload.sha256,
        created_at=now,
    )
    session.add(document)
    await session.flush()
    store.commit(upload, document.id)
    return document


async def get_document(
    session: AsyncSession,
    *,
    actor: User,
    document_id: uuid.UUID,
    now: datetime,
    doctor_access_days: int,
    action: str = "document.viewed",
    address: str | None = None,
) -> Document:
    """A document the actor may read; reads by anyone but the owner are audited.

    The owner and an admin may read it, and the other participant of an open
    consultation it is attached to, or its doctor for ``doctor_access_days`` after
    concluding it (``may_read_attached_document``).

    Raises ``NotFound`` both when it does not exist and when the actor may not see it.
    """
    document = await session.get(Document, document_id)
    if document is None or not (
        can_read(actor, document)
        or await may_read_attached_document(
            session,
            actor=actor,
            document_id=document.id,
            now=now,
            doctor_access_days=doctor_access_days,
        )
    ):
        raise NotFound("Document not found")
    if actor.id != document.owner_id:
        audit.record(
            session,
            now=now,
            actor_id=actor.id,
            action=action,
            object_type="document",
            object_id=document.id,
            subject_id=document.owner_id,
            address=address,
        )
    return document


async def do_delete_document(
    session: AsyncSession,
    *,
    actor: User,
    document_id: uuid.UUID,
    now: datetime,
    address: str | None = None,
) -> Document:
    """Delete the row (the caller removes the file after the commit).

    Only the owner may delete; to anyone else the document does not exist.
    """
    document = await session.get(Document, document_id)
    if document is None or not can_delete(actor, document):
        raise NotFound("Document not found")
    await session.delete(document)
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="document.deleted",
        object_type="document",
        object_id=document.id,
        subject_id=document.owner_id,
        address=address,
        details={"sha256": document.sha256, "size": document.size},
    )
    return document
