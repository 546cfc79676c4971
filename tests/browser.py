"""Debian's Chromium through Playwright, with a fake camera and microphone.

One Chromium runs for the whole test session (``chromium_endpoint``); each test connects
to it over the DevTools protocol and works in browser contexts of its own, closed when
it ends, so tests share nothing but the process. Permission is granted (or not) per
browser context, never by a flag that would override a denial. Chromium comes from
Debian (``apt-get install chromium``, done by ``./dev test``); Playwright never
downloads a browser here."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.servers import free_port, wait_for_port

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


@pytest.fixture(scope="session")
def chromium_endpoint(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Chromium for the session, listening for DevTools on a loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(chromium),
            *ARGS,
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def browser(chromium_endpoint: str) -> AsyncIterator[Browser]:
    """The session's Chromium; the contexts a test opens are closed after it."""
    async with async_playwright() as playwright:
        connected = await playwright.chromium.connect_over_cdp(chromium_endpoint)
        try:
            yield connected
        finally:
            for context in connected.contexts[1:]:  # the first is Chromium's own
                await context.close()
            await connected.close()


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


async def phone_layout(page: Page) -> None:
    """The video room on a 375 x 812 phone, from the elements' boxes: the remote video
    takes at least 60 % of the screen, the self-view at most 10 %, the bar of buttons is
    on the screen (each button named), nothing scrolls; with the chat panel open, the
    panel ends above the bar (which stays usable)."""
    view = page.viewport_size
    assert view is not None
    assert (view["width"], view["height"]) == (375, 812), view
    video = await page.locator("#remotes video").first.bounding_box()
    bar = await page.locator("#controls").bounding_box()
    local = await page.locator("#local").bounding_box()
    assert video is not None
    assert bar is not None
    assert local is not None
    shown_height = min(video["y"] + video["height"], view["height"]) - max(video["y"], 0)
    assert video["width"] * shown_height >= 0.6 * view["width"] * view["height"], video
    assert local["width"] * local["height"] <= 0.1 * view["width"] * view["height"], local
    assert bar["y"] >= 0, bar
    assert bar["y"] + bar["height"] <= view["height"], bar
    assert await page.evaluate("document.scrollingElement.scrollHeight") <= view["height"]
    assert await page.evaluate("document.scrollingElement.scrollWidth") <= view["width"]
    for button in await page.locator("#controls button:visible").all():
        assert await button.get_attribute("aria-label"), await button.inner_html()
    if await page.locator("#room.chat-open").count():
        chat = await page.locator("#chat").bounding_box()
        assert chat is not None, "the chat panel is open but not shown"
        assert chat["y"] + chat["height"] <= bar["y"] + 1, (chat, bar)


async def joined_room(
    browser: Browser,
    origin: str,
    cid: str,
    token: str,
    who: str,
    *,
    watch: Callable[[Page], None] | None = None,
) -> Page:
    """The room page of consultation ``cid`` served by ``origin``, its camera and
    microphone allowed, joined with ``token``; its console printed, tagged ``who`` with
    the monotonic time (to line it up with the test's own prints). ``watch`` is given the
    page before it loads (to listen to its events from the start)."""
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=origin)
    page = await context.new_page()
    page.on("console", lambda message: print(f"{time.monotonic():.2f} {who}:", message.text))
    if watch is not None:
        watch(page)
    await page.goto(f"{origin}/static/room.html?consultation={cid}&token={token}")
    await wait_in_page(page, "window.telemedRoom.phase === 'prejoin'")
    await page.locator("#join:enabled").click()
    await wait_in_page(page, "window.telemedRoom.phase === 'joined'")
    return page
