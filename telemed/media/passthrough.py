"""The relay's hooks into aiortc, and the check that they still fit.

aiortc decodes every received track and encodes every sent one; a relay that does both
costs a core for a handful of streams. The relay instead forwards RTP packets from leg
to leg (``telemed.media.forwarding``: it takes over the receivers' packet handling and
sends on the viewers' transports with their senders' books kept). Around that:

- ``ask_keyframe``: a PLI to the publisher, for each of its sources. A viewer's PLI/FIR,
  which its server sender (no encoder) cannot obey, is passed on this way
  (``ForwardedStream.attach``).
- ``tap_receiver``: a receiver's complete encoded frames for a sink, without viewers
  (tests record through it).

These hooks reach into aiortc's internals, so aiortc is pinned exactly and
``check_aiortc`` (run at start-up and by the tests) fails loudly if an upgrade changed
any of the code they rely on.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect

from aiortc import RTCRtpReceiver

from telemed.media.forwarding import FrameSink, Source

AIORTC_VERSION = "1.16.0"

RELIED_ON: dict[tuple[str, str], tuple[str, str]] = {
    # (module, qualified name): (SHA-256 of its source, first 16 hex digits; what for)
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.__init__"): (
        "3e3b7b5cefbaac6f",
        "the private state forwarding.Source reads: __codecs, __rtx_ssrc, __remote_streams, "
        "__active_ssrc, __remote_bitrate_estimator, __nack_generator, __decoder_queue, "
        "__decoder_error",
    ),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.receive"): (
        "d6d8d8d7a0bf4e95",
        "fills __codecs and __rtx_ssrc in place and starts __decoder_thread",
    ),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver._handle_rtp_packet"): (
        "4e54983d021a6336",
        "forwarding.Source._handle_rtp_packet replaces it, as a copy up to NACK generation",
    ),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver.getSynchronizationSources"): (
        "1582c404d6c78015",
        "reads __active_ssrc (kept by Source once a second); keyframe requests go to each",
    ),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver._send_rtcp_pli"): (
        "ae74c43d50f6eb7b",
        "asks the publisher for a keyframe",
    ),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver._send_rtcp_nack"): (
        "5735e597c91b5cf6",
        "asks the publisher for lost packets",
    ),
    ("aiortc.rtcrtpreceiver", "NackGenerator"): (
        "4e89418b046d6ffc",
        "max_seq and missing tell Source a packet already forwarded from a new one",
    ),
    ("aiortc.rtcrtpsender", "RTCRtpSender.__init__"): (
        "beb1bc0ae04db20d",
        "_ssrc, _rtx_ssrc and the counters ForwardedStream keeps (__ntp_timestamp, "
        "__rtp_timestamp, __octet_count, __packet_count)",
    ),
    ("aiortc.rtcrtpsender", "RTCRtpSender.send"): (
        "3969482b77a2a65f",
        "ForwardedStream wraps it to learn the negotiated numbers",
    ),
    ("aiortc.rtcrtpsender", "RTCRtpSender._handle_rtcp_packet"): (
        "a4ee4c7355f8de7a",
        "calls _retransmit(seq) for each NACKed packet and _send_keyframe() on PLI/FIR, "
        "both replaced per sender",
    ),
    ("aiortc.rtcrtpsender", "RTCRtpSender._run_rtp"): (
        "ff597a1d554cb373",
        "waits on track.recv() (ParkedTrack: never) and ends on MediaStreamError",
    ),
    ("aiortc.rtcrtpsender", "RTCRtpSender._run_rtcp"): (
        "51e0a924eac4e39b",
        "its sender reports read the counters ForwardedStream keeps",
    ),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._send_rtp"): (
        "763b02bceb0b0ab9",
        "ForwardedStream sends through it (SRTP, then ICE)",
    ),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport._handle_rtp_data"): (
        "5def9061cc3da1f6",
        "calls receiver._handle_rtp_packet(packet, arrival_time_ms=...) after SRTP",
    ),
    ("aiortc.rtp", "RtpPacket.parse"): (
        "22109861dfce7bab",
        "the packet fields forwarding reads (payload without padding, padding_size)",
    ),
    ("aiortc.rtp", "HeaderExtensionsMap.get"): (
        "7abeb1022f1d6bc1",
        "audio_level parsed as (voice activity, level)",
    ),
    ("aiortc.rtp", "unwrap_rtx"): ("9b428a97cc83607f", "RTX packets unwrapped as aiortc does"),
}


def source_digest(module: str, name: str) -> str | None:
    """The first 16 hex digits of the SHA-256 of ``module.name``'s source, or ``None``
    when it is gone."""
    obj: object = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]  # type: ignore[arg-type] # a class or function


@functools.cache
def check_aiortc() -> None:
    """Fail if aiortc's code the relay relies on is not what it was written against (read
    once per process: it reads aiortc's source). After an upgrade, re-read each listed
    piece against ``telemed.media.forwarding`` and update ``RELIED_ON``."""
    import aioice.ice
    import aiortc

    problems = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc {aiortc.__version__} (the relay is written for {AIORTC_VERSION})")
    for (module, name), (digest, why) in RELIED_ON.items():
        found = source_digest(module, name)
        if found is None:
            problems.append(f"{module}.{name} is gone ({why})")
        elif found != digest:
            problems.append(f"{module}.{name} changed ({why})")
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        problems.append("aioice.ice.get_host_addresses is gone (TELEMED_MEDIA_ADDRESSES)")
    if problems:
        raise RuntimeError("the media relay cannot run on this aiortc: " + "; ".join(problems))


def vp8_is_keyframe(data: bytes) -> bool:
    """Whether a complete VP8 frame is a keyframe (RFC 6386, 9.1: bit 0 of the frame tag
    is 0 for a key frame)."""
    return len(data) > 0 and (data[0] & 0x01) == 0


def tap_receiver(receiver: RTCRtpReceiver, sink: FrameSink) -> Source:
    """Send ``receiver``'s complete encoded frames to ``sink`` (forwarding them nowhere).
    Call inside ``pc.on("track")``."""
    kind = receiver.track.kind if receiver.track is not None else "video"
    return Source(receiver, kind, viewers=lambda: (), frames=lambda: sink)


async def ask_keyframe(receiver: RTCRtpReceiver) -> None:
    """Send a PLI to the publisher of ``receiver``'s track: for every source it sends
    from (a browser also sends retransmissions and probes from an RTX source, which a
    PLI for does nothing; the one for the media source is what counts)."""
    for source in receiver.getSynchronizationSources():
        await receiver._send_rtcp_pli(source.source)
