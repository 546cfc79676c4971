"""HTTP routes of the video room: join tokens, recordings (the list of a consultation's
files and a file itself), and call quality (a consultation's, and the manager's report
by centre)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, Field

from telemed import keys
from telemed.accounts.models import Role
from telemed.api import Call, Instant, ListOf, RawResponse, RequestModel, Routes
from telemed.jobs import register_job
from telemed.media import quality_log, recordings
from telemed.media.models import RecordingPublic
from telemed.media.service import check_issue_join_token

routes = Routes(tag="recordings")
room_routes = Routes(tag="room")
quality_routes = Routes(tag="call quality")


class JoinTokenOut(BaseModel):
    token: str = Field(description="For `auth: {token}` on Socket.IO; refused by the HTTP API")
    expires_at: datetime
    url: str = Field(
        description="The embeddable room with this token, relative to the server: "
        "`/embed/consultations/<id>?token=<token>`"
    )


@room_routes.post("/consultations/{id}/join-token", status=201, errors=(409,))
async def issue_join_token(call: Call) -> JoinTokenOut:
    """POST /consultations/{id}/join-token: a short-lived token for the consultation's
    video room alone (web, embed, app), for its patient or its doctor while the room is
    open to them.

    The token lives until the planned end plus an hour (at most four hours); the HTTP
    API refuses it (403) except ``GET /me/preferences`` and ``POST /auth/logout`` (which ends it),
    and on Socket.IO it acts on this consultation only. It never sets the cookie.
    """
    consultation_id = call.path_id()
    token, join_session = await check_issue_join_token(
        call.session,
        actor=call.user,
        now=call.now,
        settings=call.settings,
        consultation_id=consultation_id,
        user_agent=call.request.headers.get("User-Agent"),
        address=call.address,
    )
    return JoinTokenOut(
        token=token,
        expires_at=join_session.expires_at,
        url=f"/embed/consultations/{consultation_id}?{urlencode({'token': token})}",
    )


@routes.get("/consultations/{id}/recordings")
async def list_recordings(call: Call) -> ListOf[RecordingPublic]:
    """GET /consultations/{id}/recordings: the consultation's recording files (one per
    participant and segment), for its doctor and the manager (and its patient if
    ``TELEMED_RECORDING_PATIENT_ACCESS``)."""
    rows = await recordings.list_recordings(
        call.session, actor=call.user, consultation_id=call.path_id(), settings=call.settings
    )
    return ListOf[RecordingPublic](items=[RecordingPublic.model_validate(r) for r in rows])


@routes.get(
    "/recordings/{id}/file",
    raw_response=RawResponse(
        content_types=("video/webm",), description="The WebM file (VP8 video, Opus audio)"
    ),
    writes=True,
)
async def download_recording(call: Call) -> web.StreamResponse:
    """GET /recordings/{id}/file: a recording file (audited)."""
    recording, path = await recordings.get_recording_file(
        call.session,
        actor=call.user,
        recording_id=call.path_id(),
        settings=call.settings,
        now=call.now,
        address=call.address,
    )
    name = f"consultation-{recording.consultation_id}-{recording.segment}.webm"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "video/webm",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


@quality_routes.get("/consultations/{id}/call-quality")
async def consultation_quality(call: Call) -> ListOf[quality_log.CallQualityPublic]:
    """GET /consultations/{id}/call-quality: how each participant's calls went (time by
    level, freezes, the worst moment, time through TURN and on audio only), for the
    consultation's doctor and the manager."""
    items = await quality_log.consultation_quality(
        call.session, actor=call.user, consultation_id=call.path_id()
    )
    return ListOf[quality_log.CallQualityPublic](items=items)


class QualityQuery(RequestModel):
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None


@quality_routes.get("/call-quality", roles=(Role.MANAGER,))
async def quality_report(call: Call, query: QualityQuery) -> quality_log.QualityReport:
    """GET /call-quality: calls by quality per centre, of consultations starting in
    ``[from, to)``: minutes by level, calls with a minute or more at `poor`, freezes,
    minutes through TURN and on audio only (of the manager's centre only, for a manager
    bound to one)."""
    return await quality_log.quality_report(
        call.session, actor=call.user, start=query.from_, end=query.to
    )


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, room_routes)
    app[keys.API].include(app, routes)
    app[keys.API].include(app, quality_routes)
    register_job(app, "recording_purge", recordings.purge_recordings)
