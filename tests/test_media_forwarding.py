"""RTP forwarding with real aiortc peers on loopback: what a viewer's receiver gets,
packet by packet. A viewer that loses packets gets them again from the relay's cache; a
viewer that comes mid-stream starts at a keyframe; a publisher's new connection goes on
in the viewer's same stream (SSRC, sequence numbers, timestamps, picture ids); frames
are assembled only while a check or a recording wants them; the relay's start-up check
notices aiortc code it relies on changing."""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import is_rtx
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from telemed import keys
from telemed.media.passthrough import check_aiortc
from telemed.media.rewriting import (
    seq_newer,
    vp8_picture_id,
    vp8_picture_id_at,
    vp8_starts_keyframe,
)
from telemed.media.room import Room
from tests.factories import AppClient
from tests.media_peers import MediaClient, participant
from tests.realtime import Peer


@pytest.fixture
def db_backend() -> str:
    return "sqlite"  # the media needs one backend


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}


@dataclass
class Arrival:
    """One RTP packet as a client's receiver got it (RTX still wrapped)."""

    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    marker: int
    payload: bytes
    rtx: bool


@dataclass
class Watch:
    """The packets one of a test client's receivers gets. With ``drop_every``, every so
    many media packets are dropped the first time they come (a lossy network), so that
    the client asks for them again (aiortc's receiver sends NACKs)."""

    drop_every: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    """The original sequence numbers of the RTX packets that came."""

    def install(self, receiver: RTCRtpReceiver) -> None:
        codecs = receiver.__dict__["_RTCRtpReceiver__codecs"]  # the client's own aiortc
        handle: Callable[..., Awaitable[None]] = receiver._handle_rtp_packet

        async def watched(packet: RtpPacket, arrival_time_ms: int) -> None:
            codec = codecs.get(packet.payload_type)
            rtx = codec is not None and is_rtx(codec)
            self.arrivals.append(
                Arrival(
                    packet.payload_type,
                    packet.sequence_number,
                    packet.timestamp,
                    packet.ssrc,
                    packet.marker,
                    packet.payload,
                    rtx,
                )
            )
            if rtx and len(packet.payload) >= 2:
                self.repaired.append(struct.unpack("!H", packet.payload[:2])[0])
            elif (
                self.drop_every
                and not rtx
                and len(self.arrivals) % self.drop_every == 0
                and packet.sequence_number not in self.dropped
            ):
                self.dropped.append(packet.sequence_number)
                return
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = watched  # type: ignore[method-assign] # the test's own peer

    def media(self) -> list[Arrival]:
        return [a for a in self.arrivals if not a.rtx]


def watch(member: MediaClient, **options: Any) -> dict[str, Watch]:
    """Watch what ``member``'s current connection receives, by kind (call right after
    ``connect_media``: the relay offers the others' tracks once it is connected)."""
    assert member.pc is not None
    pc = member.pc
    watches = {kind: Watch(**options) for kind in ("audio", "video")}

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                watches[track.kind].install(transceiver.receiver)

    return watches


def server_room(client: AppClient, cid: str) -> Room:
    room = client.app[keys.ROOMS].get(cid)
    assert room is not None
    return room


def user_id(room: Room, role: str) -> str:
    return next(uid for uid, p in room.participants.items() if p.role == role)


async def test_a_viewer_that_loses_packets_gets_them_again_from_the_relay(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    for member in (doctor, patient):
        assert (await member.join())["ok"]
    assert (await doctor.connect_media())["ok"]
    assert (await patient.connect_media())["ok"]
    # The patient's network loses one video packet in 15.
    lossy = watch(patient, drop_every=15)["video"]
    await patient.peer.wait_for(lambda: len(lossy.dropped) >= 20, seconds=30)
    decoded = patient.decoded["video"]
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= decoded + 30, seconds=30)

    # Each lost packet the patient asked for came again, over RTX, from the relay.
    asked = lossy.dropped[:20]
    await patient.peer.wait_for(lambda: set(asked) <= set(lossy.repaired), seconds=10)
    rtx_ssrcs = {a.ssrc for a in lossy.arrivals if a.rtx}
    media_ssrcs = {a.ssrc for a in lossy.media()}
    assert len(rtx_ssrcs) == 1
    assert len(media_ssrcs) == 1
    assert rtx_ssrcs != media_ssrcs
    # The relay answered from its cache (aiortc's own sender loop sends nothing).
    server = server_room(client, cid)
    viewing = server.participants[user_id(server, "patient")].viewing
    assert viewing[(user_id(server, "doctor"), "video")].retransmitted >= len(asked)


