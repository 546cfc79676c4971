"""Forwarding encoded media through aiortc without decoding or encoding it.

aiortc decodes every received track and encodes every sent one; a relay that does both
costs a core for a handful of streams. Two hooks turn it into a passthrough:

- ``tap_receiver``: an ``RTCRtpReceiver`` hands each re-assembled encoded frame to its
  decoder thread through a private ``queue.Queue``. Replacing that queue (inside
  ``pc.on("track")``, before the receiver starts) gives us every encoded frame; it
  reaches the decoder only while we ask for decoded frames (the media checks).
- ``PassthroughTrack``: a track whose ``recv()`` returns ``av.Packet`` makes
  ``RTCRtpSender`` re-packetise it as it is (no encoder).

Keyframes: a sender in that mode ignores its viewer's PLI/FIR, so ``forward_keyframe_
requests`` sends them to the publisher instead, and a viewer that starts (or falls
behind) waits for the next keyframe.

These hooks reach into aiortc's internals, so aiortc is pinned exactly and
``check_aiortc`` (run at start-up and by the tests) fails loudly if an upgrade moved
them.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import inspect
import logging
import queue
from collections.abc import Callable
from typing import Any

import av
from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

VIDEO_CLOCK = fractions.Fraction(1, 90000)
AUDIO_CLOCK = fractions.Fraction(1, 48000)
AIORTC_VERSION = "1.16.0"

FrameSink = Callable[[RTCRtpCodecParameters, JitterFrame], None]
"""Called on the event loop with each complete encoded frame a receiver gets."""

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


@functools.cache
def check_aiortc() -> None:
    """Fail if aiortc's internals the relay relies on are not where they were (read once
    per process: it reads aiortc's source)."""
    import aiortc

    problems = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc {aiortc.__version__} (the relay is written for {AIORTC_VERSION})")
    init = inspect.getsource(RTCRtpReceiver.__init__)
    if "self.__decoder_queue: queue.Queue = queue.Queue()" not in init:
        problems.append("RTCRtpReceiver no longer makes its decoder queue in __init__")
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    if "self.__decoder_queue.put((codec, encoded_frame))" not in handle:
        problems.append("RTCRtpReceiver no longer puts (codec, frame) on its decoder queue")
    if not inspect.iscoroutinefunction(getattr(RTCRtpReceiver, "_send_rtcp_pli", None)):
        problems.append("RTCRtpReceiver._send_rtcp_pli is gone")
    rtcp = inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    if "self._send_keyframe()" not in rtcp:
        problems.append("RTCRtpSender no longer calls _send_keyframe() on PLI/FIR")
    next_frame = inspect.getsource(RTCRtpSender._next_encoded_frame)
    if "self.__encoder.pack(data)" not in next_frame:
        problems.append("RTCRtpSender no longer re-packetises what a track gives unencoded")
    import aioice.ice

    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        problems.append("aioice.ice.get_host_addresses is gone (TELEMED_MEDIA_ADDRESSES)")
    if problems:
        raise RuntimeError("the media relay cannot run on this aiortc: " + "; ".join(problems))


def vp8_is_keyframe(data: bytes) -> bool:
    """RFC 6386, 9.1: bit 0 of the frame tag is 0 for a key frame."""
    return len(data) > 0 and (data[0] & 0x01) == 0


class Tap(queue.Queue[Any]):
    """Stands in for a receiver's decoder queue: sees every encoded frame first."""

    def __init__(self, sink: FrameSink) -> None:
        super().__init__()
        self.sink = sink
        self.decode = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # the receiver stopping: the decoder thread must see it
            super().put(item, block, timeout)
            return
        codec, frame = item
        try:
            self.sink(codec, frame)
        except Exception:  # a bug of ours must not break the RTP path
            logger.exception("media tap failed")
        if self.decode:
            super().put(item, block, timeout)


def tap_receiver(receiver: RTCRtpReceiver, sink: FrameSink) -> Tap:
    """Send ``receiver``'s encoded frames to ``sink``. Call inside ``pc.on("track")``
    (before the receiver starts its decoder). Frames are decoded (for ``track.recv()``)
    only while the returned tap's ``decode`` is true."""
    tap = Tap(sink)
    setattr(receiver, _DECODER_QUEUE, tap)
    return tap


def to_packet(kind: str, frame: JitterFrame) -> av.Packet[Any]:
    packet = av.Packet(frame.data)
    packet.pts = packet.dts = frame.timestamp
    packet.time_base = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
    return packet


class PassthroughTrack(MediaStreamTrack):
    """What one viewer receives of one publisher's camera or microphone: the publisher's
    encoded frames, re-packetised. It belongs to the publisher's identity, not to one
    connection: when the publisher reconnects, ``restart`` makes the frames of the new
    connection continue the old timeline. A video viewer starts at a keyframe; when it
    falls too far behind, frames are dropped until the next one, which is asked for."""

    def __init__(self, kind: str, *, ask_keyframe: Callable[[], None], backlog: int = 120) -> None:
        super().__init__()
        self.kind = kind
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue(maxsize=backlog)
        self._ask_keyframe = ask_keyframe
        self._step = 3000 if kind == "video" else 960  # one frame at 30 fps / 20 ms
        self._offset = 0
        self._last = -self._step
        self._rebase = True
        self.waiting_for_keyframe = kind == "video"
        self.forwarded = 0
        self.dropped = 0

    def restart(self) -> None:
        """The publisher's frames now come from a new connection (timestamps from 0)."""
        self._rebase = True
        if self.kind == "video":
            self.waiting_for_keyframe = True

    def feed(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        if self.readyState != "live":
            return
        if self.waiting_for_keyframe:
            if codec.mimeType.lower() == "video/vp8" and not vp8_is_keyframe(frame.data):
                self.dropped += 1
                return
            self.waiting_for_keyframe = False
        if self._rebase:
            self._offset = self._last + self._step - frame.timestamp
            self._rebase = False
        packet = to_packet(self.kind, frame)
        packet.pts = packet.dts = frame.timestamp + self._offset
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.kind == "video":
                self.waiting_for_keyframe = True
                self._ask_keyframe()
            return
        self._last = packet.pts
        self.forwarded += 1

    def finish(self) -> None:
        """No more frames: the sender stops."""
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self.stop()

    async def recv(self) -> av.Packet[Any]:  # a packet: the sender re-packetises it
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet


def forward_keyframe_requests(sender: RTCRtpSender, ask_publisher: Callable[[], None]) -> None:
    """A viewer's PLI/FIR reaches ``sender``, which (sending packets, not frames) has no
    encoder to obey it: pass it on to the publisher."""
    sender._send_keyframe = ask_publisher  # type: ignore[method-assign]


async def ask_keyframe(receiver: RTCRtpReceiver) -> None:
    """Send a PLI to the publisher of ``receiver``'s track: for every source it sends
    from (a browser also sends retransmissions and probes from an RTX source, which a
    PLI for does nothing; the one for the media source is what counts)."""
    for source in receiver.getSynchronizationSources():
        await receiver._send_rtcp_pli(source.source)
