"""The relay's RTP rewriting as pure functions: a viewer's sequence numbers, timestamps and
VP8 picture ids across wrap-arounds and a publisher's reconnection, its payload types,
header extension ids and SSRC (``telemed.media.rewriting``)."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, unpack_header_extensions

from telemed.media.rewriting import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
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


def numbers(**changes: object) -> Numbers:
    base: dict[str, object] = {
        "ssrc": 0x11223344,
        "payload_types": {"video/vp8": 96, "audio/opus": 111},
        "rtx_payload_type": 97,
        "rtx_ssrc": 0x55667788,
        "mid": "3",
        "extensions": ExtensionIds(mid=4, abs_send_time=2, audio_level=1),
    }
    return Numbers(**(base | changes))  # type: ignore[arg-type] # test data


def parsed(data: bytes, ids: ExtensionIds) -> RtpPacket:
    """``data`` as aiortc reads it, with the viewer's extension ids."""
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=number, uri=uri)
                for uri, number in (
                    (MID_URI, ids.mid),
                    (ABS_SEND_TIME_URI, ids.abs_send_time),
                    (AUDIO_LEVEL_URI, ids.audio_level),
                )
                if number is not None
            ]
        )
    )
    return RtpPacket.parse(data, extensions)


def test_sequence_numbers_wrap_around_at_65535() -> None:
    timeline = Timeline("video", first_seq=65534, first_timestamp=0)
    timeline.begin(100, 9000, at=0.0)
    mapped = [timeline.seq(seq) for seq in (100, 101, 102, 103)]
    assert mapped == [65534, 65535, 0, 1]
    for seq in mapped:
        assert seq is not None
        timeline.sent(seq, 0, 0.0, None)
    assert timeline.last_seq == 1
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    # The publisher's own numbers wrap too.
    timeline = Timeline("audio", first_seq=10, first_timestamp=0)
    timeline.begin(65535, 0, at=0.0)
    assert [timeline.seq(seq) for seq in (65535, 0, 1)] == [10, 11, 12]


def test_packets_from_before_the_epoch_are_not_the_viewers() -> None:
    timeline = Timeline("video", first_seq=500, first_timestamp=0)
    timeline.begin(1000, 0, at=0.0)
    assert timeline.seq(999) is None  # reordered, from before the keyframe the viewer starts at
    assert timeline.seq(1000) == 500
    assert timeline.seq(1001) == 501


def test_a_publishers_new_connection_continues_the_viewers_timeline() -> None:
    timeline = Timeline("video", first_seq=1000, first_timestamp=50_000)
    timeline.begin(30_000, 4_000_000_000, at=100.0, picture_id=(7000, 15))
    for n in range(3):  # three frames of one packet each, 1/30 s apart
        seq = timeline.seq(30_000 + n)
        assert seq is not None
        timeline.sent(seq, timeline.timestamp(4_000_000_000 + 3000 * n), 100.0 + n / 30, 7000 + n)
    assert (timeline.last_seq, timeline.last_timestamp, timeline.last_picture_id) == (
        1002,
        56_000,
        7002,
    )
    assert not timeline.renumbers_picture_ids

    # The publisher reconnects 2.5 s later: other SSRC, sequence numbers, timestamps and
    # picture ids. The viewer's go on: the next number, the time that passed, the next id.
    timeline.end_epoch()
    assert not timeline.in_epoch
    at = 100.0 + 2 / 30 + 2.5
    timeline.begin(5, 123, at=at, picture_id=(32767, 15))
    assert timeline.seq(5) == 1003
    assert timeline.timestamp(123) == 56_000 + 225_000  # 2.5 s at 90 kHz
    assert timeline.picture_id(32767, 15) == 7003
    assert timeline.picture_id(0, 15) == 7004  # the publisher's ids wrap; ours go on
    assert timeline.renumbers_picture_ids

    # A reconnection with no time passed still moves on by a frame.
    timeline.sent(1003, timeline.timestamp(123), at, 7003)
    timeline.end_epoch()
    timeline.begin(800, 0, at=at)
    assert timeline.seq(800) == 1004
    assert timeline.timestamp(0) == 56_000 + 225_000 + 3000


def test_timestamps_wrap_around_at_2_to_the_32() -> None:
    timeline = Timeline("audio", first_seq=0, first_timestamp=2**32 - 960)
    timeline.begin(0, 0, at=0.0)
    assert [timeline.timestamp(t) for t in (0, 960, 1920)] == [2**32 - 960, 0, 960]
    timeline.sent(0, 2**32 - 960, 0.0, None)
    timeline.end_epoch()
    timeline.begin(7, 5000, at=0.0)
    assert timeline.timestamp(5000) == 0  # one 20 ms frame on, past the wrap


def test_a_nack_maps_back_to_the_publishers_packet_of_the_current_epoch() -> None:
    timeline = Timeline("video", first_seq=65530, first_timestamp=0)
    timeline.begin(200, 0, at=0.0)
    for seq in range(200, 210):
        out = timeline.seq(seq)
        assert out is not None
        timeline.sent(out, 0, 0.0, None)
    assert timeline.last_seq == 3
    assert timeline.publisher_seq(65531) == 201
    assert timeline.publisher_seq(2) == 208
    assert timeline.publisher_seq(4) is None  # not sent yet
    assert timeline.publisher_seq(65529) is None  # before the epoch
    timeline.end_epoch()
    assert timeline.publisher_seq(2) is None


