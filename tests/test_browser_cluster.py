"""A real browser on each side of a call whose sides are on two server processes:
Chromium pages with fake cameras and microphones, the doctor's page connected to one
process and the patient's to the other, see each other's video through the room, which
lives on one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from tests.browser import wait_in_page
from tests.nodes import NodeGroup, book, node_group
from tests.servers import PostgresServer, RedisServer


async def _room_page(browser: Browser, group: NodeGroup, n: int, cid: str, token: str) -> Page:
    """The room page, served by process ``n``, joined."""
    origin = group.url(n)
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=origin)
    page = await context.new_page()
    page.on("console", lambda message: print(f"browser {n}:", message.text))
    await page.goto(f"{origin}/static/room.html?consultation={cid}&token={token}")
    await wait_in_page(page, "window.telemedRoom.phase === 'prejoin'")
    await page.locator("#join:enabled").click()
    await wait_in_page(page, "window.telemedRoom.phase === 'joined'")
    return page


async def test_browsers_on_two_processes_hold_a_call(
    browser: Browser, postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with node_group(postgres, redis_server, tmp_path, 2) as group:
        [booked] = await book(group, 1)
        cid = booked.consultation_id
        doctor = await _room_page(browser, group, 0, cid, booked.doctor_token)
        patient = await _room_page(browser, group, 1, cid, booked.patient_token)
        for page in (doctor, patient):
            await wait_in_page(page, "window.telemedRoom.remoteFrames > 30")
            state: dict[str, Any] = await page.evaluate("window.telemedRoom")
            assert state["remoteTracks"] >= 2, state  # the other's camera and microphone
            assert state["error"] is None, state
        owner = await group.owner(cid)
        assert owner in (0, 1)
        assert await group.rooms(1) == {owner: 1, 1 - owner: 0}
