"""Writes under load: how long one user's write takes while a referral table of 5,000 new
patients is imported and 40 patients register at once.

    .venv/bin/python bench/writes.py [--rows 5000] [--registrations 40] [--database-url URL]

The real server (``telemed serve --demo``, loopback, production password hashing) on
SQLite by default (``--database-url postgresql+asyncpg://…`` for PostgreSQL). The
probe is the demo patient, who changes the interface language back and forth
(``PATCH /me``), one write after another.

Baseline, in the same run: the probe's writes with the server otherwise idle. Then the
load, from a process of its own (``--load``): the manager's import of ``--rows`` rows
and ``--registrations`` registrations at once, while the probe goes on writing. Prints
the probe's median, p99 and slowest write in both, their ratio, and how long the import
and the registrations took. Target: every probe write under load answers within 0.5 s.
The load generator's CPU time is printed beside the server's: if it were near its
wall time, the generator, not the server, would be the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from telemed.accounts import consent

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp

from bench.common import cpu_seconds, server_env
from bench.media import stop_process, wait_ready
from tests.samples import referral_table
from tests.servers import free_port

TARGET_SECONDS = 0.5
PATIENT = ("+79000000001", "Patient-2026")
MANAGER = ("+79000000002", "Manager-2026")


async def sign_in(http: aiohttp.ClientSession, base: str, login: tuple[str, str]) -> str:
    async with http.post(
        f"{base}/api/v1/auth/login", json={"login": login[0], "password": login[1]}
    ) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["token"])


async def probe(base: str, stop: asyncio.Event, pause: float = 0.02) -> list[float]:
    """The demo patient's writes, one after another, until ``stop``: their durations."""
    durations = []
    async with aiohttp.ClientSession() as http:
        token = await sign_in(http, base, PATIENT)
        headers = {"Authorization": f"Bearer {token}"}
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            body = {"locale": "en" if n % 2 else "ru"}
            async with http.patch(f"{base}/api/v1/me", json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
            durations.append(time.perf_counter() - started)
            n += 1
            await asyncio.sleep(pause)
    return durations


async def load(base: str, rows: int, registrations: int) -> dict[str, Any]:
    """The load generator (``--load``): the import and the registrations at once."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as http:
        manager = await sign_in(http, base, MANAGER)

        async def import_table() -> float:
            form = aiohttp.FormData()
            form.add_field("file", referral_table(rows), filename="referrals.csv")
            started = time.perf_counter()
            async with http.post(
                f"{base}/api/v1/referral-imports",
                data=form,
                headers={"Authorization": f"Bearer {manager}"},
            ) as response:
                assert response.status == 201, await response.text()
                report = await response.json()
                assert report["created"] == rows, report["summary"]
            return time.perf_counter() - started

        async def register(n: int) -> float:
            started = time.perf_counter()
            body = {
                "full_name": f"Нагрузка Регистрация {n}",
                "birth_date": "1980-01-01",
                "phone": f"+7916{n:07d}",
                "password": f"Load-Pass-{n:04d}x",
                "consent_version": consent.CURRENT.version,
            }
            async with http.post(f"{base}/api/v1/auth/register", json=body) as response:
                assert response.status == 201, await response.text()
            return time.perf_counter() - started

        async def registrations_after(delay: float) -> list[float]:
            await asyncio.sleep(delay)  # the import is under way by then
            return list(await asyncio.gather(*(register(n) for n in range(registrations))))

        started = time.process_time()
        imported, registered = await asyncio.gather(import_table(), registrations_after(1.0))
        return {
            "import_seconds": imported,
            "registration_seconds_max": max(registered, default=0.0),
            "generator_cpu_seconds": time.process_time() - started,
        }


def summary(durations: list[float]) -> str:
    ordered = sorted(durations)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ordered)} writes: median {statistics.median(ordered) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, slowest {ordered[-1] * 1000:.1f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="telemed-bench-writes-") as tmp:
        env = {**os.environ, **server_env(Path(tmp) / "data")}
        if args.database_url:
            env["TELEMED_DATABASE_URL"] = args.database_url
        server = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "telemed", "serve", "--demo", "--port", str(port)),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            await wait_ready(base, server)
            stop = asyncio.Event()
            idle = asyncio.create_task(probe(base, stop))
            await asyncio.sleep(args.baseline_seconds)
            stop.set()
            baseline = await idle

            stop = asyncio.Event()
            loaded = asyncio.create_task(probe(base, stop))
            server_cpu = cpu_seconds(server.pid)
            started = time.perf_counter()
            generator = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--load",
                base,
                "--rows",
                str(args.rows),
                "--registrations",
                str(args.registrations),
                stdout=subprocess.PIPE,
            )
            out, _ = await generator.communicate()
            wall = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid) - server_cpu
            stop.set()
            under_load = await loaded
            assert generator.returncode == 0, "the load generator failed"
            figures = json.loads(out)
        finally:
            await stop_process(server)

    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"Writes of one user, {backend}, production password hashing")
    print(f"  idle (baseline):  {summary(baseline)}")
    print(
        f"  under load:       {summary(under_load)}  "
        f"(import of {args.rows} rows + {args.registrations} registrations)"
    )
    slowest = max(under_load)
    print(
        f"  slowest write under load / median idle: "
        f"{slowest / statistics.median(baseline):.1f}x; "
        f"target slowest ≤ {TARGET_SECONDS} s: {'met' if slowest <= TARGET_SECONDS else 'MISSED'}"
    )
    print(
        f"  import {figures['import_seconds']:.1f} s; slowest registration "
        f"{figures['registration_seconds_max']:.2f} s; load wall {wall:.1f} s"
    )
    generator_cpu = figures["generator_cpu_seconds"]
    print(
        f"  CPU: server {server_cpu:.1f} s, load generator {generator_cpu:.1f} s "
        f"({'the generator was the limit' if generator_cpu > 0.8 * wall else 'the server was'})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--registrations", type=int, default=40)
    parser.add_argument("--baseline-seconds", type=float, default=5)
    parser.add_argument("--database-url")
    parser.add_argument("--load", metavar="BASE_URL", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.load:
        print(
            json.dumps(asyncio.run(load(arguments.load, arguments.rows, arguments.registrations)))
        )
    else:
        asyncio.run(main(arguments))
