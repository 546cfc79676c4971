"""Socket.IO on one node: connection auth, chat that loses nothing, live updates."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.factories import bearer
from tests.flows import make_patient, ok
from tests.realtime import Peer, connection_refused, history, open_peer, send


async def test_a_connection_without_a_valid_token_is_refused(client: AppClient) -> None:
    url = str(client.make_url("/"))
    for token in (None, "not-a-token"):
        error = await connection_refused(url, token)
        assert error["data"]["error"]["code"] == "unauthenticated"


async def test_send_ack_receive_and_idempotent_resend(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    for peer in (patient, doctor):
        ack = await peer.call("consultation:subscribe", {"consultation_id": cid})
        assert ack["ok"] is True, ack
        assert ack["data"]["messages"] == []
        assert ack["data"]["writable"] is True

    ack = await patient.call("chat:send", send(cid, "m-1", "Здравствуйте, доктор!"))
    assert ack["ok"] is True, ack
    message = ack["data"]["message"]
    assert message["seq"] == 1
    assert message["body"] == "Здравствуйте, доктор!"
    assert message["sender_id"] == booked["patient"]["user"]["id"]
    await doctor.wait_for(lambda: len(doctor.events("chat:message_created")) == 1)
    assert doctor.events("chat:message_created")[0]["id"] == message["id"]

    again = await patient.call("chat:send", send(cid, "m-1", "Здравствуйте, доктор!"))
    assert again["data"]["message"] == message
    reply = await doctor.call("chat:send", send(cid, "d-1", "Добрый день! Слушаю вас."))
    assert reply["data"]["message"]["seq"] == 2
    await patient.wait_for(lambda: len(patient.events("chat:message_created")) == 2)
    await doctor.wait_for(lambda: len(doctor.events("chat:message_created")) >= 2)
    # The resend was not re-emitted: the events are seq 1 then 2, once each.
    assert [m["seq"] for m in doctor.events("chat:message_created")] == [1, 2]
    stored = await history(client, booked["patient"]["token"], cid)
    assert [m["seq"] for m in stored] == [1, 2]

    read = await doctor.call("chat:read", {"consultation_id": cid, "seq": 1})
    assert read["data"]["seq"] == 1
    await patient.wait_for(lambda: bool(patient.events("chat:read_updated")))
    typing = await doctor.call("chat:typing", {"consultation_id": cid})
    assert typing["ok"] is True
    await patient.wait_for(lambda: bool(patient.events("chat:typing_started")))
    assert not doctor.events("chat:typing_started")


async def test_catch_up_after_a_disconnect(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    await patient.call("consultation:subscribe", {"consultation_id": cid})
    await doctor.call("consultation:subscribe", {"consultation_id": cid})
    await patient.call("chat:send", send(cid, "a", "Первое"))
    await doctor.wait_for(lambda: len(doctor.events("chat:message_created")) == 1)
    last_seq = doctor.events("chat:message_created")[-1]["seq"]
    await doctor.close()
    for n in range(3):
        await patient.call("chat:send", send(cid, f"b{n}", f"Пока вас не было {n}"))
    back = await open_peer(client, peers, booked["doctor"]["token"])
    ack = await back.call("consultation:subscribe", {"consultation_id": cid, "after_seq": last_seq})
    assert [m["seq"] for m in ack["data"]["messages"]] == [2, 3, 4]


async def test_two_concurrent_senders_get_one_order(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    watcher = await open_peer(client, peers, booked["patient"]["token"])
    for peer in (patient, doctor, watcher):
        await peer.call("consultation:subscribe", {"consultation_id": cid})
    acks = await asyncio.gather(
        *(patient.call("chat:send", send(cid, f"p{n}", f"пациент {n}")) for n in range(15)),
        *(doctor.call("chat:send", send(cid, f"d{n}", f"врач {n}")) for n in range(15)),
    )
    seqs = sorted(ack["data"]["message"]["seq"] for ack in acks)
    assert seqs == list(range(1, 31))
    await watcher.wait_for(lambda: len(watcher.events("chat:message_created")) == 30)
    received = [m["seq"] for m in watcher.events("chat:message_created")]
    assert received == sorted(received)
    # Each sender's own messages keep the order it sent them in.
    stored = await history(client, booked["doctor"]["token"], cid)
    mine = [m["body"] for m in stored if m["sender_id"] == booked["patient"]["user"]["id"]]
    assert mine == [f"пациент {n}" for n in range(15)]


async def test_outsiders_learn_nothing(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    await patient.call("consultation:subscribe", {"consultation_id": cid})
    await patient.call("chat:send", send(cid, "s1", "Личное"))
    for token in (booked["outsider"]["token"], booked["manager"]):
        outsider = await open_peer(client, peers, token)
        for event, data in (
            ("consultation:subscribe", {"consultation_id": cid}),
            ("chat:send", send(cid, "x", "Можно?")),
            ("chat:read", {"consultation_id": cid, "seq": 1}),
            ("chat:typing", {"consultation_id": cid}),
        ):
            ack = await outsider.call(event, data)
            assert ack == {
                "ok": False,
                "error": {"code": "not_found", "message": "Consultation not found", "details": {}},
            }, (event, ack)
        response = await client.get(f"/api/v1/consultations/{cid}/messages", headers=bearer(token))
        assert response.status == 404
        assert not outsider.events("chat:message_created")
    assert len(await history(client, booked["patient"]["token"], cid)) == 1


async def test_bad_payloads_are_refused_and_store_nothing(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    for data in (
        send(cid, "big", "я" * 4001),
        send(cid, "", "пусто"),
        send(cid, "bad id!", "текст"),
        send(cid, "e", "   "),
        {"consultation_id": cid, "body": "нет client_id"},
        {**send(cid, "x", "лишнее"), "extra": 1},
        send("not-a-uuid", "y", "текст"),
        "just a string",
        None,
        [1, 2, 3],
    ):
        ack = await patient.call("chat:send", data)
        assert ack["ok"] is False, data
        assert ack["error"]["code"] == "invalid_input", (data, ack)
        assert set(ack["error"]) == {"code", "message", "details"}
    assert await history(client, booked["patient"]["token"], cid) == []


async def test_history_plus_events_equals_a_fresh_history(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    await patient.call("chat:send", send(cid, "before", "Сообщение до подписки"))
    snapshot = await doctor.call("consultation:subscribe", {"consultation_id": cid})
    await patient.call("consultation:subscribe", {"consultation_id": cid})
    await asyncio.gather(
        *(patient.call("chat:send", send(cid, f"n{n}", f"№{n}")) for n in range(10))
    )
    await doctor.call("chat:send", send(cid, "reply", "Ответ"))
    fresh = await history(client, booked["doctor"]["token"], cid)
    await doctor.wait_for(lambda: len(doctor.events("chat:message_created")) == len(fresh) - 1)
    combined = snapshot["data"]["messages"] + doctor.events("chat:message_created")
    assert sorted(combined, key=lambda m: m["seq"]) == fresh


async def test_live_updates_reach_the_watchers(
    client: AppClient, booked: dict[str, Any], peers: list[Peer], clock: FakeClock
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    subscribed = await patient.call("consultation:subscribe", {"consultation_id": cid})
    assert subscribed["ok"] is True
    await doctor.call("consultation:subscribe", {"consultation_id": cid})
    doctor_user = booked["doctor"]["user_id"]
    await patient.wait_for(
        lambda: any(doctor_user in p["online"] for p in patient.events("presence:changed"))
    )

    clock.advance(timedelta(days=1))
    await ok(client, "POST", f"/consultations/{cid}/start", booked["doctor"]["token"])
    await patient.wait_for(
        lambda: any(e["state"] == "in_progress" for e in patient.events("consultation:updated"))
    )
    # A notification reaches the user's own room after the commit.
    await ok(client, "POST", f"/consultations/{cid}/end", booked["doctor"]["token"])
    await ok(
        client,
        "POST",
        f"/consultations/{cid}/conclusion",
        booked["doctor"]["token"],
        {"diagnosis": "Здоров", "findings": "Норма", "recommendations": "Гулять"},
        status=201,
    )
    await patient.wait_for(
        lambda: any(
            n["kind"] == "conclusion_issued" for n in patient.events("notification:created")
        )
    )
    states = [e["state"] for e in patient.events("consultation:updated")]
    assert states == ["in_progress", "completed", "concluded"]  # each change once
    # The doctor's leaving shows in the presence.
    await doctor.close()
    await patient.wait_for(
        lambda: (
            patient.events("presence:changed")[-1]["online"] == [booked["patient"]["user"]["id"]]
        )
    )


async def test_a_refused_change_emits_nothing(
    client: AppClient, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    await patient.call("consultation:subscribe", {"consultation_id": cid})
    response = await client.post(
        f"/api/v1/consultations/{cid}/end", headers=bearer(booked["doctor"]["token"])
    )
    assert response.status == 409
    await patient.call("chat:send", send(cid, "marker", "метка"))
    await patient.wait_for(lambda: bool(patient.events("chat:message_created")))
    assert patient.events("consultation:updated") == []


def test_the_protocol_document_is_generated_from_the_event_models() -> None:
    from pathlib import Path

    from telemed.signaling.protocol import markdown

    document = Path(__file__).resolve().parent.parent / "docs" / "realtime.md"
    assert document.read_text() == markdown(), (
        "docs/realtime.md is stale: python -m telemed.signaling.protocol > docs/realtime.md"
    )
    for name in ("chat:send", "consultation:subscribe", "notification:created"):
        assert f"### `{name}`" in markdown()


async def test_a_signed_out_socket_is_cut_off(
    client: AppClient, app: Any, booked: dict[str, Any], peers: list[Peer]
) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    assert (await patient.call("consultation:subscribe", {"consultation_id": cid}))["ok"]
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    await ok(client, "POST", "/auth/logout", booked["patient"]["token"], status=204)
    ack = await patient.call("consultation:subscribe", {"consultation_id": cid})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "unauthenticated"
    # The sweep disconnects it, so that it stops receiving too; others stay.
    swept = await run_jobs_once(app)
    assert swept["socket_sweep"] == 1
    await patient.wait_for(lambda: not patient.sio.connected)
    assert doctor.sio.connected
    await doctor.call("chat:send", send(cid, "after", "Вы ещё здесь?"))
    assert not patient.events("chat:message_created")


async def test_a_temporary_password_cannot_open_a_socket(client: AppClient) -> None:
    from sqlmodel import select

    from telemed import db, keys
    from telemed.accounts.models import User

    auth = await make_patient(client)
    assert client.app is not None
    async with db.transaction(client.app[keys.SESSION_FACTORY]) as session:
        user = (
            await session.exec(select(User).where(User.id == uuid.UUID(auth["user"]["id"])))
        ).one()
        user.must_change_password = True
        session.add(user)
    error = await connection_refused(str(client.make_url("/")), auth["token"])
    assert error["data"]["error"]["code"] == "password_change_required"


def test_only_the_protocol_s_events_can_be_sent() -> None:
    """Every server → client event is a model of the protocol (``docs/realtime.md``),
    and nothing in the server emits around them."""
    import re
    from pathlib import Path

    from telemed import live
    from telemed.signaling.events import SERVER_EVENTS, TypingStarted

    assert set(live.EVENTS) == SERVER_EVENTS

    class Undocumented(live.ServerEvent):
        note: str

    with pytest.raises(TypeError, match="not an event of the protocol"):
        live.event(Undocumented(note="x"), to=["user:1"])
    with pytest.raises(ValueError, match="Extra inputs"):
        TypingStarted.model_validate(
            {"consultation_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "extra": 1}
        )
    # One place emits: the publisher's way out (``namespace.emitter``), which the
    # publisher calls (``self.emit``).
    package = Path(__file__).resolve().parent.parent / "telemed"
    emitting = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"(?<!self)\.emit\(", line)
    ]
    assert emitting == ["signaling/namespace.py:" + str(_emit_line(package))], emitting


def _emit_line(package: Any) -> int:
    lines = (package / "signaling" / "namespace.py").read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if "await sio.emit(" in line)
