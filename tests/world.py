"""The people and places a test works with, typed: what the API answered when they were
made, so that a test that reads a missing field fails at ``mypy``, not at run time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

import pytest

if TYPE_CHECKING:
    from tests.conftest import AppClient


class Account(TypedDict):
    """A signed-in user: the answer of ``POST /auth/register`` or ``/auth/login``."""

    token: str
    expires_at: str
    user: dict[str, Any]


class DoctorAccount(TypedDict):
    """A doctor: the directory entry (``POST /doctors``), signed in, own password set."""

    id: str  # the doctor's profile, as the directory names it
    user_id: str
    full_name: str
    specialty: str
    centre_id: str
    is_duty: bool
    token: str
    phone: str


class World(TypedDict):
    """A centre with two doctors (one on duty), a doctor of another centre, a manager
    and two patients."""

    manager: str  # the manager's token
    centre: dict[str, Any]
    other_centre: dict[str, Any]
    doctor: DoctorAccount
    duty: DoctorAccount
    stranger: DoctorAccount
    patient: Account
    other: Account


class Booked(TypedDict):
    """A booked duty consultation (``id``), its patient and doctor, and an outsider."""

    id: str
    manager: str
    centre: dict[str, Any]
    doctor: DoctorAccount
    patient: Account
    outsider: Account


@pytest.fixture
async def world(client: AppClient) -> World:
    from tests.flows import make_centre, make_doctor, make_patient, manager_token

    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    other_centre = await make_centre(
        client, manager, name="Гинекологический центр", profiles=["гинекология"]
    )
    return World(
        manager=manager,
        centre=centre,
        other_centre=other_centre,
        doctor=await make_doctor(client, manager, centre["id"]),
        duty=await make_doctor(client, manager, centre["id"], duty=True, name="Белова Марина"),
        stranger=await make_doctor(client, manager, other_centre["id"], name="Чужой Врач"),
        patient=await make_patient(client),
        other=await make_patient(client),
    )
