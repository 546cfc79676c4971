"""Every action that costs a password hash, an audit row or a message to others has a
limit: HTTP answers 429 with ``Retry-After``, Socket.IO the error ack. Low limits here so
that each is reached in a few calls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from telemed.accounts import consent
from telemed.errors import RateLimited
from telemed.http import client_address
from telemed.limits import DEFAULT_LIMITS, Limit, Limiter, resolve_limits
from tests.conftest import TEST_SETTINGS, AppClient
from tests.factories import PASSWORD, assert_error, bearer, next_phone, register
from tests.media_peers import participant
from tests.realtime import Peer, open_peer, refused


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "login_max_failures_per_account": 5,
        # The test client is a proxy that names its clients in X-Forwarded-For.
        "trusted_proxies": ["127.0.0.1"],
        "rate_limits": {
            "register.address": "3/3600",
            "password.user": "3/900",
            "write.user": "8/60",
            "chat.typing": "4/60",
            "recording.consent": "4/60",
        },
    }


async def count_audit(client: AppClient, action: str) -> int:
    from sqlmodel import func, select

    from telemed import keys
    from telemed.audit import AuditEvent

    app = client.app
    assert app is not None
    async with app[keys.SESSION_FACTORY]() as session:
        found = await session.exec(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        )
        return int(found.one())


async def test_wrong_current_passwords_are_limited(client: AppClient) -> None:
    patient = await register(client)
    headers = bearer(patient["token"])
    wrong = {"current_password": "Not-my-password-1", "new_password": "Brand-New-Pass-7"}
    for _ in range(3):
        response = await client.post("/api/v1/auth/password", headers=headers, json=wrong)
        await assert_error(response, 401, "invalid_credentials")
    limited = await client.post("/api/v1/auth/password", headers=headers, json=wrong)
    body = await assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) == body["details"]["retry_after"] > 0
    # The right password is refused too until the window passes: no more guesses.
    right = {"current_password": PASSWORD, "new_password": "Brand-New-Pass-7"}
    response = await client.post("/api/v1/auth/password", headers=headers, json=right)
    await assert_error(response, 429, "rate_limited")


async def test_a_right_password_change_clears_the_count(client: AppClient) -> None:
    patient = await register(client)
    headers = bearer(patient["token"])
    wrong = {"current_password": "Not-my-password-1", "new_password": "Brand-New-Pass-7"}
    for _ in range(2):
        response = await client.post("/api/v1/auth/password", headers=headers, json=wrong)
        await assert_error(response, 401, "invalid_credentials")
    right = {"current_password": PASSWORD, "new_password": "Brand-New-Pass-7"}
    assert (await client.post("/api/v1/auth/password", headers=headers, json=right)).status == 204
    again = {"current_password": "Not-my-password-1", "new_password": "Other-New-Pass-8"}
    for _ in range(3):
        response = await client.post("/api/v1/auth/password", headers=headers, json=again)
        await assert_error(response, 401, "invalid_credentials")


async def test_phone_and_email_of_one_account_share_one_count(client: AppClient) -> None:
    phone = next_phone()
    await register(client, phone=phone, email="one.account@example.ru")
    logins = [phone, "one.account@example.ru", phone, "ONE.ACCOUNT@example.ru", phone]
    for login in logins:
        response = await client.post(
            "/api/v1/auth/login", json={"login": login, "password": "Wrong-password-1"}
        )
        await assert_error(response, 401, "invalid_credentials")
    for login in (phone, "one.account@example.ru"):
        response = await client.post(
            "/api/v1/auth/login", json={"login": login, "password": PASSWORD}
        )
        await assert_error(response, 429, "rate_limited")


async def test_registrations_are_limited_per_address(client: AppClient) -> None:
    for _ in range(3):
        await register(client)
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "full_name": "Ещё Одна",
            "birth_date": "1990-01-01",
            "phone": next_phone(),
            "password": PASSWORD,
            "consent_version": consent.CURRENT.version,
        },
    )
    await assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) > 0


async def test_behind_a_trusted_proxy_each_client_counts_for_itself(client: AppClient) -> None:
    def through_proxy(address: str) -> dict[str, str]:
        # What a client wrote itself comes first; the proxy appends the peer it saw.
        return {"X-Forwarded-For": f"203.0.113.99, {address}"}

    body = {
        "full_name": "За Прокси",
        "birth_date": "1990-01-01",
        "password": PASSWORD,
        "consent_version": consent.CURRENT.version,
    }
    for address in ("198.51.100.1", "198.51.100.2"):
        for _ in range(3):
            response = await client.post(
                "/api/v1/auth/register",
                json={**body, "phone": next_phone()},
                headers=through_proxy(address),
            )
            assert response.status == 201, await response.text()
        response = await client.post(
            "/api/v1/auth/register",
            json={**body, "phone": next_phone()},
            headers=through_proxy(address),
        )
        await assert_error(response, 429, "rate_limited")


def test_the_client_address_is_read_only_from_trusted_proxies() -> None:
    from aiohttp.test_utils import make_mocked_request

    def address(peer: str, forwarded: str | None, trusted: list[str]) -> str | None:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        request = make_mocked_request("GET", "/", headers=headers)
        request._transport_peername = (peer, 50000)  # the test's peer
        return client_address(request, trusted)

    assert address("10.0.0.5", "1.2.3.4", []) == "10.0.0.5"  # no proxy trusted
    assert address("10.0.0.5", "1.2.3.4", ["10.0.0.0/8"]) == "1.2.3.4"
    assert address("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", ["10.0.0.0/8"]) == "1.2.3.4"
    assert address("192.0.2.1", "1.2.3.4", ["10.0.0.0/8"]) == "192.0.2.1"  # not a proxy
    assert address("10.0.0.5", "garbage", ["10.0.0.0/8"]) == "10.0.0.5"
    assert address("10.0.0.5", None, ["10.0.0.0/8"]) == "10.0.0.5"


def test_production_password_hashing_is_the_default() -> None:
    from telemed.settings import Settings

    settings = Settings(_env_file=None)
    assert (
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_hash_parallelism,
    ) == (3, 64 * 1024, 4)
    assert TEST_SETTINGS["password_hash_time_cost"] == 1  # only the tests hash cheaply


async def test_writes_are_limited_per_user(client: AppClient) -> None:
    patient = await register(client)
    headers = bearer(patient["token"])
    answers = []
    for n in range(10):
        locale = "en" if n % 2 else "ru"
        response = await client.patch("/api/v1/me", headers=headers, json={"locale": locale})
        answers.append(response.status)
    assert answers == [200] * 8 + [429] * 2
    # Reading is not writing: still open.
    assert (await client.get("/api/v1/me", headers=headers)).status == 200
    # Another user has a count of their own.
    other = await register(client)
    response = await client.patch(
        "/api/v1/me", headers=bearer(other["token"]), json={"locale": "en"}
    )
    assert response.status == 200


async def test_typing_is_limited(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    for peer in (patient, doctor):
        assert (await peer.call("consultation:subscribe", {"consultation_id": cid}))["ok"]
    for _ in range(4):
        assert (await patient.call("chat:typing", {"consultation_id": cid}))["ok"] is True
    error = refused(await patient.call("chat:typing", {"consultation_id": cid}), "rate_limited")
    assert error["details"]["retry_after"] > 0
    await doctor.wait_for(lambda: len(doctor.events("chat:typing_started")) >= 4)
    assert len(doctor.events("chat:typing_started")) == 4


async def test_consent_toggles_are_limited_and_only_changes_are_audited(
    client: AppClient, room: dict[str, Any], peers: list[Peer], media: list[Any]
) -> None:
    patient = await participant(client, peers, media, room["patient"]["token"], room["id"])
    assert (await patient.join())["ok"]
    consent = {"consultation_id": room["id"]}
    # The first call joins the room (room:join counts on its own limit).
    answers = []
    for granted in (True, True, False, True, False, True):
        ack = await patient.peer.call("recording:consent", {**consent, "granted": granted})
        answers.append(ack["ok"] or ack["error"]["code"])
    assert answers == [True, True, True, True, "rate_limited", "rate_limited"]
    # The repeated grant changed nothing and wrote nothing to the audit trail.
    assert await count_audit(client, "recording.consent_given") == 2
    assert await count_audit(client, "recording.consent_withdrawn") == 1


def test_limits_are_settings_with_documented_defaults() -> None:
    assert resolve_limits({})["register.address"] == DEFAULT_LIMITS["register.address"]
    assert resolve_limits({"room.join": "5/30"})["room.join"] == Limit(5, 30)
    with pytest.raises(ValueError, match="unknown rate limits"):
        resolve_limits({"no.such.limit": "1/1"})
    with pytest.raises(ValueError, match="count/seconds"):
        resolve_limits({"room.join": "often"})
    assert TEST_SETTINGS["rate_limits"]  # the suite's own override is a known limit
    resolve_limits(TEST_SETTINGS["rate_limits"])


async def test_the_sliding_window_lets_actions_through_again() -> None:
    now = [1000.0]
    limiter = Limiter({"chat.typing": Limit(2, 10)}, now=lambda: now[0])
    await limiter.hit("chat.typing", "user:a")
    now[0] += 4
    await limiter.hit("chat.typing", "user:a")
    with pytest.raises(RateLimited) as refused_once:
        await limiter.hit("chat.typing", "user:a")
    assert refused_once.value.details["retry_after"] == 6
    await limiter.hit("chat.typing", "user:b")  # someone else
    now[0] += timedelta(seconds=6).total_seconds()
    await limiter.hit("chat.typing", "user:a")  # the first one left the window
