"""The web app's pages (files under ``web/``, no templating) and the embeddable room.

The files come from the checkout, or from the copy an installed wheel carries
(``telemed/web_files.py``)."""

from __future__ import annotations

import html
import json
import uuid
from functools import lru_cache
from pathlib import Path

from aiohttp import web

from telemed import http, keys, web_files
from telemed.errors import Forbidden, NotFound

FILES = web_files.locate()
WEB_DIR = FILES.app


@lru_cache(maxsize=16)
def _branded(path: Path, modified: float, brand: str, escape: str) -> str:
    """The file with ``{{brand}}`` replaced by the service's name (TELEMED_BRAND_NAME),
    escaped for HTML or for a JSON string; kept until the file changes."""
    text = path.read_text("utf-8")
    name = html.escape(brand) if escape == "html" else json.dumps(brand)[1:-1]
    return text.replace("{{brand}}", name)


def branded(
    request: web.Request,
    name: str,
    *,
    content_type: str = "text/html",
    escape: str = "html",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A page of the web app that names the service."""
    path = WEB_DIR / name
    brand = request.app[keys.SETTINGS].brand_name
    text = _branded(path, path.stat().st_mtime, brand, escape)
    return web.Response(
        text=text, content_type=content_type, charset="utf-8", headers=headers or {}
    )


async def index(request: web.Request) -> web.Response:
    return branded(request, "index.html")


async def room(request: web.Request) -> web.Response:
    """GET /static/room.html?consultation=…: the video room, as the app links to it."""
    return branded(request, "room.html")


async def service_worker(request: web.Request) -> web.FileResponse:
    """GET /sw.js: the service worker that keeps the app's shell for use without a
    connection (docs/web.md). Served from the root so that its scope is the whole app;
    never cached by HTTP, so that a new version is seen at the next visit."""
    return web.FileResponse(
        WEB_DIR / "sw.js",
        headers={"Content-Type": "text/javascript", "Cache-Control": "no-cache"},
    )


async def manifest(request: web.Request) -> web.Response:
    """GET /manifest.webmanifest: the web app manifest (add to the home screen), named
    after the service."""
    return branded(
        request,
        "manifest.webmanifest",
        content_type="application/manifest+json",
        escape="json",
        headers={"Cache-Control": "no-cache"},
    )


async def embedded_room(request: web.Request) -> web.Response:
    """GET /embed/consultations/{id}?token=…[&origin=…]: the video room alone, for an
    iframe or a mobile WebView (docs/embedding.md). Only the origins of
    ``TELEMED_EMBED_ORIGINS`` may frame it; ``origin`` names the one the room reports
    to with ``postMessage`` and takes commands from."""
    try:
        uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("Consultation not found") from None
    allowed = request.app[keys.SETTINGS].embed_origins
    origin = request.query.get("origin")
    if origin is not None and origin not in allowed:
        raise Forbidden(
            "This origin may not embed the room (TELEMED_EMBED_ORIGINS)",
            details={"origin": origin},
        )
    return branded(
        request,
        "room.html",
        headers={
            "Content-Security-Policy": http.csp(frame_ancestors=allowed),
            "Cache-Control": "no-store",
        },
    )


def setup_routes(app: web.Application) -> None:
    # socket.io-client and pdf.js from npm (package-lock.json; installed by ./dev),
    # served as they are.
    for name, folder in FILES.vendor.items():
        if folder.is_dir():
            app.router.add_static(f"/static/vendor/{name}/", folder, follow_symlinks=False)
    if WEB_DIR.is_dir():
        app.router.add_get("/", index)
        app.router.add_get("/sw.js", service_worker)
        app.router.add_get("/manifest.webmanifest", manifest)
        app.router.add_get("/embed/consultations/{id}", embedded_room)
        # Before the static files: the room page names the service.
        app.router.add_get("/static/room.html", room)
        app.router.add_get("/static/index.html", index)
        app.router.add_static("/static/", WEB_DIR, follow_symlinks=False)
