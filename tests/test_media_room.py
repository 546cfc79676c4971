"""The video room with real aiortc peers on loopback: who may enter and when, media both
ways through the passthrough relay, renegotiation when someone arrives, rejoin, end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telemed import keys
from telemed.app import create_app
from telemed.clock import FakeClock
from telemed.media.bandwidth import Receiving
from telemed.media.passthrough import check_aiortc
from telemed.media.sdp import Numbering, without_mdns_candidates
from telemed.settings import Settings
from tests.factories import AppClient
from tests.flows import ok
from tests.media_peers import MediaClient, SineMicrophone, SynthCamera, participant
from tests.realtime import Peer, open_peer, refused


@pytest.fixture
def db_backend() -> str:
    # The room touches the database only to admit and to start/end (covered on both
    # backends by the consultation tests); the media needs one.
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}


async def test_the_relay_checks_aiortc_internals() -> None:
    check_aiortc()


async def test_patient_and_doctor_see_and_hear_each_other(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)

    # The patient comes first and waits: the consultation is not started by it.
    waiting = await patient.join()
    assert waiting["ok"], waiting
    assert waiting["data"]["consultation"]["state"] == "scheduled"
    assert [p["role"] for p in waiting["data"]["participants"]] == ["patient"]
    assert (await patient.connect_media())["ok"]

    # The doctor's entry starts it.
    entered = await doctor.join()
    assert entered["ok"], entered
    assert entered["data"]["consultation"]["state"] == "in_progress"
    assert sorted(p["role"] for p in entered["data"]["participants"]) == ["doctor", "patient"]
    await patient.peer.wait_for(lambda: bool(patient.peer.events("room:participant_joined")))
    assert (await doctor.connect_media())["ok"]

    await patient.peer.wait_for(
        lambda: patient.decoded["video"] >= 30 and patient.decoded["audio"] >= 30, seconds=20
    )
    await doctor.peer.wait_for(
        lambda: doctor.decoded["video"] >= 30 and doctor.decoded["audio"] >= 30, seconds=20
    )
    assert patient.sizes == {(640, 480)}
    assert doctor.sizes == {(640, 480)}
    assert patient.server_offers >= 1
    assert doctor.server_offers >= 1
    # Each received track is labelled with whose it is.
    patient_id = next(
        p["user_id"] for p in entered["data"]["participants"] if p["role"] == "patient"
    )
    doctor_id = next(p["user_id"] for p in entered["data"]["participants"] if p["role"] == "doctor")
    assert {(x["user_id"], x["kind"]) for x in patient.labels.values()} == {
        (doctor_id, "audio"),
        (doctor_id, "video"),
    }
    assert {(x["user_id"], x["kind"]) for x in doctor.labels.values()} == {
        (patient_id, "audio"),
        (patient_id, "video"),
    }

    # Nothing was decoded or encoded on the way: the server's receivers feed no decoder.
    rooms = client.app[keys.ROOMS]
    server_room = rooms.get(cid)
    assert server_room is not None
    for member in server_room.participants.values():
        assert set(member.publications) == {"audio", "video"}
        assert all(p.frames > 0 for p in member.publications.values())
        for track in member.viewing.values():
            assert track.forwarded > 0


async def test_candidates_trickle_after_the_offer(
    client: AppClient,
    room: dict[str, Any],
    room_doctor: MediaClient,
    peers: list[Peer],
    media: list[MediaClient],
) -> None:
    """An offer without candidates is answered at once; the candidates that follow are
    added to the participant's connection, those it cannot or need not use are not."""
    cid = room["id"]
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await patient.join())["ok"]
    line = "candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host"
    early = await patient.trickle(line)
    assert early["error"]["code"] == "invalid_state", early

    assert (await patient.connect_media(trickle=True))["ok"]
    assert patient.trickled
    assert all(ack["ok"] for ack in patient.trickled), patient.trickled
    # Ignored: a browser's mDNS name, a candidate of an earlier connection.
    mdns = "candidate:2 1 udp 2122260223 0b7e1c2d-aaaa.local 50001 typ host"
    assert (await patient.trickle(mdns))["ok"]
    stale = "candidate:3 1 udp 2122260223 192.0.2.77 50002 typ host"
    assert (await patient.trickle(stale, username_fragment="an-old-one"))["ok"]
    # Refused, changing nothing: not a candidate, a name instead of an address, no section.
    for bad, fields in (
        ("candidate:garbage", {}),
        ("candidate:4 1 udp 2122260223 example.org 50003 typ host", {}),
        (line, {"sdp_mid": None}),
    ):
        refused = await patient.trickle(bad, **fields)
        assert refused["error"]["code"] == "invalid_input", refused

    await patient.peer.wait_for(
        lambda: patient.decoded["video"] >= 30 and patient.decoded["audio"] >= 30, seconds=20
    )
    await room_doctor.peer.wait_for(lambda: room_doctor.decoded["video"] >= 30, seconds=20)
    server_room = client.app[keys.ROOMS].get(cid)
    assert server_room is not None
    patient_id = next(user for user, p in server_room.participants.items() if p.role == "patient")
    pc = server_room.participants[patient_id].pc
    assert pc is not None
    remote = {
        c.ip for c in pc.getTransceivers()[0].receiver.transport.transport.getRemoteCandidates()
    }
    assert "127.0.0.1" in remote  # trickled: the offer had none
    assert "192.0.2.77" not in remote
    assert "192.0.2.10" not in remote


