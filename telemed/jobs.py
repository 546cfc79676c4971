"""Background work inside the server: every ``TELEMED_WORKER_INTERVAL_SECONDS`` each
registered job runs once with the injected clock's time.

Jobs must be safe when several server processes run them at the same time: each piece of
work is claimed by an atomic UPDATE (or a unique constraint) before it is done, so it is
done once. Tests set the interval to 0 and call ``run_jobs_once`` after moving a fake
clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import keys, live

logger = logging.getLogger(__name__)

Job = Callable[[web.Application, datetime], Awaitable[int]]
"""A job does what is due at ``now`` and returns how many items it handled."""


def node_id() -> str:
    """A name for this process, unique among the processes sharing the database."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@asynccontextmanager
async def transaction(app: web.Application) -> AsyncIterator[AsyncSession]:
    """A writing unit of work for background work (``live.unit_of_work``)."""
    async with live.unit_of_work(app[keys.SESSION_FACTORY], app[keys.PUBLISHER]) as session:
        yield session


def register_job(app: web.Application, name: str, job: Job) -> None:
    app[keys.JOBS].append((name, job))


async def run_jobs_once(app: web.Application) -> dict[str, int]:
    """One round of every job; a failing job is logged and does not stop the others."""
    now = app[keys.CLOCK].now()
    metrics = app.get(keys.METRICS)
    done: dict[str, int] = {}
    for name, job in app[keys.JOBS]:
        started = time.perf_counter()
        try:
            done[name] = await job(app, now)
        except Exception:
            logger.exception("background job %s failed", name)
            done[name] = -1
        if metrics is not None:
            metrics.job_ran(name, time.perf_counter() - started, failed=done[name] < 0)
    return done


async def run_in_background(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the loop of rounds, for the server's lifetime."""
    interval = app[keys.SETTINGS].worker_interval_seconds
    if interval <= 0:
        yield
        return

    async def loop() -> None:
        while True:
            await run_jobs_once(app)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="telemed-jobs")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
