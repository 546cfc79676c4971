"""End-to-end tests: the web app in Debian's Chromium (Playwright, fake camera and
microphone) against the real server on loopback. One SQLite database per test: the
browser flows are about the pages; the services run on both databases elsewhere."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}
