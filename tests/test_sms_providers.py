"""SMS through SMS.ru, SMSC.ru and SMS Aero: each sender against a local server that
answers as the provider's documentation says (``tests/sms_providers.py``): success with
Cyrillic text and the sender name, every documented error class mapped to retry or give
up, time-outs, delivery status; then through the outbox worker and the server, on SQLite
and PostgreSQL: sent with the provider's id, given up at once, retried, the delivery
status asked until final, and nothing of the patient in the logs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError
from sqlmodel import col, select

from telemed import db, keys
from telemed.accounts.models import Role, User
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from telemed.notify.models import OutboxChannel, OutboxMessage, OutboxStatus
from telemed.notify.outcomes import DeliveryError, DeliveryStatus, PermanentDeliveryError, Sent
from telemed.notify.senders import build_senders
from telemed.notify.service import MASK, do_notify
from telemed.notify.sms_providers import (
    ProviderSender,
    SmsAeroSender,
    SmscSender,
    SmsRuSender,
)
from telemed.notify.texts import NotificationKind
from telemed.notify.worker import DELIVERY_CHECK_EVERY, DELIVERY_CHECK_FOR
from telemed.settings import Settings, SmsBackend
from tests.conftest import AppClient
from tests.factories import bearer, register, staff
from tests.sms_providers import (
    NO_CREDITS,
    NUMBER,
    PHONE,
    VALIDATION,
    FakeProvider,
    FakeSmsAero,
    FakeSmsc,
    FakeSmsRu,
)

TEXT = "Телемед: консультация 3 декабря в 14:30. Ссылка: https://t.example/c/1 — ждём вас!"
SENDER = "Telemed"
TEMP_PASSWORD = "Qz7-vRt-4Lm"
RETRY_BASE = 10
MAX_ATTEMPTS = 4

Pair = tuple[FakeProvider, ProviderSender]


def message(body: str = TEXT, recipient: str = PHONE) -> OutboxMessage:
    """An outbox row as the worker hands it to a sender (not stored)."""
    now = datetime.now(UTC)
    return OutboxMessage(
        channel=OutboxChannel.SMS,
        recipient=recipient,
        body=body,
        body_masked=body,
        kind="scheduled",
        next_attempt_at=now,
        created_at=now,
    )


def make_sender(
    fake: FakeProvider, url: str, http: aiohttp.ClientSession, **overrides: Any
) -> ProviderSender:
    """The sender of ``fake``'s provider, with the credentials the fake expects."""
    options: dict[str, Any] = {"http": http, "base_url": url, "sender": SENDER, "timeout": 0.5}
    if isinstance(fake, FakeSmsRu):
        options |= {"api_key": fake.api_id}
    elif isinstance(fake, FakeSmsc):
        options |= {"login": fake.login, "api_key": fake.psw}
    else:
        assert isinstance(fake, FakeSmsAero)
        options |= {"login": fake.email, "api_key": fake.api_key}
    kinds: dict[type[FakeProvider], Callable[..., ProviderSender]] = {
        FakeSmsRu: SmsRuSender,
        FakeSmsc: SmscSender,
        FakeSmsAero: SmsAeroSender,
    }
    return kinds[type(fake)](**(options | overrides))


FAKES: dict[str, Callable[[], FakeProvider]] = {
    "smsru": FakeSmsRu,
    "smsc": FakeSmsc,
    "smsaero": FakeSmsAero,
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=list(FAKES))
async def provider(
    request: pytest.FixtureRequest, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[FakeProvider, str]]:
    """Each provider's fake, running, and its base URL."""
    fake = FAKES[request.param]()
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture
def pair(provider: tuple[FakeProvider, str], http: aiohttp.ClientSession) -> Pair:
    fake, url = provider
    return fake, make_sender(fake, url, http)


# ── each sender against its provider ────────────────────────────────────────────────


