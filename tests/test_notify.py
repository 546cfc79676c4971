"""Notifications: the bell over HTTP, the outbox and its delivery through a real HTTP SMS
gateway and a real SMTP server (with retries, time-outs and giving up), masking of
passwords, de-duplication, the texts in both languages, and the ``.ics`` format."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from telemed import db, keys
from telemed.accounts.models import Role, User
from telemed.app import create_app
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from telemed.notify import ics
from telemed.notify.models import Notification, OutboxChannel, OutboxMessage, OutboxStatus
from telemed.notify.service import MASK, Attachment, do_notify
from telemed.notify.texts import NotificationKind, format_datetime, format_short, render
from telemed.notify.worker import claim
from telemed.settings import Settings
from tests.conftest import AppClient
from tests.factories import assert_error, bearer, register, staff
from tests.notify_gateways import SmsGateway, SmtpCapture
from tests.world import Account

API = "/api/v1"
RETRY_BASE = 10
MAX_ATTEMPTS = 4
GATEWAY_TOKEN = "gateway-token-1"
TEMP_PASSWORD = "Qz7-vRt-4Lm"
WHEN = datetime(2026, 12, 3, 11, 30, tzinfo=UTC)  # 14:30 in Moscow


# ── fixtures ────────────────────────────────────────────────────────────────────────


@pytest.fixture
def sms_backend() -> str:
    """The SMS backend of a test; parametrize it to change it."""
    return "http"


@pytest.fixture
def mode() -> str:
    """The mode of a test's server; parametrize it to change it."""
    return "development"


@pytest.fixture
def settings_overrides(
    gateway: tuple[SmsGateway, str], smtp: tuple[SmtpCapture, int], sms_backend: str, mode: str
) -> dict[str, Any]:
    return {
        "mode": mode,
        "sms_backend": sms_backend,
        "sms_http_url": gateway[1],
        "sms_http_token": GATEWAY_TOKEN,
        "sms_http_timeout_seconds": 0.5,
        "email_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp[1],
        "email_from": "Телемед <no-reply@telemed.example.ru>",
        "outbox_retry_base_seconds": RETRY_BASE,
        "outbox_max_attempts": MAX_ATTEMPTS,
        "worker_interval_seconds": 0,  # the tests run the rounds themselves
    }


# ── helpers ─────────────────────────────────────────────────────────────────────────


async def notify(
    app: web.Application, user_id: str | uuid.UUID, kind: NotificationKind, **kwargs: Any
) -> Notification:
    """``do_notify`` in a transaction of its own, as a service's caller would."""
    params: Mapping[str, object] = kwargs.pop("params", {"when": WHEN})
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        user = await session.get(User, uuid.UUID(str(user_id)))
        assert user is not None
        return await do_notify(
            session,
            now=app[keys.CLOCK].now(),
            user=user,
            kind=kind,
            params=params,
            brand="Телемед",
            **kwargs,
        )


async def outbox_rows(app: web.Application) -> list[OutboxMessage]:
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        rows = await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.created_at)))
        return list(rows.all())


async def the_message(app: web.Application) -> OutboxMessage:
    rows = await outbox_rows(app)
    assert len(rows) == 1, rows
    return rows[0]


async def get(client: AppClient, path: str, token: str, **params: str) -> Any:
    response = await client.get(API + path, headers=bearer(token), params=params)
    body = await response.json()
    assert response.status == 200, body
    return body


async def patient(client: AppClient, **fields: Any) -> Account:
    """A registered patient: ``{token, user}``."""
    return await register(client, **fields)


# ── the bell ────────────────────────────────────────────────────────────────────────


