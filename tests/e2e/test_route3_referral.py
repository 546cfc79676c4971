"""Route 3 in Chromium, from the manager's table to the scheduled consultation: the
manager checks the table (a bad row flagged), confirms the import; the SMS with the
login and temporary password reaches a real local SMS gateway; the patient signs in with
them, must change the password, uploads a document; the centre's doctor schedules the
consultation; the patient sees the time. The manager's outbox never shows the password."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from telemed.accounts.models import Role
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests import samples
from tests.conftest import AppClient
from tests.e2e.app_pages import app_state, go, new_page, screenshot, sign_in, wait_in_page
from tests.factories import PASSWORD, staff
from tests.flows import NEW_PASSWORD, make_centre, make_doctor, ok
from tests.notify_gateways import SmsGateway

PATIENT = "Воронин Алексей Игоревич"
PATIENT_PHONE = "+79005550101"
PATIENT_PASSWORD = "Sunny-Garden-58"
CENTRE = "Областной кардиологический центр"
HEADER = (
    "ФИО;Дата рождения;Телефон;Email;Код МКБ-10;Диагноз;Направившая организация;"
    "Направивший врач;Профиль"
)
TABLE = "\r\n".join(
    [
        HEADER,
        f"{PATIENT};12.03.1958;8 (900) 555-01-01;;I25.1;ИБС: стенокардия напряжения;"
        "ГАУЗ СО «Городская больница г. Асбест»;Лаптева Ирина Олеговна;кардиология",
        "Королёв Виктор Павлович;05.05.61;8 900 555 01;;E11.9;Сахарный диабет 2 типа;"
        "ГБУЗ СО «Сысертская ЦРБ»;Мельников Артём Сергеевич;кардиология",
    ]
)


@pytest.fixture
def settings_overrides(gateway: tuple[SmsGateway, str]) -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"], "sms_backend": "http", "sms_http_url": gateway[1]}


def sms_to(gateway: SmsGateway, phone: str) -> list[str]:
    return [str(m["text"]) for m in gateway.delivered if m["to"] == phone]


async def rendered(page: Page) -> int:
    return int((await app_state(page))["rendered"])


async def click_and_draw(page: Page, target: Any) -> None:
    """Click something that leads to another page, and wait until it is drawn."""
    before = await rendered(page)
    await target.click()
    await wait_in_page(page, f"window.telemedApp.rendered > {before}")


async def manager_imports(
    page: Page, app: web.Application, clock: FakeClock, gateway: SmsGateway, tmp_path: Path
) -> None:
    """The manager refuses a table without phones, checks the real one, confirms."""
    upload_form = page.locator("#import-form")
    no_phones = tmp_path / "без телефонов.csv"
    no_phones.write_text(HEADER.replace("Телефон;", "") + "\r\n", encoding="utf-8")
    await upload_form.get_by_label("Таблица (CSV или XLSX)").set_input_files(no_phones)
    await upload_form.get_by_role("button", name="Проверить").click()
    refusal = upload_form.get_by_role("alert")
    await refusal.wait_for(state="visible")
    assert (await refusal.inner_text()).startswith(
        "В таблице нет обязательных столбцов: Телефон. Найдены столбцы: ФИО, Дата рождения"
    )

    table = tmp_path / "направления.csv"
    table.write_text(TABLE, encoding="cp1251")  # Excel's plain "CSV"
    await upload_form.get_by_label("Таблица (CSV или XLSX)").set_input_files(table)
    await upload_form.get_by_role("button", name="Проверить").click()
    report = page.locator("#import-report")
    await report.locator("#import-rows").wait_for(state="visible")
    assert "Результат проверки" in await report.locator("h2").inner_text()
    assert await report.locator("#report-summary").inner_text() == (
        "Пациентов в таблице: 2. Можно импортировать: 1. С ошибками (будут пропущены): 1."
    )
    good, bad = report.locator("tr[data-row='2']"), report.locator("tr[data-row='3']")
    assert "будет создано" in await good.inner_text()
    assert await bad.get_attribute("class") == "bad"
    assert [line.strip() for line in (await bad.locator("li").all_inner_texts())] == [
        "Дата рождения: год из двух цифр, век неизвестен: пишите ДД.ММ.ГГГГ",
        "Телефон: неверный номер телефона",
    ]
    await screenshot(page, "manager-import", tmp_path)
    # A dry run creates nothing and sends nothing.
    await run_jobs_once(app)
    assert gateway.delivered == []
    assert await page.locator("#past-imports tbody tr").count() == 1

    clock.advance(timedelta(minutes=2))  # the manager reads the report
    await report.get_by_role("button", name="Подтвердить импорт (1)").click()
    await report.locator("h2", has_text="Результат импорта").wait_for()
    assert await report.locator("#report-summary").inner_text() == (
        "Пациентов в таблице: 2. Импортировано: 1. С ошибками (пропущены): 1."
    )
    assert "создано" in await good.inner_text()
    assert await good.get_by_role("link", name="Открыть").count() == 1
    kinds = await page.locator("#past-imports tbody tr td:nth-child(3)").all_inner_texts()
    assert kinds == ["импорт", "проверка"]

    # Checked again: the imported row says "imported before" once (its status, not a
    # note repeating it), and no report says "null" or "undefined" anywhere.
    await upload_form.get_by_label("Таблица (CSV или XLSX)").set_input_files(table)
    await upload_form.get_by_role("button", name="Проверить").click()
    await report.locator("h2", has_text="Результат проверки").wait_for()
    again = await good.inner_text()
    assert again.count("импортировано раньше") == 1, again
    for shown in (await report.inner_text(), await page.locator("#past-imports").inner_text()):
        assert "null" not in shown
        assert "undefined" not in shown


async def test_route_3_referral(
    browser: Browser,
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    gateway: tuple[SmsGateway, str],
    tmp_path: Path,
) -> None:
    gw = gateway[0]
    manager = await staff(client, Role.MANAGER)
    centre = await make_centre(client, manager["token"], CENTRE, ["кардиология"])
    doctor = await make_doctor(client, manager["token"], centre["id"])

    office = await new_page(browser, client)
    await sign_in(office, client, manager["user"]["phone"], PASSWORD)
    await go(office, "#/imports")
    await manager_imports(office, app, clock, gw, tmp_path)

    # The SMS reaches the gateway with the login and the temporary password in clear.
    await run_jobs_once(app)
    texts = sms_to(gw, PATIENT_PHONE)
    assert len(texts) == 1, gw.delivered
    found = re.search(r"логин (\+7\d{10}),? пароль ([^\s.]+)", texts[0])
    assert found, texts[0]
    login, password = found.groups()
    assert login == PATIENT_PHONE
    # The manager's outbox shows that it went, but not the password.
    await go(office, "#/outbox")
    row = office.locator("#outbox tbody tr", has_text="логин и пароль по направлению")
    assert PATIENT_PHONE in await row.inner_text()
    assert "отправлено" in await row.inner_text()
    await row.get_by_text("Показать").click()
    assert "••••••" in await row.locator("details").inner_text()
    assert password not in await office.content()

    # The patient signs in with them and must choose a password first.
    home = await new_page(browser, client)
    await sign_in(home, client, login, password)
    state = await app_state(home)
    assert state["route"] == "/password"
    assert state["user"]["must_change_password"] is True
    await home.get_by_label("Текущий пароль").fill(password)
    await home.get_by_label("Новый пароль").fill(PATIENT_PASSWORD)
    await click_and_draw(home, home.get_by_role("button", name="Сменить пароль"))
    await wait_in_page(home, "window.telemedApp.route === '/consultations'")
    assert (await app_state(home))["user"]["must_change_password"] is False
    referral = home.locator("#consultations li.consultation")
    assert await referral.count() == 1
    assert await referral.get_attribute("data-state") == "requested"
    assert CENTRE in await referral.inner_text()
    referral_id = await referral.get_attribute("data-id")

    # ... uploads a document.
    await go(home, "#/documents")
    upload_form = home.locator("#upload-form")
    ecg = tmp_path / "ЭКГ.pdf"
    ecg.write_bytes(samples.pdf("ECG"))
    await upload_form.get_by_label("Файл (PDF, JPEG, PNG, DICOM)").set_input_files(ecg)
    await upload_form.get_by_label("Название").fill("ЭКГ от 20.11")
    await upload_form.get_by_role("button", name="Загрузить документ").click()
    await home.locator("#documents li.document", has_text="ЭКГ от 20.11").wait_for()
    # ... and attaches it to the referral from the referral's page.
    await go(home, f"#/consultations/{referral_id}")
    attach = home.locator("#attach-form")
    await attach.get_by_label("ЭКГ от 20.11", exact=False).check()
    await click_and_draw(home, attach.get_by_role("button", name="Приложить"))
    await home.locator("li.document", has_text="ЭКГ от 20.11").wait_for()
    assert await home.locator("#attach-form").count() == 0  # nothing left to attach
    await go(home, "#/consultations")

    # The centre's doctor finds the referral among the requests and sets a time.
    clinic = await new_page(browser, client)
    await sign_in(clinic, client, doctor["phone"], NEW_PASSWORD)
    assert (await app_state(clinic))["route"] == "/requests"
    await click_and_draw(clinic, clinic.get_by_role("link", name=PATIENT))
    assert (await app_state(clinic))["route"] == f"/consultations/{referral_id}"
    page_text = await clinic.locator("#view").inner_text()
    assert "ЭКГ от 20.11" in page_text
    assert "ГАУЗ СО «Городская больница г. Асбест», Лаптева Ирина Олеговна" in page_text
    moscow = (clock.now() + timedelta(days=2)).astimezone(ZoneInfo("Europe/Moscow"))
    starts = moscow.replace(hour=11, minute=0, second=0, microsecond=0)
    schedule = clinic.locator("#schedule-form")
    await schedule.get_by_label("Дата и время").fill(starts.strftime("%Y-%m-%dT%H:%M"))
    await schedule.get_by_label("Длительность, минут").fill("40")
    await click_and_draw(clinic, schedule.get_by_role("button", name="Назначить время"))
    await wait_in_page(
        clinic, "document.querySelector('.consultation-page').dataset.state === 'scheduled'"
    )

    # The patient's list shows the time as soon as it is set (live), and an SMS follows.
    await wait_in_page(home, "document.querySelector('#consultations [data-state=scheduled]')")
    assert "11:00" in await home.locator("#consultations li.consultation").inner_text()
    signed = await ok(
        client, "POST", "/auth/login", None, {"login": login, "password": PATIENT_PASSWORD}
    )
    client.session.cookie_jar.clear()
    consultation = await ok(client, "GET", f"/consultations/{referral_id}", signed["token"])
    assert consultation["state"] == "scheduled"
    assert datetime.fromisoformat(consultation["starts_at"]) == starts
    assert consultation["duration_min"] == 40
    await run_jobs_once(app)
    assert len(sms_to(gw, PATIENT_PHONE)) == 2
    assert "назначена" in sms_to(gw, PATIENT_PHONE)[1]
