"""Socket.IO event names and their payload models (the real-time protocol).

Client → server events are imperative and acknowledged with ``{"ok": true, "data": …}``
or ``{"ok": false, "error": {code, message, details}}``; server → client events are in
the past tense. Payload models forbid unknown fields. ``docs/realtime.md`` is generated
from ``PROTOCOL`` below.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from telemed.chat.models import ChatMessagePublic


class EventModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Subscribe(EventModel):
    consultation_id: uuid.UUID
    after_seq: int = Field(default=0, ge=0, description="The last seq the client holds")


class Unsubscribe(EventModel):
    consultation_id: uuid.UUID


class ChatSend(EventModel):
    consultation_id: uuid.UUID
    client_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Chosen by the client, unique per message: a resend returns the stored one",
    )
    body: str = Field(max_length=4000)
    document_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10)


class ChatRead(EventModel):
    consultation_id: uuid.UUID
    seq: int = Field(ge=0)


class ChatTyping(EventModel):
    consultation_id: uuid.UUID


class ConsultationView(BaseModel):
    id: uuid.UUID
    route: str
    state: str
    version: int
    doctor_id: uuid.UUID | None
    starts_at: str | None
    ends_at: str | None
    updated_at: str


class Subscribed(BaseModel):
    consultation: ConsultationView
    messages: list[ChatMessagePublic]
    has_more: bool = Field(
        description="More missed messages than one answer holds: subscribe again with the "
        "last seq received"
    )
    read: dict[str, int] = Field(description="How far each participant has read (user id → seq)")
    online: list[uuid.UUID] = Field(description="Participants connected now")
    writable: bool


class MessageAck(BaseModel):
    message: ChatMessagePublic


class ReadUpdated(BaseModel):
    consultation_id: uuid.UUID
    user_id: uuid.UUID
    seq: int


class TypingStarted(BaseModel):
    consultation_id: uuid.UUID
    user_id: uuid.UUID


class PresenceChanged(BaseModel):
    consultation_id: uuid.UUID
    online: list[uuid.UUID]


class NotificationCreated(BaseModel):
    id: uuid.UUID
    kind: str
    consultation_id: uuid.UUID | None
    title: str
    body: str
    data: dict[str, Any]
    created_at: str
    read_at: str | None


class Empty(BaseModel):
    pass


@dataclass(frozen=True)
class EventSpec:
    name: str
    direction: Literal["client→server", "server→client"]
    payload: type[BaseModel]
    ack: type[BaseModel] | None
    description: str
    errors: tuple[str, ...] = ()


PROTOCOL: tuple[EventSpec, ...] = (
    EventSpec(
        "consultation:subscribe",
        "client→server",
        Subscribe,
        Subscribed,
        "Watch a consultation (its chat, state and presence); returns what the client "
        "missed after `after_seq`.",
        ("invalid_input", "not_found", "unauthenticated"),
    ),
    EventSpec(
        "consultation:unsubscribe",
        "client→server",
        Unsubscribe,
        Empty,
        "Stop watching a consultation.",
        ("invalid_input",),
    ),
    EventSpec(
        "chat:send",
        "client→server",
        ChatSend,
        MessageAck,
        "Send a message. It is stored (with the next `seq`) before the ack and before "
        "anyone sees it; a resend with the same `client_id` returns the stored message.",
        ("invalid_input", "not_found", "invalid_state", "rate_limited"),
    ),
    EventSpec(
        "chat:read",
        "client→server",
        ChatRead,
        ReadUpdated,
        "Mark the chat read up to `seq`.",
        ("invalid_input", "not_found"),
    ),
    EventSpec(
        "chat:typing",
        "client→server",
        ChatTyping,
        Empty,
        "Tell the other participant you are typing.",
        ("invalid_input", "not_found"),
    ),
    EventSpec(
        "chat:message_created",
        "server→client",
        ChatMessagePublic,
        None,
        "A message was stored in a watched consultation.",
    ),
    EventSpec(
        "chat:read_updated",
        "server→client",
        ReadUpdated,
        None,
        "A participant read the chat up to `seq`.",
    ),
    EventSpec(
        "chat:typing_started",
        "server→client",
        TypingStarted,
        None,
        "The other participant is typing.",
    ),
    EventSpec(
        "consultation:updated",
        "server→client",
        ConsultationView,
        None,
        "A consultation changed (sent to its watchers, its patient and its centre's "
        "doctors); fetch the details with `GET /consultations/{id}`.",
    ),
    EventSpec(
        "notification:created",
        "server→client",
        NotificationCreated,
        None,
        "A new notification for the user (the bell).",
    ),
    EventSpec(
        "presence:changed",
        "server→client",
        PresenceChanged,
        None,
        "Who of a watched consultation's participants is connected.",
    ),
)