async def test_in_app_notifications_list_and_mark_read(
    client: AppClient, app: web.Application, clock: FakeClock
) -> None:
    alice, bob = await patient(client), await patient(client)
    first = await notify(app, alice["user"]["id"], NotificationKind.SCHEDULED)
    clock.advance(timedelta(minutes=5))
    second = await notify(
        app, alice["user"]["id"], NotificationKind.CONCLUSION_ISSUED, params={"doctor": "Иванов"}
    )
    await notify(app, bob["user"]["id"], NotificationKind.CANCELLED, params={})

    bell = await get(client, "/notifications", alice["token"])
    assert [n["id"] for n in bell["items"]] == [str(second.id), str(first.id)]  # newest first
    assert bell["unread"] == 2
    scheduled = bell["items"][1]
    assert scheduled["kind"] == "scheduled"
    assert scheduled["title"] == "Консультация назначена"
    assert "3 декабря 2026 г., 14:30 (Москва)" in scheduled["body"]
    assert scheduled["data"] == {"when": WHEN.isoformat()}
    assert scheduled["read_at"] is None
    assert set(scheduled) == {
        "id",
        "kind",
        "consultation_id",
        "title",
        "body",
        "data",
        "created_at",
        "read_at",
    }

    # Bob cannot read (or even find) Alice's notification; nothing changes.
    stolen = await client.post(f"{API}/notifications/{first.id}/read", headers=bearer(bob["token"]))
    await assert_error(stolen, 404, "not_found")
    nonsense = await client.post(f"{API}/notifications/nope/read", headers=bearer(bob["token"]))
    await assert_error(nonsense, 404, "not_found")
    assert (await get(client, "/notifications", alice["token"]))["unread"] == 2
    anonymous = await client.get(f"{API}/notifications")
    await assert_error(anonymous, 401, "unauthenticated")

    clock.advance(timedelta(minutes=1))
    read = await client.post(f"{API}/notifications/{first.id}/read", headers=bearer(alice["token"]))
    assert read.status == 200
    marked = await read.json()
    assert marked["id"] == str(first.id)
    assert marked["read_at"] is not None
    # Reading again keeps the first time.
    clock.advance(timedelta(minutes=1))
    again = await client.post(
        f"{API}/notifications/{first.id}/read", headers=bearer(alice["token"])
    )
    assert (await again.json())["read_at"] == marked["read_at"]

    unread = await get(client, "/notifications", alice["token"], unread="true")
    assert [n["id"] for n in unread["items"]] == [str(second.id)]
    assert unread["unread"] == 1
    limited = await get(client, "/notifications", alice["token"], limit="1")
    assert len(limited["items"]) == 1

    done = await client.post(f"{API}/notifications/read-all", headers=bearer(alice["token"]))
    assert done.status == 204
    assert (await get(client, "/notifications", alice["token"]))["unread"] == 0
    # Bob's stay unread.
    assert (await get(client, "/notifications", bob["token"]))["unread"] == 1
    bad = await client.get(f"{API}/notifications", headers=bearer(bob["token"]), params={"x": "1"})
    await assert_error(bad, 400, "invalid_input")


async def test_texts_follow_the_users_locale_and_time_zone(
    client: AppClient, app: web.Application
) -> None:
    russian = await patient(client)
    english = await patient(client, locale="en")
    moved = await client.patch(
        f"{API}/me", json={"time_zone": "Asia/Yekaterinburg"}, headers=bearer(english["token"])
    )
    assert moved.status == 200, await moved.text()
    params = {"when": WHEN, "doctor": "Соколова Анна Викторовна"}
    for who in (russian, english):
        await notify(app, who["user"]["id"], NotificationKind.SCHEDULED, params=params, sms=True)

    ru_item = (await get(client, "/notifications", russian["token"]))["items"][0]
    en_item = (await get(client, "/notifications", english["token"]))["items"][0]
    assert ru_item["title"] == "Консультация назначена"
    assert ru_item["body"].startswith(
        "Онлайн-консультация назначена на 3 декабря 2026 г., 14:30 (Москва). "
        "Врач: Соколова Анна Викторовна."
    )
    assert en_item["title"] == "Consultation scheduled"
    assert en_item["body"].startswith(
        "Your online consultation is scheduled for 3 December 2026, 16:30 (Yekaterinburg)."
    )
    sms = {m.recipient: m.body for m in await outbox_rows(app)}
    assert sms[russian["user"]["phone"]] == (
        "Телемед: консультация назначена на 03.12 в 14:30 (МСК)."
    )
    assert sms[english["user"]["phone"]] == (
        "Телемед: your consultation is scheduled for 3 Dec, 16:30 (Yekaterinburg)."
    )


# ── the outbox, masked ──────────────────────────────────────────────────────────────


