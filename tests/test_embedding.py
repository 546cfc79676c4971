"""The embeddable room: only the configured origins may frame it, and a host page on
another origin (docs/embedding-example.html, served as it is) receives the room's
``postMessage`` events and can send it commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page

from tests.browser import wait_in_page
from tests.factories import AppClient, assert_error
from tests.flows import ok
from tests.media_peers import MediaClient
from tests.servers import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "embedding-example.html"


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
async def host() -> AsyncIterator[TestServer]:
    """Another origin, serving the documented example host page."""

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(EXAMPLE)

    app = web.Application()
    app.router.add_get("/clinic.html", page)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    yield server
    await server.close()


def origin_of(server: TestServer) -> str:
    return str(server.make_url("/")).rstrip("/")


@pytest.fixture
def settings_overrides(host: TestServer) -> dict[str, Any]:
    return {
        "media_addresses": ["127.0.0.1"],
        "embed_origins": ["http://clinic.test", origin_of(host)],
    }


async def test_only_the_configured_origins_may_frame_the_room(
    client: AppClient, booked: dict[str, Any]
) -> None:
    path = f"/embed/consultations/{booked['id']}"
    page = await client.get(path, params={"token": "x", "origin": "http://clinic.test"})
    assert page.status == 200
    assert "text/html" in page.headers["Content-Type"]
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self' http://clinic.test" in policy
    assert "X-Frame-Options" not in page.headers
    assert page.headers["Cache-Control"] == "no-store"
    other = await client.get(path, params={"token": "x", "origin": "http://evil.test"})
    await assert_error(other, 403, "forbidden")
    bad = await client.get("/embed/consultations/not-an-id")
    await assert_error(bad, 404, "not_found")
    # Every other page still refuses to be framed.
    home = await client.get("/")
    assert home.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]


async def host_received(page: Page) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = await page.evaluate("window.received")
    return received


async def host_gets(page: Page, kind: str, seconds: float = 20) -> dict[str, Any]:
    """Wait until the host page has received a message of this type; return it."""
    async with asyncio.timeout(seconds):
        while True:
            for message in await host_received(page):
                if message["type"] == kind:
                    return message
            await asyncio.sleep(0.1)


async def test_a_host_page_receives_the_rooms_events(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
    host: TestServer,
) -> None:
    cid = booked["id"]
    doctor = room_doctor
    host_origin = origin_of(host)
    telemed = str(client.make_url("/")).rstrip("/")
    # The host's server mints a join token for the patient (never the session token).
    path = f"/consultations/{cid}/join-token"
    joining = await ok(client, "POST", path, booked["patient"]["token"], status=201)
    assert joining["url"] == f"/embed/consultations/{cid}?token={joining['token']}"
    room = f"{telemed}{joining['url']}&origin={quote(host_origin, safe='')}"
    context = await browser.new_context()
    # A frame's camera permission is the embedding page's (Chromium delegates it).
    for origin in (host_origin, telemed):
        await context.grant_permissions(["camera", "microphone"], origin=origin)
    page = await context.new_page()
    await page.goto(f"{host_origin}/clinic.html?room={quote(room, safe='')}")
    joined = await host_gets(page, "telemed:joined")
    assert joined["consultationId"] == cid
    assert joined["camera"] == "granted"
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= 20, seconds=20)

    # The host's command: leave. The room says so, and the doctor sees the patient go.
    await page.get_by_role("button", name="Выйти").click()
    await host_gets(page, "telemed:left")
    await doctor.peer.wait_for(lambda: bool(doctor.peer.events("room:participant_left")))
    await context.close()


# What an iOS app's WKScriptMessageHandler named "telemed" looks like to the page.
NATIVE_BRIDGE = """
window.nativeReceived = [];
const telemed = { postMessage: (m) => window.nativeReceived.push(m) };
window.webkit = { messageHandlers: { telemed } };
"""


async def test_a_mobile_webview_gets_events_through_its_bridge_and_sends_commands(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
) -> None:
    cid = booked["id"]
    telemed = str(client.make_url("/")).rstrip("/")
    joining = await ok(
        client, "POST", f"/consultations/{cid}/join-token", booked["patient"]["token"], status=201
    )
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=telemed)
    await context.add_init_script(NATIVE_BRIDGE)
    page = await context.new_page()
    # A WebView loads the room itself: no frame, no `origin`.
    await page.goto(f"{telemed}{joining['url']}")
    await wait_in_page(page, "window.nativeReceived.some((m) => m.type === 'telemed:joined')")
    joined = await page.evaluate("window.nativeReceived.find((m) => m.type === 'telemed:joined')")
    assert joined["consultationId"] == cid
    # The app's commands: mute, then leave.
    await page.evaluate("telemedCommand({type: 'telemed:mute', muted: true})")
    await wait_in_page(page, "window.telemedRoom.muted === true")
    await page.evaluate("telemedCommand({type: 'telemed:leave'})")
    await wait_in_page(page, "window.nativeReceived.some((m) => m.type === 'telemed:left')")
    doctor = room_doctor
    await doctor.peer.wait_for(lambda: bool(doctor.peer.events("room:participant_left")))
    await context.close()


async def test_too_early_is_said_in_the_users_words_with_the_opening_time(
    browser: Browser, client: AppClient, booked: dict[str, Any]
) -> None:
    # The consultation is tomorrow: the room opens 15 minutes before it.
    telemed = str(client.make_url("/")).rstrip("/")
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=telemed)
    page = await context.new_page()
    token = booked["patient"]["token"]
    await page.goto(f"{telemed}/embed/consultations/{booked['id']}?token={token}")
    await wait_in_page(page, "window.telemedRoom.phase === 'refused'")
    status = await page.locator("#status").inner_text()
    assert status.startswith("Комната консультации откроется ")
    assert "Оставьте страницу открытой" in status
    assert await page.evaluate("window.telemedRoom.error") == "too_late"
    await context.close()
