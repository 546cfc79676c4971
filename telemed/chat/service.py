"""The consultation chat: who may read and write, sending with a per-consultation seq and
idempotent resends, history, read state.

A message is committed before it is acknowledged or shown to anyone: the caller commits,
then emits. ``seq`` comes from an atomic increment of ``Consultation.chat_seq`` in the
same transaction, so messages of one consultation are numbered 1, 2, 3… without gaps,
whichever node stores them.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit
from telemed.accounts.models import User
from telemed.chat.models import ChatMessage, ChatReadState
from telemed.documents.models import Document
from telemed.errors import InvalidInput, InvalidState, NotFound, RateLimited
from telemed.scheduling.consultations import Seen, get_consultation
from telemed.scheduling.lifecycle import Party
from telemed.scheduling.models import Consultation, ConsultationDocument, State
from telemed.settings import Settings

MAX_BODY = 4000
HISTORY_PAGE = 500
WRITABLE = frozenset({State.SCHEDULED, State.IN_PROGRESS})
AFTER_END = frozenset({State.COMPLETED, State.CONCLUDED})


@dataclass
class SendLimiter:
    """Messages per user per minute, in this process (a sender's socket is on one node)."""

    per_minute: int
    _sent: dict[uuid.UUID, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    def check(self, user_id: uuid.UUID, *, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        window = self._sent[user_id]
        while window and window[0] <= moment - 60:
            window.popleft()
        if len(window) >= self.per_minute:
            raise RateLimited(
                "You are sending messages too fast; wait a little",
                retry_after_seconds=max(1, int(window[0] + 60 - moment) + 1),
            )
        window.append(moment)


async def get_chat(
    session: AsyncSession, *, actor: User, consultation_id: uuid.UUID, lock: bool = False
) -> Seen:
    """The consultation, if the actor is one of its two participants (patient or its
    assigned doctor). Anyone else, managers included, is told it does not exist."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=lock)
    if seen.party is Party.PATIENT:
        return seen
    if seen.party is Party.DOCTOR and seen.consultation.doctor_id is not None:
        return seen
    raise NotFound("Consultation not found")


def chat_writable(consultation: Consultation, *, now: datetime, settings: Settings) -> bool:
    """Open once a doctor is on the consultation; read-only some days after it ends, and
    at once if it is cancelled, declined or missed."""
    if consultation.doctor_id is None:
        return False
    if consultation.state in WRITABLE:
        return True
    if consultation.state in AFTER_END and consultation.ended_at is not None:
        return now < consultation.ended_at + timedelta(days=settings.chat_open_days_after_end)
    return False


async def check_send(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
    client_id: str,
    body: str,
    document_ids: Sequence[uuid.UUID] = (),
) -> tuple[ChatMessage, bool]:
    """Store a message; returns it and whether it is new.

    A resend with the same ``client_id`` returns the stored message (``False``), even
    when the chat has closed since. Raises ``NotFound``, ``InvalidState`` (chat not open)
    and ``InvalidInput``. Attachments must be the sender's own documents.
    """
    seen = await get_chat(session, actor=actor, consultation_id=consultation_id)
    existing = await _by_client_id(session, consultation_id, actor.id, client_id)
    if existing is not None:
        return existing, False
    consultation = seen.consultation
    if not chat_writable(consultation, now=now, settings=settings):
        raise InvalidState(
            "The chat is closed for this consultation", details={"state": consultation.state.value}
        )
    text = body.strip()
    if not text and not document_ids:
        raise InvalidInput("The message is empty", details={"field": "body"})
    if len(text) > MAX_BODY:
        raise InvalidInput(f"A message is at most {MAX_BODY} characters", details={"field": "body"})
    documents = list(dict.fromkeys(document_ids))
    if documents:
        owned = set(
            (
                await session.exec(
                    select(Document.id).where(
                        col(Document.id).in_(documents), Document.owner_id == actor.id
                    )
                )
            ).all()
        )
        if owned != set(documents):
            raise NotFound("Document not found", details={"field": "document_ids"})
    try:
        async with session.begin_nested():
            table = Consultation.__table__  # type: ignore[attr-defined]  # SQLModel sets it
            seq = (
                await session.exec(
                    sa.update(table)
                    .where(table.c.id == consultation.id)
                    .values(chat_seq=table.c.chat_seq + 1)
                    .returning(table.c.chat_seq)
                )
            ).scalar_one()
            message = ChatMessage(
                consultation_id=consultation.id,
                seq=seq,
                sender_id=actor.id,
                client_id=client_id,
                body=text,
                document_ids=[str(d) for d in documents],
                created_at=now,
            )
            session.add(message)
            await session.flush()
    except IntegrityError:
        # The same resend raced the first: that one won; return it.
        existing = await _by_client_id(session, consultation_id, actor.id, client_id)
        if existing is None:
            raise
        return existing, False
    if documents:
        # Shared in the chat = attached to the consultation: the other side may read them.
        attached = set(
            (
                await session.exec(
                    select(ConsultationDocument.document_id).where(
                        ConsultationDocument.consultation_id == consultation.id
                    )
                )
            ).all()
        )
        for document_id in documents:
            if document_id not in attached:
                session.add(
                    ConsultationDocument(consultation_id=consultation.id, document_id=document_id)
                )
        audit.record(
            session,
            now=now,
            actor_id=actor.id,
            action="chat.documents_shared",
            object_type="consultation",
            object_id=consultation.id,
            subject_id=consultation.patient_id,
            details={"documents": [str(d) for d in documents]},
        )
    return message, True


async def _by_client_id(
    session: AsyncSession, consultation_id: uuid.UUID, sender_id: uuid.UUID, client_id: str
) -> ChatMessage | None:
    return (
        await session.exec(
            select(ChatMessage).where(
                ChatMessage.consultation_id == consultation_id,
                ChatMessage.sender_id == sender_id,
                ChatMessage.client_id == client_id,
            )
        )
    ).first()


async def list_messages(
    session: AsyncSession,
    *,
    actor: User,
    consultation_id: uuid.UUID,
    after_seq: int = 0,
    limit: int = HISTORY_PAGE,
) -> list[ChatMessage]:
    """Messages with ``seq > after_seq``, in order (what a reconnecting client missed)."""
    await get_chat(session, actor=actor, consultation_id=consultation_id)
    return await messages_after(
        session, consultation_id=consultation_id, after_seq=after_seq, limit=limit
    )


async def messages_after(
    session: AsyncSession, *, consultation_id: uuid.UUID, after_seq: int, limit: int
) -> list[ChatMessage]:
    result = await session.exec(
        select(ChatMessage)
        .where(ChatMessage.consultation_id == consultation_id, ChatMessage.seq > after_seq)
        .order_by(col(ChatMessage.seq))
        .limit(limit)
    )
    return list(result.all())


async def check_mark_read(
    session: AsyncSession, *, actor: User, now: datetime, consultation_id: uuid.UUID, seq: int
) -> ChatReadState:
    """Record that the actor has read up to ``seq`` (never moves back)."""
    seen = await get_chat(session, actor=actor, consultation_id=consultation_id)
    if seq < 0 or seq > seen.consultation.chat_seq:
        raise InvalidInput("No such message", details={"field": "seq"})
    state = await session.get(ChatReadState, (consultation_id, actor.id))
    if state is None:
        state = ChatReadState(
            consultation_id=consultation_id, user_id=actor.id, seq=seq, updated_at=now
        )
    elif seq > state.seq:
        state.seq = seq
        state.updated_at = now
    session.add(state)
    return state


async def read_states(session: AsyncSession, consultation_id: uuid.UUID) -> dict[str, int]:
    rows = await session.exec(
        select(ChatReadState).where(ChatReadState.consultation_id == consultation_id)
    )
    return {str(row.user_id): row.seq for row in rows.all()}