async def test_a_weak_viewer_holds_the_publisher_back_and_gets_audio_only(
    client: AppClient,
    room: dict[str, Any],
    room_doctor: MediaClient,
    peers: list[Peer],
    media: list[MediaClient],
) -> None:
    """The patient's REMB reaches the doctor's encoder; under the floor the patient gets
    audio only (both told), video is tried again and kept once the link carries it; the
    patient may choose audio only itself."""
    cid = room["id"]
    doctor = room_doctor
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await patient.join())["ok"]
    assert (await patient.connect_media())["ok"]
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= 30, seconds=20)
    assert doctor.pc is not None
    encoder = next(
        s.__dict__["_RTCRtpSender__encoder"] for s in doctor.pc.getSenders() if s.kind == "video"
    )
    server_room = client.app[keys.ROOMS].get(cid)
    assert server_room is not None
    patient_id = next(u for u, p in server_room.participants.items() if p.role == "patient")
    doctor_id = next(u for u, p in server_room.participants.items() if p.role == "doctor")

    # 400 kbit/s: the doctor's encoder is held to what the patient takes (90 % of it).
    await patient.estimate(400_000)
    await doctor.peer.wait_for(lambda: encoder.target_bitrate <= 360_000, seconds=10)

    def receiving(peer: Peer) -> list[dict[str, Any]]:
        return [e for e in peer.events("media:receiving") if e["user_id"] == patient_id]

    # Under the floor for two seconds: audio only, the doctor and the patient told.
    await patient.estimate(80_000)
    await patient.peer.wait_for(lambda: bool(receiving(patient.peer)), seconds=10)
    await doctor.peer.wait_for(lambda: bool(receiving(doctor.peer)), seconds=10)
    for peer in (patient.peer, doctor.peer):
        assert receiving(peer)[-1]["video"] is False
        assert receiving(peer)[-1]["reason"] == "network"
    stream = server_room.participants[patient_id].viewing[(doctor_id, "video")]
    assert stream.paused
    video, audio = patient.decoded["video"], patient.decoded["audio"]
    await asyncio.sleep(1)
    assert patient.decoded["audio"] > audio + 20  # the sound goes on
    assert patient.decoded["video"] <= video + 2
    # Its link does not hold the doctor back any more.
    await doctor.peer.wait_for(lambda: encoder.target_bitrate > 360_000, seconds=10)

    # A try comes: video again at a low rate; the link now carries it, video stays.
    await patient.peer.wait_for(lambda: receiving(patient.peer)[-1]["video"], seconds=15)
    await patient.estimate(1_000_000)
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= video + 30, seconds=15)
    # The try is judged (video kept) rather than left to run out.
    link = server_room.participants[patient_id].link
    await patient.peer.wait_for(lambda: link.state is Receiving.VIDEO, seconds=10)
    assert not stream.paused
    assert receiving(doctor.peer)[-1]["video"] is True

    # The patient's own choice.
    chosen = await patient.peer.call("media:audio_only", {"consultation_id": cid, "active": True})
    assert chosen["ok"], chosen
    await doctor.peer.wait_for(lambda: receiving(doctor.peer)[-1]["reason"] == "chosen")
    assert stream.paused
    joined = await doctor.join()  # a (re)join lists it too
    view = next(p for p in joined["data"]["participants"] if p["user_id"] == patient_id)
    assert view["video"] is False
    assert view["audio_only_reason"] == "chosen"
    back = await patient.peer.call("media:audio_only", {"consultation_id": cid, "active": False})
    assert back["ok"], back
    await doctor.peer.wait_for(lambda: receiving(doctor.peer)[-1]["video"] is True)
    assert not stream.paused


