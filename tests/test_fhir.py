"""The FHIR R4 read interface (``/fhir/R4``): every resource it returns is valid for a
FHIR library's R4 models (``fhir.resources``' R4B package: FHIR 4.3, the technical
correction of 4.0.1, with the same structure for these resources), a FHIR client
library (``fhirpy``) reads it from the live test server, and each caller sees exactly
what the API shows them, audited."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

import pytest
from aiohttp import FormData
from fhir.resources.R4B import get_fhir_model_class
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound
from sqlmodel import col, select
from yarl import URL

from telemed import db, keys
from telemed.accounts.models import Role, User
from telemed.audit import AuditEvent
from telemed.clock import FakeClock
from telemed.documents import service as document_service
from telemed.documents.models import Document
from telemed.errors import InvalidInput, NotFound
from telemed.fhir import resources
from telemed.fhir.resources import (
    APPOINTMENT_STATUS,
    SERVICE_REQUEST_STATUS,
    STATE_EXTENSION,
    Names,
    narrative,
)
from telemed.fhir.search import date_range, read_query
from telemed.scheduling.models import Consultation, DutyTopic, Route, State
from tests import samples
from tests.conftest import AppClient
from tests.factories import bearer, next_phone, staff
from tests.flows import book_slot, iso, later, ok, request_to_centre, upload
from tests.world import World

FHIR_JSON = "application/fhir+json"


class Scene(TypedDict):
    """The world, with one consultation of each kind and the documents around them."""

    world: World
    request: dict[str, Any]  # the patient's route 1 request (requested, unassigned)
    duty: dict[str, Any]  # the patient's duty consultation, concluded, amended once
    other_request: dict[str, Any]  # the other patient's request to the other centre
    referral_id: str  # a referral to the centre (route 3)
    referred_id: str  # its patient
    document: dict[str, Any]  # the patient's document, attached to the request
    join_token: str  # a join token of the patient's duty consultation


async def import_referral(client: AppClient, manager: str, profile: str) -> tuple[str, str]:
    """One referral row imported by the manager; returns (consultation id, patient id)."""
    header = "ФИО;Дата рождения;Телефон;Код МКБ-10;Диагноз;Направившая организация;"
    header += "Направивший врач;Профиль"
    row = f"Воронин Алексей Игоревич;12.03.1958;{next_phone()};I25.1;ИБС;"
    row += f"ГБУЗ СО «Сысертская ЦРБ»;Мельников Артём Сергеевич;{profile}"
    form = FormData()
    data = (header + "\r\n" + row + "\r\n").encode()
    form.add_field("file", data, filename="referrals.csv", content_type="text/csv")
    response = await client.post(
        "/api/v1/referral-imports",
        data=form,
        params={"dry_run": "false"},
        headers=bearer(manager),
    )
    assert response.status == 201, await response.text()
    report = await response.json()
    assert report["created"] == 1, report
    listed = await ok(client, "GET", "/consultations?route=referral", manager)
    referral = listed["items"][0]
    return str(referral["id"]), str(referral["patient"]["id"])


@pytest.fixture
async def scene(client: AppClient, world: World, clock: FakeClock) -> Scene:
    patient, duty = world["patient"], world["duty"]
    document = await upload(client, patient["token"])
    request = await request_to_centre(client, patient, world["centre"]["id"])
    await ok(
        client,
        "POST",
        f"/consultations/{request['id']}/documents",
        patient["token"],
        {"document_ids": [document["id"]]},
    )
    other_request = await request_to_centre(client, world["other"], world["other_centre"]["id"])
    referral_id, referred_id = await import_referral(client, world["manager"], "кардиология")

    booked = await book_slot(client, duty, patient, later(clock, days=1), topic="cardiovascular")
    clock.advance(timedelta(days=1))
    joined = await ok(
        client, "POST", f"/consultations/{booked['id']}/join-token", patient["token"], status=201
    )
    await ok(client, "POST", f"/consultations/{booked['id']}/start", duty["token"])
    await ok(client, "POST", f"/consultations/{booked['id']}/end", duty["token"])
    conclusion = {
        "diagnosis": "Гипертоническая болезнь II стадии",
        "icd10": "I11.9",
        "findings": "АД 160/100 <мм рт. ст.>",
        "recommendations": "Контроль давления\nдважды в день",
    }
    path = f"/consultations/{booked['id']}/conclusion"
    await ok(client, "POST", path, duty["token"], conclusion, status=201)
    amended = {
        **conclusion,
        "recommendations": "Контроль давления",
        "amendment_reason": "Уточнение",
    }
    await ok(client, "POST", path, duty["token"], amended, status=201)
    return Scene(
        world=world,
        request=request,
        duty=booked,
        other_request=other_request,
        referral_id=referral_id,
        referred_id=referred_id,
        document=document,
        join_token=joined["token"],
    )


async def fhir_get(
    client: AppClient, path: str, token: str | None, expect: int = 200, **params: Any
) -> dict[str, Any]:
    """GET /fhir/R4<path>: the status, the FHIR media type, and the body as JSON."""
    headers = bearer(token) if token else {}
    response = await client.get("/fhir/R4" + path, headers=headers, params=params)
    body: dict[str, Any] = await response.json(content_type=None)
    assert response.status == expect, body
    assert response.content_type == FHIR_JSON
    assert response.headers["Cache-Control"] == "no-store"
    return body


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource is valid for the R4 models of ``fhir.resources`` (and so is every
    resource inside a Bundle); returns it."""
    model = get_fhir_model_class(resource["resourceType"])
    model.model_validate(resource)
    for entry in resource.get("entry", []):
        valid(entry["resource"])
    return resource