async def test_cyrillic_text_and_sender_name_arrive_intact(pair: Pair) -> None:
    fake, sender = pair
    sent = await sender.send(message())
    assert [(a.number, a.text, a.sender) for a in fake.accepted] == [(NUMBER, TEXT, SENDER)]
    assert sent == Sent(provider_id=fake.accepted[0].provider_id, status=sent.status)
    assert sent.status in (DeliveryStatus.ACCEPTED, DeliveryStatus.SENT)
    # A second message gets an id of its own.
    again = await sender.send(message("Второе сообщение"))
    assert again.provider_id != sent.provider_id
    assert fake.accepted[1].text == "Второе сообщение"


async def test_without_a_sender_name_the_accounts_default_is_used(
    provider: tuple[FakeProvider, str], http: aiohttp.ClientSession
) -> None:
    fake, url = provider
    await make_sender(fake, url, http, sender=None).send(message())
    # SMS.ru and SMSC.ru use the account's default name when none is sent; SMS Aero
    # needs one, and every account has "SMS Aero".
    expected = "SMS Aero" if isinstance(fake, FakeSmsAero) else None
    assert [a.sender for a in fake.accepted] == [expected]


async def test_wrong_credentials_are_given_up_at_once(
    provider: tuple[FakeProvider, str], http: aiohttp.ClientSession
) -> None:
    fake, url = provider
    sender = make_sender(fake, url, http, api_key="wrong-key")
    with pytest.raises(PermanentDeliveryError) as caught:
        await sender.send(message())
    assert str(caught.value) in {
        "SMS.ru error 200: wrong api_id",
        "SMSC.ru error 2: wrong login or password",
        "SMS Aero: wrong e-mail or API key (HTTP 401)",
    }
    assert fake.accepted == []


async def test_no_money_is_retried(pair: Pair) -> None:
    fake, sender = pair
    fake.errors = [{FakeSmsRu: 201, FakeSmsc: 3, FakeSmsAero: NO_CREDITS}[type(fake)]]
    with pytest.raises(DeliveryError) as caught:
        await sender.send(message())
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert "no money on the account" in str(caught.value)
    # Topped up: the next try goes out.
    await sender.send(message())
    assert len(fake.accepted) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_are_retried(pair: Pair, status: int) -> None:
    fake, sender = pair
    fake.http_errors = [status]
    with pytest.raises(DeliveryError) as caught:
        await sender.send(message())
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert str(caught.value) == f"{sender.title} answered HTTP {status}"
    assert fake.accepted == []


async def test_a_wrong_address_is_given_up(
    provider: tuple[FakeProvider, str], http: aiohttp.ClientSession
) -> None:
    fake, url = provider
    sender = make_sender(fake, url + "/nowhere", http)
    with pytest.raises(PermanentDeliveryError, match="answered HTTP 404"):
        await sender.send(message())


async def test_a_provider_that_does_not_answer_times_out_and_is_retried(pair: Pair) -> None:
    fake, sender = pair
    fake.hang = True
    with pytest.raises(DeliveryError) as caught:
        await sender.send(message())
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert str(caught.value) == f"{sender.title} did not answer within 0.5 s"


async def test_an_unreachable_provider_is_retried(http: aiohttp.ClientSession) -> None:
    fake = FakeSmsRu()
    async with fake.serve() as url:
        pass  # stopped: nothing listens there any more
    with pytest.raises(DeliveryError, match=r"^SMS\.ru unreachable \(Client"):
        await make_sender(fake, url, http).send(message())


@pytest.mark.parametrize(
    ("code", "permanent", "meaning"),
    [
        (202, True, "wrong recipient number, or no route to it"),  # under the number
        (207, True, "messages to this number are not allowed"),  # under the number
        (220, False, "service temporarily unavailable"),
        (230, False, "daily limit of messages to this number reached"),
        (500, False, "error on the provider's server"),
        (999, False, None),  # not documented: retried, as the attempts are bounded
    ],
)
async def test_smsru_error_codes(
    http: aiohttp.ClientSession, code: int, permanent: bool, meaning: str | None
) -> None:
    fake = FakeSmsRu(errors=[code])
    async with fake.serve() as url:
        with pytest.raises(DeliveryError) as caught:
            await make_sender(fake, url, http).send(message())
    assert isinstance(caught.value, PermanentDeliveryError) is permanent
    expected = f"SMS.ru error {code}: {meaning}" if meaning else "unknown code '999'"
    assert expected in str(caught.value)
    assert fake.accepted == []


