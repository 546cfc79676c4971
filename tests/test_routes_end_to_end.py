"""Each route walked end to end through the HTTP API alone, with notifications reaching
a real local SMS gateway and a real local SMTP server, up to the conclusion's PDF."""

from __future__ import annotations

import email
import io
import re
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

import pytest
from aiohttp import FormData, web
from pypdf import PdfReader

from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.factories import bearer
from tests.flows import (
    iso,
    later,
    make_centre,
    make_doctor,
    make_patient,
    manager_token,
    ok,
    upload,
)
from tests.notify_gateways import SmsGateway, SmtpCapture
from tests.world import DoctorAccount

DIAGNOSIS = "Ишемическая болезнь сердца: стабильная стенокардия напряжения, ФК II"


@pytest.fixture
def settings_overrides(
    gateway: tuple[SmsGateway, str], smtp: tuple[SmtpCapture, int]
) -> dict[str, Any]:
    return {
        "sms_backend": "http",
        "sms_http_url": gateway[1],
        "email_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp[1],
        "worker_interval_seconds": 0,
    }


def sms_to(gateway: SmsGateway, phone: str) -> list[str]:
    return [str(m["text"]) for m in gateway.delivered if m["to"] == phone]


def mails_to(smtp: SmtpCapture, address: str) -> list[Message]:
    return [
        email.message_from_bytes(raw)
        for raw, rcpt in zip(smtp.messages, smtp.recipients, strict=True)
        if address in rcpt
    ]


def calendar_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text/calendar part")


def pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


async def consult_and_conclude(
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    *,
    consultation_id: str,
    doctor: DoctorAccount,
    patient_token: str,
    patient_phone: str,
    gateway: SmsGateway,
) -> None:
    """From a scheduled consultation: the session, the conclusion, the patient's PDF."""
    consultation = await ok(client, "GET", f"/consultations/{consultation_id}", patient_token)
    assert consultation["state"] == "scheduled"
    starts = consultation["starts_at"]
    clock.advance(datetime.fromisoformat(starts) - clock.now())
    started = await ok(client, "POST", f"/consultations/{consultation_id}/start", doctor["token"])
    assert started["state"] == "in_progress"
    clock.advance(timedelta(minutes=25))
    ended = await ok(client, "POST", f"/consultations/{consultation_id}/end", doctor["token"])
    assert ended["state"] == "completed"
    await ok(
        client,
        "POST",
        f"/consultations/{consultation_id}/conclusion",
        doctor["token"],
        {
            "diagnosis": DIAGNOSIS,
            "icd10": "I20.8",
            "findings": "ЭКГ без острой патологии.",
            "recommendations": "Ходьба 30 минут в день, контроль АД.",
        },
        status=201,
    )
    await run_jobs_once(app)
    bell = await ok(client, "GET", "/notifications", patient_token)
    assert "conclusion_issued" in [n["kind"] for n in bell["items"]]
    assert any("заключение" in text.lower() for text in sms_to(gateway, patient_phone))
    conclusion = await ok(
        client, "GET", f"/consultations/{consultation_id}/conclusion", patient_token
    )
    assert conclusion["current"]["diagnosis"] == DIAGNOSIS
    pdf = await client.get(
        f"/api/v1/consultations/{consultation_id}/conclusion.pdf", headers=bearer(patient_token)
    )
    assert pdf.status == 200
    text = pdf_text(await pdf.read())
    assert DIAGNOSIS in text
    assert "I20.8" in text


