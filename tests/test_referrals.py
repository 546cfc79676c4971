"""Route 3: the manager imports a referral table; each good row becomes a patient with a
referral consultation and an SMS with the credentials; bad rows are reported. A manager
may issue a referred patient new credentials."""

from __future__ import annotations

import io
import re
import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from aiohttp import FormData, web
from openpyxl import Workbook
from sqlmodel import select

from telemed import keys
from telemed.audit import AuditEvent
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.factories import PASSWORD, assert_error, bearer, register
from tests.flows import api, make_centre, make_doctor, manager_token, ok

HEADER = [
    "ФИО",
    "Дата рождения",
    "Телефон",
    "Email",
    "Код МКБ-10",
    "Диагноз",
    "Направившая организация",
    "Направивший врач",
    "Профиль",
]
ORG, REFERRER = "ГБУЗ СО «Сысертская ЦРБ»", "Мельников Артём Сергеевич"


def table_rows(today: date) -> list[list[str]]:
    future = (today + timedelta(days=30)).strftime("%d.%m.%Y")
    return [
        [
            "Воронин Алексей Игоревич",
            "12.03.1958",
            "8 (900) 555-01-01",
            "",
            "I25.1",
            "ИБС: стенокардия напряжения",
            ORG,
            REFERRER,
            "кардиология",
        ],  # row 2: good
        [
            "Гаврилова Светлана Петровна",
            "03.09.1984",
            "+7 900 555-01-02",
            "gs@example.com",
            "N97.9",
            "Бесплодие",
            ORG,
            REFERRER,
            " Гинекология ",
        ],  # row 3: good
        [
            "Тимофеев Николай Ильич",
            "27.01.1949",
            "12-34",
            "",
            "I11.9",
            "Гипертоническая болезнь",
            ORG,
            REFERRER,
            "кардиология",
        ],  # row 4: bad phone
        [
            "",
            "15.06.1967",
            "89005550104",
            "",
            "K29.5",
            "Гастрит",
            ORG,
            REFERRER,
            "кардиология",
        ],  # row 5: no name
        [
            "Ершова Дарья Максимовна",
            future,
            "+79005550105",
            "",
            "O99.0",
            "Анемия",
            ORG,
            REFERRER,
            "кардиология",
        ],  # row 6: born in the future
        [
            "Воронин  Алексей Игоревич",
            "12.03.1958",
            "+79005550101",
            "",
            "I25.1",
            "ИБС: стенокардия напряжения",
            ORG,
            REFERRER,
            "Кардиология",
        ],  # row 7: duplicate of 2
        [
            "Киселёв Олег Ильич",
            "01.02.1960",
            "+79005550107",
            "",
            "",
            "Псориаз",
            ORG,
            REFERRER,
            "дерматология",
        ],  # row 8: no centre offers it
        ["", "", "", "", "", "", "", "", ""],  # an empty trailing row
    ]


def csv_bytes(rows: list[list[str]], *, encoding: str = "utf-8", delimiter: str = ";") -> bytes:
    lines = [
        delimiter.join(f'"{cell}"' if delimiter in cell else cell for cell in row)
        for row in [HEADER, *rows]
    ]
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [HEADER, *rows]:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def upload_table(client: AppClient, token: str, data: bytes, name: str, dry_run: bool) -> Any:
    form = FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return await client.post(
        "/api/v1/referral-imports",
        data=form,
        params={"dry_run": "true" if dry_run else "false"},
        headers=bearer(token),
    )


@pytest.fixture
async def centres(client: AppClient) -> dict[str, Any]:
    manager = await manager_token(client)
    cardio = await make_centre(client, manager, "Кардиоцентр", ["кардиология"])
    gyn = await make_centre(client, manager, "Центр репродукции", ["гинекология"])
    return {"manager": manager, "cardio": cardio, "gyn": gyn}