def test_payload_types_extension_ids_and_ssrc_are_the_viewers() -> None:
    viewer = numbers()
    assert viewer.payload_type("video/VP8") == 96
    assert viewer.payload_type("audio/opus") == 111
    assert viewer.payload_type("video/H264") is None
    now = 1_767_225_600.25
    data = rtp_packet(
        marker=1,
        payload_type=viewer.payload_types["audio/opus"],
        sequence_number=4242,
        timestamp=0xDEADBEEF,
        ssrc=viewer.ssrc,
        extensions=viewer.extension_block(
            abs_send_time=abs_send_time(now), audio_level=audio_level_byte((True, 42))
        ),
        payload=b"opus frame",
    )
    packet = parsed(data, viewer.extensions)
    assert (packet.payload_type, packet.marker, packet.sequence_number) == (111, 1, 4242)
    assert (packet.timestamp, packet.ssrc, packet.payload) == (
        0xDEADBEEF,
        0x11223344,
        b"opus frame",
    )
    assert packet.extensions.mid == "3"
    assert packet.extensions.audio_level == (True, 42)
    assert packet.extensions.abs_send_time == abs_send_time(now)
    # The elements carry exactly the viewer's ids, in its one-byte form.
    block = viewer.extension_block(abs_send_time=1, audio_level=2)
    profile, length = struct.unpack("!HH", block[:4])
    assert profile == 0xBEDE
    assert [x_id for x_id, _ in unpack_header_extensions(profile, block[4:])] == [4, 2, 1]
    assert len(block) == 4 + 4 * length


def test_what_the_viewer_did_not_negotiate_is_not_written() -> None:
    bare = numbers(extensions=ExtensionIds(mid=1), mid="0")
    block = bare.extension_block(abs_send_time=123, audio_level=5)
    data = rtp_packet(
        marker=0,
        payload_type=96,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        extensions=block,
        payload=b"x",
    )
    packet = parsed(data, ExtensionIds(mid=1, abs_send_time=2, audio_level=3))
    assert packet.extensions.mid == "0"
    assert packet.extensions.abs_send_time is None
    assert packet.extensions.audio_level is None
    assert numbers(extensions=ExtensionIds()).extension_block(abs_send_time=1, audio_level=1) == b""
    plain = rtp_packet(
        marker=0,
        payload_type=96,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        extensions=b"",
        payload=b"",
    )
    assert plain[0] == 0x80
    assert len(plain) == 12


def test_padding_and_rtx() -> None:
    data = rtp_packet(
        marker=0,
        payload_type=97,
        sequence_number=9,
        timestamp=10,
        ssrc=11,
        extensions=b"",
        payload=rtx_payload(65535, b"media"),
        padding=4,
    )
    packet = RtpPacket.parse(data)
    assert packet.padding_size == 4
    assert packet.payload == b"\xff\xffmedia"


def test_abs_send_time_and_ntp_time() -> None:
    # 2026-01-01T00:00:00.5Z: NTP seconds 3976214400; the 6.18 value is its seconds mod 64.
    unix = 1_767_225_600.5
    assert ntp_time(unix) >> 32 == 3_976_214_400
    assert ntp_time(unix) & 0xFFFFFFFF == 1 << 31
    assert abs_send_time(unix) == ((3_976_214_400 % 64) << 18) | (1 << 17)


def vp8_payload(
    *, start: bool = True, keyframe: bool = True, picture_id: int | None = 0x1234, wide: bool = True
) -> bytes:
    """A VP8 RTP payload: the descriptor (RFC 7741), the payload header's first bytes."""
    start_bit = 0x10 if start else 0x00
    if picture_id is None:
        descriptor = bytes((start_bit,))
    else:
        descriptor = bytes((0x80 | start_bit, 0x80))
        descriptor += struct.pack("!H", 0x8000 | picture_id) if wide else bytes((picture_id,))
    header = bytes((0x00 if keyframe else 0x01, 0x9D, 0x01, 0x2A))
    return descriptor + header + b"frame data"


@pytest.mark.parametrize(
    ("payload", "keyframe"),
    [
        (vp8_payload(), True),
        (vp8_payload(keyframe=False), False),
        (vp8_payload(start=False), False),  # a later packet of a keyframe
        (vp8_payload(picture_id=None), True),
        (vp8_payload(picture_id=5, wide=False), True),
        (b"\x10", False),
        (b"", False),
    ],
)
def test_a_keyframes_first_packet_is_known(payload: bytes, keyframe: bool) -> None:
    assert vp8_starts_keyframe(payload) is keyframe


def test_vp8_picture_ids_are_rewritten_in_place() -> None:
    payload = vp8_payload(picture_id=0x1234)
    at = vp8_picture_id_at(payload)
    assert at == (2, 15)
    assert vp8_picture_id(payload, *at) == 0x1234
    rewritten = with_vp8_picture_id(payload, *at, 0x8001)  # 15 bits: wraps to 1
    assert vp8_picture_id(rewritten, *at) == 1
    assert rewritten[:2] == payload[:2]
    assert rewritten[4:] == payload[4:]
    narrow = vp8_payload(picture_id=0x7F, wide=False)
    at = vp8_picture_id_at(narrow)
    assert at == (2, 7)
    assert vp8_picture_id(with_vp8_picture_id(narrow, *at, 0x80), *at) == 0
    assert vp8_picture_id_at(vp8_payload(picture_id=None)) is None
