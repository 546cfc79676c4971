"""Conclusions (versions, PDF, readers), background work (reminders, no-shows, overdue
requests) and the deadline report."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

import pytest
from pypdf import PdfReader
from sqlmodel import select

from telemed import keys
from telemed.audit import AuditEvent
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests import samples
from tests.conftest import AppClient
from tests.factories import assert_error, bearer
from tests.flows import (
    book_slot,
    iso,
    later,
    make_centre,
    make_doctor,
    make_patient,
    manager_token,
    ok,
    upload,
)

DIAGNOSIS = "Гипертоническая болезнь II стадии, риск 3"


async def completed_consultation(client: AppClient, clock: FakeClock) -> dict[str, Any]:
    """A duty consultation that has taken place; returns the people and its id."""
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    other_doctor = await make_doctor(client, manager, centre["id"], name="Ершов Пётр")
    patient = await make_patient(client, email="patient@example.ru")
    stranger = await make_patient(client)
    booked = await book_slot(client, duty, patient, later(clock, days=1), topic="cardiovascular")
    clock.advance(timedelta(days=1))
    await ok(client, "POST", f"/consultations/{booked['id']}/start", duty["token"])
    await ok(client, "POST", f"/consultations/{booked['id']}/end", duty["token"])
    return {
        "manager": manager,
        "duty": duty,
        "other_doctor": other_doctor,
        "patient": patient,
        "stranger": stranger,
        "id": booked["id"],
    }


def conclusion_body(**fields: Any) -> dict[str, Any]:
    return {
        "diagnosis": DIAGNOSIS,
        "icd10": "i11.9",
        "findings": "АД 160/100 мм рт. ст.",
        "recommendations": "Контроль давления дважды в день; приём препаратов.",
        **fields,
    }


def pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


async def test_conclusion_issue_amend_read_and_pdf(client: AppClient, clock: FakeClock) -> None:
    world = await completed_consultation(client, clock)
    path = f"/consultations/{world['id']}/conclusion"
    patient, duty = world["patient"], world["duty"]
    status, _ = await ok_status(client, "GET", path, patient["token"])
    assert status == 404  # not issued yet

    issued = await ok(client, "POST", path, duty["token"], conclusion_body(), status=201)
    assert issued["current"]["version"] == 1
    assert issued["current"]["icd10"] == "I11.9"
    consultation = await ok(client, "GET", f"/consultations/{world['id']}", patient["token"])
    assert consultation["state"] == "concluded"

    # Issued once: a second issue without a reason is refused; with one it is version 2.
    again = await client.post(
        "/api/v1" + path, json=conclusion_body(), headers=bearer(duty["token"])
    )
    await assert_error(again, 409, "invalid_state")
    amended = await ok(
        client,
        "POST",
        path,
        duty["token"],
        conclusion_body(
            recommendations="Добавлен контроль ЭКГ.", amendment_reason="Уточнены рекомендации"
        ),
        status=201,
    )
    assert [v["version"] for v in amended["versions"]] == [2, 1]
    assert amended["versions"][1]["recommendations"].startswith("Контроль давления")

    read = await ok(client, "GET", path, patient["token"])
    assert read["current"]["amendment_reason"] == "Уточнены рекомендации"
    pdf = await client.get(f"/api/v1{path}.pdf", headers=bearer(patient["token"]))
    assert pdf.status == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    text = pdf_text(await pdf.read())
    assert DIAGNOSIS in text
    assert "I11.9" in text
    assert "Уточнены рекомендации" in text
    first = await client.get(
        f"/api/v1{path}.pdf", params={"version": "1"}, headers=bearer(patient["token"])
    )
    assert "Добавлен контроль ЭКГ" not in pdf_text(await first.read())

    bell = await ok(client, "GET", "/notifications", patient["token"])
    assert [n["kind"] for n in bell["items"]].count("conclusion_issued") == 2

    # Readers: the patient, the consultation's doctor, the manager. Nobody else.
    assert (await ok(client, "GET", path, world["manager"]))["current"]["version"] == 2
    for token in (world["other_doctor"]["token"], world["stranger"]["token"]):
        for suffix in ("", ".pdf"):
            response = await client.get(f"/api/v1{path}{suffix}", headers=bearer(token))
            await assert_error(response, 404, "not_found")
    for token in (patient["token"], world["manager"], world["other_doctor"]["token"]):
        response = await client.post(
            "/api/v1" + path, json=conclusion_body(amendment_reason="Иначе"), headers=bearer(token)
        )
        assert response.status in (403, 404)
    assert len((await ok(client, "GET", path, patient["token"]))["versions"]) == 2


async def ok_status(client: AppClient, method: str, path: str, token: str) -> tuple[int, Any]:
    response = await client.request(method, "/api/v1" + path, headers=bearer(token))
    return response.status, await response.json()


async def test_conclusion_needs_a_completed_consultation(
    client: AppClient, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    doctor = await make_doctor(client, manager, centre["id"])
    patient = await make_patient(client)
    created = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        {
            "route": "initiative",
            "centre_id": centre["id"],
            "diagnosis": "ИБС",
            "complaints": "Боли в груди",
        },
        status=201,
    )
    response = await client.post(
        f"/api/v1/consultations/{created['id']}/conclusion",
        json=conclusion_body(),
        headers=bearer(doctor["token"]),
    )
    await assert_error(response, 409, "invalid_state")
    bad = await client.post(
        f"/api/v1/consultations/{created['id']}/conclusion",
        json=conclusion_body(icd10="not-a-code"),
        headers=bearer(doctor["token"]),
    )
    await assert_error(bad, 400, "invalid_input")


async def test_reminders_go_out_once(client: AppClient, app: Any, clock: FakeClock) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    patient = await make_patient(client)
    await book_slot(client, duty, patient, later(clock, days=3), topic="other")

    async def kinds() -> list[str]:
        bell = await ok(client, "GET", "/notifications", patient["token"])
        return [n["kind"] for n in bell["items"]]

    await run_jobs_once(app)
    assert "reminder_24h" not in await kinds()
    clock.advance(timedelta(days=2, hours=1))  # 23 h before
    await run_jobs_once(app)
    await run_jobs_once(app)
    assert (await kinds()).count("reminder_24h") == 1
    clock.advance(timedelta(hours=22, minutes=5))  # 55 min before
    await run_jobs_once(app)
    await run_jobs_once(app)
    assert (await kinds()).count("reminder_1h") == 1
    outbox = await ok(client, "GET", "/outbox", manager)
    reminders = [m for m in outbox["items"] if m["kind"].startswith("reminder")]
    assert sorted(m["kind"] for m in reminders if m["channel"] == "sms") == [
        "reminder_1h",
        "reminder_24h",
    ]


async def test_only_reminders_that_are_still_true_go_out(
    client: AppClient, app: Any, clock: FakeClock
) -> None:
    """Booked 20 minutes ahead: no "in an hour" and no "tomorrow" reminder, ever; booked
    10 hours ahead: no day-before reminder, but the one an hour before."""
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    patient = await make_patient(client)

    async def kinds() -> list[str]:
        bell = await ok(client, "GET", "/notifications", patient["token"])
        return [n["kind"] for n in bell["items"] if n["kind"].startswith("reminder")]

    await book_slot(client, duty, patient, later(clock, minutes=20), topic="other")
    await run_jobs_once(app)
    clock.advance(timedelta(minutes=10))
    await run_jobs_once(app)
    assert await kinds() == []

    clock.advance(timedelta(hours=1))
    await book_slot(client, duty, patient, later(clock, hours=10), topic="other")
    await run_jobs_once(app)
    assert await kinds() == []
    clock.advance(timedelta(hours=9, minutes=2))  # 58 min before
    await run_jobs_once(app)
    assert await kinds() == ["reminder_1h"]


async def test_no_show_when_the_window_closes(
    client: AppClient, app: Any, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    patient = await make_patient(client)
    booked = await book_slot(client, duty, patient, later(clock, hours=5), topic="other")
    clock.advance(timedelta(hours=5, minutes=40))  # within the 15-minute grace
    await run_jobs_once(app)
    assert (await ok(client, "GET", f"/consultations/{booked['id']}", patient["token"]))[
        "state"
    ] == "scheduled"
    clock.advance(timedelta(minutes=10))
    await run_jobs_once(app)
    after = await ok(client, "GET", f"/consultations/{booked['id']}", patient["token"])
    assert after["state"] == "no_show"
    await run_jobs_once(app)
    bell = await ok(client, "GET", "/notifications", patient["token"])
    assert [n["kind"] for n in bell["items"]].count("no_show") == 1


async def test_deadlines_report_and_overdue_alert(
    client: AppClient, app: Any, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    doctor = await make_doctor(client, manager, centre["id"])
    patient = await make_patient(client)
    body = {
        "route": "initiative",
        "centre_id": centre["id"],
        "diagnosis": "ИБС",
        "complaints": "Боли в груди",
    }
    answered = await ok(client, "POST", "/consultations", patient["token"], body, status=201)
    waiting = await ok(client, "POST", "/consultations", patient["token"], body, status=201)
    clock.advance(timedelta(days=1))
    await ok(
        client,
        "POST",
        f"/consultations/{answered['id']}/schedule",
        doctor["token"],
        {"starts_at": iso(later(clock, days=1))},
    )
    report = await ok(client, "GET", "/sla", manager)
    assert [i["consultation_id"] for i in report["met"]] == [answered["id"]]
    assert report["due_soon"] == []
    assert report["overdue"] == []
    clock.advance(timedelta(days=1, hours=7))  # 2 d 7 h of 3 d: past 75 %
    report = await ok(client, "GET", "/sla", manager)
    assert [i["consultation_id"] for i in report["due_soon"]] == [waiting["id"]]
    clock.advance(timedelta(days=1))
    report = await ok(client, "GET", "/sla", manager)
    assert [i["consultation_id"] for i in report["overdue"]] == [waiting["id"]]
    centre_counts = {c["name"]: c for c in report["by_centre"]}[centre["name"]]
    assert (centre_counts["met"], centre_counts["overdue"]) == (1, 1)
    doctor_counts = {c["id"]: c for c in report["by_doctor"]}
    assert doctor_counts[doctor["id"]]["met"] == 1
    assert doctor_counts[None]["overdue"] == 1
    await run_jobs_once(app)
    await run_jobs_once(app)
    bell = await ok(client, "GET", "/notifications", manager)
    assert [n["kind"] for n in bell["items"]].count("sla_overdue") == 1
    response = await client.get("/api/v1/sla", headers=bearer(doctor["token"]))
    await assert_error(response, 403, "forbidden")
    # Cancelling an overdue request does not hide it; the patient withdrawing one does.
    by_doctor = await ok(client, "POST", "/consultations", patient["token"], body, status=201)
    by_patient = await ok(client, "POST", "/consultations", patient["token"], body, status=201)
    clock.advance(timedelta(days=4))
    await ok(
        client,
        "POST",
        f"/consultations/{by_doctor['id']}/cancel",
        doctor["token"],
        {"reason": "Слишком поздно"},
    )
    await ok(
        client,
        "POST",
        f"/consultations/{by_patient['id']}/cancel",
        patient["token"],
        {"reason": "Уже не нужно"},
    )
    overdue = {i["consultation_id"] for i in (await ok(client, "GET", "/sla", manager))["overdue"]}
    assert by_doctor["id"] in overdue
    assert by_patient["id"] not in overdue


@pytest.mark.parametrize(
    "settings_overrides", [{"doctor_document_access_days": 10, "session_ttl_hours": 24 * 60}]
)
async def test_the_doctor_of_record_reads_the_documents_for_some_days_after_concluding(
    client: AppClient, clock: FakeClock
) -> None:
    """Amending a conclusion needs the documents it was written from: its doctor keeps
    reading them (audited) for TELEMED_DOCTOR_DOCUMENT_ACCESS_DAYS after concluding;
    nobody else gains anything, and afterwards the doctor reads them no more."""
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    other = await make_doctor(client, manager, centre["id"], name="Ершов Пётр")
    patient = await make_patient(client)
    document = await upload(client, patient["token"])
    booked = await book_slot(client, duty, patient, later(clock, days=1))
    await ok(
        client,
        "POST",
        f"/consultations/{booked['id']}/documents",
        patient["token"],
        {"document_ids": [document["id"]]},
    )
    clock.advance(timedelta(days=1))
    await ok(client, "POST", f"/consultations/{booked['id']}/start", duty["token"])
    await ok(client, "POST", f"/consultations/{booked['id']}/end", duty["token"])
    path = f"/consultations/{booked['id']}/conclusion"
    await ok(client, "POST", path, duty["token"], conclusion_body(), status=201)

    clock.advance(timedelta(days=9))
    content = f"/api/v1/documents/{document['id']}/content"
    response = await client.get(content, headers=bearer(duty["token"]))
    assert response.status == 200
    assert await response.read() == samples.pdf()
    assert client.app is not None
    async with client.app[keys.SESSION_FACTORY]() as session:
        reads = (
            await session.exec(
                select(AuditEvent).where(
                    AuditEvent.action == "document.downloaded",
                    AuditEvent.object_id == document["id"],
                )
            )
        ).all()
    assert [str(event.actor_id) for event in reads] == [duty["user_id"]]
    stranger = await client.get(content, headers=bearer(other["token"]))
    await assert_error(stranger, 404, "not_found")

    clock.advance(timedelta(days=2))
    expired = await client.get(content, headers=bearer(duty["token"]))
    await assert_error(expired, 404, "not_found")
    # The conclusion itself stays theirs to amend.
    await ok(
        client,
        "POST",
        path,
        duty["token"],
        conclusion_body(amendment_reason="Уточнение"),
        status=201,
    )
