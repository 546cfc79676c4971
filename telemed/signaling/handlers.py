"""The Socket.IO server: connection auth, consultations watched (chat, state, presence),
and the wiring of the video room's events (``room_handlers``).

A handler is a method of ``Namespace`` named for its event (``on_chat_send`` for
``chat:send``); its return value is the ack (``namespace.Realtime``). Every event
re-checks the caller's session token (a chat send at most every few seconds, see
``chat.writer``), so a sign-out or a password change cuts a socket off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio
import socketio
from aiohttp import web

from telemed import keys
from telemed.accounts.models import Role
from telemed.accounts.service import get_session_user, hash_token, live_token_hashes
from telemed.api import system_client_refused
from telemed.auth import COOKIE_NAME
from telemed.chat import service as chat
from telemed.chat.models import ChatMessagePublic
from telemed.chat.writer import ChatWriter, Send
from telemed.errors import PasswordChangeRequired, Unauthenticated, Unavailable
from telemed.jobs import register_job
from telemed.scheduling.consultations import doctor_of
from telemed.signaling.events import (
    ChatRead,
    ChatSend,
    ChatTyping,
    ConsultationView,
    Empty,
    PresenceChanged,
    ReadUpdated,
    Subscribe,
    Subscribed,
    TypingStarted,
    Unsubscribe,
)
from telemed.signaling.namespace import Ack, Realtime, consultation_room, emitter, ok
from telemed.signaling.presence import Presence
from telemed.signaling.room_handlers import RoomEvents, setup_rooms

logger = logging.getLogger(__name__)


class FastJson:
    """The JSON of Socket.IO packets, by orjson, with the ``json`` module's ``dumps`` and
    ``loads`` (what python-socketio calls): encoding and decoding every packet is a good
    part of a chat message's cost."""

    @staticmethod
    def dumps(value: Any, **_options: Any) -> str:
        return orjson.dumps(value).decode()

    @staticmethod
    def loads(text: str | bytes) -> Any:
        return orjson.loads(text)


