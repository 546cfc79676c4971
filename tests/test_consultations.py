"""Routes 1 and 2 through the HTTP API, the state machine's refusals, and the lists."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from telemed import keys
from telemed.clock import FakeClock
from telemed.scheduling.models import Consultation, DutySlot
from telemed.scheduling.topics import topics_for
from tests.conftest import AppClient
from tests.factories import assert_error, bearer, register
from tests.flows import (
    api,
    iso,
    later,
    ok,
    upload,
)
from tests.world import DoctorAccount, World


async def request_body(centre_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "route": "initiative",
        "centre_id": centre_id,
        "diagnosis": "Ишемическая болезнь сердца",
        "complaints": "Одышка при подъёме на второй этаж",
        "document_ids": [],
        **fields,
    }


async def test_route_1_request_schedule_and_notifications(
    client: AppClient, world: World, clock: FakeClock
) -> None:
    patient, doctor = world["patient"], world["doctor"]
    document = await upload(client, patient["token"])
    body = await request_body(
        world["centre"]["id"],
        document_ids=[document["id"]],
        age=64,
        preferred_times="  будни после 18:00 ",
    )
    created = await ok(client, "POST", "/consultations", patient["token"], body, status=201)
    assert created["preferred_times"] == "будни после 18:00"
    assert created["state"] == "requested"
    assert created["route"] == "initiative"
    assert created["full_name"] == patient["user"]["full_name"]
    assert created["age"] == 64
    assert created["document_ids"] == [document["id"]]
    assert created["doctor"] is None
    assert created["due_at"] is not None
    assert set(created["allowed_moves"]) == {"cancel"}

    # Doctors of the centre see the request and its documents; others do not.
    listed = await ok(client, "GET", "/consultations", doctor["token"])
    assert [c["id"] for c in listed["items"]] == [created["id"]]
    seen = await ok(client, "GET", f"/consultations/{created['id']}", doctor["token"])
    assert {"schedule", "decline", "cancel"} <= set(seen["allowed_moves"])
    assert seen["preferred_times"] == "будни после 18:00"  # for the doctor who sets the time
    content = await client.get(
        f"/api/v1/documents/{document['id']}/content", headers=bearer(doctor["token"])
    )
    assert content.status == 200
    stranger = world["stranger"]["token"]
    await assert_error(
        await client.get(f"/api/v1/documents/{document['id']}", headers=bearer(stranger)),
        404,
        "not_found",
    )
    assert (await ok(client, "GET", "/consultations", stranger))["items"] == []
    status, _ = await api(client, "GET", f"/consultations/{created['id']}", stranger)
    assert status == 404

    starts = later(clock, days=2)
    scheduled = await ok(
        client,
        "POST",
        f"/consultations/{created['id']}/schedule",
        doctor["token"],
        {"starts_at": iso(starts), "duration_min": 30},
    )
    assert scheduled["state"] == "scheduled"
    assert scheduled["doctor"]["id"] == doctor["id"]
    assert scheduled["notified_at"] == clock.now().isoformat().replace("+00:00", "Z")
    # The other doctor of the centre no longer sees it (it is taken).
    other_doctor = world["duty"]["token"]
    status, _ = await api(client, "GET", f"/consultations/{created['id']}", other_doctor)
    assert status == 404

    bell = await ok(client, "GET", "/notifications", patient["token"])
    kinds = [n["kind"] for n in bell["items"]]
    assert "scheduled" in kinds
    assert "consultation_requested" in kinds
    outbox = await ok(client, "GET", "/outbox", world["manager"])
    sms = [m for m in outbox["items"] if m["channel"] == "sms" and m["kind"] == "scheduled"]
    assert [m["recipient"] for m in sms] == [patient["user"]["phone"]]

    ics = await client.get(
        f"/api/v1/consultations/{created['id']}/calendar.ics", headers=bearer(patient["token"])
    )
    text = await ics.text()
    assert ics.headers["Content-Type"].startswith("text/calendar")
    assert "BEGIN:VEVENT" in text
    assert starts.strftime("%Y%m%dT%H%M%SZ") in text

    # Reschedule: the patient is told again.
    moved = await ok(
        client,
        "POST",
        f"/consultations/{created['id']}/schedule",
        doctor["token"],
        {"starts_at": iso(starts + timedelta(hours=3)), "duration_min": 45},
    )
    assert moved["duration_min"] == 45
    bell = await ok(client, "GET", "/notifications", patient["token"])
    assert "rescheduled" in [n["kind"] for n in bell["items"]]


async def test_route_1_refusals_change_nothing(client: AppClient, world: World) -> None:
    patient, other = world["patient"], world["other"]
    foreign = await upload(client, other["token"])
    centre_id = world["centre"]["id"]
    cases = [
        (await request_body(centre_id, document_ids=[foreign["id"]]), 404, "not_found"),
        (await request_body("00000000-0000-4000-8000-000000000000"), 404, "not_found"),
        (await request_body(centre_id, diagnosis=""), 400, "invalid_input"),
        (await request_body(centre_id, age=500), 400, "invalid_input"),
        (await request_body(centre_id, extra="x"), 400, "invalid_input"),
        ({"route": "teleport", "centre_id": centre_id}, 400, "invalid_input"),
        ({"centre_id": centre_id}, 400, "invalid_input"),
    ]
    for body, status, code in cases:
        response = await client.post(
            "/api/v1/consultations", json=body, headers=bearer(patient["token"])
        )
        await assert_error(response, status, code)
    # Doctors and managers cannot request on a patient's behalf.
    for token in (world["doctor"]["token"], world["manager"]):
        response = await client.post(
            "/api/v1/consultations", json=await request_body(centre_id), headers=bearer(token)
        )
        await assert_error(response, 403, "forbidden")
    assert (await ok(client, "GET", "/consultations", world["manager"]))["items"] == []


async def test_scheduling_rules(client: AppClient, world: World, clock: FakeClock) -> None:
    patient, doctor = world["patient"], world["doctor"]
    first = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        await request_body(world["centre"]["id"]),
        status=201,
    )
    second = await ok(
        client,
        "POST",
        "/consultations",
        world["other"]["token"],
        await request_body(world["centre"]["id"]),
        status=201,
    )
    starts = later(clock, days=1)
    path = f"/consultations/{first['id']}/schedule"
    past = await client.post(
        "/api/v1" + path,
        json={"starts_at": iso(clock.now() - timedelta(hours=1))},
        headers=bearer(doctor["token"]),
    )
    refused = await assert_error(past, 422, "invalid_value")
    # Told as a problem with a code, for the client to word: a time in the past.
    assert refused["details"]["fields"] == [{"field": "starts_at", "code": "in_past", "params": {}}]
    naive = await client.post(
        "/api/v1" + path, json={"starts_at": "2030-01-01T10:00:00"}, headers=bearer(doctor["token"])
    )
    await assert_error(naive, 400, "invalid_input")
    await ok(client, "POST", path, doctor["token"], {"starts_at": iso(starts), "duration_min": 30})
    # Overlapping another consultation of the same doctor → 409 overlap, nothing changes.
    clash = await client.post(
        f"/api/v1/consultations/{second['id']}/schedule",
        json={"starts_at": iso(starts + timedelta(minutes=15))},
        headers=bearer(doctor["token"]),
    )
    await assert_error(clash, 409, "overlap")
    still = await ok(client, "GET", f"/consultations/{second['id']}", doctor["token"])
    assert still["state"] == "requested"
    # Back to back is fine.
    await ok(
        client,
        "POST",
        f"/consultations/{second['id']}/schedule",
        doctor["token"],
        {"starts_at": iso(starts + timedelta(minutes=30)), "duration_min": 30},
    )
    # A patient cannot schedule; decline from scheduled is refused.
    response = await client.post(
        "/api/v1" + path, json={"starts_at": iso(starts)}, headers=bearer(patient["token"])
    )
    await assert_error(response, 403, "forbidden")
    response = await client.post(
        f"/api/v1/consultations/{first['id']}/decline",
        json={"reason": "Нет показаний"},
        headers=bearer(doctor["token"]),
    )
    await assert_error(response, 409, "invalid_state")


async def test_decline_with_reason(client: AppClient, world: World) -> None:
    patient, doctor = world["patient"], world["doctor"]
    created = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        await request_body(world["centre"]["id"]),
        status=201,
    )
    no_reason = await client.post(
        f"/api/v1/consultations/{created['id']}/decline", json={}, headers=bearer(doctor["token"])
    )
    await assert_error(no_reason, 400, "invalid_input")
    declined = await ok(
        client,
        "POST",
        f"/consultations/{created['id']}/decline",
        doctor["token"],
        {"reason": "Нужна очная консультация"},
    )
    assert declined["state"] == "declined"
    assert declined["reason"] == "Нужна очная консультация"
    mine = await ok(client, "GET", f"/consultations/{created['id']}", patient["token"])
    assert mine["state"] == "declined"
    assert mine["allowed_moves"] == []
    bell = await ok(client, "GET", "/notifications", patient["token"])
    assert "declined" in [n["kind"] for n in bell["items"]]


async def publish(
    client: AppClient, duty: DoctorAccount, clock: FakeClock, hours: int = 1, **delta: float
) -> list[dict[str, Any]]:
    start = later(clock, **(delta or {"days": 1}))
    body = {
        "starts_at": iso(start),
        "ends_at": iso(start + timedelta(hours=hours)),
        "slot_minutes": 30,
    }
    created = await ok(client, "POST", "/slots", duty["token"], body, status=201)
    return list(created["items"])


async def test_route_2_publish_book_cancel(
    client: AppClient, world: World, clock: FakeClock
) -> None:
    duty, patient = world["duty"], world["patient"]
    slots = await publish(client, duty, clock, hours=2)
    assert len(slots) == 4
    assert all(s["status"] == "free" for s in slots)
    # Overlapping slots are refused; a non-duty doctor cannot publish.
    start = slots[0]["starts_at"]
    overlap = await client.post(
        "/api/v1/slots",
        json={"starts_at": start, "ends_at": slots[1]["ends_at"], "slot_minutes": 30},
        headers=bearer(duty["token"]),
    )
    await assert_error(overlap, 409, "overlap")
    not_duty = await client.post(
        "/api/v1/slots",
        json={"starts_at": start, "ends_at": slots[1]["ends_at"], "slot_minutes": 30},
        headers=bearer(world["doctor"]["token"]),
    )
    await assert_error(not_duty, 403, "forbidden")

    listed = await ok(
        client,
        "GET",
        f"/doctors/{duty['id']}/slots",
        params={"from": iso(clock.now()), "to": iso(clock.now() + timedelta(days=3))},
    )
    assert [s["id"] for s in listed["items"]] == [s["id"] for s in slots]

    booked = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        {
            "route": "duty",
            "slot_id": slots[1]["id"],
            "channel": "video",
            "topic": "cardiovascular",
            "question": "Можно ли мне бегать?",
        },
        status=201,
    )
    assert booked["state"] == "scheduled"
    assert booked["doctor"]["id"] == duty["id"]
    assert booked["starts_at"] == slots[1]["starts_at"]
    listed = await ok(
        client, "GET", f"/doctors/{duty['id']}/slots", params={"from": iso(clock.now())}
    )
    assert [s["status"] for s in listed["items"]] == ["free", "booked", "free", "free"]
    # A booked slot cannot be booked again or withdrawn.
    again = await client.post(
        "/api/v1/consultations",
        json={"route": "duty", "slot_id": slots[1]["id"], "topic": "other"},
        headers=bearer(world["other"]["token"]),
    )
    await assert_error(again, 409, "slot_taken")
    withdraw = await client.delete(f"/api/v1/slots/{slots[1]['id']}", headers=bearer(duty["token"]))
    await assert_error(withdraw, 409, "invalid_state")
    # The doctor is told of the booking.
    bell = await ok(client, "GET", "/notifications", duty["token"])
    assert "new_booking" in [n["kind"] for n in bell["items"]]

    # Cancelling frees the slot for someone else.
    cancelled = await ok(
        client,
        "POST",
        f"/consultations/{booked['id']}/cancel",
        patient["token"],
        {"reason": "Заболел ребёнок"},
    )
    assert cancelled["state"] == "cancelled"
    listed = await ok(
        client, "GET", f"/doctors/{duty['id']}/slots", params={"from": iso(clock.now())}
    )
    assert listed["items"][1]["status"] == "free"
    rebooked = await ok(
        client,
        "POST",
        "/consultations",
        world["other"]["token"],
        {"route": "duty", "slot_id": slots[1]["id"], "topic": "other"},
        status=201,
    )
    assert rebooked["state"] == "scheduled"
    # A free slot can be withdrawn, also one whose earlier booking was cancelled.
    assert (
        await client.delete(f"/api/v1/slots/{slots[3]['id']}", headers=bearer(duty["token"]))
    ).status == 204
    await ok(
        client,
        "POST",
        f"/consultations/{rebooked['id']}/cancel",
        duty["token"],
        {"reason": "Врач заболел"},
    )
    assert (
        await client.delete(f"/api/v1/slots/{slots[1]['id']}", headers=bearer(duty["token"]))
    ).status == 204
    history = await ok(client, "GET", f"/consultations/{booked['id']}", patient["token"])
    assert history["starts_at"] == slots[1]["starts_at"]


async def test_patient_cancellation_needs_notice(
    client: AppClient, world: World, clock: FakeClock
) -> None:
    slots = await publish(client, world["duty"], clock, hours=1, minutes=90)
    patient = world["patient"]
    booked = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        {"route": "duty", "slot_id": slots[0]["id"], "topic": "healthy_lifestyle"},
        status=201,
    )
    # 90 minutes ahead, less than the 2-hour notice: the patient may not cancel.
    late = await client.post(
        f"/api/v1/consultations/{booked['id']}/cancel",
        json={"reason": "Передумал"},
        headers=bearer(patient["token"]),
    )
    error = await assert_error(late, 409, "too_late")
    assert error["details"]["cancel_notice_minutes"] == 120
    # The doctor still may.
    done = await ok(
        client,
        "POST",
        f"/consultations/{booked['id']}/cancel",
        world["duty"]["token"],
        {"reason": "Врач заболел"},
    )
    assert done["state"] == "cancelled"
    bell = await ok(client, "GET", "/notifications", patient["token"])
    assert "cancelled" in [n["kind"] for n in bell["items"]]


async def test_fifty_concurrent_bookings_of_one_slot(
    client: AppClient, world: World, clock: FakeClock
) -> None:
    slots = await publish(client, world["duty"], clock, hours=1)
    patients = [await register(client) for _ in range(50)]

    async def book(token: str) -> int:
        response = await client.post(
            "/api/v1/consultations",
            json={"route": "duty", "slot_id": slots[0]["id"], "topic": "cardiovascular"},
            headers=bearer(token),
        )
        body = await response.json()
        if response.status == 409:
            assert body["error"]["code"] == "slot_taken"
        return response.status

    statuses = await asyncio.gather(*(book(p["token"]) for p in patients))
    assert sorted(statuses) == [201] + [409] * 49
    assert client.app is not None
    async with client.app[keys.SESSION_FACTORY]() as session:
        bookings = (
            await session.exec(
                select(Consultation).where(Consultation.slot_id == uuid.UUID(slots[0]["id"]))
            )
        ).all()
        slot = await session.get(DutySlot, bookings[0].slot_id)
    assert len(bookings) == 1
    assert slot is not None
    assert slot.status == "booked"


async def test_start_end_and_the_window(client: AppClient, world: World, clock: FakeClock) -> None:
    slots = await publish(client, world["duty"], clock, hours=1, days=1)
    duty, patient = world["duty"], world["patient"]
    booked = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        {"route": "duty", "slot_id": slots[0]["id"], "topic": "other"},
        status=201,
    )
    path = f"/consultations/{booked['id']}"
    early = await client.post(f"/api/v1{path}/start", headers=bearer(duty["token"]))
    await assert_error(early, 409, "too_late")
    by_patient = await client.post(f"/api/v1{path}/start", headers=bearer(patient["token"]))
    await assert_error(by_patient, 403, "forbidden")
    clock.advance(timedelta(days=1) - timedelta(minutes=10))
    started = await ok(client, "POST", f"{path}/start", duty["token"])
    assert started["state"] == "in_progress"
    again = await client.post(f"/api/v1{path}/start", headers=bearer(duty["token"]))
    await assert_error(again, 409, "invalid_state")
    cancel = await client.post(
        f"/api/v1{path}/cancel", json={"reason": "Поздно"}, headers=bearer(patient["token"])
    )
    await assert_error(cancel, 409, "invalid_state")
    ended = await ok(client, "POST", f"{path}/end", duty["token"])
    assert ended["state"] == "completed"
    assert ended["allowed_moves"] == ["conclude"]
    patient_view = await ok(client, "GET", path, patient["token"])
    assert patient_view["allowed_moves"] == []


async def test_lists_per_role_and_filters(
    client: AppClient, world: World, clock: FakeClock
) -> None:
    patient, other = world["patient"], world["other"]
    mine = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        await request_body(world["centre"]["id"]),
        status=201,
    )
    theirs = await ok(
        client,
        "POST",
        "/consultations",
        other["token"],
        await request_body(world["other_centre"]["id"]),
        status=201,
    )
    slots = await publish(client, world["duty"], clock, hours=1)
    booked = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        {"route": "duty", "slot_id": slots[0]["id"], "topic": "other"},
        status=201,
    )

    def ids(data: Any) -> set[str]:
        return {item["id"] for item in data["items"]}

    assert ids(await ok(client, "GET", "/consultations", patient["token"])) == {
        mine["id"],
        booked["id"],
    }
    assert ids(await ok(client, "GET", "/consultations", other["token"])) == {theirs["id"]}
    assert ids(await ok(client, "GET", "/consultations", world["doctor"]["token"])) == {mine["id"]}
    assert ids(await ok(client, "GET", "/consultations", world["duty"]["token"])) == {
        mine["id"],
        booked["id"],
    }
    assert ids(await ok(client, "GET", "/consultations", world["stranger"]["token"])) == {
        theirs["id"]
    }
    everything = await ok(client, "GET", "/consultations", world["manager"])
    assert ids(everything) == {mine["id"], theirs["id"], booked["id"]}
    by_state = await ok(
        client, "GET", "/consultations", world["manager"], params={"state": "scheduled"}
    )
    assert ids(by_state) == {booked["id"]}
    by_states = await ok(
        client,
        "GET",
        "/consultations",
        world["manager"],
        params={"state": "scheduled,requested", "route": "initiative"},
    )
    assert ids(by_states) == {mine["id"], theirs["id"]}
    repeated = await ok(
        client,
        "GET",
        "/consultations",
        world["manager"],
        params=[("state", "scheduled"), ("state", "requested")],
    )
    assert ids(repeated) == {mine["id"], theirs["id"], booked["id"]}
    ahead = await ok(
        client,
        "GET",
        "/consultations",
        world["manager"],
        params={"from": iso(clock.now() + timedelta(hours=12))},
    )
    assert ids(ahead) == {booked["id"]}
    bad = await client.get(
        "/api/v1/consultations", params={"state": "dreaming"}, headers=bearer(world["manager"])
    )
    await assert_error(bad, 400, "invalid_input")


async def test_slots_are_shown_in_the_patients_time_zone(
    client: AppClient, world: World, clock: FakeClock
) -> None:
    slots = await publish(client, world["duty"], clock, hours=1)
    duty_id = world["duty"]["id"]
    moscow = await ok(client, "GET", f"/doctors/{duty_id}/slots")
    assert moscow["items"][0]["starts_at"].endswith("+03:00")
    yekaterinburg = await ok(
        client, "GET", f"/doctors/{duty_id}/slots", params={"tz": "Asia/Yekaterinburg"}
    )
    first = yekaterinburg["items"][0]["starts_at"]
    assert first.endswith("+05:00")
    assert datetime.fromisoformat(first) == datetime.fromisoformat(slots[0]["starts_at"])
    bad = await client.get(f"/api/v1/doctors/{duty_id}/slots", params={"tz": "Mars/Base"})
    await assert_error(bad, 400, "invalid_input")


@pytest.mark.parametrize(
    ("specialty", "topics"),
    [
        ("кардиолог", ["cardiovascular", "healthy_lifestyle", "other"]),
        ("Врач-акушер-гинеколог", ["gynaecological", "other"]),
        ("терапевт", ["cardiovascular", "healthy_lifestyle", "other"]),
        ("невролог", ["other"]),
    ],
)
def test_the_topics_a_specialty_answers(specialty: str, topics: list[str]) -> None:
    """The booking page offers the chosen doctor's topics (and "other", always)."""
    assert [str(topic) for topic in topics_for(specialty)] == topics
