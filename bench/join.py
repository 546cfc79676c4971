"""Join time: from the click on «join» in the room page to the first frame of the other
side's video, in Debian's Chromium with a fake camera and microphone.

    .venv/bin/python bench/join.py [--joins 12] [--baseline 12]

The real server (``telemed serve``, loopback only) with one booked consultation. The
doctor is a browser page of its own (a second browser context) that joined the room
first and sends its camera. Then the patient joins ``--joins`` times, each time in a
fresh page: the page's check runs (the preview shows the camera), the bench clicks
``#join``, and the page notes ``performance.now()`` at the click
(``telemedRoom.joinClickedAt``) and at the first remote video frame
(``requestVideoFrameCallback``: ``telemedRoom.firstRemoteFrameAt``). The page is closed
(the patient leaves) before the next join, once the doctor's page has seen the patient
go.

Baseline, in the same run and the same browser: the first frame of a direct
browser-to-browser call on loopback, two ``RTCPeerConnection``s in one page (the same
fake camera, already open; candidates passed straight across), measured from the
creation of the connections to the receiver's first video frame. The ratio says what
the room adds: the socket, ``room:join``, complete ICE gathering (no trickle), the
server's connection and its renegotiation, the wait for a keyframe.

Prints each join, the median and p95 of both, and their ratio. Target: median ≤ 1.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bench.common import Booked, book_consultations, server_env
from bench.media import stop_process, wait_ready
from telemed.settings import Settings
from tests.browser import ARGS, CHROMIUM
from tests.servers import free_port

TARGET_MEDIAN_MS = 300.0
"""Issue 14 (trickle ICE); issue 6 asked for 1500 ms."""
STEPS = {
    "socket": "the Socket.IO connection is up",
    "joined": "room:join answered",
    "described": "the page's offer made (its candidates trickle after the answer)",
    "answered": "rtc:offer answered (the server's connection made)",
    "connected": "the media connection is up (ICE, DTLS)",
    "offered": "the server's offer with the doctor's tracks arrived",
}

BASELINE = """async (count) => {
  // A direct call on loopback: two connections in this page, the camera already open.
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  const times = [];
  for (let n = 0; n < count; n++) {
    const video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    document.body.append(video);
    const began = performance.now();
    const caller = new RTCPeerConnection();
    const callee = new RTCPeerConnection();
    caller.onicecandidate = (e) => e.candidate && callee.addIceCandidate(e.candidate);
    callee.onicecandidate = (e) => e.candidate && caller.addIceCandidate(e.candidate);
    const first = new Promise((resolve) => {
      callee.ontrack = (e) => {
        video.srcObject = new MediaStream([e.track]);
        video.requestVideoFrameCallback(() => resolve(performance.now()));
      };
    });
    stream.getTracks().forEach((track) => caller.addTrack(track, stream));
    await caller.setLocalDescription(await caller.createOffer());
    await callee.setRemoteDescription(caller.localDescription);
    await callee.setLocalDescription(await callee.createAnswer());
    await caller.setRemoteDescription(callee.localDescription);
    times.push((await first) - began);
    caller.close();
    callee.close();
    video.remove();
  }
  stream.getTracks().forEach((track) => track.stop());
  return times;
}"""


async def poll(page: Page, expression: str, seconds: float = 30) -> None:
    """Wait until ``expression`` is true in the page (its CSP forbids Playwright's
    ``wait_for_function``)."""
    async with asyncio.timeout(seconds):
        while not await page.evaluate(expression):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def room_page(context: BrowserContext, url: str, token: str, consultation: str) -> Page:
    """The room page at its check, the camera's preview showing."""
    page = await context.new_page()
    await page.goto(f"{url}/static/room.html?consultation={consultation}&token={token}")
    await poll(page, "window.telemedRoom.phase === 'prejoin'")
    await poll(page, "document.getElementById('local').videoWidth > 0")
    return page


async def joined_context(browser: Browser, url: str) -> BrowserContext:
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=url)
    return context


async def measure_joins(browser: Browser, url: str, booked: Booked, joins: int) -> list[float]:
    doctor_context = await joined_context(browser, url)
    doctor = await room_page(doctor_context, url, booked.doctor_token, booked.consultation_id)
    await doctor.locator("#join").click()
    await poll(doctor, "window.telemedRoom.phase === 'joined'")
    patient_context = await joined_context(browser, url)
    times = []
    steps: dict[str, list[float]] = {}
    patient_here = (
        "Object.values(window.telemedRoom.others).some(o => o.role === 'patient' && o.present)"
    )
    for n in range(joins):
        page = await room_page(patient_context, url, booked.patient_token, booked.consultation_id)
        await page.locator("#join").click()
        await poll(page, "window.telemedRoom.firstRemoteFrameAt !== null")
        state = await page.evaluate("window.telemedRoom")
        times.append(state["firstRemoteFrameAt"] - state["joinClickedAt"])
        for name, at in state["steps"].items():
            steps.setdefault(name, []).append(at - state["joinClickedAt"])
        print(f"  join {n + 1:2d}: {times[-1]:7.0f} ms", flush=True)
        await poll(doctor, patient_here)
        await page.close()
        await poll(doctor, f"!({patient_here})")
    await patient_context.close()
    await doctor_context.close()
    print("  median time from the click to each step of the page:")
    for name, values in sorted(steps.items(), key=lambda item: statistics.median(item[1])):
        print(f"    {name:<10} {statistics.median(values):6.0f} ms   {STEPS[name]}")
    return times


async def measure_baseline(browser: Browser, url: str, count: int) -> list[float]:
    context = await joined_context(browser, url)
    page = await context.new_page()
    await page.goto(f"{url}/healthz")  # any page of the origin the camera is granted to
    times: list[float] = await page.evaluate(BASELINE, count)
    await context.close()
    return times


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<34} median {statistics.median(values):6.0f} ms   p95 {p95(values):6.0f} ms"
        f"   min {min(values):6.0f}   max {max(values):6.0f}   (n={len(values)})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--joins", type=int, default=12, help="patient joins measured")
    parser.add_argument("--baseline", type=int, default=12, help="direct calls measured")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="telemed-join-bench-") as tmp:
        data_dir = Path(tmp)
        [booked] = await book_consultations(
            Settings(data_dir=data_dir),
            1,
            starts_in=timedelta(minutes=5),
            minutes=30,
            doctor_each=True,
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = data_dir / "server.log"
        with log.open("wb") as handle:
            server = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "telemed", "serve", "--port", str(port)),
                cwd=ROOT,
                env={**os.environ, **server_env(data_dir)},
                stdout=handle,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            await wait_ready(url + "/healthz", server)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
                print(f"Chromium {browser.version}; the room: {args.joins} joins", flush=True)
                joins = await measure_joins(browser, url, booked, args.joins)
                baseline = await measure_baseline(browser, url, args.baseline)
                await browser.close()
        except Exception:
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            await stop_process(server)
    print()
    print(summary("room: #join click → first frame", joins))
    print(summary("baseline: direct call, first frame", baseline))
    ratio = statistics.median(joins) / statistics.median(baseline)
    print(f"ratio of the medians (room / direct call): {ratio:.1f}")
    met = statistics.median(joins) <= TARGET_MEDIAN_MS
    print(f"target: median ≤ {TARGET_MEDIAN_MS:.0f} ms: {'met' if met else 'NOT met'}")
    print(f"bench took {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