def check_report(report: dict[str, Any], *, dry_run: bool) -> None:
    by_row = {row["row"]: row for row in report["rows"]}
    assert sorted(by_row) == [2, 3, 4, 5, 6, 7, 8]
    assert report["dry_run"] is dry_run
    assert report["total_rows"] == 7
    assert report["created"] == 2
    assert report["invalid"] == 5
    assert "went through" in report["summary"]
    good = "would_create" if dry_run else "created"
    assert (by_row[2]["ok"], by_row[2]["status"]) == (True, good)
    assert (by_row[3]["ok"], by_row[3]["status"]) == (True, good)

    def columns(row: int) -> set[str]:
        assert by_row[row]["ok"] is False
        return {error["column"] for error in by_row[row]["errors"]}

    assert columns(4) == {"phone"}
    assert columns(5) == {"full_name"}
    assert columns(6) == {"birth_date"}
    assert columns(7) == {"row"}
    assert "duplicate of row 2" in by_row[7]["errors"][0]["message"]
    assert columns(8) == {"profile"}


@pytest.mark.parametrize("form", ["csv-utf8", "csv-cp1251", "xlsx"])
async def test_import_reports_row_by_row_and_creates_once(
    client: AppClient, centres: dict[str, Any], clock: FakeClock, form: str
) -> None:
    manager = centres["manager"]
    rows = table_rows(clock.now().date())
    data, name = {
        "csv-utf8": (csv_bytes(rows), "направления.csv"),
        "csv-cp1251": (csv_bytes(rows, encoding="cp1251", delimiter=","), "направления.csv"),
        "xlsx": (xlsx_bytes(rows), "направления.xlsx"),
    }[form]

    dry = await upload_table(client, manager, data, name, dry_run=True)
    assert dry.status == 201, await dry.text()
    check_report(await dry.json(), dry_run=True)
    assert (await ok(client, "GET", "/consultations", manager))["items"] == []

    real = await upload_table(client, manager, data, name, dry_run=False)
    report = await real.json()
    check_report(report, dry_run=False)
    consultations = (await ok(client, "GET", "/consultations", manager))["items"]
    assert len(consultations) == 2
    by_centre = {c["centre"]["id"]: c for c in consultations}
    cardio = by_centre[centres["cardio"]["id"]]
    assert cardio["route"] == "referral"
    assert cardio["state"] == "requested"
    assert cardio["icd10"] == "I25.1"
    assert cardio["referring_organisation"] == ORG
    assert cardio["full_name"] == "Воронин Алексей Игоревич"
    assert by_centre[centres["gyn"]["id"]]["referring_doctor"] == REFERRER

    # Credentials by SMS, masked for the manager.
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    sms = [m for m in outbox if m["kind"] == "referral_credentials"]
    assert sorted(m["recipient"] for m in sms) == ["+79005550101", "+79005550102"]
    assert all("+7900555010" in m["body"] for m in sms)

    # The report is kept.
    kept = await ok(client, "GET", f"/referral-imports/{report['id']}", manager)
    assert kept == report

    # The same file again creates nothing.
    again = await (await upload_table(client, manager, data, name, dry_run=False)).json()
    assert again["created"] == 0
    assert {row["status"] for row in again["rows"] if row["ok"]} == {"exists"}
    assert len((await ok(client, "GET", "/consultations", manager))["items"]) == 2
    assert (
        len(
            [
                m
                for m in (await ok(client, "GET", "/outbox", manager))["items"]
                if m["kind"] == "referral_credentials"
            ]
        )
        == 2
    )


