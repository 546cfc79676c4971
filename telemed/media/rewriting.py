"""RTP as the relay rewrites it for a viewer: pure functions and state, no I/O.

A publisher's packets reach each viewer unchanged in their payload, but with the
viewer's own numbers (``telemed.media.forwarding`` does the sending):

- **SSRC and payload type**: those of the viewer's server sender, as negotiated with the
  viewer (``Numbers``); the payload type is found by codec, since each leg numbers its
  codecs its own way (``telemed.media.sdp.Numbering``).
- **Header extensions**: only those the relay can vouch for, with the ids the viewer
  negotiated: the viewer's ``mid``, a fresh ``abs-send-time`` (the viewer's bandwidth
  estimate is about the leg from the relay) and the publisher's audio level. Anything
  else the publisher sent (transport-wide sequence numbers, for one) belongs to the
  publisher's leg.
- **Sequence numbers, timestamps and VP8 picture ids** (``Timeline``): each viewer's
  stream counts on without a jump when the publisher's packets start coming from a new
  connection (a rejoin: new SSRC, sequence numbers and timestamps from elsewhere).
  Sequence numbers go on from the last one sent; the timestamp advances by the time
  that passed (at least one frame); picture ids go on by one, so that a browser's
  decoder, which orders frames by picture id, takes the new connection's keyframe.

The VP8 payload descriptor is RFC 7741, section 4.2; one-byte header extensions are
RFC 8285, section 4.2; the RTX payload is RFC 4588, section 4.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

SEQ_MOD = 1 << 16
TIMESTAMP_MOD = 1 << 32
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""
FRAME_STEP = {"video": 3000, "audio": 960}
"""One frame in RTP clock units: 1/30 s at 90 kHz, 20 ms at 48 kHz."""
CLOCK_RATE = {"video": 90000, "audio": 48000}

_HEADER = struct.Struct("!BBHII")
_EXTENDED_HEADER = struct.Struct("!BBHIIHH")
_ONE_BYTE_PROFILE = 0xBEDE


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (RFC 3550's 16-bit arithmetic)."""
    return a != b and (a - b) % SEQ_MOD < 0x8000


# -- VP8 payload descriptor ----------------------------------------------------------------


def vp8_picture_id_at(payload: bytes) -> tuple[int, int] | None:
    """Where the picture id of a VP8 RTP payload is: (byte offset, width in bits, 7 or 15),
    or ``None`` when the descriptor carries none."""
    if len(payload) < 3 or not payload[0] & 0x80 or not payload[1] & 0x80:
        return None
    width = 15 if payload[2] & 0x80 else 7
    if width == 15 and len(payload) < 4:
        return None
    return 2, width


def vp8_picture_id(payload: bytes, at: int, width: int) -> int:
    if width == 15:
        return ((payload[at] & 0x7F) << 8) | payload[at + 1]
    return payload[at] & 0x7F


def with_vp8_picture_id(payload: bytes, at: int, width: int, picture_id: int) -> bytes:
    """``payload`` with another picture id, in the same width."""
    if width == 15:
        picture_id %= 0x8000
        return b"".join(
            (payload[:at], bytes((0x80 | picture_id >> 8, picture_id & 0xFF)), payload[at + 2 :])
        )
    return b"".join((payload[:at], bytes((picture_id % 0x80,)), payload[at + 1 :]))


def vp8_starts_keyframe(payload: bytes) -> bool:
    """Whether a VP8 RTP payload is the first packet of a keyframe: the start of partition
    0 (S=1, PID=0) and, in the VP8 payload header that follows the descriptor, the
    inverse key frame flag P=0."""
    if not payload:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:
        return False
    at = 1
    if first & 0x80:
        if len(payload) < 2:
            return False
        extension = payload[1]
        at = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= at:
                return False
            at += 2 if payload[at] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            at += 1
        if extension & 0x30:  # T or K: TID/Y/KEYIDX
            at += 1
    return len(payload) > at and not payload[at] & 0x01


# -- the viewer's numbers ------------------------------------------------------------------


