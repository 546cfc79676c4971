"""Two real server processes share one PostgreSQL database and deliver one outbox: every
message goes out exactly once, and both nodes take part."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from pathlib import Path

import aiohttp
from argon2 import PasswordHasher
from sqlmodel import col, select

from telemed import db
from telemed.accounts.models import Locale, Role
from telemed.accounts.service import check_new_account, do_create_user
from telemed.clock import SystemClock
from telemed.notify.models import OutboxMessage, OutboxStatus
from telemed.notify.service import do_notify
from telemed.notify.texts import NotificationKind
from tests.factories import PASSWORD, next_phone
from tests.nodes import fresh_database, start_node, stop_node, wait_until_ready
from tests.notify_gateways import SmsGateway, running_gateway
from tests.servers import PostgresServer, free_port

MESSAGES = 200
PATIENTS = 4
DEADLINE_SECONDS = 60


def _logs(tmp_path: Path) -> str:
    return "\n".join(path.read_text(errors="replace")[-3000:] for path in tmp_path.glob("*.log"))


async def test_two_nodes_deliver_every_message_exactly_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    async with fresh_database(postgres) as database_url:
        engine = db.create_engine(database_url)
        gateway = SmsGateway(delay=0.02)  # a bit slow, so that the nodes overlap
        nodes: list[subprocess.Popen[bytes]] = []
        logs = [(tmp_path / f"node{index}.log").open("wb") for index in range(2)]
        try:
            async with running_gateway(gateway) as gateway_url, aiohttp.ClientSession() as http:
                ports = [free_port(), free_port()]
                for index, port in enumerate(ports):
                    data_dir = tmp_path / f"node{index}"
                    env = {
                        "TELEMED_DATABASE_URL": database_url,
                        "TELEMED_SMS_BACKEND": "http",
                        "TELEMED_SMS_HTTP_URL": gateway_url,
                        "TELEMED_WORKER_INTERVAL_SECONDS": "0.2",
                    }
                    nodes.append(start_node(port, env=env, data_dir=data_dir, log=logs[index]))
                for port, node in zip(ports, nodes, strict=True):
                    await wait_until_ready(http, port, node)

                # Both nodes are polling; queue everything in one transaction.
                factory = db.create_session_factory(engine)
                now = SystemClock().now()
                password_hash = PasswordHasher(time_cost=1, memory_cost=1024).hash(PASSWORD)
                async with db.transaction(factory) as session:
                    users = [
                        await do_create_user(
                            session,
                            account=check_new_account(
                                full_name="Пациентка Очереди", phone=next_phone(), password=PASSWORD
                            ),
                            password_hash=password_hash,
                            role=Role.PATIENT,
                            now=now,
                            locale=Locale.RU,
                            time_zone="Europe/Moscow",
                        )
                        for _ in range(PATIENTS)
                    ]
                    for index in range(MESSAGES):
                        await do_notify(
                            session,
                            brand="Телемед",
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
                stop_node(node)
            for log in logs:
                log.close()
            await engine.dispose()

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