async def test_call_quality_reports_reach_the_room(
    client: AppClient,
    room: dict[str, Any],
    room_doctor: MediaClient,
    peers: list[Peer],
    media: list[MediaClient],
) -> None:
    cid = room["id"]
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await patient.join())["ok"]
    assert (await patient.connect_media())["ok"]
    report = {"consultation_id": cid, "level": "weak", "rtt_ms": 650, "loss": 0.01}
    assert (await patient.peer.call("media:stats", report))["ok"]
    assert (await patient.peer.call("media:stats", {**report, "level": "weak"}))["ok"]

    def told(peer: Peer) -> list[str]:
        return [e["level"] for e in peer.events("media:quality")]

    await room_doctor.peer.wait_for(lambda: told(room_doctor.peer) == ["weak"])
    await patient.peer.wait_for(lambda: told(patient.peer) == ["weak"])  # once: no change
    for bad in ({"loss": 2}, {"level": "splendid"}, {"freezes": -1}):
        refused = await patient.peer.call("media:stats", {**report, **bad})
        assert refused["error"]["code"] == "invalid_input", refused
    server_room = client.app[keys.ROOMS].get(cid)
    assert server_room is not None
    member = next(p for p in server_room.participants.values() if p.role == "patient")
    assert member.quality.summary.reports == 2
    assert member.quality.summary.seconds["weak"] > 0

    # Kept once the patient leaves: the doctor sees it on the consultation, the manager
    # in the report by centre; not the patient, and nobody else.
    assert (await patient.peer.call("room:leave", {"consultation_id": cid}))["ok"]
    path = f"/consultations/{cid}/call-quality"
    kept = await ok(client, "GET", path, room["doctor"]["token"])
    [row] = kept["items"]
    assert row["role"] == "patient"
    assert row["weak_seconds"] >= 0
    assert row["worst"]["level"] == "weak"
    assert row["worst"]["rtt_ms"] == 650
    forbidden = await client.get(
        f"/api/v1{path}", headers={"Authorization": f"Bearer {room['patient']['token']}"}
    )
    assert forbidden.status == 403
    hidden = await client.get(
        f"/api/v1{path}", headers={"Authorization": f"Bearer {room['outsider']['token']}"}
    )
    assert hidden.status == 404
    report = await ok(client, "GET", "/call-quality", room["manager"])
    [centre] = report["by_centre"]
    assert centre["centre_id"] == room["centre"]["id"]
    assert centre["calls"] == 1


