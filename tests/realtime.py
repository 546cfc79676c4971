"""A Socket.IO test client that records every event it receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import socketio

from telemed.clock import FakeClock
from tests.factories import AppClient
from tests.flows import book_slot, later, make_centre, make_doctor, make_patient, manager_token, ok
from tests.world import Booked


@dataclass
class Peer:
    """One connected python-socketio client and what it received, in order."""

    sio: socketio.AsyncClient
    received: list[tuple[str, Any]] = field(default_factory=list)

    def events(self, name: str) -> list[Any]:
        return [data for event, data in self.received if event == name]

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, data, timeout=10)
        return ack

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 10) -> None:
        """Wait until something the server sends has arrived (not for time to pass)."""
        async with asyncio.timeout(seconds):
            # Polls what the event handler recorded: simpler than an Event per predicate.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


async def connection_refused(url: str, token: str | None) -> dict[str, Any]:
    """Connect with ``auth: {token}`` (none if None), which the server must refuse;
    returns what ``connect_error`` carried (``{message, data: {error}}``)."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[dict[str, Any]] = []
    client.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            url,
            auth={"token": token} if token else None,
            transports=["websocket"],
            wait_timeout=5,
        )
    assert errors
    return errors[0]


async def connect(url: str, token: str | None, **kwargs: Any) -> Peer:
    """Connect with ``auth: {token}`` over websocket; raises on refusal."""
    client = socketio.AsyncClient(reconnection=False)
    peer = Peer(client)

    async def record(event: str, data: Any = None) -> None:
        peer.received.append((event, data))

    client.on("*", record)
    await client.connect(
        url,
        auth={"token": token} if token else None,
        transports=["websocket"],
        wait_timeout=10,
        **kwargs,
    )
    return peer


@pytest.fixture
async def booked(client: AppClient, clock: FakeClock) -> Booked:
    """A booked duty consultation: its patient, its doctor, and an outsider."""
    manager = await manager_token(client)
    centre = await make_centre(client, manager)
    duty = await make_doctor(client, manager, centre["id"], duty=True)
    patient = await make_patient(client)
    outsider = await make_patient(client)
    consultation = await book_slot(
        client, duty, patient, later(clock, days=1), topic="cardiovascular"
    )
    return Booked(
        manager=manager,
        centre=centre,
        doctor=duty,
        patient=patient,
        outsider=outsider,
        id=consultation["id"],
    )


@pytest.fixture
async def peers(client: AppClient) -> AsyncIterator[list[Peer]]:
    opened: list[Peer] = []
    yield opened
    for peer in opened:
        await peer.close()


async def open_peer(client: AppClient, peers: list[Peer], token: str | None) -> Peer:
    peer = await connect(str(client.make_url("/")), token)
    peers.append(peer)
    return peer


def refused(ack: dict[str, Any], code: str) -> dict[str, Any]:
    """The ack is a refusal in the one error shape with this code; returns the error."""
    assert ack["ok"] is False, ack
    assert set(ack["error"]) == {"code", "message", "details"}, ack
    assert ack["error"]["code"] == code, ack
    error: dict[str, Any] = ack["error"]
    return error


def send(cid: str, client_id: str, body: str, **extra: Any) -> dict[str, Any]:
    return {"consultation_id": cid, "client_id": client_id, "body": body, **extra}


async def history(client: AppClient, token: str, cid: str, after: int = 0) -> list[dict[str, Any]]:
    data = await ok(
        client, "GET", f"/consultations/{cid}/messages", token, params={"after_seq": str(after)}
    )
    return list(data["items"])
