"""Steps of the consultation routes, made through the HTTP API as a client would."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from telemed.accounts.models import Role
from telemed.clock import FakeClock
from tests import samples
from tests.conftest import AppClient
from tests.documents_form import document_form
from tests.factories import PASSWORD, bearer, next_phone, register, staff
from tests.world import Account, DoctorAccount

NEW_PASSWORD = "Doctor-Own-2027"


async def api(
    client: AppClient,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """Call ``/api/v1<path>``; returns (status, JSON or None)."""
    headers = bearer(token) if token else {}
    response = await client.request(method, "/api/v1" + path, json=body, headers=headers, **kwargs)
    if response.content_type == "application/json":
        return response.status, await response.json()
    await response.read()
    return response.status, None


async def ok(
    client: AppClient,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    status: int = 200,
    **kwargs: Any,
) -> Any:
    got, data = await api(client, method, path, token, body, **kwargs)
    assert got == status, (method, path, got, data)
    return data


async def manager_token(client: AppClient) -> str:
    return str((await staff(client, Role.MANAGER))["token"])


async def make_centre(
    client: AppClient, manager: str, name: str = "Кардиоцентр", profiles: list[str] | None = None
) -> dict[str, Any]:
    body = {"name": name, "region": "Свердловская область", "profiles": profiles or ["кардиология"]}
    return dict(await ok(client, "POST", "/centres", manager, body, status=201))


async def make_doctor(
    client: AppClient,
    manager: str,
    centre_id: str,
    *,
    duty: bool = False,
    name: str = "Соколова Анна Викторовна",
) -> DoctorAccount:
    """A doctor created by the manager, signed in, with the first password changed.
    Returns the doctor's directory entry plus ``token`` and ``phone``."""
    phone = next_phone()
    body = {
        "full_name": name,
        "phone": phone,
        "password": PASSWORD,
        "centre_id": centre_id,
        "specialty": "кардиолог",
        "is_duty": duty,
    }
    doctor = dict(await ok(client, "POST", "/doctors", manager, body, status=201))
    signed = await ok(client, "POST", "/auth/login", None, {"login": phone, "password": PASSWORD})
    await ok(
        client,
        "POST",
        "/auth/password",
        signed["token"],
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        status=204,
    )
    client.session.cookie_jar.clear()
    doctor.update(token=signed["token"], phone=phone)
    return cast(DoctorAccount, doctor)


async def make_patient(client: AppClient, **fields: Any) -> Account:
    return await register(client, **fields)


async def upload(
    client: AppClient,
    token: str,
    content: bytes | None = None,
    name: str = "Выписка.pdf",
    kind: str = "discharge_summary",
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/documents",
        data=document_form(content or samples.pdf(), name, kind=kind),
        headers=bearer(token),
    )
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def request_to_centre(
    client: AppClient,
    patient: Account,
    centre_id: str,
    *,
    diagnosis: str = "Мигрень",
    complaints: str = "Головные боли",
    age: int = 46,
) -> dict[str, Any]:
    """A patient's route 1 request to a centre, through the API."""
    body = {
        "route": "initiative",
        "centre_id": centre_id,
        "full_name": patient["user"]["full_name"],
        "age": age,
        "diagnosis": diagnosis,
        "complaints": complaints,
    }
    return dict(await ok(client, "POST", "/consultations", patient["token"], body, status=201))


def iso(moment: datetime) -> str:
    return moment.isoformat()


def later(clock: FakeClock, **delta: float) -> datetime:
    """A round time after the clock's now (whole minutes)."""
    moment = clock.now() + timedelta(**delta)
    return moment.replace(second=0, microsecond=0)


async def book_slot(
    client: AppClient,
    duty: DoctorAccount,
    patient: Account,
    starts: datetime,
    *,
    topic: str = "other",
    minutes: int = 30,
) -> dict[str, Any]:
    """The duty doctor publishes one slot at ``starts``; the patient books it."""
    slots = await ok(
        client,
        "POST",
        "/slots",
        duty["token"],
        {
            "starts_at": iso(starts),
            "ends_at": iso(starts + timedelta(minutes=minutes)),
            "slot_minutes": minutes,
        },
        status=201,
    )
    booked = await ok(
        client,
        "POST",
        "/consultations",
        patient["token"],
        {"route": "duty", "slot_id": slots["items"][0]["id"], "topic": topic},
        status=201,
    )
    return dict(booked)
