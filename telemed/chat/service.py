"""The consultation chat: who may read and write, sending with a per-consultation seq and
idempotent resends, history, read state.

A message is committed before it is acknowledged or shown to anyone: the caller commits,
then emits. ``seq`` comes from an atomic increment of ``Consultation.chat_seq`` in the
same transaction, so messages of one consultation are numbered 1, 2, 3… without gaps,
whichever node stores them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit, live
from telemed.accounts.models import User
from telemed.chat.models import ChatMessage, ChatMessagePublic, ChatReadState
from telemed.chat.rules import ChatFacts, Refusal, Sender, error, refusal, writable
from telemed.db import new_id
from telemed.documents.models import Document
from telemed.errors import InvalidInput, NotFound, TelemedError
from telemed.scheduling.consultations import Seen, get_consultation
from telemed.scheduling.lifecycle import Party
from telemed.scheduling.models import Consultation, ConsultationDocument, State
from telemed.settings import Settings
from telemed.signaling.events import ReadUpdated

HISTORY_PAGE = 500


async def get_chat(
    session: AsyncSession, *, actor: User, consultation_id: uuid.UUID, lock: bool = False
) -> Seen:
    """The consultation, if the actor is one of its two participants (``parties.in_chat``).
    Anyone else, managers included, is told it does not exist."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=lock)
    if seen.party is Party.PATIENT or (
        seen.party is Party.DOCTOR and seen.consultation.doctor_id is not None
    ):
        return seen
    raise NotFound("Consultation not found")


def facts_of(consultation: Consultation) -> ChatFacts:
    return ChatFacts(
        patient_id=consultation.patient_id,
        doctor_id=consultation.doctor_id,
        state=consultation.state,
        ended_at=consultation.ended_at,
    )


def chat_writable(consultation: Consultation, *, now: datetime, settings: Settings) -> bool:
    """Whether the consultation's chat takes messages now (``rules.writable``)."""
    return writable(facts_of(consultation), now=now, settings=settings)


