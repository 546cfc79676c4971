"""Registration, sign-in, sessions, password changes and login rate limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import func, select

from telemed import db, keys
from telemed.accounts import consent
from telemed.accounts.models import AuthSession, User
from telemed.clock import FakeClock
from tests.conftest import AppClient
from tests.factories import PASSWORD, assert_error, bearer, next_phone, register
from tests.flows import make_centre, make_doctor, manager_token, ok


async def count_users(client: AppClient) -> int:
    assert client.app is not None
    async with client.app[keys.SESSION_FACTORY]() as session:
        return int((await session.exec(select(func.count()).select_from(User))).one())


async def test_register_stores_e164_and_signs_in(client: AppClient) -> None:
    auth = await register(client, phone="8 (912) 345-67-89", email=" Maria@Example.RU ")
    user = auth["user"]
    assert user["phone"] == "+79123456789"
    assert user["email"] == "maria@example.ru"
    assert user["role"] == "patient"
    assert user["locale"] == "ru"
    assert user["time_zone"] == "Europe/Moscow"
    assert user["must_change_password"] is False
    assert "password_hash" not in user
    assert "password" not in user

    me = await client.get("/api/v1/me", headers=bearer(auth["token"]))
    assert me.status == 200
    assert (await me.json())["id"] == user["id"]


async def test_register_sets_an_httponly_cookie(client: AppClient) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "full_name": "Орлов Олег",
            "birth_date": "1970-01-01",
            "phone": next_phone(),
            "password": PASSWORD,
            "consent_version": consent.CURRENT.version,
        },
    )
    assert response.status == 201
    cookie = response.cookies["telemed_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    # The cookie alone signs the browser in.
    me = await client.get("/api/v1/me")
    assert me.status == 200


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"phone": "12"}, 422, "invalid_phone"),
        ({"phone": "+7 000 000"}, 422, "invalid_phone"),
        ({"password": "short1"}, 422, "weak_password"),
        ({"password": "onlyletters"}, 422, "weak_password"),
        ({"password": "12345678901"}, 422, "weak_password"),
        ({"password": "qwerty123"}, 422, "weak_password"),
        ({"email": "not-an-email"}, 422, "invalid_value"),
        ({"birth_date": "1980-13-40"}, 400, "invalid_input"),
        ({"birth_date": "2999-01-01"}, 400, "invalid_input"),
        ({"full_name": ""}, 400, "invalid_input"),
        ({"full_name": "   "}, 400, "invalid_input"),
        ({"role": "admin"}, 400, "invalid_input"),  # unknown field: no self-promotion
        ({"phone": None}, 400, "invalid_input"),
    ],
)
async def test_register_rejects_bad_input_and_changes_nothing(
    client: AppClient, change: dict[str, Any], status: int, code: str
) -> None:
    body = {
        "full_name": "Петров Пётр",
        "birth_date": "1980-01-01",
        "phone": next_phone(),
        "password": PASSWORD,
        "consent_version": consent.CURRENT.version,
        **change,
    }
    before = await count_users(client)
    response = await client.post("/api/v1/auth/register", json=body)
    await assert_error(response, status, code)
    assert await count_users(client) == before


async def test_register_missing_fields_lists_them(client: AppClient) -> None:
    response = await client.post("/api/v1/auth/register", json={"phone": next_phone()})
    error = await assert_error(response, 400, "invalid_input")
    fields = {item["field"] for item in error["details"]["fields"]}
    assert fields == {"full_name", "birth_date", "password", "consent_version"}


async def test_register_rejects_non_json(client: AppClient) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        data="phone=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await assert_error(response, 400, "invalid_input")
    response = await client.post(
        "/api/v1/auth/register", data="{not json", headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "invalid_input")
    response = await client.post("/api/v1/auth/register", json=[1, 2])
    await assert_error(response, 400, "invalid_input")


@pytest.mark.parametrize(
    ("password", "problems"),
    [
        ("a{phone}x", [("password_personal", {})]),
        (
            "петров",
            [
                ("password_too_short", {"min": 8}),
                ("password_no_digit", {}),
                ("password_personal", {}),
            ],
        ),
    ],
)
async def test_a_weak_password_says_each_rule_it_breaks(
    client: AppClient, password: str, problems: list[tuple[str, dict[str, int]]]
) -> None:
    """Not the phone, not the name: each rule broken is a code the client words."""
    phone = next_phone()
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "full_name": "Петров Пётр",
            "birth_date": "1980-01-01",
            "phone": phone,
            "password": password.format(phone=phone[-7:]),
            "consent_version": consent.CURRENT.version,
        },
    )
    error = await assert_error(response, 422, "weak_password")
    assert error["details"]["fields"] == [
        {"field": "password", "code": code, "params": params} for code, params in problems
    ]


async def test_duplicate_phone_is_409_however_written(client: AppClient) -> None:
    await register(client, phone="+79123450000")
    before = await count_users(client)
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "full_name": "Другой Человек",
            "birth_date": "1990-01-01",
            "phone": "8 912 345-00-00",
            "password": PASSWORD,
            "consent_version": consent.CURRENT.version,
        },
    )
    await assert_error(response, 409, "phone_taken")
    assert await count_users(client) == before


async def test_duplicate_email_is_409(client: AppClient) -> None:
    await register(client, email="same@example.ru")
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "full_name": "Другой Человек",
            "birth_date": "1990-01-01",
            "phone": next_phone(),
            "email": "SAME@example.ru",
            "password": PASSWORD,
            "consent_version": consent.CURRENT.version,
        },
    )
    await assert_error(response, 409, "email_taken")


async def test_login_by_phone_in_any_format_and_by_email(client: AppClient) -> None:
    await register(client, phone="+79123456780", email="login@example.ru")
    for login in ("+79123456780", "8 (912) 345-67-80", "LOGIN@example.ru"):
        response = await client.post(
            "/api/v1/auth/login", json={"login": login, "password": PASSWORD}
        )
        assert response.status == 200, login
        body = await response.json()
        assert body["user"]["phone"] == "+79123456780"
        assert len(body["token"]) >= 40


async def test_wrong_password_and_unknown_login_look_the_same(client: AppClient) -> None:
    phone = next_phone()
    await register(client, phone=phone)
    wrong = await client.post(
        "/api/v1/auth/login", json={"login": phone, "password": "Wrong-pass-1"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"login": next_phone(), "password": "Wrong-pass-1"}
    )
    first = await assert_error(wrong, 401, "invalid_credentials")
    second = await assert_error(unknown, 401, "invalid_credentials")
    assert first == second


async def test_logout_revokes_the_token(client: AppClient) -> None:
    auth = await register(client)
    headers = bearer(auth["token"])
    response = await client.post("/api/v1/auth/logout", headers=headers)
    assert response.status == 204
    await assert_error(await client.get("/api/v1/me", headers=headers), 401, "unauthenticated")


async def test_tokens_expire(client: AppClient, clock: FakeClock) -> None:
    auth = await register(client)
    assert client.app is not None
    ttl = client.app[keys.SETTINGS].session_ttl
    clock.advance(ttl - timedelta(seconds=1))
    assert (await client.get("/api/v1/me", headers=bearer(auth["token"]))).status == 200
    clock.advance(timedelta(seconds=2))
    await assert_error(
        await client.get("/api/v1/me", headers=bearer(auth["token"])), 401, "unauthenticated"
    )


async def test_tokens_are_stored_hashed(client: AppClient) -> None:
    auth = await register(client)
    assert client.app is not None
    async with client.app[keys.SESSION_FACTORY]() as session:
        rows = (await session.exec(select(AuthSession))).all()
    assert rows
    assert all(
        row.token_hash != auth["token"] and auth["token"] not in row.token_hash for row in rows
    )


async def test_password_change_revokes_other_sessions(client: AppClient) -> None:
    phone = next_phone()
    first = await register(client, phone=phone)
    login = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    second = await login.json()

    response = await client.post(
        "/api/v1/auth/password",
        headers=bearer(second["token"]),
        json={"current_password": PASSWORD, "new_password": "New-Secret-2027"},
    )
    assert response.status == 204
    # The session that changed it goes on; the other one is ended.
    assert (await client.get("/api/v1/me", headers=bearer(second["token"]))).status == 200
    await assert_error(
        await client.get("/api/v1/me", headers=bearer(first["token"])), 401, "unauthenticated"
    )
    old = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    await assert_error(old, 401, "invalid_credentials")
    new = await client.post(
        "/api/v1/auth/login", json={"login": phone, "password": "New-Secret-2027"}
    )
    assert new.status == 200


async def test_password_change_refusals_change_nothing(client: AppClient) -> None:
    phone = next_phone()
    auth = await register(client, phone=phone)
    headers = bearer(auth["token"])
    wrong = await client.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"current_password": "nope-nope-1", "new_password": "New-Secret-2027"},
    )
    await assert_error(wrong, 401, "invalid_credentials")
    weak = await client.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "weak"},
    )
    await assert_error(weak, 422, "weak_password")
    same = await client.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": PASSWORD},
    )
    await assert_error(same, 422, "invalid_value")
    missing = await client.post("/api/v1/auth/password", headers=headers, json={})
    await assert_error(missing, 400, "invalid_input")
    anonymous = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "New-Secret-2027"},
    )
    await assert_error(anonymous, 401, "unauthenticated")
    # The old password still works and the session is alive.
    assert (await client.get("/api/v1/me", headers=headers)).status == 200
    login = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    assert login.status == 200


async def test_must_change_password_blocks_all_but_the_change(client: AppClient) -> None:
    phone = next_phone()
    auth = await register(client, phone=phone)
    assert client.app is not None
    async with db.transaction(client.app[keys.SESSION_FACTORY]) as session:
        user = (await session.exec(select(User).where(User.phone == phone))).one()
        user.must_change_password = True
        session.add(user)
    headers = bearer(auth["token"])
    me = await client.get("/api/v1/me", headers=headers)
    assert (await me.json())["must_change_password"] is True
    await assert_error(
        await client.get("/api/v1/documents", headers=headers), 403, "password_change_required"
    )
    changed = await client.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "Brand-New-77"},
    )
    assert changed.status == 204
    assert (await client.get("/api/v1/documents", headers=headers)).status == 200
    assert (await (await client.get("/api/v1/me", headers=headers)).json())[
        "must_change_password"
    ] is False


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "login_max_failures_per_account": 3,
        "login_max_failures_per_address": 6,
        "login_window_minutes": 10,
    }


async def test_repeated_bad_logins_are_rate_limited_per_account(
    client: AppClient, clock: FakeClock
) -> None:
    phone = next_phone()
    await register(client, phone=phone)
    for _ in range(3):
        bad = await client.post(
            "/api/v1/auth/login", json={"login": phone, "password": "Bad-guess-1"}
        )
        await assert_error(bad, 401, "invalid_credentials")
    # Even the right password is refused now, with the wait in Retry-After.
    limited = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    error = await assert_error(limited, 429, "rate_limited")
    retry_after = int(limited.headers["Retry-After"])
    assert 0 < retry_after <= 600
    assert error["details"]["retry_after"] == retry_after
    # The same number written another way is the same account.
    other_format = await client.post(
        "/api/v1/auth/login", json={"login": "8" + phone[2:], "password": PASSWORD}
    )
    await assert_error(other_format, 429, "rate_limited")
    clock.advance(timedelta(seconds=retry_after))
    ok = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    assert ok.status == 200


async def test_bad_logins_are_rate_limited_per_address(client: AppClient) -> None:
    phone = next_phone()
    await register(client, phone=phone)
    # Guessing across many accounts from one address hits the address limit.
    for _ in range(6):
        bad = await client.post(
            "/api/v1/auth/login", json={"login": next_phone(), "password": "Bad-guess-1"}
        )
        await assert_error(bad, 401, "invalid_credentials")
    limited = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    await assert_error(limited, 429, "rate_limited")
    assert "Retry-After" in limited.headers


async def test_cookie_auth_needs_a_matching_origin(client: AppClient) -> None:
    await register(client, keep_cookie=True)  # the client now holds the session cookie
    body = {"current_password": PASSWORD, "new_password": "Brand-New-77"}
    no_origin = await client.post("/api/v1/auth/password", json=body)
    await assert_error(no_origin, 403, "origin_mismatch")
    foreign = await client.post(
        "/api/v1/auth/password", json=body, headers={"Origin": "https://evil.example"}
    )
    await assert_error(foreign, 403, "origin_mismatch")
    own = str(client.make_url("/")).rstrip("/")
    same = await client.post("/api/v1/auth/password", json=body, headers={"Origin": own})
    assert same.status == 204
    # Safe methods need no Origin.
    assert (await client.get("/api/v1/me")).status == 200


async def test_logout_clears_the_cookie(client: AppClient) -> None:
    await register(client, keep_cookie=True)
    own = str(client.make_url("/")).rstrip("/")
    response = await client.post("/api/v1/auth/logout", headers={"Origin": own})
    assert response.status == 204
    assert response.cookies["telemed_session"].value == ""
    await assert_error(await client.get("/api/v1/me"), 401, "unauthenticated")


async def test_a_malformed_authorization_header_is_401(client: AppClient) -> None:
    for header in ("Basic abc", "Bearer ", "Token x"):
        response = await client.get("/api/v1/me", headers={"Authorization": header})
        await assert_error(response, 401, "unauthenticated")
    response = await client.get("/api/v1/me", headers=bearer("x" * 500))
    await assert_error(response, 401, "unauthenticated")


async def test_profile_update(client: AppClient) -> None:
    auth = await register(client)
    headers = bearer(auth["token"])
    response = await client.patch(
        "/api/v1/me", headers=headers, json={"locale": "en", "time_zone": "Asia/Yekaterinburg"}
    )
    assert response.status == 200
    body = await response.json()
    assert (body["locale"], body["time_zone"]) == ("en", "Asia/Yekaterinburg")
    bad = await client.patch("/api/v1/me", headers=headers, json={"time_zone": "Mars/Olympus"})
    await assert_error(bad, 400, "invalid_input")
    bad = await client.patch("/api/v1/me", headers=headers, json={"locale": "de"})
    await assert_error(bad, 400, "invalid_input")
    me = await (await client.get("/api/v1/me", headers=headers)).json()
    assert (me["locale"], me["time_zone"]) == ("en", "Asia/Yekaterinburg")


async def test_registration_records_the_consent_the_patient_read(client: AppClient) -> None:
    """152-ФЗ: the patient agrees to the current text of the consent, whose version and
    time the account keeps; the text they agreed to stays readable in both languages."""
    text = await client.get("/api/v1/consent", params={"lang": "ru"})
    assert text.status == 200
    current = await text.json()
    assert current["version"] == consent.CURRENT.version
    assert "152-ФЗ" in current["text"]
    english = await (await client.get("/api/v1/consent", params={"lang": "en"})).json()
    assert "152-FZ" in english["text"]
    unknown = await client.get("/api/v1/consent", params={"version": "1999-01-01"})
    await assert_error(unknown, 404, "not_found")

    body = {
        "full_name": "Согласная Анна",
        "birth_date": "1980-01-01",
        "phone": next_phone(),
        "password": PASSWORD,
    }
    before = await count_users(client)
    missing = await client.post("/api/v1/auth/register", json=body)
    await assert_error(missing, 400, "invalid_input")
    old = await client.post("/api/v1/auth/register", json={**body, "consent_version": "2020-01-01"})
    refused = await assert_error(old, 422, "invalid_value")
    assert refused["details"]["fields"][0]["code"] == "consent_outdated"
    assert refused["details"]["version"] == consent.CURRENT.version
    assert await count_users(client) == before

    made = await client.post(
        "/api/v1/auth/register", json={**body, "consent_version": current["version"]}
    )
    assert made.status == 201, await made.text()
    user = (await made.json())["user"]
    assert user["consent_version"] == current["version"]
    assert user["consent_at"] is not None


@pytest.mark.parametrize(
    "settings_overrides", [{"default_locale": "en", "default_time_zone": "Asia/Novosibirsk"}]
)
async def test_new_accounts_take_the_servers_language_and_time_zone(client: AppClient) -> None:
    """TELEMED_DEFAULT_LOCALE and TELEMED_DEFAULT_TIME_ZONE: a registration that names no
    language, a doctor the manager adds, a manager from the command line."""
    patient = (await register(client))["user"]
    assert (patient["locale"], patient["time_zone"]) == ("en", "Asia/Novosibirsk")
    chosen = (await register(client, locale="ru"))["user"]
    assert chosen["locale"] == "ru"  # the patient's own choice wins

    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    doctor = await make_doctor(client, manager, centre["id"])
    me = await ok(client, "GET", "/me", doctor["token"])
    assert (me["locale"], me["time_zone"]) == ("en", "Asia/Novosibirsk")
    staff_me = await ok(client, "GET", "/me", manager)
    assert (staff_me["locale"], staff_me["time_zone"]) == ("en", "Asia/Novosibirsk")
