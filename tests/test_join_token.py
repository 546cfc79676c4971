"""Join tokens: a short-lived token for one consultation's room (the embed URL), minted
by its patient or doctor while the room is open to them, refused by the HTTP API and kept
to its own consultation on Socket.IO."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import socketio
from sqlmodel import col, select

from telemed import keys
from telemed.accounts.models import AuthSession
from telemed.audit import AuditEvent
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.factories import PASSWORD, assert_error, bearer
from tests.flows import book_slot, later, ok
from tests.realtime import Peer, connect, history, open_peer, refused, send


def join_token_path(cid: str) -> str:
    return f"/api/v1/consultations/{cid}/join-token"


async def open_the_room(client: AppClient, booked: dict[str, Any], clock: FakeClock) -> datetime:
    """Move the clock into the room's window (ten minutes before the start); returns the
    consultation's planned end."""
    consultation = await ok(
        client, "GET", f"/consultations/{booked['id']}", booked["patient"]["token"]
    )
    starts = datetime.fromisoformat(consultation["starts_at"])
    clock.advance(starts - timedelta(minutes=10) - clock.now())
    return datetime.fromisoformat(consultation["ends_at"])


async def mint(client: AppClient, cid: str, token: str) -> dict[str, Any]:
    response = await client.post(join_token_path(cid), headers=bearer(token))
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    assert "Set-Cookie" not in response.headers  # a join token is never a cookie
    return body


async def join_tokens_of(client: AppClient, cid: str) -> list[AuthSession]:
    assert client.app is not None
    async with client.app[keys.SESSION_FACTORY]() as session:
        rows = await session.exec(
            select(AuthSession).where(AuthSession.consultation_id == uuid.UUID(cid))
        )
        return list(rows.all())


async def issued_audit(client: AppClient, cid: str) -> list[AuditEvent]:
    assert client.app is not None
    async with client.app[keys.SESSION_FACTORY]() as session:
        rows = await session.exec(
            select(AuditEvent)
            .where(AuditEvent.action == "join_token.issued", AuditEvent.object_id == cid)
            .order_by(col(AuditEvent.id))
        )
        return list(rows.all())


async def test_the_patient_and_the_doctor_mint_and_no_one_else(
    client: AppClient, booked: dict[str, Any], clock: FakeClock
) -> None:
    cid = booked["id"]
    patient, doctor = booked["patient"], booked["doctor"]

    # A day early the room is closed, so no token either; nothing is stored.
    early = await assert_error(
        await client.post(join_token_path(cid), headers=bearer(patient["token"])), 409, "too_late"
    )
    assert "opens_at" in early["details"]
    assert await join_tokens_of(client, cid) == []
    assert await issued_audit(client, cid) == []

    ends = await open_the_room(client, booked, clock)
    minted = await mint(client, cid, patient["token"])
    assert set(minted) == {"token", "expires_at", "url"}
    assert minted["url"] == f"/embed/consultations/{cid}?token={minted['token']}"
    assert datetime.fromisoformat(minted["expires_at"]) == ends + timedelta(hours=1)
    by_doctor = await mint(client, cid, doctor["token"])
    assert by_doctor["token"] != minted["token"]

    # Someone with no part in it learns nothing; a manager sees it but is no participant.
    for token, status, code in (
        (booked["outsider"]["token"], 404, "not_found"),
        (booked["manager"], 403, "forbidden"),
    ):
        await assert_error(
            await client.post(join_token_path(cid), headers=bearer(token)), status, code
        )
    await assert_error(await client.post(join_token_path(cid)), 401, "unauthenticated")
    for missing in (str(uuid.uuid4()), "not-an-id"):
        await assert_error(
            await client.post(join_token_path(missing), headers=bearer(patient["token"])),
            404,
            "not_found",
        )

    # Stored hashed, one per mint; minting started nothing.
    rows = await join_tokens_of(client, cid)
    assert sorted(row.token_hash for row in rows) == sorted(
        hashlib.sha256(t.encode()).hexdigest() for t in (minted["token"], by_doctor["token"])
    )
    consultation = await ok(client, "GET", f"/consultations/{cid}", patient["token"])
    assert consultation["state"] == "scheduled"

    # Who minted one for which consultation, and which token it is.
    audited = await issued_audit(client, cid)
    assert [str(event.actor_id) for event in audited] == [
        patient["user"]["id"],
        doctor["user_id"],
    ]
    assert {str(event.subject_id) for event in audited} == {patient["user"]["id"]}
    by_hash = {row.token_hash: str(row.id) for row in rows}
    assert (
        audited[0].details["session_id"]
        == by_hash[hashlib.sha256(minted["token"].encode()).hexdigest()]
    )


