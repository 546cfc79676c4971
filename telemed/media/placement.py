"""Which node holds each consultation's video room, and the room's state that outlives
its node, in Redis.

A room's pin, ``telemed:room:<consultation>``, names the node that holds it. The first
join places the room (``place``): on the live node that takes rooms and holds the
fewest, chosen and pinned in one script, so that two nodes placing the same room at
once agree on one owner. A pin that names a dead node is replaced the same way (compare
and set: only if it still names that node). Each node's pinned rooms are a set,
``telemed:rooms-of:<node>``, which is what "fewest" counts: it moves with each
placement, not a heartbeat later, so twenty rooms placed at once spread evenly.

The owner keeps its pins (``keep``, every heartbeat): it renews them, puts back one
that vanished (a Redis restart), and learns of one another node took (its room there
must close). It releases a pin when the room closes or the node stops.

Without Redis there is one node, and ``LonePlacement`` pins every room to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
import redis.asyncio
from redis.exceptions import RedisError

from telemed.errors import Unavailable
from telemed.media.room import RoomState

logger = logging.getLogger(__name__)

PIN_LIFETIME_MS = 3_600_000
"""A pin not renewed for an hour is gone (its owner renews it every heartbeat)."""
STATE_LIFETIME_SECONDS = 86_400
"""A room's state outlives its last change by a day (a consultation is shorter)."""

# KEYS: the pin, then each candidate's room set; ARGV: the consultation, the dead owner
# the pin may still name ("" for none), the pin's lifetime, then the candidates (in the
# order of their sets; ties go to the first).
_PLACE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] then
  return current
end
local best, fewest = 2, nil
for i = 2, #KEYS do
  local count = redis.call('SCARD', KEYS[i])
  if fewest == nil or count < fewest then
    best, fewest = i, count
  end
end
redis.call('SET', KEYS[1], ARGV[best + 2], 'PX', ARGV[3])
redis.call('SADD', KEYS[best], ARGV[1])
return ARGV[best + 2]
"""

# KEYS: the pin, the node's room set; ARGV: the node, the consultation.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""

# KEYS: the node's room set, then its rooms' pins; ARGV: the node, the pins' lifetime,
# the room set's lifetime, then the consultations (in the order of their pins). Returns
# the consultations whose pin names another node.
_KEEP = """
local lost = {}
for i = 2, #KEYS do
  local current = redis.call('GET', KEYS[i])
  if current == false or current == ARGV[1] then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    redis.call('SADD', KEYS[1], ARGV[i + 2])
  else
    table.insert(lost, ARGV[i + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return lost
"""


def pin_key(consultation_id: str) -> str:
    return f"telemed:room:{consultation_id}"


def rooms_key(node: str) -> str:
    return f"telemed:rooms-of:{node}"


def state_key(consultation_id: str) -> str:
    return f"telemed:room-state:{consultation_id}"


class RedisPlacement:
    """Room pins in Redis, shared by every node."""

    def __init__(self, client: redis.asyncio.Redis, *, node: str, node_lost_seconds: float) -> None:
        self._client = client
        self._node = node
        self._set_lifetime_ms = int(node_lost_seconds * 1000)
        self._place = client.register_script(_PLACE)
        self._release = client.register_script(_RELEASE)
        self._keep = client.register_script(_KEEP)

    async def owner(self, consultation_id: str) -> str | None:
        """The node the room is pinned to, if any (alive or not)."""
        try:
            found = await self._client.get(pin_key(consultation_id))
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable("The rooms' directory cannot be reached now") from exc
        return found.decode() if isinstance(found, bytes) else found

    async def place(
        self, consultation_id: str, *, candidates: Sequence[str], replacing: str | None
    ) -> str:
        """Pin the room to the candidate with the fewest rooms, unless it is pinned
        already (to another node than the dead ``replacing``): returns the owner."""
        if not candidates:
            raise Unavailable("No node can take a video room now: try again in a moment")
        try:
            owner = await self._place(
                keys=[pin_key(consultation_id), *(rooms_key(node) for node in candidates)],
                args=[consultation_id, replacing or "", PIN_LIFETIME_MS, *candidates],
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable("The rooms' directory cannot be reached now") from exc
        return owner.decode() if isinstance(owner, bytes) else str(owner)

    async def release(self, consultation_id: str) -> None:
        """This node no longer holds the room."""
        try:
            await self._release(
                keys=[pin_key(consultation_id), rooms_key(self._node)],
                args=[self._node, consultation_id],
            )
        except (RedisError, OSError, TimeoutError):
            logger.warning("room %s: its pin could not be released", consultation_id)

    async def forget(self, consultation_id: str, *, owner: str) -> None:
        """A dead node's pin of a room that is over."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.delete(pin_key(consultation_id), state_key(consultation_id))
                pipe.srem(rooms_key(owner), consultation_id)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            logger.warning("room %s: its pin could not be removed", consultation_id)

    async def keep(self, consultation_ids: Sequence[str]) -> list[str]:
        """Renew this node's pins (and put back vanished ones); returns the rooms whose
        pin now names another node."""
        lost = await self._keep(
            keys=[rooms_key(self._node), *(pin_key(cid) for cid in consultation_ids)],
            args=[self._node, PIN_LIFETIME_MS, self._set_lifetime_ms, *consultation_ids],
        )
        return [item.decode() if isinstance(item, bytes) else str(item) for item in lost]


class LonePlacement:
    """One node: every room is this node's."""

    def __init__(self, *, node: str) -> None:
        self._node = node

    async def owner(self, consultation_id: str) -> str | None:
        return self._node

    async def place(
        self, consultation_id: str, *, candidates: Sequence[str], replacing: str | None
    ) -> str:
        if self._node not in candidates:
            raise Unavailable("The server is stopping: try again in a moment")
        return self._node

    async def release(self, consultation_id: str) -> None:
        return None

    async def forget(self, consultation_id: str, *, owner: str) -> None:
        return None

    async def keep(self, consultation_ids: Sequence[str]) -> list[str]:
        return []


class RedisStateStore:
    """Rooms' ``RoomState`` in Redis, for the room's next node. Best effort: without
    Redis for a moment, a room goes on with what it holds."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    async def load(self, consultation_id: str) -> RoomState:
        try:
            found = await self._client.get(state_key(consultation_id))
        except (RedisError, OSError, TimeoutError):
            logger.warning("room %s: its state could not be read", consultation_id)
            return RoomState()
        if found is None:
            return RoomState()
        data = orjson.loads(found)
        return RoomState(recording=bool(data["recording"]), consents=dict(data["consents"]))

    async def save(self, consultation_id: str, state: RoomState) -> None:
        value = orjson.dumps({"recording": state.recording, "consents": state.consents})
        try:
            await self._client.set(state_key(consultation_id), value, ex=STATE_LIFETIME_SECONDS)
        except (RedisError, OSError, TimeoutError):
            logger.warning("room %s: its state could not be saved", consultation_id)

    async def forget(self, consultation_id: str) -> None:
        try:
            await self._client.delete(state_key(consultation_id))
        except (RedisError, OSError, TimeoutError):
            logger.warning("room %s: its state could not be removed", consultation_id)
