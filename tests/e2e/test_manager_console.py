"""The manager's console in Chromium: centres and doctors made and changed through the
forms, the refusal to archive a centre that still has doctors, the deadline dashboard
with an overdue and a due-soon request (the server's clock moved forward), the outbox,
and every page at phone width."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Page

from telemed.accounts.models import Role
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.e2e.app_pages import PHONE, app_state, go, new_page, screenshot, sign_in, wait_in_page
from tests.factories import PASSWORD, next_phone, register, staff
from tests.flows import make_centre, make_doctor, ok, request_to_centre

WEB = Path(__file__).resolve().parents[2] / "web" / "i18n"
APP_RU: dict[str, str] = json.loads((WEB / "app.ru.json").read_text("utf-8"))
CENTRE = "Областной кардиологический центр"
DOCTOR = "Белова Ольга Сергеевна"


async def text_of(page: Page, selector: str) -> str:
    return await page.locator(selector).inner_text()


async def redrawn_after(page: Page, before: int) -> None:
    await wait_in_page(page, f"window.telemedApp.rendered > {before}")


async def rendered(page: Page) -> int:
    return int((await app_state(page))["rendered"])


async def request_consultation(
    client: AppClient, centre_id: str, diagnosis: str
) -> tuple[str, str]:
    """A patient's route 1 request through the API; returns its id and the phone."""
    patient = await register(client)
    created = await request_to_centre(
        client,
        patient,
        centre_id,
        diagnosis=diagnosis,
        complaints="Одышка при подъёме на второй этаж",
    )
    return str(created["id"]), str(patient["user"]["phone"])


async def create_centre_and_doctor(page: Page, client: AppClient, manager: dict[str, Any]) -> str:
    """Through the forms: a centre, its region changed from the keyboard, a doctor.
    Returns the doctor's phone."""
    form = page.locator("#centre-form")
    await form.get_by_label("Название").fill(CENTRE)
    await form.get_by_label("Регион").fill("Свердловская обл.")
    await form.get_by_label("Профили").fill("кардиология, аритмология ,")
    await form.get_by_label("Описание").fill("Консультации кардиологов и аритмологов")
    before = await rendered(page)
    await form.get_by_role("button", name="Добавить центр").click()
    await redrawn_after(page, before)
    row = page.locator("#centres tbody tr")
    assert await row.count() == 1
    assert (await row.inner_text()).split("\t")[:3] == [
        CENTRE,
        "Свердловская обл.",
        "кардиология, аритмология",
    ]
    centres = await ok(client, "GET", "/centres", manager["token"])
    assert [c["profiles"] for c in centres["items"]] == [["кардиология", "аритмология"]]

    # Edit: change the region and submit with Enter.
    before = await rendered(page)
    await page.get_by_role("link", name=f"Изменить центр «{CENTRE}»").click()
    await redrawn_after(page, before)
    region = page.get_by_label("Регион")
    assert await region.input_value() == "Свердловская обл."
    await region.fill("Свердловская область")
    before = await rendered(page)
    await region.press("Enter")
    await redrawn_after(page, before)
    assert (await app_state(page))["route"] == "/centres"
    assert "Свердловская область" in await text_of(page, "#centres tbody")

    # A doctor, through the navigation and the form.
    before = await rendered(page)
    await page.get_by_role("navigation", name="Разделы").get_by_role("link", name="Врачи").click()
    await redrawn_after(page, before)
    assert "Врачей нет." in await text_of(page, "#view")
    phone = next_phone()
    form = page.locator("#doctor-form")
    await form.get_by_label("ФИО").fill(DOCTOR)
    await form.get_by_label("Телефон").fill(phone)
    await form.get_by_label("Временный пароль").fill(PASSWORD)
    await form.get_by_label("Центр").select_option(label=CENTRE)
    await form.get_by_label("Специальность").fill("кардиолог")
    await form.get_by_label("Дежурный врач").check()
    before = await rendered(page)
    await form.get_by_role("button", name="Добавить врача").click()
    await redrawn_after(page, before)
    cells = (await text_of(page, "#doctors tbody tr")).split("\t")
    assert cells[:4] == [DOCTOR, CENTRE, "кардиолог", "да"]

    before = await rendered(page)
    await page.get_by_role("link", name=f"Изменить: {DOCTOR}").click()
    await redrawn_after(page, before)
    await page.get_by_label("Специальность").fill("кардиолог-аритмолог")
    await page.get_by_label("Дежурный врач").uncheck()
    before = await rendered(page)
    await page.get_by_role("button", name="Сохранить").click()
    await redrawn_after(page, before)
    cells = (await text_of(page, "#doctors tbody tr")).split("\t")
    assert cells[:4] == [DOCTOR, CENTRE, "кардиолог-аритмолог", "нет"]
    return phone


