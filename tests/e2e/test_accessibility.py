"""Accessibility of the web app in Chromium: axe-core (from npm) finds no serious or
critical violation on any page of any role (patient, doctor, manager), the sign-in
pages, the video room before and after joining, in Russian and in English, on a phone
(375 x 812) and a desktop (1366 x 768); the keyboard reaches the main controls with a
visible focus and works them; the room tells screen readers what happens in it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import FormData
from playwright.async_api import Browser, BrowserContext, Page, Route, ViewportSize

from telemed import keys
from telemed.accounts.models import Role
from telemed.clock import FakeClock
from tests import samples
from tests.e2e.app_pages import choose_language, go, open_app, origin, sign_in, wait_in_page
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
      .map((v) => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")} :: ${n.failureSummary}`),
      })),
  };
}"""


class Audit:
    """axe's findings over many pages, reported together at the end."""

    def __init__(self) -> None:
        self.pages = 0
        self.found: list[str] = []

    async def check(self, page: Page, where: str) -> None:
        if not await page.evaluate("Boolean(window.axe)"):
            at = urlsplit(page.url)
            await page.add_script_tag(url=f"{at.scheme}://{at.netloc}{AXE_PATH}")
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


async def new_context(
    browser: Browser, client: AppClient, viewport: ViewportSize
) -> BrowserContext:
    """A context at this size that can load axe from the page's origin. Service workers
    are blocked here: they are the subject of test_installable, and a worker would
    answer the route's request before the context could."""
    # A missing file would leave the route unanswered (and the test waiting): say so.
    assert AXE.is_file(), f"{AXE} is missing: run npm ci (./dev test does)"
    context = await browser.new_context(viewport=viewport, locale="ru-RU", service_workers="block")

    async def axe(route: Route) -> None:
        await route.fulfill(path=AXE, content_type="text/javascript")

    await context.route(f"**{AXE_PATH}", axe)
    return context


async def new_page(context: BrowserContext) -> Page:
    page = await context.new_page()
    page.on("pageerror", lambda error: print("browser error:", error))
    return page


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
        await page.locator(
            "#view h1", has_text="Page not found" if lang == "en" else "Страница не найдена"
        ).wait_for()
        await audit.check(page, f"public {lang} not found")
    # A refused sign-in shows its error in the form.
    await go(page, "/login")
    await page.locator("input[name=login]").fill("+79120000000")
    await page.locator("input[name=password]").fill("Wrong-password-1")
    await page.locator("form button[type=submit]").click()
    await page.locator("form .error").wait_for()
    await audit.check(page, "public en #/login refused")
    audit.assert_clean(len(LANGUAGES) * (len(routes) + 1) + 1)


async def test_the_audit_finds_what_is_wrong(browser: Browser, client: AppClient) -> None:
    """The check can fail: an input without a label and a picture without a text, put
    into the sign-in page, are found as critical."""
    page = await new_page(await new_context(browser, client, DESKTOP))
    await open_app(page, client, "/login")
    await page.evaluate(
        """() => {
          const form = document.querySelector("#view form");
          form.append(document.createElement("input"));
          const picture = document.createElement("img");
          picture.src = "/static/icons/icon-192.png";
          form.append(picture);
        }"""
    )
    audit = Audit()
    await audit.check(page, "spoilt")
    found = "\n".join(audit.found)
    assert "critical label " in found, found
    assert "critical image-alt " in found, found


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
    # Two more requests that the doctor schedules and holds: one ended (the conclusion
    # to write), one concluded (the conclusion to read).
    held = []
    for starts in (2, 15):
        asked = await request_to_centre(client, patient, centre["id"], diagnosis="Гипертония")
        path = f"/consultations/{asked['id']}"
        at = later(clock, minutes=starts).isoformat()
        body = {"starts_at": at, "duration_min": 10}
        await ok(client, "POST", f"{path}/schedule", doctor["token"], body)
        await ok(client, "POST", f"{path}/start", doctor["token"])
        await ok(client, "POST", f"{path}/end", doctor["token"])
        held.append(asked)
    conclusion = {
        "diagnosis": "Гипертоническая болезнь II стадии",
        "findings": "Давление 150/95, жалобы на головные боли.",
        "recommendations": "Контроль давления дважды в день, повторная консультация через месяц.",
    }
    path = f"/consultations/{held[0]['id']}/conclusion"
    await ok(client, "POST", path, doctor["token"], conclusion, status=201)
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
        "concluded": held[0],
        "completed": held[1],
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
        f"/consultations/{world['concluded']['id']}",
        f"/consultations/{world['completed']['id']}",
        "/new",
        "/documents",
        "/profile",
        "/password",
    ]
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, world["patient"]["user"]["phone"], PASSWORD)
    await audit_routes(page, audit, "patient", patient_routes)
    await go(page, f"/consultations/{world['concluded']['id']}")
    assert await page.locator("#conclusion").count() == 1  # the conclusion was checked too

    doctor_routes = [
        "/requests",
        "/today",
        "/slots",
        "/consultations",
        f"/consultations/{world['request']['id']}",
        f"/consultations/{world['concluded']['id']}",
        f"/consultations/{world['completed']['id']}",
        "/profile",
    ]
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, world["doctor"]["phone"], NEW_PASSWORD)
    await audit_routes(page, audit, "doctor", doctor_routes)
    await go(page, f"/consultations/{world['completed']['id']}")
    assert await page.locator("#conclusion-form").count() == 1  # and the form to write it
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


