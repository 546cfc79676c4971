"""No client can hold up other users' writes: a real server process (SQLite and
PostgreSQL), requests whose bodies trickle in over ten seconds, a large referral import
and a burst of registrations, and another user writing all the while.

The checks are about order, not time: the other user's writes must all be answered
while the slow requests are still being sent (the test sends their last byte only after
that), and while the import is still running. Had a transaction begun before a body
arrived, or the import held the write lock throughout, those writes would wait for them
and the order would be reversed. How long the writes take is printed, and measured by
``bench/writes.py``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from telemed.accounts import consent
from tests import samples
from tests.nodes import fresh_database, start_node, stop_node, wait_until_ready
from tests.servers import PostgresServer, free_port

PATIENT = ("+79000000001", "Patient-2026")
MANAGER = ("+79000000002", "Manager-2026")
TRICKLE_SECONDS = 10


class Node:
    """``telemed serve --demo`` on a port of its own, with the settings of a test."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    async with AsyncExitStack() as stack:
        env = {
            "TELEMED_WORKER_INTERVAL_SECONDS": "0",
            # The tests measure who is held up, not the limits: a burst of registrations
            # from one address, and one writer every 0.2 s for as long as an import takes
            # on a loaded machine (past the 120 writes a minute of write.user).
            "TELEMED_RATE_LIMITS": json.dumps(
                {"register.address": "1000/60", "write.user": "10000/60"}
            ),
        }
        if request.param == "postgresql":
            server: PostgresServer = request.getfixturevalue("postgres")
            env["TELEMED_DATABASE_URL"] = await stack.enter_async_context(fresh_database(server))
        port = free_port()
        log = (tmp_path / "server.log").open("wb")
        stack.callback(log.close)
        process = start_node(port, env=env, data_dir=tmp_path / "data", log=log, demo=True)
        stack.callback(stop_node, process)
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, port, process)
        yield Node(port, process)
    assert "Traceback" not in (tmp_path / "server.log").read_text()


async def sign_in(http: aiohttp.ClientSession, node: Node, login: tuple[str, str]) -> str:
    async with http.post(
        f"{node.base}/api/v1/auth/login", json={"login": login[0], "password": login[1]}
    ) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["token"])


