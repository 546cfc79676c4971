"""Debian's Chromium through Playwright, with a fake camera and microphone.

Permission is granted (or not) per browser context, never by a flag that would override
a denial. Chromium comes from Debian (``apt-get install chromium``, done by ``./dev
test``); Playwright never downloads a browser here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    assert CHROMIUM.exists(), "Chromium is missing: ./dev test installs it (apt-get)"
    return CHROMIUM


@asynccontextmanager
async def launched_browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with launched_browser(chromium) as launched:
        yield launched


async def wait_in_page(page: Page, expression: str, seconds: float = 20) -> None:
    """Poll ``expression`` from here until it holds: the pages' CSP forbids the eval that
    Playwright's ``wait_for_function`` uses, and the tests must not lift the CSP they
    check. On time-out, says what the page shows (and the room's state, if a room)."""
    try:
        async with asyncio.timeout(seconds):
            while not await page.evaluate(expression):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    except TimeoutError:
        room = await page.evaluate("window.telemedRoom || null")
        text = await page.locator("body").inner_text()
        raise AssertionError(f"{expression} never held; room {room}; page: {text[:2000]}") from None
