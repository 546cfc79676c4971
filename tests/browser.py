"""Debian's Chromium through Playwright, with a fake camera and microphone.

Permission is granted (or not) per browser context, never by a flag that would override
a denial. Chromium comes from Debian (``apt-get install chromium``, done by ``./dev
test``); Playwright never downloads a browser here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

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
