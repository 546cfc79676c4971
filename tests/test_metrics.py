"""``GET /metrics``: the figures move when the things they count happen, and only the
operator's scraper may read them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from telemed import keys
from telemed.app import create_app
from telemed.clock import FakeClock
from telemed.jobs import register_job, run_jobs_once
from telemed.metrics import listener_app
from telemed.settings import Settings, SmsBackend
from tests.factories import AppClient, assert_error, bearer
from tests.flows import (
    make_centre,
    make_doctor,
    make_patient,
    manager_token,
    ok,
    request_to_centre,
)
from tests.media_peers import MediaClient, participant
from tests.nodes import ROOT, fresh_database, wait_until_ready
from tests.notify_gateways import SmsGateway
from tests.realtime import Peer, open_peer, send
from tests.servers import PostgresServer, RedisServer, free_port
from tests.world import Booked

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TOKEN = "metrics-token-" + "m" * 20


async def scrape(client: AppClient, **headers: str) -> Samples:
    """Every sample of ``/metrics``, by name and labels, parsed as Prometheus parses it."""
    response = await client.get("/metrics", headers=headers)
    text = await response.text()
    assert response.status == 200, text
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value (0 for one not there: a counter not counted yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_template_and_status(client: AppClient) -> None:
    before = await scrape(client)
    for _ in range(2):
        assert (await client.get("/healthz")).status == 200
    # An id in the path: counted under the route's template, and the id is nowhere.
    patient = await make_patient(client)
    missing = uuid.uuid4()
    response = await client.get(
        f"/api/v1/consultations/{missing}", headers=bearer(patient["token"])
    )
    await assert_error(response, 404, "not_found")
    # The error middleware's answer (no token) is what is counted: 401.
    await assert_error(await client.get("/api/v1/me"), 401, "unauthenticated")
    # A path no route has: one label for all of them; a method nobody uses, one too.
    assert (await client.get(f"/no/such/{missing}")).status == 404
    await assert_error(await client.request("PROPFIND", "/healthz"), 405, "method_not_allowed")

    response = await client.get("/metrics")
    text = await response.text()
    after = await scrape(client)
    assert str(missing) not in text
    healthz = {"method": "GET", "route": "/healthz"}
    assert value(after, "telemed_http_requests_total", **healthz, status="200") == (
        value(before, "telemed_http_requests_total", **healthz, status="200") + 2
    )
    count = "telemed_http_request_duration_seconds_count"
    assert value(after, count, **healthz) == value(before, count, **healthz) + 2
    assert value(after, "telemed_http_request_duration_seconds_sum", **healthz) > 0
    one = {"method": "GET", "route": "/api/v1/consultations/{id}", "status": "404"}
    assert value(after, "telemed_http_requests_total", **one) == 1
    me = {"method": "GET", "route": "/api/v1/me", "status": "401"}
    assert value(after, "telemed_http_requests_total", **me) == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "telemed_http_requests_total", **unmatched) == 1
    odd = {"method": "other", "route": "unmatched", "status": "405"}
    assert value(after, "telemed_http_requests_total", **odd) == 1


async def test_each_app_counts_only_its_own(
    client: AppClient, settings: Settings, clock: FakeClock
) -> None:
    for _ in range(3):
        await client.get("/healthz")
    other = create_app(settings, clock=clock)
    assert other[keys.METRICS].registry is not client.app[keys.METRICS].registry
    samples = await scrape(client)
    healthz = {"method": "GET", "route": "/healthz", "status": "200"}
    assert value(samples, "telemed_http_requests_total", **healthz) == 3
    # A process-wide figure, and the process's own CPU, from the app's registry.
    assert value(samples, "telemed_event_loop_cpu_seconds_total") > 0
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "telemed_metrics_database_up") == 1


async def test_sockets_are_counted_while_open(client: AppClient, peers: list[Peer]) -> None:
    patient = await make_patient(client)
    assert value(await scrape(client), "telemed_sockets") == 0
    peer = await open_peer(client, peers, patient["token"])
    second = await open_peer(client, peers, patient["token"])
    assert value(await scrape(client), "telemed_sockets") == 2
    await second.close()
    await peer.wait_for(lambda: len(client.app[keys.SOCKETS]) == 1)
    assert value(await scrape(client), "telemed_sockets") == 1
    # Socket.IO's requests are counted (a websocket once it ends), but not timed: a
    # websocket lasts as long as the connection, which says nothing of the server's speed.
    socketio = {"method": "GET", "route": "/socket.io/"}
    async with asyncio.timeout(10):
        while True:
            samples = await scrape(client)
            if value(samples, "telemed_http_requests_total", **socketio, status="101") >= 1:
                break
            await asyncio.sleep(0.05)
    assert ("telemed_http_request_duration_seconds_count", frozenset(socketio.items())) not in (
        samples
    )


async def test_chat_messages_stored_and_delivered(
    client: AppClient, booked: Booked, peers: list[Peer]
) -> None:
    cid = booked["id"]
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    patient = await open_peer(client, peers, booked["patient"]["token"])
    for peer in (doctor, patient):
        assert (await peer.call("consultation:subscribe", {"consultation_id": cid}))["ok"]
    before = await scrape(client)
    for n in range(3):
        assert (await patient.call("chat:send", send(cid, f"m{n}", "Добрый день")))["ok"]
    # A resend of a stored message stores nothing new.
    assert (await patient.call("chat:send", send(cid, "m0", "Добрый день")))["ok"]
    await doctor.wait_for(lambda: len(doctor.events("chat:message_created")) == 3)
    after = await scrape(client)
    stored = "telemed_chat_messages_stored_total"
    assert value(after, stored) == value(before, stored) + 3
    delivered = "telemed_chat_delivery_seconds_count"
    assert value(after, delivered) == value(before, delivered) + 3
    assert value(after, "telemed_chat_delivery_seconds_sum") > 0


async def test_outbox_backlog_age_and_attempts(client: AppClient, clock: FakeClock) -> None:
    patient = await make_patient(client)
    before = await scrape(client)
    phone = patient["user"]["phone"]
    await ok(client, "POST", "/auth/password-reset", None, {"phone": phone}, status=202)
    queued = await scrape(client)
    assert value(queued, "telemed_outbox_pending") == value(before, "telemed_outbox_pending") + 1
    clock.advance(timedelta(minutes=10))
    aged = await scrape(client)
    assert value(aged, "telemed_outbox_oldest_pending_age_seconds") >= 600

    assert client.app is not None
    await run_jobs_once(client.app)
    sent = await scrape(client)
    assert value(sent, "telemed_outbox_pending") == 0
    assert value(sent, "telemed_outbox_oldest_pending_age_seconds") == 0
    # No gateway: the SMS is kept in the outbox, an attempt that did not fail.
    assert value(sent, "telemed_outbox_attempts_total", channel="sms", outcome="kept") >= 1
    assert value(sent, "telemed_job_runs_total", job="deliver_outbox") == 1
    assert value(sent, "telemed_job_errors_total", job="deliver_outbox") == 0
    assert value(sent, "telemed_job_duration_seconds_count", job="deliver_outbox") == 1


async def test_outbox_retries_and_failures(
    aiohttp_client: Any,
    settings: Settings,
    clock: FakeClock,
    gateway: tuple[SmsGateway, str],
) -> None:
    """An SMS gateway that answers 500: an attempt to retry, then one given up on."""
    failing = settings.model_copy(
        update={
            "sms_backend": SmsBackend.HTTP,
            "sms_http_url": gateway[1],
            "sms_http_timeout_seconds": 0.5,
            "outbox_max_attempts": 2,
            "outbox_retry_base_seconds": 1,
        }
    )
    client: AppClient = await aiohttp_client(create_app(failing, clock=clock))
    gateway[0].fail_next = 10
    patient = await make_patient(client)
    phone = patient["user"]["phone"]
    await ok(client, "POST", "/auth/password-reset", None, {"phone": phone}, status=202)
    assert client.app is not None
    await run_jobs_once(client.app)
    retried = await scrape(client)
    assert value(retried, "telemed_outbox_attempts_total", channel="sms", outcome="retry") == 1
    assert value(retried, "telemed_outbox_pending") == 1
    assert value(retried, "telemed_outbox_failed") == 0
    clock.advance(timedelta(seconds=2))
    await run_jobs_once(client.app)
    failed = await scrape(client)
    assert value(failed, "telemed_outbox_attempts_total", channel="sms", outcome="failed") == 1
    assert value(failed, "telemed_outbox_pending") == 0
    assert value(failed, "telemed_outbox_failed") == 1
    assert gateway[0].requests == 2
    # The job ran; a message that failed is the gateway's failure, not the job's.
    assert value(failed, "telemed_job_errors_total", job="deliver_outbox") == 0


async def test_a_database_that_fails_leaves_the_last_figures(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox table gone (a real failure of the scrape's query): the scrape still
    answers, with the last figures and ``telemed_metrics_database_up 0``; logged by the
    error's type only."""
    patient = await make_patient(client)
    phone = patient["user"]["phone"]
    await ok(client, "POST", "/auth/password-reset", None, {"phone": phone}, status=202)
    assert value(await scrape(client), "telemed_outbox_pending") == 1
    assert client.app is not None
    engine = client.app[keys.ENGINE]
    async with engine.begin() as connection:
        await connection.execute(sa.text("ALTER TABLE outbox_message RENAME TO outbox_away"))
    try:
        samples = await scrape(client)
        assert value(samples, "telemed_metrics_database_up") == 0
        assert value(samples, "telemed_outbox_pending") == 1
        assert "the database's figures not read" in caplog.text
        assert phone not in caplog.text
    finally:
        async with engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE outbox_away RENAME TO outbox_message"))
    assert value(await scrape(client), "telemed_metrics_database_up") == 1


