"""Running the server: one process (``serve``), or several sharing the port
(``supervise``, ``telemed serve --workers N``).

One process serves until SIGTERM or SIGINT, then stops in this order: it stops
listening (new connections go to the other processes), hands its video rooms over to
other nodes (``RoomDirectory.drain``: while its sockets still work, since their
participants move through them), closes its sockets (clients connect again, to another
process), and shuts the application down.

Several processes: the supervisor applies the migrations once, starts the workers
(each ``telemed serve --worker``, a node of its own, binding the port with
``SO_REUSEPORT`` so that the kernel spreads connections among them), starts again one
that dies, and on SIGTERM or SIGINT passes SIGTERM on and waits for them all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from telemed import keys, metrics
from telemed.http import AccessLogger
from telemed.settings import Settings

logger = logging.getLogger(__name__)

HTTP_SHUTDOWN_SECONDS = 5.0
"""How long requests still running at the end may take to finish."""
RESTART_DELAY_MAX = 30.0
"""A worker that keeps dying is started again at most this often."""
STEADY_SECONDS = 60.0
"""A worker that ran this long was well: the next restart is immediate again."""


async def serve(app: web.Application, settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve ``app`` on the settings' address until SIGTERM or SIGINT, then stop well."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLogger,
        shutdown_timeout=HTTP_SHUTDOWN_SECONDS,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port)
    metrics_runner: web.AppRunner | None = None
    if settings.metrics_port is not None:
        metrics_runner = web.AppRunner(
            metrics.listener_app(app), handle_signals=False, access_log_class=AccessLogger
        )
        await metrics_runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await site.start()
        if metrics_runner is not None:
            assert settings.metrics_port is not None
            await web.TCPSite(metrics_runner, settings.host, settings.metrics_port).start()
        await stop.wait()
        logger.info("stopping: no new connections; moving the video rooms")
        await site.stop()
        directory = app.get(keys.DIRECTORY)
        if directory is not None:
            await directory.drain()
        sio = app[keys.SIO]
        sockets: dict[str, str] = app[keys.SOCKETS]
        for sid in list(sockets):
            await sio.disconnect(sid)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


def supervise(settings: Settings, worker_command: Sequence[str]) -> int:
    """Run ``settings.worker_count`` workers (``worker_command``) until SIGTERM or
    SIGINT; returns the exit status."""
    count = settings.worker_count
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers: list[subprocess.Popen[bytes] | None] = [None] * count
    started = [0.0] * count
    delays = [0.0] * count
    next_start = [0.0] * count
    env = {**os.environ, "TELEMED_MIGRATE_ON_START": "false"}
    while not stopping:
        now = time.monotonic()
        for n in range(count):
            worker = workers[n]
            if worker is not None and worker.poll() is not None:
                ran = now - started[n]
                delays[n] = _restart_delay(delays[n], ran)
                logger.error(
                    "worker %d (pid %d) exited with %s after %.0f s; starting it again in %.0f s",
                    n,
                    worker.pid,
                    worker.returncode,
                    ran,
                    delays[n],
                )
                workers[n] = None
                next_start[n] = now + delays[n]
            if workers[n] is None and now >= next_start[n]:
                # Our own interpreter and arguments (``worker_command``), no shell.
                workers[n] = subprocess.Popen(  # noqa: S603
                    list(worker_command), env=worker_environment(settings, n, env)
                )
                started[n] = now
        time.sleep(0.2)
    running = [worker for worker in workers if worker is not None and worker.poll() is None]
    for worker in running:
        worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.node_drain_seconds + HTTP_SHUTDOWN_SECONDS + 15
    status = 0
    for worker in running:
        try:
            code = worker.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            logger.error("worker pid %d did not stop in time: killed", worker.pid)
            worker.kill()
            code = worker.wait()
        status = status or (code if code > 0 else 0)
    return status


def worker_environment(settings: Settings, n: int, env: dict[str, str]) -> dict[str, str]:
    """Worker ``n``'s environment: ``env``, and its own metrics port (the first worker's
    is ``TELEMED_METRICS_PORT``, the next one's the port after it…)."""
    if settings.metrics_port is None:
        return env
    return {**env, "TELEMED_METRICS_PORT": str(settings.metrics_port + n)}


def _restart_delay(last: float, ran: float) -> float:
    """0 for a worker that ran well; else doubling from 1 s up to ``RESTART_DELAY_MAX``."""
    if ran > STEADY_SECONDS:
        return 0.0
    return min(max(last * 2, 1.0), RESTART_DELAY_MAX)


def worker_command(settings: Settings) -> list[str]:
    """The command of one worker: this interpreter, the settings' address."""
    return [
        sys.executable,
        "-m",
        "telemed",
        "serve",
        "--worker",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
    ]
