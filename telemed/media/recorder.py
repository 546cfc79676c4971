"""Writing a participant's encoded VP8 and Opus frames into a WebM file, as they are
(a remux: no decoding, no encoding). The file is written by a thread of the recorder's
own, so a slow disk never holds up the event loop that forwards everyone's media. That
thread wakes every ``WRITE_EVERY`` seconds and writes what came meanwhile: woken for
each frame, the recorders' threads cost more CPU (thread switches, the interpreter lock
passed back and forth) than the rest of the relay's work on the frames.

The file starts at a video keyframe (audio before it is left out, so that the tracks
start together). Tracks are aligned by arrival time: each track's RTP clock is offset
so that its first frame lands at the moment it arrived after the file began. Clusters
are small and every packet is flushed to the file, so a file whose process was killed
mid-recording still decodes up to shortly before the kill (a cluster and a batch); a
file closed normally also has its cues (index) and duration, so it seeks.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
from aiortc.jitterbuffer import JitterFrame

from telemed.media.passthrough import vp8_is_keyframe

logger = logging.getLogger(__name__)

CLOCK = {"video": 90000, "audio": 48000}
TIME_BASE = {kind: fractions.Fraction(1, rate) for kind, rate in CLOCK.items()}
WRITE_EVERY = 0.1
"""Seconds between two batches of writes."""


@dataclass
class WrittenCounts:
    video: int = 0
    audio: int = 0


@dataclass
class RemuxRecorder:
    """One WebM file of one participant's audio and video."""

    path: Path
    kinds: tuple[str, ...]
    counts: WrittenCounts = field(default_factory=WrittenCounts)
    started: float | None = None
    """Monotonic time of the first written frame."""
    last: float | None = None

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(
            str(self.path),
            "w",
            format="webm",
            options={"flush_packets": "1", "cluster_time_limit": "500"},
        )
        self._streams: dict[str, av.stream.Stream] = {}
        for kind in self.kinds:
            if kind == "video":
                video = self._container.add_stream("libvpx", rate=30)
                video.width, video.height, video.pix_fmt = 640, 480, "yuv420p"
                video.time_base = TIME_BASE["video"]
                self._streams[kind] = video
            else:
                audio = self._container.add_stream("libopus", rate=48000)
                audio.time_base = TIME_BASE["audio"]
                self._streams[kind] = audio
        self._offset: dict[str, int] = {}
        self._waiting_for_keyframe = "video" in self.kinds
        self._closed = False
        # (kind, data, pts, keyframe): appended on the event loop, taken by the writer.
        self._pending: collections.deque[tuple[str, bytes, int, bool]] = collections.deque()
        self._closing = threading.Event()
        self._writer = threading.Thread(
            target=self._write_all, name=f"recorder-{self.path.stem}", daemon=True
        )
        self._writer.start()

    def write(self, kind: str, frame: JitterFrame) -> None:
        if self._closed or kind not in self._streams:
            return
        if self._waiting_for_keyframe:
            if kind != "video" or not vp8_is_keyframe(frame.data):
                return
            self._waiting_for_keyframe = False
        now = time.monotonic()
        if self.started is None:
            self.started = now
        if kind not in self._offset:
            self._offset[kind] = round((now - self.started) * CLOCK[kind]) - frame.timestamp
        pts = frame.timestamp + self._offset[kind]
        if pts < 0:
            return
        keyframe = False
        if kind == "video":
            keyframe = vp8_is_keyframe(frame.data)
            self.counts.video += 1
        else:
            self.counts.audio += 1
        self._pending.append((kind, frame.data, pts, keyframe))
        self.last = now

    @property
    def duration(self) -> float:
        if self.started is None or self.last is None:
            return 0.0
        return self.last - self.started

    async def close(self) -> None:
        """Write what is queued, the index and the duration, and close the file."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        await asyncio.to_thread(self._writer.join)

    def _write_all(self) -> None:
        try:
            closing = False
            while not closing:
                closing = self._closing.wait(WRITE_EVERY)
                while self._pending:
                    self._mux(*self._pending.popleft())
        finally:
            self._container.close()

    def _mux(self, kind: str, data: bytes, pts: int, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE[kind]
        packet.is_keyframe = keyframe
        packet.stream = self._streams[kind]
        try:
            self._container.mux(packet)
        except av.error.FFmpegError:
            logger.exception("a recording packet could not be written")