async def test_who_may_enter_and_when(
    client: AppClient, booked: dict[str, Any], clock: FakeClock, peers: list[Peer]
) -> None:
    cid = booked["id"]
    outsider = await open_peer(client, peers, booked["outsider"]["token"])
    manager = await open_peer(client, peers, booked["manager"])
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    join = {"consultation_id": cid}

    # A day early: the room is not open yet, for either side.
    early = refused(await patient.call("room:join", join), "too_late")
    assert "opens_at" in early["details"]
    refused(await doctor.call("room:join", join), "too_late")

    consultation = await ok(client, "GET", f"/consultations/{cid}", booked["patient"]["token"])
    starts = datetime.fromisoformat(consultation["starts_at"])
    clock.advance(starts - timedelta(minutes=10) - clock.now())
    # Not a participant: learns nothing. A manager sees it but has no place in the room.
    refused(await outsider.call("room:join", join), "not_found")
    refused(await manager.call("room:join", join), "forbidden")
    # Nobody joined: no offer is taken, and nothing was started.
    refused(
        await outsider.call("rtc:offer", {"consultation_id": cid, "sdp": "v=0"}), "invalid_state"
    )
    assert client.app[keys.ROOMS].get(cid) is None
    still = await ok(client, "GET", f"/consultations/{cid}", booked["patient"]["token"])
    assert still["state"] == "scheduled"
    # Malformed payloads.
    refused(await patient.call("room:join", {"consultation_id": cid, "extra": 1}), "invalid_input")
    assert (await patient.call("room:join", join))["ok"] is True
    garbage = {"consultation_id": cid, "sdp": "not sdp"}
    refused(await patient.call("rtc:offer", garbage), "invalid_input")

    # After its time (and the grace), a consultation that never started is closed.
    clock.advance(timedelta(hours=2))
    refused(await doctor.call("room:join", join), "too_late")


async def in_call(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> tuple[MediaClient, MediaClient]:
    """The patient and the doctor in the room, media flowing: (patient, doctor)."""
    cid = room["id"]
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    for member in (patient, doctor):
        assert (await member.join())["ok"]
        assert (await member.connect_media())["ok"]
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= 20, seconds=20)
    return patient, doctor


async def test_rejoin_restores_media_and_the_end_closes_the_room(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    patient, doctor = await in_call(client, room, peers, media)

    # The patient's connection breaks and it comes back with a new one (a reload): the
    # doctor keeps the same incoming track, which carries the new connection's frames.
    before = doctor.decoded["video"]
    assert (await patient.connect_media())["ok"]
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= before + 30, seconds=20)
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= 20, seconds=20)

    # The doctor drops its socket and comes back: still the doctor (the identity, not
    # the connection, holds the authority), and may end the consultation.
    await lose_socket(client, doctor.peer)
    doctor_again = await participant(client, peers, media, room["doctor"]["token"], cid)
    assert (await doctor_again.join())["ok"]
    assert (await doctor_again.connect_media())["ok"]
    await doctor_again.peer.wait_for(lambda: doctor_again.decoded["video"] >= 20, seconds=20)

    # Only the doctor ends it.
    patient_end = await patient.peer.call("consultation:end", {"consultation_id": cid})
    refused(patient_end, "forbidden")
    ended = await doctor_again.peer.call("consultation:end", {"consultation_id": cid})
    assert ended["ok"], ended
    assert client.app[keys.ROOMS].get(cid) is None
    consultation = await ok(client, "GET", f"/consultations/{cid}", room["patient"]["token"])
    assert consultation["state"] == "completed"
    await patient.peer.wait_for(
        lambda: any(e["state"] == "completed" for e in patient.peer.events("consultation:updated"))
    )
    refused(await patient.peer.call("room:join", {"consultation_id": cid}), "invalid_state")


async def test_a_new_socket_keeps_the_media_connection_that_lived_through_the_drop(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    """A phone whose network dropped for a few seconds keeps its address: its media
    connection works again as soon as the network does, and only its socket is new. The
    server says so at the join (``connection_kept``), and the page keeps the connection."""
    cid = room["id"]
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    first = await patient.join()
    assert first["ok"]
    assert first["data"]["connection_kept"] is False  # nothing to keep yet
    assert (await patient.connect_media())["ok"]
    assert (await doctor.join())["ok"]
    assert (await doctor.connect_media())["ok"]
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= 20, seconds=20)

    # The patient's socket is replaced; its media connection goes on.
    patient.attach(await open_peer(client, peers, room["patient"]["token"]))
    again = await patient.join()
    assert again["ok"]
    assert again["data"]["connection_kept"] is True
    before = doctor.decoded["video"], patient.decoded["video"]
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= before[0] + 20, seconds=20)
    await patient.peer.wait_for(lambda: patient.decoded["video"] >= before[1] + 20, seconds=20)

    # Its connection closed: a join again says there is none to keep.
    assert patient.pc is not None
    await patient.pc.close()
    held_room = client.app[keys.ROOMS].get(cid)
    assert held_room is not None
    held = held_room.participants[room["patient"]["user"]["id"]]
    await patient.peer.wait_for(lambda: not held.connected())
    patient.attach(await open_peer(client, peers, room["patient"]["token"]))
    last = await patient.join()
    assert last["ok"]
    assert last["data"]["connection_kept"] is False


