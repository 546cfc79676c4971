"""Several real server processes sharing one PostgreSQL database (and Redis)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
import redis.asyncio

from bench.common import Booked, book_consultations
from telemed.settings import Settings
from tests.servers import PostgresServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def fresh_database(server: PostgresServer) -> AsyncIterator[str]:
    """A new database cloned from the migrated template; yields its URL."""
    name = "nodes_" + uuid.uuid4().hex[:12]

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(
            host="127.0.0.1", port=server.port, user="postgres", database="postgres"
        )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    await admin(f"CREATE DATABASE {name} TEMPLATE telemed_template")
    try:
        yield f"{server.url}/{name}"
    finally:
        await admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_node(
    port: int, *, env: dict[str, str], data_dir: Path, log: IO[bytes], demo: bool = False
) -> subprocess.Popen[bytes]:
    """``python -m telemed serve`` on ``port`` with the given ``TELEMED_*`` settings (and
    the demo data)."""
    return subprocess.Popen(
        [sys.executable, "-m", "telemed", "serve", "--port", str(port), *(["--demo"] * demo)],
        env={
            **os.environ,
            "TELEMED_DATA_DIR": str(data_dir),
            "TELEMED_SECRET_KEY": "nodes-secret-" + "x" * 32,
            "TELEMED_LOG_LEVEL": "WARNING",
            **env,
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


async def wait_until_ready(
    http: aiohttp.ClientSession, port: int, node: subprocess.Popen[bytes], seconds: float = 30
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert node.poll() is None, "the server process exited early"
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"node on port {port} did not become ready")


def stop_node(node: subprocess.Popen[bytes]) -> None:
    if node.poll() is None:
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


@dataclass
class NodeGroup:
    """``telemed serve`` processes sharing a fresh PostgreSQL database, one Redis and
    one data directory (the processes of one machine, or machines with shared
    storage), each on its own port."""

    http: aiohttp.ClientSession
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    redis: redis.asyncio.Redis
    database_url: str
    data_dir: Path
    logs: Path

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.ports[n]}"

    def index_of(self, node_id: str) -> int:
        """Which process a node id (``host:pid:…``) names."""
        pid = int(node_id.split(":")[1])
        return next(n for n, process in enumerate(self.processes) if process.pid == pid)

    async def owner(self, consultation_id: str) -> int | None:
        """The process a room is pinned to."""
        pinned = await self.redis.get(f"telemed:room:{consultation_id}")
        if pinned is None:
            return None
        return self.index_of(pinned.decode() if isinstance(pinned, bytes) else pinned)

    async def loads(self) -> dict[int, dict[str, Any]]:
        """The live processes' records (rooms, streams, sockets, …), by index."""
        records = {}
        async for key in self.redis.scan_iter("telemed:node:*"):
            record = await self.redis.get(key)
            if record is not None:
                node_id = key.decode().removeprefix("telemed:node:")
                records[self.index_of(node_id)] = json.loads(record)
        return records

    async def rooms(self, expected_total: int) -> dict[int, int]:
        """The rooms each live process holds, once their records add up to
        ``expected_total`` (a record is a heartbeat old)."""
        async with asyncio.timeout(10):
            while True:
                loads = await self.loads()
                rooms = {n: load["rooms"] for n, load in loads.items()}
                if sum(rooms.values()) == expected_total:
                    return rooms
                await asyncio.sleep(0.2)

    def log(self, n: int) -> str:
        """What process ``n`` logged (warnings and errors)."""
        return (self.logs / f"node{n}.log").read_text(errors="replace")

    def alive(self) -> list[int]:
        return [n for n, process in enumerate(self.processes) if process.poll() is None]


async def book(group: NodeGroup, count: int) -> list[Booked]:
    """``count`` consultations starting in a minute (their rooms are open), each with
    its own doctor."""
    settings = Settings(database_url=group.database_url, data_dir=group.data_dir)
    return await book_consultations(
        settings, count, starts_in=timedelta(minutes=1), minutes=30, doctor_each=True
    )


@asynccontextmanager
async def node_group(
    postgres: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
    count: int,
    **settings: str,
) -> AsyncIterator[NodeGroup]:
    """``count`` ready processes with ``TELEMED_*`` ``settings``; stopped after (their
    logs are ``node<n>.log`` in ``tmp_path``)."""
    data_dir = tmp_path / "data"
    logs = [(tmp_path / f"node{n}.log").open("wb") for n in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    client = redis.asyncio.from_url(redis_server.url)
    async with fresh_database(postgres) as database_url, aiohttp.ClientSession() as http:
        env = {
            "TELEMED_DATABASE_URL": database_url,
            "TELEMED_REDIS_URL": redis_server.url,
            "TELEMED_WORKER_INTERVAL_SECONDS": "0",
            "TELEMED_MEDIA_ADDRESSES": "127.0.0.1",
            "TELEMED_NODE_HEARTBEAT_SECONDS": "0.5",
            "TELEMED_NODE_LOST_SECONDS": "3",
            **settings,
        }
        ports = [free_port() for _ in range(count)]
        group = NodeGroup(http, ports, processes, client, database_url, data_dir, tmp_path)
        try:
            for n, port in enumerate(group.ports):
                processes.append(start_node(port, env=env, data_dir=data_dir, log=logs[n]))
            for port, process in zip(group.ports, processes, strict=True):
                await wait_until_ready(http, port, process)
            yield group
        finally:
            for process in processes:
                stop_node(process)
            for log in logs:
                log.close()
            await client.aclose()