async def test_a_failing_job_is_counted(client: AppClient) -> None:
    assert client.app is not None

    async def broken(app: web.Application, now: Any) -> int:
        raise RuntimeError("a job's bug")

    register_job(client.app, "broken", broken)
    await run_jobs_once(client.app)
    await run_jobs_once(client.app)
    samples = await scrape(client)
    assert value(samples, "telemed_job_runs_total", job="broken") == 2
    assert value(samples, "telemed_job_errors_total", job="broken") == 2
    assert value(samples, "telemed_job_errors_total", job="deliver_outbox") == 0


async def test_requests_past_their_deadline(client: AppClient, clock: FakeClock) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    patient = await make_patient(client)
    request = await request_to_centre(client, patient, centre["id"])
    samples = await scrape(client)
    assert value(samples, "telemed_consultations_overdue", route="initiative") == 0
    clock.advance(timedelta(days=3, minutes=1))  # TELEMED_SLA_INITIATIVE_DAYS = 3
    samples = await scrape(client)
    assert value(samples, "telemed_consultations_overdue", route="initiative") == 1
    assert value(samples, "telemed_consultations_overdue", route="referral") == 0
    # Answered (declined): no longer waiting.
    doctor = await make_doctor(client, manager, centre["id"])
    await ok(
        client,
        "POST",
        f"/consultations/{request['id']}/decline",
        doctor["token"],
        {"reason": "Не наш профиль"},
    )
    samples = await scrape(client)
    assert value(samples, "telemed_consultations_overdue", route="initiative") == 0


