"""``telemed serve --workers N``: N real processes sharing one port, each a node; a worker
that dies is started again; SIGTERM stops them all; several workers without Redis (or
on SQLite) is a clear refusal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO

import aiohttp
import redis.asyncio

from bench.common import book_consultations
from telemed.settings import Settings
from tests.nodes import ROOT, fresh_database, wait_until_ready
from tests.realtime import Peer, connect
from tests.servers import PostgresServer, RedisServer, free_port


def _command(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "telemed", "serve", "--port", str(port), *extra]


def _env(**settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "TELEMED_SECRET_KEY": "workers-secret-" + "x" * 32,
        "TELEMED_LOG_LEVEL": "WARNING",
        "TELEMED_WORKER_INTERVAL_SECONDS": "0",
        **settings,
    }


def test_several_workers_need_redis_and_postgresql(tmp_path: Path) -> None:
    port = str(free_port())
    alone = subprocess.run(
        _command(int(port), "--workers", "2"),
        env=_env(TELEMED_DATA_DIR=str(tmp_path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert alone.returncode != 0
    assert "2 workers need Redis: set TELEMED_REDIS_URL" in alone.stderr
    sqlite = subprocess.run(
        _command(int(port)),
        env=_env(
            TELEMED_DATA_DIR=str(tmp_path),
            TELEMED_WORKERS="2",
            TELEMED_REDIS_URL="redis://127.0.0.1:1/0",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sqlite.returncode != 0
    assert "2 workers need PostgreSQL" in sqlite.stderr
    wrong = subprocess.run(
        _command(int(port), "--workers", "none"), cwd=ROOT, capture_output=True, text=True
    )
    assert wrong.returncode == 2
    assert 'a number of processes (1 or more), or "auto"' in wrong.stderr


async def _node_pids(client: redis.asyncio.Redis) -> set[int]:
    """The pids of the live nodes (node ids are ``host:pid:…``)."""
    pids = set()
    async for key in client.scan_iter("telemed:node:*"):
        pids.add(int(key.decode().split(":")[3]))
    return pids


def _children(pid: int) -> set[int]:
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(line) for line in found.stdout.split()}


def _start(
    port: int, database_url: str, redis_url: str, data_dir: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _command(port, "--workers", "2"),
        env=_env(
            TELEMED_DATA_DIR=str(data_dir),
            TELEMED_DATABASE_URL=database_url,
            TELEMED_REDIS_URL=redis_url,
            TELEMED_NODE_HEARTBEAT_SECONDS="0.5",
            TELEMED_NODE_LOST_SECONDS="2",
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Until ``condition`` holds: what it looks at (Redis, the process table) says nothing
    when it changes."""
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def _sockets(client: redis.asyncio.Redis) -> list[int]:
    """The sockets each live node holds, by its record."""
    records = [await client.get(key) async for key in client.scan_iter("telemed:node:*")]
    return sorted(json.loads(record)["sockets"] for record in records if record)


def _gone(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


@asynccontextmanager
async def _supervisor(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int, str]]:
    """``serve --workers 2`` on a fresh database; yields it, its port and the URL of
    its database."""
    port = free_port()
    async with fresh_database(postgres) as database_url:
        log = (tmp_path / "supervisor.log").open("wb")
        supervisor = _start(port, database_url, redis_server.url, tmp_path / "data", log)
        try:
            yield supervisor, port, database_url
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait()
            for child in _children(supervisor.pid):
                os.kill(child, signal.SIGKILL)
            log.close()


async def test_two_workers_share_the_port_come_back_when_killed_and_stop_together(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis.asyncio.from_url(redis_server.url)
    peers: list[Peer] = []
    async with _supervisor(postgres, redis_server, tmp_path) as (supervisor, port, database_url):
        try:
            async with aiohttp.ClientSession() as http:
                await wait_until_ready(http, port, supervisor, seconds=60)

            async def two_nodes() -> bool:
                return len(await _node_pids(client)) == 2

            await _until(two_nodes)
            workers = _children(supervisor.pid)
            assert await _node_pids(client) == workers
            assert len(workers) == 2

            # Connections spread over both: each worker holds some of the sockets.
            [booked] = await book_consultations(
                Settings(database_url=database_url, data_dir=tmp_path / "book"),
                1,
                starts_in=timedelta(hours=1),
                minutes=30,
                doctor_each=True,
            )
            for _ in range(16):
                peers.append(await connect(f"http://127.0.0.1:{port}", booked.patient_token))
            async with asyncio.timeout(10):
                while True:
                    loads = [
                        await client.get(key) async for key in client.scan_iter("telemed:node:*")
                    ]
                    sockets = sorted(json.loads(load)["sockets"] for load in loads if load)
                    if sum(sockets) == 16:
                        break
                    await asyncio.sleep(0.2)
            assert all(count > 0 for count in sockets), sockets

            # A worker killed: the supervisor starts another; its sockets connect again.
            killed = sorted(workers)[0]
            os.kill(killed, signal.SIGKILL)

            async def replaced() -> bool:
                pids = await _node_pids(client)
                return killed not in pids and len(pids) == 2

            await _until(replaced)
            assert killed not in _children(supervisor.pid)
            assert len(_children(supervisor.pid)) == 2

            # SIGTERM: every worker stops, then the supervisor, cleanly.
            survivors = _children(supervisor.pid)
            supervisor.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(supervisor.wait, 60) == 0
            assert _gone(survivors)
            assert await _node_pids(client) == set()
        finally:
            for peer in peers:
                await peer.close()
            await client.aclose()
