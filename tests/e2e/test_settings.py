"""The app in the user's language and time zone, on a phone, from the keyboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.async_api import Browser, Page

from tests.e2e.app_pages import go, new_page, open_app, screenshot, sign_in, wait_in_page
from tests.factories import PASSWORD, AppClient
from tests.flows import NEW_PASSWORD, make_centre, make_doctor, make_patient, manager_token, ok

MOSCOW = ZoneInfo("Europe/Moscow")


async def no_sideways_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width} px wide on a 375 px phone"


async def test_english_and_the_patients_own_time_zone(
    browser: Browser, client: AppClient, tmp_path: Path
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True, name="Белова М. С.")
    # The doctor works on Moscow time: 09:00–10:00 tomorrow.
    tomorrow = datetime.now(UTC).astimezone(MOSCOW).date() + timedelta(days=1)
    nine = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, tzinfo=MOSCOW)
    body = {"starts_at": nine.isoformat(), "ends_at": (nine + timedelta(hours=1)).isoformat()}
    await ok(client, "POST", "/slots", duty["token"], {**body, "slot_minutes": 30}, status=201)
    patient = await make_patient(client)

    page = await new_page(browser, client, phone=True)
    await sign_in(page, client, patient["user"]["phone"], PASSWORD)
    await no_sideways_scroll(page)
    # Russian by default; the patient picks English and Yekaterinburg (Moscow + 2 h).
    assert await page.evaluate("document.documentElement.lang") == "ru"
    await go(page, "/profile")
    await page.get_by_label("Язык", exact=True).last.select_option("en")
    await page.get_by_label("Часовой пояс").select_option("Asia/Yekaterinburg")
    await page.get_by_role("button", name="Сохранить").click()
    await page.get_by_role("button", name="Save").wait_for()
    assert await page.evaluate("document.documentElement.lang") == "en"
    me = await ok(client, "GET", "/me", patient["token"])
    assert (me["locale"], me["time_zone"]) == ("en", "Asia/Yekaterinburg")

    await go(page, "/new")
    await page.locator(f"#slots[data-doctor='{duty['id']}']").wait_for()
    slots = await page.locator("#slots").inner_text()
    assert "your time zone: Yekaterinburg (UTC+5)" in slots
    assert "11:00" in slots
    assert "11:30" in slots
    assert "09:00" not in slots
    assert await page.get_by_role("link", name="New consultation").count() == 1
    await no_sideways_scroll(page)
    await screenshot(page, "patient-new-consultation-en", tmp_path)

    # The choice is the account's: another device opens in English.
    other = await new_page(browser, client)
    await sign_in(other, client, patient["user"]["phone"], PASSWORD)
    await wait_in_page(other, "document.documentElement.lang === 'en'")


async def test_signing_in_from_the_keyboard_alone(browser: Browser, client: AppClient) -> None:
    patient = await make_patient(client)
    page = await new_page(browser, client, phone=True)
    await open_app(page, client, "/login")
    await no_sideways_scroll(page)
    # Tab from the top of the page reaches the login field through labelled controls.
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.id")
        label = await page.evaluate(
            "document.activeElement.labels && document.activeElement.labels[0]"
            " && document.activeElement.labels[0].textContent"
        )
        if label == "Телефон или e-mail":
            break
    else:
        raise AssertionError("the login field is not reachable with Tab")
    assert focused
    await page.keyboard.type(patient["user"]["phone"])
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await wait_in_page(page, "window.telemedApp.route === '/consultations'")
    # The bell opens from the keyboard and Escape closes it, back on the bell.
    await page.locator("#bell").focus()
    await page.keyboard.press("Enter")
    await page.locator("#bell-panel").wait_for(state="visible")
    assert await page.locator("#bell").get_attribute("aria-expanded") == "true"
    await page.keyboard.press("Escape")
    await page.locator("#bell-panel").wait_for(state="hidden")
    assert await page.evaluate("document.activeElement.id") == "bell"
    # A wrong password is said in the form, in words, and changes nothing.
    await page.get_by_role("button", name="Выйти").click()
    await wait_in_page(page, "window.telemedApp.route === '/login'")
    await page.get_by_label("Телефон или e-mail").fill(patient["user"]["phone"])
    await page.get_by_label("Пароль", exact=True).fill("wrong-password-1")
    await page.get_by_role("button", name="Войти").click()
    alert = page.get_by_role("alert")
    await alert.wait_for()
    assert await alert.inner_text() == "Неверный логин или пароль."


async def test_every_patient_and_doctor_page_fits_a_phone(
    browser: Browser, client: AppClient
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True, name="Белова М. С.")
    patient = await make_patient(client)
    tomorrow = datetime.now(UTC).astimezone(MOSCOW).date() + timedelta(days=1)
    nine = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, tzinfo=MOSCOW)
    body = {"starts_at": nine.isoformat(), "ends_at": (nine + timedelta(hours=1)).isoformat()}
    slots = await ok(client, "POST", "/slots", duty["token"], {**body, "slot_minutes": 30}, 201)
    booking = {"route": "duty", "slot_id": slots["items"][0]["id"], "topic": "other"}
    booked = await ok(client, "POST", "/consultations", patient["token"], booking, status=201)

    for login, password, paths in [
        (
            patient["user"]["phone"],
            PASSWORD,
            ["/consultations", "/new", "/documents", "/profile", f"/consultations/{booked['id']}"],
        ),
        (
            duty["phone"],
            NEW_PASSWORD,
            ["/requests", "/today", "/slots", "/consultations", f"/consultations/{booked['id']}"],
        ),
    ]:
        page = await new_page(browser, client, phone=True)
        await sign_in(page, client, login, password)
        for path in paths:
            await go(page, path)
            await no_sideways_scroll(page)
            # Every field the page shows has a label.
            unlabelled = await page.evaluate(
                "[...document.querySelectorAll('#view input, #view select, #view textarea')]"
                ".filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length)"
                " && !e.getAttribute('aria-label')).map((e) => e.name || e.id)"
            )
            assert unlabelled == [], (path, unlabelled)
        await page.context.close()
