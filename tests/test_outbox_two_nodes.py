"""Two real server processes share one PostgreSQL database and deliver one outbox: every
message goes out exactly once, and both nodes take part."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO

import aiohttp
import asyncpg
from argon2 import PasswordHasher
from sqlmodel import col, select

from telemed import db
from telemed.accounts.models import Role
from telemed.accounts.service import do_create_user
from telemed.clock import SystemClock
from telemed.notify.models import OutboxMessage, OutboxStatus
from telemed.notify.service import do_notify
from telemed.notify.texts import NotificationKind
from tests.factories import PASSWORD, next_phone
from tests.notify_gateways import SmsGateway, running_gateway
from tests.servers import PostgresServer, free_port

MESSAGES = 200
PATIENTS = 4
DEADLINE_SECONDS = 60
ROOT = Path(__file__).resolve().parent.parent


async def _admin_execute(server: PostgresServer, statement: str) -> None:
    connection = await asyncpg.connect(
        host="127.0.0.1", port=server.port, user="postgres", database="postgres"
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _start_node(
    port: int, database_url: str, gateway_url: str, data_dir: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TELEMED_DATABASE_URL": database_url,
        "TELEMED_SMS_BACKEND": "http",
        "TELEMED_SMS_HTTP_URL": gateway_url,
        "TELEMED_WORKER_INTERVAL_SECONDS": "0.2",
        "TELEMED_DATA_DIR": str(data_dir),
        "TELEMED_SECRET_KEY": "two-nodes-secret-" + "x" * 32,
        "TELEMED_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "telemed", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


async def _wait_until_up(
    http: aiohttp.ClientSession, port: int, node: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert node.poll() is None, "the server process exited early"
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)  # polling a starting process, not waiting for time to pass
    raise TimeoutError(f"the node on port {port} did not start")


def _stop(node: subprocess.Popen[bytes]) -> None:
    if node.poll() is None:
        node.terminate()
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def _logs(tmp_path: Path) -> str:
    return "\n".join(path.read_text(errors="replace")[-3000:] for path in tmp_path.glob("*.log"))


async def test_two_nodes_deliver_every_message_exactly_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    name = "t_" + uuid.uuid4().hex[:16]
    await _admin_execute(postgres, f"CREATE DATABASE {name} TEMPLATE telemed_template")
    database_url = f"{postgres.url}/{name}"
    engine = db.create_engine(database_url)
    gateway = SmsGateway(delay=0.02)  # a bit slow, so that the nodes overlap
    nodes: list[subprocess.Popen[bytes]] = []
    logs = [(tmp_path / f"node{index}.log").open("wb") for index in range(2)]
    try:
        async with running_gateway(gateway) as gateway_url, aiohttp.ClientSession() as http:
            ports = [free_port(), free_port()]
            for index, port in enumerate(ports):
                data_dir = tmp_path / f"node{index}"
                nodes.append(_start_node(port, database_url, gateway_url, data_dir, logs[index]))
            for port, node in zip(ports, nodes, strict=True):
                await _wait_until_up(http, port, node)

            # Both nodes are polling; queue everything in one transaction.
            factory = db.create_session_factory(engine)
            now = SystemClock().now()
            async with db.transaction(factory) as session:
                users = [
                    await do_create_user(
                        session,
                        hasher=PasswordHasher(),
                        now=now,
                        full_name="Пациентка Очереди",
                        phone=next_phone(),
                        password=PASSWORD,
                        role=Role.PATIENT,
                    )
                    for _ in range(PATIENTS)
                ]
                for index in range(MESSAGES):
                    await do_notify(
                        session,
                        now=now,
                        user=users[index % PATIENTS],
                        kind=NotificationKind.SCHEDULED,
                        params={"when": now},
                        sms=True,
                    )

            deadline = time.monotonic() + DEADLINE_SECONDS
            while True:
                async with db.transaction(factory) as session:
                    rows = list((await session.exec(select(OutboxMessage))).all())
                if all(row.status is OutboxStatus.SENT for row in rows):
                    break
                assert all(node.poll() is None for node in nodes), _logs(tmp_path)
                assert time.monotonic() < deadline, (
                    Counter(r.status for r in rows),
                    _logs(tmp_path),
                )
                await asyncio.sleep(0.2)  # polling the shared database, bounded above

            async with db.transaction(factory) as session:
                claimants = (
                    await session.exec(select(OutboxMessage.claimed_by, OutboxMessage.attempts))
                ).all()
                sent_ids = (
                    await session.exec(
                        select(OutboxMessage.id).where(col(OutboxMessage.sent_at).is_not(None))
                    )
                ).all()
    finally:
        for node in nodes:
            _stop(node)
        for log in logs:
            log.close()
        await engine.dispose()
        await _admin_execute(postgres, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    assert len(rows) == MESSAGES
    delivered = Counter(payload["id"] for payload in gateway.delivered)
    assert set(delivered) == {str(row.id) for row in rows}
    assert set(delivered.values()) == {1}, "a message was delivered twice"
    assert len(gateway.delivered) == MESSAGES
    assert len(sent_ids) == MESSAGES
    assert {attempts for _, attempts in claimants} == {1}
    by_node = Counter(claimed_by for claimed_by, _ in claimants)
    assert None not in by_node
    assert len(by_node) == 2, by_node  # both nodes did part of the work
    assert sum(by_node.values()) == MESSAGES
