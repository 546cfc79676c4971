"""Call quality kept per consultation and participant (``call_quality``), who may read it,
and the manager's report of calls by quality per centre.

The rooms measure (``telemed.media.quality``) and add what they measured to the row of
each participant, every half minute and when it leaves; a consultation held in several
room lives (a rejoin on another process) adds up in one row.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime

from pydantic import BaseModel, Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import db
from telemed.accounts.models import User
from telemed.clock import Clock
from telemed.errors import Forbidden
from telemed.media.models import CallQualityRecord
from telemed.media.quality import LEVELS, QualitySummary
from telemed.scheduling.consultations import centre_scope, get_consultation
from telemed.scheduling.models import Centre, Consultation
from telemed.scheduling.parties import Part, readable


class QualityLog:
    """Where the rooms of this process add what they measured."""

    def __init__(self, *, session_factory: db.SessionFactory, clock: Clock) -> None:
        self._session_factory = session_factory
        self._clock = clock

    async def add(
        self, *, consultation_id: uuid.UUID, user_id: uuid.UUID, gained: QualitySummary
    ) -> None:
        async with db.transaction(self._session_factory) as session:
            row = (
                await session.exec(
                    select(CallQualityRecord)
                    .where(
                        CallQualityRecord.consultation_id == consultation_id,
                        CallQualityRecord.user_id == user_id,
                    )
                    .with_for_update()
                )
            ).first()
            if row is None:
                row = CallQualityRecord(
                    consultation_id=consultation_id, user_id=user_id, updated_at=self._clock.now()
                )
                session.add(row)
            row.good_seconds += gained.seconds["good"]
            row.weak_seconds += gained.seconds["weak"]
            row.poor_seconds += gained.seconds["poor"]
            row.freezes += gained.freezes
            row.freeze_seconds += gained.freeze_seconds
            row.relay_seconds += gained.relay_seconds
            row.audio_only_seconds += gained.audio_only_seconds
            row.reports += gained.reports
            worst = gained.worst
            if worst is not None and (
                row.worst is None or LEVELS.index(worst["level"]) > LEVELS.index(row.worst["level"])
            ):
                row.worst = worst
            row.updated_at = self._clock.now()


class WorstMoment(BaseModel):
    level: str
    at: datetime
    rtt_ms: float | None = None
    loss: float | None = None
    video_fps: float | None = None
    concealed: float | None = None
    upload_loss: float | None = Field(default=None, description="The server's own figure")


class CallQualityPublic(BaseModel):
    user_id: uuid.UUID
    role: str = Field(description="`patient` or `doctor`")
    good_seconds: float
    weak_seconds: float
    poor_seconds: float
    freezes: int
    freeze_seconds: float
    relay_seconds: float = Field(description="Time through TURN")
    audio_only_seconds: float
    worst: WorstMoment | None = Field(description="The first moment at the worst level seen")
    updated_at: datetime


async def consultation_quality(
    session: AsyncSession, *, actor: User, consultation_id: uuid.UUID
) -> list[CallQualityPublic]:
    """The consultation's call quality, per participant: for its doctor and the manager."""
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id)
    if Part.CALL_QUALITY not in readable(
        seen.party, chat_member=False, patient_reads_recordings=False
    ):
        raise Forbidden("Call quality is for the doctor and the service's manager")
    consultation = seen.consultation
    rows = await session.exec(
        select(CallQualityRecord)
        .where(CallQualityRecord.consultation_id == consultation_id)
        .order_by(col(CallQualityRecord.updated_at))
    )
    return [
        CallQualityPublic(
            user_id=row.user_id,
            role="patient" if row.user_id == consultation.patient_id else "doctor",
            good_seconds=round(row.good_seconds, 1),
            weak_seconds=round(row.weak_seconds, 1),
            poor_seconds=round(row.poor_seconds, 1),
            freezes=row.freezes,
            freeze_seconds=round(row.freeze_seconds, 1),
            relay_seconds=round(row.relay_seconds, 1),
            audio_only_seconds=round(row.audio_only_seconds, 1),
            worst=WorstMoment.model_validate(row.worst) if row.worst else None,
            updated_at=row.updated_at,
        )
        for row in rows.all()
    ]


class CentreQuality(BaseModel):
    centre_id: uuid.UUID
    centre_name: str
    calls: int = Field(description="Consultations with a measured call")
    good_minutes: float = 0.0
    weak_minutes: float = 0.0
    poor_minutes: float = 0.0
    poor_calls: int = Field(default=0, description="Calls with a minute or more at `poor`")
    freezes: int = 0
    relay_minutes: float = Field(default=0.0, description="Through TURN")
    audio_only_minutes: float = 0.0


class QualityReport(BaseModel):
    by_centre: list[CentreQuality]


POOR_CALL_SECONDS = 60.0


async def quality_report(
    session: AsyncSession,
    *,
    actor: User,
    start: datetime | None = None,
    end: datetime | None = None,
) -> QualityReport:
    """Calls by quality per centre, of consultations starting in ``[start, end)``, for
    a manager: of the whole service, or of the centre the manager is bound to
    (``centre_scope``)."""
    statement = select(CallQualityRecord, Consultation).join(
        Consultation, col(Consultation.id) == col(CallQualityRecord.consultation_id)
    )
    centre_id = centre_scope(actor)
    if centre_id is not None:
        statement = statement.where(col(Consultation.centre_id) == centre_id)
    if start is not None:
        statement = statement.where(col(Consultation.starts_at) >= start)
    if end is not None:
        statement = statement.where(col(Consultation.starts_at) < end)
    names = {c.id: c.name for c in (await session.exec(select(Centre))).all()}
    centres: dict[uuid.UUID, CentreQuality] = {}
    poor: dict[uuid.UUID, float] = defaultdict(float)
    calls: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for row, consultation in (await session.exec(statement)).all():
        centre = centres.setdefault(
            consultation.centre_id,
            CentreQuality(
                centre_id=consultation.centre_id,
                centre_name=names.get(consultation.centre_id, ""),
                calls=0,
            ),
        )
        calls[consultation.centre_id].add(consultation.id)
        centre.good_minutes += row.good_seconds / 60
        centre.weak_minutes += row.weak_seconds / 60
        centre.poor_minutes += row.poor_seconds / 60
        centre.freezes += row.freezes
        centre.relay_minutes += row.relay_seconds / 60
        centre.audio_only_minutes += row.audio_only_seconds / 60
        poor[consultation.id] += row.poor_seconds
    for centre_id, centre in centres.items():
        centre.calls = len(calls[centre_id])
        centre.poor_calls = sum(poor[c] >= POOR_CALL_SECONDS for c in calls[centre_id])
        for name in (
            "good_minutes",
            "weak_minutes",
            "poor_minutes",
            "relay_minutes",
            "audio_only_minutes",
        ):
            setattr(centre, name, round(getattr(centre, name), 1))
    return QualityReport(by_centre=sorted(centres.values(), key=lambda c: c.centre_name))
