"""End-to-end tests: the web app in Debian's Chromium (Playwright, fake camera and
microphone) against the real server on loopback. One SQLite database per test: the
browser flows are about the pages; the services run on both databases elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser import launched_browser
from tests.factories import AppClient


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}


@pytest.fixture
async def browser(chromium: Path, client: AppClient) -> AsyncIterator[Browser]:
    """Chromium, closed before the server stops (its sockets would hold the server's
    shutdown until they time out)."""
    async with launched_browser(chromium) as launched:
        yield launched
