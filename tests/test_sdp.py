"""The room's SDP rewriting (``telemed.media.sdp``) on descriptions as the two sides write
them: an offer of a Chromium browser, and the offers aiortc makes for the room (Opus,
VP8 with RTX: the codecs the room keeps) and with every codec it has. aiortc's own
parser reads the results, as the server's peer connection will."""

from __future__ import annotations

import pytest
from aiortc.sdp import MediaDescription, SessionDescription

from telemed.media.sdp import Numbering, has_media, without_mdns_candidates


def _sdp(text: str) -> str:
    return text.replace("\n", "\r\n")


MDNS_HOST_UDP = (
    "a=candidate:3011613539 1 udp 2113937151 4f3b7c2e-1d6a-4c8e-9a55-0a2b3c4d5e6f.local 54400"
    " typ host generation 0 network-cost 999"
)
MDNS_HOST_TCP = (
    "a=candidate:1998461273 1 tcp 1518157055 4f3b7c2e-1d6a-4c8e-9a55-0a2b3c4d5e6f.local 9"
    " typ host tcptype active generation 0 network-cost 999"
)

# An offer of Chromium (camera and microphone, before the camera permission: its host
# candidates are mDNS names), its video codecs cut down to VP8, H.264, VP9, AV1, RED and
# ULPFEC; addresses from the documentation ranges.
CHROMIUM_OFFER = _sdp(
    f"""\
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 9b0f1c6e-7f0a-4a59-9a3e-6f1c0d1b2a3c
m=audio 54400 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 203.0.113.7
a=rtcp:9 IN IP4 0.0.0.0
{MDNS_HOST_UDP}
a=candidate:842163049 1 udp 1677729535 203.0.113.7 54400 typ srflx raddr 0.0.0.0 rport 0 generation 0 network-cost 999
a=candidate:2157334355 1 udp 33562367 198.51.100.20 61234 typ relay raddr 203.0.113.7 rport 54400 generation 0 network-cost 999
{MDNS_HOST_TCP}
a=ice-ufrag:Xk9q
a=ice-pwd:Zt1b3c5d7e9f0g2h4i6j8k0l
a=ice-options:trickle
a=fingerprint:sha-256 8C:71:B7:3D:5E:2A:19:F4:C6:0B:9E:E3:47:D2:5A:81:3F:6C:A0:12:B9:74:DE:58:21:C3:0F:96:E7:4B:AD:15
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:9b0f1c6e-7f0a-4a59-9a3e-6f1c0d1b2a3c 1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1396312365 cname:vV3n0Rz9b1kqJc2T
a=ssrc:1396312365 msid:9b0f1c6e-7f0a-4a59-9a3e-6f1c0d1b2a3c 1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 98 99 45 46 116 117 118
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Xk9q
a=ice-pwd:Zt1b3c5d7e9f0g2h4i6j8k0l
a=ice-options:trickle
a=fingerprint:sha-256 8C:71:B7:3D:5E:2A:19:F4:C6:0B:9E:E3:47:D2:5A:81:3F:6C:A0:12:B9:74:DE:58:21:C3:0F:96:E7:4B:AD:15
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendrecv
a=msid:9b0f1c6e-7f0a-4a59-9a3e-6f1c0d1b2a3c 6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 goog-remb
a=rtcp-fb:104 transport-cc
a=rtcp-fb:104 ccm fir
a=rtcp-fb:104 nack
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:116 red/90000
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:118 ulpfec/90000
a=ssrc-group:FID 2731571913 1048236004
a=ssrc:2731571913 cname:vV3n0Rz9b1kqJc2T
a=ssrc:2731571913 msid:9b0f1c6e-7f0a-4a59-9a3e-6f1c0d1b2a3c 6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c
a=ssrc:1048236004 cname:vV3n0Rz9b1kqJc2T
a=ssrc:1048236004 msid:9b0f1c6e-7f0a-4a59-9a3e-6f1c0d1b2a3c 6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c
"""  # noqa: E501  (a description as the browser writes it: its lines are that long)
)

# What aiortc offers for the room (two sendonly transceivers, codecs as the room prefers
# them, ``telemed.media.room._prefer_codecs``), as it wrote it.
AIORTC_OFFER = _sdp(
    """\
v=0
o=- 4005520142 4005520142 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
m=audio 57175 UDP/TLS/RTP/SAVPF 96
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:0
a=msid:0ecdacc7-89db-4ec9-8e55-81974ffe6cad be4be9cf-7e77-40ba-a4df-71cd55d522fc
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc:456770701 cname:d623b058-e9e9-4b2e-8fa7-490b41ae76ca
a=rtpmap:96 opus/48000/2
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 57175 typ host
a=end-of-candidates
a=ice-ufrag:kwki
a=ice-pwd:cpwncv0y4OEeHBuqTEijdW
a=fingerprint:sha-256 F3:2E:03:6E:FD:DC:52:9C:39:22:C4:34:AF:9E:EC:55:80:22:0C:5D:79:A4:F8:13:A6:65:2E:8F:26:FB:FD:EF
a=setup:actpass
m=video 57175 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:1
a=msid:0ecdacc7-89db-4ec9-8e55-81974ffe6cad 434d1a0f-806a-41c2-8f20-b048efc3831d
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc-group:FID 44121237 3720203167
a=ssrc:44121237 cname:d623b058-e9e9-4b2e-8fa7-490b41ae76ca
a=ssrc:3720203167 cname:d623b058-e9e9-4b2e-8fa7-490b41ae76ca
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 goog-remb
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 57175 typ host
a=end-of-candidates
a=ice-ufrag:kwki
a=ice-pwd:cpwncv0y4OEeHBuqTEijdW
a=fingerprint:sha-256 F3:2E:03:6E:FD:DC:52:9C:39:22:C4:34:AF:9E:EC:55:80:22:0C:5D:79:A4:F8:13:A6:65:2E:8F:26:FB:FD:EF
a=setup:actpass
"""  # noqa: E501  (a description as aiortc writes it: its lines are that long)
)

