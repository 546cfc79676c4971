"""Fixture chain: database server → settings(tmp_path) → create_app → aiohttp_client.

Every test that takes ``settings`` runs twice: on SQLite and on a real PostgreSQL
server. Each PostgreSQL test gets a fresh database cloned from a migrated template.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from telemed import db
from telemed.app import create_app
from telemed.clock import FakeClock
from telemed.http import AccessLogger
from telemed.settings import Settings
from tests.servers import PostgresServer, RedisServer

TEMPLATE_DB = "telemed_template"

AppClient = TestClient[web.Request, web.Application]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        # Requested from inside a running event loop: migrate on a loop of its own.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _make_template(server)).result()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real Redis of the test's own (a test may stop it and start it again)."""
    server = RedisServer.start_new()
    yield server
    server.close()


async def _admin(server: PostgresServer) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=server.port, user="postgres", database="postgres"
    )


async def _make_template(server: PostgresServer) -> None:
    connection = await _admin(server)
    try:
        await connection.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await connection.close()
    engine = db.create_engine(f"{server.url}/{TEMPLATE_DB}")
    try:
        await db.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    db_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    if db_backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'telemed.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = "t_" + uuid.uuid4().hex[:16]
    connection = await _admin(server)
    try:
        await connection.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await connection.close()
    yield f"{server.url}/{name}"
    connection = await _admin(server)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for its tests."""
    return {}


TEST_SETTINGS: dict[str, Any] = {
    "worker_interval_seconds": 0,
    # A cheap password hash: tests sign in hundreds of times (``test_accounts`` checks
    # the production parameters).
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 1024,
    "password_hash_parallelism": 1,
    # Tests register many patients from one address; the limit has tests of its own.
    "rate_limits": {"register.address": "1000/60"},
}
"""What every test's settings have, unless its module overrides them."""


@pytest.fixture
def settings(tmp_path: Path, database_url: str, settings_overrides: dict[str, Any]) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-" + "x" * 32,
        **{**TEST_SETTINGS, **settings_overrides},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> web.Application:
    return create_app(settings, clock=clock)


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[AppClient]], app: web.Application
) -> AppClient:
    # The production access logger, so that tests see what the server logs.
    server = TestServer(app)
    await server.start_server(access_log_class=AccessLogger)
    return await aiohttp_client(server)


# Fixtures shared by the real-time tests.
from tests.browser import browser, chromium, chromium_endpoint  # noqa: E402, F401
from tests.media_peers import media, room, room_doctor  # noqa: E402, F401
from tests.notify_gateways import gateway, smtp  # noqa: E402, F401
from tests.realtime import booked, peers  # noqa: E402, F401
from tests.world import world  # noqa: E402, F401