async def lose_socket(client: AppClient, peer: Peer) -> None:
    """The peer's connection breaks (as with the network: no room:leave first), and the
    server has noticed."""
    sid = peer.sio.get_sid()
    directory = client.app[keys.DIRECTORY]
    assert peer.sio.eio.ws is not None
    await peer.sio.eio.ws.close()
    await peer.wait_for(lambda: sid not in directory.joined)


@pytest.mark.parametrize("settings_overrides", [{"room_return_seconds": 30}])
async def test_a_lost_socket_keeps_its_place_and_a_closed_one_leaves_at_once(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    """The old socket's close, sent again when the network is back, may reach the server
    before the new socket's join: the place (and the media connection) is kept anyway.
    Meanwhile the doctor is not told the patient left."""
    cid = room["id"]
    patient, doctor = await in_call(client, room, peers, media)
    held_room = client.app[keys.ROOMS].get(cid)
    assert held_room is not None
    patient_id = room["patient"]["user"]["id"]

    await lose_socket(client, patient.peer)
    assert patient_id in held_room.participants  # kept for TELEMED_ROOM_RETURN_SECONDS
    patient.attach(await open_peer(client, peers, room["patient"]["token"]))
    again = await patient.join()
    assert again["ok"]
    assert again["data"]["connection_kept"] is True
    before = doctor.decoded["video"]
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= before + 20, seconds=20)
    assert not doctor.peer.events("room:participant_left")

    # A client that goes away says so, then closes its socket at once (an app's leave):
    # the doctor sees it go, well within the 30 s a lost socket would keep its place.
    await patient.peer.sio.emit("room:leave", {"consultation_id": cid})
    await patient.peer.sio.eio.queue.join()  # sent (python-socketio would drop it at close)
    await patient.peer.close()
    await doctor.peer.wait_for(lambda: bool(doctor.peer.events("room:participant_left")))
    assert patient_id not in held_room.participants

    # The client's room:leave may be handled after its socket's close (both are the
    # socket's last packets): it leaves at once all the same.
    patient.attach(await open_peer(client, peers, room["patient"]["token"]))
    assert (await patient.join())["ok"]
    assert patient_id in held_room.participants
    sid = patient.peer.sio.get_sid()
    await lose_socket(client, patient.peer)
    await client.app[keys.DIRECTORY].leave(sid, uuid.UUID(cid))
    assert patient_id not in held_room.participants
    await doctor.peer.wait_for(lambda: len(doctor.peer.events("room:participant_left")) == 2)


