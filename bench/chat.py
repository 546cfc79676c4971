"""Chat benchmark: Telemed against a bare python-socketio broadcast server, same run.

    .venv/bin/python bench/chat.py [--rooms 20] [--rate 500] [--seconds 10]
    .venv/bin/python bench/chat.py --nodes 2 [--rate 4000]   # across processes, Redis

Both servers run as separate processes on loopback; the clients (a sender and a
receiver per two-person room) run in this process. Two loads:
- fixed rate: ``--rate`` messages/s in total, spread over the rooms, for ``--seconds``;
- closed loop: each sender sends its next message as soon as the previous is acked.
It prints p50/p99 of ack latency (send → ack) and delivery latency (send → the other
participant receives it), messages/s, and Telemed's figures as a ratio of the bare
server's. Telemed runs with its embedded defaults (SQLite under a temporary data dir).

With ``--nodes N`` (N > 1) each server runs as N processes sharing a Redis started for
the run (Telemed also a PostgreSQL), the bare one with python-socketio's Redis manager;
each room's sender is on one process and its receiver on the next, so that every
message crosses processes. Messages/s per node is the total over N. The load generator
is this process: its CPU is printed, and a note says when it, not the servers, was the
limit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import socketio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import book_consultations, cpu_seconds, create_database, unlimited
from telemed.settings import Settings
from tests.servers import PostgresServer, RedisServer, free_port


@dataclass
class Room:
    consultation_id: str
    sender_token: str
    receiver_token: str


@dataclass
class Samples:
    ack: list[float] = field(default_factory=list)
    delivery: list[float] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    generator_cpu: float = 0.0
    nodes: int = 1

    def row(self) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float:
            if not values:
                return float("nan")
            return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000

        return {
            "ack_p50": pct(self.ack, 50),
            "ack_p99": pct(self.ack, 99),
            "delivery_p50": pct(self.delivery, 50),
            "delivery_p99": pct(self.delivery, 99),
            "msg_per_s": len(self.ack) / self.seconds if self.seconds else 0.0,
            "msg_per_s_per_node": len(self.ack) / self.seconds / self.nodes
            if self.seconds
            else 0.0,
            "delivered": len(self.delivery),
            "sent": self.sent,
            "server_cpu_ms_per_msg": self.server_cpu * 1000 / max(1, len(self.ack)),
            "generator_cpu_share": self.generator_cpu / self.seconds if self.seconds else 0.0,
        }


async def prepare_telemed(
    data_dir: Path, rooms: int, database_url: str | None = None
) -> list[Room]:
    """Consultations of one duty doctor, each with its own patient, made through the
    services."""
    booked = await book_consultations(
        Settings(data_dir=data_dir, database_url=database_url),
        rooms,
        starts_in=timedelta(hours=1),
        minutes=10,
        doctor_each=False,
    )
    return [Room(b.consultation_id, b.patient_token, b.doctor_token) for b in booked]


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def open_room(
    urls: tuple[str, str], room: Room
) -> tuple[socketio.AsyncClient, socketio.AsyncClient, dict[str, float], Samples]:
    """The room's sender on ``urls[0]``, its receiver on ``urls[1]``."""
    sent_at: dict[str, float] = {}
    samples = Samples()
    sender = socketio.AsyncClient(reconnection=False)
    receiver = socketio.AsyncClient(reconnection=False)

    async def received(data: dict[str, Any]) -> None:
        started = sent_at.get(data["client_id"])
        if started is not None:
            samples.delivery.append(time.perf_counter() - started)

    receiver.on("chat:message_created", received)
    pairs = ((sender, room.sender_token, urls[0]), (receiver, room.receiver_token, urls[1]))
    for client, token, url in pairs:
        await client.connect(url, auth={"token": token}, transports=["websocket"])
        ack = await client.call("consultation:subscribe", {"consultation_id": room.consultation_id})
        assert ack["ok"], ack
    return sender, receiver, sent_at, samples


