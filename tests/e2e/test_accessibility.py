"""Accessibility of the web app in Chromium: axe-core (from npm) finds no serious or
critical violation on any page of any role (patient, doctor, manager), the sign-in
pages, the video room before and after joining, in Russian and in English, on a phone
(375 x 812) and a desktop (1366 x 768); the keyboard reaches the main controls with a
visible focus and works them; the room tells screen readers what happens in it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from playwright.async_api import Browser, BrowserContext, Page, Route, ViewportSize

from telemed.clock import FakeClock
from tests import samples
from tests.e2e.app_pages import go, open_app, origin, sign_in, wait_in_page
from tests.factories import PASSWORD, AppClient, bearer, staff
from tests.flows import (
    NEW_PASSWORD,
    book_slot,
    later,
    make_centre,
    make_doctor,
    make_patient,
    manager_token,
    ok,
    request_to_centre,
    upload,
)
from telemed.accounts.models import Role

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
# axe is served to the page from the page's own origin by the test (a route of the
# browser context, not of the server), so the pages' CSP (scripts from 'self' only)
# stays as it is in production.
AXE_PATH = "/__test__/axe.min.js"
PHONE = ViewportSize(width=375, height=812)
DESKTOP = ViewportSize(width=1366, height=768)
VIEWPORTS = [pytest.param(PHONE, id="phone"), pytest.param(DESKTOP, id="desktop")]
LANGUAGES = ("ru", "en")

# What axe found on the page, serious and critical only, in a form a failure can print.
RUN_AXE = """async () => {
  const result = await window.axe.run(document, { resultTypes: ["violations"] });
  return {
    passes: result.passes.length,
    violations: result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                     nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: " + n.failureSummary) })),
  };
}"""


class Audit:
    """axe's findings over many pages, reported together at the end."""

    def __init__(self) -> None:
        self.pages = 0
        self.found: list[str] = []

    async def check(self, page: Page, where: str) -> None:
        if not await page.evaluate("Boolean(window.axe)"):
            await page.add_script_tag(url=page.url.split("#")[0].rsplit("/", 1)[0] + AXE_PATH)
        result: dict[str, Any] = await page.evaluate(RUN_AXE)
        assert result["passes"] > 10, f"axe checked next to nothing on {where}"
        self.pages += 1
        for violation in result["violations"]:
            self.found.append(
                f"{where}: {violation['impact']} {violation['id']} ({violation['help']}): "
                + " | ".join(violation["nodes"])
            )

    def assert_clean(self, pages: int) -> None:
        assert self.pages == pages, (self.pages, pages)
        assert not self.found, "\n".join(self.found)


async def new_context(browser: Browser, client: AppClient, viewport: ViewportSize) -> BrowserContext:
    """A context at this size that can load axe from the page's origin. Service workers
    are blocked here: they are the subject of test_installable, and a worker would
    answer the route's request before the context could."""
    context = await browser.new_context(
        viewport=viewport, locale="ru-RU", service_workers="block"
    )

    async def axe(route: Route) -> None:
        await route.fulfill(path=AXE, content_type="text/javascript")

    await context.route(f"**{AXE_PATH}", axe)
    return context


async def new_page(context: BrowserContext) -> Page:
    page = await context.new_page()
    page.on("pageerror", lambda error: print("browser error:", error))
    return page


async def choose_language(page: Page, lang: str) -> None:
    """The header's language menu, as a user picks it; the page is drawn again."""
    if await page.evaluate("document.documentElement.lang") == lang:
        return
    before = int(await page.evaluate("window.telemedApp.rendered"))
    await page.locator("#lang").select_option(lang)
    await wait_in_page(
        page,
        f"window.telemedApp.rendered > {before} && document.documentElement.lang === {lang!r}",
    )


