"""HTTP routes of notifications (the bell) and of the outbox (manager)."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from telemed import keys
from telemed.accounts.models import Role
from telemed.api import Call, ListOf, QueryFlag, RequestModel, Routes
from telemed.notify import service
from telemed.notify.models import NotificationPublic, OutboxChannel, OutboxStatus
from telemed.notify.senders import keeps_clear_text
from telemed.notify.service import OutboxMessagePublic

routes = Routes(tag="notifications")

MANAGERS = (Role.MANAGER,)


class NotificationQuery(RequestModel):
    unread: QueryFlag = Field(default=False, description="Only notifications not yet read")
    limit: int = Field(default=50, ge=1, le=200)


class NotificationList(ListOf[NotificationPublic]):
    unread: int = Field(description="How many of the caller's notifications are unread")


class OutboxQuery(RequestModel):
    status: OutboxStatus | None = None
    channel: OutboxChannel | None = None
    limit: int = Field(default=100, ge=1, le=500)


@routes.get("/notifications")
async def list_notifications(call: Call, query: NotificationQuery) -> NotificationList:
    """GET /notifications: the caller's notifications, newest first, and the unread count."""
    notifications = await service.list_notifications(
        call.session, user=call.user, unread_only=query.unread, limit=query.limit
    )
    return NotificationList(
        items=[NotificationPublic.model_validate(n) for n in notifications],
        unread=await service.count_unread(call.session, user=call.user),
    )


@routes.post("/notifications/{id}/read")
async def mark_notification_read(call: Call) -> NotificationPublic:
    """POST /notifications/{id}/read: mark one of the caller's notifications read."""
    notification = await service.do_mark_read(
        call.session, user=call.user, notification_id=call.path_id(), now=call.now
    )
    return NotificationPublic.model_validate(notification)


@routes.post("/notifications/read-all")
async def mark_all_notifications_read(call: Call) -> None:
    """POST /notifications/read-all: mark every notification of the caller read."""
    await service.do_mark_all_read(call.session, user=call.user, now=call.now)


@routes.get("/outbox", roles=MANAGERS)
async def list_outbox(call: Call, query: OutboxQuery) -> ListOf[OutboxMessagePublic]:
    """GET /outbox: SMS and e-mail messages, newest first, with passwords masked.

    Where no gateway is configured, in development mode, a message is ``kept`` rather
    than sent, and ``kept_text`` is its full text (passwords and codes included) for the
    manager to pass on; with a gateway, or in production mode, it is always null. A
    manager bound to a centre is refused (403): the outbox is the whole service's."""
    messages = await service.list_outbox(
        call.session,
        actor=call.user,
        status=query.status,
        channel=query.channel,
        limit=query.limit,
        kept_text=keeps_clear_text(call.settings),
    )
    return ListOf[OutboxMessagePublic](items=messages)


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, routes)
