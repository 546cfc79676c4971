"""Connections benchmark: idle authenticated sockets held by one Telemed process, and
the memory each costs, against a bare python-socketio server in the same run.

    .venv/bin/python bench/connections.py [--sockets 10000] [--generators 4] [--hold 30]

Each server runs alone in its process (Telemed: ``telemed serve`` with its embedded
defaults, SQLite in a temporary data dir; the baseline: ``bench/bare_server.py``). The
sockets come from ``--generators`` processes of their own (this script with
``generate``), each holding its share over raw WebSockets that speak Engine.IO 4 and
Socket.IO 5 by hand (a python-socketio client costs more than the server side measured
here): open, ``CONNECT`` with ``auth: {token}`` (a hundred patients' tokens, round
robin), then answer every ping. Once all are connected they are held ``--hold``
seconds; then the server's resident memory (``VmRSS``) is read again, and each
generator reports how many of its sockets are still open (the server closes a socket
whose pings go unanswered, so an overloaded generator shows as lost sockets).

Printed: sockets held, the server's memory idle and holding them, the memory per
socket (the difference over the count) and its ratio to the bare server's, how long
connecting took, and the generators' CPU (a generator near a whole core is the
bottleneck, not the server). Target (issue 13): 10,000 sockets, at most 50 KB each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import book_consultations, cpu_seconds, server_env
from telemed.settings import Settings
from tests.servers import free_port

TOKENS = 100


def rss_kib(pid: int) -> int:
    """A process's resident memory (Linux /proc), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def raise_file_limit() -> None:
    """Ten thousand sockets need more descriptors than a shell's default; the servers
    started from here inherit the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The generator: one process holding its share of the sockets.


async def hold_socket(
    http: aiohttp.ClientSession, url: str, token: str, connected: asyncio.Event
) -> None:
    """One idle Socket.IO connection: handshake, CONNECT with the token, pongs."""
    async with http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket") as ws:
        opened = await ws.receive_str()
        if not opened.startswith("0"):
            raise RuntimeError(f"no Engine.IO open packet: {opened[:40]}")
        await ws.send_str("40" + json.dumps({"token": token}))
        answer = await ws.receive_str()
        if not answer.startswith("40"):
            raise RuntimeError(f"refused: {answer[:200]}")
        connected.set()
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            if message.data == "2":  # ping
                await ws.send_str("3")


async def generate(url: str, tokens: list[str], count: int, hold: float) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = []
        started = time.monotonic()
        failed = 0
        for n in range(count):
            connected = asyncio.Event()
            task = asyncio.create_task(hold_socket(http, url, tokens[n % len(tokens)], connected))
            tasks.append(task)
            waiting = asyncio.create_task(connected.wait())
            done, _ = await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                waiting.cancel()
                failed += 1
        emit({"connected": count - failed, "failed": failed, "seconds": time.monotonic() - started})
        # Told by the parent when every generator is done, then held.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.sleep(hold)
        alive = sum(1 for task in tasks if not task.done())
        emit({"alive": alive, "cpu": time.process_time()})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


# The parent: the servers and the generators, in turn.


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def run_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    url: str,
    args: argparse.Namespace,
    tokens_file: Path,
    log: Path,
) -> dict[str, float]:
    with log.open("wb") as handle:
        server = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env={**os.environ, **env}, stdout=handle, stderr=handle
        )
    try:
        probe = "/healthz" if name == "telemed" else "/socket.io/?EIO=4&transport=polling"
        await wait_ready(url + probe)
        await asyncio.sleep(2)  # start-up work done
        idle = rss_kib(server.pid)
        cpu_before = cpu_seconds(server.pid)
        share = args.sockets // args.generators
        generators = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "generate",
                "--url",
                url,
                "--tokens",
                str(tokens_file),
                "--count",
                str(share),
                "--hold",
                str(args.hold),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(args.generators)
        ]
        began = time.monotonic()
        reports = [json.loads(await g.stdout.readline()) for g in generators]  # type: ignore[union-attr]
        connect_seconds = time.monotonic() - began
        for generator in generators:
            generator.stdin.write(b"go\n")  # type: ignore[union-attr]
            await generator.stdin.drain()  # type: ignore[union-attr]
        finals = [json.loads(await g.stdout.readline()) for g in generators]  # type: ignore[union-attr]
        holding = rss_kib(server.pid)
        for generator in generators:
            await generator.wait()
        connected = sum(r["connected"] for r in reports)
        return {
            "connected": connected,
            "failed": sum(r["failed"] for r in reports),
            "alive": sum(f["alive"] for f in finals),
            "idle_mib": idle / 1024,
            "holding_mib": holding / 1024,
            "kb_per_socket": (holding - idle) * 1.024 / max(connected, 1),
            "connect_seconds": connect_seconds,
            "server_cpu_seconds": cpu_seconds(server.pid) - cpu_before,
            "generator_cpu_max": max(f["cpu"] for f in finals) / (connect_seconds + args.hold),
        }
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 30)
        except TimeoutError:
            server.kill()
            await server.wait()


async def main(args: argparse.Namespace) -> None:
    raise_file_limit()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        booked = await book_consultations(
            Settings(data_dir=data_dir),
            TOKENS,
            starts_in=timedelta(hours=1),
            minutes=10,
            doctor_each=False,
        )
        tokens_file = data_dir / "tokens.json"
        tokens_file.write_text(json.dumps([b.patient_token for b in booked]))
        results = {}
        for name in ("bare", "telemed"):
            port = free_port()
            command = (
                [sys.executable, "bench/bare_server.py", str(port)]
                if name == "bare"
                else [sys.executable, "-m", "telemed", "serve", "--port", str(port)]
            )
            env = server_env(data_dir) if name == "telemed" else {}
            results[name] = await run_server(
                name,
                command,
                env,
                f"http://127.0.0.1:{port}",
                args,
                tokens_file,
                data_dir / f"{name}.log",
            )
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    print(
        f"connections bench: {args.sockets} idle authenticated sockets from "
        f"{args.generators} generator processes, held {args.hold:g} s; cores={os.cpu_count()}"
    )
    print(f"{'':26}{'bare':>12}{'telemed':>12}{'ratio':>10}")
    for metric in (
        "connected",
        "failed",
        "alive",
        "idle_mib",
        "holding_mib",
        "kb_per_socket",
        "connect_seconds",
        "server_cpu_seconds",
        "generator_cpu_max",
    ):
        bare, ours = results["bare"][metric], results["telemed"][metric]
        ratio = ours / bare if bare else float("nan")
        print(f"{metric:26}{bare:12.2f}{ours:12.2f}{ratio:10.2f}")
    telemed = results["telemed"]
    for name, result in results.items():
        if result["generator_cpu_max"] > 0.9:
            print(
                f"note: a generator used {result['generator_cpu_max']:.0%} of a core against "
                f"{name}: the generators, not the server, set the connect time"
            )
    held = telemed["alive"] >= args.sockets and telemed["failed"] == 0
    each = telemed["kb_per_socket"]
    print(
        f"target: {args.sockets} sockets held — {'met' if held else 'MISSED'} "
        f"({telemed['alive']:.0f}); at most 50 KB each — "
        f"{'met' if each <= 50 else 'MISSED'} ({each:.1f} KB)"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command")
    generator = commands.add_parser("generate", help="(internal) hold sockets")
    generator.add_argument("--url", required=True)
    generator.add_argument("--tokens", required=True)
    generator.add_argument("--count", type=int, required=True)
    generator.add_argument("--hold", type=float, required=True)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--generators", type=int, default=4)
    parser.add_argument("--hold", type=float, default=30)
    args = parser.parse_args()
    if args.command == "generate":
        raise_file_limit()
        tokens = json.loads(Path(args.tokens).read_text())
        asyncio.run(generate(args.url, tokens, args.count, args.hold))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
