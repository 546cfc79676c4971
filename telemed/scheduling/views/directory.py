"""HTTP routes of the directory: medical centres and doctors."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from telemed import keys
from telemed.accounts.models import Locale, Role
from telemed.accounts.service import check_new_account
from telemed.api import (
    NONBLANK,
    Access,
    Call,
    ListOf,
    QueryFlag,
    RequestModel,
    Routes,
)
from telemed.scheduling import service
from telemed.scheduling.models import CentrePublic, DoctorPublic

routes = Routes(tag="directory")

MANAGERS = (Role.MANAGER,)

Name = Field(min_length=1, max_length=200, pattern=NONBLANK)
Profile = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NONBLANK)]


class CentreIn(RequestModel):
    name: str = Name
    region: str = Name
    profiles: list[Profile] = Field(min_length=1, max_length=30)
    description: str = Field(default="", max_length=4000)


class CentreUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NONBLANK)
    region: str | None = Field(default=None, min_length=1, max_length=200, pattern=NONBLANK)
    profiles: list[Profile] | None = Field(default=None, min_length=1, max_length=30)
    description: str | None = Field(default=None, max_length=4000)


class CentreQuery(RequestModel):
    region: str | None = None
    profile: str | None = None


class DoctorIn(RequestModel):
    full_name: str = Name
    phone: str = Field(min_length=1, max_length=32, pattern=NONBLANK)
    password: str = Field(min_length=1, max_length=256, pattern=NONBLANK)
    email: str | None = Field(default=None, max_length=254)
    centre_id: uuid.UUID
    specialty: str = Name
    is_duty: bool = False
    bio: str = Field(default="", max_length=4000)


class DoctorUpdate(RequestModel):
    full_name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NONBLANK)
    centre_id: uuid.UUID | None = None
    specialty: str | None = Field(default=None, min_length=1, max_length=200, pattern=NONBLANK)
    is_duty: bool | None = None
    bio: str | None = Field(default=None, max_length=4000)


class DoctorQuery(RequestModel):
    centre_id: uuid.UUID | None = None
    duty: QueryFlag | None = None


def _changes(update: RequestModel) -> dict[str, object]:
    """The fields a PATCH sets; ``null`` for a required field is not a change."""
    return {k: v for k, v in update.model_dump(exclude_unset=True).items() if v is not None}


@routes.get("/centres", access=Access.PUBLIC)
async def list_centres(call: Call, query: CentreQuery) -> ListOf[CentrePublic]:
    """GET /centres: the medical centres, by name (filter by region or profile)."""
    centres = await service.list_centres(call.session, region=query.region, profile=query.profile)
    return ListOf[CentrePublic](items=[CentrePublic.model_validate(c) for c in centres])


@routes.get("/centres/{id}", access=Access.PUBLIC)
async def get_centre(call: Call) -> CentrePublic:
    """GET /centres/{id}: one medical centre."""
    return CentrePublic.model_validate(await service.get_centre(call.session, call.path_id()))


@routes.post("/centres", status=201, roles=MANAGERS)
async def create_centre(call: Call, body: CentreIn) -> CentrePublic:
    """POST /centres: add a medical centre (manager)."""
    centre = await service.do_create_centre(
        call.session,
        actor=call.user,
        now=call.now,
        name=body.name,
        region=body.region,
        profiles=body.profiles,
        description=body.description,
    )
    return CentrePublic.model_validate(centre)


@routes.patch("/centres/{id}", roles=MANAGERS)
async def update_centre(call: Call, body: CentreUpdate) -> CentrePublic:
    """PATCH /centres/{id}: change a medical centre (manager)."""
    centre = await service.do_update_centre(
        call.session,
        actor=call.user,
        now=call.now,
        centre_id=call.path_id(),
        changes=_changes(body),
    )
    return CentrePublic.model_validate(centre)


@routes.delete("/centres/{id}", roles=MANAGERS, errors=(409,))
async def delete_centre(call: Call) -> None:
    """DELETE /centres/{id}: remove a medical centre that has no doctors left (manager)."""
    await service.do_archive_centre(
        call.session, actor=call.user, now=call.now, centre_id=call.path_id()
    )


@routes.get("/doctors", access=Access.PUBLIC)
async def list_doctors(call: Call, query: DoctorQuery) -> ListOf[DoctorPublic]:
    """GET /doctors: doctors, by name (filter by centre and by duty)."""
    doctors = await service.list_doctors(call.session, centre_id=query.centre_id, duty=query.duty)
    return ListOf[DoctorPublic](items=doctors)


@routes.get("/doctors/{id}", access=Access.PUBLIC)
async def get_doctor(call: Call) -> DoctorPublic:
    """GET /doctors/{id}: one doctor."""
    return service.doctor_public(*await service.get_doctor(call.session, call.path_id()))


@routes.post("/doctors", status=201, roles=MANAGERS, errors=(404, 409), transaction=False)
async def create_doctor(call: Call, body: DoctorIn) -> DoctorPublic:
    """POST /doctors: add a doctor with a new account (manager).

    The doctor signs in with the phone and the given password, and must change it then.
    """
    account = check_new_account(
        full_name=body.full_name, phone=body.phone, password=body.password, email=body.email
    )
    password_hash = await call.app[keys.PASSWORDS].hash(body.password)
    async with call.transaction() as session:
        created = await service.do_create_doctor(
            session,
            account=account,
            password_hash=password_hash,
            actor=call.user,
            now=call.now,
            centre_id=body.centre_id,
            specialty=body.specialty,
            is_duty=body.is_duty,
            bio=body.bio,
            locale=Locale(call.settings.default_locale),
            time_zone=call.settings.default_time_zone,
        )
    return service.doctor_public(*created)


@routes.patch("/doctors/{id}", roles=MANAGERS)
async def update_doctor(call: Call, body: DoctorUpdate) -> DoctorPublic:
    """PATCH /doctors/{id}: change a doctor's centre, specialty, duty flag or bio (manager)."""
    updated = await service.do_update_doctor(
        call.session,
        actor=call.user,
        now=call.now,
        doctor_id=call.path_id(),
        changes=_changes(body),
    )
    return service.doctor_public(*updated)


@routes.delete("/doctors/{id}", roles=MANAGERS)
async def delete_doctor(call: Call) -> None:
    """DELETE /doctors/{id}: remove a doctor; the account is closed (manager)."""
    await service.do_archive_doctor(
        call.session, actor=call.user, now=call.now, doctor_id=call.path_id()
    )
