"""What every HTTP response goes through: the error shape, security headers, health."""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_response import ContentCoding

from telemed import db, keys
from telemed.errors import ErrorCode, TelemedError, error_body

logger = logging.getLogger(__name__)

# Scripts and styles only from our own origin: no inline code, so injected markup cannot run.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_HTTP_CODES = {
    400: ErrorCode.INVALID_INPUT,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    408: ErrorCode.REQUEST_TIMEOUT,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_TYPE,
    429: ErrorCode.RATE_LIMITED,
}


def _error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        error_body(code, message, dict(details or {})), status=status, headers=headers
    )


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into the one error shape; log only what is not the client's."""
    try:
        return await handler(request)
    except TelemedError as exc:
        return _error_response(exc.http_status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.INVALID_INPUT)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error_response(exc.status, code, exc.reason, headers=headers)
    except Exception:
        # The route template, never the path: paths and bodies may carry patient data.
        route = request.match_info.route.resource
        logger.exception(
            "unhandled error in %s %s", request.method, route.canonical if route else "?"
        )
        return _error_response(500, ErrorCode.INTERNAL, "Something went wrong on our side")


# The web app's own files, sent compressed: a patient on a 100 kbit/s mobile link gets
# the room in a third of the time (about 140 kB of text, 50 kB compressed).
_COMPRESSED_SUFFIXES = (".html", ".css", ".js", ".mjs", ".json", ".svg", ".webmanifest", ".map")
_COMPRESSED_TYPES = frozenset(
    ["text/html", "text/css", "text/javascript", "application/json",
     "application/manifest+json", "image/svg+xml"]
)  # fmt: skip


_CONDITIONAL_HEADERS = (
    hdrs.IF_NONE_MATCH, hdrs.IF_MODIFIED_SINCE, hdrs.IF_MATCH, hdrs.IF_UNMODIFIED_SINCE,
    hdrs.IF_RANGE, hdrs.RANGE,
)  # fmt: skip


def _web_file(request: web.Request) -> bool:
    """A file of the web app (a page, a script, a style, words, an icon), never an API
    answer: a response that holds a secret beside what a client wrote into it is not
    compressed (BREACH)."""
    path = request.path
    return (
        path == "/"
        or path == "/sw.js"
        or path == "/manifest.webmanifest"
        or (path.startswith(("/static/", "/embed/")))
    )


@web.middleware
async def compress_web_files(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Compress the web app's text files with gzip, when the browser accepts it."""
    response = await handler(request)
    if request.method not in ("GET", "HEAD") or response.status != 200 or response.prepared:
        return response
    if not _web_file(request) or hdrs.CONTENT_ENCODING in response.headers:
        return response
    if isinstance(response, web.FileResponse):
        # Its type is guessed only when it is sent: go by the name. Whether it is a 304
        # (or 206, 412) is also decided then, and a compressor started on a 304 still
        # writes an empty gzip stream after the headers, which breaks the next answer on
        # the connection: a conditional or partial request is answered uncompressed.
        compressible = (
            request.path.endswith(_COMPRESSED_SUFFIXES) or request.path == "/"
        ) and not any(name in request.headers for name in _CONDITIONAL_HEADERS)
    else:
        compressible = response.content_type in _COMPRESSED_TYPES
    if compressible:
        response.headers.add(hdrs.VARY, hdrs.ACCEPT_ENCODING)
        if "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "").lower():
            response.enable_compression(ContentCoding.gzip)
    return response


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: web.BaseRequest, trusted_proxies: Sequence[str]) -> str | None:
    """The client's address: the peer's, or, when the peer is a trusted reverse proxy,
    the nearest address in ``X-Forwarded-For`` that is not a trusted proxy (the ones
    further left are the client's to write, and cannot be believed)."""
    remote = request.remote
    if not trusted_proxies or remote is None:
        return remote
    networks = _networks(tuple(trusted_proxies))
    if not _trusted(remote, networks):
        return remote
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    hops = [hop.strip() for hop in forwarded.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote  # garbage where an address should be: trust nothing
    return remote


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Sent with every response, errors and files included."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if not request.path.startswith("/embed/"):
        # The embedded room says who may frame it in its CSP (frame-ancestors).
        headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()")
    if request.path.startswith("/api/"):
        headers.setdefault("Cache-Control", "no-store")


def csp(*, frame_ancestors: list[str]) -> str:
    """The CSP, with these origins allowed to show the page in a frame."""
    allowed = " ".join(["'self'", *frame_ancestors])
    return CSP.replace("frame-ancestors 'none'", f"frame-ancestors {allowed}")


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is up."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: the process can serve: the database answers, and (with Redis) the
    pub/sub link between nodes is up and its listener is running."""
    checks: dict[str, str] = {}
    failed = []
    try:
        await db.ping(request.app[keys.ENGINE])
        checks["database"] = "ok"
    except Exception:
        logger.warning("readiness check: database unreachable", exc_info=True)
        checks["database"] = "unreachable"
        failed.append("database")
    for name, check in request.app.get(keys.HEALTH_CHECKS, []):
        try:
            await check()
            checks[name] = "ok"
        except Exception as exc:
            logger.warning("readiness check %s failed: %s", name, type(exc).__name__)
            checks[name] = str(exc) or type(exc).__name__
            failed.append(name)
    if failed:
        return _error_response(
            503,
            ErrorCode.UNAVAILABLE,
            "Not ready: " + ", ".join(failed),
            details={"checks": checks},
        )
    return web.json_response({"status": "ready", "checks": checks})


async def openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json: the API, generated from the endpoint models."""
    return web.json_response(request.app[keys.API].openapi())


class AccessLogger(AbstractAccessLogger):
    """Access log lines with the route template instead of the path, and no query string:
    ids in paths are fine, but nothing a client typed should reach the log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        match_info = getattr(request, "match_info", None)
        resource = match_info.route.resource if match_info is not None else None
        where = resource.canonical if resource is not None else "-"
        self.logger.info("%s %s %s %.1fms", request.method, where, response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
