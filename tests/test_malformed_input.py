"""Input that used to end in a 500: each is a 400 with the error shape, changes nothing,
and leaves no traceback in the log. The contract is exact: what the OpenAPI document
does not allow is refused (a bare number for a time, ``0`` for ``false``)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from telemed.accounts.models import Role
from telemed.clock import FakeClock
from tests import samples
from tests.conftest import AppClient
from tests.factories import assert_error, bearer, register, staff
from tests.flows import ok, request_to_centre
from tests.world import World

BOUNDARY = "telemed-test-boundary"


def multipart(*parts: tuple[bytes, bytes], closed: bool = True) -> bytes:
    body = b""
    for headers, content in parts:
        body += b"--" + BOUNDARY.encode() + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    if closed:
        body += b"--" + BOUNDARY.encode() + b"--\r\n"
    return body


def field(name: str, value: bytes, *extra: bytes) -> tuple[bytes, bytes]:
    headers = b'Content-Disposition: form-data; name="' + name.encode() + b'"'
    for line in extra:
        headers += b"\r\n" + line
    return headers, value


FILE = (
    b'Content-Disposition: form-data; name="file"; filename="scan.pdf"\r\n'
    b"Content-Type: application/pdf",
    samples.pdf(),
)
MALFORMED_FORMS = {
    "control character in a part header": multipart(
        (b'Content-Disposition: form-data; name="title"\x01', b"t"), FILE
    ),
    "non-UTF-8 text field": multipart(field("kind", b"other"), field("title", b"\xff\xfe"), FILE),
    "unknown transfer encoding": multipart(
        field("title", b"t", b"Content-Transfer-Encoding: zzz"), FILE
    ),
    "base64 transfer encoding": multipart(
        field("title", b"dA==", b"Content-Transfer-Encoding: base64"), FILE
    ),
    "no closing boundary": multipart(field("kind", b"other"), closed=False),
    "nothing but garbage": b"\x00\x01\x02 not a form",
}


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR)
    return caplog


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_deeply_nested_json_is_400(
    client: AppClient, no_tracebacks: pytest.LogCaptureFixture
) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"login":' * 5000 + b"1" + b"}" * 5000):
        response = await client.post(
            "/api/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
        )
        await assert_error(response, 400, "invalid_input")
    assert_no_tracebacks(no_tracebacks)


@pytest.mark.parametrize("case", sorted(MALFORMED_FORMS))
async def test_malformed_multipart_is_400_and_stores_nothing(
    client: AppClient, no_tracebacks: pytest.LogCaptureFixture, case: str
) -> None:
    patient = await register(client)
    manager = await staff(client, Role.MANAGER)
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    for path, token in (
        ("/api/v1/documents", patient["token"]),
        ("/api/v1/referral-imports?dry_run=true", manager["token"]),
    ):
        response = await client.post(
            path,
            data=MALFORMED_FORMS[case],
            headers={**bearer(token), "Content-Type": content_type},
        )
        await assert_error(response, 400, "invalid_input")
    assert (await ok(client, "GET", "/documents", patient["token"]))["items"] == []
    assert (await ok(client, "GET", "/referral-imports", manager["token"]))["items"] == []
    assert_no_tracebacks(no_tracebacks)


async def test_multipart_without_a_boundary_is_400(
    client: AppClient, no_tracebacks: pytest.LogCaptureFixture
) -> None:
    patient = await register(client)
    manager = await staff(client, Role.MANAGER)
    for path, token in (
        ("/api/v1/documents", patient["token"]),
        ("/api/v1/referral-imports", manager["token"]),
    ):
        response = await client.post(
            path,
            data=b"--x\r\n\r\nabc",
            headers={**bearer(token), "Content-Type": "multipart/form-data"},
        )
        await assert_error(response, 400, "invalid_input")
    assert_no_tracebacks(no_tracebacks)


EXTREME_TIMES = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00", "1999-12-31T23:59:59Z"]


async def test_times_outside_the_service_range_are_400(
    client: AppClient,
    clock: FakeClock,
    world: World,
    no_tracebacks: pytest.LogCaptureFixture,
) -> None:
    manager, doctor = world["manager"], world["duty"]
    consultation = await _request(client, world)
    for moment in EXTREME_TIMES:
        for path, token in (
            (f"/api/v1/doctors/{doctor['id']}/slots?from={moment}", None),
            (f"/api/v1/doctors/{doctor['id']}/slots?to={moment}", None),
            (f"/api/v1/consultations?from={moment}", world["patient"]["token"]),
            (f"/api/v1/consultations?to={moment}", world["patient"]["token"]),
            (f"/api/v1/sla?from={moment}", manager),
            (f"/api/v1/sla?to={moment}", manager),
        ):
            response = await client.get(
                path.replace("+", "%2B"), headers=bearer(token) if token else {}
            )
            await assert_error(response, 400, "invalid_input")
        scheduled = await client.post(
            f"/api/v1/consultations/{consultation['id']}/schedule",
            json={"starts_at": moment},
            headers=bearer(doctor["token"]),
        )
        await assert_error(scheduled, 400, "invalid_input")
        slots = await client.post(
            "/api/v1/slots",
            json={"starts_at": moment, "ends_at": moment, "slot_minutes": 30},
            headers=bearer(doctor["token"]),
        )
        await assert_error(slots, 400, "invalid_input")
    # Within the range but beyond the booking horizon: a rule, 422, nothing stored.
    far = (clock.now() + timedelta(days=400)).isoformat()
    scheduled = await client.post(
        f"/api/v1/consultations/{consultation['id']}/schedule",
        json={"starts_at": far},
        headers=bearer(doctor["token"]),
    )
    await assert_error(scheduled, 422, "invalid_value")
    current = await ok(client, "GET", f"/consultations/{consultation['id']}", doctor["token"])
    assert current["state"] == "requested"
    assert_no_tracebacks(no_tracebacks)


async def test_a_duty_doctor_cannot_publish_slots_in_year_9999_or_past_the_horizon(
    client: AppClient, clock: FakeClock, world: World, no_tracebacks: pytest.LogCaptureFixture
) -> None:
    doctor = world["duty"]
    far = (clock.now() + timedelta(days=400)).replace(hour=10, minute=0, second=0, microsecond=0)
    for starts, status in (("9999-12-30T10:00:00+00:00", 400), (far.isoformat(), 422)):
        body = {"starts_at": starts, "ends_at": starts.replace("10:", "11:"), "slot_minutes": 30}
        response = await client.post("/api/v1/slots", json=body, headers=bearer(doctor["token"]))
        await assert_error(response, status, "invalid_input" if status == 400 else "invalid_value")
    until = (clock.now() + timedelta(days=60)).isoformat().replace("+", "%2B")
    slots = await ok(client, "GET", f"/doctors/{doctor['id']}/slots?to={until}")
    assert slots["items"] == []
    assert_no_tracebacks(no_tracebacks)


async def _request(client: AppClient, world: World) -> dict[str, Any]:
    """The world's patient's request to its centre."""
    return await request_to_centre(client, world["patient"], world["centre"]["id"])


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/consultations", "to=0.5"),
        ("/consultations", "from=1700000000"),
        ("/notifications", "unread=1"),
        ("/notifications", "unread=yes"),
    ],
)
async def test_query_values_must_be_what_the_schema_says(
    client: AppClient, path: str, query: str
) -> None:
    patient = await register(client)
    response = await client.get(f"/api/v1{path}?{query}", headers=bearer(patient["token"]))
    await assert_error(response, 400, "invalid_input")


async def test_json_values_must_have_the_schema_type(client: AppClient, world: World) -> None:
    body = {
        "full_name": "Строгий Тип",
        "phone": "+79005557788",
        "password": "Doctor-Pass-2026",
        "centre_id": world["centre"]["id"],
        "specialty": "кардиолог",
    }
    for wrong in ({"is_duty": 0}, {"is_duty": "false"}, {"centre_id": 5}):
        response = await client.post(
            "/api/v1/doctors", json={**body, **wrong}, headers=bearer(world["manager"])
        )
        await assert_error(response, 400, "invalid_input")
    # 5.0 is an integer in JSON; a string is not. (The far time is then refused by a
    # rule, 422: the schema let it through.)
    for duration, status in ((45.0, 422), ("45", 400)):
        response = await client.post(
            "/api/v1/slots",
            json={
                "starts_at": "2099-01-01T10:00:00Z",
                "ends_at": "2099-01-01T11:00:00Z",
                "slot_minutes": duration,
            },
            headers=bearer(world["duty"]["token"]),
        )
        assert response.status == status, (duration, await response.text())


async def test_the_openapi_document_names_every_answer(client: AppClient) -> None:
    document = await (await client.get("/api/v1/openapi.json")).json()
    paths = document["paths"]
    assert "401" in paths["/api/v1/auth/login"]["post"]["responses"]
    assert "429" in paths["/api/v1/auth/login"]["post"]["responses"]
    assert "404" in paths["/api/v1/doctors"]["post"]["responses"]
    assert "429" in paths["/api/v1/auth/register"]["post"]["responses"]
    assert "408" in paths["/api/v1/documents"]["post"]["responses"]
    register_body = document["components"]["schemas"]["RegisterIn"]["properties"]
    assert register_body["full_name"]["pattern"]  # not blank
    zones = document["components"]["schemas"]["ProfileUpdateIn"]["properties"]["time_zone"]
    assert "Europe/Moscow" in str(zones)
    form = paths["/api/v1/documents"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["additionalProperties"] is False
