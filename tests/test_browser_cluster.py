"""A real browser on each side of a call whose sides are on two server processes:
Chromium pages with fake cameras and microphones, the doctor's page connected to one
process and the patient's to the other, see each other's video through the room, which
lives on one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Browser

from tests.browser import joined_room, wait_in_page
from tests.nodes import book, node_group
from tests.servers import PostgresServer, RedisServer


async def test_browsers_on_two_processes_hold_a_call(
    browser: Browser, postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with node_group(postgres, redis_server, tmp_path, 2) as group:
        [booked] = await book(group, 1)
        cid = booked.consultation_id
        doctor = await joined_room(browser, group.url(0), cid, booked.doctor_token, "doctor")
        patient = await joined_room(browser, group.url(1), cid, booked.patient_token, "patient")
        for page in (doctor, patient):
            await wait_in_page(page, "window.telemedRoom.remoteFrames > 30")
            state: dict[str, Any] = await page.evaluate("window.telemedRoom")
            assert state["remoteTracks"] >= 2, state  # the other's camera and microphone
            assert state["error"] is None, state
        owner = await group.owner(cid)
        assert owner in (0, 1)
        assert await group.rooms(1) == {owner: 1, 1 - owner: 0}