async def test_sms_with_a_password_is_masked_for_staff_logs_and_the_database(
    client: AppClient,
    app: web.Application,
    gateway: tuple[SmsGateway, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The database drivers log statements with their parameters at DEBUG; production
    # keeps them quiet (telemed.logs), and so does this test. Our own code logs at DEBUG.
    for driver in ("sqlalchemy.engine", "aiosqlite", "asyncpg"):
        caplog.set_level(logging.WARNING, logger=driver)
    caplog.set_level(logging.DEBUG)  # last: it also sets the capturing handler's level
    gw = gateway[0]
    referred = await patient(client)
    phone = referred["user"]["phone"]
    manager = (await staff(client, Role.MANAGER))["token"]
    doctor = (await staff(client, Role.DOCTOR))["token"]
    params = {"url": "https://telemed.example.ru/", "login": phone, "password": TEMP_PASSWORD}
    note = await notify(
        app,
        referred["user"]["id"],
        NotificationKind.REFERRAL_CREDENTIALS,
        params=params,
        sms=True,
        secrets=[TEMP_PASSWORD],
    )
    assert TEMP_PASSWORD not in note.body
    assert "password" not in note.data

    listed = await client.get(f"{API}/outbox", headers=bearer(manager))
    text = await listed.text()
    assert listed.status == 200, text
    assert TEMP_PASSWORD not in text
    [item] = (await listed.json())["items"]
    assert item["channel"] == "sms"
    assert item["kind"] == "referral_credentials"
    assert item["recipient"] == phone
    assert item["status"] == "pending"
    assert item["attempts"] == 0
    assert item["body"] == (
        "Телемед: направление в центр, свяжутся за 2–4 дня. https://telemed.example.ru/ "
        f"логин {phone} пароль {MASK}"
    )
    assert set(item) == {
        "id",
        "channel",
        "kind",
        "recipient",
        "subject",
        "body",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
        "next_attempt_at",
        "kept_text",
        "provider_message_id",
        "delivery_status",
    }
    assert item["kept_text"] is None  # a gateway is configured: nothing is kept
    # An admin may read the outbox; patients and doctors may not.
    admin = (await staff(client, Role.ADMIN))["token"]
    assert len((await get(client, "/outbox", admin))["items"]) == 1
    for token in (referred["token"], doctor):
        await assert_error(
            await client.get(f"{API}/outbox", headers=bearer(token)), 403, "forbidden"
        )
    bell = await get(client, "/notifications", referred["token"])
    assert TEMP_PASSWORD not in str(bell)
    assert MASK in bell["items"][0]["body"]

    # Delivery: the patient's phone gets the clear text, through the gateway.
    done = await run_jobs_once(app)
    assert done["deliver_outbox"] == 1
    [delivered] = gw.delivered
    assert delivered == {"to": phone, "text": delivered["text"], "id": item["id"]}
    assert delivered["text"].endswith(f"пароль {TEMP_PASSWORD}")
    assert gw.authorizations == [f"Bearer {GATEWAY_TOKEN}"]

    # After sending, no copy of the password is left in the database.
    row = await the_message(app)
    assert row.status is OutboxStatus.SENT
    assert row.sent_at is not None
    assert row.attempts == 1
    assert row.body == row.body_masked
    assert row.claimed_by == app[keys.NODE_ID]
    assert row.claimed_until is None
    assert TEMP_PASSWORD not in str(row.model_dump())
    sent = await get(client, "/outbox", manager, status="sent", channel="sms")
    assert [m["id"] for m in sent["items"]] == [item["id"]]
    assert (await get(client, "/outbox", manager, status="pending"))["items"] == []
    assert (await get(client, "/outbox", manager, channel="email"))["items"] == []

    assert caplog.records
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (TEMP_PASSWORD, phone, phone[2:], "направили"):
        assert secret not in logged


@pytest.mark.parametrize("sms_backend", ["outbox"])
async def test_outbox_backend_keeps_the_message_readable_in_development(
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    gateway: tuple[SmsGateway, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No gateway (``./dev run``, a demo): the SMS is kept, not sent, and the manager
    reads it whole, password included, to pass it on. The logs still never see it."""
    caplog.set_level(logging.INFO, logger="telemed")
    someone = await patient(client)
    phone = someone["user"]["phone"]
    manager = (await staff(client, Role.MANAGER))["token"]
    params = {"url": "https://t.example/", "login": phone, "password": TEMP_PASSWORD}
    kind = NotificationKind.REFERRAL_CREDENTIALS
    await notify(app, someone["user"]["id"], kind, params=params, sms=True, secrets=[TEMP_PASSWORD])
    # Not kept yet: pending, masked like any message.
    [pending] = (await get(client, "/outbox", manager))["items"]
    assert (pending["status"], pending["kept_text"]) == ("pending", None)

    await run_jobs_once(app)
    row = await the_message(app)
    assert row.status is OutboxStatus.KEPT
    assert (row.attempts, row.sent_at, row.last_error) == (1, None, None)
    assert TEMP_PASSWORD in row.body  # the outbox stands in for the gateway
    assert gateway[0].requests == 0  # nothing left the server
    [item] = (await get(client, "/outbox", manager, status="kept"))["items"]
    assert item["status"] == "kept"
    assert item["sent_at"] is None
    assert TEMP_PASSWORD not in item["body"]
    assert MASK in item["body"]
    assert item["kept_text"] == item["body"].replace(MASK, TEMP_PASSWORD)
    assert (await get(client, "/outbox", manager, status="sent"))["items"] == []
    # A message with nothing masked has nothing more to show.
    clock.advance(timedelta(minutes=1))
    await notify(app, someone["user"]["id"], NotificationKind.SCHEDULED, sms=True)
    await run_jobs_once(app)
    plain = (await get(client, "/outbox", manager, status="kept"))["items"][0]
    assert (plain["kind"], plain["kept_text"]) == ("scheduled", None)
    # Kept again: the message is final, later rounds leave it alone.
    assert (await run_jobs_once(app))["deliver_outbox"] == 0

    lines = [r.getMessage() for r in caplog.records if r.name == "telemed.notify.senders"]
    assert len(lines) == 2
    assert str(row.id) in lines[0]
    assert "sms" in lines[0]
    assert "referral_credentials" in lines[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TEMP_PASSWORD, phone, phone[2:], "направили"):
        assert secret not in logged


@pytest.mark.parametrize("sms_backend", ["outbox"])
@pytest.mark.parametrize("mode", ["production"])
async def test_in_production_a_kept_message_is_masked_like_a_sent_one(
    client: AppClient, app: web.Application, gateway: tuple[SmsGateway, str]
) -> None:
    someone = await patient(client)
    manager = (await staff(client, Role.MANAGER))["token"]
    params = {"url": "https://t.example/", "login": "x", "password": TEMP_PASSWORD}
    kind = NotificationKind.REFERRAL_CREDENTIALS
    await notify(app, someone["user"]["id"], kind, params=params, sms=True, secrets=[TEMP_PASSWORD])
    await run_jobs_once(app)
    row = await the_message(app)
    assert row.status is OutboxStatus.KEPT
    assert row.body == row.body_masked
    assert TEMP_PASSWORD not in str(row.model_dump())
    [item] = (await get(client, "/outbox", manager))["items"]
    assert (item["status"], item["kept_text"]) == ("kept", None)
    assert gateway[0].requests == 0


@pytest.mark.parametrize("sms_backend", ["outbox"])
async def test_production_masks_what_a_development_outbox_kept(
    client: AppClient,
    app: web.Application,
    settings: Settings,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same database, first run in development mode (clear texts kept), then in
    production: its first round masks them, and the outbox shows none."""
    someone = await patient(client)
    params = {"url": "https://t.example/", "login": "x", "password": TEMP_PASSWORD}
    kind = NotificationKind.REFERRAL_CREDENTIALS
    await notify(app, someone["user"]["id"], kind, params=params, sms=True, secrets=[TEMP_PASSWORD])
    await run_jobs_once(app)
    assert TEMP_PASSWORD in (await the_message(app)).body

    production = create_app(settings.model_copy(update={"mode": "production"}), clock=clock)
    async with TestClient(TestServer(production)) as other:
        manager = (await staff(other, Role.MANAGER))["token"]
        await run_jobs_once(production)
        [item] = (await get(other, "/outbox", manager))["items"]
        assert (item["status"], item["kept_text"]) == ("kept", None)
    row = await the_message(app)
    assert row.body == row.body_masked
    assert TEMP_PASSWORD not in str(row.model_dump())
    assert "masked the clear text of 1 kept messages" in caplog.text


# ── retries ─────────────────────────────────────────────────────────────────────────


async def test_failed_sends_are_retried_with_back_off(
    client: AppClient, app: web.Application, clock: FakeClock, gateway: tuple[SmsGateway, str]
) -> None:
    gw = gateway[0]
    gw.fail_next = 2
    someone = await patient(client)
    await notify(app, someone["user"]["id"], NotificationKind.REMINDER_1H, sms=True)
    start = clock.now()

    await run_jobs_once(app)
    row = await the_message(app)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert row.next_attempt_at == start + timedelta(seconds=RETRY_BASE)
    assert row.last_error == "SMS gateway answered HTTP 500"
    assert row.claimed_until is None

    # Not due yet: nothing is tried.
    clock.advance(timedelta(seconds=RETRY_BASE - 1))
    assert (await run_jobs_once(app))["deliver_outbox"] == 0
    assert gw.requests == 1

    clock.advance(timedelta(seconds=1))
    await run_jobs_once(app)
    row = await the_message(app)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 2)
    # The wait doubles.
    assert row.next_attempt_at == clock.now() + timedelta(seconds=2 * RETRY_BASE)

    clock.advance(timedelta(seconds=2 * RETRY_BASE - 1))
    assert (await run_jobs_once(app))["deliver_outbox"] == 0
    clock.advance(timedelta(seconds=1))
    await run_jobs_once(app)
    row = await the_message(app)
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 3)
    assert row.sent_at == clock.now()
    assert row.last_error is None
    assert gw.requests == 3
    assert [d["id"] for d in gw.delivered] == [str(row.id)]

    # Sent is final: later rounds leave it alone.
    clock.advance(timedelta(days=1))
    await run_jobs_once(app)
    assert gw.requests == 3


async def test_a_hanging_gateway_times_out_and_the_message_is_retried(
    client: AppClient, app: web.Application, clock: FakeClock, gateway: tuple[SmsGateway, str]
) -> None:
    gw = gateway[0]
    gw.hang = True
    someone = await patient(client)
    await notify(app, someone["user"]["id"], NotificationKind.SCHEDULED, sms=True)
    await run_jobs_once(app)
    row = await the_message(app)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert row.last_error == "SMS gateway did not answer within 0.5 s"
    assert gw.delivered == []

    gw.hang = False
    clock.advance(timedelta(seconds=RETRY_BASE))
    await run_jobs_once(app)
    row = await the_message(app)
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 2)
    assert [d["id"] for d in gw.delivered] == [str(row.id)]


async def test_a_message_fails_for_good_after_the_last_attempt(
    client: AppClient, app: web.Application, clock: FakeClock, gateway: tuple[SmsGateway, str]
) -> None:
    gw = gateway[0]
    gw.fail_next = 1000
    someone = await patient(client)
    manager = (await staff(client, Role.MANAGER))["token"]
    await notify(
        app,
        someone["user"]["id"],
        NotificationKind.REFERRAL_CREDENTIALS,
        params={"url": "https://t.example/", "login": "x", "password": TEMP_PASSWORD},
        sms=True,
        secrets=[TEMP_PASSWORD],
    )
    waits = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        await run_jobs_once(app)
        row = await the_message(app)
        assert row.attempts == attempt
        if attempt < MAX_ATTEMPTS:
            assert row.status is OutboxStatus.PENDING
            waits.append(row.next_attempt_at - clock.now())
            clock.advance(row.next_attempt_at - clock.now())
    assert waits == [timedelta(seconds=RETRY_BASE * 2**n) for n in range(MAX_ATTEMPTS - 1)]
    assert row.status is OutboxStatus.FAILED
    assert row.last_error == "SMS gateway answered HTTP 500"
    assert row.sent_at is None
    assert TEMP_PASSWORD not in row.body  # given up: the password is dropped too
    assert gw.requests == MAX_ATTEMPTS

    clock.advance(timedelta(days=2))
    await run_jobs_once(app)
    assert gw.requests == MAX_ATTEMPTS
    failed = await get(client, "/outbox", manager, status="failed")
    assert [(m["id"], m["attempts"]) for m in failed["items"]] == [(str(row.id), MAX_ATTEMPTS)]


async def test_concurrent_claims_never_share_a_message(
    client: AppClient, app: web.Application, clock: FakeClock
) -> None:
    someone = await patient(client)
    for _ in range(30):
        await notify(app, someone["user"]["id"], NotificationKind.SCHEDULED, sms=True)
    now = clock.now()

    async def claim_as(node: str) -> list[uuid.UUID]:
        async with db.transaction(app[keys.SESSION_FACTORY]) as session:
            until = now + timedelta(minutes=5)
            won = await claim(session, node=node, now=now, until=until, limit=20)
            return [message.id for message in won]

    first, second = await asyncio.gather(claim_as("node-a"), claim_as("node-b"))
    assert not set(first) & set(second)
    assert len(first) + len(second) >= 20
    rest = await claim_as("node-c")
    claimed = first + second + rest
    assert len(claimed) == len(set(claimed)) == 30
    assert await claim_as("node-d") == []
    owners = {row.id: row.claimed_by for row in await outbox_rows(app)}
    for node, ids in (("node-a", first), ("node-b", second), ("node-c", rest)):
        assert {owners[i] for i in ids} <= {node}


async def test_a_lapsed_claim_is_taken_over(
    client: AppClient, app: web.Application, clock: FakeClock, gateway: tuple[SmsGateway, str]
) -> None:
    someone = await patient(client)
    await notify(app, someone["user"]["id"], NotificationKind.SCHEDULED, sms=True)
    # Another node claims the message and dies before sending it.
    now = clock.now()
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        until = now + timedelta(minutes=2)
        won = await claim(session, node="dead-node", now=now, until=until, limit=5)
    assert len(won) == 1
    assert (await run_jobs_once(app))["deliver_outbox"] == 0
    clock.advance(timedelta(minutes=2))
    assert (await run_jobs_once(app))["deliver_outbox"] == 0  # the lease holds to its end
    clock.advance(timedelta(seconds=1))
    assert (await run_jobs_once(app))["deliver_outbox"] == 1
    row = await the_message(app)
    assert (row.status, row.claimed_by) == (OutboxStatus.SENT, app[keys.NODE_ID])
    assert len(gateway[0].delivered) == 1


# ── e-mail ──────────────────────────────────────────────────────────────────────────


def unfold(data: bytes) -> list[str]:
    """Content lines of an iCalendar stream (RFC 5545 §3.1), checking the wire format."""
    assert data.endswith(b"\r\n")
    physical = data[:-2].split(b"\r\n")
    for line in physical:
        assert len(line) <= 75, line
        line.decode("utf-8")  # a fold never splits a character
        assert b"\n" not in line
        assert b"\r" not in line
    lines: list[bytes] = []
    for line in physical:
        if line.startswith(b" "):
            lines[-1] += line[1:]
        else:
            lines.append(line)
    return [line.decode("utf-8") for line in lines]


def unescape(value: str) -> str:
    return re.sub(r"\\([\\;,nN])", lambda m: "\n" if m[1] in "nN" else m[1], value)


def properties(data: bytes) -> dict[str, str]:
    """The VEVENT's properties (name → raw value), and METHOD."""
    result: dict[str, str] = {}
    for line in unfold(data):
        name, _, value = line.partition(":")
        if name not in ("BEGIN", "END"):
            result[name] = value
    return result


async def test_email_with_an_ics_invitation_reaches_a_real_smtp_server(
    client: AppClient, app: web.Application, clock: FakeClock, smtp: tuple[SmtpCapture, int]
) -> None:
    capture = smtp[0]
    someone = await patient(client, email="maria@example.ru")
    consultation_uid = f"{uuid.uuid4()}@telemed"
    invitation = ics.consultation_event(
        uid=consultation_uid,
        starts_at=WHEN,
        ends_at=WHEN + timedelta(minutes=30),
        summary="Онлайн-консультация: Соколова Анна Викторовна",
        description="Кардиоцентр; кабинет №2, второй этаж",
        url="https://telemed.example.ru/consultations/1",
        sequence=0,
        now=clock.now(),
    )
    await notify(
        app,
        someone["user"]["id"],
        NotificationKind.SCHEDULED,
        params={"when": WHEN, "doctor": "Соколова Анна Викторовна"},
        email=True,
        attachments=[Attachment("consultation.ics", ics.content_type(cancelled=False), invitation)],
    )
    [queued] = await outbox_rows(app)
    assert queued.channel is OutboxChannel.EMAIL
    assert queued.recipient == "maria@example.ru"

    await run_jobs_once(app)
    assert capture.recipients == [["maria@example.ru"]]
    [raw] = capture.messages
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == "Консультация назначена"
    assert mail["To"] == "maria@example.ru"
    assert "no-reply@telemed.example.ru" in mail["From"]
    assert mail["Message-ID"]
    text_part = mail.get_body(preferencelist=("plain",))
    assert text_part is not None
    assert text_part.get_content_charset() == "utf-8"
    text = text_part.get_content()
    assert "Онлайн-консультация назначена на 3 декабря 2026 г., 14:30 (Москва)." in text
    assert "Телемед" in text
    [calendar] = [
        part for part in mail.iter_attachments() if part.get_content_type() == "text/calendar"
    ]
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_filename() == "consultation.ics"
    payload = calendar.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload == invitation
    event = properties(payload)
    assert event["UID"] == consultation_uid
    assert event["DTSTART"] == "20261203T113000Z"
    assert unescape(event["SUMMARY"]) == "Онлайн-консультация: Соколова Анна Викторовна"

    row = await the_message(app)
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 1)


