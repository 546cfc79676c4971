"""HTTP routes of notifications (the bell) and of the outbox (manager)."""

from __future__ import annotations

from aiohttp import web

from telemed import keys
from telemed.api import Routes

routes = Routes(tag="notifications")


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, routes)
