"""Forwarding RTP packets from a publisher's leg to its viewers' legs, inside aiortc.

aiortc's receiving path turns packets into frames (depacketising, a jitter buffer) and
its sending path turns frames back into packets; for a relay that forwards media
unchanged both are wasted work, packet by packet. Here a packet goes from one leg to the
other as a packet:

- ``Source`` takes over an ``RTCRtpReceiver``'s packet handling (its
  ``_handle_rtp_packet``, called by the DTLS transport after SRTP; a copy of aiortc's
  own up to RTX unwrapping and NACK generation, so the publisher still gets its REMB,
  receiver reports, NACKs and PLIs). Each packet goes to its viewers' streams; frames are
  assembled (aiortc's jitter buffer) only while someone wants them: the camera and
  microphone check (frames to aiortc's decoder, ``decode``) or the recording
  (``frames``).
- ``ForwardedStream`` is what one viewer receives of one publisher's track: it sends
  each packet on the viewer's transport with the viewer's numbers
  (``telemed.media.rewriting``), as its ``RTCRtpSender`` would, and keeps that sender's
  books (the counts and times of its RTCP sender reports). The sender's own RTP loop
  waits on a ``ParkedTrack`` that never gives a frame. A viewer's NACK is answered from
  the ``Source``'s packet cache (over RTX); a PLI/FIR is passed to the publisher; a
  video stream starts at a keyframe (and asks for one).

These reach into aiortc's private attributes; ``telemed.media.passthrough.check_aiortc``
fails at start-up if any of them moved.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import pylibsrtp
from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender
from aiortc.clock import current_datetime
from aiortc.codecs import depayload, is_rtx
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics, TimestampMapper
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)

from telemed.media.bandwidth import publisher_limit
from telemed.media.rewriting import (
    ExtensionIds,
    Numbers,
    Timeline,
    abs_send_time,
    audio_level_byte,
    ntp_time,
    rtp_packet,
    rtx_payload,
    seq_newer,
    vp8_picture_id,
    vp8_picture_id_at,
    vp8_starts_keyframe,
    with_vp8_picture_id,
)

logger = logging.getLogger(__name__)

FrameSink = Callable[[RTCRtpCodecParameters, JitterFrame], None]
"""Called on the event loop with each complete encoded frame a receiver gets."""

CACHE_SIZE = 512
"""Video packets kept to answer viewers' NACKs: about 5 s at 1 Mbit/s (a power of 2)."""
SEEN_REFRESH_MS = 1000
"""How often a source's "last seen" (``getSynchronizationSources``) is brought up to date."""


GAP_MS = 1000
"""Nothing from a publisher for this long: frames are assembled anew (a new jitter
buffer, a keyframe asked for)."""


class PacketCache:
    """The last ``CACHE_SIZE`` packets of a source, by sequence number."""

    def __init__(self) -> None:
        self._packets: list[RtpPacket | None] = [None] * CACHE_SIZE

    def add(self, packet: RtpPacket) -> None:
        self._packets[packet.sequence_number % CACHE_SIZE] = packet

    def get(self, seq: int) -> RtpPacket | None:
        packet = self._packets[seq % CACHE_SIZE]
        return packet if packet is not None and packet.sequence_number == seq else None