async def test_no_email_for_a_user_without_an_address(
    client: AppClient, app: web.Application
) -> None:
    someone = await patient(client)
    note = await notify(app, someone["user"]["id"], NotificationKind.SCHEDULED, email=True)
    assert await outbox_rows(app) == []
    bell = await get(client, "/notifications", someone["token"])
    assert [n["id"] for n in bell["items"]] == [str(note.id)]


# ── de-duplication ──────────────────────────────────────────────────────────────────


async def test_a_dedupe_key_notifies_once(
    client: AppClient, app: web.Application, gateway: tuple[SmsGateway, str]
) -> None:
    someone = await patient(client, email="once@example.ru")
    key = f"scheduled:{uuid.uuid4()}:1"
    first = await notify(
        app, someone["user"]["id"], NotificationKind.SCHEDULED, sms=True, email=True, dedupe_key=key
    )
    again = await notify(
        app, someone["user"]["id"], NotificationKind.SCHEDULED, sms=True, email=True, dedupe_key=key
    )
    assert again.id == first.id
    bell = await get(client, "/notifications", someone["token"])
    assert len(bell["items"]) == 1
    assert bell["items"][0]["data"]["dedupe_key"] == key
    rows = await outbox_rows(app)
    assert sorted((r.channel.value, r.dedupe_key) for r in rows) == [
        ("email", f"{key}:email"),
        ("sms", f"{key}:sms"),
    ]
    await run_jobs_once(app)
    assert len(gateway[0].delivered) == 1