async def test_only_while_the_consultation_can_take_place(
    client: AppClient, booked: dict[str, Any], clock: FakeClock
) -> None:
    cid = booked["id"]
    patient, doctor = booked["patient"], booked["doctor"]
    ends = await open_the_room(client, booked, clock)

    # In progress and running over its time: the token still gets its margin.
    await ok(client, "POST", f"/consultations/{cid}/start", doctor["token"])
    clock.advance(ends + timedelta(hours=2) - clock.now())
    running = await mint(client, cid, patient["token"])
    assert datetime.fromisoformat(running["expires_at"]) == clock.now() + timedelta(hours=1)

    await ok(client, "POST", f"/consultations/{cid}/end", doctor["token"])
    for token in (patient["token"], doctor["token"]):
        error = await assert_error(
            await client.post(join_token_path(cid), headers=bearer(token)), 409, "invalid_state"
        )
        assert error["details"]["state"] == "completed"
    assert len(await join_tokens_of(client, cid)) == 1


async def test_a_cancelled_consultation_has_no_room(
    client: AppClient, booked: dict[str, Any]
) -> None:
    cid = booked["id"]
    await ok(
        client,
        "POST",
        f"/consultations/{cid}/cancel",
        booked["patient"]["token"],
        {"reason": "Нет"},
    )
    error = await assert_error(
        await client.post(join_token_path(cid), headers=bearer(booked["doctor"]["token"])),
        409,
        "invalid_state",
    )
    assert error["details"]["state"] == "cancelled"
    assert await join_tokens_of(client, cid) == []


@pytest.mark.parametrize("settings_overrides", [{"room_opens_minutes": 24 * 60}])
async def test_a_join_token_lives_four_hours_at_most(
    client: AppClient, booked: dict[str, Any], clock: FakeClock
) -> None:
    # The room opens a day ahead here: the token is capped, not valid until the end.
    minted = await mint(client, booked["id"], booked["patient"]["token"])
    assert datetime.fromisoformat(minted["expires_at"]) == clock.now() + timedelta(hours=4)


async def test_the_http_api_refuses_a_join_token(
    client: AppClient, booked: dict[str, Any], clock: FakeClock
) -> None:
    cid = booked["id"]
    patient = booked["patient"]
    await open_the_room(client, booked, clock)
    joining = (await mint(client, cid, patient["token"]))["token"]

    # The room reads the user's language and role, and nothing personal.
    me = await ok(client, "GET", "/me/preferences", joining)
    assert me == {
        "id": patient["user"]["id"],
        "role": "patient",
        "locale": "ru",
        "time_zone": "Europe/Moscow",
    }
    refusals = [
        ("GET", "/api/v1/me", None),
        ("GET", "/api/v1/consultations", None),
        ("GET", f"/api/v1/consultations/{cid}", None),
        ("GET", f"/api/v1/consultations/{cid}/messages", None),
        ("GET", "/api/v1/documents", None),
        ("PATCH", "/api/v1/me", {"locale": "en"}),
        ("POST", f"/api/v1/consultations/{cid}/join-token", None),
        (
            "POST",
            "/api/v1/auth/password",
            {"current_password": PASSWORD, "new_password": "Another-Pass-2027"},
        ),
    ]
    for method, path, body in refusals:
        response = await client.request(method, path, json=body, headers=bearer(joining))
        error = await assert_error(response, 403, "forbidden")
        assert error["details"] == {"join_token_for": cid}, (method, path)
    # Nothing changed: the password, the language, the tokens.
    signed = await ok(
        client,
        "POST",
        "/auth/login",
        None,
        {"login": patient["user"]["phone"], "password": PASSWORD},
    )
    client.session.cookie_jar.clear()
    assert signed["user"]["locale"] == "ru"
    assert len(await join_tokens_of(client, cid)) == 1

    # Sent as the cookie (a page could set one), it is refused all the same.
    client.session.cookie_jar.update_cookies({"telemed_session": joining})
    await assert_error(await client.get("/api/v1/consultations"), 403, "forbidden")
    client.session.cookie_jar.clear()

    # Ending it ends that token only, and leaves the browser's cookie alone.
    response = await client.post("/api/v1/auth/logout", headers=bearer(joining))
    assert response.status == 204
    assert "Set-Cookie" not in response.headers
    await assert_error(
        await client.get("/api/v1/me/preferences", headers=bearer(joining)), 401, "unauthenticated"
    )
    await ok(client, "GET", "/consultations", patient["token"])

    # A password change ends every session of the account, join tokens included.
    other = (await mint(client, cid, patient["token"]))["token"]
    await ok(
        client,
        "POST",
        "/auth/password",
        patient["token"],
        {"current_password": PASSWORD, "new_password": "Another-Pass-2027"},
        status=204,
    )
    await assert_error(
        await client.get("/api/v1/me/preferences", headers=bearer(other)), 401, "unauthenticated"
    )