async def test_an_existing_patient_is_linked_not_recreated(
    client: AppClient, centres: dict[str, Any], clock: FakeClock
) -> None:
    existing = await register(
        client, phone="+79005550101", full_name="Воронин Алексей Игоревич", birth_date="1958-03-12"
    )
    rows = table_rows(clock.now().date())[:1]
    report = await (
        await upload_table(client, centres["manager"], csv_bytes(rows), "t.csv", dry_run=False)
    ).json()
    assert report["rows"][0]["status"] == "linked"
    assert report["rows"][0]["patient_id"] == existing["user"]["id"]
    mine = await ok(client, "GET", "/consultations", existing["token"])
    assert [c["route"] for c in mine["items"]] == ["referral"]
    outbox = (await ok(client, "GET", "/outbox", centres["manager"]))["items"]
    kinds = [m["kind"] for m in outbox if m["recipient"] == "+79005550101"]
    assert kinds == ["consultation_requested"]


async def test_a_phone_of_another_person_is_not_linked(
    client: AppClient, centres: dict[str, Any], clock: FakeClock
) -> None:
    """A relative's phone in the table must not put the referral in the relative's cabinet."""
    relative = await register(client, phone="+79005550101", full_name="Воронина Мария Петровна")
    rows = table_rows(clock.now().date())[:1]
    report = await (
        await upload_table(client, centres["manager"], csv_bytes(rows), "t.csv", dry_run=False)
    ).json()
    row = report["rows"][0]
    assert row["ok"] is False
    assert [e["column"] for e in row["errors"]] == ["phone"]
    assert (await ok(client, "GET", "/consultations", relative["token"]))["items"] == []
    assert (await ok(client, "GET", "/consultations", centres["manager"]))["items"] == []


async def test_bad_tables_and_callers_are_refused(
    client: AppClient, centres: dict[str, Any], clock: FakeClock
) -> None:
    manager = centres["manager"]
    response = await upload_table(client, manager, b"\x00\x01garbage", "x.csv", dry_run=True)
    await assert_error(response, 422, "invalid_value")
    missing = "ФИО;Телефон\r\nИванов;+79005550101\r\n".encode()
    response = await upload_table(client, manager, missing, "x.csv", dry_run=True)
    error = await assert_error(response, 422, "invalid_value")
    assert "birth_date" in error["details"]["missing_columns"]
    patient = await register(client)
    response = await upload_table(client, patient["token"], csv_bytes([]), "x.csv", dry_run=True)
    await assert_error(response, 403, "forbidden")
    manager_doctor = await make_doctor(client, manager, centres["cardio"]["id"])
    response = await upload_table(
        client, manager_doctor["token"], csv_bytes([]), "x.csv", dry_run=True
    )
    await assert_error(response, 403, "forbidden")
    assert (await ok(client, "GET", "/consultations", manager))["items"] == []
    assert (await ok(client, "GET", "/referral-imports", manager))["items"] == []


# ── new credentials for a referred patient ──────────────────────────────────────────

CREDENTIALS_SMS = re.compile(r"логин (\+7\d{10}),? пароль ([^\s.]+)")


async def kept_password(client: AppClient, manager: str, phone: str, kind: str) -> str:
    """The password in the newest SMS of ``kind`` to ``phone``, as a manager of a demo
    (development mode, no gateway) reads it in the outbox."""
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    [latest, *_] = [m for m in outbox if m["recipient"] == phone and m["kind"] == kind]
    assert latest["status"] == "kept"
    found = CREDENTIALS_SMS.search(latest["kept_text"] or "")
    assert found, latest
    return found[2]


async def sign_in(client: AppClient, login: str, password: str) -> tuple[int, Any]:
    status, body = await api(
        client, "POST", "/auth/login", None, {"login": login, "password": password}
    )
    client.session.cookie_jar.clear()
    return status, body