async def test_a_taken_outbox_key_does_not_break_the_callers_transaction(
    client: AppClient, app: web.Application
) -> None:
    # The outbox keys are unique across users. When one is taken (here by a caller that
    # forgot to put the user in the key), the insert is rolled back to a savepoint and
    # the rest of the caller's transaction still commits.
    alice, bob = await patient(client), await patient(client)
    key = f"event:{uuid.uuid4()}"
    await notify(app, alice["user"]["id"], NotificationKind.SCHEDULED, sms=True, dedupe_key=key)
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        user = await session.get(User, uuid.UUID(bob["user"]["id"]))
        assert user is not None
        now = app[keys.CLOCK].now()
        params = {"when": WHEN}
        kind = NotificationKind.SCHEDULED
        await do_notify(
            session, brand="Телемед", now=now, user=user, kind=kind, params=params, sms=True
        )
        await do_notify(
            session,
            brand="Телемед",
            now=now,
            user=user,
            kind=kind,
            params=params,
            sms=True,
            dedupe_key=key,
        )
        await do_notify(session, brand="Телемед", now=now, user=user, kind=kind, params=params)
    bell = await get(client, "/notifications", bob["token"])
    assert len(bell["items"]) == 3
    recipients = [row.recipient for row in await outbox_rows(app)]
    assert sorted(recipients) == sorted([alice["user"]["phone"], bob["user"]["phone"]])


