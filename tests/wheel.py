"""Telemed's wheel, built as a user builds it (``pip wheel``), for the package and
container tests, and what those tests ask of a server made from it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, Response

from tests.browser import wait_in_page

ROOT = Path(__file__).resolve().parent.parent

PATIENT_PHONE = "+79000000001"
PATIENT_PASSWORD = "Patient-2026"  # the published demo login (telemed/demo.py)

# What the pages load first; every module they import is followed from these.
ENTRY_MODULES = ("/static/app/main.js", "/static/room.js")
# Loaded with a computed URL (web/app/patient.js), so not found by following imports.
PDFJS_FILES = (
    "/static/vendor/pdfjs/build/pdf.min.mjs",
    "/static/vendor/pdfjs/build/pdf.worker.min.mjs",
    "/static/vendor/pdfjs/cmaps/UniJIS-UTF16-H.bcmap",
    "/static/vendor/pdfjs/standard_fonts/LiberationSans-Regular.ttf",
)
# The type a server gives .js files depends on its machine's MIME table.
JAVASCRIPT = {"text/javascript", "application/javascript"}
_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"'`]+\.m?js)["']""")


def build_wheel(out: Path, work: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the checkout's sources in ``work`` (so that
    no ``build/`` left by an earlier build leaks into it) into ``out``; the wheel's path."""
    source = work / "source"
    source.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "_web")
    shutil.copytree(ROOT / "telemed", source / "telemed", ignore=ignore)
    shutil.copytree(ROOT / "web", source / "web")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    (source / "node_modules").symlink_to((ROOT / "node_modules").resolve())
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(out.glob("telemed-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def fetch(url: str, body: object = None, token: str | None = None) -> tuple[int, str, bytes]:
    """One request: (status, content type, body)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    # Only http://127.0.0.1 URLs built by these tests reach urllib (S310).
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get_content_type(), error.read()


def wait_for(check: Callable[[], bool], seconds: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)  # the server is starting: ask again
    raise AssertionError(f"not ready in {seconds} s:\n{what()}")


def check_whole_app(base: str) -> None:
    """The server at ``base`` serves the app: the page, every module the pages import
    (their own and the browser libraries), pdf.js's files, and a demo patient signs in."""
    status, kind, page = fetch(f"{base}/")
    assert (status, kind) == (200, "text/html"), (status, kind)
    assert b'src="/static/app/main.js"' in page

    seen: set[str] = set()
    todo = list(ENTRY_MODULES)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        status, kind, text = fetch(base + path)
        assert status == 200, (path, status)
        assert kind in JAVASCRIPT, (path, kind)
        folder = path.rsplit("/", 1)[0]
        for found in _IMPORT.findall(text.decode()):
            todo.append(found if found.startswith("/") else _join(folder, found))
    socket_io = "/static/vendor/socket.io/socket.io.esm.min.js"
    followed = {"/static/app/patient.js", "/static/lib/socket.js", "/static/room/session.js"}
    assert {socket_io, *followed} <= seen, sorted(seen)
    assert b"Socket.IO v4" in fetch(base + socket_io)[2][:200]

    for path in PDFJS_FILES:
        status, _, content = fetch(base + path)
        assert status == 200, (path, status)
        assert content, path

    status, _, body = fetch(
        f"{base}/api/v1/auth/login", {"login": PATIENT_PHONE, "password": PATIENT_PASSWORD}
    )
    assert status == 200, body
    token = json.loads(body)["token"]
    status, _, body = fetch(f"{base}/api/v1/me", token=token)
    assert status == 200, body
    me = json.loads(body)
    assert (me["role"], me["phone"]) == ("patient", PATIENT_PHONE)
    status, _, body = fetch(
        f"{base}/api/v1/auth/login", {"login": PATIENT_PHONE, "password": "not-the-password"}
    )
    assert status == 401, body
    assert json.loads(body)["error"]["code"]


async def sign_in_with_browser(browser: Browser, base: str) -> None:
    """Chromium loads the app from ``base``, every module and library included, signs
    the demo patient in through the form, and its socket connects."""
    failed: list[str] = []

    def check(response: Response) -> None:
        if "/static/" in response.url and response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    context = await browser.new_context(locale="ru-RU")
    page = await context.new_page()
    page.on("response", check)
    page.on("requestfailed", lambda request: failed.append(f"failed {request.url}"))
    page.on("pageerror", lambda error: failed.append(f"error {error}"))
    await page.goto(f"{base}/#/login")
    await wait_in_page(page, "window.telemedApp && window.telemedApp.rendered > 0")
    await page.get_by_label("Телефон или e-mail").fill(PATIENT_PHONE)
    await page.get_by_label("Пароль", exact=True).fill(PATIENT_PASSWORD)
    await page.get_by_role("button", name="Войти").click()
    await wait_in_page(
        page,
        "window.telemedApp.user && window.telemedApp.user.role === 'patient' "
        "&& window.telemedApp.live",
    )
    assert failed == []
    await context.close()


def _join(folder: str, relative: str) -> str:
    parts = folder.split("/")
    for piece in relative.split("/"):
        if piece == "..":
            parts.pop()
        elif piece != ".":
            parts.append(piece)
    return "/".join(parts)
