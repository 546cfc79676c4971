"""Several real server processes sharing one PostgreSQL database (and Redis)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import aiohttp
import asyncpg

from tests.servers import PostgresServer

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
