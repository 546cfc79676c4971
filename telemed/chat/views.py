"""HTTP routes of the chat: the history (the same messages the socket delivers)."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from telemed import keys
from telemed.api import Call, ListOf, RequestModel, Routes
from telemed.chat import service
from telemed.chat.models import ChatMessagePublic

routes = Routes(tag="chat")


class HistoryQuery(RequestModel):
    after_seq: int = Field(default=0, ge=0)
    limit: int = Field(default=service.HISTORY_PAGE, ge=1, le=service.HISTORY_PAGE)


@routes.get("/consultations/{id}/messages")
async def list_messages(call: Call, query: HistoryQuery) -> ListOf[ChatMessagePublic]:
    """GET /consultations/{id}/messages: the chat history after ``after_seq``, in order."""
    messages = await service.list_messages(
        call.session,
        actor=call.user,
        consultation_id=call.path_id(),
        after_seq=query.after_seq,
        limit=query.limit,
    )
    return ListOf[ChatMessagePublic](items=[ChatMessagePublic.model_validate(m) for m in messages])


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, routes)
