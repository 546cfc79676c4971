"""HTTP routes of the scheduling package, one module per resource: the directory
(centres, doctors), duty slots, consultations, conclusions, referral imports and
response deadlines."""

from __future__ import annotations

from aiohttp import web

from telemed import keys
from telemed.scheduling.views import (
    conclusions,
    consultations,
    deadlines,
    directory,
    referrals,
    slots,
)


def setup_routes(app: web.Application) -> None:
    for module in (directory, slots, consultations, conclusions, referrals, deadlines):
        app[keys.API].include(app, module.routes)