@pytest.mark.parametrize("settings_overrides", [{"room_return_seconds": 1}])
async def test_a_lost_socket_that_does_not_come_back_leaves_after_a_while(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    patient, doctor = await in_call(client, room, peers, media)
    held_room = client.app[keys.ROOMS].get(cid)
    assert held_room is not None

    await lose_socket(client, patient.peer)
    await doctor.peer.wait_for(lambda: bool(doctor.peer.events("room:participant_left")))
    [left] = doctor.peer.events("room:participant_left")
    assert left["user_id"] == room["patient"]["user"]["id"]
    assert left["user_id"] not in held_room.participants


def loopback_udp_ports() -> set[int]:
    """The UDP ports on 127.0.0.1 this process holds open (the relay's ICE sockets: the
    test's own peers gather on the other addresses)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                ours.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path("/proc/self/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if address == "0100007F" and fields[9] in ours:
            ports.add(int(port, 16))
    return ports


async def test_a_participant_leaving_while_its_offer_is_answered_leaves_no_socket_open(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    """Closed while it gathers its candidates, a connection would keep the sockets it
    was opening for ever (aioice adds them after its close): the server waits for the
    gathering, then closes, and the offer is refused."""
    cid = room["id"]
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await patient.join())["ok"]
    held_room = client.app[keys.ROOMS].get(cid)
    assert held_room is not None
    held = held_room.participants[room["patient"]["user"]["id"]]
    before = loopback_udp_ports()
    offering = asyncio.ensure_future(patient.connect_media())
    async with asyncio.timeout(10):
        # Step by step (the server runs in this loop), until its answer's candidates are
        # being gathered.
        while held.pc is None or held.pc.iceGatheringState != "gathering":  # noqa: ASYNC110 (each step of the loop)
            await asyncio.sleep(0)
    assert await held_room.leave(held.user_id)
    refused(await offering, "invalid_state")
    assert patient.pc is not None
    await patient.pc.close()  # the test's own side
    assert loopback_udp_ports() == before


def status_of(member: MediaClient, user_id: str) -> dict[str, Any] | None:
    """The last media status the member's socket was told of ``user_id``."""
    changes = [c for c in member.peer.events("media:status_changed") if c["user_id"] == user_id]
    return changes[-1] if changes else None


def checked(status: dict[str, Any] | None) -> bool:
    return status is not None and all(
        status[device]["state"] not in ("waiting", "checking")
        for device in ("camera", "microphone")
    )


@pytest.mark.parametrize(
    ("camera", "microphone", "expected"),
    [
        (SynthCamera, SineMicrophone, ("ok", "ok")),
        (lambda: SynthCamera(black=True), SineMicrophone, ("black", "ok")),
        (SynthCamera, lambda: SineMicrophone(silent=True), ("ok", "silent")),
        (SynthCamera, None, ("ok", "missing")),
    ],
    ids=["normal", "black-picture", "silent-microphone", "no-audio-track"],
)
async def test_the_server_checks_camera_and_microphone(
    client: AppClient,
    room: dict[str, Any],
    peers: list[Peer],
    media: list[MediaClient],
    camera: Any,
    microphone: Any,
    expected: tuple[str, str],
) -> None:
    cid = room["id"]
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    patient_peer = await open_peer(client, peers, room["patient"]["token"])
    patient = MediaClient(patient_peer, cid, camera=camera, microphone=microphone)
    media.append(patient)
    assert (await doctor.join())["ok"]
    joined = await patient.join()
    patient_id = next(
        p["user_id"] for p in joined["data"]["participants"] if p["role"] == "patient"
    )
    assert joined["data"]["participants"][0]["media"]["camera"]["state"] == "waiting"
    # What the browser said of its devices reaches the room.
    reported = await patient.peer.call(
        "media:report", {"consultation_id": cid, "camera": "granted", "microphone": "granted"}
    )
    assert reported["ok"], reported
    assert (await patient.connect_media())["ok"]

    await doctor.peer.wait_for(lambda: checked(status_of(doctor, patient_id)), seconds=20)
    status = status_of(doctor, patient_id)
    assert status is not None
    assert (status["camera"]["state"], status["microphone"]["state"]) == expected
    assert status["camera"]["permission"] == "granted"
    camera_seen = status["camera"]
    assert camera_seen["width"] == 640
    assert camera_seen["height"] == 480
    assert camera_seen["frames"] >= 30
    assert 20 <= camera_seen["fps"] <= 35
    if expected[1] == "ok":
        assert status["microphone"]["level_dbfs"] > -30
    if expected[1] == "silent":
        assert status["microphone"]["level_dbfs"] < -50
    # Kept on the participant: someone joining later sees it at once.
    later = (await doctor.join())["data"]["participants"]
    kept = next(p for p in later if p["user_id"] == patient_id)["media"]
    assert (kept["camera"]["state"], kept["microphone"]["state"]) == expected


async def doctor_then_patient(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> tuple[MediaClient, MediaClient, str]:
    """The doctor, then the patient, in the room (no media connections); and the
    patient's user id."""
    cid = room["id"]
    doctor = await participant(client, peers, media, room["doctor"]["token"], cid)
    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await doctor.join())["ok"]
    patient_id = (await patient.join())["data"]["participants"][-1]["user_id"]
    return doctor, patient, str(patient_id)


async def test_a_denied_camera_is_shown_to_the_room(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    doctor, patient, patient_id = await doctor_then_patient(client, room, peers, media)
    denied = {"consultation_id": cid, "camera": "denied", "microphone": "no_device"}
    assert (await patient.peer.call("media:report", denied))["ok"]
    await doctor.peer.wait_for(lambda: status_of(doctor, patient_id) is not None)
    status = status_of(doctor, patient_id)
    assert status is not None
    assert status["camera"]["permission"] == "denied"
    assert status["microphone"]["permission"] == "no_device"
    assert (status["camera"]["enabled"], status["microphone"]["enabled"]) == (True, True)
    bad = {"consultation_id": cid, "camera": "maybe", "microphone": "granted"}
    refused(await patient.peer.call("media:report", bad), "invalid_input")


async def test_switching_the_camera_or_microphone_off_is_shown_to_the_room(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[MediaClient]
) -> None:
    cid = room["id"]
    doctor, patient, patient_id = await doctor_then_patient(client, room, peers, media)
    muted = {
        "consultation_id": cid,
        "camera": "granted",
        "microphone": "granted",
        "camera_enabled": True,
        "microphone_enabled": False,
    }
    assert (await patient.peer.call("media:report", muted))["ok"]

    def microphone_enabled() -> bool | None:
        status = status_of(doctor, patient_id)
        return None if status is None else bool(status["microphone"]["enabled"])

    await doctor.peer.wait_for(lambda: microphone_enabled() is False)
    status = status_of(doctor, patient_id)
    assert status is not None
    assert status["camera"]["enabled"] is True
    # Kept for who joins later, and switched on again.
    later = (await doctor.join())["data"]["participants"]
    kept = next(p for p in later if p["user_id"] == patient_id)["media"]
    assert kept["microphone"]["enabled"] is False
    assert (await patient.peer.call("media:report", {**muted, "microphone_enabled": True}))["ok"]
    await doctor.peer.wait_for(lambda: microphone_enabled() is True)


def test_server_offers_keep_the_browsers_numbers() -> None:
    """aiortc renumbers payload types and header extensions in a new offer; the room
    offers the participant's own numbers again (browsers refuse renumbered extensions
    and would move their streams to renumbered payload types)."""
    browser = "\r\n".join(
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=rtpmap:111 opus/48000/2",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
            "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack pli",
            "a=rtpmap:97 rtx/90000",
            "a=fmtp:97 apt=96",
        ]
    )
    ours = "\r\n".join(
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 96",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=rtpmap:96 opus/48000/2",
            "m=video 9 UDP/TLS/RTP/SAVPF 97 98",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "a=extmap:5 urn:ietf:params:rtp-hdrext:toffset",
            "a=rtpmap:97 VP8/90000",
            "a=rtcp-fb:97 nack pli",
            "a=rtpmap:98 rtx/90000",
            "a=fmtp:98 apt=97",
        ]
    )
    aligned = Numbering.of(browser).apply(ours).split("\r\n")
    assert aligned == [
        "v=0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:toffset",  # unknown to it: a free id
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1"]),
        ("127.0.0.1, ::1", ["127.0.0.1", "::1"]),
        ('["10.0.0.5"]', ["10.0.0.5"]),
    ],
)
def test_media_addresses_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: list[str]
) -> None:
    monkeypatch.setenv("TELEMED_MEDIA_ADDRESSES", text)
    assert Settings().media_addresses == expected


def test_bad_ice_servers_stop_the_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ice_servers=[{"url": "stun:example.org"}])
    with pytest.raises(ValueError, match="TELEMED_ICE_SERVERS"):
        create_app(settings)


def test_a_browsers_mdns_candidates_are_left_out() -> None:
    offer = "\r\n".join(
        [
            "v=0",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=candidate:1 1 udp 2122260223 0d7c53c4-8a4e.local 54321 typ host",
            "a=candidate:2 1 udp 1686052607 203.0.113.7 54321 typ srflx raddr 0.0.0.0 rport 0",
            "a=mid:0",
        ]
    )
    assert without_mdns_candidates(offer).split("\r\n") == [
        "v=0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=candidate:2 1 udp 1686052607 203.0.113.7 54321 typ srflx raddr 0.0.0.0 rport 0",
        "a=mid:0",
    ]
