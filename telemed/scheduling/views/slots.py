"""HTTP routes of duty slots: a duty doctor's free times, published, withdrawn and
listed for booking."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import (
    Field,
)

from telemed.accounts.models import Role
from telemed.api import (
    Access,
    Call,
    Instant,
    ListOf,
    RequestModel,
    Routes,
    TimeZoneName,
)
from telemed.errors import InvalidValue, Problem
from telemed.scheduling import service
from telemed.scheduling.models import (
    SlotPublic,
)

routes = Routes(tag="slots")

MAX_SLOT_RANGE = timedelta(days=62)

DOCTORS = (Role.DOCTOR,)
MANAGERS = (Role.MANAGER,)


class SlotQuery(RequestModel):
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None
    tz: TimeZoneName | None = Field(
        default=None,
        description="IANA time zone to express the times in (default: the service's zone)",
    )


class SlotsIn(RequestModel):
    starts_at: Instant
    ends_at: Instant
    slot_minutes: int = Field(ge=10, le=120)


@routes.get("/doctors/{id}/slots", access=Access.PUBLIC, errors=(422,))
async def list_slots(call: Call, query: SlotQuery) -> ListOf[SlotPublic]:
    """GET /doctors/{id}/slots: a duty doctor's slots from ``from`` (default now) to ``to``
    (default a week later; at most 62 days), in the time zone ``tz``."""
    if query.from_ is not None and query.to is not None and query.to <= query.from_:
        raise InvalidValue(
            "'to' must be after 'from'", problem=Problem.END_BEFORE_START, field="to"
        )
    start: datetime = query.from_ or call.now
    end: datetime = query.to or start + timedelta(days=7)
    end = min(end, start + MAX_SLOT_RANGE)
    slots = await service.list_slots(call.session, doctor_id=call.path_id(), start=start, end=end)
    # Shown in the patient's own zone: the same instants, with the patient's offset.
    zone = ZoneInfo(query.tz or call.settings.default_time_zone)
    return ListOf[SlotPublic](
        items=[
            SlotPublic(
                id=s.id,
                doctor_id=s.doctor_id,
                status=s.status,
                starts_at=s.starts_at.astimezone(zone),
                ends_at=s.ends_at.astimezone(zone),
            )
            for s in slots
        ]
    )


@routes.post("/slots", status=201, roles=DOCTORS, errors=(409,))
async def publish_slots(call: Call, body: SlotsIn) -> ListOf[SlotPublic]:
    """POST /slots: a duty doctor publishes free slots ``{starts_at, ends_at, slot_minutes}``."""
    slots = await service.check_publish_slots(
        call.session,
        actor=call.user,
        now=call.now,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        slot_minutes=body.slot_minutes,
        horizon=call.settings.booking_horizon,
    )
    return ListOf[SlotPublic](items=[SlotPublic.model_validate(s) for s in slots])


@routes.delete("/slots/{id}", roles=DOCTORS, errors=(409,))
async def delete_slot(call: Call) -> None:
    """DELETE /slots/{id}: a duty doctor withdraws a free slot."""
    await service.check_delete_slot(
        call.session, actor=call.user, now=call.now, slot_id=call.path_id()
    )