class Source:
    """A publisher's track as the relay receives it (one per receiver: a new connection
    of the publisher is a new source). Install with ``Source(receiver, kind, ...)``
    inside ``pc.on("track")``; each packet then goes to ``viewers()``'s streams, and
    frames to ``frames()`` (recording) and, while ``decode`` is set, to aiortc's decoder
    (``receiver.track.recv()``)."""

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        kind: str,
        *,
        viewers: Callable[[], Iterable[ForwardedStream]],
        frames: Callable[[], FrameSink | None] = lambda: None,
    ) -> None:
        self.kind = kind
        self.receiver = receiver
        self.viewers = viewers
        self.frames_to = frames
        self.decode = False
        """Frames go to aiortc's decoder (the media check)."""
        self.frames = 0
        """Frames received (distinct timestamps of packets in order)."""
        self.packets = 0
        self.failures = 0
        self.cache = PacketCache() if kind == "video" else None
        # aiortc's receiver state (dicts and objects it makes once and fills in place).
        state = receiver.__dict__
        self._codecs: dict[int, RTCRtpCodecParameters] = state["_RTCRtpReceiver__codecs"]
        self._rtx_ssrc: dict[int, int] = state["_RTCRtpReceiver__rtx_ssrc"]
        self._streams: dict[int, StreamStatistics] = state["_RTCRtpReceiver__remote_streams"]
        self._active: dict[int, Any] = state["_RTCRtpReceiver__active_ssrc"]
        self._estimator = state["_RTCRtpReceiver__remote_bitrate_estimator"]
        self._nack: NackGenerator | None = state["_RTCRtpReceiver__nack_generator"]
        self._decoder_queue = state["_RTCRtpReceiver__decoder_queue"]
        self._decoder_error = state["_RTCRtpReceiver__decoder_error"]
        self._seen: dict[int, int] = {}
        self._highest: int | None = None
        self._last_timestamp: int | None = None
        self._buffer: JitterBuffer | None = None
        self._timestamps = TimestampMapper()
        self._own_estimate: tuple[int, list[int]] | None = None
        self._limit: int | None = None
        self.remb: int | None = None
        """The last REMB sent to the publisher (bits/s)."""
        self.last_arrival_ms: int | None = None
        """When the last packet came (``aiortc.clock.current_ms``)."""
        receiver._handle_rtp_packet = self._handle_rtp_packet  # type: ignore[method-assign] # aiortc's hook point

    def statistics(self) -> list[StreamStatistics]:
        """aiortc's counts of each source the publisher sends from (packets lost and
        expected: the upload's loss)."""
        return list(self._streams.values())

    async def limit(self, bitrate: int | None) -> None:
        """Hold the publisher to ``bitrate`` (bits/s; None: no limit but its link's):
        from now on the REMB the relay sends it says no more (video only: aiortc
        estimates on video receivers)."""
        if bitrate == self._limit:
            return
        self._limit = bitrate
        await self._send_remb()

    async def _send_remb(self) -> None:
        """Tell the publisher what to send at most: the relay's estimate of its link,
        lowered to the limit (``telemed.media.bandwidth.publisher_limit``)."""
        if self._own_estimate is None:
            return
        own, ssrcs = self._own_estimate
        bitrate = publisher_limit(own, [self._limit])
        rtcp_ssrc = self.receiver.__dict__["_RTCRtpReceiver__rtcp_ssrc"]
        if rtcp_ssrc is None:
            return
        self.remb = bitrate
        packet = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)
        )
        await self.receiver._send_rtcp(packet)

    @property
    def assembling(self) -> bool:
        """Whether frames are being assembled (a check or a recording wants them)."""
        return self._buffer is not None

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc's ``RTCRtpReceiver._handle_rtp_packet`` (1.16.0) up to NACK generation,
        then forwarding, then frames only if wanted."""
        receiver = self.receiver
        if not receiver._enabled:
            return
        previous, self.last_arrival_ms = self.last_arrival_ms, arrival_time_ms
        if previous is not None and arrival_time_ms - previous > GAP_MS:
            # The publisher's network dropped for a while and came back on the same
            # connection: what the jitter buffer waits for will never come, and what was
            # lost meanwhile is not asked for again (the publisher's history holds the
            # last moment of the drop at most, and old packets would only make the
            # frames be assembled from the wrong place): a fresh start at a keyframe.
            if self._nack is not None:
                self._nack.max_seq = None
                self._nack.missing.clear()
            if self._buffer is not None:
                self._buffer = None
                if self.kind == "video":
                    await receiver._send_rtcp_pli(packet.ssrc)
        estimator = self._estimator
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if remb is not None:
                self._own_estimate = remb
                await self._send_remb()

        # The sources seen (keyframe requests go to each): aiortc notes a datetime per
        # packet; once a second is enough for its 10-second window.
        if arrival_time_ms - self._seen.get(packet.ssrc, -SEEN_REFRESH_MS) >= SEEN_REFRESH_MS:
            self._seen[packet.ssrc] = arrival_time_ms
            self._active[packet.ssrc] = current_datetime()

        codec = self._codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self._streams.get(packet.ssrc)
        if stream is None:
            stream = self._streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)

        if is_rtx(codec):
            original_ssrc = self._rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if (
                original_ssrc is None
                or len(packet.payload) < 2
                or not isinstance(apt, int)
                or apt not in self._codecs
            ):
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
            codec = self._codecs[apt]

        seq = packet.sequence_number
        nack = self._nack
        if nack is not None:
            # A packet seen before (a retransmission that crossed the original, a
            # browser's probe) is not sent again: SRTP would refuse it as a replay.
            fresh = nack.max_seq is None or seq_newer(seq, nack.max_seq) or seq in nack.missing
            if nack.add(packet):
                await receiver._send_rtcp_nack(packet.ssrc, sorted(nack.missing))
        else:
            fresh = True
        newest = self._highest is None or seq_newer(seq, self._highest)
        if newest:
            self._highest = seq
            if packet.timestamp != self._last_timestamp:
                self._last_timestamp = packet.timestamp
                self.frames += 1
        self.packets += 1

        if fresh:
            if self.cache is not None:
                self.cache.add(packet)
            now = time.time()
            for viewer in self.viewers():
                try:
                    await viewer.send(packet, codec, self, now)
                except Exception:  # a bug of ours must not end the publisher's connection
                    self.failures += 1
                    if self.failures % 1000 == 1:
                        logger.exception("forwarding failed (%d times)", self.failures)

        sink = self.frames_to()
        if sink is None and not self.decode:
            self._buffer = None
            return
        if fresh:  # a copy of one seen before, or one too old to be asked for, adds nothing
            await self._assemble(packet, codec, sink)

    async def _assemble(
        self, packet: RtpPacket, codec: RTCRtpCodecParameters, sink: FrameSink | None
    ) -> None:
        """aiortc's frame path: depacketise, re-assemble, hand complete frames on."""
        if self._buffer is None:  # (again): what an earlier one held is stale
            self._buffer = (
                JitterBuffer(capacity=512, is_video=True)
                if self.kind == "video"
                else JitterBuffer(capacity=16, prefetch=4)
            )
        try:
            packet._data = depayload(codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined] # what aiortc's jitter buffer reads
        except ValueError:
            return
        pli, frame = self._buffer.add(packet)
        if self.decode and self._decoder_error.is_set():
            self._decoder_error.clear()
            pli = pli or self.kind == "video"
        if pli:
            await self.receiver._send_rtcp_pli(packet.ssrc)
        if frame is None:
            return
        frame.timestamp = self._timestamps.map(frame.timestamp)
        if sink is not None:
            try:
                sink(codec, frame)
            except Exception:  # a bug of ours must not break the RTP path
                logger.exception("a frame sink failed")
        if self.decode and self.receiver.__dict__["_RTCRtpReceiver__decoder_thread"]:
            self._decoder_queue.put((codec, frame))


