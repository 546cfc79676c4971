"""The participation rule is written once (``scheduling.parties``): a list shows exactly
the consultations that one by one say the caller takes part in, for every kind of
caller: managers of the whole service and of one centre, and system clients too."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from telemed import db, keys
from telemed.accounts.models import Role, User
from telemed.clock import FakeClock
from telemed.scheduling.consultations import doctor_of, list_consultations, party_in
from telemed.scheduling.models import Consultation
from tests.conftest import AppClient
from tests.factories import staff
from tests.flows import (
    book_slot,
    later,
    make_centre,
    make_doctor,
    make_patient,
    manager_token,
    ok,
    request_to_centre,
)


async def test_lists_and_single_reads_agree_on_who_takes_part(
    client: AppClient, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    cardio = await make_centre(client, manager)
    gyn = await make_centre(client, manager, "Центр семьи", ["гинекология"])
    duty = await make_doctor(client, manager, cardio["id"], duty=True)
    colleague = await make_doctor(client, manager, cardio["id"], name="Ершов Пётр Алексеевич")
    elsewhere = await make_doctor(client, manager, gyn["id"], name="Белова Марина Сергеевна")
    patient = await make_patient(client)
    other = await make_patient(client)
    waiting = await request_to_centre(client, patient, cardio["id"])
    taken = await request_to_centre(client, other, cardio["id"])
    await ok(
        client,
        "POST",
        f"/consultations/{taken['id']}/schedule",
        colleague["token"],
        {"starts_at": later(clock, days=3).isoformat()},
    )
    await book_slot(client, duty, patient, later(clock, days=1))
    declined = await request_to_centre(client, other, gyn["id"])
    await ok(
        client,
        "POST",
        f"/consultations/{declined['id']}/decline",
        elsewhere["token"],
        {"reason": "Не наш профиль"},
    )
    await staff(client, Role.ADMIN)
    await staff(client, Role.MANAGER, centre_id=cardio["id"])
    await staff(client, Role.MANAGER, centre_id=gyn["id"])
    await staff(client, Role.SYSTEM, centre_id=cardio["id"])
    await staff(client, Role.SYSTEM, centre_id=gyn["id"])
    assert waiting["state"] == "requested"

    app = client.app
    assert app is not None
    async with db.transaction(app[keys.SESSION_FACTORY], write=False) as session:
        everything = list((await session.exec(select(Consultation))).all())
        users = list((await session.exec(select(User))).all())
        checked: dict[str, Any] = {}
        for user in users:
            doctor = await doctor_of(session, user)
            one_by_one = {c.id for c in everything if party_in(user, doctor, c) is not None}
            listed = {c.id for c in await list_consultations(session, actor=user)}
            assert listed == one_by_one, (user.role, user.full_name)
            kind = user.role.value + (" of a centre" if user.centre_id else "")
            checked.setdefault(kind, []).append(listed)
            if user.centre_id is not None:
                # Bound to a centre: exactly that centre's consultations.
                assert listed == {c.id for c in everything if c.centre_id == user.centre_id}
    # Every kind of caller was tried, and saw something; those bound to a centre, less
    # than the whole service.
    assert set(checked) == {
        "patient",
        "doctor",
        "manager",
        "admin",
        "manager of a centre",
        "system of a centre",
    }
    assert all(any(seen) for seen in checked.values())
    (service_wide,) = checked["manager"]
    assert service_wide == {c.id for c in everything}
    for kind in ("manager of a centre", "system of a centre"):
        first, second = checked[kind]
        assert first
        assert second
        assert not first & second
        assert first | second == service_wide
