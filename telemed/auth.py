"""Who is calling: session tokens from a bearer header or the HttpOnly cookie, and the
Origin check that keeps other sites from using a browser's cookie (CSRF)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed.accounts.models import AuthSession, User
from telemed.accounts.service import get_session_user
from telemed.errors import OriginMismatch, Unauthenticated
from telemed.settings import Settings

COOKIE_NAME = "telemed_session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class ResolvedCaller:
    user: User | None
    auth_session: AuthSession | None
    via_cookie: bool


def request_token(request: web.Request) -> tuple[str | None, bool]:
    """The session token a request carries, and whether it came from the cookie."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Use 'Authorization: Bearer <token>'")
        return token.strip(), False
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, True
    return None, False


async def resolve_caller(
    request: web.Request, session: AsyncSession, *, now: datetime
) -> ResolvedCaller:
    """The signed-in user, if the request carries a valid token.

    A token that is sent but unknown, expired or revoked is an error (401), not an
    anonymous call: a client with a stale token should learn it and sign in again.
    """
    token, via_cookie = request_token(request)
    if token is None:
        return ResolvedCaller(None, None, False)
    found = await get_session_user(session, token=token, now=now)
    if found is None:
        raise Unauthenticated("The session has expired or was ended; sign in again")
    user, auth_session = found
    return ResolvedCaller(user, auth_session, via_cookie)


def expected_origins(request: web.Request, settings: Settings) -> set[str]:
    origins = {f"{request.scheme}://{request.host}"}
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


def check_origin(request: web.Request, settings: Settings, *, via_cookie: bool) -> None:
    """Refuse unsafe requests from other origins.

    A cookie rides along with any request a browser makes, so an unsafe method
    authenticated by the cookie must prove it comes from our own pages with a matching
    ``Origin``. A foreign ``Origin`` is refused even without a cookie (login CSRF).
    Bearer tokens are never sent by a browser on its own, so they need no Origin.
    """
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is None:
        if via_cookie:
            raise OriginMismatch("A cookie-authenticated request needs a matching Origin header")
        return
    if origin not in expected_origins(request, settings):
        raise OriginMismatch("The request comes from another site")


def set_session_cookie(
    response: web.StreamResponse, token: str, *, settings: Settings, max_age: int
) -> None:
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=max_age,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="Lax",
        path="/",
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE_NAME, path="/")
