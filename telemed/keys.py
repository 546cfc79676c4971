"""Every app-wide object, under a typed ``web.AppKey``. Nothing else is process-wide."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncEngine

from telemed.clock import Clock
from telemed.db import SessionFactory
from telemed.documents.storage import DocumentStore
from telemed.settings import Settings

if TYPE_CHECKING:
    from telemed.api import Api  # the API layer itself reads these keys
    from telemed.jobs import Job

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSION_FACTORY = web.AppKey("session_factory", SessionFactory)
PASSWORD_HASHER = web.AppKey("password_hasher", PasswordHasher)
API: web.AppKey[Api] = web.AppKey("api")
DOCUMENT_STORE = web.AppKey("document_store", DocumentStore)
JOBS: web.AppKey[list[tuple[str, Job]]] = web.AppKey("jobs")
NODE_ID = web.AppKey("node_id", str)
