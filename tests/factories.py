"""Building blocks for tests: accounts made through the real API and the real services."""

from __future__ import annotations

import itertools
import uuid
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient

from telemed import db, keys
from telemed.accounts import consent
from telemed.accounts.models import Locale, Role
from telemed.accounts.service import check_new_account, do_create_user
from tests.world import Account

AppClient = TestClient[web.Request, web.Application]

_phones = itertools.count(1)
PASSWORD = "Correct-Horse-42"


def next_phone() -> str:
    """A valid, unused Russian mobile number."""
    return f"+7912{next(_phones):07d}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(
    client: AppClient,
    *,
    phone: str | None = None,
    password: str = PASSWORD,
    keep_cookie: bool = False,
    **fields: Any,
) -> Account:
    """Register a patient through the API; returns ``{token, user}``.

    Tests call with the bearer token, so the session cookie is dropped unless asked for.
    """
    body = {
        "full_name": "Петрова Мария Ивановна",
        "birth_date": "1980-03-04",
        "phone": phone or next_phone(),
        "password": password,
        "consent_version": consent.CURRENT.version,
        **fields,
    }
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status == 201, await response.text()
    if not keep_cookie:
        client.session.cookie_jar.clear()
    return cast(Account, await response.json())


async def staff(client: AppClient, role: Role, *, centre_id: str | None = None) -> dict[str, Any]:
    """A manager, admin or system client (they are created from the command line, not
    registered), signed in; a manager or system client bound to ``centre_id`` if given."""
    app = client.app
    assert app is not None
    phone = next_phone()
    account = check_new_account(full_name="Сотрудник Службы", phone=phone, password=PASSWORD)
    password_hash = await app[keys.PASSWORDS].hash(PASSWORD)
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        await do_create_user(
            session,
            account=account,
            password_hash=password_hash,
            role=role,
            now=app[keys.CLOCK].now(),
            locale=Locale(app[keys.SETTINGS].default_locale),
            time_zone=app[keys.SETTINGS].default_time_zone,
            centre_id=uuid.UUID(centre_id) if centre_id is not None else None,
        )
    response = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    assert response.status == 200, await response.text()
    client.session.cookie_jar.clear()
    result: dict[str, Any] = await response.json()
    return result


async def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the one error shape with this status and code."""
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    result: dict[str, Any] = body["error"]
    return result
