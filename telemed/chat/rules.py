"""The chat's rules for one message: who may write, when, and what. Pure: no I/O.

``refusal`` gives the same answer for the same message whichever path stores it (the
group commit, ``service.store_batch``, or one by one, ``service.check_send``), whatever
else is in the batch, checking in one order: not a participant (``not_found``), the
chat closed (``invalid_state``; a resend of a message stored before it closed is
answered with that message instead), an empty or too long message (``invalid_input``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from telemed.errors import InvalidInput, InvalidState, NotFound, TelemedError
from telemed.scheduling.models import State
from telemed.scheduling.parties import in_chat
from telemed.settings import Settings

MAX_BODY = 4000
WRITABLE = frozenset({State.SCHEDULED, State.IN_PROGRESS})
AFTER_END = frozenset({State.COMPLETED, State.CONCLUDED})


@dataclass(frozen=True)
class Sender:
    """A chat participant as its socket knows it: the user's id, and a doctor's profile
    id (looked up once at connect; an archived doctor's account is closed, so their token
    stops working)."""

    user_id: uuid.UUID
    doctor_id: uuid.UUID | None


@dataclass(frozen=True)
class ChatFacts:
    """What the rules need to know of the consultation."""

    patient_id: uuid.UUID
    doctor_id: uuid.UUID | None
    state: State
    ended_at: datetime | None


class Refusal(Enum):
    NOT_FOUND = "not a participant (or no such consultation)"
    CLOSED = "the chat is closed"
    EMPTY = "the message is empty"
    TOO_LONG = "the message is too long"


def writable(facts: ChatFacts, *, now: datetime, settings: Settings) -> bool:
    """Open once a doctor is on the consultation; read-only some days after it ends
    (``TELEMED_CHAT_OPEN_DAYS_AFTER_END``), and at once if it is cancelled, declined or
    missed."""
    if facts.doctor_id is None:
        return False
    if facts.state in WRITABLE:
        return True
    if facts.state in AFTER_END and facts.ended_at is not None:
        return now < facts.ended_at + timedelta(days=settings.chat_open_days_after_end)
    return False


def refusal(
    facts: ChatFacts | None,
    *,
    sender: Sender,
    text: str,
    attachments: int,
    now: datetime,
    settings: Settings,
) -> Refusal | None:
    """Why the message (``text`` already stripped) may not be stored, or None."""
    if facts is None or not in_chat(
        user_id=sender.user_id,
        doctor_profile_id=sender.doctor_id,
        patient_id=facts.patient_id,
        doctor_id=facts.doctor_id,
    ):
        return Refusal.NOT_FOUND
    if not writable(facts, now=now, settings=settings):
        return Refusal.CLOSED
    if not text and not attachments:
        return Refusal.EMPTY
    if len(text) > MAX_BODY:
        return Refusal.TOO_LONG
    return None


def error(refused: Refusal, facts: ChatFacts | None) -> TelemedError:
    """The refusal as the client is told it."""
    if refused is Refusal.NOT_FOUND:
        return NotFound("Consultation not found")
    if refused is Refusal.CLOSED:
        state = facts.state.value if facts is not None else None
        return InvalidState("The chat is closed for this consultation", details={"state": state})
    if refused is Refusal.EMPTY:
        return InvalidInput("The message is empty", details={"field": "body"})
    return InvalidInput(f"A message is at most {MAX_BODY} characters", details={"field": "body"})