def serialized(resource: Any) -> dict[str, Any]:
    """A resource fhirpy read, as plain JSON (fhirpy's ``serialize`` is untyped)."""
    result: dict[str, Any] = resource.serialize()
    return result


def ids(bundle: dict[str, Any]) -> set[str]:
    return {entry["resource"]["id"] for entry in bundle["entry"]}


async def outcome(
    client: AppClient, path: str, token: str | None, expect: int, code: str, **params: Any
) -> dict[str, Any]:
    """The error is an OperationOutcome with this HTTP status, keeping our error code."""
    body = valid(await fhir_get(client, path, token, expect, **params))
    assert body["resourceType"] == "OperationOutcome"
    (issue,) = body["issue"]
    assert issue["severity"] == "error"
    assert issue["details"]["coding"] == [{"system": "urn:telemed:error-code", "code": code}]
    assert issue["details"]["text"]
    return dict(issue)


async def audit_rows(client: AppClient) -> list[AuditEvent]:
    assert client.app is not None
    async with db.transaction(client.app[keys.SESSION_FACTORY]) as session:
        rows = await session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))
        return list(rows.all())


def test_the_state_mapping_is_the_design_table() -> None:
    assert dict(APPOINTMENT_STATUS) == {
        State.REQUESTED: "proposed",
        State.SCHEDULED: "booked",
        State.IN_PROGRESS: "arrived",
        State.COMPLETED: "fulfilled",
        State.CONCLUDED: "fulfilled",
        State.CANCELLED: "cancelled",
        State.DECLINED: "cancelled",
        State.NO_SHOW: "noshow",
    }


async def test_metadata_is_a_capability_statement(client: AppClient) -> None:
    statement = valid(await fhir_get(client, "/metadata", None))
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["format"] == ["json"]
    (rest,) = statement["rest"]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert set(by_type) == {
        "Patient",
        "Practitioner",
        "Organization",
        "Appointment",
        "ServiceRequest",
        "DocumentReference",
        "Composition",
    }
    assert {p["name"] for p in by_type["Appointment"]["searchParam"]} == {
        "_id",
        "patient",
        "date",
        "status",
    }
    assert {p["name"] for p in by_type["Patient"]["searchParam"]} >= {"_id", "identifier"}
    for resource in by_type.values():
        assert [i["code"] for i in resource["interaction"]] == ["read", "search-type"]


