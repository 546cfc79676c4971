"""``create_app(settings)``: the only place where the application is wired together."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from telemed import __version__, db, http, jobs, keys, metrics, pages
from telemed.accounts import views as accounts_views
from telemed.accounts.passwords import Passwords, hasher_for
from telemed.api import Api
from telemed.chat import views as chat_views
from telemed.clock import Clock, SystemClock
from telemed.documents import views as documents_views
from telemed.documents.storage import DocumentStore
from telemed.fhir import views as fhir_views
from telemed.limits import Limiter
from telemed.live import Publisher
from telemed.media import views as media_views
from telemed.media.network import bind_media_addresses
from telemed.notify import views as notify_views
from telemed.notify import worker as notify_worker
from telemed.scheduling import jobs as scheduling_jobs
from telemed.scheduling import views as scheduling_views
from telemed.settings import Settings
from telemed.signaling import handlers as signaling

logger = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """The aiohttp application for ``settings``.

    ``clock`` is the one time source of the services (a fake one in tests).
    """
    # The metrics middleware is outside the error middleware: it counts the status that
    # the client got, errors already in the one error shape.
    app = web.Application(
        middlewares=[metrics.middleware, http.compress_web_files, http.error_middleware],
        client_max_size=1024 * 1024,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics.Metrics()
    time_source: Clock = clock or SystemClock()
    app[keys.CLOCK] = time_source
    app[keys.PASSWORDS] = passwords_for(settings)
    app[keys.LIMITER] = Limiter(settings.limits, now=lambda: time_source.now().timestamp())
    app[keys.PUBLISHER] = Publisher()
    app[keys.DOCUMENT_STORE] = DocumentStore(
        settings.documents_dir, abandoned_after=timedelta(hours=settings.upload_abandoned_hours)
    )
    api = Api(title="Telemed API", version=__version__)
    app[keys.API] = api
    app[keys.JOBS] = []
    app[keys.HEALTH_CHECKS] = []
    app[keys.NODE_ID] = jobs.node_id()

    app.on_cleanup.append(_close_passwords)
    app.cleanup_ctx.append(_data_dir)
    app.cleanup_ctx.append(_database)
    notify_worker.setup(app)
    app.cleanup_ctx.append(jobs.run_in_background)
    if settings.media_addresses:
        app.on_startup.append(_bind_media_addresses)
    app.on_response_prepare.append(http.security_headers)

    accounts_views.setup_routes(app)
    documents_views.setup_routes(app)
    scheduling_views.setup_routes(app)
    scheduling_jobs.setup(app)
    notify_views.setup_routes(app)
    chat_views.setup_routes(app)
    media_views.setup_routes(app)
    fhir_views.setup_routes(app)
    signaling.setup(app)
    app.router.add_get("/api/v1/openapi.json", http.openapi)
    app.router.add_get("/healthz", http.healthz)
    app.router.add_get("/readyz", http.readyz)
    metrics.setup(app)
    pages.setup_routes(app)
    return app


def passwords_for(settings: Settings) -> Passwords:
    """Password hashing with the settings' parameters (``TELEMED_PASSWORD_HASH_*``)."""
    return Passwords(
        hasher_for(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        )
    )


async def _close_passwords(app: web.Application) -> None:
    app[keys.PASSWORDS].close()


async def _bind_media_addresses(app: web.Application) -> None:
    """``TELEMED_MEDIA_ADDRESSES``: aioice's host addresses are a process-wide choice, made
    here once at start-up, before any media connection gathers its candidates."""
    bind_media_addresses(app[keys.SETTINGS].media_addresses)


async def _data_dir(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app[keys.DOCUMENT_STORE].prepare()
    probe = settings.data_dir / f".probe-{app[keys.NODE_ID].replace(':', '-')}"

    async def storage_works() -> None:
        try:
            async with asyncio.timeout(STORAGE_PROBE_SECONDS):
                await asyncio.to_thread(_write_and_read, probe)
        except TimeoutError:
            raise RuntimeError("the data directory is too slow to write") from None
        except OSError as exc:
            raise RuntimeError(f"the data directory takes no writes ({exc.strerror})") from None

    app[keys.HEALTH_CHECKS].append(("storage", storage_works))
    yield
    probe.unlink(missing_ok=True)


STORAGE_PROBE_SECONDS = 3.0
"""A data directory (shared storage, with several machines) slower than this to write
and read a small file is not ready."""


def _write_and_read(probe: Path) -> None:
    """Write a probe file into the data directory and read it back: the documents and
    recordings need a data directory that takes writes (a full disk, a read-only or
    unmounted share fail here)."""
    token = secrets.token_hex(16)
    probe.write_text(token)
    if probe.read_text() != token:
        raise RuntimeError("the data directory gave back something else than was written")


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    engine = db.create_engine(settings.resolved_database_url)
    if settings.migrate_on_start:
        await db.upgrade(engine)
    app[keys.ENGINE] = engine
    app[keys.SESSION_FACTORY] = db.create_session_factory(engine)
    yield
    await engine.dispose()