# ── texts (pure) ────────────────────────────────────────────────────────────────────

ALL_PARAMS: dict[str, object] = {
    "when": WHEN,
    "previous_when": WHEN - timedelta(days=1),
    "due": WHEN,
    "doctor": "Соколова Анна Викторовна",
    "centre": "Областной кардиоцентр",
    "reason": "Врач заболел",
    "url": "https://telemed.example.ru/",
    "login": "+79121234567",
    "password": TEMP_PASSWORD,
    "code": "482913",
    "expires": WHEN,
    "count": 12,
}
WITH_LINKS = {
    NotificationKind.REFERRAL_CREDENTIALS,
    NotificationKind.NEW_CREDENTIALS,
    NotificationKind.REMINDER_1H,
}


@pytest.mark.parametrize("locale", ["ru", "en"])
@pytest.mark.parametrize("kind", list(NotificationKind))
def test_every_kind_has_a_short_sms_and_a_text_in_both_languages(
    kind: NotificationKind, locale: str
) -> None:
    text = render(
        kind, locale=locale, params=ALL_PARAMS, brand="Телемед", time_zone="Europe/Moscow"
    )
    assert 0 < len(text.title) <= 60
    assert text.body
    assert text.sms
    assert text.sms.startswith("Телемед: ")  # the service's name (TELEMED_BRAND_NAME) first
    # Russian texts are in Russian; English ones carry Russian only in the params (names)
    # and the service's name.
    own_words = (text.title + text.body + text.sms).replace("Телемед", "")
    for value in ALL_PARAMS.values():
        own_words = own_words.replace(str(value), "")
    has_cyrillic = re.search("[а-яё]", own_words, re.IGNORECASE) is not None
    assert has_cyrillic is (locale == "ru")
    # One SMS segment: 70 Cyrillic characters (UCS-2) or 160 Latin ones; links and
    # credentials need more.
    if kind not in WITH_LINKS:
        assert len(text.sms) <= (70 if locale == "ru" else 160), text.sms
    else:
        assert len(text.sms) <= 200, text.sms