async def test_a_join_token_opens_its_room_and_chat_and_nothing_else(
    client: AppClient, booked: dict[str, Any], clock: FakeClock, peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient, doctor = booked["patient"], booked["doctor"]
    # Another consultation of the same patient with the same doctor, the day after.
    other = (await book_slot(client, doctor, patient, later(clock, days=2)))["id"]
    await open_the_room(client, booked, clock)
    joining = (await mint(client, cid, patient["token"]))["token"]
    room = await open_peer(client, peers, joining)
    full = await open_peer(client, peers, patient["token"])

    joined = await room.call("room:join", {"consultation_id": cid})
    assert joined["ok"] is True, joined
    assert [p["user_id"] for p in joined["data"]["participants"]] == [patient["user"]["id"]]
    subscribed = await room.call("consultation:subscribe", {"consultation_id": cid})
    assert subscribed["ok"] is True, subscribed
    sent = await room.call("chat:send", send(cid, "j-1", "Я в комнате"))
    assert sent["ok"] is True, sent
    assert sent["data"]["message"]["sender_id"] == patient["user"]["id"]
    assert [m["body"] for m in await history(client, doctor["token"], cid)] == ["Я в комнате"]

    # Another consultation, even the same patient's, is out of its reach.
    for event, payload in (
        ("consultation:subscribe", {"consultation_id": other}),
        ("chat:send", send(other, "j-2", "Не туда")),
        ("chat:typing", {"consultation_id": other}),
        ("room:join", {"consultation_id": other}),
        ("consultation:subscribe", {"consultation_id": str(uuid.uuid4())}),
    ):
        error = refused(await room.call(event, payload), "forbidden")
        assert error["details"] == {"join_token_for": cid}
    refused(await room.call("chat:send", {"body": "Без адреса"}), "invalid_input")
    assert await history(client, patient["token"], other) == []
    # The patient's own session still reaches it.
    assert (await full.call("consultation:subscribe", {"consultation_id": other}))["ok"] is True

    # News of other consultations (notifications) goes to the user's room: not to it.
    await ok(
        client, "POST", f"/consultations/{other}/cancel", doctor["token"], {"reason": "Отпуск"}
    )
    await full.wait_for(lambda: bool(full.events("notification:created")))
    # A round trip: whatever the server sent this socket before, it has arrived.
    assert (await room.call("chat:typing", {"consultation_id": cid}))["ok"] is True
    assert room.events("notification:created") == []
    assert [e for e in room.events("consultation:updated") if e["id"] == other] == []
    assert [e["id"] for e in full.events("consultation:updated")] == [other]

    # The doctor's join token starts the consultation in its room, as the doctor would.
    doctor_room = await open_peer(
        client, peers, (await mint(client, cid, doctor["token"]))["token"]
    )
    assert (await doctor_room.call("room:join", {"consultation_id": cid}))["ok"] is True
    consultation = await ok(client, "GET", f"/consultations/{cid}", patient["token"])
    assert consultation["state"] == "in_progress"
    await room.wait_for(lambda: bool(room.events("room:participant_joined")))
    assert (await room.call("room:leave", {"consultation_id": cid}))["ok"] is True


async def test_a_join_token_expires(
    client: AppClient, booked: dict[str, Any], clock: FakeClock, peers: list[Peer]
) -> None:
    assert client.app is not None
    cid = booked["id"]
    patient = booked["patient"]
    await open_the_room(client, booked, clock)
    minted = await mint(client, cid, patient["token"])
    room = await open_peer(client, peers, minted["token"])
    full = await open_peer(client, peers, patient["token"])
    assert (await room.call("consultation:subscribe", {"consultation_id": cid}))["ok"] is True

    clock.advance(datetime.fromisoformat(minted["expires_at"]) - clock.now() + timedelta(seconds=1))
    refused(await room.call("consultation:subscribe", {"consultation_id": cid}), "unauthenticated")
    expired = await client.get("/api/v1/me/preferences", headers=bearer(minted["token"]))
    await assert_error(expired, 401, "unauthenticated")
    swept = await run_jobs_once(client.app)
    assert swept["socket_sweep"] == 1
    await room.wait_for(lambda: not room.sio.connected)
    assert full.sio.connected
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect(str(client.make_url("/")), minted["token"])