# aiortc's offer with every codec it has (no preferences), video only.
AIORTC_ALL_CODECS_VIDEO = _sdp(
    """\
v=0
o=- 4005520142 4005520142 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic:WMS *
m=video 57366 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:0
a=msid:b79780b0-1129-43ed-b409-95b8ac4679ee 704397b5-4644-401b-9f22-37275251261f
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc-group:FID 765266465 1123464447
a=ssrc:765266465 cname:47045adc-b154-4be2-9d66-325ab9e35430
a=ssrc:1123464447 cname:47045adc-b154-4be2-9d66-325ab9e35430
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 goog-remb
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=rtpmap:99 H264/90000
a=rtcp-fb:99 nack
a=rtcp-fb:99 nack pli
a=rtcp-fb:99 goog-remb
a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:100 rtx/90000
a=fmtp:100 apt=99
a=rtpmap:101 H264/90000
a=rtcp-fb:101 nack
a=rtcp-fb:101 nack pli
a=rtcp-fb:101 goog-remb
a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:102 rtx/90000
a=fmtp:102 apt=101
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 57366 typ host
a=end-of-candidates
a=ice-ufrag:Iy9P
a=ice-pwd:yc7brHM5Sqo8hnocf4tOCT
a=fingerprint:sha-256 51:EE:25:8B:A1:61:A2:41:1B:8A:BA:D3:6D:63:78:52:11:C8:83:38:00:FB:BD:42:08:50:1B:9E:1F:FD:3F:88
a=setup:actpass
"""  # noqa: E501  (a description as aiortc writes it: its lines are that long)
)

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def _rtx_targets(media: MediaDescription) -> dict[int, int]:
    """A parsed media section's RTX payload types → the payload type each repeats."""
    targets: dict[int, int] = {}
    for codec in media.rtp.codecs:
        if codec.mimeType.lower().endswith("/rtx"):
            assert codec.payloadType is not None
            targets[codec.payloadType] = int(str(codec.parameters["apt"]))
    return targets


def test_the_numbering_of_a_browser_offer() -> None:
    numbering = Numbering.of(CHROMIUM_OFFER)
    assert numbering.payload_types == {
        ("opus", 48000): 111,
        ("red", 48000): 63,
        ("g722", 8000): 9,
        ("pcmu", 8000): 0,
        ("pcma", 8000): 8,
        ("cn", 8000): 13,
        ("telephone-event", 48000): 110,
        ("telephone-event", 8000): 126,
        ("vp8", 90000): 96,
        ("rtx:vp8", 90000): 97,
        # Two H.264 profiles: the first number counts, and the RTX that repeats it.
        ("h264", 90000): 102,
        ("rtx:h264", 90000): 103,
        ("vp9", 90000): 98,
        ("rtx:vp9", 90000): 99,
        ("av1", 90000): 45,
        ("rtx:av1", 90000): 46,
        ("red", 90000): 116,
        ("rtx:red", 90000): 117,
        ("ulpfec", 90000): 118,
    }
    assert numbering.extensions == {
        AUDIO_LEVEL: 1,
        ABS_SEND_TIME: 2,
        TRANSPORT_CC: 3,
        MID: 4,
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay": 5,
        "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type": 6,
        "http://www.webrtc.org/experiments/rtp-hdrext/video-timing": 7,
        "http://www.webrtc.org/experiments/rtp-hdrext/color-space": 8,
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10,
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": 11,
        "urn:3gpp:video-orientation": 13,
        "urn:ietf:params:rtp-hdrext:toffset": 14,
    }


def test_the_numbering_of_an_aiortc_offer() -> None:
    numbering = Numbering.of(AIORTC_OFFER)
    assert numbering.payload_types == {
        ("opus", 48000): 96,
        ("vp8", 90000): 97,
        ("rtx:vp8", 90000): 98,
    }
    assert numbering.extensions == {MID: 1, AUDIO_LEVEL: 2, ABS_SEND_TIME: 3}


