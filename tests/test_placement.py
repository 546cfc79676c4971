"""Room pins and nodes on a real Redis: placement is atomic and even, a dead owner's pin
is replaced and a live one's never, an owner keeps (and gets back) its pins, a room's
state outlives its node; nodes ask each other, errors travel back as themselves, and a
node that does not answer is ``unavailable``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio

from telemed.cluster import Cluster, Counts
from telemed.errors import InvalidState, RateLimited, Unavailable
from telemed.media.placement import RedisPlacement, RedisStateStore
from telemed.media.room import RoomState
from telemed.settings import Settings
from tests.servers import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.from_url(redis_server.url)
    yield connection
    await connection.aclose()


def _placement(client: redis.asyncio.Redis, node: str) -> RedisPlacement:
    return RedisPlacement(client, node=node, node_lost_seconds=3)


async def test_rooms_placed_at_once_from_two_nodes_split_evenly_with_one_owner_each(
    client: redis.asyncio.Redis,
) -> None:
    nodes = {name: _placement(client, name) for name in ("a", "b")}
    rooms = [f"room-{n}" for n in range(20)]
    # Each room placed twice at once, from each node: one owner per room.
    owners = await asyncio.gather(
        *(
            nodes[name].place(room, candidates=["a", "b"], replacing=None)
            for room in rooms
            for name in ("a", "b")
        )
    )
    by_room = dict(zip([room for room in rooms for _ in "ab"], owners, strict=True))
    assert all(owners[2 * n] == owners[2 * n + 1] for n in range(20)), owners
    assert sorted(by_room.values()).count("a") == 10
    assert await client.scard("telemed:rooms-of:a") == 10
    assert await client.scard("telemed:rooms-of:b") == 10
    for room, owner in by_room.items():
        assert await nodes["a"].owner(room) == owner


async def test_a_dead_owners_pin_is_replaced_and_a_live_ones_is_not(
    client: redis.asyncio.Redis,
) -> None:
    placement = _placement(client, "b")
    assert await placement.place("r", candidates=["a"], replacing=None) == "a"
    # b thinks "x" died: the pin names "a", so it stays a's.
    assert await placement.place("r", candidates=["b"], replacing="x") == "a"
    # a died: its pin goes to the candidate.
    assert await placement.place("r", candidates=["b"], replacing="a") == "b"
    assert await placement.owner("r") == "b"
    with pytest.raises(Unavailable):
        await placement.place("s", candidates=[], replacing=None)


async def test_an_owner_keeps_its_pins_gets_vanished_ones_back_and_learns_of_taken_ones(
    client: redis.asyncio.Redis,
) -> None:
    a, b = _placement(client, "a"), _placement(client, "b")
    for room in ("r1", "r2", "r3"):
        assert await a.place(room, candidates=["a"], replacing=None) == "a"
    await client.delete("telemed:room:r2")  # a Redis that lost the key
    await b.place("r3", candidates=["b"], replacing="a")  # b took r3 (a was thought dead)
    assert await a.keep(["r1", "r2", "r3"]) == ["r3"]
    assert await a.owner("r2") == "a"
    assert await client.pttl("telemed:room:r1") > 0
    # Releasing: only one's own pin goes.
    await a.release("r3")
    assert await a.owner("r3") == "b"
    await a.release("r1")
    assert await a.owner("r1") is None
    assert await client.smembers("telemed:rooms-of:a") == {b"r2"}


async def test_a_rooms_state_outlives_its_node(client: redis.asyncio.Redis) -> None:
    states = RedisStateStore(client)
    assert await states.load("r") == RoomState()
    await states.save("r", RoomState(recording=True, consents={"u1": True, "u2": False}))
    assert await RedisStateStore(client).load("r") == RoomState(
        recording=True, consents={"u1": True, "u2": False}
    )
    await states.forget("r")
    assert await states.load("r") == RoomState()


@asynccontextmanager
async def _node(url: str, name: str, **settings: Any) -> AsyncIterator[Cluster]:
    connection = redis.asyncio.from_url(url)
    node = Cluster(
        node_id=name,
        settings=Settings(
            redis_url=url,
            node_heartbeat_seconds=0.2,
            node_lost_seconds=1,
            node_request_timeout_seconds=1,
            **settings,
        ),
        client=connection,
        counts=Counts,
    )
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
        await connection.aclose()


async def test_nodes_see_each_other_and_answer_requests_with_results_and_errors(
    redis_server: RedisServer,
) -> None:
    async with _node(redis_server.url, "h:1:a") as a, _node(redis_server.url, "h:2:b") as b:

        async def echo(args: dict[str, Any]) -> dict[str, Any]:
            return {"echo": args["text"]}

        async def refuse(args: dict[str, Any]) -> dict[str, Any]:
            raise InvalidState("Join the room first", details={"why": args["why"]})

        async def slow_down(args: dict[str, Any]) -> dict[str, Any]:
            raise RateLimited("Too many", retry_after_seconds=3)

        async def hang(args: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(5)
            return {}

        for op, handler in (
            ("echo", echo),
            ("refuse", refuse),
            ("slow", slow_down),
            ("hang", hang),
        ):
            b.handle(op, handler)
        await b.beat()
        await a.beat()
        assert set(a.live) == {"h:1:a", "h:2:b"}
        assert a.alive("h:2:b")

        assert await a.request("h:2:b", "echo", {"text": "привет"}) == {"echo": "привет"}
        with pytest.raises(InvalidState) as refused:
            await a.request("h:2:b", "refuse", {"why": "not joined"})
        assert refused.value.to_wire() == {
            "code": "invalid_state",
            "message": "Join the room first",
            "details": {"why": "not joined"},
        }
        with pytest.raises(RateLimited) as limited:
            await a.request("h:2:b", "slow", {})
        assert limited.value.details == {"retry_after": 3}
        with pytest.raises(Unavailable, match="did not answer in time"):
            await a.request("h:2:b", "hang", {})
        with pytest.raises(Unavailable, match="does not answer that"):
            await a.request("h:2:b", "no-such-op", {})

    # b stopped: it left at once; a request to it is refused without waiting.
    async with _node(redis_server.url, "h:1:a") as a:
        assert set(await a.read_nodes()) == {"h:1:a"}
        assert not a.alive("h:2:b")
        with pytest.raises(Unavailable, match="gone"):
            await a.request("h:2:b", "echo", {"text": "?"})


async def test_a_node_that_stops_beating_is_dead_after_its_lost_time(
    redis_server: RedisServer,
) -> None:
    async with _node(redis_server.url, "h:1:a") as a, _node(redis_server.url, "h:2:b") as b:
        await a.beat()
        assert a.alive("h:2:b")
        for task in b._tasks:  # b hangs: no more heartbeats, no answers
            task.cancel()
        # Its record lives 1 s (node_lost_seconds) from its last beat.
        async with asyncio.timeout(5):
            while a.alive("h:2:b"):  # noqa: ASYNC110  (a's heartbeat reads the records)
                await asyncio.sleep(0.1)
        assert set(await a.read_nodes()) == {"h:1:a"}
