"""Who may do what to a consultation: every consultation, document-through-consultation
and conclusion endpoint, tried by every role that must not act (managers bound to the
consultation's centre or to another, and a system client of its centre, included); each
is refused (401, 403 or 404) and nothing changes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from telemed.accounts.models import Role
from telemed.clock import FakeClock
from tests.conftest import AppClient
from tests.factories import bearer, staff
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

CONCLUSION = {"diagnosis": "ИБС", "findings": "Норма", "recommendations": "Ходить пешком"}


async def test_everyone_else_is_refused_and_nothing_changes(
    client: AppClient, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    elsewhere = await make_centre(client, manager, name="Другой центр", profiles=["терапия"])
    doctor = await make_doctor(client, manager, centre["id"])
    colleague = await make_doctor(client, manager, centre["id"], name="Коллега Врач")
    outsider = await make_doctor(client, manager, elsewhere["id"], name="Чужой Врач")
    patient = await make_patient(client)
    other_patient = await make_patient(client)
    document = await upload(client, patient["token"])

    created = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        {
            "route": "initiative",
            "centre_id": centre["id"],
            "diagnosis": "ИБС",
            "complaints": "Одышка",
            "document_ids": [document["id"]],
        },
        status=201,
    )
    cid = created["id"]
    await ok(
        client,
        "POST",
        f"/consultations/{cid}/schedule",
        doctor["token"],
        {"starts_at": iso(later(clock, hours=2)), "duration_min": 30},
    )
    clock.advance(timedelta(hours=2))
    await ok(client, "POST", f"/consultations/{cid}/start", doctor["token"])
    await ok(client, "POST", f"/consultations/{cid}/end", doctor["token"])
    await ok(
        client, "POST", f"/consultations/{cid}/conclusion", doctor["token"], CONCLUSION, status=201
    )

    actors = {
        "anonymous": None,
        "patient": patient["token"],
        "other_patient": other_patient["token"],
        "doctor": doctor["token"],
        "colleague": colleague["token"],
        "outsider": outsider["token"],
        "manager": manager,
        # Bound to the consultation's centre: a manager there; bound to another: nobody.
        "centre_manager": str((await staff(client, Role.MANAGER, centre_id=centre["id"]))["token"]),
        "elsewhere_manager": str(
            (await staff(client, Role.MANAGER, centre_id=elsewhere["id"]))["token"]
        ),
        # The consultation's centre's regional system: its token is for FHIR, and for
        # the download a DocumentReference links to.
        "system": str((await staff(client, Role.SYSTEM, centre_id=centre["id"]))["token"]),
    }
    managers = {"manager", "centre_manager"}
    start = iso(later(clock, days=1))
    # (method, path, body, who may act)
    endpoints: list[tuple[str, str, Any, set[str]]] = [
        ("GET", f"/consultations/{cid}", None, {"patient", "doctor", *managers}),
        ("GET", f"/consultations/{cid}/calendar.ics", None, {"patient", "doctor", *managers}),
        ("POST", f"/consultations/{cid}/schedule", {"starts_at": start}, {"doctor"}),
        ("POST", f"/consultations/{cid}/decline", {"reason": "Нет показаний"}, {"doctor"}),
        (
            "POST",
            f"/consultations/{cid}/cancel",
            {"reason": "Передумал"},
            {"patient", "doctor", *managers},
        ),
        ("POST", f"/consultations/{cid}/start", None, {"doctor"}),
        ("POST", f"/consultations/{cid}/end", None, {"doctor"}),
        (
            "POST",
            f"/consultations/{cid}/conclusion",
            {**CONCLUSION, "amendment_reason": "Иначе"},
            {"doctor"},
        ),
        ("GET", f"/consultations/{cid}/conclusion", None, {"patient", "doctor", *managers}),
        ("POST", f"/consultations/{cid}/join-token", None, {"patient", "doctor"}),
        ("GET", f"/consultations/{cid}/conclusion.pdf", None, {"patient", "doctor", *managers}),
        # The doctor who concluded it reads its documents for some days (to amend the
        # conclusion: TELEMED_DOCTOR_DOCUMENT_ACCESS_DAYS); colleagues, outsiders and
        # managers do not.
        ("GET", f"/documents/{document['id']}", None, {"patient", "doctor"}),
        ("GET", f"/documents/{document['id']}/content", None, {"patient", "doctor", "system"}),
        ("DELETE", f"/documents/{document['id']}", None, {"patient"}),
    ]

    async def snapshot() -> Any:
        consultation = await ok(client, "GET", f"/consultations/{cid}", manager)
        conclusion = await ok(client, "GET", f"/consultations/{cid}/conclusion", manager)
        own = await ok(client, "GET", "/documents", patient["token"])
        return consultation, [v["id"] for v in conclusion["versions"]], own

    before = await snapshot()
    refused = 0
    for method, path, body, allowed in endpoints:
        for name, token in actors.items():
            if name in allowed:
                continue
            response = await client.request(
                method, "/api/v1" + path, json=body, headers=bearer(token) if token else {}
            )
            expected = {401} if token is None else {403} if name == "system" else {403, 404}
            assert response.status in expected, (method, path, name, response.status)
            error = await response.json()
            assert set(error) == {"error"}
            refused += 1
    assert refused >= 90
    assert await snapshot() == before