@pytest.mark.parametrize("settings_overrides", [{"media_addresses": ["127.0.0.1"]}])
async def test_rooms_streams_and_quality_levels(
    client: AppClient,
    room: Booked,
    room_doctor: MediaClient,
    peers: list[Peer],
    media: list[MediaClient],
) -> None:
    cid = room["id"]
    samples = await scrape(client)
    assert value(samples, "telemed_media_rooms") == 1
    assert value(samples, "telemed_media_participants") == 1
    assert value(samples, "telemed_media_streams_published") == 2  # its camera and microphone
    assert value(samples, "telemed_media_participants_by_quality", level="unknown") == 1

    patient = await participant(client, peers, media, room["patient"]["token"], cid)
    assert (await patient.join())["ok"]
    assert (await patient.connect_media())["ok"]
    await patient.peer.wait_for(lambda: patient.receives_video() and room_doctor.receives_video())
    report = {"consultation_id": cid, "level": "weak", "rtt_ms": 650, "loss": 0.01}
    assert (await patient.peer.call("media:stats", report))["ok"]
    good = {**report, "level": "good", "rtt_ms": 40, "loss": 0.0}
    assert (await room_doctor.peer.call("media:stats", good))["ok"]
    samples = await scrape(client)
    assert value(samples, "telemed_media_participants") == 2
    assert value(samples, "telemed_media_streams_published") == 4
    assert value(samples, "telemed_media_streams_forwarded") == 4  # each sees the other's two
    assert value(samples, "telemed_media_participants_by_quality", level="weak") == 1
    assert value(samples, "telemed_media_participants_by_quality", level="good") == 1
    assert value(samples, "telemed_media_participants_by_quality", level="unknown") == 0
    assert value(samples, "telemed_media_calls_by_quality", level="weak") == 1  # the worse
    assert value(samples, "telemed_media_calls_by_quality", level="good") == 0

    assert (await patient.peer.call("room:leave", {"consultation_id": cid}))["ok"]
    samples = await scrape(client)
    assert value(samples, "telemed_media_participants") == 1
    assert value(samples, "telemed_media_streams_forwarded") == 0
    assert value(samples, "telemed_media_calls_by_quality", level="good") == 1


