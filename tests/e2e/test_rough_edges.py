"""Rough edges a new user met, each checked in Chromium: pages ask only for what the user
may read (no red «Не найдено.», no 403 on every load), say one thing where they said two,
name time zones as people do, title pages readably, and dress a refusal as one."""

from __future__ import annotations

from datetime import timedelta

from playwright.async_api import Browser, Page, Response

from telemed.accounts.models import Role
from telemed.clock import FakeClock
from tests.e2e.app_pages import go, new_page, sign_in
from tests.factories import PASSWORD, AppClient, staff
from tests.flows import (
    NEW_PASSWORD,
    book_slot,
    later,
    make_centre,
    make_doctor,
    make_patient,
    ok,
    request_to_centre,
)


def refusals(page: Page) -> list[str]:
    """The API answers of 400 and above the page gets, collected as they come."""
    seen: list[str] = []

    def note(response: Response) -> None:
        if "/api/v1/" in response.url and response.status >= 400:
            seen.append(f"{response.status} {response.url}")

    page.on("response", note)
    return seen


async def test_each_role_sees_only_what_it_may_read(
    browser: Browser, client: AppClient, clock: FakeClock
) -> None:
    boss = await staff(client, Role.MANAGER)
    manager = boss["token"]
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True, name="Белова М. С.")
    other = await make_doctor(client, manager, centre["id"], name="Ершов П. И.")
    patient = await make_patient(client)
    booked = await book_slot(client, duty, patient, later(clock, hours=2))
    clock.advance(timedelta(hours=2))
    await ok(client, "POST", f"/consultations/{booked['id']}/start", duty["token"])
    await ok(client, "POST", f"/consultations/{booked['id']}/end", duty["token"])
    waiting = await request_to_centre(client, patient, centre["id"])

    # The patient: the consultation's chat, no recordings asked for (403 before), no
    # documents yet and nothing to attach said once, the time zone named.
    page = await new_page(browser, client)
    await sign_in(page, client, patient["user"]["phone"], PASSWORD)
    refused = refusals(page)  # after signing in: before, /me is 401
    await go(page, f"/consultations/{booked['id']}")
    await page.locator("#chat").wait_for()
    assert await page.locator("#recordings").count() == 0
    await go(page, f"/consultations/{waiting['id']}")
    text = await page.locator("main").inner_text()
    assert "Документы не приложены." in text
    assert "Все документы уже приложены" not in text
    assert "сначала загрузите их в разделе" in text
    await go(page, f"/consultations/{booked['id']}")
    assert "(UTC+3)" in await page.locator(".facts").inner_text()
    assert "Москва (UTC+3)" in await page.locator(".facts").inner_text()
    assert "Europe/Moscow" not in await page.locator("main").inner_text()
    assert await page.title() == "Консультация · Проведена — Телемед"
    # The consent the patient gave on registering (152-ФЗ): when, and its text.
    await go(page, "/profile")
    assert "дано" in await page.locator("#consent").inner_text()
    await page.locator("#consent summary").click()
    await page.locator("#consent .text", has_text="152-ФЗ").wait_for()
    assert refused == []
    await page.context.close()

    # A doctor of the centre reviewing the unassigned request: no chat (it opens once a
    # doctor takes the request), so no red "not found"; «Отклонить» is not the primary
    # action. Doctors sign in with the password they set.
    page = await new_page(browser, client)
    await sign_in(page, client, other["phone"], NEW_PASSWORD)
    refused = refusals(page)
    await go(page, f"/consultations/{waiting['id']}")
    await page.locator("#decline-form").wait_for()
    assert await page.locator("#chat").count() == 0
    assert await page.get_by_role("alert").filter(has_text="Не найдено").count() == 0
    decline = page.locator("#decline-form button[type=submit]")
    assert "danger" in (await decline.get_attribute("class") or "")
    schedule = page.locator("#schedule-form button[type=submit]")
    colours = "(b) => getComputedStyle(b).backgroundColor"
    assert await decline.evaluate(colours) != await schedule.evaluate(colours)
    assert refused == []
    await page.context.close()

    # The manager's menu leads to the consultations.
    page = await new_page(browser, client)
    await sign_in(page, client, boss["user"]["phone"], PASSWORD)
    await page.get_by_role("navigation").get_by_role("link", name="Консультации").click()
    await page.locator(f"a[href='#/consultations/{booked['id']}']").first.wait_for()