def test_texts_without_optional_params_and_with_missing_ones() -> None:
    bare = render(
        NotificationKind.CANCELLED,
        locale="ru",
        params={},
        brand="Телемед",
        time_zone="Europe/Moscow",
    )
    assert bare.body == "Онлайн-консультация отменена. Подробности — в личном кабинете."
    assert bare.sms == "Телемед: консультация отменена."
    with pytest.raises(ValueError, match="when"):
        render(
            NotificationKind.SCHEDULED,
            locale="ru",
            params={},
            brand="Телемед",
            time_zone="Europe/Moscow",
        )
    # An amended conclusion says so.
    amended = render(
        NotificationKind.CONCLUSION_ISSUED,
        locale="ru",
        params={"version": 2},
        brand="Телемед",
        time_zone="UTC",
    )
    assert amended.title == "Заключение обновлено"
    # A referral text carries the credentials to the patient (masked elsewhere).
    referral = render(
        NotificationKind.REFERRAL_CREDENTIALS,
        locale="ru",
        params=ALL_PARAMS,
        brand="Телемед",
        time_zone="UTC",
    )
    assert referral.sms == (
        "Телемед: направление в Областной кардиоцентр, свяжутся за 2–4 дня. "
        f"https://telemed.example.ru/ логин +79121234567 пароль {TEMP_PASSWORD}"
    )
    # Two Cyrillic SMS segments (67 characters each) however long the centre's name.
    long_name = {
        **ALL_PARAMS,
        "centre": "ГАУЗ СО «Свердловская областная клиническая больница № 1»",
    }
    shortened = render(
        NotificationKind.REFERRAL_CREDENTIALS,
        locale="ru",
        params=long_name,
        brand="Телемед",
        time_zone="UTC",
    ).sms
    assert len(shortened) <= 134
    assert "ГАУЗ СО «Свердловская" in shortened
    assert "…" in shortened
    assert "2–4 дня" in shortened
    assert f"Пароль: {TEMP_PASSWORD}" in referral.body