async def test_a_viewer_that_comes_mid_stream_starts_at_a_keyframe(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    assert (await doctor.join())["ok"]
    assert (await doctor.connect_media())["ok"]
    # The doctor has been publishing for a while (aiortc's encoder makes a keyframe at
    # the start, then only when asked), and from now on holds back the keyframes asked for.
    server = server_room(client, cid)
    publications = server.participants[user_id(server, "doctor")].publications
    await doctor.peer.wait_for(
        lambda: "video" in publications and publications["video"].frames >= 60, seconds=30
    )
    assert doctor.pc is not None
    camera = next(s for s in doctor.pc.getSenders() if s.track and s.track.kind == "video")
    make_keyframe = camera._send_keyframe
    asked: list[int] = []
    camera._send_keyframe = lambda: asked.append(1)  # type: ignore[method-assign] # the test's own peer

    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await patient.join())["ok"]
    assert (await patient.connect_media())["ok"]
    seen = watch(patient)
    await patient.peer.wait_for(lambda: len(seen["audio"].media()) >= 50, seconds=30)
    stream = server.participants[user_id(server, "patient")].viewing[
        (user_id(server, "doctor"), "video")
    ]
    # The patient's stream is up (the sound flows) and the relay asks for a keyframe;
    # until one comes, the patient gets no video.
    await patient.peer.wait_for(lambda: bool(asked) and stream.dropped >= 30, seconds=30)
    assert seen["video"].media() == []

    make_keyframe()
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= 10, seconds=30)
    video = seen["video"].media()
    assert vp8_starts_keyframe(video[0].payload)
    # Nothing before it: the first packet is the lowest sequence number the patient got.
    assert not any(seq_newer(video[0].seq, a.seq) for a in video)


async def test_a_publishers_new_connection_goes_on_in_the_viewers_stream(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    for member in (doctor, patient):
        assert (await member.join())["ok"]
    assert (await doctor.connect_media())["ok"]
    assert (await patient.connect_media())["ok"]
    seen = watch(patient)
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= 30, seconds=30)
    before = {kind: len(w.media()) for kind, w in seen.items()}

    # The doctor's connection is replaced (a reload): new SSRCs, sequence numbers,
    # timestamps and picture ids on the doctor's side; the patient's stream goes on.
    assert (await doctor.connect_media())["ok"]
    decoded = patient.decoded["video"]
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= decoded + 30, seconds=30)
    await patient.peer.wait_for(lambda: len(seen["audio"].media()) >= before["audio"] + 50)

    for kind, w in seen.items():
        packets = w.media()
        assert len({a.ssrc for a in packets}) == 1, kind
        assert len({a.payload_type for a in packets}) == 1, kind
        ordered = sorted(packets, key=lambda a: (a.seq - packets[0].seq) % 65536)
        seqs = [(a.seq - ordered[0].seq) % 65536 for a in ordered]
        assert seqs == list(range(len(seqs))), kind  # no gap, no repeat
        stamps = [a.timestamp for a in ordered]
        steps = [(b - a) % 2**32 for a, b in itertools.pairwise(stamps)]
        # Never backwards, and no jump beyond the seconds the reconnection took.
        assert max(steps) < (90000 if kind == "video" else 48000) * 5, kind

    video = seen["video"].media()
    ids = [
        vp8_picture_id(a.payload, *at)
        for a in video
        if a.payload and (at := vp8_picture_id_at(a.payload)) is not None
    ]
    jumps = Counter((b - a) % 0x8000 for a, b in itertools.pairwise(ids))
    assert set(jumps) <= {0, 1}  # a frame's packets share one id; the next frame's is one more
    # The new connection started the patient at a keyframe: a keyframe after the switch.
    assert any(vp8_starts_keyframe(a.payload) for a in video[before["video"] :])


async def test_frames_are_assembled_only_while_wanted(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    for member in (doctor, patient):
        assert (await member.join())["ok"]
        assert (await member.connect_media())["ok"]
    server = server_room(client, cid)
    publication = server.participants[user_id(server, "doctor")].publications["video"]
    assert publication.tap is not None
    source = publication.tap

    # The camera check decodes the first seconds; then only packets go through.
    await doctor.peer.wait_for(lambda: source.decode, seconds=10)
    await doctor.peer.wait_for(lambda: not source.decode, seconds=30)
    frames = publication.frames
    await patient.peer.wait_for(lambda: publication.frames >= frames + 30, seconds=30)
    assert not source.assembling
    assert patient.decoded["video"] > 0

    # A recording wants frames: assembled while it runs, not after.
    command = {"consultation_id": cid}
    for member in (doctor, patient):
        consent = {**command, "granted": True}
        assert (await member.peer.call("recording:consent", consent))["ok"]
    assert (await doctor.peer.call("recording:start", command))["ok"]
    frames = publication.frames
    await doctor.peer.wait_for(lambda: publication.frames >= frames + 5, seconds=30)
    assert source.assembling
    assert (await doctor.peer.call("recording:stop", command))["ok"]
    frames = publication.frames
    await doctor.peer.wait_for(lambda: publication.frames >= frames + 5, seconds=30)
    assert not source.assembling


def test_the_check_notices_aiortc_code_it_relies_on_changing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_aiortc()  # as installed: fine

    async def retransmit_differently(self: RTCRtpSender, sequence_number: int) -> None:
        return None

    async def handle_differently(self: RTCRtpSender, packet: Any) -> None:
        return None

    monkeypatch.setattr(RTCRtpSender, "_handle_rtcp_packet", handle_differently)
    with pytest.raises(RuntimeError, match=r"RTCRtpSender\._handle_rtcp_packet changed"):
        check_aiortc.__wrapped__()
    monkeypatch.delattr(RTCRtpReceiver, "_send_rtcp_pli")
    with pytest.raises(RuntimeError, match=r"RTCRtpReceiver\._send_rtcp_pli is gone"):
        check_aiortc.__wrapped__()