async def run_load(
    urls: list[str], rooms: list[Room], *, rate: float | None, seconds: float, tag: str
) -> Samples:
    opened = [
        await open_room((urls[i % len(urls)], urls[(i + 1) % len(urls)]), room)
        for i, room in enumerate(rooms)
    ]
    total = Samples(nodes=len(urls))
    stop_at = time.perf_counter() + seconds

    async def one_room(index: int) -> None:
        sender, _, sent_at, samples = opened[index]
        room = rooms[index]
        n = 0
        interval = len(rooms) / rate if rate else 0.0
        next_at = time.perf_counter() + index * (interval / len(rooms) if rate else 0)
        pending: set[asyncio.Task[None]] = set()

        async def send_one(client_id: str) -> None:
            started = time.perf_counter()
            sent_at[client_id] = started
            ack = await sender.call(
                "chat:send",
                {
                    "consultation_id": room.consultation_id,
                    "client_id": client_id,
                    "body": "Benchmark message: как ваше самочувствие сегодня?",
                },
                timeout=30,
            )
            if ack.get("ok"):
                samples.ack.append(time.perf_counter() - started)

        while time.perf_counter() < stop_at:
            client_id = f"{tag}-{index}-{n}"
            n += 1
            samples.sent += 1
            if rate:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
                task = asyncio.create_task(send_one(client_id))
                pending.add(task)
                task.add_done_callback(pending.discard)
            else:
                await send_one(client_id)
        if pending:
            await asyncio.gather(*pending)

    began = time.perf_counter()
    cpu_began = time.process_time()
    await asyncio.gather(*(one_room(i) for i in range(len(rooms))))
    elapsed = time.perf_counter() - began
    total.generator_cpu = time.process_time() - cpu_began
    await asyncio.sleep(0.5)  # the last deliveries
    for sender, receiver, _, samples in opened:
        total.ack += samples.ack
        total.delivery += samples.delivery
        total.sent += samples.sent
        await sender.disconnect()
        await receiver.disconnect()
    total.seconds = elapsed
    return total


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="Telemed on a PostgreSQL server started for the run (else SQLite)",
    )
    parser.add_argument(
        "--nodes", type=int, default=1, help="processes per server, sharing Redis (and PostgreSQL)"
    )
    args = parser.parse_args()
    postgres = PostgresServer.start() if args.postgres or args.nodes > 1 else None
    redis_server = RedisServer.start_new() if args.nodes > 1 else None
    database_url = None
    if postgres is not None:
        await create_database(postgres, "bench")
        database_url = f"{postgres.url}/bench"
    try:
        await _bench(args, database_url, redis_server.url if redis_server else None)
    finally:
        if postgres is not None:
            postgres.stop()
        if redis_server is not None:
            redis_server.close()


async def _bench(args: argparse.Namespace, database_url: str | None, redis_url: str | None) -> None:
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        rooms = await prepare_telemed(data_dir, args.rooms, database_url)
        shared = {"TELEMED_REDIS_URL": redis_url} if redis_url else {}
        servers = {
            "bare": (
                [
                    sys.executable,
                    "bench/bare_server.py",
                    *(["--redis", redis_url] if redis_url else []),
                ],
                {},
            ),
            "telemed": (
                [sys.executable, "-m", "telemed", "serve"],
                {
                    "TELEMED_DATA_DIR": str(data_dir),
                    "TELEMED_LOG_LEVEL": "WARNING",
                    "TELEMED_WORKER_INTERVAL_SECONDS": "0",
                    "TELEMED_CHAT_RATE_PER_MINUTE": "1000000",
                    "TELEMED_RATE_LIMITS": unlimited(),
                    **({"TELEMED_DATABASE_URL": database_url} if database_url else {}),
                    **shared,
                },
            ),
        }
        for name, (cmd, env) in servers.items():
            ports = [free_port() for _ in range(args.nodes)]
            logs = [data_dir / f"{name}-{n}.log" for n in range(args.nodes)]
            processes = [
                start([*cmd, *([str(port)] if name == "bare" else ["--port", str(port)])], env, log)
                for port, log in zip(ports, logs, strict=True)
            ]
            try:
                urls = [f"http://127.0.0.1:{port}" for port in ports]
                probe = "/readyz" if name == "telemed" else "/socket.io/?EIO=4&transport=polling"
                for url in urls:
                    await wait_ready(url + probe)

                def server_cpu(processes: list[subprocess.Popen[bytes]] = processes) -> float:
                    return sum(cpu_seconds(process.pid) for process in processes)

                before = server_cpu()
                fixed = await run_load(
                    urls, rooms, rate=args.rate, seconds=args.seconds, tag=f"{name}-fixed"
                )
                middle = server_cpu()
                closed = await run_load(
                    urls, rooms, rate=None, seconds=args.seconds, tag=f"{name}-closed"
                )
                fixed.server_cpu = middle - before
                closed.server_cpu = server_cpu() - middle
                results[name] = {"fixed": fixed.row(), "closed": closed.row()}
            except Exception:
                for log in logs:
                    print(log.read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                for process in processes:
                    process.terminate()
                for process in processes:
                    process.wait(timeout=30)

    print(
        f"chat bench: {args.rooms} two-person rooms, fixed rate {args.rate:g} msg/s and "
        f"closed loop, {args.seconds:g} s each; {args.nodes} process(es) per server"
        f"{' (Redis, PostgreSQL), sender and receiver on different ones' if args.nodes > 1 else ''}"
        f"; cores={os.cpu_count()}"
    )
    header = f"{'':22}{'bare':>12}{'telemed':>12}{'ratio':>10}"
    for load in ("fixed", "closed"):
        print(f"\n{load} load")
        print(header)
        for metric in (
            "ack_p50",
            "ack_p99",
            "delivery_p50",
            "delivery_p99",
            "msg_per_s",
            "msg_per_s_per_node",
            "server_cpu_ms_per_msg",
            "generator_cpu_share",
            "delivered",
            "sent",
        ):
            bare = results["bare"][load][metric]
            ours = results["telemed"][load][metric]
            ratio = ours / bare if bare else float("nan")
            unit = " ms" if metric.startswith(("ack", "delivery")) else ""
            print(f"{metric + unit:22}{bare:12.2f}{ours:12.2f}{ratio:10.2f}")
        for name in ("bare", "telemed"):
            if results[name][load]["generator_cpu_share"] > 0.9:
                print(
                    f"note: the load generator used "
                    f"{results[name][load]['generator_cpu_share']:.0%} of a core against {name}: "
                    "the generator, not the server, was the limit"
                )


if __name__ == "__main__":
    asyncio.run(main())
