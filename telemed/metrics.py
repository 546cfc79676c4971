"""``GET /metrics``: this process's figures in Prometheus's text format.

Each application has a registry of its own (``Metrics``, under ``keys.METRICS``), never
``prometheus_client``'s global one: a process holds one app in production, but tests
make many, and each must count only its own. Three kinds of figures:

- counted as things happen: HTTP requests (``middleware``), chat messages stored and
  their delivery, background job runs, outbox send attempts;
- read from the process's state at scrape time (``LiveCollector``): sockets, video
  rooms, streams, call quality levels, the event loop's CPU time;
- read from the database at scrape time (``refresh``): the outbox's backlog and the
  requests past their deadline. Each is one aggregate over an index, the scrape runs
  them at most one at a time, and a database slower than ``DB_TIMEOUT`` leaves the last
  values (and ``telemed_metrics_database_up 0``) rather than a hanging scrape.

Labels are bounded sets: route templates (never paths, which carry ids), methods,
statuses, job names, levels. No label carries a user's data.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from telemed import __version__, http, keys
from telemed.errors import Forbidden, Unauthenticated
from telemed.http import client_address
from telemed.media.quality import LEVELS
from telemed.media.room import Rooms
from telemed.notify.service import get_outbox_state
from telemed.scheduling.models import Route
from telemed.scheduling.sla import get_overdue_counts
from telemed.settings import Settings

logger = logging.getLogger(__name__)

DB_TIMEOUT = 2.0
"""Seconds a scrape waits for the database's figures before answering with the last."""
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LONG_LIVED_PREFIX = "/socket.io"
"""Socket.IO's route: its requests last as long as a connection (websocket) or a poll,
so their duration says nothing of the server's speed; they are counted, not timed."""
CHAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
FORWARDED_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
CLIENT_GONE = 499
"""The status counted for a request whose client went away before the answer (nginx's
convention): the handler was cancelled, nothing was sent."""


@dataclass
class DatabaseFigures:
    """What the last scrape read from the database."""

    outbox_pending: int = 0
    outbox_failed: int = 0
    outbox_oldest_age: float = 0.0
    overdue: dict[str, int] = field(default_factory=dict)
    up: bool = False
    read_at: float | None = None
    """``time.monotonic()`` of the last successful read."""


@dataclass(frozen=True)
class MediaFigures:
    """This node's video rooms at a moment."""

    rooms: int = 0
    participants: int = 0
    published: int = 0
    """Streams participants send to the relay (audio and video counted apart)."""
    forwarded: int = 0
    """Streams the relay sends on to viewers now (their publisher present, not paused
    for a viewer on audio only)."""
    participants_by_level: dict[str, int] = field(default_factory=dict)
    calls_by_level: dict[str, int] = field(default_factory=dict)


def media_figures(rooms: Rooms | None) -> MediaFigures:
    """Count ``rooms``: a participant's level is its call quality's (``unknown`` before
    its first report), a call's the worst of its participants' known levels."""
    if rooms is None:
        return MediaFigures()
    levels = [*LEVELS, "unknown"]
    participants_by_level = dict.fromkeys(levels, 0)
    calls_by_level = dict.fromkeys(levels, 0)
    count = participants = published = forwarded = 0
    for room in rooms:
        count += 1
        worst = -1
        for participant in room.participants.values():
            participants += 1
            published += len(participant.publications)
            for (publisher_id, kind), stream in participant.viewing.items():
                # A stream stays set up for a publisher that left (its rejoin needs no
                # renegotiation): forwarded only while the publisher sends, and not paused.
                publisher = room.participants.get(publisher_id)
                if publisher is not None and kind in publisher.publications and not stream.paused:
                    forwarded += 1
            level = participant.quality.level
            participants_by_level[level or "unknown"] += 1
            if level is not None:
                worst = max(worst, LEVELS.index(level))
        if room.participants:
            calls_by_level[LEVELS[worst] if worst >= 0 else "unknown"] += 1
    return MediaFigures(
        rooms=count,
        participants=participants,
        published=published,
        forwarded=forwarded,
        participants_by_level=participants_by_level,
        calls_by_level=calls_by_level,
    )


def thread_cpu_seconds(ident: int | None) -> float | None:
    """CPU time of the thread ``ident`` (a ``threading.get_ident()``), if still there."""
    if ident is None:
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (OSError, AttributeError):
        return None


