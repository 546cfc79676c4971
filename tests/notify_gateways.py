"""Fakes at the external edge of notifications: a real HTTP SMS gateway and a real SMTP
server, both on loopback, that record what they receive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from tests.servers import free_port


@dataclass
class SmsGateway:
    """An SMS gateway's webhook: fails the next ``fail_next`` requests with 500, hangs
    while ``hang`` is set, waits ``delay`` seconds per request, and records each accepted
    JSON payload in ``delivered``."""

    fail_next: int = 0
    hang: bool = False
    delay: float = 0.0
    requests: int = 0
    delivered: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.authorizations.append(request.headers.get("Authorization"))
        payload = await request.json()
        if self.hang:
            # The client gives up first; let the handler end when the gateway stops.
            await self._release.wait()
            return web.json_response({"ok": True})
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": "temporarily unavailable"}, status=500)
        if self.delay:
            await asyncio.sleep(self.delay)  # the gateway's own latency
        self.delivered.append(payload)
        return web.json_response({"ok": True})


@asynccontextmanager
async def running_gateway(gateway: SmsGateway) -> AsyncIterator[str]:
    """Serve ``gateway`` on a free loopback port; yields its webhook URL."""
    app = web.Application()
    app.router.add_post("/sms", gateway.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/sms"
    finally:
        gateway._release.set()
        await runner.cleanup()


@dataclass
class SmtpCapture:
    """An aiosmtpd handler that keeps every message it is given."""

    messages: list[bytes] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients.append(list(envelope.rcpt_tos))
        self.messages.append(bytes(envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


@contextmanager
def running_smtp(capture: SmtpCapture) -> Iterator[int]:
    """A real SMTP server on a free loopback port (in its own thread); yields the port."""
    port = free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[SmsGateway, str]]:
    """A running SMS gateway and its webhook URL (for ``TELEMED_SMS_HTTP_URL``)."""
    gw = SmsGateway()
    async with running_gateway(gw) as url:
        yield gw, url


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpCapture, int]]:
    """A running SMTP server that keeps what it is given, and its port."""
    capture = SmtpCapture()
    with running_smtp(capture) as port:
        yield capture, port
