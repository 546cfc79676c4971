"""Socket.IO input that is not what the protocol says: an event with a wrong payload gets
the error ack; a packet that cannot be decoded closes that connection, with one line in
the log and no traceback. Raw Engine.IO frames over a WebSocket, as an attacker would
send them."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest

from tests.conftest import AppClient
from tests.factories import register


async def socket(client: AppClient, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/socket.io/?EIO=4&transport=websocket")
    opening = await ws.receive_str()
    assert opening.startswith("0{")
    await ws.send_str("40" + json.dumps({"token": token}))
    assert (await ws.receive_str()).startswith("40{")
    return ws


async def ack(ws: aiohttp.ClientWebSocketResponse, number: int) -> Any:
    frame = await ws.receive_str(timeout=5)
    prefix = f"43{number}"
    assert frame.startswith(prefix), frame
    return json.loads(frame[len(prefix) :])[0]


@pytest.mark.parametrize(
    "packet",
    [
        '42["chat:typing",' + "[" * 2000 + "]" * 2000 + "]",  # nested beyond any decoder
        "4zzz",  # not a packet
        '42["chat:typing",',  # cut off
        "49[]",  # no such packet type
    ],
)
async def test_a_packet_that_cannot_be_decoded_closes_its_connection_quietly(
    client: AppClient, caplog: pytest.LogCaptureFixture, packet: str
) -> None:
    caplog.set_level(logging.WARNING)
    patient = await register(client)
    ws = await socket(client, patient["token"])
    await ws.send_str(packet)
    closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) or (
        closing.type is aiohttp.WSMsgType.TEXT and closing.data == "1"  # Engine.IO close
    ), closing
    await ws.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert any("malformed Socket.IO packet" in r.getMessage() for r in caplog.records)
    # Others are not affected.
    other = await socket(client, patient["token"])
    await other.send_str('421["chat:typing","not an object"]')
    refused = await ack(other, 1)
    assert refused["ok"] is False
    assert refused["error"]["code"] == "invalid_input"
    await other.close()


async def test_payloads_of_the_wrong_shape_get_the_error_ack(client: AppClient) -> None:
    patient = await register(client)
    ws = await socket(client, patient["token"])
    for number, payload in enumerate(
        [
            "x",
            [1, 2],
            {"consultation_id": 5},
            {"consultation_id": "not-a-uuid"},
            {"consultation_id": "00000000-0000-0000-0000-000000000000", "extra": True},
            "[" * 500 + "]" * 500,
        ],
        start=1,
    ):
        await ws.send_str(f"42{number}" + json.dumps(["chat:typing", payload]))
        answer = await ack(ws, number)
        assert answer["ok"] is False, payload
        assert answer["error"]["code"] in ("invalid_input", "not_found"), answer
    await ws.close()
