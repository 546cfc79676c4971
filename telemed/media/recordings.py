"""Recording metadata, who may fetch recordings, and how long they are kept.

The rooms write the files (``telemed.media.recorder``); this module keeps the
``recording`` table in step (a row when a file opens, its size, duration and SHA-256
when it closes), answers who may list and download them (the doctor and the manager;
the patient if ``TELEMED_RECORDING_PATIENT_ACCESS``), audits every download, and purges
files older than ``TELEMED_RECORDING_RETENTION_DAYS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit, db, keys
from telemed.accounts.models import User
from telemed.clock import Clock
from telemed.errors import Forbidden, NotFound
from telemed.media.models import Recording, RecordingState
from telemed.scheduling.consultations import get_consultation
from telemed.scheduling.parties import Part, readable
from telemed.settings import Settings

logger = logging.getLogger(__name__)


class RecordingLog:
    """What the rooms of this process tell the database about their files: a row when a
    file opens, its size, duration and digest when it closes. The files go under
    ``recordings/`` in the data directory; rows keep their paths relative to it."""

    def __init__(
        self,
        *,
        session_factory: db.SessionFactory,
        clock: Clock,
        data_dir: Path,
        node: str = "",
        alive: Callable[[str], bool] = lambda node: False,
    ) -> None:
        """``node`` is this process (``telemed.cluster``); ``alive`` tells whether a
        process is alive, so that only the files of dead ones count as interrupted."""
        self._session_factory = session_factory
        self._clock = clock
        self._data_dir = data_dir
        self._node = node
        self._alive = alive

    @property
    def root(self) -> Path:
        """The directory of the recording files."""
        return self._data_dir / "recordings"

    async def next_segment(self, *, consultation_id: uuid.UUID, user_id: uuid.UUID) -> int:
        async with self._session_factory() as session:
            last = await session.scalar(
                select(func.max(Recording.segment)).where(
                    Recording.consultation_id == consultation_id, Recording.user_id == user_id
                )
            )
        return (last or 0) + 1

    async def interrupted(self, consultation_id: uuid.UUID) -> int:
        """Close, as interrupted, the consultation's files still being written by a
        process that is gone (called when a room opens: a process that died could not
        close them; one handing its room over closes its own). The file keeps what was
        written (a WebM cut short plays up to where it stops)."""
        async with db.transaction(self._session_factory) as session:
            rows = await session.exec(
                select(Recording).where(
                    Recording.consultation_id == consultation_id,
                    Recording.state == RecordingState.RECORDING,
                )
            )
            left = [
                row for row in rows.all() if row.node != self._node and not self._alive(row.node)
            ]
            for recording in left:
                size, digest = await asyncio.to_thread(
                    _size_and_digest, self._data_dir / recording.path
                )
                recording.state = RecordingState.INTERRUPTED
                recording.ended_at = self._clock.now()
                recording.size = size
                recording.sha256 = digest
                session.add(recording)
        if left:
            logger.warning(
                "consultation %s: %d recording file(s) left open by a stopped process",
                consultation_id,
                len(left),
            )
        return len(left)

    async def opened(
        self, *, consultation_id: uuid.UUID, user_id: uuid.UUID, segment: int, path: Path
    ) -> uuid.UUID:
        recording = Recording(
            consultation_id=consultation_id,
            user_id=user_id,
            segment=segment,
            path=str(path.relative_to(self._data_dir)),
            node=self._node,
            state=RecordingState.RECORDING,
            started_at=self._clock.now(),
        )
        async with db.transaction(self._session_factory) as session:
            session.add(recording)
        return recording.id

    async def closed(
        self,
        recording_id: uuid.UUID,
        *,
        path: Path,
        duration: float,
        video_frames: int,
        audio_frames: int,
    ) -> None:
        size, digest = await asyncio.to_thread(_size_and_digest, path)
        async with db.transaction(self._session_factory) as session:
            recording = await session.get(Recording, recording_id)
            if recording is None:
                return
            recording.state = RecordingState.COMPLETE
            recording.ended_at = self._clock.now()
            recording.duration_seconds = round(duration, 3)
            recording.size = size
            recording.sha256 = digest
            recording.video_frames = video_frames
            recording.audio_frames = audio_frames
            session.add(recording)


def _size_and_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    if not path.exists():  # nothing was written (no keyframe came): an empty recording
        return size, digest.hexdigest()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def _may_fetch(
    session: AsyncSession, *, actor: User, consultation_id: uuid.UUID, settings: Settings
) -> None:
    seen = await get_consultation(session, actor=actor, consultation_id=consultation_id)
    parts = readable(
        seen.party, chat_member=False, patient_reads_recordings=settings.recording_patient_access
    )
    if Part.RECORDINGS not in parts:
        raise Forbidden("Recordings are available to the doctor and the service's manager")


async def list_recordings(
    session: AsyncSession, *, actor: User, consultation_id: uuid.UUID, settings: Settings
) -> list[Recording]:
    await _may_fetch(session, actor=actor, consultation_id=consultation_id, settings=settings)
    rows = await session.exec(
        select(Recording)
        .where(Recording.consultation_id == consultation_id)
        .order_by(col(Recording.started_at), col(Recording.segment))
    )
    return list(rows.all())


async def get_recording_file(
    session: AsyncSession,
    *,
    actor: User,
    recording_id: uuid.UUID,
    settings: Settings,
    now: datetime,
    address: str | None,
) -> tuple[Recording, Path]:
    """A recording's file for download (audited)."""
    recording = await session.get(Recording, recording_id)
    if recording is None:
        raise NotFound("Recording not found")
    try:
        await _may_fetch(
            session, actor=actor, consultation_id=recording.consultation_id, settings=settings
        )
    except NotFound:
        raise NotFound("Recording not found") from None
    path = settings.data_dir / recording.path
    if not path.is_file():
        raise NotFound("The recording's file is no longer kept")
    consultation = await get_consultation(
        session, actor=actor, consultation_id=recording.consultation_id
    )
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="recording.downloaded",
        object_type="recording",
        object_id=recording.id,
        subject_id=consultation.consultation.patient_id,
        address=address,
    )
    return recording, path


async def purge_recordings(app: web.Application, now: datetime) -> int:
    """Delete the recordings older than the retention period: files, then rows."""
    settings = app[keys.SETTINGS]
    cutoff = now - timedelta(days=settings.recording_retention_days)
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        rows = await session.exec(
            select(Recording)
            # A file still "recording" that old was left by a process that died.
            .where(col(Recording.started_at) < cutoff)
            .limit(500)
            .with_for_update(skip_locked=True)
        )
        old = list(rows.all())
        for recording in old:
            (settings.data_dir / recording.path).unlink(missing_ok=True)
            audit.record(
                session,
                now=now,
                actor_id=None,
                action="recording.purged",
                object_type="recording",
                object_id=recording.id,
            )
            await session.delete(recording)
    return len(old)
