"""Recording with consent: nothing is recorded without everyone's consent; each
participant's audio and video are remuxed into a WebM file that decodes and seeks; a
withdrawal stops it; a rejoin starts a new segment; who may download; purge."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import pytest
from sqlmodel import select

from telemed import keys
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from telemed.media.models import Recording
from tests.factories import AppClient, assert_error, bearer
from tests.flows import ok
from tests.media_peers import MediaClient, participant
from tests.realtime import Peer, refused

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_backend() -> str:
    return "sqlite"  # the metadata is plain rows; the media needs one backend


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}


@pytest.fixture
async def call(
    room: dict[str, Any], client: AppClient, peers: list[Peer], media: list[MediaClient]
) -> dict[str, Any]:
    """Patient and doctor in the room, media flowing both ways."""
    cid = room["id"]
    members = {}
    for role in ("doctor", "patient"):
        member = await participant(client, peers, media, room[role]["token"], cid)
        assert (await member.join())["ok"]
        assert (await member.connect_media())["ok"]
        members[role] = member
    for member in members.values():
        await member.peer.wait_for(member.receives_video, seconds=20)
    return {**room, "media": members, "cid": cid}


def recordings_on_disk(client: AppClient) -> list[Path]:
    root = client.app[keys.SETTINGS].data_dir / "recordings"
    return sorted(root.rglob("*.webm")) if root.exists() else []


def decode(path: Path) -> dict[str, int]:
    counts = {"video": 0, "audio": 0}
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            counts["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    return counts


def server_frames(client: AppClient, cid: str) -> dict[tuple[str, str], int]:
    room = client.app[keys.ROOMS].get(cid)
    assert room is not None
    return {
        (p.role, kind): publication.frames
        for p in room.participants.values()
        for kind, publication in p.publications.items()
    }


async def media_flowed(
    client: AppClient, cid: str, peer: Any, *, video: int, audio: int = 0
) -> None:
    """Wait until every publisher's tracks have carried ``video`` and ``audio`` more
    frames through the server (media has flowed for a while, however busy the machine)."""
    before = server_frames(client, cid)

    def enough() -> bool:
        now = server_frames(client, cid)
        wanted = {"video": video, "audio": audio}
        return all(now.get(key, 0) - count >= wanted[key[1]] for key, count in before.items())

    await peer.wait_for(enough, seconds=30)


async def test_nothing_is_recorded_without_everyone_consenting(
    client: AppClient, call: dict[str, Any]
) -> None:
    cid = call["cid"]
    doctor, patient = call["media"]["doctor"].peer, call["media"]["patient"].peer
    command = {"consultation_id": cid}
    error = refused(await doctor.call("recording:start", command), "invalid_state")
    assert len(error["details"]["without_consent"]) == 2
    assert (await doctor.call("recording:consent", {**command, "granted": True}))["ok"]
    error = refused(await doctor.call("recording:start", command), "invalid_state")
    assert len(error["details"]["without_consent"]) == 1
    # Only the doctor starts it, even with every consent.
    assert (await patient.call("recording:consent", {**command, "granted": True}))["ok"]
    refused(await patient.call("recording:start", command), "forbidden")
    await media_flowed(client, cid, doctor, video=10)  # what a recording would have had
    assert recordings_on_disk(client) == []
    async with client.app[keys.SESSION_FACTORY]() as session:
        assert (await session.exec(select(Recording))).all() == []


async def test_consented_recording_decodes_and_a_withdrawal_stops_it(
    client: AppClient, call: dict[str, Any]
) -> None:
    cid = call["cid"]
    doctor, patient = call["media"]["doctor"].peer, call["media"]["patient"].peer
    command = {"consultation_id": cid}
    for peer in (doctor, patient):
        assert (await peer.call("recording:consent", {**command, "granted": True}))["ok"]
    assert (await doctor.call("recording:start", command))["ok"]
    before = server_frames(client, cid)
    await patient.wait_for(
        lambda: any(e["recording"]["active"] for e in patient.events("recording:state_changed"))
    )
    await media_flowed(client, cid, patient, video=110, audio=180)

    # The patient withdraws: the recording stops at once, for everyone.
    assert (await patient.call("recording:consent", {**command, "granted": False}))["ok"]
    after = server_frames(client, cid)
    await doctor.wait_for(
        lambda: not doctor.events("recording:state_changed")[-1]["recording"]["active"]
    )
    sent = {key: after[key] - before[key] for key in after}

    listed = await ok(client, "GET", f"/consultations/{cid}/recordings", call["doctor"]["token"])
    files = listed["items"]
    assert len(files) == 2
    assert {f["state"] for f in files} == {"complete"}
    data_dir = client.app[keys.SETTINGS].data_dir
    room = client.app[keys.ROOMS].get(cid)
    assert room is not None
    role_of = {p.user_id: p.role for p in room.participants.values()}
    for item in files:
        path = next(p for p in recordings_on_disk(client) if item["user_id"] in p.name)
        assert path.is_relative_to(data_dir)
        content = path.read_bytes()
        assert item["size"] == len(content)
        assert item["sha256"] == hashlib.sha256(content).hexdigest()
        assert 3 <= item["duration_seconds"] <= 6
        decoded = decode(path)
        role = role_of[item["user_id"]]
        # Within 10 % of what the participant sent while it was recorded.
        assert decoded["video"] >= 0.9 * sent[(role, "video")], (decoded, sent)
        assert decoded["audio"] >= 0.9 * sent[(role, "audio")], (decoded, sent)
        assert decoded["video"] == item["video_frames"]
        with av.open(str(path)) as container:
            assert container.duration is not None  # closed cleanly: seekable
            container.seek(int(container.duration * 0.8))
            assert next(container.decode(video=0)) is not None

        # The doctor downloads it (audited); the patient may not by default.
        download = await client.get(
            f"/api/v1/recordings/{item['id']}/file", headers=bearer(call["doctor"]["token"])
        )
        assert download.status == 200
        assert download.headers["Content-Type"] == "video/webm"
        assert await download.read() == content
        denied = await client.get(
            f"/api/v1/recordings/{item['id']}/file", headers=bearer(call["patient"]["token"])
        )
        await assert_error(denied, 403, "forbidden")
        outsider = await client.get(
            f"/api/v1/recordings/{item['id']}/file", headers=bearer(call["outsider"]["token"])
        )
        await assert_error(outsider, 404, "not_found")
    manager_list = await ok(client, "GET", f"/consultations/{cid}/recordings", call["manager"])
    assert len(manager_list["items"]) == 2


async def test_a_rejoin_while_recording_starts_a_new_segment(
    client: AppClient, call: dict[str, Any]
) -> None:
    cid = call["cid"]
    doctor, patient = call["media"]["doctor"], call["media"]["patient"]
    command = {"consultation_id": cid}
    for member in (doctor, patient):
        assert (await member.peer.call("recording:consent", {**command, "granted": True}))["ok"]
    assert (await doctor.peer.call("recording:start", command))["ok"]
    await media_flowed(client, cid, doctor.peer, video=40)
    assert (await patient.connect_media())["ok"]  # a reload: a new connection
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= 60, seconds=20)
    await media_flowed(client, cid, doctor.peer, video=40)
    assert (await doctor.peer.call("recording:stop", command))["ok"]

    listed = await ok(client, "GET", f"/consultations/{cid}/recordings", call["doctor"]["token"])
    by_user: dict[str, list[dict[str, Any]]] = {}
    for item in listed["items"]:
        by_user.setdefault(item["user_id"], []).append(item)
    segments = sorted(len(items) for items in by_user.values())
    assert segments == [1, 2]  # the doctor's one file, the patient's two
    for path in recordings_on_disk(client):
        assert decode(path)["video"] > 0


async def test_old_recordings_are_purged(
    client: AppClient, call: dict[str, Any], clock: FakeClock
) -> None:
    cid = call["cid"]
    command = {"consultation_id": cid}
    for role in ("doctor", "patient"):
        peer = call["media"][role].peer
        assert (await peer.call("recording:consent", {**command, "granted": True}))["ok"]
    assert (await call["media"]["doctor"].peer.call("recording:start", command))["ok"]
    await media_flowed(client, cid, call["media"]["doctor"].peer, video=30)
    assert (await call["media"]["doctor"].peer.call("consultation:end", command))["ok"]
    assert len(recordings_on_disk(client)) == 2
    clock.advance(timedelta(days=29))
    await run_jobs_once(client.app)
    assert len(recordings_on_disk(client)) == 2
    clock.advance(timedelta(days=2))
    await run_jobs_once(client.app)
    assert recordings_on_disk(client) == []
    async with client.app[keys.SESSION_FACTORY]() as session:
        assert (await session.exec(select(Recording))).all() == []


async def test_a_file_from_a_killed_process_decodes_up_to_shortly_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "killed.webm"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.record_and_die",
        str(path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    written = (0, 0)
    try:
        async with asyncio.timeout(30):
            while written[0] < 90:  # three seconds of video
                line = await process.stdout.readline()
                assert line, "the recorder exited early"
                video, audio = line.split()
                written = (int(video), int(audio))
    finally:
        process.kill()
        await process.wait()
    decoded = decode(path)
    # What was written up to half a second (the muxer's cluster) before the kill is there.
    assert decoded["video"] >= written[0] - 20, (decoded, written)
    assert decoded["audio"] >= written[1] - 30, (decoded, written)