class LiveCollector(Collector):
    """The figures read at scrape time: the process's live state and the database's
    last figures. Given the readers it needs, not the application."""

    def __init__(
        self,
        *,
        sockets: Callable[[], int],
        rooms: Callable[[], Rooms | None],
        database: DatabaseFigures,
        loop_thread: Callable[[], int | None],
        node: str,
    ) -> None:
        self._sockets = sockets
        self._rooms = rooms
        self._database = database
        self._loop_thread = loop_thread
        self._node = node

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "telemed_info", "This process: its version and node id", labels=["version", "node"]
        )
        info.add_metric([__version__, self._node], 1)
        yield info
        yield GaugeMetricFamily(
            "telemed_sockets", "Socket.IO connections on this process", value=self._sockets()
        )
        media = media_figures(self._rooms())
        yield GaugeMetricFamily(
            "telemed_media_rooms", "Video rooms this process carries", value=media.rooms
        )
        yield GaugeMetricFamily(
            "telemed_media_participants",
            "Participants in this process's video rooms",
            value=media.participants,
        )
        yield GaugeMetricFamily(
            "telemed_media_streams_published",
            "Streams (audio, video) participants send to this process's relay",
            value=media.published,
        )
        yield GaugeMetricFamily(
            "telemed_media_streams_forwarded",
            "Streams this process's relay forwards to viewers",
            value=media.forwarded,
        )
        legs = GaugeMetricFamily(
            "telemed_media_participants_by_quality",
            "Participants by their call quality level now (unknown: no report yet)",
            labels=["level"],
        )
        for level, count in media.participants_by_level.items():
            legs.add_metric([level], count)
        yield legs
        calls = GaugeMetricFamily(
            "telemed_media_calls_by_quality",
            "Video rooms by their worst participant's quality level now",
            labels=["level"],
        )
        for level, count in media.calls_by_level.items():
            calls.add_metric([level], count)
        yield calls
        cpu = thread_cpu_seconds(self._loop_thread())
        if cpu is not None:
            yield CounterMetricFamily(
                "telemed_event_loop_cpu_seconds",
                "CPU time of the event loop's thread, which forwards the media of the "
                "video rooms (and serves HTTP and Socket.IO): its rate is the loop's busy share",
                value=cpu,
            )
        yield from self._database_figures()

    def _database_figures(self) -> Iterator[Metric]:
        database = self._database
        yield GaugeMetricFamily(
            "telemed_metrics_database_up",
            "Whether the last scrape read the database's figures (0: they are older)",
            value=1 if database.up else 0,
        )
        if database.read_at is None:
            return
        yield GaugeMetricFamily(
            "telemed_outbox_pending",
            "SMS and e-mail messages waiting to be sent (all processes)",
            value=database.outbox_pending,
        )
        yield GaugeMetricFamily(
            "telemed_outbox_failed",
            "SMS and e-mail messages given up on after the last retry (all processes)",
            value=database.outbox_failed,
        )
        yield GaugeMetricFamily(
            "telemed_outbox_oldest_pending_age_seconds",
            "Age of the oldest message waiting to be sent (0: none waits)",
            value=database.outbox_oldest_age,
        )
        overdue = GaugeMetricFamily(
            "telemed_consultations_overdue",
            "Requests still waiting for a time past their response deadline, by route",
            labels=["route"],
        )
        for route in (Route.INITIATIVE, Route.REFERRAL):
            overdue.add_metric([route.value], database.overdue.get(route.value, 0))
        yield overdue


