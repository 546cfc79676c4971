"""The web app as an installable app: its manifest and icons, the favicons of its pages,
and the service worker that keeps the shell, so that the app opens without a connection
far enough to say that there is none (in Russian or English), and keeps nothing that
the API answered."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, Response

from tests.e2e.app_pages import PHONE, open_app, origin, sign_in, wait_in_page
from tests.factories import PASSWORD, AppClient
from tests.flows import make_patient

WEB = Path(__file__).resolve().parents[2] / "web"
CACHE = "telemed-shell-v1"
OFFLINE_RU = "Нет связи с сервером"
OFFLINE_EN = "No connection to the server"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_manifest_names_the_app_and_its_icons_exist(client: AppClient) -> None:
    response = await client.get("/manifest.webmanifest")
    assert response.status == 200
    assert response.content_type == "application/manifest+json"
    manifest: dict[str, Any] = json.loads(await response.text())
    # The brand that the app shows (TELEMED_BRAND_NAME), as the name under the icon on
    # the home screen.
    page = await (await client.get("/")).text()
    found = re.search(r'<a class="brand"[^>]*>([^<]+)</a>', page)
    assert found is not None
    assert manifest["short_name"] == found.group(1) == "Телемед"
    assert manifest["name"].startswith(found.group(1))
    assert manifest["start_url"] == "/"
    assert manifest["scope"] == "/"
    assert manifest["display"] == "standalone"
    assert manifest["lang"] == "ru"
    assert re.fullmatch(r"#[0-9a-f]{6}", manifest["theme_color"])
    assert re.fullmatch(r"#[0-9a-f]{6}", manifest["background_color"])
    sizes: dict[str, set[str]] = {}
    for icon in manifest["icons"]:
        got = await client.get(icon["src"])
        assert got.status == 200, icon
        assert got.content_type == icon["type"], icon
        body = await got.read()
        if icon["type"] == "image/png":
            width, height = png_size(body)
            assert f"{width}x{height}" == icon["sizes"], icon
        else:
            assert b"<svg" in body
            assert icon["sizes"] == "any"
        for size in icon["sizes"].split():
            sizes.setdefault(size, set()).update(icon["purpose"].split())
    # What Android asks of an installable app: 192 and 512 pixels, and a maskable one.
    assert "any" in sizes["192x192"], sizes
    assert "any" in sizes["512x512"], sizes
    assert "maskable" in sizes["512x512"], sizes


async def test_the_pages_link_their_favicons(client: AppClient) -> None:
    for page in ("/", "/static/room.html"):
        html = await (await client.get(page)).text()
        links = re.findall(r'<link rel="(icon|apple-touch-icon)" href="([^"]+)"', html)
        hrefs = {href for _, href in links}
        assert {"/static/icons/favicon.svg", "/static/icons/favicon-32.png"} <= hrefs, page
        for href in hrefs:
            got = await client.get(href)
            assert got.status == 200, href
            body = await got.read()
            if href.endswith(".svg"):
                assert got.content_type == "image/svg+xml"
                assert b"<svg" in body
            elif href.endswith("favicon-32.png"):
                assert png_size(body) == (32, 32)
            else:
                assert png_size(body) == (180, 180)  # the apple-touch-icon
    assert (
        '<link rel="manifest" href="/manifest.webmanifest">' in await (await client.get("/")).text()
    )


async def test_the_service_worker_is_served_for_the_whole_app(client: AppClient) -> None:
    response = await client.get("/sw.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert response.headers["Cache-Control"] == "no-cache"
    source = await response.text()
    # Everything it keeps exists, and none of it is an answer of the API.
    listed = re.search(r"const SHELL = \[(.*?)\];", source, re.S)
    assert listed is not None
    kept = json.loads(f"[{listed.group(1).rstrip().rstrip(',')}]")
    assert kept[0] == "/"
    for path in kept:
        assert not path.startswith(("/api/", "/socket.io/", "/embed/")), path
        assert (await client.get(path)).status == 200, path


async def installed(page: Page) -> None:
    """Wait until the service worker has kept the shell and controls the page."""
    await wait_in_page(page, "navigator.serviceWorker.controller !== null")
    await wait_in_page(page, f"caches.has({CACHE!r})")


KEPT_URLS = """async () => {
  const urls = [];
  for (const name of await caches.keys()) {
    const cache = await caches.open(name);
    for (const request of await cache.keys()) urls.push(new URL(request.url).pathname);
  }
  return urls;
}"""


async def test_without_a_connection_the_app_says_so(browser: Browser, client: AppClient) -> None:
    patient = await make_patient(client)
    home = origin(client)

    # A patient signs in: the service worker keeps everything the app's page loaded,
    # and nothing of the API.
    ru = await browser.new_context(viewport=PHONE, locale="ru-RU")
    page = await ru.new_page()
    loaded: set[str] = set()
    page.on(
        "request",
        lambda request: (
            loaded.add(request.url.removeprefix(home).split("?")[0])
            if request.url.startswith(home)
            else None
        ),
    )
    await sign_in(page, client, patient["user"]["phone"], PASSWORD)
    await installed(page)
    # Chromium reads the manifest as it would to install the app.
    devtools = await ru.new_cdp_session(page)
    read = await devtools.send("Page.getAppManifest")
    assert read["url"] == f"{home}/manifest.webmanifest"
    assert read["errors"] == []
    assert read["manifest"]["display"] == "kStandalone"
    assert read["manifest"]["startUrl"] == f"{home}/"
    # Nothing stands in the way of installing it but the test's private browser window.
    checked = await devtools.send("Page.getInstallabilityErrors")
    errors = {error["errorId"] for error in checked["installabilityErrors"]}
    assert errors <= {"in-incognito"}, checked
    answers: dict[str, bool] = {}

    def answered(response: Response) -> None:
        answers.setdefault(
            response.url.removeprefix(home).split("?")[0], response.from_service_worker
        )

    page.on("response", answered)
    await page.reload()
    await wait_in_page(page, "window.telemedApp && window.telemedApp.route === '/consultations'")
    kept = set(await page.evaluate(KEPT_URLS))
    shell = {
        path
        for path in loaded
        if not path.startswith(("/api/", "/socket.io/", "/sw.js", "/healthz"))
    }
    assert shell - kept == set(), "loaded but not kept"
    assert any(path.startswith("/api/") for path in loaded)  # the app did ask the API
    # The worker answered the shell's files and let the API's answers pass.
    assert answers["/static/app/main.js"] is True, answers
    assert answers["/api/v1/me"] is False, answers
    assert not [path for path in kept if path.startswith(("/api/", "/socket.io/"))], kept
    banner = page.locator("#offline")
    assert await banner.is_hidden()

    # The connection drops while the app is open: the banner says so, and goes when
    # the connection is back.
    await ru.set_offline(True)
    await banner.wait_for(state="visible")
    assert OFFLINE_RU in await banner.inner_text()
    assert await banner.get_attribute("role") == "status"
    await ru.set_offline(False)
    await banner.wait_for(state="hidden", timeout=15000)

    # Someone who chose English on the sign-in page.
    en = await browser.new_context(viewport=PHONE, locale="en-GB")
    english = await en.new_page()
    await open_app(english, client, "/login")
    await english.locator("#lang").select_option("en")
    await wait_in_page(english, "document.documentElement.lang === 'en'")
    await installed(english)

    # The server is gone. Opening the app again shows the kept shell and says that
    # there is no connection: offline as the browser knows it, and a server that does
    # not answer while the browser believes it is online.
    for gone in (page, english):
        await gone.goto("about:blank")
    await client.server.close()
    await ru.set_offline(True)
    for opened, text, lang in ((page, OFFLINE_RU, "ru"), (english, OFFLINE_EN, "en")):
        await opened.goto(f"{home}/")
        banner = opened.locator("#offline")
        await banner.wait_for(state="visible")
        assert text in await banner.inner_text()
        assert await opened.evaluate("document.documentElement.lang") == lang
        assert await opened.locator(".brand").inner_text() == "Телемед"  # the kept page
        assert await opened.evaluate("window.telemedApp.rendered") == 0
        assert not [path for path in await opened.evaluate(KEPT_URLS) if path.startswith("/api/")]
