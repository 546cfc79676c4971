"""One set of chat rules: the same message gets the same answer on its own and inside a
batch of good ones, by the group commit or one by one, with or without attachments
beside it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from telemed import keys
from telemed.chat.rules import ChatFacts, Refusal, Sender, refusal
from telemed.chat.service import SendRequest, store_batch
from telemed.errors import TelemedError
from telemed.scheduling.models import State
from telemed.settings import Settings
from tests.conftest import AppClient
from tests.flows import ok, upload
from tests.realtime import Peer, open_peer, send

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PATIENT, DOCTOR, DOCTOR_PROFILE = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def facts(state: State = State.SCHEDULED, doctor: uuid.UUID | None = DOCTOR_PROFILE) -> ChatFacts:
    return ChatFacts(patient_id=PATIENT, doctor_id=doctor, state=state, ended_at=None)


@pytest.mark.parametrize(
    ("case", "text", "expected"),
    [
        (facts(), "Здравствуйте", None),
        (facts(), "", Refusal.EMPTY),
        (facts(), "x" * 4001, Refusal.TOO_LONG),
        # A closed chat is said before an empty message; not a participant before both.
        (facts(State.CANCELLED), "", Refusal.CLOSED),
        (facts(State.REQUESTED, doctor=None), "", Refusal.CLOSED),  # no doctor yet
        (None, "", Refusal.NOT_FOUND),
    ],
)
def test_the_rules_check_in_one_order(
    case: ChatFacts | None, text: str, expected: Refusal | None
) -> None:
    patient = Sender(PATIENT, None)
    settings = Settings(_env_file=None)
    assert (
        refusal(case, sender=patient, text=text, attachments=0, now=NOW, settings=settings)
        is expected
    )
    # A doctor of the centre who is not the consultation's doctor is no participant.
    stranger = Sender(DOCTOR, uuid.uuid4())
    assert (
        refusal(
            facts(), sender=stranger, text="Добрый день", attachments=0, now=NOW, settings=settings
        )
        is Refusal.NOT_FOUND
    )


async def cancelled_and_open(
    client: AppClient, booked: dict[str, Any], clock: Any
) -> tuple[str, str]:
    """The booked consultation, cancelled by its doctor (its chat is closed), and a second
    one of the same patient and doctor, open."""
    from tests.flows import book_slot, later

    second = await book_slot(
        client, booked["doctor"], booked["patient"], later(clock, days=2), topic="other"
    )
    await ok(
        client,
        "POST",
        f"/consultations/{booked['id']}/cancel",
        booked["doctor"]["token"],
        {"reason": "Врач заболел"},
    )
    return booked["id"], second["id"]


def wire_of(outcome: Any) -> Any:
    return outcome.to_wire() if isinstance(outcome, TelemedError) else "stored"


async def test_a_bad_message_gets_the_same_answer_alone_and_in_a_batch(
    client: AppClient, booked: dict[str, Any], clock: Any
) -> None:
    closed, open_ = await cancelled_and_open(client, booked, clock)
    app = client.app
    assert app is not None
    patient = Sender(uuid.UUID(booked["patient"]["user"]["id"]), None)
    document = await upload(client, booked["patient"]["token"])
    bad = SendRequest(patient, uuid.UUID(closed), "bad-1", "")  # empty, to a closed chat
    good = [
        SendRequest(
            patient,
            uuid.UUID(open_),
            f"good-{n}",
            f"Сообщение {n}",
            # A neighbour with an attachment keeps the batch on the group commit.
            (uuid.UUID(document["id"]),) if n == 1 else (),
        )
        for n in range(3)
    ]
    settings = app[keys.SETTINGS]

    async def store(requests: list[SendRequest]) -> list[Any]:
        async with app[keys.ENGINE].begin() as connection:
            return await connection.run_sync(
                lambda sync: store_batch(sync, requests, now=clock.now(), settings=settings)
            )

    alone = await store([bad])
    batch = await store([good[0], bad, good[1], good[2]])
    assert [wire_of(o) for o in alone] == [wire_of(batch[1])]
    assert wire_of(alone[0])["code"] == "invalid_state"  # closed, before empty
    assert [wire_of(o) for o in (batch[0], batch[2], batch[3])] == ["stored"] * 3
    # The attachment went with its message, shared with the doctor as in the slow path.
    messages = await ok(
        client, "GET", f"/consultations/{open_}/messages", booked["patient"]["token"]
    )
    assert [m["document_ids"] for m in messages["items"]] == [[], [document["id"]], []]
    shared = await ok(client, "GET", f"/consultations/{open_}", booked["doctor"]["token"])
    assert document["id"] in shared["document_ids"]


async def test_over_sockets_alone_and_among_others(
    client: AppClient, booked: dict[str, Any], clock: Any, peers: list[Peer]
) -> None:
    import asyncio

    closed, open_ = await cancelled_and_open(client, booked, clock)
    patient = await open_peer(client, peers, booked["patient"]["token"])
    doctor = await open_peer(client, peers, booked["doctor"]["token"])
    alone = await patient.call("chat:send", send(closed, "bad-alone", ""))
    together = await asyncio.gather(
        doctor.call("chat:send", send(open_, "d-1", "Добрый день")),
        patient.call("chat:send", send(closed, "bad-batch", "")),
        doctor.call("chat:send", send(open_, "d-2", "Как самочувствие?")),
    )
    assert alone["ok"] is False
    assert together[1] == alone
    assert together[0]["ok"]
    assert together[2]["ok"]
    # Nothing was stored in the closed chat either way.
    messages = await ok(
        client, "GET", f"/consultations/{closed}/messages", booked["patient"]["token"]
    )
    assert messages["items"] == []