class Server(socketio.AsyncServer):  # type: ignore[misc]  # python-socketio has no types
    """python-socketio's server, answering a packet it cannot decode (not JSON, nested too
    deeply, an unknown packet type) by closing that connection with one line in the log,
    instead of the engine's traceback: the fault is the client's, and anyone can repeat
    it to flood the log. No client of ours sends such packets.

    Overrides python-socketio's ``_handle_eio_message`` (pinned in ``pyproject.toml``;
    ``tests/test_realtime_malformed.py`` fails if it moves)."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except ValueError as exc:
            # Our handlers answer their own errors (``namespace.Realtime``): what reaches
            # here is the packet's decoding.
            logger.warning(
                "malformed Socket.IO packet (%s): closing the connection", type(exc).__name__
            )
            await self.eio.disconnect(eio_sid)


class Namespace(RoomEvents, Realtime):
    """The real-time API of ``docs/realtime.md``: connecting, watching consultations,
    chat, and (``RoomEvents``) the video room."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(app)
        self.presence = app[keys.PRESENCE]
        self.sockets = app[keys.SOCKETS]

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """connect {auth: {token}} (or the session cookie): joins ``user:<id>``, unless
        the token is a join token (its socket acts on its consultation only)."""
        token = _token_of(environ, auth)
        user = None
        doctor = None
        scope = None
        if token:
            async with self.app[keys.SESSION_FACTORY]() as session:
                found = await get_session_user(session, token=token, now=self.clock.now())
                if found is not None:
                    user, auth_session = found
                    scope = auth_session.consultation_id
                    doctor = await doctor_of(session, user)
        if user is not None and user.must_change_password:
            refusal = PasswordChangeRequired("Change the temporary password before going on")
            raise socketio.exceptions.ConnectionRefusedError(
                refusal.message, {"error": refusal.to_wire()}
            )
        if user is None or token is None:
            error = Unauthenticated("Sign in first: send auth {token} or the session cookie")
            raise socketio.exceptions.ConnectionRefusedError(
                error.message, {"error": error.to_wire()}
            )
        if user.role is Role.SYSTEM:
            refused = system_client_refused()
            raise socketio.exceptions.ConnectionRefusedError(
                refused.message, {"error": refused.to_wire()}
            )
        await self.save_session(
            sid,
            {
                "token": token,
                "user_id": str(user.id),
                "doctor_id": str(doctor.id) if doctor is not None else None,
                # A join token's consultation (``Realtime._admit``).
                "consultation_id": str(scope) if scope is not None else None,
            },
        )
        self.sockets[sid] = hash_token(token)
        if scope is not None:
            # Not the user's nor the centre's rooms: their events are about other
            # consultations. The room's own events come by subscribing to it.
            return
        await self.enter_room(sid, f"user:{user.id}")
        if user.role is Role.DOCTOR and doctor is not None:
            await self.enter_room(sid, f"centre:{doctor.centre_id}")

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.sockets.pop(sid, None)
        # Closed by this server on purpose (a session ended), or else maybe lost with
        # the network. A client's own disconnect cannot be told apart: its DISCONNECT
        # packet races the transport's close, either may be handled first. A client
        # that leaves a room says so (room:leave).
        on_purpose = reason == socketio.AsyncServer.reason.SERVER_DISCONNECT
        await self.leave_rooms_of(sid, on_purpose=on_purpose)
        for consultation_id in self.presence.rooms_of(sid):
            await self.presence.leave(consultation_id, sid)
            await self.presence_changed(consultation_id)

    async def presence_changed(self, consultation_id: str) -> None:
        """Tell the consultation's watchers (on every node) who is present now."""
        online = await self.presence.online(consultation_id)
        await self.send(
            PresenceChanged(
                consultation_id=uuid.UUID(consultation_id), online=[uuid.UUID(u) for u in online]
            ),
            to=[consultation_room(consultation_id)],
        )

    async def on_consultation_subscribe(self, sid: str, request: Subscribe) -> Ack:
        """consultation:subscribe {consultation_id, after_seq?} → {consultation, messages, …}"""
        async with self.transaction(sid) as (session, user):
            await chat.get_chat(session, actor=user, consultation_id=request.consultation_id)
        cid = str(request.consultation_id)
        # Join first, then read: a message committed meanwhile is in the answer, in the
        # live stream, or in both (clients keep one per seq) — never in neither.
        try:
            await self.enter_room(sid, consultation_room(cid))
        except KeyError:  # the socket closed meanwhile
            raise Unavailable("The connection has closed") from None
        async with self.transaction(sid) as (session, user):
            seen = await chat.get_chat(session, actor=user, consultation_id=request.consultation_id)
            messages = await chat.messages_after(
                session,
                consultation_id=seen.consultation.id,
                after_seq=request.after_seq,
                limit=chat.HISTORY_PAGE + 1,
            )
            read = await chat.read_states(session, seen.consultation.id)
            writable = chat.chat_writable(
                seen.consultation, now=self.clock.now(), settings=self.app[keys.SETTINGS]
            )
        await self.presence.join(cid, sid, str(user.id))
        await self.presence_changed(cid)
        return ok(
            Subscribed(
                consultation=ConsultationView.of(seen.consultation),
                messages=[
                    ChatMessagePublic.model_validate(m) for m in messages[: chat.HISTORY_PAGE]
                ],
                has_more=len(messages) > chat.HISTORY_PAGE,
                read=read,
                online=[uuid.UUID(u) for u in await self.presence.online(cid)],
                writable=writable,
            )
        )

    async def on_consultation_unsubscribe(self, sid: str, request: Unsubscribe) -> Ack:
        """consultation:unsubscribe {consultation_id}"""
        cid = str(request.consultation_id)
        await self.leave_room(sid, consultation_room(cid))
        await self.presence.leave(cid, sid)
        await self.presence_changed(cid)
        return ok(Empty())

    async def on_chat_send(self, sid: str, request: ChatSend) -> Ack:
        """chat:send {consultation_id, client_id, body, document_ids?} → {message}"""
        saved = await self.get_session(sid)
        # Stored in the writer's next group commit; acked only once committed. The
        # answer is already JSON data (made once for the ack and the broadcast).
        message = await self.app[keys.CHAT_WRITER].submit(
            Send(
                token=saved["token"],
                doctor_id=uuid.UUID(saved["doctor_id"]) if saved.get("doctor_id") else None,
                consultation_id=request.consultation_id,
                client_id=request.client_id,
                body=request.body,
                document_ids=tuple(request.document_ids),
            )
        )
        return ok({"message": message})

    async def on_chat_read(self, sid: str, request: ChatRead) -> Ack:
        """chat:read {consultation_id, seq}"""
        async with self.transaction(sid, write=True) as (session, user):
            state = await chat.check_mark_read(
                session,
                actor=user,
                now=self.clock.now(),
                consultation_id=request.consultation_id,
                seq=request.seq,
            )
        return ok(
            ReadUpdated(consultation_id=request.consultation_id, user_id=user.id, seq=state.seq)
        )

    async def on_chat_typing(self, sid: str, request: ChatTyping) -> Ack:
        """chat:typing {consultation_id}"""
        async with self.transaction(sid) as (session, user):
            await chat.get_chat(session, actor=user, consultation_id=request.consultation_id)
        await self.send(
            TypingStarted(consultation_id=request.consultation_id, user_id=user.id),
            to=[consultation_room(request.consultation_id)],
            skip_sid=sid,
        )
        return ok(Empty())


