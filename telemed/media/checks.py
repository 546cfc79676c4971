"""Does a participant's camera show something, and does its microphone pick up sound?

The first seconds of each published track are decoded (by aiortc's own decoder thread:
the relay's source assembles frames and hands them to it only for the check), then
decoding stops and the relay goes back to forwarding packets only. What the browser said of its
devices (``media:report``: permission granted or denied, no device, device busy) and
what the server saw make one status per participant, sent to the room as
``media:status_changed``: "camera OK, microphone silent" for the doctor to see.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from telemed.media.forwarding import Source

CHECK_SECONDS = 3.0
"""How long a track is decoded once its first frame arrived."""
FIRST_FRAME_SECONDS = 6.0
"""A track with no frame after this long is reported as giving none."""
BLACK_LUMA = 30
"""Mean luma (0–255, video range starts at 16) under which a picture counts as black."""
SILENT_DBFS = -50.0
"""The loudest 20 ms of the check under this level (dB of full scale): silence."""

F = TypeVar("F", av.VideoFrame, av.AudioFrame)

Permission = Literal["unknown", "granted", "denied", "no_device", "busy", "unsupported"]
State = Literal["waiting", "checking", "ok", "black", "silent", "no_frames", "missing"]


@dataclass
class CameraStatus:
    permission: Permission = "unknown"
    enabled: bool = True  # the user's own switch in the page
    state: State = "waiting"
    frames: int = 0
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass
class MicrophoneStatus:
    permission: Permission = "unknown"
    enabled: bool = True  # the user's own switch in the page (muted: False)
    state: State = "waiting"
    frames: int = 0
    level_dbfs: float | None = None


@dataclass
class MediaStatus:
    camera: CameraStatus = field(default_factory=CameraStatus)
    microphone: MicrophoneStatus = field(default_factory=MicrophoneStatus)


async def check_camera(track: MediaStreamTrack, source: Source, status: CameraStatus) -> None:
    """Decode the first seconds of a video track into ``status``."""
    status.state = "checking"
    lumas: list[float] = []

    def seen(frame: av.VideoFrame) -> None:
        status.frames += 1
        status.width, status.height = frame.width, frame.height
        if status.frames % 5 == 1:
            lumas.append(_mean_luma(frame))

    elapsed = await _first_seconds(track, source, av.VideoFrame, seen)
    if elapsed is None:
        status.state = "no_frames"
        return
    status.fps = round((status.frames - 1) / elapsed, 1) if elapsed > 0 else None
    status.state = "black" if max(lumas) < BLACK_LUMA else "ok"


async def check_microphone(
    track: MediaStreamTrack, source: Source, status: MicrophoneStatus
) -> None:
    """Decode the first seconds of an audio track into ``status``."""
    status.state = "checking"
    loudest = 0.0

    def heard(frame: av.AudioFrame) -> None:
        nonlocal loudest
        status.frames += 1
        loudest = max(loudest, _rms(frame))

    if await _first_seconds(track, source, av.AudioFrame, heard) is None:
        status.state = "no_frames"
        return
    status.level_dbfs = round(20 * math.log10(loudest / 32768), 1) if loudest > 0 else -120.0
    status.state = "silent" if status.level_dbfs < SILENT_DBFS else "ok"


async def _first_seconds(
    track: MediaStreamTrack, source: Source, kind: type[F], take: Callable[[F], None]
) -> float | None:
    """Give ``take`` the frames decoded in the ``CHECK_SECONDS`` after the first one
    (waiting at most ``FIRST_FRAME_SECONDS`` for it); returns the seconds they span, or
    ``None`` when no frame came."""
    started: float | None = None
    async with _decoding(source):
        with contextlib.suppress(TimeoutError, MediaStreamError):
            async with asyncio.timeout(FIRST_FRAME_SECONDS + CHECK_SECONDS):
                while started is None or time.monotonic() - started < CHECK_SECONDS:
                    frame = await track.recv()
                    if not isinstance(frame, kind):
                        continue
                    if started is None:
                        started = time.monotonic()
                    take(frame)
    return None if started is None else time.monotonic() - started


@contextlib.asynccontextmanager
async def _decoding(source: Source) -> AsyncIterator[None]:
    source.decode = True
    try:
        yield
    finally:
        source.decode = False


def _mean_luma(frame: av.VideoFrame) -> float:
    """Mean brightness of a small grey copy of the picture."""
    small = frame.reformat(width=32, height=24, format="gray")
    plane = small.planes[0]
    data = bytes(plane)
    rows = [data[row * plane.line_size : row * plane.line_size + 32] for row in range(24)]
    return sum(sum(row) for row in rows) / (32 * 24)


def _rms(frame: av.AudioFrame) -> float:
    """Root mean square of a frame's samples (every second one is enough); aiortc's Opus
    decoder gives packed 16-bit stereo."""
    if frame.format.name != "s16":
        frame = av.AudioResampler(format="s16", layout="stereo", rate=48000).resample(frame)[0]
    samples = array.array("h", bytes(frame.planes[0]))[::2]
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))
