"""Driving the web app as people do: sign in through the form, follow links, read what
the page says. The pages' CSP forbids eval, so state is polled from here."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Locator, Page, ViewportSize

from tests.browser import wait_in_page as wait_in_page  # for the e2e tests
from tests.factories import AppClient

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


async def sign_in(page: Page, client: AppClient, login: str, password: str) -> None:
    """Sign in through the form, as a person would."""
    await open_app(page, client, "/login")
    await page.get_by_label("Телефон или e-mail").fill(login)
    await page.get_by_label("Пароль", exact=True).fill(password)
    before = await rendered(page)
    await page.get_by_role("button", name="Войти").click()
    await wait_in_page(page, f"window.telemedApp.rendered > {before} && window.telemedApp.user")


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