async def check_send(
    session: AsyncSession,
    *,
    sender: Sender,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
    client_id: str,
    body: str,
    document_ids: Sequence[uuid.UUID] = (),
) -> tuple[ChatMessage, bool]:
    """Store one message; returns it and whether it is new. The rules are ``rules``'s,
    as in ``store_batch``; attachments must be the sender's own documents (else
    ``NotFound``). A resend with the same ``client_id`` returns the stored message
    (``False``), even when the chat has closed since. The slow path: ``store_batch``
    stores the common case, and hands over a batch with a resend in it."""
    text = body.strip()
    documents = list(dict.fromkeys(document_ids))
    row = (
        await session.exec(
            select(
                Consultation.patient_id,
                Consultation.doctor_id,
                Consultation.state,
                Consultation.ended_at,
            ).where(Consultation.id == consultation_id)
        )
    ).first()
    facts = (
        ChatFacts(patient_id=row[0], doctor_id=row[1], state=State(row[2]), ended_at=row[3])
        if row is not None
        else None
    )
    refused = refusal(
        facts, sender=sender, text=text, attachments=len(documents), now=now, settings=settings
    )
    if refused is Refusal.CLOSED:
        existing = await _by_client_id(session, consultation_id, sender.user_id, client_id)
        if existing is not None:
            return existing, False
    if refused is not None:
        raise error(refused, facts)
    assert facts is not None
    if documents:
        owned = set(
            (
                await session.exec(
                    select(Document.id).where(
                        col(Document.id).in_(documents), Document.owner_id == sender.user_id
                    )
                )
            ).all()
        )
        if owned != set(documents):
            raise NotFound("Document not found", details={"field": "document_ids"})
    message = ChatMessage(
        consultation_id=consultation_id,
        seq=0,
        sender_id=sender.user_id,
        client_id=client_id,
        body=text,
        document_ids=[str(d) for d in documents],
        created_at=now,
    )
    try:
        # A resend's insert breaks the unique (consultation, sender, client_id): the
        # savepoint takes back its seq too, so seqs stay without gaps.
        async with session.begin_nested():
            table = Consultation.__table__  # type: ignore[attr-defined]  # SQLModel sets it
            message.seq = (
                await session.exec(
                    sa.update(table)
                    .where(table.c.id == consultation_id)
                    .values(chat_seq=table.c.chat_seq + 1)
                    .returning(table.c.chat_seq)
                )
            ).scalar_one()
            messages = ChatMessage.__table__  # type: ignore[attr-defined]  # SQLModel sets it
            await session.exec(sa.insert(messages).values(message.model_dump()))
    except IntegrityError:
        existing = await _by_client_id(session, consultation_id, sender.user_id, client_id)
        if existing is None:
            raise
        return existing, False
    if documents:
        connection = await session.connection()
        await connection.run_sync(
            lambda sync: _share_documents(
                sync,
                [(consultation_id, sender.user_id, facts.patient_id, documents)],
                now=now,
            )
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
    """Record that the actor has read up to ``seq`` (never moves back), and tell the
    consultation's watchers (``chat:read_updated``)."""
    seen = await get_chat(session, actor=actor, consultation_id=consultation_id)
    if seq < 0 or seq > seen.consultation.chat_seq:
        raise InvalidInput("No such message", details={"field": "seq"})
    state = await _moved_read_state(
        session, actor=actor, consultation_id=consultation_id, seq=seq, now=now
    )
    live.queue(
        session,
        ReadUpdated(consultation_id=consultation_id, user_id=actor.id, seq=state.seq),
        to=[f"consultation:{consultation_id}"],
    )
    return state


async def _moved_read_state(
    session: AsyncSession, *, actor: User, consultation_id: uuid.UUID, seq: int, now: datetime
) -> ChatReadState:
    state = await _read_state(session, consultation_id, actor.id)
    if state is None:
        try:
            async with session.begin_nested():
                state = ChatReadState(
                    consultation_id=consultation_id, user_id=actor.id, seq=seq, updated_at=now
                )
                session.add(state)
                await session.flush()
            return state
        except IntegrityError:  # another tab's first mark won; move it forward below
            state = await _read_state(session, consultation_id, actor.id)
            assert state is not None
    if seq > state.seq:
        state.seq = seq
        state.updated_at = now
    session.add(state)
    return state


async def _read_state(
    session: AsyncSession, consultation_id: uuid.UUID, user_id: uuid.UUID
) -> ChatReadState | None:
    """The read position, locked (PostgreSQL) so that it only ever moves forward."""
    return (
        await session.exec(
            select(ChatReadState)
            .where(
                ChatReadState.consultation_id == consultation_id,
                ChatReadState.user_id == user_id,
            )
            .with_for_update()
        )
    ).first()


async def read_states(session: AsyncSession, consultation_id: uuid.UUID) -> dict[str, int]:
    rows = await session.exec(
        select(ChatReadState).where(ChatReadState.consultation_id == consultation_id)
    )
    return {str(row.user_id): row.seq for row in rows.all()}


@dataclass(frozen=True)
class SendRequest:
    sender: Sender
    consultation_id: uuid.UUID
    client_id: str
    body: str
    document_ids: tuple[uuid.UUID, ...] = ()


SendOutcome = tuple[ChatMessage | ChatMessagePublic, bool] | TelemedError
"""The stored message and whether it is new, or why it was refused."""


def _batch_statements() -> tuple[sa.Select[tuple[object, ...]], sa.Update, sa.Insert]:
    """The statements of ``store_batch``, built once: building and compiling a statement
    costs more than SQLite takes to run it."""
    consultations = Consultation.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    messages = ChatMessage.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    read = (
        sa.select(
            consultations.c.id,
            consultations.c.patient_id,
            consultations.c.doctor_id,
            consultations.c.state,
            consultations.c.ended_at,
            consultations.c.chat_seq,
        )
        .where(consultations.c.id.in_(sa.bindparam("ids", expanding=True)))
        # PostgreSQL: hold the rows (in one order, so batches never deadlock) until the
        # commit: no cancel slips in between this check and the insert, and ``chat_seq``
        # read here is still the last one at the update. SQLite ignores it: its writer
        # lock (BEGIN IMMEDIATE) already serialises.
        .order_by(consultations.c.id)
        .with_for_update()
    )
    set_seq = (
        sa.update(consultations)
        .where(consultations.c.id == sa.bindparam("consultation"))
        .values(chat_seq=sa.bindparam("last_seq"))
    )
    return read, set_seq, sa.insert(messages)


_READ_CONSULTATIONS, _SET_SEQ, _INSERT_MESSAGES = _batch_statements()


def store_batch(
    connection: sa.Connection,
    requests: Sequence[SendRequest],
    *,
    now: datetime,
    settings: Settings,
) -> list[SendOutcome]:
    """Store many sends at once, with the same rules and results as ``check_send`` each.

    For a group commit to pay off, the common case costs three statements for the whole
    batch: one read of the consultations (locked), one update of their ``chat_seq`` and
    one insert of all rows. A resend of a stored message (rare) makes the insert fail on
    the unique ``client_id``: the caller then rolls the batch back and stores it one by
    one with ``check_send``, which answers resends. Attachments cost one more query and
    two inserts for the batch (their owners; the links and the audit rows). Core
    statements built once, on a plain connection: the ORM's per-statement work would
    cost more than the database's here. Synchronous, so that the whole batch runs in one
    call off the event loop (``chat.writer``).
    """
    outcomes: list[SendOutcome | None] = [None] * len(requests)
    ids = list({r.consultation_id for r in requests})
    found = {row.id: row for row in connection.execute(_READ_CONSULTATIONS, {"ids": ids})}
    owners = _owners(connection, {d for r in requests for d in r.document_ids})
    fresh: list[tuple[int, ChatMessagePublic]] = []
    shared: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, list[uuid.UUID]]] = []
    in_batch: dict[tuple[uuid.UUID, uuid.UUID, str], ChatMessagePublic] = {}
    for index, request in enumerate(requests):
        actor_id = request.sender.user_id
        key = (request.consultation_id, actor_id, request.client_id)
        row = found.get(request.consultation_id)
        facts = (
            ChatFacts(
                patient_id=row.patient_id,
                doctor_id=row.doctor_id,
                state=State(row.state),
                ended_at=row.ended_at,
            )
            if row is not None
            else None
        )
        text = request.body.strip()
        documents = list(dict.fromkeys(request.document_ids))
        refused = refusal(
            facts,
            sender=request.sender,
            text=text,
            attachments=len(documents),
            now=now,
            settings=settings,
        )
        if refused is not Refusal.NOT_FOUND and key in in_batch:
            outcomes[index] = (in_batch[key], False)  # the same send twice in one batch
            continue
        if refused is Refusal.CLOSED:
            stored = _stored(connection, key)
            if stored is not None:  # a resend of a message stored before it closed
                outcomes[index] = (stored, False)
                continue
        if refused is not None:
            outcomes[index] = error(refused, facts)
            continue
        assert facts is not None
        if any(owners.get(d) != actor_id for d in documents):
            outcomes[index] = NotFound("Document not found", details={"field": "document_ids"})
            continue
        # A plain model, not a mapped row: building ORM objects costs more than storing.
        message = ChatMessagePublic.model_construct(
            id=new_id(),
            consultation_id=request.consultation_id,
            seq=0,
            sender_id=actor_id,
            client_id=request.client_id,
            body=text,
            document_ids=documents,
            created_at=now,
        )
        in_batch[key] = message
        fresh.append((index, message))
        if documents:
            shared.append((request.consultation_id, actor_id, facts.patient_id, documents))
    _insert_numbered(
        connection, [m for _, m in fresh], {row.id: row.chat_seq for row in found.values()}
    )
    _share_documents(connection, shared, now=now)
    for index, message in fresh:
        outcomes[index] = (message, True)
    return [outcome for outcome in outcomes if outcome is not None]


