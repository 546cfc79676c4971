"""RTP forwarding with a real browser: Chromium (which sends RTX, abs-send-time and its
own payload types and extension ids, and renumbers nothing) decodes the video the relay
forwards from an aiortc doctor, also after the doctor's connection is replaced, in the
same incoming stream; and the doctor decodes the browser's video after the browser's
own connection is replaced."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page

from telemed import keys
from tests.browser import wait_in_page
from tests.factories import AppClient
from tests.media_peers import MediaClient

# Keeps every RTCPeerConnection the page makes (the room's modules keep theirs to
# themselves), so that the test can read the browser's own statistics.
KEEP_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.testConnections = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.testConnections.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""

# The inbound video streams of the page's newest connection, from its own statistics.
INBOUND_VIDEO = """
async () => {
  const pc = window.testConnections[window.testConnections.length - 1];
  const stats = await pc.getStats();
  const streams = [];
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      streams.push({ssrc: s.ssrc, framesDecoded: s.framesDecoded || 0,
                    keyFramesDecoded: s.keyFramesDecoded || 0, pliCount: s.pliCount || 0});
    }
  });
  return streams;
}
"""


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"media_addresses": ["127.0.0.1"]}


async def patient_page(browser: Browser, client: AppClient, booked: dict[str, Any]) -> Page:
    """The patient's room page, joined, its connections kept for their statistics."""
    origin = str(client.make_url("/")).rstrip("/")
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=origin)
    await context.add_init_script(KEEP_CONNECTIONS)
    page = await context.new_page()
    page.on("console", lambda message: print("browser:", message.text))
    token = booked["patient"]["token"]
    await page.goto(f"{origin}/static/room.html?consultation={booked['id']}&token={token}")
    await wait_in_page(page, "window.telemedRoom.phase === 'prejoin'")
    await page.locator("#join:enabled").click()
    await wait_in_page(page, "window.telemedRoom.phase === 'joined'")
    return page


async def inbound_video(page: Page) -> list[dict[str, Any]]:
    streams: list[dict[str, Any]] = await page.evaluate(INBOUND_VIDEO)
    return streams


async def decoded_frames(page: Page) -> int:
    return sum(s["framesDecoded"] for s in await inbound_video(page))


async def test_a_browser_decodes_forwarded_video_across_rejoins(
    browser: Browser, client: AppClient, booked: dict[str, Any], room_doctor: MediaClient
) -> None:
    doctor = room_doctor
    page = await patient_page(browser, client, booked)
    await wait_in_page(page, "window.telemedRoom.remoteFrames >= 30", seconds=30)
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= 30, seconds=30)
    first = await inbound_video(page)
    assert len(first) == 1
    assert first[0]["framesDecoded"] >= 30
    assert first[0]["keyFramesDecoded"] >= 1

    # The doctor's connection is replaced: the browser keeps its one incoming stream (the
    # relay's SSRC, its sequence numbers and picture ids going on), and decodes the new
    # connection's frames in it, from the keyframe the relay asked for.
    decoded = first[0]["framesDecoded"]
    shown = (await page.evaluate("window.telemedRoom"))["remoteFrames"]
    assert (await doctor.connect_media())["ok"]
    await wait_in_page(page, f"window.telemedRoom.remoteFrames >= {shown + 60}", seconds=30)
    after = await inbound_video(page)
    assert [s["ssrc"] for s in after] == [first[0]["ssrc"]]
    assert after[0]["framesDecoded"] >= decoded + 60
    assert after[0]["keyFramesDecoded"] >= 2

    # The browser's own connection is replaced (its socket drops; it joins again): the
    # doctor decodes the browser's new connection in the same stream, and the browser
    # the doctor's in its new connection.
    room = client.app[keys.ROOMS].get(booked["id"])
    assert room is not None
    patient = next(p for p in room.participants.values() if p.role == "patient")
    sio = client.app[keys.SIO]
    received = doctor.decoded["video"]
    await sio.eio.disconnect(sio.manager.eio_sid_from_sid(patient.sid, "/"))
    await wait_in_page(
        page,
        "window.telemedRoom.joins === 2 && window.telemedRoom.phase === 'joined'",
        seconds=40,
    )
    await doctor.peer.wait_for(lambda: doctor.decoded["video"] >= received + 60, seconds=30)
    await wait_in_page(page, "window.testConnections.length === 2")
    await wait_in_page(page, "window.testConnections[1].connectionState === 'connected'")
    await page.wait_for_function(
        f"({INBOUND_VIDEO})().then((s) => s.length === 1 && s[0].framesDecoded >= 30)",
        timeout=30_000,
    )
    await page.context.close()