@dataclass(frozen=True)
class ExtensionIds:
    """The ids a viewer's connection gave the header extensions the relay writes (``None``:
    not negotiated, not written)."""

    mid: int | None = None
    abs_send_time: int | None = None
    audio_level: int | None = None

    @classmethod
    def of(cls, extensions: Iterable[tuple[str, int]]) -> ExtensionIds:
        """From (URI, id) pairs as negotiated."""
        ids = {uri: number for uri, number in extensions}
        return cls(ids.get(MID_URI), ids.get(ABS_SEND_TIME_URI), ids.get(AUDIO_LEVEL_URI))


@dataclass(frozen=True)
class Numbers:
    """How a viewer's connection numbers one stream the relay sends it."""

    ssrc: int
    payload_types: dict[str, int]
    """Codec MIME type, lower case (``video/vp8``) → the viewer's payload type."""
    rtx_payload_type: int | None
    """RTX for the stream's first codec, when negotiated: retransmissions go that way."""
    rtx_ssrc: int
    mid: str | None
    extensions: ExtensionIds

    def payload_type(self, mime_type: str) -> int | None:
        """The viewer's payload type for what the publisher sent as ``mime_type``."""
        return self.payload_types.get(mime_type.lower())

    def extension_block(self, *, abs_send_time: int | None, audio_level: int | None) -> bytes:
        """The header extension block (one-byte form, with its profile and length words)
        of a packet sent now: ``abs_send_time`` is 6.18 fixed-point seconds, ``audio_level``
        the publisher's byte (voice activity flag and level), if any."""
        ids = self.extensions
        parts = []
        if ids.mid is not None and self.mid:
            mid = self.mid.encode()
            parts.append(bytes(((ids.mid << 4) | (len(mid) - 1),)) + mid)
        if ids.abs_send_time is not None and abs_send_time is not None:
            parts.append(bytes((ids.abs_send_time << 4 | 2,)) + abs_send_time.to_bytes(3, "big"))
        if ids.audio_level is not None and audio_level is not None:
            parts.append(bytes((ids.audio_level << 4, audio_level)))
        if not parts:
            return b""
        body = b"".join(parts)
        body += bytes(-len(body) % 4)
        return struct.pack("!HH", _ONE_BYTE_PROFILE, len(body) // 4) + body


def abs_send_time(unix_seconds: float) -> int:
    """The abs-send-time extension's value: NTP time in 6.18 fixed point, 24 bits (the
    NTP epoch is a whole number of 64-second periods before the Unix one)."""
    return int(unix_seconds * (1 << 18)) & 0xFFFFFF


def ntp_time(unix_seconds: float) -> int:
    """NTP time in 32.32 fixed point, as RTCP sender reports carry it."""
    return int((unix_seconds + NTP_UNIX_OFFSET) * (1 << 32))


def audio_level_byte(level: tuple[bool, int] | None) -> int | None:
    """aiortc's parsed audio level (voice activity, -dBov) as the extension's byte."""
    if level is None:
        return None
    return (0x80 if level[0] else 0) | (level[1] & 0x7F)


def rtp_packet(
    *,
    marker: int,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    extensions: bytes,
    payload: bytes,
    padding: int = 0,
) -> bytes:
    """An RTP packet: the 12-byte header, ``extensions`` (a block made by
    ``Numbers.extension_block``, or empty), the payload, and ``padding`` bytes of padding
    (the last one says how many)."""
    first = 0x80 | (0x20 if padding else 0)
    second = (marker << 7) | payload_type
    if extensions:
        head = _HEADER.pack(first | 0x10, second, sequence_number, timestamp, ssrc)
        data = b"".join((head, extensions, payload))
    else:
        data = _HEADER.pack(first, second, sequence_number, timestamp, ssrc) + payload
    if padding:
        data += bytes(padding - 1) + bytes((padding,))
    return data


def rtx_payload(sequence_number: int, payload: bytes) -> bytes:
    """An RTX packet's payload: the original sequence number, then the original payload."""
    return sequence_number.to_bytes(2, "big") + payload


# -- a viewer's timeline -------------------------------------------------------------------


class Timeline:
    """How one viewer's stream numbers the packets of a publisher's track.

    The packets come in epochs: the packets of one publisher connection (one SSRC),
    from the one an epoch ``begin``s with. Within an epoch the numbers are the
    publisher's, offset by constants, so reordered and retransmitted packets keep their
    places. A new epoch continues where the last one stopped: the next sequence number,
    the timestamp advanced by the time that passed (at least one frame), the next picture
    id. The first epoch starts at the numbers given (aiortc chooses random ones)."""

    def __init__(self, kind: str, *, first_seq: int, first_timestamp: int) -> None:
        self.clock_rate = CLOCK_RATE[kind]
        self.step = FRAME_STEP[kind]
        self._first = (first_seq, first_timestamp)
        self._seq_offset = 0
        self._timestamp_offset = 0
        self._picture_id_offset = 0
        self._epoch_seq: int | None = None
        """The publisher's sequence number the current epoch began with (None: none yet)."""
        self._epoch_out: int = first_seq
        """The viewer's sequence number the current epoch began with."""
        self.last_seq: int | None = None
        """The viewer's newest sequence number sent."""
        self.last_timestamp = first_timestamp
        self.last_picture_id: int | None = None
        self._last_at = 0.0

    @property
    def in_epoch(self) -> bool:
        return self._epoch_seq is not None

    def end_epoch(self) -> None:
        """The publisher's packets will come from elsewhere: the next packet mapped must
        ``begin`` a new epoch."""
        self._epoch_seq = None

    def begin(
        self, seq: int, timestamp: int, at: float, picture_id: tuple[int, int] | None = None
    ) -> None:
        """A new epoch, from the publisher's packet ``seq``/``timestamp`` at time ``at``
        (seconds, monotonic), with its VP8 picture id and its width, if any."""
        if self.last_seq is None:
            out_seq, out_timestamp = self._first
            out_picture_id = picture_id[0] if picture_id else 0
        else:
            out_seq = (self.last_seq + 1) % SEQ_MOD
            passed = round((at - self._last_at) * self.clock_rate)
            out_timestamp = (self.last_timestamp + max(self.step, passed)) % TIMESTAMP_MOD
            last = self.last_picture_id
            out_picture_id = 0 if last is None else last + 1
        self._seq_offset = (out_seq - seq) % SEQ_MOD
        self._timestamp_offset = (out_timestamp - timestamp) % TIMESTAMP_MOD
        if picture_id is not None:
            self._picture_id_offset = (out_picture_id - picture_id[0]) % 0x8000
        self._epoch_seq = seq
        self._epoch_out = out_seq
        self._last_at = at

    def seq(self, seq: int) -> int | None:
        """The viewer's sequence number for the publisher's ``seq``; ``None`` for a packet
        from before the epoch began (it was never the viewer's to receive)."""
        epoch = self._epoch_seq
        if epoch is None or (seq - epoch) % SEQ_MOD >= 0x8000:
            return None
        return (seq + self._seq_offset) % SEQ_MOD

    def timestamp(self, timestamp: int) -> int:
        return (timestamp + self._timestamp_offset) % TIMESTAMP_MOD

    def picture_id(self, picture_id: int, width: int) -> int:
        return (picture_id + self._picture_id_offset) % (1 << width)

    @property
    def renumbers_picture_ids(self) -> bool:
        return self._picture_id_offset != 0

    def sent(self, out_seq: int, out_timestamp: int, at: float, picture_id: int | None) -> None:
        """The viewer was sent ``out_seq``: note it if it is the newest."""
        if self.last_seq is None or seq_newer(out_seq, self.last_seq):
            self.last_seq = out_seq
            self.last_timestamp = out_timestamp
            self._last_at = at
            if picture_id is not None:
                self.last_picture_id = picture_id

    def publisher_seq(self, out_seq: int) -> int | None:
        """The publisher's sequence number of a packet the viewer asks again for (NACK),
        if it is one of the current epoch already sent."""
        if self._epoch_seq is None or self.last_seq is None:
            return None
        if (out_seq - self._epoch_out) % SEQ_MOD > (self.last_seq - self._epoch_out) % SEQ_MOD:
            return None
        return (out_seq - self._seq_offset) % SEQ_MOD
