"""Every app-wide object, under a typed ``web.AppKey``. Nothing else is process-wide."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import socketio
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from telemed.accounts.passwords import Passwords
from telemed.chat.writer import ChatWriter
from telemed.clock import Clock
from telemed.db import SessionFactory
from telemed.documents.storage import DocumentStore
from telemed.limits import Limiter
from telemed.live import Publisher
from telemed.media.room import Rooms
from telemed.settings import Settings
from telemed.signaling.presence import Presence

if TYPE_CHECKING:
    # The wiring layers read these keys themselves (the API's routes, the jobs' runner,
    # the Socket.IO namespace): their classes are named for the type checker only.
    from telemed.api import Api
    from telemed.cluster import Cluster
    from telemed.jobs import Job
    from telemed.metrics import Metrics
    from telemed.signaling.directory import RoomDirectory
    from telemed.signaling.handlers import Namespace

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSION_FACTORY = web.AppKey("session_factory", SessionFactory)
PASSWORDS = web.AppKey("passwords", Passwords)
API: web.AppKey[Api] = web.AppKey("api")
DOCUMENT_STORE = web.AppKey("document_store", DocumentStore)
JOBS: web.AppKey[list[tuple[str, Job]]] = web.AppKey("jobs")
NODE_ID = web.AppKey("node_id", str)
PUBLISHER = web.AppKey("publisher", Publisher)
"""Sends what committed transactions leave: live events, and facts to their listeners."""
NAMESPACE: web.AppKey[Namespace] = web.AppKey("namespace")
"""The Socket.IO API (``telemed.signaling.handlers.Namespace``)."""
SIO = web.AppKey("socketio", socketio.AsyncServer)
LIMITER = web.AppKey("limiter", Limiter)
"""The rate limits of frequent actions (``telemed.limits``), shared through Redis if any."""
PRESENCE = web.AppKey("presence", Presence)
HEALTH_CHECKS: web.AppKey[list[tuple[str, Callable[[], Awaitable[None]]]]] = web.AppKey(
    "health_checks"
)
"""Readiness checks beyond the database: each raises when its part is not working."""
CHAT_WRITER = web.AppKey("chat_writer", ChatWriter)
SOCKETS: web.AppKey[dict[str, str]] = web.AppKey("sockets")
"""This node's connected sockets: sid → the hash of the session token they signed in with."""
ROOMS = web.AppKey("rooms", Rooms)
"""The video rooms whose media this node carries."""
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster")
"""This node among the nodes sharing Redis (``telemed.cluster``)."""
DIRECTORY: web.AppKey[RoomDirectory] = web.AppKey("directory")
"""The way to each room from this node's sockets, and this node's rooms' side of it."""
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
"""This process's Prometheus metrics and their registry (``telemed.metrics``)."""
