"""The web app's pages (files under ``web/``, no templating) and the embeddable room.

The files come from the checkout, or from the copy an installed wheel carries
(``telemed/web_files.py``)."""

from __future__ import annotations

import uuid

from aiohttp import web

from telemed import http, keys, web_files
from telemed.errors import Forbidden, NotFound

FILES = web_files.locate()
WEB_DIR = FILES.app


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def service_worker(request: web.Request) -> web.FileResponse:
    """GET /sw.js: the service worker that keeps the app's shell for use without a
    connection (docs/web.md). Served from the root so that its scope is the whole app;
    never cached by HTTP, so that a new version is seen at the next visit."""
    return web.FileResponse(
        WEB_DIR / "sw.js",
        headers={"Content-Type": "text/javascript", "Cache-Control": "no-cache"},
    )


async def manifest(request: web.Request) -> web.FileResponse:
    """GET /manifest.webmanifest: the web app manifest (add to the home screen)."""
    return web.FileResponse(
        WEB_DIR / "manifest.webmanifest",
        headers={"Content-Type": "application/manifest+json", "Cache-Control": "no-cache"},
    )


async def embedded_room(request: web.Request) -> web.FileResponse:
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
    return web.FileResponse(
        WEB_DIR / "room.html",
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
        app.router.add_static("/static/", WEB_DIR, follow_symlinks=False)