# Everything the room's live regions said, in order (a change may be quicker than a poll).
RECORD_SAID = """() => {
  window.said = [];
  for (const id of ["status", "announcer"]) {
    const region = document.getElementById(id);
    new MutationObserver(() => window.said.push(region.textContent))
      .observe(region, { childList: true, characterData: true, subtree: true });
  }
}"""


async def room_page(
    context: BrowserContext, client: AppClient, cid: str, token: str, lang: str
) -> Page:
    """The room page of ``cid`` before joining, camera and microphone allowed."""
    await context.grant_permissions(["camera", "microphone"], origin=origin(client))
    page = await new_page(context)
    await page.goto(
        f"{origin(client)}/static/room.html?consultation={cid}&token={token}&lang={lang}"
    )
    await wait_in_page(page, "window.telemedRoom.phase === 'prejoin'")
    return page


async def said(page: Page, text: str) -> None:
    await wait_in_page(page, f"window.said.includes({text!r})")


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_the_room_before_and_after_joining(
    browser: Browser, client: AppClient, clock: FakeClock, viewport: ViewportSize
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    audit = Audit()
    for lang in LANGUAGES:
        duty = await make_doctor(client, manager, centre["id"], duty=True)
        patient = await make_patient(client)
        booked = await book_slot(client, duty, patient, later(clock, minutes=5))
        cid = booked["id"]
        patient_page = await room_page(
            await new_context(browser, client, viewport), client, cid, patient["token"], lang
        )
        await audit.check(patient_page, f"room {lang} patient before joining")
        await patient_page.locator("#join").click()
        await wait_in_page(patient_page, "window.telemedRoom.phase === 'joined'")
        # Asked on joining whether the call may be recorded: the dialog, then the room.
        await patient_page.locator("#consent-dialog").wait_for()
        await audit.check(patient_page, f"room {lang} patient asked to consent")
        await patient_page.locator("#consent-no").click()
        await audit.check(patient_page, f"room {lang} patient waiting")

        doctor_page = await room_page(
            await new_context(browser, client, viewport), client, cid, duty["token"], lang
        )
        await audit.check(doctor_page, f"room {lang} doctor before joining")
        await doctor_page.locator("#join").click()
        await wait_in_page(doctor_page, "window.telemedRoom.phase === 'joined'")
        await wait_in_page(patient_page, "window.telemedRoom.remoteTracks > 0")
        await audit.check(doctor_page, f"room {lang} doctor joined")
        await audit.check(patient_page, f"room {lang} patient with the doctor")
        if viewport == PHONE:
            await patient_page.locator("#chat-toggle").click()
            await audit.check(patient_page, f"room {lang} patient with the chat open")
        await doctor_page.locator("#end").click()
        await audit.check(doctor_page, f"room {lang} doctor asked to end")
        await doctor_page.locator("#end-cancel").click()
        for page in (patient_page, doctor_page):
            await page.context.close()
    audit.assert_clean(len(LANGUAGES) * (8 if viewport == PHONE else 7))


async def test_the_room_tells_screen_readers_what_happens(
    browser: Browser, client: AppClient, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    patient = await make_patient(client)
    cid = (await book_slot(client, duty, patient, later(clock, minutes=5)))["id"]
    patient_page = await room_page(
        await new_context(browser, client, PHONE), client, cid, patient["token"], "ru"
    )
    # Both regions are live and in the accessibility tree (the announcer unseen).
    for region in ("#status", "#announcer"):
        assert await patient_page.locator(region).get_attribute("aria-live") == "polite"
        assert await patient_page.locator(region).get_attribute("role") == "status"
    await patient_page.evaluate(RECORD_SAID)
    await patient_page.locator("#join").click()
    await said(patient_page, "Ожидаем врача…")
    await patient_page.locator("#consent-yes").click()

    doctor_page = await room_page(
        await new_context(browser, client, DESKTOP), client, cid, duty["token"], "en"
    )
    await doctor_page.evaluate(RECORD_SAID)
    await doctor_page.locator("#join").click()
    await said(doctor_page, "The consultation is on")
    await said(patient_page, "Врач в консультации")
    await said(patient_page, "Консультация идёт")

    await doctor_page.locator("#record-start").click()
    await said(doctor_page, "Recording")
    await said(patient_page, "Идёт запись")
    await patient_page.get_by_role("status").filter(has_text="Идёт запись").wait_for()
    await doctor_page.locator("#record-stop").click()
    await said(doctor_page, "Recording stopped")
    await said(patient_page, "Запись остановлена")

    # The server loses the patient's socket: the page says it reconnects, then joins again.
    sio = client.app[keys.SIO]
    patient_id = (await ok(client, "GET", "/me", patient["token"]))["id"]
    room = client.app[keys.ROOMS].get(cid)
    assert room is not None
    await sio.eio.disconnect(sio.manager.eio_sid_from_sid(room.participants[patient_id].sid, "/"))
    await said(patient_page, "Связь прервалась, переподключаемся…")
    await wait_in_page(
        patient_page,
        "window.telemedRoom.joins === 2 && window.telemedRoom.phase === 'joined'",
        seconds=40,
    )

    # The doctor leaves, and the patient hears it and waits again.
    count = int(await patient_page.evaluate("window.said.length"))
    await doctor_page.locator("#leave").click()
    await said(patient_page, "Врач покинул(а) консультацию")
    await wait_in_page(patient_page, f"window.said.slice({count}).includes('Ожидаем врача…')")
    await said(doctor_page, "You have left the consultation")


# The focused element, whether it was focused before in this round, and whether its
# focus can be seen: a :focus-visible outline of at least 2 px whose colour stands out
# from the background around it by 3:1 at least (WCAG 1.4.11, non-text contrast).
FOCUSED = """() => {
  const element = document.activeElement;
  if (!element || element === document.body) return null;
  const style = getComputedStyle(element);
  const box = element.getBoundingClientRect();
  const seen = window.tabbed.has(element);
  window.tabbed.add(element);
  const rgb = (colour) => (colour.match(/[\\d.]+/g) || []).map(Number);
  const linear = (v) => (v / 255 <= 0.03928 ? v / 255 / 12.92 : ((v / 255 + 0.055) / 1.055) ** 2.4);
  const luminance = ([r, g, b]) => 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  let around = [255, 255, 255];
  for (let node = element.parentElement; node; node = node.parentElement) {
    const colour = rgb(getComputedStyle(node).backgroundColor);
    if (colour.length === 3 || colour[3] > 0.5) {
      around = colour.slice(0, 3);
      break;
    }
  }
  const ring = luminance(rgb(style.outlineColor));
  const [light, dark] = [ring, luminance(around)].sort((a, b) => b - a);
  const contrast = (light + 0.05) / (dark + 0.05);
  return {
    seen,
    key: element.getAttribute("name") || element.getAttribute("href") || element.id
      || (element.textContent || "").trim().slice(0, 40) || element.tagName,
    tag: element.tagName,
    contrast: Math.round(contrast * 100) / 100,
    visible: element.matches(":focus-visible") && style.outlineStyle !== "none"
      && parseFloat(style.outlineWidth) >= 2 && contrast >= 3
      && box.width > 0 && box.height > 0,
  };
}"""


async def tab_through(page: Page, limit: int = 150) -> list[str]:
    """Tab round the whole page, until the focus comes back to an element it was on;
    every stop must show its focus. Returns what was focused, in order."""
    await page.evaluate("window.tabbed = new Set()")
    reached: list[str] = []
    unseen: list[str] = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused: dict[str, Any] | None = await page.evaluate(FOCUSED)
        if focused is None:
            continue  # past the last element: the next Tab starts again at the top
        if focused["seen"]:
            break
        reached.append(focused["key"])
        if not focused["visible"]:
            unseen.append(f"{focused['tag']} {focused['key']} (contrast {focused['contrast']})")
    assert not unseen, f"focus not visible on {unseen} ({page.url})"
    return reached


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_the_keyboard_reaches_and_works_the_main_controls(
    browser: Browser, client: AppClient, clock: FakeClock, viewport: ViewportSize
) -> None:
    world = await patient_world(client, clock)
    page = await new_page(await new_context(browser, client, viewport))
    await open_app(page, client, "/login")
    reached = await tab_through(page)
    first = reached.index("#view")  # the skip link, then the brand and the language
    assert reached[first : first + 3] == ["#view", "#/", "lang"], " ".join(reached)
    for control in ("login", "password", "#/reset", "#/register"):
        assert control in reached, (control, " ".join(reached))
    assert any(key in ("Войти", "Sign in") for key in reached), " ".join(reached)

    # Signing in with the keyboard alone.
    await page.evaluate("window.scrollTo(0, 0)")
    await page.locator("input[name=login]").focus()
    await page.keyboard.type(world["patient"]["user"]["phone"])
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await wait_in_page(page, "window.telemedApp.route === '/consultations'")

    # The patient's main page: the skip link, the sections, the bell, the consultations.
    reached = await tab_through(page)
    for control in (
        "#view",
        "#/consultations",
        "#/new",
        "#/documents",
        "bell",
        "lang",
        "#/profile",
    ):
        assert control in reached, (control, " ".join(reached))
    for consultation in (world["request"], world["booked"]):
        assert f"#/consultations/{consultation['id']}" in reached, reached
    # The skip link takes the focus to the page's content.
    await page.locator("a.skip").focus()
    assert await page.locator("a.skip").is_visible()  # shown while it has the focus
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "view"
    assert await page.evaluate("window.telemedApp.route") == "/consultations"
    # The bell opens with Enter and closes with Escape, the focus back on it.
    await page.locator("#bell").focus()
    await page.keyboard.press("Enter")
    assert await page.locator("#bell").get_attribute("aria-expanded") == "true"
    assert await page.locator("#bell-panel").is_visible()
    await page.keyboard.press("Escape")
    assert await page.locator("#bell-panel").is_hidden()
    assert await page.evaluate("document.activeElement.id") == "bell"

    # A consultation's page and a new request: every control reached, focus visible.
    await go(page, f"/consultations/{world['request']['id']}")
    reached = await tab_through(page)
    assert "Отменить консультацию" in reached, " ".join(reached)
    await go(page, f"/consultations/{world['booked']['id']}")
    reached = await tab_through(page)
    assert "body" in reached, " ".join(reached)  # the chat's message
    await go(page, "/new")
    reached = await tab_through(page)
    assert len(reached) > 8, reached

    # The doctor's and the manager's main pages.
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, world["doctor"]["phone"], NEW_PASSWORD)
    for route in ("/requests", "/slots", f"/consultations/{world['request']['id']}"):
        await go(page, route)
        reached = await tab_through(page)
        assert f"#{route}" in reached or route.startswith("/consultations/"), (route, reached)
    assert "schedule-form" in await page.locator("form").evaluate_all(
        "forms => forms.map((form) => form.id)"
    )
    manager = await staff(client, Role.MANAGER)
    page = await new_page(await new_context(browser, client, viewport))
    await sign_in(page, client, manager["user"]["phone"], PASSWORD)
    for route in ("/centres", "/doctors", "/imports", "/sla", "/outbox"):
        await go(page, route)
        reached = await tab_through(page)
        assert f"#{route}" in reached, (route, reached)
    await go(page, "/centres")
    reached = await tab_through(page)
    assert f"#/centres/{world['centre']['id']}" in reached, " ".join(reached)
    # The new centre's form opens from its summary with the keyboard.
    await page.locator("summary", has_text="Добавить центр").focus()
    await page.keyboard.press("Enter")
    reached = await tab_through(page)
    assert {"name", "region", "profiles"} <= set(reached), " ".join(reached)


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_the_room_works_from_the_keyboard(
    browser: Browser, client: AppClient, clock: FakeClock, viewport: ViewportSize
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    patient = await make_patient(client)
    cid = (await book_slot(client, duty, patient, later(clock, minutes=5)))["id"]
    page = await room_page(
        await new_context(browser, client, viewport), client, cid, patient["token"], "ru"
    )
    reached = await tab_through(page)
    back = f"/#/consultations/{cid}"
    for control in ("camera-select", "microphone-select", "speaker-test", "join", back):
        assert control in reached, (control, " ".join(reached))
    await page.locator("#join").focus()
    await page.keyboard.press("Enter")
    await wait_in_page(page, "window.telemedRoom.phase === 'joined'")
    await page.locator("#consent-dialog").wait_for()
    # The dialog holds the focus; Escape or a button closes it.
    assert await page.evaluate("document.activeElement.closest('dialog')?.id") == "consent-dialog"
    await page.keyboard.press("Escape")
    await page.locator("#consent-dialog").wait_for(state="hidden")
    reached = await tab_through(page)
    controls = ["mute", "camera-toggle", "audio-only", "leave", "body", "consent"]
    if viewport == PHONE:
        controls.remove("body")  # the chat is a panel, behind its button
        controls.append("chat-toggle")
    for control in controls:
        assert control in reached, (control, " ".join(reached))
    await page.locator("#mute").focus()
    await page.keyboard.press("Space")
    assert await page.locator("#mute").get_attribute("aria-pressed") == "true"
    if viewport == PHONE:
        await page.locator("#chat-toggle").focus()
        await page.keyboard.press("Enter")
        assert await page.locator("#chat-toggle").get_attribute("aria-expanded") == "true"
        assert await page.locator("#chat-input").is_visible()