def test_an_aiortc_offer_takes_the_browsers_numbers() -> None:
    aligned = Numbering.of(CHROMIUM_OFFER).apply(AIORTC_OFFER)
    before, after = AIORTC_OFFER.split("\r\n"), aligned.split("\r\n")
    assert len(after) == len(before)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [
        ("m=audio 57175 UDP/TLS/RTP/SAVPF 96", "m=audio 57175 UDP/TLS/RTP/SAVPF 111"),
        (f"a=extmap:1 {MID}", f"a=extmap:4 {MID}"),
        (f"a=extmap:2 {AUDIO_LEVEL}", f"a=extmap:1 {AUDIO_LEVEL}"),
        ("a=rtpmap:96 opus/48000/2", "a=rtpmap:111 opus/48000/2"),
        ("m=video 57175 UDP/TLS/RTP/SAVPF 97 98", "m=video 57175 UDP/TLS/RTP/SAVPF 96 97"),
        (f"a=extmap:1 {MID}", f"a=extmap:4 {MID}"),
        (f"a=extmap:3 {ABS_SEND_TIME}", f"a=extmap:2 {ABS_SEND_TIME}"),
        ("a=rtpmap:97 VP8/90000", "a=rtpmap:96 VP8/90000"),
        ("a=rtcp-fb:97 nack", "a=rtcp-fb:96 nack"),
        ("a=rtcp-fb:97 nack pli", "a=rtcp-fb:96 nack pli"),
        ("a=rtcp-fb:97 goog-remb", "a=rtcp-fb:96 goog-remb"),
        ("a=rtpmap:98 rtx/90000", "a=rtpmap:97 rtx/90000"),
        ("a=fmtp:98 apt=97", "a=fmtp:97 apt=96"),
    ]
    # aiortc reads it as the browser numbered it: the RTX repeats VP8 by its new number.
    audio, video = SessionDescription.parse(aligned).media
    assert [(c.mimeType, c.payloadType) for c in audio.rtp.codecs] == [("audio/opus", 111)]
    assert [(c.mimeType, c.payloadType) for c in video.rtp.codecs] == [
        ("video/VP8", 96),
        ("video/rtx", 97),
    ]
    assert _rtx_targets(video) == {97: 96}
    assert {(e.uri, e.id) for e in video.rtp.headerExtensions} == {(MID, 4), (ABS_SEND_TIME, 2)}


def test_what_the_browser_never_numbered_gets_numbers_it_does_not_use() -> None:
    """The browser offered VP8 only (``setCodecPreferences``) and no abs-send-time; our
    offer has H.264 in two profiles, each with its RTX."""
    browser = Numbering(
        payload_types={("opus", 48000): 111, ("vp8", 90000): 96, ("rtx:vp8", 90000): 97},
        extensions={MID: 4, AUDIO_LEVEL: 1},
    )
    aligned = browser.apply(AIORTC_ALL_CODECS_VIDEO)
    (video,) = SessionDescription.parse(aligned).media
    numbers = [codec.payloadType for codec in video.rtp.codecs]
    assert video.fmt == numbers
    assert len(set(numbers)) == len(numbers)
    by_number = {codec.payloadType: codec for codec in video.rtp.codecs}
    assert by_number[96].mimeType == "video/VP8"
    assert by_number[97].mimeType == "video/rtx"
    spare = set(numbers) - {96, 97}
    assert len(spare) == 4
    assert all(n in range(96, 128) for n in spare)
    assert not spare & set(browser.payload_types.values())
    # Each RTX still repeats its own codec: VP8's, and each H.264 profile's.
    targets = _rtx_targets(video)
    assert sorted(by_number[target].mimeType for target in targets.values()) == [
        "video/H264",
        "video/H264",
        "video/VP8",
    ]
    profiles = {
        by_number[target].parameters["profile-level-id"]
        for target in targets.values()
        if by_number[target].mimeType == "video/H264"
    }
    assert profiles == {"42001f", "42e01f"}
    ids = {e.uri: e.id for e in video.rtp.headerExtensions}
    assert ids[MID] == 4
    assert ids[ABS_SEND_TIME] in range(1, 15)
    assert ids[ABS_SEND_TIME] not in browser.extensions.values()


def test_a_browsers_mdns_host_candidates_and_only_they_are_dropped() -> None:
    kept = without_mdns_candidates(CHROMIUM_OFFER).split("\r\n")
    assert kept == [
        line for line in CHROMIUM_OFFER.split("\r\n") if line not in (MDNS_HOST_UDP, MDNS_HOST_TCP)
    ]
    candidates = [line for line in kept if line.startswith("a=candidate:")]
    assert [line.split()[7] for line in candidates] == ["srflx", "relay"]
    # Host candidates with addresses stay, and so does the rest, to the last line break.
    assert without_mdns_candidates(AIORTC_OFFER) == AIORTC_OFFER


def test_descriptions_with_media_are_told_from_anything_else() -> None:
    assert has_media(CHROMIUM_OFFER)
    assert has_media(AIORTC_OFFER)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        '{"type": "offer", "sdp": "v=0"}',
        # A session with no media section.
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        # Media, but not a session description's first line.
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nv=0\r\n",
        "v=1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    ],
)
def test_what_is_not_a_description_with_media_is_refused(text: str) -> None:
    assert not has_media(text)