class Metrics:
    """One application's metrics and the registry that exposes them."""

    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.registry = registry
        self.http_requests = Counter(
            "telemed_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "telemed_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template "
            "(Socket.IO's long-lived requests are not timed)",
            ["method", "route"],
            registry=registry,
        )
        self.chat_stored = Counter(
            "telemed_chat_messages_stored",
            "Chat messages stored by this process (resends of a stored one not counted)",
            registry=registry,
        )
        self.chat_delivery = Histogram(
            "telemed_chat_delivery_seconds",
            "From a chat:send's arrival to its chat:message_created event handed to "
            "Socket.IO (and Redis): storing, committing, publishing",
            buckets=CHAT_BUCKETS,
            registry=registry,
        )
        self.job_runs = Counter(
            "telemed_job_runs", "Background job runs, by job", ["job"], registry=registry
        )
        self.job_errors = Counter(
            "telemed_job_errors",
            "Background job runs that failed, by job",
            ["job"],
            registry=registry,
        )
        self.job_duration = Histogram(
            "telemed_job_duration_seconds",
            "Time of one background job run, by job",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.outbox_attempts = Counter(
            "telemed_outbox_attempts",
            "Send attempts of outbox messages by this process, by channel and outcome "
            "(sent, kept, retry, failed: given up)",
            ["channel", "outcome"],
            registry=registry,
        )
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        self.database = DatabaseFigures()
        self._refreshing = asyncio.Lock()
        self.loop_thread: int | None = None

    def watch(self, app: web.Application) -> None:
        """Read ``app``'s sockets and rooms at scrape time."""
        self.registry.register(
            LiveCollector(
                sockets=lambda: len(app.get(keys.SOCKETS, {})),
                rooms=lambda: app.get(keys.ROOMS),
                database=self.database,
                loop_thread=lambda: self.loop_thread,
                node=app[keys.NODE_ID],
            )
        )

    def job_ran(self, job: str, seconds: float, *, failed: bool) -> None:
        self.job_runs.labels(job).inc()
        self.job_duration.labels(job).observe(seconds)
        if failed:
            self.job_errors.labels(job).inc()

    async def refresh(self, app: web.Application) -> None:
        """Read the database's figures (one scrape at a time; others wait for it)."""
        if self._refreshing.locked():
            async with self._refreshing:
                return  # the scrape in progress read them
        async with self._refreshing:
            database = self.database
            try:
                async with asyncio.timeout(DB_TIMEOUT):
                    async with app[keys.SESSION_FACTORY]() as session:
                        now = app[keys.CLOCK].now()
                        outbox = await get_outbox_state(session)
                        overdue = await get_overdue_counts(session, now=now)
            except Exception as exc:
                logger.warning("metrics: the database's figures not read (%s)", type(exc).__name__)
                database.up = False
                return
            database.outbox_pending = outbox.pending
            database.outbox_failed = outbox.failed
            database.outbox_oldest_age = _age(outbox.oldest_pending_at, now)
            database.overdue = {route.value: count for route, count in overdue.items()}
            database.up = True
            database.read_at = time.monotonic()


def _age(moment: datetime | None, now: datetime) -> float:
    return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0


def route_of(request: web.Request) -> str:
    """The route template that matched (``/api/v1/consultations/{id}``), never the path;
    ``unmatched`` for a path (or a method) no route has."""
    match_info = request.match_info
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count and time each request. Outside ``http.error_middleware``, so the status
    counted is the one the client got (an error already in the one error shape)."""
    metrics = request.app[keys.METRICS]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        # What the error middleware lets through (redirects), as aiohttp answers it.
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        route = route_of(request)
        method = request.method if request.method in HTTP_METHODS else "other"
        metrics.http_requests.labels(method, route, str(status)).inc()
        if not route.startswith(LONG_LIVED_PREFIX):
            metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)


def check_access(request: web.Request, settings: Settings) -> None:
    """``/metrics`` is for the operator's scraper: a client from ``TELEMED_METRICS_ALLOW``
    (loopback by default) reaching the server directly, or any client with the bearer
    token ``TELEMED_METRICS_TOKEN``. A request a reverse proxy passed on (it names a
    forwarded client) is not a local one, even from the proxy's loopback address."""
    header = request.headers.get("Authorization", "")
    if settings.metrics_token is not None and header.startswith("Bearer "):
        given = header.removeprefix("Bearer ").strip()
        if hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            return
        raise Unauthenticated(
            "The metrics token is not right", headers={"WWW-Authenticate": "Bearer"}
        )
    address = client_address(request, settings.trusted_proxies)
    proxied = address == request.remote and any(h in request.headers for h in FORWARDED_HEADERS)
    if address is not None and not proxied and _allowed(address, settings.metrics_allow):
        return
    if settings.metrics_token is not None:
        raise Unauthenticated(
            "Metrics need the bearer token from TELEMED_METRICS_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    raise Forbidden("Metrics are readable only from TELEMED_METRICS_ALLOW addresses")


def _allowed(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


async def handler(request: web.Request) -> web.Response:
    """GET /metrics: this process's figures (Prometheus text format)."""
    return await _answer(request, request.app)


async def _answer(request: web.Request, app: web.Application) -> web.Response:
    check_access(request, app[keys.SETTINGS])
    metrics = app[keys.METRICS]
    await metrics.refresh(app)
    return web.Response(
        # The text format every Prometheus reads (0.0.4; names here need no escaping).
        body=generate_latest(metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4},
    )


_SERVED: web.AppKey[web.Application] = web.AppKey("served_app", web.Application)


async def _listener_handler(request: web.Request) -> web.Response:
    """GET /metrics on ``TELEMED_METRICS_PORT``: the served application's figures."""
    return await _answer(request, request.app[_SERVED])


def listener_app(app: web.Application) -> web.Application:
    """An application with ``app``'s ``/metrics`` alone, the same access rules and
    figures, for ``TELEMED_METRICS_PORT`` (``telemed.serve``)."""
    listener = web.Application(middlewares=[http.error_middleware])
    listener[_SERVED] = app
    listener.router.add_get("/metrics", _listener_handler)
    return listener


async def _note_loop_thread(app: web.Application) -> None:
    app[keys.METRICS].loop_thread = threading.get_ident()


def setup(app: web.Application) -> None:
    """``/metrics`` and what feeds it (the middleware is in ``create_app``'s list)."""
    app[keys.METRICS].watch(app)
    app.on_startup.append(_note_loop_thread)
    app.router.add_get("/metrics", handler)