async def test_route_1_own_request(
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    gateway: tuple[SmsGateway, str],
    smtp: tuple[SmtpCapture, int],
) -> None:
    gw, mail = gateway[0], smtp[0]
    manager = await manager_token(client)
    centre = await make_centre(client, manager, "Областной кардиологический центр")
    doctor = await make_doctor(client, manager, centre["id"])
    patient = await make_patient(client, email="ivanov@example.ru")
    token, phone = patient["token"], patient["user"]["phone"]
    discharge = await upload(client, token, name="Выписка.pdf")

    centres = await ok(client, "GET", "/centres", token)
    assert centre["id"] in [c["id"] for c in centres["items"]]
    request = await ok(
        client,
        "POST",
        "/consultations",
        token,
        {
            "route": "initiative",
            "centre_id": centre["id"],
            "diagnosis": "ИБС",
            "complaints": "Давящие боли за грудиной при ходьбе",
            "document_ids": [discharge["id"]],
        },
        status=201,
    )
    assert request["state"] == "requested"

    # The doctor studies the request and the document, then assigns a time.
    incoming = await ok(
        client, "GET", "/consultations", doctor["token"], params={"state": "requested"}
    )
    assert [c["id"] for c in incoming["items"]] == [request["id"]]
    document = await client.get(
        f"/api/v1/documents/{discharge['id']}/content", headers=bearer(doctor["token"])
    )
    assert document.status == 200
    starts = later(clock, days=2)
    await ok(
        client,
        "POST",
        f"/consultations/{request['id']}/schedule",
        doctor["token"],
        {"starts_at": iso(starts), "duration_min": 30},
    )

    # The patient is told in the cabinet, by SMS and by e-mail with an invitation.
    await run_jobs_once(app)
    bell = await ok(client, "GET", "/notifications", token)
    assert "scheduled" in [n["kind"] for n in bell["items"]]
    assert sms_to(gw, phone)
    mails = mails_to(mail, "ivanov@example.ru")
    assert len(mails) == 1
    invite = calendar_part(mails[0])
    assert f"UID:{request['id']}@telemed" in invite
    assert f"DTSTART:{starts.strftime('%Y%m%dT%H%M%SZ')}" in invite

    await consult_and_conclude(
        client,
        app,
        clock,
        consultation_id=request["id"],
        doctor=doctor,
        patient_token=token,
        patient_phone=phone,
        gateway=gw,
    )


async def test_route_2_duty_doctor(
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    gateway: tuple[SmsGateway, str],
    smtp: tuple[SmtpCapture, int],
) -> None:
    gw, mail = gateway[0], smtp[0]
    manager = await manager_token(client)
    centre = await make_centre(client, manager, "Центр общей практики", ["терапия"])
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    start = later(clock, days=1)
    await ok(
        client,
        "POST",
        "/slots",
        duty["token"],
        {
            "starts_at": iso(start),
            "ends_at": iso(start + timedelta(hours=2)),
            "slot_minutes": 20,
        },
        status=201,
    )

    patient = await make_patient(client, email="petrova@example.ru")
    token, phone = patient["token"], patient["user"]["phone"]
    duty_doctors = await ok(client, "GET", "/doctors", token, params={"duty": "true"})
    assert [d["id"] for d in duty_doctors["items"]] == [duty["id"]]
    slots = await ok(client, "GET", f"/doctors/{duty['id']}/slots", token)
    assert len(slots["items"]) == 6
    booked = await ok(
        client,
        "POST",
        "/consultations",
        token,
        {
            "route": "duty",
            "slot_id": slots["items"][2]["id"],
            "channel": "video",
            "topic": "healthy_lifestyle",
            "question": "Какую нагрузку можно после 60 лет?",
        },
        status=201,
    )
    assert booked["state"] == "scheduled"
    assert booked["question"] == "Какую нагрузку можно после 60 лет?"

    await run_jobs_once(app)
    assert sms_to(gw, phone)
    assert len(mails_to(mail, "petrova@example.ru")) == 1
    doctor_bell = await ok(client, "GET", "/notifications", duty["token"])
    assert "new_booking" in [n["kind"] for n in doctor_bell["items"]]

    await consult_and_conclude(
        client,
        app,
        clock,
        consultation_id=booked["id"],
        doctor=duty,
        patient_token=token,
        patient_phone=phone,
        gateway=gw,
    )