async def test_the_dashboard_uses_only_metrics_that_exist(client: AppClient) -> None:
    """docs/grafana-dashboard.json: valid JSON, and every metric its queries name is one
    that ``/metrics`` exposes (a renamed metric would leave a panel empty)."""
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    named = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for query in queries
        for name in re.findall(r"\b(?:telemed|process)_[a-z_]+", query)
    }
    response = await client.get("/metrics")
    families = {family.name for family in text_string_to_metric_families(await response.text())}
    assert len(named) >= 20
    assert named <= families, named - families


# Access: a client from a TELEMED_METRICS_ALLOW address (loopback by default), or the token.

FROM_OUTSIDE = {"X-Forwarded-For": "203.0.113.7"}
PROXY = {"trusted_proxies": ["127.0.0.1"]}


async def test_a_request_through_a_proxy_is_not_local(client: AppClient) -> None:
    # No trusted proxy, but the request names a forwarded client: a local reverse proxy
    # passing on someone's request, not the operator's own scraper.
    response = await client.get("/metrics", headers=FROM_OUTSIDE)
    error = await assert_error(response, 403, "forbidden")
    assert "TELEMED_METRICS_ALLOW" in error["message"]


@pytest.mark.parametrize("settings_overrides", [{**PROXY, "metrics_token": TOKEN}])
async def test_others_need_the_token(client: AppClient) -> None:
    response = await client.get("/metrics", headers=FROM_OUTSIDE)
    await assert_error(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = {**FROM_OUTSIDE, "Authorization": "Bearer " + "x" * 34}
    await assert_error(await client.get("/metrics", headers=wrong), 401, "unauthenticated")
    samples = await scrape(client, **FROM_OUTSIDE, Authorization=f"Bearer {TOKEN}")
    assert value(samples, "telemed_sockets") == 0
    # Refusals are counted as what they were.
    refused = {"method": "GET", "route": "/metrics", "status": "401"}
    assert value(samples, "telemed_http_requests_total", **refused) == 2
    # Loopback, directly, needs none.
    assert value(await scrape(client), "telemed_sockets") == 0


@pytest.mark.parametrize("settings_overrides", [{**PROXY, "metrics_allow": "203.0.113.0/24"}])
async def test_allowed_networks(client: AppClient) -> None:
    await scrape(client, **FROM_OUTSIDE)
    elsewhere = {"X-Forwarded-For": "198.51.100.1"}
    await assert_error(await client.get("/metrics", headers=elsewhere), 403, "forbidden")
    # Loopback is no longer in the list.
    await assert_error(await client.get("/metrics"), 403, "forbidden")


@pytest.mark.parametrize(
    "wrong",
    [
        {"metrics_token": "short"},
        {"metrics_allow": "10.0.0.0/8,not-a-network"},
    ],
)
def test_settings_refuse_a_weak_token_or_a_bad_network(wrong: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**wrong)


async def test_the_metrics_port_serves_the_same_figures(
    client: AppClient, aiohttp_client: Any
) -> None:
    """``TELEMED_METRICS_PORT``'s application: ``/metrics`` alone, with the served app's
    figures and access rules."""
    assert client.app is not None
    listener: AppClient = await aiohttp_client(listener_app(client.app))
    await client.get("/healthz")
    samples = await scrape(listener)
    healthz = {"method": "GET", "route": "/healthz", "status": "200"}
    assert value(samples, "telemed_http_requests_total", **healthz) == 1
    await assert_error(await listener.get("/metrics", headers=FROM_OUTSIDE), 403, "forbidden")
    assert (await listener.get("/healthz")).status == 404


def _two_free_ports() -> int:
    """A port whose next port is free too."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports in a row")


def _start_workers(
    port: int,
    metrics_port: int,
    database_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
    log: IO[bytes],
) -> subprocess.Popen[bytes]:
    """``telemed serve --workers 2`` with ``TELEMED_METRICS_PORT``."""
    return subprocess.Popen(
        [sys.executable, "-m", "telemed", "serve", "--port", str(port), "--workers", "2"],
        env={
            **os.environ,
            "TELEMED_DATA_DIR": str(tmp_path / "data"),
            "TELEMED_SECRET_KEY": "metrics-secret-" + "x" * 32,
            "TELEMED_LOG_LEVEL": "WARNING",
            "TELEMED_DATABASE_URL": database_url,
            "TELEMED_REDIS_URL": redis_server.url,
            "TELEMED_METRICS_PORT": str(metrics_port),
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


async def test_each_worker_answers_on_its_own_metrics_port(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    """``serve --workers 2`` with ``TELEMED_METRICS_PORT``: the main port reaches either
    worker, each worker's own figures are on its own port."""
    port, metrics_port = free_port(), _two_free_ports()
    log = (tmp_path / "supervisor.log").open("wb")
    async with fresh_database(postgres) as database_url:
        supervisor = _start_workers(port, metrics_port, database_url, redis_server, tmp_path, log)
        try:
            nodes = set()
            async with aiohttp.ClientSession() as http:
                await wait_until_ready(http, port, supervisor, seconds=60)
                for n in range(2):
                    url = f"http://127.0.0.1:{metrics_port + n}/metrics"
                    async with asyncio.timeout(30):
                        while True:
                            try:
                                async with http.get(url) as response:
                                    text = await response.text()
                                    break
                            except aiohttp.ClientError:
                                await asyncio.sleep(0.2)
                    assert response.status == 200, text
                    families = {f.name: f for f in text_string_to_metric_families(text)}
                    [info] = families["telemed_info"].samples
                    nodes.add(info.labels["node"])
            assert len(nodes) == 2  # two processes, each its own figures
            supervisor.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(supervisor.wait, 60) == 0
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait()
            log.close()
