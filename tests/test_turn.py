"""TURN with a real coturn (Debian's, started by the test as docs/media.md configures
it): a participant whose ICE may use relay candidates only joins with the credentials
the server minted in its room:join answer, and media flows both ways through the TURN
server; coturn checks those credentials, so with another secret than Telemed's no
allocation succeeds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aioice import Candidate
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

from telemed.media.turn import turn_credential
from tests.factories import AppClient
from tests.media_peers import MediaClient, SineMicrophone, SynthCamera
from tests.realtime import Peer, open_peer
from tests.servers import TurnServer

SECRET = "coturn-static-auth-secret"


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@pytest.fixture
def turn() -> Iterator[TurnServer]:
    server = TurnServer.start(SECRET)
    yield server
    server.stop()


@pytest.fixture
def telemed_secret() -> str:
    """Telemed's TELEMED_TURN_SECRET: coturn's own, unless a test says otherwise."""
    return SECRET


@pytest.fixture
def settings_overrides(turn: TurnServer, telemed_secret: str) -> dict[str, Any]:
    return {
        "media_addresses": ["127.0.0.1"],
        "turn_secret": telemed_secret,
        "turn_urls": turn.urls("udp", "tcp"),
    }


async def relayed_patient(
    client: AppClient, peers: list[Peer], media: list[MediaClient], room: dict[str, Any], url: str
) -> tuple[MediaClient, dict[str, Any]]:
    """The patient, joined, with a peer connection that gathers relay candidates only,
    through ``url`` with the credentials of its room:join answer (not yet connected)."""
    peer = await open_peer(client, peers, room["patient"]["token"])
    holder: dict[str, Any] = {}
    patient = MediaClient(
        peer,
        room["id"],
        camera=SynthCamera,
        microphone=SineMicrophone,
        configuration=lambda: RTCConfiguration(
            iceServers=[RTCIceServer(url, holder["username"], holder["credential"])],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        ),
    )
    media.append(patient)
    joined = await patient.join()
    assert joined["ok"], joined
    (minted,) = [s for s in joined["data"]["ice_servers"] if "username" in s]
    assert url in minted["urls"]
    holder.update(minted)
    return patient, minted


def nominated(client: MediaClient) -> tuple[Candidate, Candidate]:
    """The local and remote candidates of the pair ICE chose (aioice's own record: aiortc
    has no candidate-pair statistics)."""
    assert client.pc is not None
    transport = client.pc.getTransceivers()[0].sender.transport.transport
    pair = transport._connection._nominated[1]
    return pair.local_candidate, pair.remote_candidate


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_media_flows_both_ways_through_coturn_with_the_minted_credentials(
    client: AppClient,
    room: dict[str, Any],
    room_doctor: MediaClient,
    peers: list[Peer],
    media: list[MediaClient],
    turn: TurnServer,
    transport: str,
) -> None:
    doctor = room_doctor
    (url,) = turn.urls(transport)
    patient, minted = await relayed_patient(client, peers, media, room, url)
    offered = await patient.connect_media()
    assert offered["ok"], offered
    # Only the TURN server's address was offered.
    assert patient.pc is not None
    candidates = [
        line for line in patient.pc.localDescription.sdp.split("\r\n") if "a=candidate:" in line
    ]
    assert candidates
    assert all(" typ relay " in line for line in candidates), candidates

    await patient.peer.wait_for(
        lambda: patient.decoded["video"] >= 30 and patient.decoded["audio"] >= 30, seconds=20
    )
    await doctor.peer.wait_for(
        lambda: doctor.decoded["video"] >= 30 and doctor.decoded["audio"] >= 30, seconds=20
    )
    local, remote = nominated(patient)
    assert local.type == "relay"
    assert remote.host == "127.0.0.1"  # the media server, reached through coturn
    # coturn allocated for this user's own credentials: the patient's id in the name.
    assert minted["username"].endswith(":" + room["patient"]["user"]["id"])
    await turn.logged(f"username=<{minted['username']}>, lifetime=")


@pytest.mark.parametrize("telemed_secret", ["not-the-secret-coturn-has"])
async def test_coturn_refuses_credentials_minted_with_another_secret(
    client: AppClient,
    room: dict[str, Any],
    room_doctor: MediaClient,
    peers: list[Peer],
    media: list[MediaClient],
    turn: TurnServer,
) -> None:
    (url,) = turn.urls("udp")
    patient, minted = await relayed_patient(client, peers, media, room, url)
    # A relay-only participant gathers nothing: there is no way its media can come.
    offered = await patient.connect_media()
    assert offered["ok"], offered
    assert patient.pc is not None
    assert "a=candidate:" not in patient.pc.localDescription.sdp
    refusal = f"user <{minted['username']}>: incoming packet message processed, error 401"
    await turn.logged(refusal)

    # The allocation itself: 401 for what Telemed minted, a relayed address for the same
    # name signed with coturn's secret (so the secret is what differs, nothing else).
    server = ("127.0.0.1", turn.port)
    with pytest.raises(TransactionFailed) as refused:
        await create_turn_endpoint(
            asyncio.DatagramProtocol, server, minted["username"], minted["credential"]
        )
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol,
        server,
        minted["username"],
        turn_credential(SECRET, minted["username"]),
    )
    try:
        assert transport.get_extra_info("sockname")[0] == "127.0.0.1"  # the relayed address
    finally:
        transport.close()
