"""Driving the web app as people do: sign in through the form, follow links, read what
the page says. The pages' CSP forbids eval, so state is polled from here."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Locator, Page, ViewportSize

from telemed import db, keys
from telemed.demo import demo_password_hashes, load_demo
from tests.browser import wait_in_page as wait_in_page  # for the e2e tests
from tests.factories import AppClient
from tests.test_web_i18n import dictionary

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = ViewportSize(width=375, height=812)
DESKTOP = ViewportSize(width=1366, height=768)  # the most common laptop screen


def origin(client: AppClient) -> str:
    return str(client.make_url("/")).rstrip("/")


async def new_page(
    browser: Browser, client: AppClient, *, media: bool = False, phone: bool = False
) -> Page:
    """A fresh browser context (its own cookies), optionally allowed the fake camera
    and microphone, at phone or desktop size."""
    context: BrowserContext = await browser.new_context(
        viewport=PHONE if phone else DESKTOP, locale="ru-RU"
    )
    if media:
        await context.grant_permissions(["camera", "microphone"], origin=origin(client))
    page = await context.new_page()
    page.on("console", lambda message: print("browser:", message.type, message.text))
    page.on("pageerror", lambda error: print("browser error:", error))
    page.on("requestfailed", lambda request: print("browser failed:", request.url, request.failure))
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    return page


async def app_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("window.telemedApp")
    return state


async def open_app(page: Page, client: AppClient, hash_path: str = "/") -> None:
    await page.goto(f"{origin(client)}/#{hash_path}")
    await wait_in_page(page, "window.telemedApp && window.telemedApp.rendered > 0")


async def rendered(page: Page) -> int:
    return int(await page.evaluate("window.telemedApp.rendered"))


async def go(page: Page, hash_path: str) -> None:
    """Follow an in-app link and wait until its page is drawn."""
    before = await rendered(page)
    target = "#" + hash_path.lstrip("#")
    await page.evaluate(f"window.telemedGo({target!r})")
    await wait_in_page(page, f"window.telemedApp.rendered > {before}")


class Words:
    """What the pages say in one language, from the dictionaries they use
    (``web/i18n/<part>.<lang>.json``): the app's parts, or ``("room",)``. Called as the
    pages' ``t()``: ``words("new.slot", zone="Москва (UTC+3)")``."""

    def __init__(self, lang: str, parts: tuple[str, ...] = ("app", "manager")) -> None:
        self.lang = lang
        self.texts = {key: text for part in parts for key, text in dictionary(part, lang).items()}

    def __call__(self, key: str, **values: object) -> str:
        return re.sub(r"\{(\w+)\}", lambda name: str(values.get(name[1], "")), self.texts[key])

    def count(self, key: str, n: int, **values: object) -> str:
        """A count in words, in the language's plural form (as the pages' ``tCount``)."""
        return self(f"{key}_{plural_form(self.lang, n)}", n=n, **values)


def plural_form(lang: str, n: int) -> str:
    """``Intl.PluralRules(lang).select(n)`` for whole numbers (41 год, 64 года, 15 лет)."""
    if lang != "ru":
        return "one" if n == 1 else "other"
    if n % 10 == 1 and n % 100 != 11:
        return "one"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "few"
    return "many"


async def choose_language(page: Page, lang: str) -> None:
    """The header's language menu, as a user picks it (kept on the device, and in the
    account when signed in); the page is drawn again."""
    if await page.evaluate("document.documentElement.lang") == lang:
        return
    before = await rendered(page)
    await page.locator("#lang").select_option(lang)
    await wait_in_page(
        page,
        f"window.telemedApp.rendered > {before} && document.documentElement.lang === {lang!r}",
    )


async def click_and_draw(page: Page, target: Locator) -> None:
    """Click something that leads to another page, and wait until it is drawn."""
    before = await rendered(page)
    await target.click()
    await wait_in_page(page, f"window.telemedApp.rendered > {before}")


async def sign_in(
    page: Page, client: AppClient, login: str, password: str, lang: str | None = None
) -> None:
    """Sign in through the form, as a person would: in Russian (the default), or with
    ``lang`` chosen in the header's menu first."""
    await open_app(page, client, "/login")
    if lang is not None:
        await choose_language(page, lang)
    words = Words(lang or "ru")
    await page.get_by_label(words("login.login")).fill(login)
    await page.get_by_label(words("login.password"), exact=True).fill(password)
    before = await rendered(page)
    await page.get_by_role("button", name=words("login.submit")).click()
    await wait_in_page(page, f"window.telemedApp.rendered > {before} && window.telemedApp.user")


async def change_password(page: Page, current: str, new: str, lang: str = "ru") -> None:
    """The forced change after a sign-in with a temporary password."""
    words = Words(lang)
    assert (await app_state(page))["route"] == "/password"
    await page.get_by_label(words("password.current")).fill(current)
    await page.get_by_label(words("password.new")).fill(new)
    await click_and_draw(page, page.get_by_role("button", name=words("password.submit")))
    await wait_in_page(page, "window.telemedApp.route === '/consultations'")
    assert (await app_state(page))["user"]["must_change_password"] is False


async def demo_data(app: web.Application) -> None:
    """What ``./dev run`` loads before it serves (``telemed serve --demo``)."""
    hashes = await demo_password_hashes(app[keys.PASSWORDS])
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        await load_demo(session, password_hashes=hashes, now=app[keys.CLOCK].now())


async def kept_text(page: Page, message_id: str, lang: str = "ru") -> str:
    """A message kept in the outbox (no gateway), its full text opened as the manager
    opens it: in the row under the message's."""
    words = Words(lang)
    row = page.locator(f"#outbox tr.kept-row[data-for='{message_id}']")
    await row.locator("summary").click()
    assert words("outbox.keptLabel") in await row.inner_text()
    return await row.locator(".kept-text").inner_text()


ROOM = "window.telemedRoom"


async def enter_room(page: Page, consultation_id: str) -> None:
    """From the consultation's page into its video room, past the device check."""
    await go(page, f"/consultations/{consultation_id}")
    await page.locator("#join-room").click()
    await page.wait_for_url("**/room.html?**")
    await wait_in_page(page, f"{ROOM}.phase === 'prejoin'")
    await page.locator("#join").click()
    await wait_in_page(page, f"{ROOM}.phase === 'joined'")


async def say_in_room(page: Page, text: str) -> None:
    """Write in the room's chat (on a phone, opening its panel first)."""
    toggle = page.locator("#chat-toggle")
    if await toggle.is_visible() and await toggle.get_attribute("aria-expanded") == "false":
        await toggle.click()
    await page.locator("#chat-input").fill(text)
    await page.locator("#chat-input").press("Enter")


async def screenshot(page: Page, name: str, tmp_path: Path, at: Locator | None = None) -> Path:
    """A screenshot for the README (from the top of the page, or with ``at`` at the top):
    written to docs/screenshots when TELEMED_SCREENSHOTS=1 (then committed), else to
    the test's folder."""
    folder = SCREENSHOTS if os.environ.get("TELEMED_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.evaluate(
        "window.scrollTo(0, 0); document.getElementById('toast')?.classList.remove('shown')"
    )
    if at is not None:
        await at.evaluate("(element) => element.scrollIntoView({block: 'start'})")
    await page.wait_for_timeout(300)  # the toast's fade
    await page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 5000, "an empty screenshot"
    return path
