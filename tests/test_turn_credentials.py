"""TURN credentials of each participant's own, short-lived (coturn's use-auth-secret),
given in the room:join answer; and settings that cannot work stop the start."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from telemed.clock import FakeClock
from telemed.settings import Settings
from tests.factories import AppClient
from tests.realtime import Peer, open_peer

SECRET = "a-shared-secret-with-coturn"
TURN = ["turn:turn.example.ru:3478?transport=udp", "turns:turn.example.ru:5349?transport=tcp"]
STUN = {"urls": "stun:turn.example.ru:3478"}


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "media_addresses": ["127.0.0.1"],
        "ice_servers": [STUN],
        "turn_secret": SECRET,
        "turn_urls": TURN,
        "turn_ttl_hours": 2,
    }


async def ice_servers(client: AppClient, peers: list[Peer], token: str, cid: str) -> Any:
    peer = await open_peer(client, peers, token)
    joined = await peer.call("room:join", {"consultation_id": cid})
    assert joined["ok"], joined
    return joined["data"]["ice_servers"]


async def test_each_participant_gets_turn_credentials_of_their_own(
    client: AppClient, room: dict[str, Any], peers: list[Peer], clock: FakeClock
) -> None:
    cid = room["id"]
    patient = await ice_servers(client, peers, room["patient"]["token"], cid)
    doctor = await ice_servers(client, peers, room["doctor"]["token"], cid)
    for servers, who in ((patient, room["patient"]["user"]["id"]), (doctor, None)):
        assert servers[0] == STUN  # the configured servers come first, unchanged
        turn = servers[1]
        assert turn["urls"] == TURN
        expiry, label = turn["username"].split(":")
        # Valid for the configured two hours from now, not longer.
        assert int(expiry) == int((clock.now() + timedelta(hours=2)).timestamp())
        if who is not None:
            assert label == who
        # What coturn computes from the shared secret (the TURN REST API scheme).
        digest = hmac.new(SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
        assert turn["credential"] == base64.b64encode(digest).decode()
    assert patient[1]["username"] != doctor[1]["username"]
    # A rejoin later gets a credential that lasts from then.
    clock.advance(timedelta(minutes=10))
    again = await ice_servers(client, peers, room["patient"]["token"], cid)
    later = int(again[1]["username"].split(":")[0])
    assert later - int(patient[1]["username"].split(":")[0]) == 600


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"turn_secret": SECRET}, "go together"),
        ({"turn_urls": TURN}, "go together"),
        ({"turn_secret": "short", "turn_urls": TURN}, "16\\+ characters"),
        ({"turn_secret": SECRET, "turn_urls": ["stun:turn.example.ru"]}, "turn: or turns:"),
    ],
)
def test_turn_settings_that_cannot_work_stop_the_start(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(data_dir=tmp_path, **fields)


def test_turn_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMED_TURN_SECRET", SECRET)
    monkeypatch.setenv("TELEMED_TURN_URLS", ",".join(TURN))
    assert Settings().turn_urls == TURN