async def audit_routes(page: Page, audit: Audit, role: str, routes: list[str]) -> None:
    for lang in LANGUAGES:
        await choose_language(page, lang)
        for route in routes:
            await go(page, route)
            await audit.check(page, f"{role} {lang} #{route}")
            if route == routes[0] and await page.locator("#bell").count():
                await page.locator("#bell").click()  # the notifications panel, open
                await audit.check(page, f"{role} {lang} #{route} with the bell open")
                await page.keyboard.press("Escape")


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_sign_in_pages(browser: Browser, client: AppClient, viewport: ViewportSize) -> None:
    audit = Audit()
    page = await new_page(await new_context(browser, client, viewport))
    await open_app(page, client, "/login")
    routes = ["/login", "/register", "/reset"]
    for lang in LANGUAGES:
        await go(page, routes[0])
        await choose_language(page, lang)
        for route in routes:
            await go(page, route)
            await audit.check(page, f"public {lang} #{route}")
        # An address the app does not know (drawn without counting as a page).
        await page.evaluate("location.hash = '#/no-such-page'")
        await page.locator("#view h1", has_text="Page not found" if lang == "en" else "Страница не найдена").wait_for()
        await audit.check(page, f"public {lang} not found")
    # A refused sign-in shows its error in the form.
    await go(page, "/login")
    await page.locator("input[name=login]").fill("+79120000000")
    await page.locator("input[name=password]").fill("Wrong-password-1")
    await page.locator("form button[type=submit]").click()
    await page.locator("form .error").wait_for()
    await audit.check(page, "public en #/login refused")
    audit.assert_clean(len(LANGUAGES) * (len(routes) + 1) + 1)


async def patient_world(client: AppClient, clock: FakeClock) -> dict[str, Any]:
    """A centre with a doctor and a duty doctor; a patient with a document, a request to
    the centre and a booked duty consultation; a manager with an import."""
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    doctor = await make_doctor(client, manager, centre["id"], name="Соколова Анна Викторовна")
    duty = await make_doctor(client, manager, centre["id"], duty=True, name="Белова Марина")
    patient = await make_patient(client, full_name="Иванов Сергей Петрович")
    document = await upload(client, patient["token"])
    request = await request_to_centre(client, patient, centre["id"])
    await ok(
        client,
        "POST",
        f"/consultations/{request['id']}/documents",
        patient["token"],
        {"document_ids": [document["id"]]},
    )
    booked = await book_slot(client, duty, patient, later(clock, minutes=5))
    await ok(
        client,
        "POST",
        "/slots",
        duty["token"],
        {
            "starts_at": later(clock, days=1).isoformat(),
            "ends_at": (later(clock, days=1) + timedelta(hours=1)).isoformat(),
            "slot_minutes": 30,
        },
        status=201,
    )
    form = FormData()
    form.add_field("file", samples.referral_table(2), filename="направления.csv")
    response = await client.post(
        "/api/v1/referral-imports", data=form, params={"dry_run": "true"}, headers=bearer(manager)
    )
    assert response.status in (200, 201), await response.text()
    report = await response.json()
    return {
        "manager": manager,
        "centre": centre,
        "doctor": doctor,
        "duty": duty,
        "patient": patient,
        "request": request,
        "booked": booked,
        "import": report,
    }


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_every_page_of_every_role(
    browser: Browser, client: AppClient, clock: FakeClock, viewport: ViewportSize
) -> None:
    world = await patient_world(client, clock)
    audit = Audit()
    patient_routes = [
        "/consultations",
        f"/consultations/{world['request']['id']}",
        f"/consultations/{world['booked']['id']}",
        "/new",
        "/documents",
        "/profile",
        "/password",
    ]
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, world["patient"]["user"]["phone"], PASSWORD)
    await audit_routes(page, audit, "patient", patient_routes)

    doctor_routes = [
        "/requests",
        "/today",
        "/slots",
        "/consultations",
        f"/consultations/{world['request']['id']}",
        "/profile",
    ]
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, world["doctor"]["phone"], NEW_PASSWORD)
    await audit_routes(page, audit, "doctor", doctor_routes)
    duty_routes = ["/slots", f"/consultations/{world['booked']['id']}"]
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, world["duty"]["phone"], NEW_PASSWORD)
    await audit_routes(page, audit, "duty doctor", duty_routes)

    manager = await staff(client, Role.MANAGER)
    manager_routes = [
        "/centres",
        f"/centres/{world['centre']['id']}",
        "/doctors",
        f"/doctors/{world['doctor']['id']}",
        "/imports",
        f"/imports/{world['import']['id']}",
        "/sla",
        "/outbox",
        "/profile",
    ]
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, manager["user"]["phone"], PASSWORD)
    await audit_routes(page, audit, "manager", manager_routes)

    routes = patient_routes + doctor_routes + duty_routes + manager_routes
    bells = 4  # each user's first page again, with the notifications panel open
    audit.assert_clean(len(LANGUAGES) * (len(routes) + bells))