async def test_smsru_refuses_a_sender_name_it_has_not_approved(
    http: aiohttp.ClientSession,
) -> None:
    fake = FakeSmsRu()
    async with fake.serve() as url:
        with pytest.raises(PermanentDeliveryError, match="error 204: sender name not approved"):
            await make_sender(fake, url, http, sender="Unknown").send(message())


@pytest.mark.parametrize(
    ("code", "permanent"), [(1, True), (4, False), (6, True), (7, True), (8, True), (9, False)]
)
async def test_smsc_error_codes(http: aiohttp.ClientSession, code: int, permanent: bool) -> None:
    fake = FakeSmsc(errors=[code])
    async with fake.serve() as url:
        with pytest.raises(DeliveryError) as caught:
            await make_sender(fake, url, http).send(message())
    assert isinstance(caught.value, PermanentDeliveryError) is permanent
    assert str(caught.value).startswith(f"SMSC.ru error {code}: ")
    assert fake.accepted == []


async def test_smsc_with_an_api_key_instead_of_login_and_password(
    http: aiohttp.ClientSession,
) -> None:
    fake = FakeSmsc()
    async with fake.serve() as url:
        sender = SmscSender(http=http, base_url=url, api_key=fake.apikey, sender=SENDER)
        sent = await sender.send(message())
        assert await sender.delivery_status(sent.provider_id, PHONE) is DeliveryStatus.ACCEPTED
    assert [a.text for a in fake.accepted] == [TEXT]


async def test_smsaero_refuses_invalid_fields_for_good(http: aiohttp.ClientSession) -> None:
    fake = FakeSmsAero(errors=[VALIDATION])
    async with fake.serve() as url:
        sender = make_sender(fake, url, http)
        with pytest.raises(PermanentDeliveryError, match="answered HTTP 400"):
            await sender.send(message())
        with pytest.raises(PermanentDeliveryError, match="answered HTTP 400"):
            await make_sender(fake, url, http, sender="Unknown").send(message())
    assert fake.accepted == []


async def test_an_answer_that_is_not_the_apis_json_is_retried(
    provider: tuple[FakeProvider, str], http: aiohttp.ClientSession
) -> None:
    fake = provider[0]

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/{tail:.*}", html)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        sender = make_sender(fake, f"http://{host}:{port}", http)
        with pytest.raises(DeliveryError) as caught:
            await sender.send(message())
    finally:
        await runner.cleanup()
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert str(caught.value) == f"{sender.title} answered something that is not its API's JSON"


# Each provider's status codes for: queued, with the operator, delivered, not delivered.
STATUS_CODES: dict[type[FakeProvider], dict[DeliveryStatus, list[int]]] = {
    FakeSmsRu: {
        DeliveryStatus.ACCEPTED: [100, 101],
        DeliveryStatus.SENT: [102],
        DeliveryStatus.DELIVERED: [103, 110],
        DeliveryStatus.UNDELIVERED: [104, 105, 106, 107, 108, 150],
    },
    FakeSmsc: {
        DeliveryStatus.ACCEPTED: [-1],
        DeliveryStatus.SENT: [0],
        DeliveryStatus.DELIVERED: [1, 2, 4],
        DeliveryStatus.UNDELIVERED: [3, 20, 22, 23, 24, 25],
    },
    FakeSmsAero: {
        DeliveryStatus.ACCEPTED: [0, 8],
        DeliveryStatus.SENT: [3, 4],
        DeliveryStatus.DELIVERED: [1],
        DeliveryStatus.UNDELIVERED: [2, 6],
    },
}


async def test_delivery_status_as_each_provider_reports_it(pair: Pair) -> None:
    fake, sender = pair
    sent = await sender.send(message())
    for expected, codes in STATUS_CODES[type(fake)].items():
        for code in codes:
            fake.statuses[sent.provider_id] = code
            got = await sender.delivery_status(sent.provider_id, PHONE)
            assert (code, got) == (code, expected)
    fake.statuses[sent.provider_id] = 77  # not documented
    assert await sender.delivery_status(sent.provider_id, PHONE) is None


