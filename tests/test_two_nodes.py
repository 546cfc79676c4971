"""Two real server processes sharing PostgreSQL and a real Redis: chat crosses nodes,
survives Redis going away for 5 s (clients catch up from the database), and survives a
node being killed (its clients reconnect to the other node and catch up). Nothing acked
is lost or duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from telemed import keys
from telemed.app import create_app
from telemed.settings import Settings
from tests.conftest import AppClient
from tests.nodes import ROOT, fresh_database, start_node, stop_node, wait_until_ready
from tests.realtime import Peer, connect
from tests.servers import PostgresServer, RedisServer, free_port


class Replica:
    """What a chat client holds: messages by seq, filled live and by catching up."""

    def __init__(self, peer: Peer, consultation_id: str) -> None:
        self.peer = peer
        self.consultation_id = consultation_id
        self.messages: dict[int, dict[str, Any]] = {}
        self.duplicates = 0

    def take_live(self) -> None:
        for message in self.peer.events("chat:message_created"):
            self._add(message)
        self.peer.received.clear()

    def _add(self, message: dict[str, Any]) -> None:
        if message["seq"] in self.messages:
            assert self.messages[message["seq"]] == message
            return
        self.messages[message["seq"]] = message

    def contiguous(self) -> int:
        seq = 0
        while seq + 1 in self.messages:
            seq += 1
        return seq

    async def catch_up(self) -> None:
        """Subscribe again with the last seq held: the server sends what is missing."""
        self.take_live()
        ack = await self.peer.call(
            "consultation:subscribe",
            {"consultation_id": self.consultation_id, "after_seq": self.contiguous()},
        )
        assert ack["ok"] is True, ack
        for message in ack["data"]["messages"]:
            self._add(message)


async def _demo(database_url: str, data_dir: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemed",
        "demo",
        cwd=ROOT,
        env={**os.environ, "TELEMED_DATABASE_URL": database_url, "TELEMED_DATA_DIR": str(data_dir)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


async def _login(http: aiohttp.ClientSession, port: int, phone: str, password: str) -> str:
    async with http.post(
        f"http://127.0.0.1:{port}/api/v1/auth/login", json={"login": phone, "password": password}
    ) as response:
        assert response.status == 200
        return str((await response.json())["token"])


@dataclass
class Cluster:
    """Two ``telemed serve`` processes sharing a fresh database and Redis."""

    http: aiohttp.ClientSession
    ports: list[int]
    nodes: list[subprocess.Popen[bytes]]
    peers: list[Peer] = field(default_factory=list)
    """Clients to close at the end."""


@asynccontextmanager
async def two_nodes(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path, **settings: str
) -> AsyncIterator[Cluster]:
    """Two ready nodes on the demo data, with ``TELEMED_*`` ``settings``; stopped after."""
    ports = [free_port(), free_port()]
    nodes: list[subprocess.Popen[bytes]] = []
    logs = [(tmp_path / f"node{n}.log").open("wb") for n in range(2)]
    async with fresh_database(postgres) as database_url, aiohttp.ClientSession() as http:
        await _demo(database_url, tmp_path / "demo")
        env = {
            "TELEMED_DATABASE_URL": database_url,
            "TELEMED_REDIS_URL": redis_server.url,
            "TELEMED_WORKER_INTERVAL_SECONDS": "0",
            **settings,
        }
        cluster = Cluster(http, ports, nodes)
        try:
            for n, port in enumerate(ports):
                nodes.append(start_node(port, env=env, data_dir=tmp_path / f"n{n}", log=logs[n]))
            for port, node in zip(ports, nodes, strict=True):
                await wait_until_ready(http, port, node)
            yield cluster
        finally:
            for peer in cluster.peers:
                await peer.close()
            for node in nodes:
                stop_node(node)
            for log in logs:
                log.close()


async def _booked_duty(http: aiohttp.ClientSession, port: int) -> tuple[str, str, str]:
    """The demo patient books the demo duty doctor; their tokens and the consultation."""
    patient_token = await _login(http, port, "+79000000001", "Patient-2026")
    doctor_token = await _login(http, port, "+79000000011", "Doctor-2026")
    base = f"http://127.0.0.1:{port}/api/v1"
    async with http.get(f"{base}/doctors", params={"duty": "true"}) as response:
        doctors = (await response.json())["items"]
    duty = next(d for d in doctors if d["full_name"].startswith("Соколова"))
    async with http.get(f"{base}/doctors/{duty['id']}/slots") as response:
        slot = (await response.json())["items"][0]
    async with http.post(
        f"{base}/consultations",
        headers={"Authorization": f"Bearer {patient_token}"},
        json={"route": "duty", "slot_id": slot["id"], "topic": "cardiovascular"},
    ) as response:
        assert response.status == 201
        cid = str((await response.json())["id"])
    return patient_token, doctor_token, cid


async def test_chat_across_nodes_through_redis_outage_and_node_death(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_nodes(
        postgres, redis_server, tmp_path, TELEMED_CHAT_RATE_PER_MINUTE="1000"
    ) as cluster:
        http, ports, nodes, peers = cluster.http, cluster.ports, cluster.nodes, cluster.peers
        patient_token, doctor_token, cid = await _booked_duty(http, ports[0])

        patient = await connect(f"http://127.0.0.1:{ports[0]}", patient_token)
        doctor = await connect(f"http://127.0.0.1:{ports[1]}", doctor_token)
        peers += [patient, doctor]
        mine, theirs = Replica(patient, cid), Replica(doctor, cid)
        await mine.catch_up()
        await theirs.catch_up()

        acked: dict[int, str] = {}

        async def say(n: int) -> None:
            ack = await patient.call(
                "chat:send",
                {"consultation_id": cid, "client_id": f"m{n}", "body": f"Сообщение {n}"},
            )
            assert ack["ok"] is True, ack
            acked[ack["data"]["message"]["seq"]] = ack["data"]["message"]["id"]

        # Node 1 → Redis → node 2.
        await say(0)
        await doctor.wait_for(lambda: bool(doctor.events("chat:message_created")))

        # Redis goes away for 5 s in the middle of a stream of messages.
        outage_seen = False
        for n in range(1, 41):
            if n == 10:
                redis_server.stop()
                stopped = asyncio.get_running_loop().time()
            if n >= 10 and redis_server.process is None:
                if not outage_seen:
                    async with http.get(f"http://127.0.0.1:{ports[0]}/readyz") as response:
                        body = await response.json()
                        assert response.status == 503, body
                        assert body["error"]["details"]["checks"]["redis"] != "ok"
                        outage_seen = True
                if asyncio.get_running_loop().time() - stopped >= 5:
                    redis_server.start()
            await say(n)
            await asyncio.sleep(0.15)  # the pace of a conversation
        assert outage_seen
        if redis_server.process is None:
            redis_server.start()
        for port, node in zip(ports, nodes, strict=True):
            await wait_until_ready(http, port, node, seconds=90)
        for replica in (mine, theirs):
            await replica.catch_up()
            assert sorted(replica.messages) == sorted(acked) == list(range(1, 42))
            assert {m["id"] for m in replica.messages.values()} == set(acked.values())

        # Node 2 dies; its client reconnects to node 1 and catches up.
        nodes[1].kill()
        nodes[1].wait()
        await doctor.wait_for(lambda: not doctor.sio.connected, seconds=30)
        for n in range(41, 46):
            await say(n)
        back = await connect(f"http://127.0.0.1:{ports[0]}", doctor_token)
        peers.append(back)
        theirs.peer = back
        await theirs.catch_up()
        assert sorted(theirs.messages) == sorted(acked) == list(range(1, 47))


async def test_readiness_reports_a_dead_redis_listener(
    aiohttp_client: Callable[[web.Application], Awaitable[AppClient]],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url)
    app = create_app(settings)
    client = await aiohttp_client(app)
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {
        "database": "ok",
        "storage": "ok",
        "redis": "ok",
        "realtime": "ok",
        "nodes": "ok",
    }
    # python-socketio's known failure: the listener task ends and nothing says so.
    listener = app[keys.SIO].manager.thread
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    broken = await client.get("/readyz")
    body = await broken.json()
    assert broken.status == 503
    assert body["error"]["details"]["checks"]["realtime"] == "the redis listener has stopped"


async def test_presence_is_the_same_on_both_nodes(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Each side sees the other present whichever node it is on; a leave, a return and
    the death of a node reach the other node's clients."""
    async with two_nodes(postgres, redis_server, tmp_path, TELEMED_PRESENCE_SECONDS="3") as cluster:
        http, ports, nodes, peers = cluster.http, cluster.ports, cluster.nodes, cluster.peers
        patient_token, doctor_token, cid = await _booked_duty(http, ports[0])
        me = {"consultation_id": cid}

        patient = await connect(f"http://127.0.0.1:{ports[0]}", patient_token)
        peers.append(patient)
        alone = await patient.call("consultation:subscribe", me)
        assert len(alone["data"]["online"]) == 1
        patient_id = alone["data"]["online"][0]

        def last_online() -> list[str] | None:
            changes = patient.events("presence:changed")
            return sorted(changes[-1]["online"]) if changes else None

        doctor = await connect(f"http://127.0.0.1:{ports[1]}", doctor_token)
        peers.append(doctor)
        joined = await doctor.call("consultation:subscribe", me)
        doctor_id = next(u for u in joined["data"]["online"] if u != patient_id)
        both = sorted([patient_id, doctor_id])
        assert sorted(joined["data"]["online"]) == both
        await patient.wait_for(lambda: last_online() == both)

        # The doctor leaves; node 1's patient learns it.
        await doctor.close()
        await patient.wait_for(lambda: last_online() == [patient_id])

        # The doctor comes back on node 2, then node 2 dies without a word: its entry
        # expires and node 1 says so at its next heartbeat.
        doctor = await connect(f"http://127.0.0.1:{ports[1]}", doctor_token)
        peers.append(doctor)
        assert sorted((await doctor.call("consultation:subscribe", me))["data"]["online"]) == (both)
        await patient.wait_for(lambda: last_online() == both)
        nodes[1].kill()
        nodes[1].wait()
        await patient.wait_for(lambda: last_online() == [patient_id], seconds=15)
        again = await patient.call("consultation:subscribe", me)
        assert again["data"]["online"] == [patient_id]
