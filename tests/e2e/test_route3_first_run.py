"""Route 3 on a first run, in Chromium: the default settings (development mode, no SMS
gateway: ``TELEMED_SMS_BACKEND=outbox``) and the demo data, as ``./dev run`` starts.

The demo manager imports the sample table (docs/samples/referrals.csv), reads the
referred patient's login and password where a manager of a demo deployment reads them
(the outbox: kept, not sent, shown in full), and the patient signs in on a phone and
changes the password. Then the manager issues another patient new credentials from the
consultation page, and a patient who forgot the password resets it with a code by SMS,
in English. (With a real gateway, tests/e2e/test_route3_referral.py: nothing is shown.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import FormData, web
from playwright.async_api import Browser

from telemed.demo import MANAGER
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.e2e.app_pages import (
    DESKTOP,
    app_state,
    change_password,
    click_and_draw,
    demo_data,
    go,
    kept_text,
    new_page,
    origin,
    screenshot,
    sign_in,
    wait_in_page,
)
from tests.factories import bearer
from tests.flows import ok

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "referrals.csv"
CARDIOLOGY = "Областной кардиологический центр"
VORONIN = "+79005550101"  # row 2 of the sample
GAVRILOVA = ("+79005550102", "Гаврилова Светлана Петровна")  # row 3
CREDENTIALS = re.compile(r"логин (\+7\d{10}),? пароль ([^\s.]+)")


async def test_route_3_from_a_first_run(
    browser: Browser, client: AppClient, app: web.Application, tmp_path: Path
) -> None:
    await demo_data(app)
    office = await new_page(browser, client)
    await office.set_viewport_size(DESKTOP)
    await sign_in(office, client, MANAGER[1], MANAGER[2])
    assert (await app_state(office))["route"] == "/centres"
    manager = await ok(
        client, "POST", "/auth/login", None, {"login": MANAGER[1], "password": MANAGER[2]}
    )
    client.session.cookie_jar.clear()

    # The manager checks the sample table, then imports it.
    await go(office, "#/imports")
    upload_form = office.locator("#import-form")
    await upload_form.get_by_label("Таблица (CSV или XLSX)").set_input_files(SAMPLE)
    await upload_form.get_by_role("button", name="Проверить").click()
    report = office.locator("#import-report")
    await report.locator("#import-rows").wait_for()
    await report.get_by_role("button", name="Подтвердить импорт (5)").click()
    await report.locator("h2", has_text="Результат импорта").wait_for()
    assert await report.locator("#report-summary").inner_text() == (
        "Пациентов в таблице: 6. Импортировано: 5. С ошибками (пропущены): 1."
    )
    assert "Логин и пароль каждому новому пациенту уходят по SMS" in await report.inner_text()
    # Each created patient's row offers new credentials; the bad row does not.
    new_password = report.get_by_role("button", name=re.compile("Выдать новый пароль"))
    assert await new_password.count() == 5
    assert await report.locator("tr[data-row='7'] button").count() == 0

    # The server's outbox round (every 5 s under ./dev run): no gateway, so each SMS
    # is kept, not sent, and the manager reads it whole.
    await run_jobs_once(app)
    await go(office, "#/outbox")
    notice = office.locator("#outbox-kept")
    assert (await notice.inner_text()).startswith("SMS-шлюз не подключён")
    outbox = (await ok(client, "GET", "/outbox", manager["token"]))["items"]
    [sms] = [m for m in outbox if m["recipient"] == VORONIN]
    row = office.locator(f"#outbox tr[data-id='{sms['id']}']")
    cells = (await row.inner_text()).split("\t")
    assert cells[1:4] == [VORONIN, "SMS", "логин и пароль по направлению"]
    assert cells[4] == "сохранено, шлюза нет"
    assert cells[7] == "не отправлено"
    assert "••••••" in (await row.locator("details").text_content() or "")  # stays masked
    text = await kept_text(office, sms["id"])
    assert text.startswith("Телемед: направление в ")
    assert "свяжутся за 2–4 дня" in text
    assert len(text) <= 134  # two Cyrillic SMS segments
    found = CREDENTIALS.search(text)
    assert found, text
    login, password = found.groups()
    assert login == VORONIN
    await screenshot(office, "manager-outbox-kept", tmp_path)
    # The filter knows the new status.
    filters = office.locator("#outbox-filter")
    await filters.get_by_label("Статус").select_option(label="сохранено, шлюза нет")
    await click_and_draw(office, filters.get_by_role("button", name="Показать"))
    assert "status=kept" in office.url
    statuses = await office.locator("#outbox tbody tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.status)"
    )
    assert statuses == ["kept"] * 5
    assert await office.locator("#outbox tr.kept-row").count() == 5

    # The patient signs in on a phone with what the SMS says, and must change it.
    home = await new_page(browser, client, phone=True)
    await sign_in(home, client, login, password)
    await change_password(home, password, "Sunny-Garden-58")
    referral = home.locator("#consultations li.consultation")
    assert await referral.count() == 1
    assert await referral.get_attribute("data-state") == "requested"
    assert CARDIOLOGY in await referral.inner_text()
    width = await home.evaluate("document.documentElement.scrollWidth")
    assert width <= 375


async def test_new_credentials_and_a_forgotten_password(
    browser: Browser, client: AppClient, app: web.Application, tmp_path: Path
) -> None:
    await demo_data(app)
    manager = await ok(
        client, "POST", "/auth/login", None, {"login": MANAGER[1], "password": MANAGER[2]}
    )
    client.session.cookie_jar.clear()
    form = FormData()
    form.add_field("file", SAMPLE.read_bytes(), filename=SAMPLE.name)
    imported = await client.post(
        "/api/v1/referral-imports", data=form, headers=bearer(manager["token"])
    )
    assert imported.status == 201
    rows = {row["row"]: row for row in (await imported.json())["rows"]}
    consultation_id = rows[3]["consultation_id"]
    await run_jobs_once(app)

    # The patient never got the SMS: the manager issues new credentials from the
    # referral's page.
    office = await new_page(browser, client)
    await office.set_viewport_size(DESKTOP)
    await sign_in(office, client, MANAGER[1], MANAGER[2])
    await go(office, f"#/consultations/{consultation_id}")
    card = office.locator("#credentials")
    assert "Вход пациента" in await card.locator("h2").inner_text()
    await card.get_by_role("button", name=f"Выдать новый пароль: {GAVRILOVA[1]}").click()
    result = card.locator(".credentials-result")
    await result.get_by_role("link").wait_for()  # the confirmation was accepted
    words = await result.inner_text()
    assert words.startswith("Новый временный пароль выдан")
    assert "прежний больше не действует" in words
    assert f"SMS-шлюз не подключён, поэтому SMS на {GAVRILOVA[0]} не отправлено" in words
    await screenshot(office, "manager-credentials", tmp_path, at=card)
    await run_jobs_once(app)
    await click_and_draw(office, result.get_by_role("link", name="«Исходящие»"))
    outbox = (await ok(client, "GET", "/outbox", manager["token"]))["items"]
    mine = {m["kind"]: m["id"] for m in outbox if m["recipient"] == GAVRILOVA[0]}
    # Only the live password is readable: the first SMS's is masked now.
    first = office.locator(f"#outbox tr.kept-row[data-for='{mine['referral_credentials']}']")
    assert await first.count() == 0
    latest = office.locator(f"#outbox tr[data-id='{mine['new_credentials']}']")
    assert "новый пароль" in await latest.inner_text()
    found = CREDENTIALS.search(await kept_text(office, mine["new_credentials"]))
    assert found
    login, password = found.groups()

    home = await new_page(browser, client, phone=True)
    await sign_in(home, client, login, password)
    await change_password(home, password, "Sunny-Garden-58")
    await click_and_draw(home, home.get_by_role("button", name="Выйти"))

    # Later the patient forgets the password, and asks for a code, in English.
    await home.goto(f"{origin(client)}/?lang=en#/login")
    await wait_in_page(home, "window.telemedApp && window.telemedApp.rendered > 0")
    await click_and_draw(home, home.get_by_role("link", name="Forgot your password?"))
    assert (await app_state(home))["route"] == "/reset"
    assert await home.locator("h1").inner_text() == "Reset your password"
    await home.get_by_label("Phone", exact=True).fill("8 900 555-01-02")
    await home.get_by_role("button", name="Send me a code").click()
    sent = home.locator("#reset-sent")
    await sent.wait_for()
    assert await sent.inner_text() == (
        "If this number has an account, an SMS with a code is on its way. "
        "The code is valid for 15 min."
    )
    await screenshot(home, "patient-reset-en", tmp_path)
    await run_jobs_once(app)
    await go(office, "#/outbox?status=kept")
    outbox = (await ok(client, "GET", "/outbox", manager["token"]))["items"]
    [code_sms] = [m for m in outbox if m["kind"] == "password_reset_code"]
    row = office.locator(f"#outbox tr[data-id='{code_sms['id']}']")
    assert "код для смены пароля" in await row.inner_text()
    code = re.findall(r"\d{6}", await kept_text(office, code_sms["id"]))[0]

    codes = home.locator("#reset-code-form")
    await codes.get_by_label("Code from the SMS").fill(f"{(int(code) + 1) % 10**6:06d}")
    await codes.get_by_label("New password").fill("Quiet-River-73")
    await codes.get_by_role("button", name="Set the password and sign in").click()
    refusal = codes.get_by_role("alert")
    await refusal.wait_for(state="visible")
    assert await refusal.inner_text() == (
        "Code from the SMS: wrong or expired — check it or ask for a new one."
    )
    await codes.get_by_label("Code from the SMS").fill(code)
    await click_and_draw(home, codes.get_by_role("button", name="Set the password and sign in"))
    await wait_in_page(home, "window.telemedApp.route === '/consultations'")
    state: dict[str, Any] = await app_state(home)
    assert state["user"]["must_change_password"] is False
    signed = await ok(
        client, "POST", "/auth/login", None, {"login": login, "password": "Quiet-River-73"}
    )
    assert signed["user"]["phone"] == GAVRILOVA[0]