def _token_of(environ: dict[str, Any], auth: Any) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    request = environ.get("aiohttp.request")
    if isinstance(request, web.BaseRequest):
        return request.cookies.get(COOKIE_NAME)
    return None


def setup(app: web.Application) -> socketio.AsyncServer:
    """Create the Socket.IO server, attach it to ``app`` and register the namespace."""
    settings = app[keys.SETTINGS]
    manager = (
        socketio.AsyncRedisManager(
            settings.redis_url,
            channel="telemed",
            # A Redis that stops answering must not hang the emits that wait on it.
            redis_options={"socket_timeout": 2, "socket_connect_timeout": 2},
        )
        if settings.redis_url
        else None
    )
    sio = Server(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=[settings.public_url.rstrip("/")] if settings.public_url else None,
        max_http_buffer_size=64 * 1024,
        json=FastJson,
        # One socket's events are handled one after another, in the order sent: a
        # client's messages are stored in the order it wrote them.
        async_handlers=False,
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    app[keys.SIO] = sio
    app[keys.PRESENCE] = Presence(app[keys.CLOCK].now)
    app[keys.PUBLISHER].emit = emitter(sio)
    app[keys.SOCKETS] = {}
    register_job(app, "socket_sweep", sweep_sockets)

    async def run_writer(app: web.Application) -> AsyncIterator[None]:
        """The chat writer for the app's lifetime, from start-up (the database opens then)."""
        metrics = app[keys.METRICS]
        writer = ChatWriter(
            session_factory=app[keys.SESSION_FACTORY],
            engine=app[keys.ENGINE],
            clock=app[keys.CLOCK],
            settings=settings,
            publisher=app[keys.PUBLISHER],
            stored=metrics.chat_stored.inc,
            delivered=metrics.chat_delivery.observe,
        )
        app[keys.CHAT_WRITER] = writer
        writer.start()
        yield
        await writer.stop()

    app.cleanup_ctx.append(run_writer)
    if settings.redis_url:
        app.cleanup_ctx.append(_redis_link)
    setup_rooms(app)
    namespace = Namespace(app)
    app[keys.NAMESPACE] = namespace
    sio.register_namespace(namespace)
    return sio


async def sweep_sockets(app: web.Application, now: datetime) -> int:
    """Disconnect this node's sockets whose session has ended (sign-out, password change,
    closed account, expiry): they must stop receiving events, not only stop sending."""
    sockets = app[keys.SOCKETS]
    if not sockets:
        return 0
    async with app[keys.SESSION_FACTORY]() as session:
        live_hashes = await live_token_hashes(session, token_hashes=set(sockets.values()), now=now)
    dead = [sid for sid, token_hash in sockets.items() if token_hash not in live_hashes]
    for sid in dead:
        sockets.pop(sid, None)
        await app[keys.SIO].disconnect(sid)
    return len(dead)


async def _redis_link(app: web.Application) -> AsyncIterator[None]:
    """Start the cross-node listener at once (python-socketio would wait for the first
    client), and check it in ``/readyz``: its known failure is to stop silently."""
    sio = app[keys.SIO]
    settings = app[keys.SETTINGS]
    assert settings.redis_url is not None
    if not sio.manager_initialized:
        sio.manager_initialized = True
        sio.manager.initialize()
    client = redis.asyncio.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)

    async def redis_answers() -> None:
        if not await client.ping():
            raise RuntimeError("redis did not answer")

    async def listener_runs() -> None:
        listener = getattr(sio.manager, "thread", None)
        if listener is None or listener.done():
            raise RuntimeError("the redis listener has stopped")

    app[keys.HEALTH_CHECKS].extend([("redis", redis_answers), ("realtime", listener_runs)])

    presence = app[keys.PRESENCE]
    presence.share(client, node=app[keys.NODE_ID], lifetime_seconds=settings.presence_seconds)
    app[keys.LIMITER].share(client)
    namespace = app[keys.NAMESPACE]

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(presence.heartbeat_seconds)
            try:
                await presence.heartbeat(namespace.presence_changed)
            except Exception:
                logger.exception("presence heartbeat failed")

    beating = asyncio.create_task(heartbeats(), name="telemed-presence")
    yield
    beating.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beating
    await presence.forget_node()
    await client.aclose()
