"""HTTP routes of recordings: the list of a consultation's files and a file itself."""

from __future__ import annotations

from aiohttp import web

from telemed import keys
from telemed.api import Call, ListOf, RawResponse, Routes
from telemed.jobs import register_job
from telemed.media import recordings
from telemed.media.models import RecordingPublic

routes = Routes(tag="recordings")


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


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, routes)
    register_job(app, "recording_purge", recordings.purge_recordings)
