"""HTTP routes of response deadlines (SLA): the manager's report."""

from __future__ import annotations

from pydantic import (
    Field,
)

from telemed.accounts.models import Role
from telemed.api import (
    Call,
    Instant,
    RequestModel,
    Routes,
)
from telemed.scheduling import sla

routes = Routes(tag="deadlines")

DOCTORS = (Role.DOCTOR,)
MANAGERS = (Role.MANAGER,)


class SlaQuery(RequestModel):
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None


@routes.get("/sla", roles=MANAGERS)
async def sla_report(call: Call, query: SlaQuery) -> sla.SlaReport:
    """GET /sla: response deadlines — due soon, overdue and met, by centre and doctor
    (of the manager's centre only, for a manager bound to one)."""
    return await sla.sla_report(
        call.session,
        actor=call.user,
        now=call.now,
        due_soon_fraction=call.settings.sla_due_soon_fraction,
        start=query.from_,
        end=query.to,
    )
