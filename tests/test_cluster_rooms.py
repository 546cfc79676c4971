"""Video rooms across real ``telemed serve`` processes sharing PostgreSQL, Redis and a
data directory, with aiortc peers on loopback: a room lives on one process whichever
processes its participants' sockets are on; twenty rooms placed at once each get one
owner; a room whose process is killed, or stopped, goes on on another, recording
included."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from bench.common import Booked
from tests.media_peers import MediaClient, SineMicrophone, SynthCamera
from tests.nodes import NodeGroup, book, node_group
from tests.realtime import Peer, connect
from tests.servers import PostgresServer, RedisServer


class Members:
    """The test's sockets and media clients, closed at the end."""

    def __init__(self, group: NodeGroup) -> None:
        self.group = group
        self.peers: list[Peer] = []
        self.clients: list[MediaClient] = []

    async def socket(self, n: int, token: str) -> Peer:
        peer = await connect(self.group.url(n), token)
        self.peers.append(peer)
        return peer

    async def member(
        self, n: int, token: str, cid: str, *, size: tuple[int, int] = (320, 240)
    ) -> MediaClient:
        """A participant with a synthetic camera and microphone, its socket on process
        ``n`` (not joined yet)."""
        client = MediaClient(
            await self.socket(n, token),
            cid,
            camera=lambda: SynthCamera(*size),
            microphone=SineMicrophone,
        )
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for peer in self.peers:
            await peer.close()


async def _enter(*members: MediaClient) -> None:
    for member in members:
        joined = await member.join()
        assert joined["ok"], joined
        offered = await member.connect_media()
        assert offered["ok"], offered


async def _decoding(members: list[MediaClient], *, more_than: int = 0, seconds: float = 30) -> None:
    """Until each decodes video and audio of the others: ``more_than`` frames more than
    it had (the counts are kept across connections)."""
    start = [dict(m.decoded) for m in members]
    async with asyncio.timeout(seconds):
        # Polls the clients' counters: frames arrive on tasks of their own.
        while not all(  # noqa: ASYNC110
            m.decoded["video"] - s.get("video", 0) > max(more_than, 10)
            and m.decoded["audio"] - s.get("audio", 0) > max(more_than, 10)
            for m, s in zip(members, start, strict=True)
        ):
            await asyncio.sleep(0.1)


async def _recordings(group: NodeGroup, cid: str) -> list[asyncpg.Record]:
    url = group.database_url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(url)
    try:
        return list(
            await connection.fetch(
                "SELECT user_id, segment, state, size, path FROM recording"
                " WHERE consultation_id = $1 ORDER BY user_id, segment",
                uuid.UUID(cid),
            )
        )
    finally:
        await connection.close()


