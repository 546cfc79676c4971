"""The directory over HTTP: public reading, the manager's CRUD of centres and doctors,
refusals that change nothing, and duty slots."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from telemed import db, keys
from telemed.accounts.models import Role
from telemed.clock import FakeClock
from telemed.demo import demo_password_hashes, load_demo
from tests.conftest import AppClient
from tests.factories import PASSWORD, assert_error, bearer, next_phone, register, staff

API = "/api/v1"
CENTRE_FIELDS = {"id", "name", "region", "profiles", "description"}
DOCTOR_FIELDS = {
    "id",
    "user_id",
    "full_name",
    "centre_id",
    "centre_name",
    "specialty",
    "is_duty",
    "bio",
    "topics",  # the duty topics of the specialty (scheduling/topics.py)
}
SLOT_FIELDS = {"id", "doctor_id", "starts_at", "ends_at", "status"}
MOSCOW = ZoneInfo("Europe/Moscow")
GOOD_CENTRE: dict[str, Any] = {"name": "Ц", "region": "Р", "profiles": ["терапия"]}


def anonymous(client: AppClient) -> None:
    """Forget the session cookie that the last sign-in left in the client."""
    client.session.cookie_jar.clear()


async def call(
    client: AppClient,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    **params: str,
) -> Any:
    """One API request; query values go through ``params=`` so that "+" is URL-encoded."""
    headers = bearer(token) if token else {}
    return await client.request(method, API + path, json=body, headers=headers, params=params)


async def ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def get(client: AppClient, path: str, **params: str) -> Any:
    return await ok(await call(client, "GET", path, **params))


async def manager_token(client: AppClient) -> str:
    token: str = (await staff(client, Role.MANAGER))["token"]
    return token


async def new_centre(client: AppClient, token: str, **fields: Any) -> dict[str, Any]:
    body = {**GOOD_CENTRE, "name": "Центр кардиологии", **fields}
    result: dict[str, Any] = await ok(await call(client, "POST", "/centres", token, body), 201)
    return result


def doctor_body(centre_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "full_name": "Смирнов Олег Игоревич",
        "phone": next_phone(),
        "password": PASSWORD,
        "centre_id": centre_id,
        "specialty": "кардиолог",
        "is_duty": False,
        **fields,
    }


async def new_doctor(client: AppClient, token: str, centre: str, **fields: Any) -> dict[str, Any]:
    body = doctor_body(centre, **fields)
    result: dict[str, Any] = await ok(await call(client, "POST", "/doctors", token, body), 201)
    return {**result, "phone": body["phone"]}


def public(doctor: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doctor.items() if k != "phone"}


async def snapshot(client: AppClient) -> tuple[Any, Any]:
    """Everything the public directory shows."""
    return await get(client, "/centres"), await get(client, "/doctors")


async def login(client: AppClient, phone: str, password: str = PASSWORD) -> Any:
    return await call(client, "POST", "/auth/login", body={"login": phone, "password": password})


async def test_anyone_reads_the_directory(client: AppClient) -> None:
    token = await manager_token(client)
    heart = await new_centre(client, token, description="Кардиология и ритм")
    family = await new_centre(client, token, name="Центр семьи", profiles=["гинекология"])
    duty = await new_doctor(client, token, heart["id"], is_duty=True, bio="Стаж 10 лет")
    plain = await new_doctor(client, token, heart["id"], full_name="Алексеев Иван")
    other = await new_doctor(client, token, family["id"], is_duty=True, full_name="Белова Анна")
    anonymous(client)

    centres = (await get(client, "/centres"))["items"]
    assert {c["id"] for c in centres} == {heart["id"], family["id"]}
    assert all(set(c) == CENTRE_FIELDS for c in centres)
    assert await get(client, f"/centres/{heart['id']}") == heart
    assert heart["description"] == "Кардиология и ритм"

    doctors = (await get(client, "/doctors"))["items"]
    assert {d["id"] for d in doctors} == {duty["id"], plain["id"], other["id"]}
    assert all(set(d) == DOCTOR_FIELDS for d in doctors)
    for params, expected in (
        ({"centre_id": heart["id"], "duty": "true"}, [duty]),
        ({"duty": "false"}, [plain]),
        ({"centre_id": family["id"]}, [other]),
    ):
        found = (await get(client, "/doctors", **params))["items"]
        assert [d["id"] for d in found] == [d["id"] for d in expected], params

    doctor = await get(client, f"/doctors/{duty['id']}")
    assert doctor == public(duty)
    assert doctor["centre_name"] == heart["name"]
    assert doctor["bio"] == "Стаж 10 лет"
    assert await get(client, f"/doctors/{duty['id']}/slots") == {"items": []}

    for path in (
        f"/centres/{uuid.uuid4()}",
        "/centres/not-a-uuid",
        f"/doctors/{uuid.uuid4()}",
        "/doctors/42",
        f"/doctors/{uuid.uuid4()}/slots",
    ):
        await assert_error(await call(client, "GET", path), 404, "not_found")


async def test_manager_creates_patches_and_deletes_a_centre(client: AppClient) -> None:
    token = await manager_token(client)
    created = await new_centre(client, token, profiles=[" кардиология ", "Кардиология", "ритм"])
    assert set(created) == CENTRE_FIELDS
    assert created["profiles"] == ["кардиология", "ритм"]
    assert created["description"] == ""
    uuid.UUID(created["id"])

    path = f"/centres/{created['id']}"
    change: dict[str, Any] = {"name": "Кардиоцентр", "description": "Новое описание"}
    patched = await ok(await call(client, "PATCH", path, token, change))
    assert patched == {**created, **change}
    change = {"profiles": ["аритмология"], "region": "Пермский край"}
    patched = await ok(await call(client, "PATCH", path, token, change))
    assert patched == {**created, "name": "Кардиоцентр", "description": "Новое описание", **change}
    assert await get(client, path) == patched
    assert await ok(await call(client, "PATCH", path, token, {})) == patched

    other = await new_centre(client, token, name="Другой центр")
    assert (await call(client, "DELETE", path, token)).status == 204
    await assert_error(await call(client, "GET", path), 404, "not_found")
    centres, _ = await snapshot(client)
    assert [c["id"] for c in centres["items"]] == [other["id"]]
    await assert_error(await call(client, "PATCH", path, token, {"name": "X"}), 404, "not_found")
    await assert_error(await call(client, "DELETE", path, token), 404, "not_found")


async def test_an_admin_may_do_what_a_manager_may(client: AppClient) -> None:
    # Regression: the role once read back from the database as a plain str, and the
    # `role is Role.ADMIN` check in telemed/api.py refused admins with 403.
    admin = (await staff(client, Role.ADMIN))["token"]
    centre = await new_centre(client, admin, name="Центр администратора")
    doctor = await new_doctor(client, admin, centre["id"])
    assert doctor["centre_id"] == centre["id"]
    for path in (f"/doctors/{doctor['id']}", f"/centres/{centre['id']}"):
        assert (await call(client, "DELETE", path, admin)).status == 204
    assert await snapshot(client) == ({"items": []}, {"items": []})


async def test_manager_adds_a_doctor_who_must_change_the_password(client: AppClient) -> None:
    token = await manager_token(client)
    centre = await new_centre(client, token)
    doctor = await new_doctor(
        client, token, centre["id"], is_duty=True, bio="Аритмолог", phone="8 (912) 700-00-01"
    )
    assert public(doctor) == {
        "id": doctor["id"],
        "user_id": doctor["user_id"],
        "full_name": "Смирнов Олег Игоревич",
        "centre_id": centre["id"],
        "centre_name": centre["name"],
        "specialty": "кардиолог",
        "is_duty": True,
        "bio": "Аритмолог",
        "topics": ["cardiovascular", "healthy_lifestyle", "other"],
    }

    signed_in = await ok(await login(client, "+79127000001"))
    assert signed_in["user"]["role"] == "doctor"
    assert signed_in["user"]["id"] == doctor["user_id"]
    assert signed_in["user"]["must_change_password"] is True
    doctor_token = signed_in["token"]
    await assert_error(
        await call(client, "GET", "/documents", doctor_token), 403, "password_change_required"
    )

    change = {"current_password": PASSWORD, "new_password": "Fresh-Doctor-77"}
    changed = await call(client, "POST", "/auth/password", doctor_token, change)
    assert changed.status == 204, await changed.text()
    assert (await call(client, "GET", "/documents", doctor_token)).status == 200
    me = await ok(await call(client, "GET", "/me", doctor_token))
    assert me["must_change_password"] is False
    assert (await login(client, "+79127000001", "Fresh-Doctor-77")).status == 200


async def test_manager_patches_a_doctor(client: AppClient) -> None:
    token = await manager_token(client)
    first = await new_centre(client, token)
    second = await new_centre(client, token, name="Второй центр")
    doctor = await new_doctor(client, token, first["id"])
    path = f"/doctors/{doctor['id']}"

    change = {"specialty": "терапевт", "is_duty": True, "bio": "Новый текст"}
    patched = await ok(
        await call(
            client,
            "PATCH",
            path,
            token,
            {
                **change,
                "full_name": "  Смирнов   Олег  ",
                "centre_id": second["id"],
            },
        )
    )
    assert patched == {
        **public(doctor),
        **change,
        "full_name": "Смирнов Олег",
        "centre_id": second["id"],
        "centre_name": second["name"],
    }
    assert await get(client, path) == patched
    in_second = await get(client, "/doctors", centre_id=second["id"])
    assert [d["id"] for d in in_second["items"]] == [doctor["id"]]
    assert await get(client, "/doctors", centre_id=first["id"]) == {"items": []}
    back = await ok(await call(client, "PATCH", path, token, {"is_duty": False}))
    assert back == {**patched, "is_duty": False}


async def test_deleting_a_doctor_closes_the_account(client: AppClient) -> None:
    token = await manager_token(client)
    centre = await new_centre(client, token)
    doctor = await new_doctor(client, token, centre["id"], is_duty=True)
    kept = await new_doctor(client, token, centre["id"], full_name="Оставшийся Врач")
    doctor_token = (await ok(await login(client, doctor["phone"])))["token"]
    path = f"/doctors/{doctor['id']}"

    assert (await call(client, "DELETE", path, token)).status == 204
    anonymous(client)
    await assert_error(await call(client, "GET", path), 404, "not_found")
    await assert_error(await call(client, "GET", path + "/slots"), 404, "not_found")
    _, doctors = await snapshot(client)
    assert [d["id"] for d in doctors["items"]] == [kept["id"]]
    await assert_error(await call(client, "GET", "/me", doctor_token), 401, "unauthenticated")
    await assert_error(await login(client, doctor["phone"]), 401, "invalid_credentials")
    await assert_error(await call(client, "DELETE", path, token), 404, "not_found")
    await assert_error(await call(client, "PATCH", path, token, {"bio": "x"}), 404, "not_found")


async def test_patients_and_strangers_change_nothing(client: AppClient) -> None:
    token = await manager_token(client)
    centre = await new_centre(client, token)
    doctor = await new_doctor(client, token, centre["id"])
    patient = (await register(client))["token"]
    anonymous(client)
    before = await snapshot(client)

    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/centres", {**GOOD_CENTRE, "name": "Чужой"}),
        ("PATCH", f"/centres/{centre['id']}", {"name": "Захвачен"}),
        ("DELETE", f"/centres/{centre['id']}", None),
        ("POST", "/doctors", doctor_body(centre["id"])),
        ("PATCH", f"/doctors/{doctor['id']}", {"bio": "Захвачен"}),
        ("DELETE", f"/doctors/{doctor['id']}", None),
    ]
    for method, path, body in calls:
        await assert_error(await call(client, method, path, patient, body), 403, "forbidden")
        for stranger in (None, "stale-token"):
            await assert_error(
                await call(client, method, path, stranger, body), 401, "unauthenticated"
            )
        assert await snapshot(client) == before, (method, path)


async def test_bad_centre_input_is_refused_and_changes_nothing(client: AppClient) -> None:
    token = await manager_token(client)
    centre = await new_centre(client, token)
    before = await snapshot(client)

    bodies: list[dict[str, Any]] = [
        *({k: v for k, v in GOOD_CENTRE.items() if k != missing} for missing in GOOD_CENTRE),
        {**GOOD_CENTRE, "name": 5},
        {**GOOD_CENTRE, "profiles": "терапия"},
        {**GOOD_CENTRE, "profiles": [1, 2]},
        {**GOOD_CENTRE, "profiles": []},
        {**GOOD_CENTRE, "name": "   "},
        {**GOOD_CENTRE, "description": ["x"]},
        {**GOOD_CENTRE, "owner": "me"},
        {**GOOD_CENTRE, "name": "Ц" * 201},
    ]
    for body in bodies:
        response = await call(client, "POST", "/centres", token, body)
        assert (await assert_error(response, 400, "invalid_input"))["details"]["fields"], body
    path = f"/centres/{centre['id']}"
    patches: list[Any] = [
        {"name": ""},
        {"profiles": []},
        {"profiles": "терапия"},
        {"region": 7},
        {"archived_at": "2020-01-01T00:00:00Z"},
        ["name"],
    ]
    for patch in patches:
        await assert_error(await call(client, "PATCH", path, token, patch), 400, "invalid_input")
    for data, content_type in (
        ("name=Ц", "application/x-www-form-urlencoded"),
        ("{", "application/json"),
    ):
        response = await client.post(
            f"{API}/centres", data=data, headers={**bearer(token), "Content-Type": content_type}
        )
        await assert_error(response, 400, "invalid_input")
    for path in ("/centres/not-a-uuid", f"/centres/{uuid.uuid4()}"):
        await assert_error(
            await call(client, "PATCH", path, token, {"name": "Н"}), 404, "not_found"
        )
        await assert_error(await call(client, "DELETE", path, token), 404, "not_found")
    assert await snapshot(client) == before


async def test_blank_profiles_are_refused(client: AppClient) -> None:
    token = await manager_token(client)
    centre = await new_centre(client, token)
    before = await snapshot(client)
    response = await call(client, "POST", "/centres", token, {**GOOD_CENTRE, "profiles": [" "]})
    await assert_error(response, 400, "invalid_input")
    response = await call(client, "PATCH", f"/centres/{centre['id']}", token, {"profiles": [""]})
    await assert_error(response, 400, "invalid_input")
    assert await snapshot(client) == before


async def test_bad_doctor_input_is_refused_and_changes_nothing(client: AppClient) -> None:
    token = await manager_token(client)
    centre = await new_centre(client, token)
    gone = await new_centre(client, token, name="Закрытый")
    assert (await call(client, "DELETE", f"/centres/{gone['id']}", token)).status == 204
    doctor = await new_doctor(client, token, centre["id"], phone="+79127000002")
    before = await snapshot(client)

    good = doctor_body(centre["id"])
    invalid: list[dict[str, Any]] = [
        *(
            {k: v for k, v in good.items() if k != missing}
            for missing in ("full_name", "phone", "password", "centre_id", "specialty")
        ),
        {**good, "is_duty": "maybe"},
        {**good, "centre_id": "abc"},
        {**good, "centre_id": 5},
        {**good, "full_name": None},
        {**good, "phone": 79120000000},
        {**good, "role": "admin"},
        {**good, "must_change_password": False},
        {**good, "specialty": ""},
    ]
    for body in invalid:
        await assert_error(
            await call(client, "POST", "/doctors", token, body), 400, "invalid_input"
        )
    refused: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "phone": "12"}, 422, "invalid_phone"),
        ({**good, "password": "short1"}, 422, "weak_password"),
        ({**good, "password": "onlyletters"}, 422, "weak_password"),
        ({**good, "password": "Smirnov-Oleg-" + good["phone"][-7:]}, 422, "weak_password"),
        ({**good, "phone": "8 912 700-00-02"}, 409, "phone_taken"),
        ({**good, "centre_id": str(uuid.uuid4())}, 404, "not_found"),
        ({**good, "centre_id": gone["id"]}, 404, "not_found"),
    ]
    for body, status, code in refused:
        await assert_error(await call(client, "POST", "/doctors", token, body), status, code)

    path = f"/doctors/{doctor['id']}"
    for patch in (
        {"is_duty": "maybe"},
        {"full_name": "  "},
        {"phone": "+79127000003"},
        {"password": PASSWORD},
        {"centre_id": "abc"},
        {"specialty": ""},
    ):
        await assert_error(await call(client, "PATCH", path, token, patch), 400, "invalid_input")
    for centre_id in (str(uuid.uuid4()), gone["id"]):
        await assert_error(
            await call(client, "PATCH", path, token, {"centre_id": centre_id}), 404, "not_found"
        )
    for path in ("/doctors/not-a-uuid", f"/doctors/{uuid.uuid4()}"):
        await assert_error(await call(client, "PATCH", path, token, {"bio": "x"}), 404, "not_found")
        await assert_error(await call(client, "DELETE", path, token), 404, "not_found")

    assert await snapshot(client) == before
    for body, _, _ in refused[:4]:  # no account was made either
        await assert_error(
            await login(client, body["phone"], body["password"]), 401, "invalid_credentials"
        )


async def test_a_centre_with_doctors_cannot_be_deleted(client: AppClient) -> None:
    token = await manager_token(client)
    centre = await new_centre(client, token)
    other = await new_centre(client, token, name="Соседний центр")
    moved = await new_doctor(client, token, centre["id"])
    removed = await new_doctor(client, token, centre["id"], full_name="Уходящий Врач")
    path = f"/centres/{centre['id']}"

    await assert_error(await call(client, "DELETE", path, token), 409, "centre_has_doctors")
    assert await get(client, path) == centre
    await ok(
        await call(client, "PATCH", f"/doctors/{moved['id']}", token, {"centre_id": other["id"]})
    )
    await assert_error(await call(client, "DELETE", path, token), 409, "centre_has_doctors")
    assert (await call(client, "DELETE", f"/doctors/{removed['id']}", token)).status == 204

    assert (await call(client, "DELETE", path, token)).status == 204
    centres, doctors = await snapshot(client)
    assert [c["id"] for c in centres["items"]] == [other["id"]]
    assert [d["id"] for d in doctors["items"]] == [moved["id"]]
    await assert_error(await call(client, "GET", path), 404, "not_found")


def check_slot(slot: dict[str, Any], doctor_id: str, start: datetime, end: datetime) -> None:
    assert set(slot) == SLOT_FIELDS
    assert slot["doctor_id"] == doctor_id
    assert slot["status"] == "free"
    starts_at = datetime.fromisoformat(slot["starts_at"])
    ends_at = datetime.fromisoformat(slot["ends_at"])
    assert starts_at.utcoffset() is not None, slot
    assert ends_at.utcoffset() is not None, slot
    assert start <= starts_at < end
    assert starts_at < ends_at


async def test_demo_duty_doctors_have_free_slots(
    client: AppClient, app: web.Application, clock: FakeClock
) -> None:
    hashes = await demo_password_hashes(app[keys.PASSWORDS])
    async with db.transaction(app[keys.SESSION_FACTORY]) as session:
        await load_demo(session, password_hashes=hashes, now=clock.now())
    now = clock.now()
    duty = (await get(client, "/doctors", duty="true"))["items"]
    assert len(duty) == 2
    assert all(d["is_duty"] for d in duty)
    for doctor in duty:
        slots = (await get(client, f"/doctors/{doctor['id']}/slots"))["items"]
        assert slots, doctor
        for slot in slots:
            check_slot(slot, doctor["id"], now, now + timedelta(days=7))
        assert [s["starts_at"] for s in slots] == sorted(s["starts_at"] for s in slots)

        # Bounds with a "+03:00" offset; any 72 hours hold a weekday morning.
        start = (now + timedelta(days=1)).astimezone(MOSCOW)
        end = start + timedelta(days=3)
        window = (
            await get(
                client,
                f"/doctors/{doctor['id']}/slots",
                **{"from": start.isoformat(), "to": end.isoformat()},
            )
        )["items"]
        assert window, (start, end)
        for slot in window:
            check_slot(slot, doctor["id"], start, end)
        assert window == [s for s in slots if start <= datetime.fromisoformat(s["starts_at"]) < end]

    plain = (await get(client, "/doctors", duty="false"))["items"]
    assert len(plain) == 2
    assert await get(client, f"/doctors/{plain[0]['id']}/slots") == {"items": []}

    path = f"/doctors/{duty[0]['id']}/slots"
    start = now.astimezone(MOSCOW)
    later = (start + timedelta(days=1)).isoformat()
    for params in ({"from": later, "to": start.isoformat()}, {"from": later, "to": later}):
        await assert_error(await call(client, "GET", path, **params), 422, "invalid_value")
    for params in (
        {"from": start.replace(tzinfo=None).isoformat()},
        {"to": (start + timedelta(days=1)).replace(tzinfo=None).isoformat()},
        {"from": "tomorrow"},
        {"since": later},
    ):
        await assert_error(await call(client, "GET", path, **params), 400, "invalid_input")
    for params in ({"duty": "maybe"}, {"centre_id": "x"}, {"name": "x"}):
        await assert_error(await call(client, "GET", "/doctors", **params), 400, "invalid_input")
    await assert_error(await call(client, "GET", "/doctors/x/slots"), 404, "not_found")