async def slow_request(
    node: Node, path: str, headers: dict[str, str], body: bytes, last_byte: asyncio.Event
) -> int:
    """Send a request whose body trickles in over ``TRICKLE_SECONDS``, its last byte only
    once ``last_byte`` is set; answers the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(head.encode())
    pieces = 10
    step = max(1, (len(body) - 1) // pieces)
    for start in range(0, len(body) - 1, step):
        writer.write(body[start : min(start + step, len(body) - 1)])
        await writer.drain()
        await asyncio.sleep(TRICKLE_SECONDS / pieces)
    await last_byte.wait()
    writer.write(body[-1:])
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


async def write_repeatedly(
    http: aiohttp.ClientSession, node: Node, token: str, until: asyncio.Event
) -> list[tuple[float, float]]:
    """The demo patient changes the interface language back and forth until ``until``;
    answers when each write was answered (``time.monotonic``) and how long it took. Each
    must succeed."""
    durations = []
    n = 0
    while not until.is_set():
        started = time.perf_counter()
        async with http.patch(
            f"{node.base}/api/v1/me",
            json={"locale": "en" if n % 2 else "ru"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200, await response.text()
        durations.append((time.monotonic(), time.perf_counter() - started))
        n += 1
        await asyncio.sleep(0.2)
    return durations


async def test_bodies_that_trickle_in_hold_up_nobody(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        patient = await sign_in(http, node, PATIENT)
        manager = await sign_in(http, node, MANAGER)
        boundary = "slow-upload-boundary"
        upload_body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="kind"\r\n\r\ndischarge_summary\r\n'
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="title"\r\n\r\nВыписка\r\n'
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="file"; filename="scan.pdf"\r\n\r\n'
            ).encode()
            + samples.pdf()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        slow = {
            "anonymous sign-in (JSON)": (
                "/api/v1/auth/login",
                {"Content-Type": "application/json"},
                json.dumps({"login": PATIENT[0], "password": PATIENT[1]}).encode(),
                200,
            ),
            "a manager's change (JSON)": (
                "/api/v1/centres",
                {"Content-Type": "application/json", "Authorization": f"Bearer {manager}"},
                json.dumps(
                    {"name": "Медленный центр", "region": "Область", "profiles": ["терапия"]}
                ).encode(),
                201,
            ),
            "a patient's upload (multipart)": (
                "/api/v1/documents",
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Authorization": f"Bearer {patient}",
                },
                upload_body,
                201,
            ),
        }
        last_byte = asyncio.Event()
        senders = {
            name: asyncio.create_task(slow_request(node, path, headers, body, last_byte))
            for name, (path, headers, body, _) in slow.items()
        }
        writer_token = await sign_in(http, node, PATIENT)
        done = asyncio.Event()
        writes = asyncio.create_task(write_repeatedly(http, node, writer_token, done))
        await asyncio.sleep(TRICKLE_SECONDS + 1)
        # The slow requests are still waiting for their last byte: every write so far was
        # answered meanwhile.
        assert not any(sender.done() for sender in senders.values())
        done.set()
        durations = [took for _, took in await asyncio.wait_for(writes, 30)]
        assert len(durations) >= TRICKLE_SECONDS  # about five a second, none held up
        last_byte.set()
        for name, sender in senders.items():
            assert await asyncio.wait_for(sender, 30) == slow[name][3], name
    print(
        f"\n{len(durations)} writes during {TRICKLE_SECONDS} s of slow bodies: median "
        f"{statistics.median(durations) * 1000:.1f} ms, slowest {max(durations) * 1000:.1f} ms"
    )


async def test_an_import_and_a_burst_of_registrations_hold_up_nobody(node: Node) -> None:
    rows, registrations = 1000, 40
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        manager = await sign_in(http, node, MANAGER)
        writer_token = await sign_in(http, node, PATIENT)
        import_ran: list[float] = []

        async def import_table() -> dict[str, Any]:
            form = aiohttp.FormData()
            form.add_field("file", samples.referral_table(rows), filename="referrals.csv")
            import_ran.append(time.monotonic())
            async with http.post(
                f"{node.base}/api/v1/referral-imports",
                data=form,
                headers={"Authorization": f"Bearer {manager}"},
            ) as response:
                assert response.status == 201, await response.text()
                report: dict[str, Any] = await response.json()
            import_ran.append(time.monotonic())
            return report

        async def register(n: int) -> None:
            body = {
                "full_name": f"Очередь Регистраций {n}",
                "birth_date": "1985-05-05",
                "phone": f"+7917{n:07d}",
                "password": f"Burst-Pass-{n:04d}q",
                "consent_version": consent.CURRENT.version,
            }
            async with http.post(f"{node.base}/api/v1/auth/register", json=body) as response:
                assert response.status == 201, await response.text()

        done = asyncio.Event()
        writes = asyncio.create_task(write_repeatedly(http, node, writer_token, done))
        report, _ = await asyncio.gather(
            import_table(), asyncio.gather(*(register(n) for n in range(registrations)))
        )
        done.set()
        answered = await asyncio.wait_for(writes, 30)
    assert report["created"] == rows
    started, finished = import_ran
    # Writes were answered while the import ran, not only once it was over.
    during = [took for at, took in answered if started < at < finished - 0.5]
    assert len(during) >= 3, (len(answered), finished - started)
    print(
        f"\n{len(during)} writes answered during the import of {rows} rows and "
        f"{registrations} registrations ({finished - started:.1f} s): median "
        f"{statistics.median(during) * 1000:.1f} ms, slowest {max(during) * 1000:.1f} ms"
    )