async def test_a_room_is_on_one_process_whichever_process_each_side_is_on(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with node_group(postgres, redis_server, tmp_path, 2) as group:
        members = Members(group)
        try:
            [booked] = await book(group, 1)
            cid = booked.consultation_id
            patient = await members.member(0, booked.patient_token, cid)
            doctor = await members.member(1, booked.doctor_token, cid)
            await _enter(patient, doctor)
            await _decoding([patient, doctor])
            owner = await group.owner(cid)
            assert owner in (0, 1)
            assert await group.rooms(1) == {owner: 1, 1 - owner: 0}

            # Watching the consultation from either process, each sees the other present.
            watchers = [
                await members.socket(0, booked.patient_token),
                await members.socket(1, booked.doctor_token),
            ]
            seen = [
                await w.call("consultation:subscribe", {"consultation_id": cid}) for w in watchers
            ]
            assert len(seen[1]["data"]["online"]) == 2

            # The doctor ends it from the process that does not hold the room (or does):
            # the room closes where it is, and both sides hear of it.
            ended = await doctor.peer.call("consultation:end", {"consultation_id": cid})
            assert ended["ok"], ended
            for watcher in watchers:
                await watcher.wait_for(
                    lambda w=watcher: any(  # type: ignore[misc]
                        e["state"] == "completed" for e in w.events("consultation:updated")
                    )
                )
            assert await group.rooms(0) == {0: 0, 1: 0}
            assert await group.owner(cid) is None
        finally:
            await members.close()


async def test_twenty_rooms_joined_at_once_from_both_processes_each_have_one_owner(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with node_group(postgres, redis_server, tmp_path, 2) as group:
        members = Members(group)
        try:
            booked = await book(group, 20)
            pairs = [
                (
                    await members.member(0, b.patient_token, b.consultation_id, size=(160, 120)),
                    await members.member(1, b.doctor_token, b.consultation_id, size=(160, 120)),
                )
                for b in booked
            ]
            await asyncio.gather(*(_enter(*pair) for pair in pairs))
            await _decoding([member for pair in pairs for member in pair], seconds=60)
            owners = [await group.owner(b.consultation_id) for b in booked]
            assert all(owner in (0, 1) for owner in owners), owners
            # Placed on the process with the fewest rooms, in one step each: an even split.
            assert await group.rooms(20) == {0: 10, 1: 10}
            assert sorted(owner or 0 for owner in owners) == [0] * 10 + [1] * 10
        finally:
            await members.close()


async def _recording(patient: MediaClient, doctor: MediaClient) -> None:
    cid = {"consultation_id": patient.consultation_id}
    for member in (patient, doctor):
        consent = await member.peer.call("recording:consent", {**cid, "granted": True})
        assert consent["ok"], consent
    started = await doctor.peer.call("recording:start", cid)
    assert started["ok"], started


async def _placed_apart(
    group: NodeGroup, members: Members, booked: Booked, *, owner_holds_patient: bool
) -> tuple[MediaClient, MediaClient, int]:
    """The room placed first (by a join from process 0); then the patient's socket on
    the owner's process or not, and the doctor's on another one. Returns the patient,
    the doctor and the owner."""
    cid = booked.consultation_id
    probe = await members.socket(0, booked.patient_token)
    assert (await probe.call("room:join", {"consultation_id": cid}))["ok"]
    owner = await group.owner(cid)
    assert owner is not None
    others = [n for n in range(len(group.ports)) if n != owner]
    patient_at = owner if owner_holds_patient else others[1]
    patient = await members.member(patient_at, booked.patient_token, cid)
    doctor = await members.member(others[0], booked.doctor_token, cid)
    await _enter(patient, doctor)
    await probe.close()
    await _decoding([patient, doctor])
    return patient, doctor, owner


@pytest.mark.parametrize("owner_holds_patient", [False, True], ids=["owner-alone", "with-socket"])
async def test_a_killed_room_process_is_replaced_within_seconds_and_recording_goes_on(
    postgres: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
    owner_holds_patient: bool,
) -> None:
    async with node_group(postgres, redis_server, tmp_path, 3) as group:
        members = Members(group)
        try:
            [booked] = await book(group, 1)
            cid = booked.consultation_id
            patient, doctor, owner = await _placed_apart(
                group, members, booked, owner_holds_patient=owner_holds_patient
            )
            await _recording(patient, doctor)
            await _decoding([patient, doctor], more_than=30)

            killed_at = time.monotonic()
            group.processes[owner].kill()
            group.processes[owner].wait()
            if owner_holds_patient:
                # Its socket died with the process: it connects to another and joins.
                survivor = next(n for n in group.alive())
                await patient.peer.wait_for(lambda: not patient.peer.sio.connected)
                patient.attach(await members.socket(survivor, booked.patient_token))
                await patient.rejoin()
            else:
                await patient.peer.wait_for(lambda: patient.moves == ["node_lost"], seconds=15)
                await patient.moved()
            await doctor.peer.wait_for(lambda: doctor.moves == ["node_lost"], seconds=15)
            await doctor.moved()
            await _decoding([patient, doctor], seconds=15 - (time.monotonic() - killed_at))
            assert time.monotonic() - killed_at < 15
            moved_to = await group.owner(cid)
            assert moved_to in group.alive()

            ended = await doctor.peer.call("consultation:end", {"consultation_id": cid})
            assert ended["ok"], ended
            rows = await _recordings(group, cid)
            # Each side: the segment the killed process was writing, closed as
            # interrupted by the room's new process, and the one written there.
            assert [(row["segment"], row["state"]) for row in rows] == [
                (1, "interrupted"),
                (2, "complete"),
            ] * 2
            assert all(row["size"] > 0 for row in rows)
        finally:
            await members.close()


async def test_a_stopping_room_process_hands_its_room_over_before_it_exits(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with node_group(postgres, redis_server, tmp_path, 2) as group:
        members = Members(group)
        try:
            [booked] = await book(group, 1)
            cid = booked.consultation_id
            patient, doctor, owner = await _placed_apart(
                group, members, booked, owner_holds_patient=True
            )
            other = 1 - owner
            await _recording(patient, doctor)
            await _decoding([patient, doctor], more_than=30)

            stopping = group.processes[owner]
            stopping.send_signal(signal.SIGTERM)
            # The doctor's socket is on the other process: told to join again. The
            # patient's is on the stopping one, which closes it: the patient connects to
            # the other process and joins from there, as a browser does.
            await patient.peer.wait_for(lambda: not patient.peer.sio.connected)
            patient.attach(await members.socket(other, booked.patient_token))
            await patient.rejoin()
            await doctor.peer.wait_for(lambda: doctor.moves == ["node_stopping"])
            await doctor.moved()
            assert patient.moves == []
            assert await group.owner(cid) == other
            await _decoding([patient, doctor])
            # It waited for both to be in the room's new place, then exited.
            assert stopping.wait(timeout=30) == 0
            assert "did not move" not in (group.log(owner))

            rows = await _recordings(group, cid)
            # The stopped process closed what it wrote; the other goes on writing.
            first = [(row["segment"], row["state"]) for row in rows if row["segment"] == 1]
            assert first == [(1, "complete")] * 2
            assert all(row["size"] > 0 for row in rows if row["segment"] == 1)
            assert {row["state"] for row in rows if row["segment"] > 1} == {"recording"}
        finally:
            await members.close()