async def test_delivery_status_of_an_unknown_message(pair: Pair) -> None:
    fake, sender = pair
    if isinstance(fake, FakeSmsAero):
        # SMS Aero answers 404: the question fails, and is asked again at the next check.
        with pytest.raises(DeliveryError):
            await sender.delivery_status("424242", PHONE)
    else:
        assert await sender.delivery_status("424242", PHONE) is None


# ── settings ────────────────────────────────────────────────────────────────────────


def test_settings_choose_the_provider_and_its_real_address(tmp_path: Any) -> None:
    for backend, url, login in [
        ("smsru", "https://sms.ru", None),
        ("smsc", "https://smsc.ru", "telemed"),
        ("smsaero", "https://gate.smsaero.ru/v2", "clinic@example.ru"),
    ]:
        settings = Settings(sms_backend=backend, sms_api_key="key", sms_login=login)
        assert settings.sms_provider_url == url
        assert settings.sms_backend is SmsBackend(backend)
    local = Settings(sms_backend="smsru", sms_api_key="key", sms_base_url="http://127.0.0.1:9/")
    assert local.sms_provider_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"sms_backend": "smsru"}, "TELEMED_SMS_API_KEY must be set for the smsru SMS backend"),
        ({"sms_backend": "smsc"}, "TELEMED_SMS_API_KEY must be set for the smsc SMS backend"),
        ({"sms_backend": "smsaero", "sms_api_key": "k"}, "TELEMED_SMS_LOGIN"),
        (
            {"sms_backend": "smsru", "sms_api_key": "k", "sms_base_url": "ftp://sms.ru"},
            "TELEMED_SMS_BASE_URL must be an http:// or https:// URL",
        ),
        ({"sms_backend": "smsru", "sms_api_key": "k", "sms_sender": ""}, "sms_sender"),
        ({"sms_backend": "smsru", "sms_api_key": "k", "sms_sender": "x" * 16}, "sms_sender"),
        ({"sms_backend": "beeline"}, "sms_backend"),
    ],
)
def test_settings_refuse_a_provider_without_its_account(
    fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(**fields)


def test_production_refuses_plain_http_to_a_provider() -> None:
    production: dict[str, Any] = {
        "mode": "production",
        "secret_key": "k" * 32,
        "database_url": "sqlite://",
    }
    with pytest.raises(ValidationError, match="must be https:// in production"):
        Settings(**production, sms_backend="smsc", sms_api_key="k", sms_base_url="http://smsc.ru")
    with pytest.raises(ValidationError, match="TELEMED_SMS_API_KEY must be set"):
        Settings(**production, sms_backend="smsc")
    ok = Settings(**production, sms_backend="smsc", sms_api_key="k", sms_login="telemed")
    assert ok.sms_provider_url == "https://smsc.ru"


async def test_senders_are_built_from_the_settings(http: aiohttp.ClientSession) -> None:
    settings = Settings(
        sms_backend="smsaero",
        sms_login="clinic@example.ru",
        sms_api_key="key",
        sms_sender=SENDER,
        sms_http_timeout_seconds=3,
    )
    sms = build_senders(settings, http)[OutboxChannel.SMS]
    assert isinstance(sms, SmsAeroSender)
    assert (sms.base_url, sms.login, sms.api_key, sms.sender, sms.timeout.total) == (
        "https://gate.smsaero.ru/v2",
        "clinic@example.ru",
        "key",
        SENDER,
        3,
    )


# ── through the outbox worker and the server ───────────────────────────────────────


@pytest.fixture
def settings_overrides(provider: tuple[FakeProvider, str]) -> dict[str, Any]:
    fake, url = provider
    account: dict[str, Any]
    if isinstance(fake, FakeSmsRu):
        account = {"sms_backend": "smsru", "sms_api_key": fake.api_id}
    elif isinstance(fake, FakeSmsc):
        account = {"sms_backend": "smsc", "sms_login": fake.login, "sms_api_key": fake.psw}
    else:
        assert isinstance(fake, FakeSmsAero)
        account = {"sms_backend": "smsaero", "sms_login": fake.email, "sms_api_key": fake.api_key}
    return {
        **account,
        "sms_base_url": url,
        "sms_sender": SENDER,
        "sms_http_timeout_seconds": 0.5,
        "outbox_retry_base_seconds": RETRY_BASE,
        "outbox_max_attempts": MAX_ATTEMPTS,
    }


async def credentials_sms(app: web.Application, user_id: str) -> None:
    """A referred patient's login and password by SMS, as the referral import sends it."""
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        user = await session.get(User, uuid.UUID(user_id))
        assert user is not None
        await do_notify(
            session,
            brand="Телемед",
            now=app[keys.CLOCK].now(),
            user=user,
            kind=NotificationKind.REFERRAL_CREDENTIALS,
            params={"url": "https://t.example/", "login": user.phone, "password": TEMP_PASSWORD},
            sms=True,
            secrets=[TEMP_PASSWORD],
        )


async def the_row(app: web.Application) -> OutboxMessage:
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        rows = list((await session.exec(select(OutboxMessage))).all())
    assert len(rows) == 1, rows
    return rows[0]


async def test_sent_through_the_provider_with_its_id_and_delivery_status(
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    provider: tuple[FakeProvider, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = provider[0]
    patient = await register(client, full_name="Петрова Анна Сергеевна")
    phone = patient["user"]["phone"]
    manager = (await staff(client, Role.MANAGER))["token"]
    caplog.set_level(logging.DEBUG, logger="telemed")  # our logs, at every level
    await credentials_sms(app, patient["user"]["id"])

    await run_jobs_once(app)
    row = await the_row(app)
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.SENT, 1, None)
    [accepted] = fake.accepted
    assert accepted.number == phone.lstrip("+")
    assert accepted.sender == SENDER
    assert "свяжутся за 2–4 дня" in accepted.text
    assert TEMP_PASSWORD in accepted.text  # the patient gets the password…
    assert TEMP_PASSWORD not in row.body  # …and the server keeps no copy of it
    assert MASK in row.body
    assert row.provider_message_id == accepted.provider_id
    assert row.delivery_status in (DeliveryStatus.ACCEPTED, DeliveryStatus.SENT)

    # Not due for a status check yet.
    clock.advance(DELIVERY_CHECK_EVERY - timedelta(seconds=1))
    assert (await run_jobs_once(app))["check_sms_delivery"] == 0
    assert fake.status_requests == 0

    # With the operator, then delivered; then final: never asked again.
    codes = STATUS_CODES[type(fake)]
    fake.statuses[accepted.provider_id] = codes[DeliveryStatus.SENT][0]
    clock.advance(timedelta(seconds=1))
    assert (await run_jobs_once(app))["check_sms_delivery"] == 1
    assert (await the_row(app)).delivery_status is DeliveryStatus.SENT
    fake.statuses[accepted.provider_id] = codes[DeliveryStatus.DELIVERED][0]
    clock.advance(DELIVERY_CHECK_EVERY)
    assert (await run_jobs_once(app))["check_sms_delivery"] == 1
    row = await the_row(app)
    assert row.delivery_status is DeliveryStatus.DELIVERED
    assert row.delivery_checked_at == clock.now()
    clock.advance(DELIVERY_CHECK_EVERY * 3)
    assert (await run_jobs_once(app))["check_sms_delivery"] == 0
    assert fake.status_requests == 2

    # The manager sees it in the outbox.
    outbox = await client.get("/api/v1/outbox", headers=bearer(manager))
    [item] = (await outbox.json())["items"]
    assert (item["status"], item["delivery_status"], item["provider_message_id"]) == (
        "sent",
        "delivered",
        accepted.provider_id,
    )
    # The logs name the message, never the patient, the number or the text.
    logged = caplog.text
    for secret in (phone, phone.lstrip("+"), TEMP_PASSWORD, "Петрова", "направили"):
        assert secret not in logged
    assert str(row.id) in logged


async def test_the_delivery_status_is_asked_for_a_day_at_most(
    client: AppClient, app: web.Application, clock: FakeClock, provider: tuple[FakeProvider, str]
) -> None:
    fake = provider[0]
    patient = await register(client)
    await credentials_sms(app, patient["user"]["id"])
    await run_jobs_once(app)
    # The provider never reports the fate: asked at every check, for a day.
    hour = timedelta(hours=1)
    assert 24 * hour == DELIVERY_CHECK_FOR
    for _ in range(24):
        clock.advance(hour)
        await run_jobs_once(app)
    assert fake.status_requests == 24
    clock.advance(hour)
    assert (await run_jobs_once(app))["check_sms_delivery"] == 0
    assert fake.status_requests == 24
    assert (await the_row(app)).delivery_status in (
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.SENT,
    )


async def test_wrong_credentials_fail_the_message_without_retries(
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    provider: tuple[FakeProvider, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = provider[0]
    # The provider revoked the key: every request is refused as its API says.
    if isinstance(fake, FakeSmsRu):
        fake.api_id = "revoked"
    elif isinstance(fake, FakeSmsc):
        fake.psw = "changed"
    else:
        assert isinstance(fake, FakeSmsAero)
        fake.api_key = "revoked"
    patient = await register(client)
    await credentials_sms(app, patient["user"]["id"])
    with caplog.at_level(logging.ERROR, logger="telemed.notify.worker"):
        await run_jobs_once(app)
    row = await the_row(app)
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 1)
    assert row.last_error in {
        "SMS.ru error 200: wrong api_id",
        "SMSC.ru error 2: wrong login or password",
        "SMS Aero: wrong e-mail or API key (HTTP 401)",
    }
    assert TEMP_PASSWORD not in row.body  # given up: the password is dropped too
    assert row.provider_message_id is None
    assert row.delivery_status is None
    assert "not retried" in caplog.text
    requests = fake.requests
    clock.advance(timedelta(days=1))
    await run_jobs_once(app)
    assert fake.requests == requests == 1


async def test_no_money_and_server_errors_are_retried_until_sent(
    client: AppClient, app: web.Application, clock: FakeClock, provider: tuple[FakeProvider, str]
) -> None:
    fake = provider[0]
    fake.errors = [{FakeSmsRu: 201, FakeSmsc: 3, FakeSmsAero: NO_CREDITS}[type(fake)]]
    fake.http_errors = [500]
    patient = await register(client)
    await credentials_sms(app, patient["user"]["id"])

    await run_jobs_once(app)  # HTTP 500
    row = await the_row(app)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert str(row.last_error).endswith("answered HTTP 500")
    clock.advance(timedelta(seconds=RETRY_BASE))
    await run_jobs_once(app)  # no money
    row = await the_row(app)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 2)
    assert "no money on the account" in str(row.last_error)
    assert TEMP_PASSWORD in row.body  # still to be sent: the text is kept until then
    clock.advance(timedelta(seconds=2 * RETRY_BASE))
    await run_jobs_once(app)  # topped up
    row = await the_row(app)
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.SENT, 3, None)
    assert [a.provider_id for a in fake.accepted] == [row.provider_message_id]
    assert fake.requests == 3


async def test_a_refused_number_is_failed_at_once_and_others_still_go(
    client: AppClient, app: web.Application, provider: tuple[FakeProvider, str]
) -> None:
    fake = provider[0]
    fake.errors = [{FakeSmsRu: 207, FakeSmsc: 8, FakeSmsAero: VALIDATION}[type(fake)]]
    first, second = await register(client), await register(client)
    await credentials_sms(app, first["user"]["id"])
    await run_jobs_once(app)
    await credentials_sms(app, second["user"]["id"])
    await run_jobs_once(app)
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        rows = await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.created_at)))
        outcome = {row.recipient: (row.status, row.attempts) for row in rows.all()}
    assert outcome == {
        first["user"]["phone"]: (OutboxStatus.FAILED, 1),
        second["user"]["phone"]: (OutboxStatus.SENT, 1),
    }
    assert [a.number for a in fake.accepted] == [second["user"]["phone"].lstrip("+")]