async def test_manager_console(
    browser: Browser,
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    manager = await staff(client, Role.MANAGER)
    page = await new_page(browser, client)
    await sign_in(page, client, manager["user"]["phone"], PASSWORD)
    assert (await app_state(page))["route"] == "/centres"
    assert "Центров пока нет." in await text_of(page, "#view")

    doctor_phone = await create_centre_and_doctor(page, client, manager)
    # The server makes a manager-created doctor change the first password.
    signed = await ok(
        client, "POST", "/auth/login", None, {"login": doctor_phone, "password": PASSWORD}
    )
    assert signed["user"]["must_change_password"] is True
    client.session.cookie_jar.clear()

    # A centre with a doctor cannot be archived: the refusal is shown in Russian.
    await go(page, "#/centres")
    assert await text_of(page, "#centres tbody tr td:nth-child(4)") == "1"
    await page.get_by_role("button", name=f"Отправить в архив центр «{CENTRE}»").click()
    error = page.locator("#centres-error")
    await error.wait_for(state="visible")
    assert await error.inner_text() == APP_RU["error.centre_has_doctors"]
    assert CENTRE in await text_of(page, "#centres tbody")
    # An empty one can.
    await make_centre(client, manager["token"], "Центр без врачей", ["терапия"])
    await go(page, "#/doctors")  # and back: the same hash would not draw the page again
    await go(page, "#/centres")
    assert await page.locator("#centres tbody tr").count() == 2
    before = await rendered(page)
    await page.get_by_role("button", name="Отправить в архив центр «Центр без врачей»").click()
    await redrawn_after(page, before)
    assert await page.locator("#centres tbody tr").count() == 1
    assert "Центр без врачей" not in await text_of(page, "#centres")
    # A doctor leaves: archived from the list of the centre's doctors.
    centre_id = (await ok(client, "GET", "/centres"))["items"][0]["id"]
    await make_doctor(client, manager["token"], centre_id, name="Уходящий Врач")
    before = await rendered(page)
    await page.get_by_role("link", name=f"Врачи центра «{CENTRE}»").click()
    await redrawn_after(page, before)
    assert f"centre={centre_id}" in page.url
    assert await page.locator("#doctors tbody tr").count() == 2
    before = await rendered(page)
    await page.get_by_role("button", name="Отправить в архив: Уходящий Врач").click()
    await redrawn_after(page, before)
    assert await page.locator("#doctors tbody tr").count() == 1
    assert "Уходящий Врач" not in await text_of(page, "#doctors")

    # Deadlines: a request 3 days and 7 hours old is overdue (route 1 allows 3 days); one
    # 2 days and 7 hours old has used 76 % of its window, so it is due soon.
    overdue, _ = await request_consultation(client, centre_id, "ИБС")
    clock.advance(timedelta(days=1))
    due_soon, patient_phone = await request_consultation(client, centre_id, "Гипертония")
    clock.advance(timedelta(days=2, hours=7))
    await go(page, "#/sla")
    totals = page.locator("#sla-totals")
    assert await totals.locator("[data-status=overdue] strong").inner_text() == "1"
    assert await totals.locator("[data-status=due_soon] strong").inner_text() == "1"
    assert await totals.locator("[data-status=met] strong").inner_text() == "0"
    late = page.locator(f"#sla-overdue tr[data-id='{overdue}']")
    assert "просрочено на 7 ч 0 мин" in await late.inner_text()
    soon = page.locator(f"#sla-due-soon tr[data-id='{due_soon}']")
    assert "осталось 17 ч 0 мин" in await soon.inner_text()
    by_centre = (await text_of(page, "#sla-by-centre tbody tr")).split("\t")
    assert by_centre == [CENTRE, "0", "1", "1", "0", "0"]
    by_doctor = (await text_of(page, "#sla-by-doctor tbody tr")).split("\t")
    assert by_doctor == ["врач не назначен", "0", "1", "1", "0", "0"]
    # No call has been held: the quality report says so.
    assert "Видеозвонков пока не было." in await text_of(page, "#view")
    await screenshot(page, "manager-sla", tmp_path)
    before = await rendered(page)
    await late.get_by_role("link", name="Открыть").click()
    await redrawn_after(page, before)
    assert (await app_state(page))["route"] == f"/consultations/{overdue}"

    # The outbox: what was sent, to whom, about what; filtered by status and channel. A
    # manager's cancellation is sent to the patient by SMS.
    await ok(
        client,
        "POST",
        f"/consultations/{due_soon}/cancel",
        manager["token"],
        {"reason": "Пациент направлен в другой центр"},
    )
    await run_jobs_once(app)  # the outbox ("outbox" backend: kept, not sent)
    await go(page, "#/outbox")
    outbox = await ok(client, "GET", "/outbox", manager["token"])
    assert [(m["kind"], m["recipient"]) for m in outbox["items"]] == [("cancelled", patient_phone)]
    rows = page.locator("#outbox tbody tr")
    assert await rows.count() == 1
    cells = (await rows.inner_text()).split("\t")
    assert cells[1:8] == [
        patient_phone,
        "SMS",
        "отмена",
        "сохранено, шлюза нет",
        "1",
        "—",
        "не отправлено",
    ]
    await rows.get_by_text("Показать").click()
    assert "отменена" in await rows.locator("details").inner_text()
    await screenshot(page, "manager-outbox", tmp_path)
    filters = page.locator("#outbox-filter")
    await filters.get_by_label("Статус").select_option(label="не доставлено")
    before = await rendered(page)
    await filters.get_by_role("button", name="Показать").click()
    await redrawn_after(page, before)
    assert (await app_state(page))["route"] == "/outbox"
    assert "status=failed" in page.url
    assert "Сообщений нет." in await text_of(page, "#view")
    await filters.get_by_label("Статус").select_option(label="сохранено, шлюза нет")
    await page.locator("#outbox-filter").get_by_label("Канал").select_option(label="SMS")
    before = await rendered(page)
    await page.locator("#outbox-filter").get_by_role("button", name="Показать").click()
    await redrawn_after(page, before)
    sms_kept = [m for m in outbox["items"] if m["channel"] == "sms" and m["status"] == "kept"]
    assert await rows.count() == len(sms_kept) > 0
    assert set(await rows.evaluate_all("rows => rows.map(r => r.dataset.channel)")) == {"sms"}

    # At 375 px nothing is wider than the screen: tables scroll in their own box.
    await page.set_viewport_size(PHONE)
    for path in ("#/centres", "#/doctors", "#/imports", "#/sla", "#/outbox"):
        await go(page, path)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
    await screenshot(page, "manager-outbox-phone", tmp_path)

    # In English by choice: the same page in the other dictionary.
    before = await rendered(page)
    await page.get_by_label("Язык").select_option("en")
    await redrawn_after(page, before)
    assert await page.locator("h1").inner_text() == "Outgoing SMS and e-mail"
    assert "cancelled" in await text_of(page, "#outbox")