async def test_a_fhir_client_reads_every_resource(client: AppClient, scene: Scene) -> None:
    world = scene["world"]
    fhir = AsyncFHIRClient(
        str(client.make_url("/fhir/R4")), authorization=f"Bearer {world['manager']}"
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for kind in (
        "Patient",
        "Practitioner",
        "Organization",
        "Appointment",
        "ServiceRequest",
        "Composition",
    ):
        resources = await fhir.resources(kind).limit(2).fetch_all()  # pages of two
        found[kind] = [valid(serialized(resource)) for resource in resources]
        for resource in found[kind]:
            again = await fhir.reference(kind, resource["id"]).to_resource()
            assert valid(serialized(again)) == resource
    assert {r["id"] for r in found["Patient"]} == {
        world["patient"]["user"]["id"],
        world["other"]["user"]["id"],
        scene["referred_id"],
    }
    assert {r["id"] for r in found["Practitioner"]} == {
        world[who]["id"] for who in ("doctor", "duty", "stranger")
    }
    assert {r["id"] for r in found["Organization"]} == {
        world["centre"]["id"],
        world["other_centre"]["id"],
    }
    appointments = {r["id"]: r for r in found["Appointment"]}
    assert set(appointments) == {
        scene["request"]["id"],
        scene["duty"]["id"],
        scene["other_request"]["id"],
        scene["referral_id"],
    }
    duty = appointments[scene["duty"]["id"]]
    assert duty["status"] == "fulfilled"
    assert duty["extension"] == [{"url": STATE_EXTENSION, "valueCode": "concluded"}]
    assert {p["actor"]["reference"] for p in duty["participant"]} == {
        f"Patient/{world['patient']['user']['id']}",
        f"Practitioner/{world['duty']['id']}",
    }
    assert duty["start"] < duty["end"]
    request = appointments[scene["request"]["id"]]
    assert request["status"] == "proposed"
    assert "start" not in request
    assert request["reasonCode"] == [{"text": "Мигрень"}]
    referral = appointments[scene["referral_id"]]
    assert referral["basedOn"] == [{"reference": f"ServiceRequest/{scene['referral_id']}"}]

    (service_request,) = found["ServiceRequest"]
    assert service_request["id"] == scene["referral_id"]
    assert service_request["status"] == "active"
    assert service_request["subject"]["reference"] == f"Patient/{scene['referred_id']}"
    assert service_request["performer"][0]["reference"] == f"Organization/{world['centre']['id']}"
    assert service_request["reasonCode"][0]["coding"][0]["code"] == "I25.1"
    assert "Мельников" in service_request["requester"]["display"]

    first, second = sorted(found["Composition"], key=lambda r: r["meta"]["versionId"])
    assert (first["status"], second["status"]) == ("final", "amended")
    assert second["relatesTo"] == [
        {"code": "replaces", "targetReference": {"reference": f"Composition/{first['id']}"}}
    ]
    assert second["event"][0]["detail"] == [{"reference": f"Appointment/{scene['duty']['id']}"}]
    findings = first["section"][1]["text"]["div"]
    assert "&lt;мм рт. ст.&gt;" in findings  # text escaped, not markup
    assert "дважды в день" in first["section"][2]["text"]["div"]

    # A manager reads no patient's documents, through FHIR as through the API.
    assert await fhir.resources("DocumentReference").fetch_all() == []
    with pytest.raises(ResourceNotFound):
        await fhir.reference("DocumentReference", scene["document"]["id"]).to_resource()


async def test_searches_take_the_parameters_regional_systems_need(
    client: AppClient, scene: Scene, clock: FakeClock
) -> None:
    world = scene["world"]
    manager, patient_id = world["manager"], world["patient"]["user"]["id"]

    async def search(kind: str, **params: Any) -> set[str]:
        return ids(valid(await fhir_get(client, f"/{kind}", manager, **params)))

    assert await search("Patient", _id=patient_id) == {patient_id}
    assert await search("Patient", identifier=f"urn:ietf:rfc:3986|urn:uuid:{patient_id}") == {
        patient_id
    }
    assert await search("Patient", identifier=f"urn:uuid:{patient_id}") == {patient_id}
    assert await search("Patient", identifier=f"http://other.system|{patient_id}") == set()
    assert await search("Patient", phone=world["patient"]["user"]["phone"]) == {patient_id}
    assert await search("Patient", _id="not-an-id") == set()

    assert await search("Appointment", patient=f"Patient/{patient_id}") == {
        scene["request"]["id"],
        scene["duty"]["id"],
    }
    assert await search("Appointment", patient=patient_id, status="fulfilled") == {
        scene["duty"]["id"]
    }
    assert await search("Appointment", status="proposed,booked") == {
        scene["request"]["id"],
        scene["other_request"]["id"],
        scene["referral_id"],
    }
    assert await search("Appointment", status="noshow") == set()
    day = clock.now().date()
    starts = iso(later(clock, days=0) - timedelta(hours=2))
    assert await search("Appointment", date=f"ge{starts}") == {scene["duty"]["id"]}
    params = [("date", f"ge{day - timedelta(days=1)}"), ("date", f"lt{day + timedelta(days=2)}")]
    response = await client.get("/fhir/R4/Appointment", params=params, headers=bearer(manager))
    assert ids(valid(await response.json(content_type=None))) == {scene["duty"]["id"]}
    assert await search("Appointment", date=f"lt{day - timedelta(days=1)}") == set()

    assert await search("ServiceRequest", patient=scene["referred_id"]) == {scene["referral_id"]}
    assert await search("ServiceRequest", patient=patient_id) == set()
    compositions = await search("Composition", patient=patient_id)
    assert len(compositions) == 2
    assert await search("Composition", patient=world["other"]["user"]["id"]) == set()
    assert await search("Practitioner", _id=world["duty"]["id"]) == {world["duty"]["id"]}
    assert await search("Practitioner", name="белова") == {world["duty"]["id"]}
    assert await search("Practitioner", organization=world["other_centre"]["id"]) == {
        world["stranger"]["id"]
    }
    assert await search("Organization", name="гинеколог") == {world["other_centre"]["id"]}
    assert await search("Organization") == {world["centre"]["id"], world["other_centre"]["id"]}

    document = scene["document"]["id"]
    doctor = world["doctor"]["token"]
    bundle = valid(await fhir_get(client, "/DocumentReference", doctor, patient=patient_id))
    assert ids(bundle) == {document}


async def test_a_search_pages_with_a_total_and_a_next_link(client: AppClient, scene: Scene) -> None:
    manager = scene["world"]["manager"]
    page = valid(await fhir_get(client, "/Appointment", manager, _count="1"))
    assert page["type"] == "searchset"
    assert page["total"] == 4
    seen: list[str] = []
    while True:
        assert len(page["entry"]) == 1
        assert page["total"] == 4
        seen.extend(entry["resource"]["id"] for entry in page["entry"])
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert links["self"].startswith(str(client.make_url("/fhir/R4/Appointment?")))
        for entry in page["entry"]:
            assert entry["fullUrl"] == str(
                client.make_url(f"/fhir/R4/Appointment/{entry['resource']['id']}")
            )
        if "next" not in links:
            break
        response = await client.get(URL(links["next"]).path_qs, headers=bearer(manager))
        page = valid(await response.json(content_type=None))
    assert len(seen) == len(set(seen)) == 4
    only_total = valid(await fhir_get(client, "/Appointment", manager, _count="0"))
    assert (only_total["total"], only_total["entry"]) == (4, [])


async def test_each_caller_sees_what_the_api_shows_them(client: AppClient, scene: Scene) -> None:
    world = scene["world"]
    patient, other = world["patient"], world["other"]
    mine = {scene["request"]["id"], scene["duty"]["id"]}

    # A patient: their own, and nothing of anyone else's (which does not exist for them).
    as_patient = valid(await fhir_get(client, "/Appointment", patient["token"]))
    assert ids(as_patient) == mine
    patients = valid(await fhir_get(client, "/Patient", patient["token"]))
    assert ids(patients) == {patient["user"]["id"]}
    await outcome(client, f"/Patient/{other['user']['id']}", patient["token"], 404, "not_found")
    await outcome(
        client, f"/Appointment/{scene['other_request']['id']}", patient["token"], 404, "not_found"
    )
    documents = valid(await fhir_get(client, "/DocumentReference", patient["token"]))
    assert ids(documents) == {scene["document"]["id"]}
    assert ids(valid(await fhir_get(client, "/DocumentReference", other["token"]))) == set()
    await outcome(
        client,
        f"/DocumentReference/{scene['document']['id']}",
        other["token"],
        404,
        "not_found",
    )
    assert len(ids(valid(await fhir_get(client, "/Composition", patient["token"])))) == 2
    assert ids(valid(await fhir_get(client, "/Composition", other["token"]))) == set()

    # A doctor of the centre: the request waiting for the centre, with its patient and
    # the document attached to it; not the duty doctor's consultation or conclusion.
    doctor = world["doctor"]["token"]
    assert ids(valid(await fhir_get(client, "/Appointment", doctor))) == {
        scene["request"]["id"],
        scene["referral_id"],
    }
    assert ids(valid(await fhir_get(client, "/Patient", doctor))) == {
        patient["user"]["id"],
        scene["referred_id"],
    }
    read = valid(await fhir_get(client, f"/DocumentReference/{scene['document']['id']}", doctor))
    attachment = read["content"][0]["attachment"]
    assert attachment["url"] == str(
        client.make_url(f"/api/v1/documents/{scene['document']['id']}/content")
    )
    assert attachment["contentType"] == "application/pdf"
    assert read["subject"] == {"reference": f"Patient/{patient['user']['id']}"}
    assert ids(valid(await fhir_get(client, "/Composition", doctor))) == set()
    await outcome(client, f"/Appointment/{scene['duty']['id']}", doctor, 404, "not_found")

    # The duty doctor: their consultation and its conclusion, not the centre's requests
    # (a duty doctor is a doctor of the centre too: the waiting request shows).
    duty = world["duty"]["token"]
    assert scene["duty"]["id"] in ids(valid(await fhir_get(client, "/Appointment", duty)))
    assert len(ids(valid(await fhir_get(client, "/Composition", duty)))) == 2

    # A doctor of another centre sees neither the patient nor anything of theirs (only
    # the request waiting for their own centre).
    stranger = world["stranger"]["token"]
    assert ids(valid(await fhir_get(client, "/Appointment", stranger))) == {
        scene["other_request"]["id"]
    }
    await outcome(client, f"/Patient/{patient['user']['id']}", stranger, 404, "not_found")
    await outcome(
        client, f"/DocumentReference/{scene['document']['id']}", stranger, 404, "not_found"
    )
    # The directory is open to every signed-in user.
    assert len(ids(valid(await fhir_get(client, "/Practitioner", stranger)))) == 3


async def test_an_account_bound_to_a_centre_sees_that_centre_only(
    client: AppClient, scene: Scene
) -> None:
    """A manager of a centre and a regional system's client see their centre's resources
    in every search and read; another centre's do not exist for them (404, as for
    anyone who takes no part). A manager of the whole service sees both centres."""
    world = scene["world"]
    centre, other = world["centre"]["id"], world["other_centre"]["id"]
    patient, stranger_patient = world["patient"]["user"]["id"], world["other"]["user"]["id"]
    ours = {
        "Appointment": {scene["request"]["id"], scene["duty"]["id"], scene["referral_id"]},
        "ServiceRequest": {scene["referral_id"]},
        "Patient": {patient, scene["referred_id"]},
        "Practitioner": {world["doctor"]["id"], world["duty"]["id"]},
        "Organization": {centre},
    }
    theirs = {
        "Appointment": scene["other_request"]["id"],
        "Patient": stranger_patient,
        "Practitioner": world["stranger"]["id"],
        "Organization": other,
    }
    compositions = ids(valid(await fhir_get(client, "/Composition", world["manager"])))
    assert len(compositions) == 2
    readers = {
        "manager": str((await staff(client, Role.MANAGER, centre_id=centre))["token"]),
        "system": str((await staff(client, Role.SYSTEM, centre_id=centre))["token"]),
    }
    for who, token in readers.items():
        for kind, expected in ours.items():
            found = ids(valid(await fhir_get(client, f"/{kind}", token)))
            assert found == expected, (who, kind)
            for resource_id in expected:
                read = valid(await fhir_get(client, f"/{kind}/{resource_id}", token))
                assert read["id"] == resource_id
        for kind, resource_id in theirs.items():
            await outcome(client, f"/{kind}/{resource_id}", token, 404, "not_found")
        assert ids(valid(await fhir_get(client, "/Composition", token))) == compositions
        for composition in compositions:
            valid(await fhir_get(client, f"/Composition/{composition}", token))
        # Asking for the other centre's by name or reference finds nothing.
        for kind, params in (
            ("Appointment", {"patient": stranger_patient}),
            ("Patient", {"_id": stranger_patient}),
            ("Practitioner", {"organization": other}),
            ("Organization", {"_id": other}),
        ):
            assert ids(valid(await fhir_get(client, f"/{kind}", token, **params))) == set(), kind

    # Documents: a manager reads none (as in the API); the regional system reads those
    # attached to its centre's consultations.
    document = scene["document"]["id"]
    assert ids(valid(await fhir_get(client, "/DocumentReference", readers["manager"]))) == set()
    await outcome(client, f"/DocumentReference/{document}", readers["manager"], 404, "not_found")
    assert ids(valid(await fhir_get(client, "/DocumentReference", readers["system"]))) == {document}

    # A system client of the other centre: this centre's resources do not exist for it.
    elsewhere = str((await staff(client, Role.SYSTEM, centre_id=other))["token"])
    assert ids(valid(await fhir_get(client, "/Appointment", elsewhere))) == {
        scene["other_request"]["id"]
    }
    assert ids(valid(await fhir_get(client, "/Patient", elsewhere))) == {stranger_patient}
    for kind, resource_id in (
        ("ServiceRequest", scene["referral_id"]),
        ("Composition", next(iter(compositions))),
        ("DocumentReference", document),
        ("Patient", patient),
        ("Organization", centre),
    ):
        await outcome(client, f"/{kind}/{resource_id}", elsewhere, 404, "not_found")
    assert ids(valid(await fhir_get(client, "/Composition", elsewhere))) == set()

    # The manager of the whole service sees both centres.
    assert scene["other_request"]["id"] in ids(
        valid(await fhir_get(client, "/Appointment", world["manager"]))
    )
    assert ids(valid(await fhir_get(client, "/Organization", world["manager"]))) == {
        centre,
        other,
    }


async def test_a_system_clients_reads_and_downloads_are_audited_in_its_name(
    client: AppClient, scene: Scene
) -> None:
    world = scene["world"]
    system = await staff(client, Role.SYSTEM, centre_id=world["centre"]["id"])
    token, system_id = str(system["token"]), uuid.UUID(system["user"]["id"])
    document = scene["document"]["id"]
    before = len(await audit_rows(client))

    valid(await fhir_get(client, "/Appointment", token, patient=world["patient"]["user"]["id"]))
    read = valid(await fhir_get(client, f"/DocumentReference/{document}", token))
    response = await client.get(
        URL(read["content"][0]["attachment"]["url"]).path_qs, headers=bearer(token)
    )
    assert response.status == 200
    assert await response.read() == samples.pdf()
    rows = (await audit_rows(client))[before:]
    assert {(r.action, str(r.object_id)) for r in rows} == {
        ("consultation.viewed", scene["request"]["id"]),
        ("consultation.viewed", scene["duty"]["id"]),
        ("document.viewed", document),
        ("document.downloaded", document),
    }
    assert all(r.actor_id == system_id for r in rows)
    assert all(r.subject_id == uuid.UUID(world["patient"]["user"]["id"]) for r in rows)


async def test_reads_are_audited_and_the_content_url_is_the_audited_download(
    client: AppClient, scene: Scene
) -> None:
    world = scene["world"]
    patient_id = uuid.UUID(world["patient"]["user"]["id"])
    before = len(await audit_rows(client))

    # The patient's reads of their own data leave no trail.
    valid(await fhir_get(client, "/Appointment", world["patient"]["token"]))
    valid(await fhir_get(client, f"/Patient/{patient_id}", world["patient"]["token"]))
    assert len(await audit_rows(client)) == before

    valid(await fhir_get(client, "/Appointment", world["manager"], patient=str(patient_id)))
    valid(await fhir_get(client, f"/Patient/{patient_id}", world["manager"]))
    rows = (await audit_rows(client))[before:]
    manager_id = rows[0].actor_id
    assert {(r.action, r.object_id) for r in rows} == {
        ("consultation.viewed", scene["request"]["id"]),
        ("consultation.viewed", scene["duty"]["id"]),
        ("patient.viewed", str(patient_id)),
    }
    assert all(r.subject_id == patient_id and r.actor_id == manager_id for r in rows)
    assert all(r.details["via"] == "fhir" for r in rows)
    assert {r.details["interaction"] for r in rows} == {"search", "read"}

    # The doctor follows the DocumentReference to the file: the API's own download.
    doctor = world["doctor"]["token"]
    before = len(await audit_rows(client))
    read = await fhir_get(client, f"/DocumentReference/{scene['document']['id']}", doctor)
    url = URL(read["content"][0]["attachment"]["url"])
    assert url.origin() == client.make_url("/").origin()
    response = await client.get(url.path_qs, headers=bearer(doctor))
    assert response.status == 200
    assert await response.read() == samples.pdf()
    rows = (await audit_rows(client))[before:]
    assert [(r.action, r.object_id) for r in rows] == [
        ("document.viewed", scene["document"]["id"]),
        ("document.downloaded", scene["document"]["id"]),
    ]


async def test_errors_are_operation_outcomes_and_change_nothing(
    client: AppClient, scene: Scene
) -> None:
    manager = scene["world"]["manager"]
    before = len(await audit_rows(client))

    issue = await outcome(client, "/Appointment", manager, 400, "invalid_input", subject="x")
    assert issue["diagnostics"] == (
        "parameter=subject; supported=_count, _format, _id, _offset, _total, date, patient, status"
    )
    assert issue["code"] == "invalid"
    await outcome(client, "/Appointment", manager, 400, "invalid_input", date="yesterday")
    await outcome(client, "/Appointment", manager, 400, "invalid_input", date="sa2026-01-01")
    await outcome(client, "/Appointment", manager, 400, "invalid_input", date="2026-13-01")
    await outcome(client, "/Appointment", manager, 400, "invalid_input", status="done")
    await outcome(client, "/Appointment", manager, 400, "invalid_input", _count="1000")
    await outcome(client, "/Appointment", manager, 400, "invalid_input", _sort="date")
    await outcome(client, "/Patient", manager, 400, "invalid_input", **{"name:exact": "x"})
    repeated = "/fhir/R4/Patient?_id=a&_id=b"
    response = await client.get(repeated, headers=bearer(manager))
    assert response.status == 400
    await outcome(client, "/Appointment/not-a-uuid", manager, 404, "not_found")
    await outcome(client, f"/Appointment/{uuid.uuid4()}", manager, 404, "not_found")
    # The referral's consultation is a ServiceRequest; a duty consultation is not.
    await outcome(client, f"/ServiceRequest/{scene['duty']['id']}", manager, 404, "not_found")
    await outcome(client, "/Observation", manager, 404, "not_found")

    response = await client.get("/fhir/R4/Patient")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await outcome(client, "/Patient", None, 401, "unauthenticated")
    await outcome(client, "/Patient", "not-a-token", 401, "unauthenticated")
    issue = await outcome(client, "/Patient", scene["join_token"], 403, "forbidden")
    assert issue["code"] == "forbidden"

    response = await client.post("/fhir/R4/Patient", json={}, headers=bearer(manager))
    assert response.status == 405
    assert response.headers["Allow"] == "GET"
    body = valid(await response.json(content_type=None))
    assert body["issue"][0]["details"]["coding"][0]["code"] == "method_not_allowed"

    assert len(await audit_rows(client)) == before


async def test_a_search_is_rate_limited_with_an_operation_outcome(
    client: AppClient, scene: Scene
) -> None:
    assert client.app is not None
    limiter = client.app[keys.LIMITER]
    manager = scene["world"]["manager"]
    limit = client.app[keys.SETTINGS].limits["fhir.user"]
    me = await ok(client, "GET", "/me", manager)
    for _ in range(limit.count):
        await limiter.hit("fhir.user", f"user:{me['id']}")
    issue = await outcome(client, "/Organization", manager, 429, "rate_limited")
    assert issue["code"] == "throttled"


async def test_the_document_list_rule_agrees_with_get_document(
    client: AppClient, scene: Scene
) -> None:
    """``documents.service.readable`` (searches) and ``get_document`` (reads) are one
    rule: for every caller and document they give the same answer."""
    world = scene["world"]
    loose = await upload(client, world["patient"]["token"], name="Не приложен.pdf")
    others = await upload(client, world["other"]["token"], name="Чужой.pdf")
    assert client.app is not None
    app = client.app
    documents = [scene["document"]["id"], loose["id"], others["id"]]
    callers = {
        "patient": world["patient"]["user"]["id"],
        "other": world["other"]["user"]["id"],
        "doctor": world["doctor"]["user_id"],
        "duty": world["duty"]["user_id"],
        "stranger": world["stranger"]["user_id"],
    }
    expected = {
        "patient": {scene["document"]["id"], loose["id"]},
        "other": {others["id"]},
        "doctor": {scene["document"]["id"]},  # attached to the request to their centre
        "duty": {scene["document"]["id"]},  # a doctor of that centre too
        "stranger": set(),
    }
    for who, user_id in callers.items():
        async with db.transaction(app[keys.SESSION_FACTORY]) as session:
            actor = await session.get(User, uuid.UUID(user_id))
            assert actor is not None
            days = app[keys.SETTINGS].doctor_document_access_days
            now = app[keys.CLOCK].now()
            condition = await document_service.readable(
                session, actor=actor, now=now, doctor_access_days=days
            )
            listed = {
                str(found)
                for found in (await session.exec(select(Document.id).where(condition))).all()
            }
            readable = set()
            for document_id in documents:
                try:
                    await document_service.get_document(
                        session,
                        actor=actor,
                        document_id=uuid.UUID(document_id),
                        now=now,
                        doctor_access_days=days,
                    )
                    readable.add(document_id)
                except NotFound:
                    pass
            await session.rollback()  # the reads' audit rows: not the point here
        assert listed == readable == expected[who], who


def consultation_in(state: State, route: Route) -> Consultation:
    """A consultation as stored in ``state`` (not saved: the mapping is pure)."""
    now = datetime(2026, 5, 4, 7, 30, tzinfo=UTC)
    scheduled = state is not State.REQUESTED and not (
        state in (State.CANCELLED, State.DECLINED) and route is not Route.DUTY
    )
    return Consultation(
        id=uuid.uuid4(),
        route=route,
        state=state,
        patient_id=uuid.uuid4(),
        centre_id=uuid.uuid4(),
        doctor_id=uuid.uuid4() if scheduled else None,
        full_name="Петрова Мария Ивановна",
        diagnosis="" if route is Route.DUTY else "ИБС",
        icd10="I25.1" if route is Route.REFERRAL else None,
        topic=DutyTopic.CARDIOVASCULAR if route is Route.DUTY else None,
        starts_at=now + timedelta(days=1) if scheduled else None,
        duration_min=30 if scheduled else None,
        submitted_at=now,
        reason="Пациент передумал" if state in (State.CANCELLED, State.DECLINED) else "",
        referring_doctor="Мельников А. С." if route is Route.REFERRAL else "",
        version=3,
        updated_at=now,
    )


@pytest.mark.parametrize("route", list(Route))
@pytest.mark.parametrize("state", list(State))
def test_every_state_and_route_maps_to_valid_resources(state: State, route: Route) -> None:
    consultation = consultation_in(state, route)
    names = Names(people={}, centres={consultation.centre_id: "Кардиоцентр"}, doctor_users={})
    appointment = valid(resources.appointment(consultation, names))
    assert appointment["status"] == APPOINTMENT_STATUS[state]
    assert appointment["extension"][0]["valueCode"] == state.value
    assert appointment["meta"]["versionId"] == "3"
    # Only a proposed or cancelled appointment may lack its time (FHIR's app-3).
    if "start" not in appointment:
        assert appointment["status"] in ("proposed", "cancelled")
    else:
        assert appointment["minutesDuration"] == 30
    if state in (State.CANCELLED, State.DECLINED):
        assert appointment["cancelationReason"] == {"text": "Пациент передумал"}
    request = valid(resources.service_request(consultation, names))
    assert request["status"] == SERVICE_REQUEST_STATUS[state]
    assert request["intent"] == "order"


def test_date_parameters_are_ranges_in_the_callers_zone() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    day = date_range("2026-05-04", zone=moscow)
    assert (day.prefix, day.start.isoformat(), day.end.isoformat()) == (
        "eq",
        "2026-05-04T00:00:00+03:00",
        "2026-05-05T00:00:00+03:00",
    )
    december = date_range("ge2026-12", zone=moscow)
    assert (december.start.month, december.end.year, december.end.month) == (12, 2027, 1)
    year = date_range("lt2026", zone=moscow)
    assert (year.start.year, year.end.year) == (2026, 2027)
    moment = date_range("gt2026-05-04T10:30:00Z", zone=moscow)
    assert moment.start == datetime(2026, 5, 4, 10, 30, tzinfo=UTC)
    assert moment.end - moment.start == timedelta(seconds=1)
    for bad in ("2026-02-30", "2026-05-04T10:30", "ap2026", "04.05.2026", "", "eq"):
        with pytest.raises(InvalidInput):
            date_range(bad, zone=moscow)


def test_unknown_or_repeated_parameters_are_refused() -> None:
    zone = ZoneInfo("UTC")
    query = read_query("Appointment", [("patient", "Patient/x"), ("_count", "5")], zone=zone)
    assert (query.patient, query.count) == ([], 5)  # an id that is not ours names nothing
    for items in (
        [("subject", "x")],
        [("patient:missing", "true")],
        [("_count", "-1")],
        [("_count", "101")],
        [("_offset", "x")],
        [("patient", "a"), ("patient", "b")],
        [("status", "booked,nonsense")],
        [("_format", "xml")],
    ):
        with pytest.raises(InvalidInput):
            read_query("Appointment", items, zone=zone)
    with pytest.raises(InvalidInput):
        read_query("Patient", [("_id", "a"), ("identifier", "b")], zone=zone)


def test_narratives_escape_what_they_show() -> None:
    div = narrative("<script>alert(1)</script>\nстрока & ещё")["div"]
    assert div == (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        "&lt;script&gt;alert(1)&lt;/script&gt;<br/>строка &amp; ещё</div>"
    )


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """INFO logs captured from before the server's first connection (a connection
    decides once whether it writes the access log)."""
    caplog.set_level(logging.INFO)
    return caplog


async def test_fhir_logs_carry_no_patient_data(
    info_logs: pytest.LogCaptureFixture, client: AppClient, scene: Scene
) -> None:
    caplog = info_logs
    world = scene["world"]
    phone = world["patient"]["user"]["phone"]
    found = await fhir_get(client, "/Patient", world["manager"], phone=phone)
    assert found["total"] == 1
    await fhir_get(client, "/Patient", world["manager"], 400, phone=phone, name="Петрова")
    assert any(r.name == "aiohttp.access" for r in caplog.records)
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (phone, phone[2:], "Петрова", world["manager"]):
        assert secret not in text
