"""Who may enter a consultation's video room, and when; join tokens for the room."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit
from telemed.accounts.models import AuthSession, User
from telemed.accounts.service import do_start_session
from telemed.errors import Forbidden, InvalidState
from telemed.scheduling.consultations import (
    Seen,
    check_session_window,
    check_start,
    get_consultation,
)
from telemed.scheduling.lifecycle import Party
from telemed.scheduling.models import Consultation, State
from telemed.settings import Settings

JOIN_TOKEN_MARGIN = timedelta(hours=1)
"""A join token outlives the consultation's planned end by this much: consultations run
over, and a token that dies mid-call cuts the room's socket off."""
JOIN_TOKEN_MAX_TTL = timedelta(hours=4)
"""A join token never lives longer than this, whatever the consultation's times."""


def check_admission(seen: Seen, *, now: datetime, settings: Settings) -> None:
    """The room's admission rule: only the consultation's patient and doctor, while it is
    in progress, or while it is scheduled from ``room_opens_minutes`` before its start
    until the end of its time plus the no-show grace.

    Raises ``Forbidden`` (a manager: not a participant), ``InvalidState`` (not taking
    place) or ``TooLate`` (outside the window, with ``opens_at`` or ``closed_at``)."""
    if seen.party not in (Party.PATIENT, Party.DOCTOR):
        raise Forbidden("Only the consultation's patient and doctor enter its room")
    consultation = seen.consultation
    if consultation.state is State.IN_PROGRESS:
        return
    if consultation.state is not State.SCHEDULED:
        raise InvalidState(
            "The consultation is not taking place",
            details={"state": str(consultation.state)},
        )
    check_session_window(consultation, now=now, settings=settings)


async def check_join(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
) -> tuple[Consultation, Party]:
    """The consultation's patient or doctor enters its room (``check_admission``). The
    patient may wait for the doctor; the doctor's entry starts the consultation."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    check_admission(seen, now=now, settings=settings)
    consultation = seen.consultation
    if consultation.state is State.SCHEDULED and seen.party is Party.DOCTOR:
        consultation = await check_start(
            session, actor=actor, now=now, settings=settings, consultation_id=consultation_id
        )
    return consultation, seen.party


def join_token_expiry(consultation: Consultation, *, now: datetime) -> datetime:
    """The planned end plus ``JOIN_TOKEN_MARGIN`` (counted from now if the consultation
    already runs over), at most ``JOIN_TOKEN_MAX_TTL`` from now."""
    assert consultation.ends_at is not None  # scheduled and in-progress ones have a time
    return min(max(consultation.ends_at, now) + JOIN_TOKEN_MARGIN, now + JOIN_TOKEN_MAX_TTL)


async def check_issue_join_token(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
    user_agent: str | None = None,
    address: str | None = None,
) -> tuple[str, AuthSession]:
    """A join token of ``actor`` for the consultation's room: a session that the HTTP
    API refuses and that acts on this consultation only over Socket.IO, so that it can
    be put in an embed URL. Returns the token (shown once) and its row; audited.

    Only when the room would admit the actor now (``check_admission``): someone with no
    part in the consultation gets ``NotFound``, a manager ``Forbidden``, a consultation
    not taking place ``InvalidState`` and one outside its window ``TooLate``. Nothing
    is started: the doctor's ``room:join`` does that."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id)
    check_admission(seen, now=now, settings=settings)
    consultation = seen.consultation
    token, join_session = await do_start_session(
        session,
        user=actor,
        now=now,
        ttl=join_token_expiry(consultation, now=now) - now,
        user_agent=user_agent,
        consultation_id=consultation.id,
    )
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="join_token.issued",
        object_type="consultation",
        object_id=consultation.id,
        subject_id=consultation.patient_id,
        address=address,
        details={
            "session_id": str(join_session.id),
            "expires_at": join_session.expires_at.isoformat(),
        },
    )
    return token, join_session
