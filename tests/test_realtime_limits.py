"""The chat's per-user rate limit (its own module: it needs a low limit)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import AppClient
from tests.realtime import Peer, history, open_peer, send


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"chat_rate_per_minute": 5}


async def test_rate_limit(client: AppClient, booked: dict[str, Any], peers: list[Peer]) -> None:
    cid = booked["id"]
    patient = await open_peer(client, peers, booked["patient"]["token"])
    for n in range(5):
        assert (await patient.call("chat:send", send(cid, f"r{n}", "спешу")))["ok"] is True
    limited = await patient.call("chat:send", send(cid, "r5", "ещё"))
    assert limited["ok"] is False
    assert limited["error"]["code"] == "rate_limited"
    assert limited["error"]["details"]["retry_after"] > 0
    assert len(await history(client, booked["patient"]["token"], cid)) == 5
