"""A real browser in the video room: Chromium with a fake camera and microphone joins a
consultation with an aiortc doctor; media flows both ways through the relay; the
recording of both decodes. With the permission denied, the page says so and the room
(the doctor) sees it."""

from __future__ import annotations

import asyncio
from typing import Any

import av
import pytest
from playwright.async_api import Browser, Page

from telemed import keys
from tests.factories import AppClient
from tests.flows import ok
from tests.media_peers import MediaClient


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}


async def open_room(
    browser: Browser, client: AppClient, booked: dict[str, Any], *, allow: bool, lang: str = ""
) -> Page:
    origin = str(client.make_url("/")).rstrip("/")
    context = await browser.new_context()
    if allow:
        await context.grant_permissions(["camera", "microphone"], origin=origin)
    page = await context.new_page()
    page.on("console", lambda message: print("browser:", message.text))
    token = booked["patient"]["token"]
    choice = f"&lang={lang}" if lang else ""
    await page.goto(f"{origin}/static/room.html?consultation={booked['id']}&token={token}{choice}")
    return page


async def room_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("window.telemedRoom")
    return state


async def wait_in_page(page: Page, expression: str, seconds: float = 20) -> None:
    """Poll ``expression`` from here: the page's CSP forbids the eval that Playwright's
    ``wait_for_function`` uses, and the test must not lift the CSP it checks."""
    try:
        async with asyncio.timeout(seconds):
            while not await page.evaluate(expression):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    except TimeoutError:
        status = await page.locator("#status").inner_text()
        raise AssertionError(f"{expression}: {await room_state(page)} «{status}»") from None


async def test_a_browser_patient_and_an_aiortc_doctor_see_each_other_and_are_recorded(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
) -> None:
    doctor = room_doctor
    page = await open_room(browser, client, booked, allow=True)
    await wait_in_page(page, "window.telemedRoom.phase === 'joined'")
    state = await room_state(page)
    assert (state["camera"], state["microphone"]) == ("granted", "granted")
    # The level meter moves with the fake microphone's beep.
    await wait_in_page(page, "window.telemedRoom.micLevel > 0.05")

    # Both directions: the doctor decodes the browser's camera and microphone, the page
    # plays the doctor's video.
    try:
        await doctor.peer.wait_for(
            lambda: doctor.decoded["video"] >= 30 and doctor.decoded["audio"] >= 30, seconds=30
        )
    except TimeoutError:
        room = client.app[keys.ROOMS].get(booked["id"])
        assert room is not None
        server = {
            p.role: (
                {k: v.frames for k, v in p.publications.items()},
                {k: (t.forwarded, t.dropped) for k, t in p.viewing.items()},
                p.pc.connectionState if p.pc else None,
                p.pc.signalingState if p.pc else None,
            )
            for p in room.participants.values()
        }
        raise AssertionError(
            f"doctor got {dict(doctor.decoded)}; page {await room_state(page)}; server {server}"
        ) from None
    await wait_in_page(page, "window.telemedRoom.remoteFrames >= 30", seconds=30)
    assert (640, 480) in doctor.sizes

    # The server's check of the browser's media reaches the doctor.
    cid = booked["id"]
    await doctor.peer.wait_for(
        lambda: any(
            c["camera"]["state"] == "ok" and c["microphone"]["state"] == "ok"
            for c in doctor.peer.events("media:status_changed")
        ),
        seconds=20,
    )

    # Recording with consent: the patient consents in the page, the doctor too, and starts.
    await page.get_by_role("button", name="Согласен(на) на запись").click()

    def patient_consented() -> bool:
        return any(
            consent["granted"]
            for change in doctor.peer.events("recording:state_changed")
            for consent in change["recording"]["consents"]
        )

    await doctor.peer.wait_for(patient_consented)  # the click's event reached the server
    command = {"consultation_id": cid}
    assert (await doctor.peer.call("recording:consent", {**command, "granted": True}))["ok"]
    started = await doctor.peer.call("recording:start", command)
    assert started["ok"], started
    await wait_in_page(page, "window.telemedRoom.recording === true")
    await asyncio.sleep(3)
    assert (await doctor.peer.call("recording:stop", command))["ok"]
    listed = await ok(client, "GET", f"/consultations/{cid}/recordings", booked["doctor"]["token"])
    assert len(listed["items"]) == 2
    data_dir = client.app[keys.SETTINGS].data_dir
    for item in listed["items"]:
        path = next((data_dir / "recordings").rglob(f"{item['user_id']}-*.webm"))
        counts = {"video": 0, "audio": 0}
        with av.open(str(path)) as container:
            for frame in container.decode(*container.streams):
                counts["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
        assert counts["video"] >= 20, (item, counts)  # the fake camera: 20 fps or so
        assert counts["audio"] >= 50, (item, counts)
    await page.context.close()


@pytest.mark.parametrize(("lang", "explained"), [("", "запрещён"), ("en", "blocked")])
async def test_a_denied_camera_is_explained_and_shown_to_the_doctor(
    browser: Browser,
    client: AppClient,
    booked: dict[str, Any],
    room_doctor: MediaClient,
    lang: str,
    explained: str,
) -> None:
    doctor = room_doctor
    page = await open_room(browser, client, booked, allow=False, lang=lang)
    await wait_in_page(page, "['joined', 'failed', 'refused'].includes(window.telemedRoom.phase)")
    state = await room_state(page)
    assert state["camera"] == "denied"
    assert explained in await page.locator("#status").inner_text()
    assert await page.evaluate("document.documentElement.lang") == (lang or "ru")
    await doctor.peer.wait_for(
        lambda: any(
            c["camera"]["permission"] == "denied"
            for c in doctor.peer.events("media:status_changed")
        )
    )
    await page.context.close()