async def test_a_manager_issues_a_referred_patient_new_credentials(
    client: AppClient, app: web.Application, centres: dict[str, Any], clock: FakeClock
) -> None:
    manager = centres["manager"]
    rows = table_rows(clock.now().date())[:1]
    report = await (
        await upload_table(client, manager, csv_bytes(rows), "t.csv", dry_run=False)
    ).json()
    patient_id, phone = report["rows"][0]["patient_id"], "+79005550101"
    await run_jobs_once(app)
    first = await kept_password(client, manager, phone, "referral_credentials")
    status, signed = await sign_in(client, phone, first)
    assert status == 200
    assert signed["user"]["must_change_password"] is True

    clock.advance(timedelta(days=3))  # the SMS was lost; the patient calls the service
    issued = await ok(client, "POST", f"/patients/{patient_id}/credentials", manager, status=201)
    assert issued == {
        "patient_id": patient_id,
        "login": phone,
        "issued_at": clock.now().isoformat().replace("+00:00", "Z"),
        "kept_in_outbox": True,
    }
    # The old password and the patient's sessions are dead at once.
    assert (await api(client, "GET", "/me", signed["token"]))[0] == 401
    assert (await sign_in(client, phone, first))[0] == 401
    # The new one comes by SMS; only it stays readable in the outbox.
    await run_jobs_once(app)
    second = await kept_password(client, manager, phone, "new_credentials")
    assert second != first
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    [old_sms] = [m for m in outbox if m["kind"] == "referral_credentials"]
    assert (old_sms["status"], old_sms["kept_text"]) == ("kept", None)
    # Signed in with it, the patient must choose a password before anything else.
    status, again = await sign_in(client, phone, second)
    assert status == 200
    assert again["user"]["must_change_password"] is True
    await ok(
        client,
        "POST",
        "/auth/password",
        again["token"],
        {"current_password": second, "new_password": "Sunny-Garden-58"},
        status=204,
    )
    assert (await sign_in(client, phone, "Sunny-Garden-58"))[0] == 200

    async with app[keys.SESSION_FACTORY]() as session:
        events = (
            await session.exec(select(AuditEvent).where(AuditEvent.action == "credentials.issued"))
        ).all()
    assert [(str(e.subject_id), e.object_id) for e in events] == [(patient_id, patient_id)]
    manager_id = (await ok(client, "GET", "/me", manager))["id"]
    assert str(events[0].actor_id) == manager_id


async def test_new_credentials_are_refused_to_others_and_limited(
    client: AppClient, app: web.Application, centres: dict[str, Any], clock: FakeClock
) -> None:
    manager = centres["manager"]
    rows = table_rows(clock.now().date())[:1]
    report = await (
        await upload_table(client, manager, csv_bytes(rows), "t.csv", dry_run=False)
    ).json()
    referred = report["rows"][0]["patient_id"]
    self_registered = await register(client)
    doctor = await make_doctor(client, manager, centres["cardio"]["id"])
    manager_id = (await ok(client, "GET", "/me", manager))["id"]

    # Only managers; only referred patients (the accounts the service made).
    for token in (self_registered["token"], doctor["token"]):
        response = await client.post(
            f"/api/v1/patients/{referred}/credentials", headers=bearer(token)
        )
        await assert_error(response, 403, "forbidden")
    for other in (
        self_registered["user"]["id"],
        doctor["user_id"],
        manager_id,
        str(uuid.uuid4()),
        "not-an-id",
    ):
        response = await client.post(
            f"/api/v1/patients/{other}/credentials", headers=bearer(manager)
        )
        await assert_error(response, 404, "not_found")
    # A refusal changed nothing: the self-registered patient still signs in.
    assert (await sign_in(client, self_registered["user"]["phone"], PASSWORD))[0] == 200

    # At most three issues an hour for one patient (each is an SMS to them).
    for _ in range(3):
        await ok(client, "POST", f"/patients/{referred}/credentials", manager, status=201)
    response = await client.post(
        f"/api/v1/patients/{referred}/credentials", headers=bearer(manager)
    )
    error = await assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) == error["details"]["retry_after"] > 0
    await run_jobs_once(app)
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    assert [m["kind"] for m in outbox].count("new_credentials") == 3
    clock.advance(timedelta(hours=1))
    await ok(client, "POST", f"/patients/{referred}/credentials", manager, status=201)