@pytest.mark.parametrize(
    ("time_zone", "locale", "full", "short"),
    [
        ("Europe/Moscow", "ru", "3 декабря 2026 г., 14:30 (Москва)", "03.12 в 14:30 (МСК)"),
        ("Europe/Moscow", "en", "3 December 2026, 14:30 (Moscow)", "3 Dec, 14:30 (Moscow)"),
        (
            "Asia/Yekaterinburg",
            "ru",
            "3 декабря 2026 г., 16:30 (Екатеринбург)",
            "03.12 в 16:30 (МСК+2)",
        ),
        (
            "Europe/Kaliningrad",
            "ru",
            "3 декабря 2026 г., 13:30 (Калининград)",
            "03.12 в 13:30 (МСК−1)",
        ),
        ("Asia/Kolkata", "ru", "3 декабря 2026 г., 17:00 (UTC+5:30)", "03.12 в 17:00 (UTC+5:30)"),
        ("America/New_York", "en", "3 December 2026, 06:30 (New York)", "3 Dec, 06:30 (New York)"),
        ("Not/AZone", "ru", "3 декабря 2026 г., 14:30 (UTC+3)", "03.12 в 14:30 (UTC+3)"),
    ],
)
def test_times_are_written_in_the_users_zone(
    time_zone: str, locale: str, full: str, short: str
) -> None:
    assert format_datetime(WHEN, locale=locale, time_zone=time_zone) == full
    assert format_short(WHEN, locale=locale, time_zone=time_zone) == short


# ── .ics (pure) ─────────────────────────────────────────────────────────────────────


def test_ics_event_is_rfc5545() -> None:
    description = "Кардиоцентр, кабинет 2; возьмите выписку\\ЭКГ.\nВторая строка " + "ж" * 80
    data = ics.consultation_event(
        uid="c0ffee@telemed",
        starts_at=datetime(2026, 12, 3, 14, 30, tzinfo=ZoneInfo("Europe/Moscow")),
        ends_at=WHEN + timedelta(minutes=30),
        summary="Онлайн-консультация",
        description=description,
        url="https://telemed.example.ru/consultations/c0ffee?a=1,2",
        sequence=3,
        now=WHEN - timedelta(days=1),
    )
    lines = unfold(data)
    assert lines[:2] == ["BEGIN:VCALENDAR", "VERSION:2.0"]
    assert lines[-1] == "END:VCALENDAR"
    assert lines.count("BEGIN:VEVENT") == 1
    assert b"\r\n " in data  # the long description was folded
    assert data.count(b"\n") == data.count(b"\r\n")
    event = properties(data)
    assert event["PRODID"].startswith("-//Telemed//")
    assert event["METHOD"] == "REQUEST"
    assert event["STATUS"] == "CONFIRMED"
    assert event["DTSTART"] == "20261203T113000Z"  # 14:30 Moscow in UTC
    assert event["DTEND"] == "20261203T120000Z"
    assert event["DTSTAMP"] == "20261202T113000Z"
    assert event["SEQUENCE"] == "3"
    assert event["URL"] == "https://telemed.example.ru/consultations/c0ffee?a=1,2"
    assert unescape(event["DESCRIPTION"]) == description
    assert "\\;" in event["DESCRIPTION"]
    assert "\\," in event["DESCRIPTION"]
    assert "\\n" in event["DESCRIPTION"]
    assert "\\\\" in event["DESCRIPTION"]

    cancel = properties(
        ics.consultation_event(
            uid="c0ffee@telemed",
            starts_at=WHEN,
            ends_at=WHEN + timedelta(minutes=30),
            summary="S",
            description="",
            url=None,
            sequence=4,
            cancelled=True,
            now=WHEN,
        )
    )
    assert (cancel["METHOD"], cancel["STATUS"], cancel["SEQUENCE"]) == ("CANCEL", "CANCELLED", "4")
    assert "URL" not in cancel


def test_ics_folds_multibyte_text_on_character_boundaries() -> None:
    for size in range(60, 80):
        line = "DESCRIPTION:" + "я" * size + "€😀"
        folded = ics.fold(line)
        for piece in folded[:-2].split(b"\r\n"):
            assert len(piece) <= 75
            piece.decode("utf-8")
        assert folded[:-2].replace(b"\r\n ", b"").decode("utf-8") == line


def test_ics_refuses_impossible_events() -> None:
    with pytest.raises(ValueError, match="after"):
        ics.consultation_event(
            uid="u",
            starts_at=WHEN,
            ends_at=WHEN,
            summary="",
            description="",
            url=None,
            sequence=0,
            now=WHEN,
        )
    with pytest.raises(ValueError, match="naive"):
        ics.consultation_event(
            uid="u",
            starts_at=WHEN.replace(tzinfo=None),
            ends_at=WHEN.replace(tzinfo=None) + timedelta(hours=1),
            summary="",
            description="",
            url=None,
            sequence=0,
            now=WHEN,
        )