async def test_route_3_referral(
    client: AppClient,
    app: web.Application,
    clock: FakeClock,
    gateway: tuple[SmsGateway, str],
    smtp: tuple[SmtpCapture, int],
) -> None:
    gw, mail = gateway[0], smtp[0]
    manager = await manager_token(client)
    centre = await make_centre(client, manager, "Областной кардиологический центр")
    doctor = await make_doctor(client, manager, centre["id"])
    table = (
        "ФИО;Дата рождения;Телефон;Email;Код МКБ-10;Диагноз;Направившая организация;"
        "Направивший врач;Профиль\r\n"
        "Воронин Алексей Игоревич;12.03.1958;8 (900) 555-01-01;voronin@example.ru;I25.1;"
        "ИБС: стенокардия напряжения;ГАУЗ СО «Городская больница г. Асбест»;"
        "Лаптева Ирина Олеговна;кардиология\r\n"
    ).encode("cp1251")
    form = FormData()
    form.add_field("file", table, filename="направления.csv", content_type="text/csv")
    report = await ok(client, "POST", "/referral-imports", manager, data=form, status=201)
    assert report["created"] == 1

    # The patient gets the credentials by SMS (through the gateway, in clear).
    await run_jobs_once(app)
    texts = sms_to(gw, "+79005550101")
    assert len(texts) == 1
    match = re.search(r"логин (\+7\d{10}),? пароль ([^\s.]+)", texts[0])
    assert match, texts[0]
    login, password = match.groups()
    # ... and the manager sees it masked.
    outbox = await ok(client, "GET", "/outbox", manager)
    assert password not in str(outbox)

    signed = await ok(client, "POST", "/auth/login", None, {"login": login, "password": password})
    token = signed["token"]
    assert signed["user"]["must_change_password"] is True
    blocked = await client.get("/api/v1/documents", headers=bearer(token))
    assert blocked.status == 403
    await ok(
        client,
        "POST",
        "/auth/password",
        token,
        {"current_password": password, "new_password": "Sunny-Garden-58"},
        status=204,
    )
    mine = await ok(client, "GET", "/consultations", token)
    assert [c["route"] for c in mine["items"]] == ["referral"]
    referral = mine["items"][0]
    assert referral["centre"]["id"] == centre["id"]

    # The patient uploads documents; the doctor reviews them and assigns a time.
    document = await upload(client, token, name="ЭКГ.pdf", kind="other")
    assert document["owner_id"] == signed["user"]["id"]
    unseen = await client.get(
        f"/api/v1/documents/{document['id']}", headers=bearer(doctor["token"])
    )
    assert unseen.status == 404  # not until the patient attaches it
    attached = await ok(
        client,
        "POST",
        f"/consultations/{referral['id']}/documents",
        token,
        {"document_ids": [document["id"]]},
    )
    assert attached["document_ids"] == [document["id"]]
    ecg = await client.get(
        f"/api/v1/documents/{document['id']}/content", headers=bearer(doctor["token"])
    )
    assert ecg.status == 200
    incoming = await ok(
        client, "GET", "/consultations", doctor["token"], params={"route": "referral"}
    )
    assert [c["id"] for c in incoming["items"]] == [referral["id"]]
    await ok(
        client,
        "POST",
        f"/consultations/{referral['id']}/schedule",
        doctor["token"],
        {"starts_at": iso(later(clock, days=3)), "duration_min": 40},
    )
    await run_jobs_once(app)
    assert len(sms_to(gw, "+79005550101")) == 2
    assert len(mails_to(mail, "voronin@example.ru")) == 1
    sla = await ok(client, "GET", "/sla", manager)
    assert [i["consultation_id"] for i in sla["met"]] == [referral["id"]]

    await consult_and_conclude(
        client,
        app,
        clock,
        consultation_id=referral["id"],
        doctor=doctor,
        patient_token=token,
        patient_phone="+79005550101",
        gateway=gw,
    )
