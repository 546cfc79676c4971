"""The manager's outbox in Chromium with an SMS provider (SMS.ru's stand-in on
loopback): a sent SMS shows what the provider reports of it, in the manager's language,
and one the provider refused shows as failed with the reason, without a report."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser

from telemed import db, keys
from telemed.accounts.models import Role, User
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from telemed.notify.service import do_notify
from telemed.notify.texts import NotificationKind
from telemed.notify.worker import DELIVERY_CHECK_EVERY
from tests.conftest import AppClient
from tests.e2e.app_pages import go, new_page, sign_in
from tests.factories import PASSWORD, register, staff
from tests.sms_providers import FakeSmsRu


@pytest.fixture
async def smsru() -> AsyncIterator[tuple[FakeSmsRu, str]]:
    fake = FakeSmsRu()
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture
def settings_overrides(smsru: tuple[FakeSmsRu, str]) -> dict[str, Any]:
    fake, url = smsru
    return {
        "media_addresses": ["127.0.0.1"],
        "sms_backend": "smsru",
        "sms_api_key": fake.api_id,
        "sms_base_url": url,
        "sms_sender": "Telemed",
    }


async def reminder_sms(app: web.Application, user_id: str) -> None:
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        user = await session.get(User, uuid.UUID(user_id))
        assert user is not None
        await do_notify(
            session,
            brand="Телемед",
            now=app[keys.CLOCK].now(),
            user=user,
            kind=NotificationKind.REMINDER_1H,
            params={"when": app[keys.CLOCK].now() + timedelta(hours=1)},
            sms=True,
        )


async def test_the_outbox_shows_the_providers_report(
    browser: Browser,
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    smsru: tuple[FakeSmsRu, str],
) -> None:
    fake = smsru[0]
    delivered, refused = await register(client), await register(client)
    await reminder_sms(app, delivered["user"]["id"])
    await run_jobs_once(app)
    fake.errors = [207]  # SMS.ru: messages to this number are not allowed
    clock.advance(timedelta(seconds=1))
    await reminder_sms(app, refused["user"]["id"])
    await run_jobs_once(app)
    [accepted] = fake.accepted
    fake.statuses[accepted.provider_id] = 103  # delivered
    clock.advance(DELIVERY_CHECK_EVERY)
    await run_jobs_once(app)

    manager = await staff(client, Role.MANAGER)
    page = await new_page(browser, client)
    await sign_in(page, client, manager["user"]["phone"], PASSWORD)
    await go(page, "#/outbox")
    rows = page.locator("#outbox tbody tr")
    assert await rows.count() == 2
    newest = (await rows.nth(0).inner_text()).split("\t")
    oldest = (await rows.nth(1).inner_text()).split("\t")
    assert newest[1] == refused["user"]["phone"]
    assert newest[4:7] == [
        "не доставлено",
        "1",
        "SMS.ru error 207: messages to this number are not allowed",
    ]
    assert oldest[1] == delivered["user"]["phone"]
    assert oldest[4:7] == ["отправлено · доставлено на телефон", "1", "—"]
    report = rows.nth(1).locator(".delivery-report")
    assert await report.get_attribute("data-report") == "delivered"
    assert await report.get_attribute("title") == "Отчёт провайдера SMS"
    assert await rows.nth(0).locator(".delivery-report").count() == 0