class ParkedTrack(MediaStreamTrack):
    """Stands for a forwarded stream in its transceiver (the m-line, the msid). It never
    gives a frame: its sender's RTP loop waits on it at no cost, while the stream's
    packets are sent by ``ForwardedStream``. Stopping it ends that loop."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stopped.set()


class ForwardedStream:
    """What one viewer receives of one publisher's camera or microphone. It belongs to the
    publisher's identity, not to one connection of it: the packets of a new connection
    (a new ``Source``) continue the same timeline. Video starts at a keyframe, asked for
    with ``ask_keyframe`` (also passed the viewer's PLI/FIR)."""

    def __init__(self, kind: str, *, ask_keyframe: Callable[[], None]) -> None:
        self.kind = kind
        self.track = ParkedTrack(kind)
        self.timeline = Timeline(
            kind, first_seq=random.getrandbits(15), first_timestamp=random.getrandbits(32)
        )
        self.waiting_for_keyframe = kind == "video"
        self.forwarded = 0
        """Packets sent to the viewer."""
        self.dropped = 0
        """Packets not sent: before the viewer's connection was up, or waiting for a keyframe."""
        self.retransmitted = 0
        self.paused = False
        """Audio only for this viewer: video packets are not sent (``pause``)."""
        self.on_estimate: Callable[[int], None] | None = None
        """Called with each REMB of the viewer that names this stream (bits/s)."""
        self._ask_keyframe = ask_keyframe
        self._sender: RTCRtpSender | None = None
        self._numbers: Numbers | None = None
        self._source: Source | None = None
        self._ssrc: int | None = None
        self._rtx_seq = random.getrandbits(15)
        self._picture_ids = False

    def attach(self, sender: RTCRtpSender) -> None:
        """Send through ``sender`` (the viewer connection's, made for ``track``): its
        numbers are learnt when aiortc starts it, its NACKs answered from the cache."""
        self._sender = sender
        start = sender.send

        async def send(parameters: RTCRtpSendParameters) -> None:
            await start(parameters)
            self._started(sender, parameters)

        handle_rtcp = sender._handle_rtcp_packet

        async def rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                self._remb(packet)
            await handle_rtcp(packet)

        sender.send = send  # type: ignore[method-assign] # learn the negotiated numbers
        sender._handle_rtcp_packet = rtcp  # type: ignore[method-assign] # the viewer's REMB
        sender._retransmit = self._retransmit  # type: ignore[method-assign] # NACKs: our cache
        # A PLI/FIR: the sender has no encoder to obey it; the publisher has one.
        sender._send_keyframe = self._ask_keyframe  # type: ignore[method-assign]

    def _started(self, sender: RTCRtpSender, parameters: RTCRtpSendParameters) -> None:
        if self._numbers is not None or not parameters.codecs:
            return
        primary = parameters.codecs[0].payloadType
        rtx = next(
            (
                codec.payloadType
                for codec in parameters.codecs
                if is_rtx(codec) and codec.parameters.get("apt") == primary
            ),
            None,
        )
        self._numbers = Numbers(
            ssrc=sender._ssrc,
            payload_types={
                codec.mimeType.lower(): codec.payloadType
                for codec in parameters.codecs
                if not is_rtx(codec) and codec.payloadType is not None
            },
            rtx_payload_type=rtx,
            rtx_ssrc=sender._rtx_ssrc,
            mid=parameters.muxId or None,
            extensions=ExtensionIds.of((x.uri, x.id) for x in parameters.headerExtensions),
        )
        if self.waiting_for_keyframe:
            self._ask_keyframe()

    def _remb(self, packet: RtcpPsfbPacket) -> None:
        try:
            bitrate, ssrcs = unpack_remb_fci(packet.fci)
        except ValueError:
            return
        if self._sender is not None and self._sender._ssrc in ssrcs and self.on_estimate:
            self.on_estimate(bitrate)

    def pause(self) -> None:
        """Send the viewer no more of this (video) stream until ``resume``."""
        self.paused = True

    def resume(self) -> None:
        """Send again, from the next keyframe (asked for)."""
        if not self.paused:
            return
        self.paused = False
        self.restart()
        self._ask_keyframe()

    def restart(self) -> None:
        """The publisher's packets will come from a new connection."""
        self.timeline.end_epoch()
        if self.kind == "video":
            self.waiting_for_keyframe = True

    def finish(self) -> None:
        """No more packets: the sender's loop ends."""
        self.track.stop()
        self._numbers = None

    async def send(
        self, packet: RtpPacket, codec: RTCRtpCodecParameters, source: Source, now: float
    ) -> None:
        """Forward ``packet`` (the publisher's, after RTX unwrapping) from ``source``;
        ``now`` is the Unix time."""
        numbers = self._numbers
        if numbers is None or self.paused:
            self.dropped += 1
            return
        if source is not self._source or packet.ssrc != self._ssrc:
            self._source, self._ssrc = source, packet.ssrc
            self.restart()
        timeline = self.timeline
        if not timeline.in_epoch:
            if self.waiting_for_keyframe:
                if not vp8_starts_keyframe(packet.payload):
                    self.dropped += 1
                    self._ask_keyframe()
                    return
                self.waiting_for_keyframe = False
            at = vp8_picture_id_at(packet.payload) if self.kind == "video" else None
            first_id = None if at is None else (vp8_picture_id(packet.payload, *at), at[1])
            timeline.begin(packet.sequence_number, packet.timestamp, now, first_id)
            self._picture_ids = timeline.renumbers_picture_ids
        out_seq = timeline.seq(packet.sequence_number)
        payload_type = numbers.payload_type(codec.mimeType)
        if out_seq is None or payload_type is None:
            self.dropped += 1
            return
        out_timestamp = timeline.timestamp(packet.timestamp)
        payload, picture_id = self._payload(packet.payload)
        data = rtp_packet(
            marker=packet.marker,
            payload_type=payload_type,
            sequence_number=out_seq,
            timestamp=out_timestamp,
            ssrc=numbers.ssrc,
            extensions=numbers.extension_block(
                abs_send_time=abs_send_time(now),
                audio_level=audio_level_byte(packet.extensions.audio_level),
            ),
            payload=payload,
            padding=packet.padding_size,
        )
        if not await self._transmit(data):
            self.dropped += 1
            return
        self.forwarded += 1
        timeline.sent(out_seq, out_timestamp, now, picture_id)
        if timeline.last_seq == out_seq:  # the newest: what the sender reports stand for
            self._sent(ntp_time(now), out_timestamp, len(payload))
        else:
            self._sent(None, None, len(payload))

    def _payload(self, payload: bytes) -> tuple[bytes, int | None]:
        """The payload as the viewer gets it, and its picture id (VP8) when renumbered."""
        if self.kind != "video":
            return payload, None
        at = vp8_picture_id_at(payload)
        if at is None:
            return payload, None
        picture_id = self.timeline.picture_id(vp8_picture_id(payload, *at), at[1])
        if self._picture_ids:
            payload = with_vp8_picture_id(payload, at[0], at[1], picture_id)
        return payload, picture_id

    def _sent(self, ntp: int | None, timestamp: int | None, octets: int) -> None:
        """Keep the sender's books as its own RTP loop would: what its RTCP sender reports
        say (the newest packet's NTP time and timestamp, packets and payload octets)."""
        assert self._sender is not None
        state = self._sender.__dict__
        if ntp is not None:
            state["_RTCRtpSender__ntp_timestamp"] = ntp
            state["_RTCRtpSender__rtp_timestamp"] = timestamp
        state["_RTCRtpSender__octet_count"] += octets
        state["_RTCRtpSender__packet_count"] += 1

    async def _transmit(self, data: bytes) -> bool:
        sender = self._sender
        if sender is None:
            return False
        try:
            await sender.transport._send_rtp(data)
        except (ConnectionError, pylibsrtp.Error):
            # Not connected (yet, or any more), or a packet SRTP has already sent.
            return False
        return True

    async def _retransmit(self, sequence_number: int) -> None:
        """The viewer lost ``sequence_number`` (a NACK): send it again, over RTX, from the
        source's cache (RTX only: SRTP refuses the same sequence number twice)."""
        numbers, source = self._numbers, self._source
        if numbers is None or numbers.rtx_payload_type is None or source is None:
            return
        seq = self.timeline.publisher_seq(sequence_number)
        cache = source.cache
        packet = cache.get(seq) if cache is not None and seq is not None else None
        if packet is None:
            return
        payload, _ = self._payload(packet.payload)
        data = rtp_packet(
            marker=packet.marker,
            payload_type=numbers.rtx_payload_type,
            sequence_number=self._rtx_seq,
            timestamp=self.timeline.timestamp(packet.timestamp),
            ssrc=numbers.rtx_ssrc,
            extensions=numbers.extension_block(
                abs_send_time=abs_send_time(time.time()), audio_level=None
            ),
            payload=rtx_payload(sequence_number, payload),
        )
        self._rtx_seq = (self._rtx_seq + 1) % 0x10000
        if await self._transmit(data):
            self.retransmitted += 1
