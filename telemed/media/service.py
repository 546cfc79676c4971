"""Who may enter a consultation's video room, and when."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from telemed.accounts.models import User
from telemed.errors import Forbidden, InvalidState
from telemed.scheduling.consultations import (
    check_session_window,
    check_start,
    get_consultation,
)
from telemed.scheduling.lifecycle import Party
from telemed.scheduling.models import Consultation, State
from telemed.settings import Settings


async def check_join(
    session: AsyncSession,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    consultation_id: uuid.UUID,
) -> tuple[Consultation, Party]:
    """The consultation's patient or doctor enters its room: from ``room_opens_minutes``
    before the start until the end of its time (plus the no-show grace) while it is
    scheduled, and any time while it is in progress. The patient may wait for the
    doctor; the doctor's entry starts the consultation."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id, lock=True)
    consultation = seen.consultation
    if seen.party not in (Party.PATIENT, Party.DOCTOR):
        raise Forbidden("Only the consultation's patient and doctor enter its room")
    if consultation.state is State.IN_PROGRESS:
        return consultation, seen.party
    if consultation.state is not State.SCHEDULED:
        raise InvalidState(
            "The consultation is not taking place",
            details={"state": str(consultation.state)},
        )
    check_session_window(consultation, now=now, settings=settings)
    if seen.party is Party.DOCTOR:
        consultation = await check_start(
            session, actor=actor, now=now, settings=settings, consultation_id=consultation_id
        )
    return consultation, seen.party
