"""Accounts bound to a medical centre (``User.centre_id``): a manager of a centre sees
and changes that centre only, wherever a manager of the whole service sees everything;
a system client's token (a regional information system) is refused everywhere but the
FHIR interface. What they see through FHIR is in ``tests/test_fhir.py``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, TypedDict

import pytest
from aiohttp import FormData

from telemed import keys
from telemed.accounts.models import Role
from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from telemed.media.quality import QualitySummary
from telemed.media.quality_log import QualityLog
from tests.conftest import AppClient
from tests.factories import PASSWORD, assert_error, bearer, next_phone, staff
from tests.flows import api, ok, request_to_centre
from tests.realtime import connection_refused
from tests.world import World


class Scope(TypedDict):
    """The world, a request to each of its two centres, and a manager bound to the
    first centre (``centre``)."""

    world: World
    here: dict[str, Any]  # the patient's request to the centre
    there: dict[str, Any]  # the other patient's request to the other centre
    bound: str  # the token of a manager bound to the centre


@pytest.fixture
async def scope(client: AppClient, world: World) -> Scope:
    here = await request_to_centre(client, world["patient"], world["centre"]["id"])
    there = await request_to_centre(client, world["other"], world["other_centre"]["id"])
    bound = await staff(client, Role.MANAGER, centre_id=world["centre"]["id"])
    assert bound["user"]["centre_id"] == world["centre"]["id"]
    return Scope(world=world, here=here, there=there, bound=str(bound["token"]))


def referral_table(profile: str) -> FormData:
    """A referral table of one row, to the centre ``profile`` names."""
    header = "ФИО;Дата рождения;Телефон;Диагноз;Направившая организация;Направивший врач;Профиль"
    row = f"Воронин Алексей Игоревич;12.03.1958;{next_phone()};ИБС;ГБУЗ СО ЦРБ;Мельников А. С.;"
    form = FormData()
    data = (header + "\r\n" + row + profile + "\r\n").encode()
    form.add_field("file", data, filename="referrals.csv", content_type="text/csv")
    return form


async def import_table(client: AppClient, token: str, profile: str) -> Any:
    return await client.post(
        "/api/v1/referral-imports",
        data=referral_table(profile),
        params={"dry_run": "false"},
        headers=bearer(token),
    )


async def test_consultation_lists_and_reads_follow_the_centre(
    client: AppClient, scope: Scope
) -> None:
    world, bound = scope["world"], scope["bound"]
    here, there = scope["here"]["id"], scope["there"]["id"]

    listed = await ok(client, "GET", "/consultations", bound)
    assert [item["id"] for item in listed["items"]] == [here]
    everything = await ok(client, "GET", "/consultations", world["manager"])
    assert {item["id"] for item in everything["items"]} == {here, there}

    await ok(client, "GET", f"/consultations/{here}", bound)
    # Another centre's consultation does not exist for it (404, as for everyone else
    # who takes no part), and a manager's move on it is refused without a change.
    response = await client.get(f"/api/v1/consultations/{there}", headers=bearer(bound))
    await assert_error(response, 404, "not_found")
    response = await client.post(
        f"/api/v1/consultations/{there}/cancel", json={"reason": "Дубль"}, headers=bearer(bound)
    )
    await assert_error(response, 404, "not_found")
    unchanged = await ok(client, "GET", f"/consultations/{there}", world["manager"])
    assert unchanged["state"] == "requested"
    cancelled = await ok(
        client, "POST", f"/consultations/{here}/cancel", bound, {"reason": "Дубль"}
    )
    assert cancelled["state"] == "cancelled"


async def test_deadlines_quality_and_alerts_follow_the_centre(
    client: AppClient, scope: Scope, clock: FakeClock
) -> None:
    world, bound = scope["world"], scope["bound"]
    centre, other = world["centre"]["id"], world["other_centre"]["id"]

    report = await ok(client, "GET", "/sla", bound)
    items = report["due_soon"] + report["overdue"] + report["met"]
    assert [c["id"] for c in report["by_centre"]] == [centre]
    assert all(item["centre_id"] == centre for item in items)
    full = await ok(client, "GET", "/sla", world["manager"])
    assert {c["id"] for c in full["by_centre"]} == {centre, other}

    assert client.app is not None
    app = client.app
    quality = QualityLog(session_factory=app[keys.SESSION_FACTORY], clock=app[keys.CLOCK])
    for request, who in ((scope["here"], world["patient"]), (scope["there"], world["other"])):
        await quality.add(
            consultation_id=uuid.UUID(request["id"]),
            user_id=uuid.UUID(who["user"]["id"]),
            gained=QualitySummary(seconds={"good": 120.0, "weak": 0.0, "poor": 0.0}),
        )
    calls = await ok(client, "GET", "/call-quality", bound)
    assert [(c["centre_id"], c["calls"]) for c in calls["by_centre"]] == [(centre, 1)]
    all_calls = await ok(client, "GET", "/call-quality", world["manager"])
    assert {c["centre_id"] for c in all_calls["by_centre"]} == {centre, other}

    # Both requests pass their deadline: the manager of the service hears of both, the
    # manager of the centre of its own only.
    clock.advance(timedelta(days=4))
    await run_jobs_once(app)
    alerts = await ok(client, "GET", "/notifications", bound)
    overdue = [n for n in alerts["items"] if n["kind"] == "sla_overdue"]
    assert [n["consultation_id"] for n in overdue] == [scope["here"]["id"]]
    alerts = await ok(client, "GET", "/notifications", world["manager"])
    overdue = [n for n in alerts["items"] if n["kind"] == "sla_overdue"]
    assert {n["consultation_id"] for n in overdue} == {scope["here"]["id"], scope["there"]["id"]}

    # The outbox is the whole service's (its messages name no centre).
    response = await client.get("/api/v1/outbox", headers=bearer(bound))
    await assert_error(response, 403, "forbidden")
    await ok(client, "GET", "/outbox", world["manager"])


async def test_the_directory_of_other_centres_is_not_a_bound_managers_to_change(
    client: AppClient, scope: Scope
) -> None:
    world, bound = scope["world"], scope["bound"]
    centre, other = world["centre"], world["other_centre"]
    stranger, doctor = world["stranger"], world["doctor"]

    async def directory() -> Any:
        return (
            await ok(client, "GET", "/centres"),
            await ok(client, "GET", "/doctors"),
        )

    before = await directory()
    new_doctor = {
        "full_name": "Новикова Ольга Петровна",
        "phone": next_phone(),
        "password": PASSWORD,
        "specialty": "кардиолог",
    }
    refused: list[tuple[str, str, Any]] = [
        ("POST", "/centres", {"name": "Новый", "region": "Урал", "profiles": ["терапия"]}),
        ("PATCH", f"/centres/{other['id']}", {"description": "Чужой"}),
        ("DELETE", f"/centres/{other['id']}", None),
        ("DELETE", f"/centres/{centre['id']}", None),  # adding or removing: the service's
        ("POST", "/doctors", {**new_doctor, "centre_id": other["id"]}),
        ("PATCH", f"/doctors/{stranger['id']}", {"bio": "Чужой"}),
        ("PATCH", f"/doctors/{doctor['id']}", {"centre_id": other["id"]}),
        ("DELETE", f"/doctors/{stranger['id']}", None),
    ]
    for method, path, body in refused:
        response = await client.request(method, "/api/v1" + path, json=body, headers=bearer(bound))
        error = await assert_error(response, 403, "forbidden")
        assert error["details"]["centre_id"] == centre["id"], (method, path)
    assert await directory() == before

    # Its own centre and doctors are its to change.
    changed = await ok(client, "PATCH", f"/centres/{centre['id']}", bound, {"description": "Наш"})
    assert changed["description"] == "Наш"
    hired = await ok(
        client, "POST", "/doctors", bound, {**new_doctor, "centre_id": centre["id"]}, 201
    )
    assert hired["centre_id"] == centre["id"]
    await ok(client, "PATCH", f"/doctors/{hired['id']}", bound, {"bio": "Кардиолог"})
    await ok(client, "DELETE", f"/doctors/{hired['id']}", bound, status=204)


async def test_a_bound_manager_imports_and_reads_referrals_of_its_centre_only(
    client: AppClient, scope: Scope
) -> None:
    world, bound = scope["world"], scope["bound"]
    manager = world["manager"]
    before = await ok(client, "GET", "/consultations", manager)

    # A row for another centre: the whole import is refused, and nothing is made.
    response = await import_table(client, bound, "гинекология")
    error = await assert_error(response, 403, "forbidden")
    assert error["details"] == {"rows": [2], "centre_id": world["centre"]["id"]}
    assert await ok(client, "GET", "/consultations", manager) == before
    assert (await ok(client, "GET", "/referral-imports", manager))["items"] == []

    ours = await import_table(client, bound, "кардиология")
    assert ours.status == 201, await ours.text()
    mine = await ours.json()
    theirs = await import_table(client, manager, "гинекология")
    assert theirs.status == 201, await theirs.text()
    elsewhere = await theirs.json()

    listed = await ok(client, "GET", "/referral-imports", bound)
    assert [item["id"] for item in listed["items"]] == [mine["id"]]
    listed = await ok(client, "GET", "/referral-imports", manager)
    assert {item["id"] for item in listed["items"]} == {mine["id"], elsewhere["id"]}
    response = await client.get(
        f"/api/v1/referral-imports/{elsewhere['id']}", headers=bearer(bound)
    )
    await assert_error(response, 404, "not_found")

    # New credentials: for the patients referred to its centre only.
    our_patient = mine["rows"][0]["patient_id"]
    their_patient = elsewhere["rows"][0]["patient_id"]
    await ok(client, "POST", f"/patients/{our_patient}/credentials", bound, status=201)
    response = await client.post(
        f"/api/v1/patients/{their_patient}/credentials", headers=bearer(bound)
    )
    await assert_error(response, 404, "not_found")


async def test_a_system_clients_token_is_for_fhir_only(client: AppClient, scope: Scope) -> None:
    world = scope["world"]
    system = await staff(client, Role.SYSTEM, centre_id=world["centre"]["id"])
    token = str(system["token"])
    assert system["user"]["role"] == "system"

    for method, path, body in (
        ("GET", "/me", None),
        ("GET", "/consultations", None),
        ("GET", f"/consultations/{scope['here']['id']}", None),
        ("POST", f"/consultations/{scope['here']['id']}/cancel", {"reason": "Нет"}),
        ("GET", "/notifications", None),
        ("POST", "/auth/password", {"current_password": PASSWORD, "new_password": "N3w-Pass-2027"}),
    ):
        status, error = await api(client, method, path, token, body)
        assert status == 403, (method, path, error)
        assert error["error"]["code"] == "forbidden"
        assert "FHIR" in error["error"]["message"]
    request = await ok(client, "GET", f"/consultations/{scope['here']['id']}", world["manager"])
    assert request["state"] == "requested"

    # The FHIR interface takes it.
    response = await client.get("/fhir/R4/Appointment", headers=bearer(token))
    assert response.status == 200
    bundle = await response.json(content_type=None)
    assert [e["resource"]["id"] for e in bundle["entry"]] == [scope["here"]["id"]]

    # Socket.IO refuses the connection, saying why.
    error = await connection_refused(str(client.make_url("/")), token)
    assert error["data"]["error"]["code"] == "forbidden"
    assert "FHIR" in error["message"]
