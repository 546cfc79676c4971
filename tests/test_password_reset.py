"""A forgotten password, reset with a code sent by SMS: the code comes through the outbox
(read here as a manager of a demo reads it: no gateway, development mode), is good once
and for a while, dies after five wrong tries, and asking for it tells nothing about
which phones have accounts; requests and tries are limited per phone and per address."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlmodel import col, select

from telemed import keys
from telemed.accounts.models import PasswordResetCode, Role
from telemed.audit import AuditEvent
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.factories import PASSWORD, assert_error, next_phone, register, staff
from tests.flows import api, make_centre, make_doctor, manager_token, ok

NEW_PASSWORD = "Quiet-River-73"
CODE_SMS = re.compile(r"^Телемед: код для смены пароля (\d{6})\. Никому его не сообщайте\.$")


async def ask_code(client: AppClient, phone: str) -> Any:
    response = await client.post("/api/v1/auth/password-reset", json={"phone": phone})
    return response


async def confirm(client: AppClient, phone: str, code: str, password: str = NEW_PASSWORD) -> Any:
    response = await client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"phone": phone, "code": code, "new_password": password},
    )
    return response


async def kept_code(client: AppClient, app: web.Application, manager: str, phone: str) -> str:
    """The code in the newest SMS to ``phone``, as a demo's manager reads it."""
    await run_jobs_once(app)
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    [latest, *_] = [m for m in outbox if m["recipient"] == phone]
    assert (latest["kind"], latest["status"]) == ("password_reset_code", "kept")
    assert "••••••" in latest["body"]  # masked for everyone but the kept text
    found = CODE_SMS.match(latest["kept_text"] or "")
    assert found, latest
    return found[1]


async def codes_sent(client: AppClient, app: web.Application, manager: str) -> list[str]:
    """The recipients of every reset code in the outbox."""
    await run_jobs_once(app)
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    return [m["recipient"] for m in outbox if m["kind"] == "password_reset_code"]


async def actions(app: web.Application) -> list[str]:
    async with app[keys.SESSION_FACTORY]() as session:
        rows = await session.exec(select(AuditEvent.action).order_by(col(AuditEvent.id)))
        return [action for action in rows.all() if action.startswith("password.")]


async def test_a_forgotten_password_is_reset_with_the_code_from_the_sms(
    client: AppClient, app: web.Application
) -> None:
    manager = await manager_token(client)
    patient = await register(client)
    phone = patient["user"]["phone"]
    elsewhere = await ok(
        client, "POST", "/auth/login", None, {"login": phone, "password": PASSWORD}
    )
    client.session.cookie_jar.clear()

    # Written as people write it: any form of the number.
    asked = await ask_code(client, "8 (" + phone[2:5] + ") " + phone[5:])
    assert asked.status == 202
    assert await asked.json() == {"code_digits": 6, "code_valid_minutes": 15}
    code = await kept_code(client, app, manager, phone)
    # The bell says a code was asked for, never the code.
    bell = await ok(client, "GET", "/notifications", patient["token"])
    assert bell["items"][0]["kind"] == "password_reset_code"
    assert code not in str(bell)
    assert "Если это были не вы" in bell["items"][0]["body"]

    reset = await confirm(client, phone, code[:3] + " " + code[3:])
    body = await reset.json()
    assert reset.status == 200, body
    assert body["user"]["id"] == patient["user"]["id"]
    assert body["user"]["must_change_password"] is False
    assert "telemed_session" in reset.cookies  # signed in, in a browser too
    client.session.cookie_jar.clear()
    # Every earlier session ended; the old password is dead, the new one works.
    for token in (patient["token"], elsewhere["token"]):
        assert (await api(client, "GET", "/me", token))[0] == 401
    assert (await api(client, "GET", "/me", body["token"]))[0] == 200
    login = {"login": phone, "password": PASSWORD}
    assert (await api(client, "POST", "/auth/login", None, login))[0] == 401
    await ok(client, "POST", "/auth/login", None, {"login": phone, "password": NEW_PASSWORD})
    client.session.cookie_jar.clear()
    # A code is good once.
    await assert_error(await confirm(client, phone, code, "Another-Pass-91"), 422, "invalid_code")
    assert await actions(app) == ["password.reset_requested", "password.reset"]


async def test_asking_for_a_code_tells_nothing_about_the_phone(
    client: AppClient, app: web.Application
) -> None:
    manager = await staff(client, Role.MANAGER)
    patient = await register(client)
    nobody = next_phone()
    answers = []
    for phone in (patient["user"]["phone"], nobody, manager["user"]["phone"]):
        response = await ask_code(client, phone)
        headers = {k: v for k, v in response.headers.items() if k not in ("Date", "Content-Length")}
        answers.append((response.status, await response.json(), headers))
    assert answers[0] == answers[1] == answers[2]
    # Only the patient got a code: not the phone without an account, nor the manager
    # (a SIM card must not open the console).
    assert await codes_sent(client, app, manager["token"]) == [patient["user"]["phone"]]
    # Confirming for a phone without an account looks like a wrong code.
    await assert_error(await confirm(client, nobody, "123456"), 422, "invalid_code")
    await assert_error(
        await confirm(client, manager["user"]["phone"], "123456"), 422, "invalid_code"
    )
    # A doctor may reset a forgotten password too.
    centre = await make_centre(client, manager["token"])
    doctor = await make_doctor(client, manager["token"], centre["id"])
    assert (await ask_code(client, doctor["phone"])).status == 202
    code = await kept_code(client, app, manager["token"], doctor["phone"])
    assert (await confirm(client, doctor["phone"], code)).status == 200