def _owners(connection: sa.Connection, document_ids: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """Who owns each of these documents (one query for a whole batch)."""
    if not document_ids:
        return {}
    documents = Document.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    rows = connection.execute(
        sa.select(documents.c.id, documents.c.owner_id).where(
            documents.c.id.in_(list(document_ids))
        )
    )
    return {row.id: row.owner_id for row in rows}


def _share_documents(
    connection: sa.Connection,
    shared: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID, Sequence[uuid.UUID]]],
    *,
    now: datetime,
) -> None:
    """Documents shared in the chat are attached to the consultation: the other side may
    read them (``consultations.may_read_attached_document``), each sharing audited.
    ``shared``: (consultation, sender, patient, documents) of each message."""
    if not shared:
        return
    links = ConsultationDocument.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    consultations = {consultation_id for consultation_id, _, _, _ in shared}
    attached = {
        (row.consultation_id, row.document_id)
        for row in connection.execute(
            sa.select(links.c.consultation_id, links.c.document_id).where(
                links.c.consultation_id.in_(list(consultations))
            )
        )
    }
    new_links = []
    for consultation_id, _, _, documents in shared:
        for document_id in documents:
            if (consultation_id, document_id) not in attached:
                attached.add((consultation_id, document_id))
                new_links.append({"consultation_id": consultation_id, "document_id": document_id})
    if new_links:
        connection.execute(sa.insert(links), new_links)
    audit.insert(
        connection,
        [
            audit.AuditEvent(
                at=now,
                actor_id=sender_id,
                action="chat.documents_shared",
                object_type="consultation",
                object_id=str(consultation_id),
                subject_id=patient_id,
                details={"documents": [str(d) for d in documents]},
            )
            for consultation_id, sender_id, patient_id, documents in shared
        ],
    )


def _stored(
    connection: sa.Connection, key: tuple[uuid.UUID, uuid.UUID, str]
) -> ChatMessagePublic | None:
    """The message stored under (consultation, sender, client_id), if any."""
    messages = ChatMessage.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    row = connection.execute(
        sa.select(messages).where(
            messages.c.consultation_id == key[0],
            messages.c.sender_id == key[1],
            messages.c.client_id == key[2],
        )
    ).first()
    return None if row is None else ChatMessagePublic.model_validate(dict(row._mapping))


def _insert_numbered(
    connection: sa.Connection, messages: list[ChatMessagePublic], last_seq: dict[uuid.UUID, int]
) -> None:
    """Give ``messages`` the next seqs of their consultations (in list order), from
    ``last_seq`` read under the lock, and insert them."""
    if not messages:
        return
    next_seq = dict(last_seq)
    for message in messages:
        next_seq[message.consultation_id] += 1
        message.seq = next_seq[message.consultation_id]
    connection.execute(
        _SET_SEQ,
        [
            {"consultation": consultation_id, "last_seq": seq}
            for consultation_id, seq in next_seq.items()
            if seq != last_seq[consultation_id]
        ],
    )
    connection.execute(
        _INSERT_MESSAGES,
        [
            {
                "id": m.id,
                "consultation_id": m.consultation_id,
                "seq": m.seq,
                "sender_id": m.sender_id,
                "client_id": m.client_id,
                "body": m.body,
                "document_ids": [str(d) for d in m.document_ids],
                "created_at": m.created_at,
            }
            for m in messages
        ],
    )