async def test_wrong_expired_and_replaced_codes_are_refused_alike(
    client: AppClient, app: web.Application, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    phone = (await register(client))["user"]["phone"]

    await ask_code(client, phone)
    code = await kept_code(client, app, manager, phone)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    first = await assert_error(await confirm(client, phone, wrong), 422, "invalid_code")
    assert first["details"] == {
        "field": "code",
        "fields": [{"field": "code", "code": "code_invalid", "params": {}}],
    }
    # Expired: the same answer.
    clock.advance(timedelta(minutes=15, seconds=1))
    assert await assert_error(await confirm(client, phone, code), 422, "invalid_code") == first

    # A new code replaces the earlier one.
    await ask_code(client, phone)
    older = await kept_code(client, app, manager, phone)
    clock.advance(timedelta(minutes=1))
    await ask_code(client, phone)
    newer = await kept_code(client, app, manager, phone)
    if older != newer:  # one chance in a million that they are the same
        await assert_error(await confirm(client, phone, older), 422, "invalid_code")
    # Only the live code stays readable in the outbox.
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    assert [m["kept_text"] is not None for m in outbox] == [True, False, False]

    # A weak new password is refused without using the code up.
    weak = await assert_error(await confirm(client, phone, newer, "12345678"), 422, "weak_password")
    assert weak["details"]["field"] == "new_password"
    personal = await confirm(client, phone, newer, "x" + phone[-7:] + "abc")
    await assert_error(personal, 422, "weak_password")
    assert (await confirm(client, phone, newer)).status == 200


async def test_five_wrong_tries_kill_a_code(client: AppClient, app: web.Application) -> None:
    manager = await manager_token(client)
    phone = (await register(client))["user"]["phone"]
    await ask_code(client, phone)
    code = await kept_code(client, app, manager, phone)
    wrong = [f"{(int(code) + n) % 10**6:06d}" for n in range(1, 6)]
    for guess in wrong:
        await assert_error(await confirm(client, phone, guess), 422, "invalid_code")
    await assert_error(await confirm(client, phone, code), 422, "invalid_code")
    async with app[keys.SESSION_FACTORY]() as session:
        [row] = (await session.exec(select(PasswordResetCode))).all()
    assert (row.failures, row.used_at) == (5, None)
    assert code not in row.code_hash  # an HMAC, not the code
    # The password did not change.
    await ok(client, "POST", "/auth/login", None, {"login": phone, "password": PASSWORD})


async def test_codes_are_limited_per_phone_whether_or_not_it_has_an_account(
    client: AppClient, app: web.Application, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    known = (await register(client))["user"]["phone"]
    unknown = next_phone()
    for phone in (known, unknown):
        for _ in range(5):
            assert (await ask_code(client, phone)).status == 202
        refused = await ask_code(client, phone)
        error = await assert_error(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) == error["details"]["retry_after"] == 3600
    assert await codes_sent(client, app, manager) == [known] * 5
    clock.advance(timedelta(hours=1))
    assert (await ask_code(client, known)).status == 202


async def test_codes_are_limited_per_address(client: AppClient) -> None:
    for _ in range(20):
        assert (await ask_code(client, next_phone())).status == 202
    await assert_error(await ask_code(client, next_phone()), 429, "rate_limited")
    # Behind no trusted proxy, a forwarded address is not believed.
    response = await client.post(
        "/api/v1/auth/password-reset",
        json={"phone": next_phone()},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    await assert_error(response, 429, "rate_limited")


async def test_code_tries_are_limited_per_phone_and_per_address(
    client: AppClient, app: web.Application
) -> None:
    manager = await manager_token(client)
    phone = (await register(client))["user"]["phone"]
    await ask_code(client, phone)
    code = await kept_code(client, app, manager, phone)
    # Tries count per phone even with no live code to guess (five killed it already).
    for n in range(10):
        guess = f"{(int(code) + 1 + n) % 10**6:06d}"
        await assert_error(await confirm(client, phone, guess), 422, "invalid_code")
    await assert_error(await confirm(client, phone, code), 429, "rate_limited")
    # Spread over phones, the address's own limit (30 an hour) stops the guessing.
    for _ in range(20):
        await assert_error(await confirm(client, next_phone(), "000000"), 422, "invalid_code")
    await assert_error(await confirm(client, next_phone(), "000000"), 429, "rate_limited")


async def test_a_right_code_forgets_the_failed_sign_ins(
    client: AppClient, app: web.Application
) -> None:
    """The reset is the way out of a locked account: its counted failures go."""
    manager = await manager_token(client)
    patient = await register(client)
    phone = patient["user"]["phone"]
    for _ in range(5):
        await api(client, "POST", "/auth/login", None, {"login": phone, "password": "Wrong-pass-1"})
    locked = await client.post("/api/v1/auth/login", json={"login": phone, "password": PASSWORD})
    await assert_error(locked, 429, "rate_limited")
    await ask_code(client, phone)
    code = await kept_code(client, app, manager, phone)
    assert (await confirm(client, phone, code)).status == 200
    client.session.cookie_jar.clear()
    await ok(client, "POST", "/auth/login", None, {"login": phone, "password": NEW_PASSWORD})
    assert (await api(client, "GET", "/me", patient["token"]))[0] == 401
