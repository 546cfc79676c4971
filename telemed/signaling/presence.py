"""Who of a consultation has a socket watching it, on every node.

Each node knows its own sockets. With Redis (several nodes), each watching socket is
also an entry of a sorted set per consultation, ``telemed:presence:<consultation>``,
whose score is the moment the entry expires: the node that holds the socket renews its
entries every third of the lifetime (heartbeat), and removes them when the socket leaves
or the node stops. Entries of a node that died without stopping expire; a node that
still has watchers of that consultation removes them at its next heartbeat and says so
(``presence:changed``). Everyone reads the same set, so every node tells the same list.

Redis trouble never blocks a subscribe: the node answers with what it knows itself, and
the next heartbeat puts its entries back.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime

import redis.asyncio
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Changed = Callable[[str], Awaitable[None]]
"""Called with a consultation id whose list of present users changed."""


class Presence:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # consultation id → {sid: user id}: this node's sockets.
        self._watching: dict[str, dict[str, str]] = defaultdict(dict)
        self._redis: redis.asyncio.Redis | None = None
        self._node = ""
        self._lifetime = 30.0

    def share(self, client: redis.asyncio.Redis, *, node: str, lifetime_seconds: float) -> None:
        """Keep presence in Redis too, for all the nodes."""
        self._redis = client
        self._node = node
        self._lifetime = lifetime_seconds

    @property
    def heartbeat_seconds(self) -> float:
        return self._lifetime / 3

    async def join(self, consultation_id: str, sid: str, user_id: str) -> None:
        self._watching[consultation_id][sid] = user_id
        if self._redis is not None:
            with self._tolerated("join"):
                await self._add(consultation_id, {sid: user_id})

    async def leave(self, consultation_id: str, sid: str) -> None:
        user_id = self._watching.get(consultation_id, {}).pop(sid, None)
        if consultation_id in self._watching and not self._watching[consultation_id]:
            del self._watching[consultation_id]
        if self._redis is not None and user_id is not None:
            with self._tolerated("leave"):
                await self._redis.zrem(_key(consultation_id), self._member(sid, user_id))

    def rooms_of(self, sid: str) -> list[str]:
        """The consultations this node's socket ``sid`` watches."""
        return [cid for cid, sids in self._watching.items() if sid in sids]

    async def online(self, consultation_id: str) -> list[str]:
        """The ids of the users present, sorted."""
        if self._redis is not None:
            with self._tolerated("read"):
                members = await self._redis.zrangebyscore(
                    _key(consultation_id), self._now(), "+inf"
                )
                return sorted({_user_of(member) for member in members})  # type: ignore[arg-type]
        return sorted(set(self._watching.get(consultation_id, {}).values()))

    async def heartbeat(self, changed: Changed) -> None:
        """Renew this node's entries; drop the expired ones of the consultations this
        node watches, and report those whose list changed by it."""
        if self._redis is None:
            return
        with self._tolerated("heartbeat"):
            watching = {cid: dict(sids) for cid, sids in self._watching.items()}
            async with self._redis.pipeline(transaction=False) as pipe:
                for cid, sids in watching.items():
                    pipe.zremrangebyscore(_key(cid), "-inf", self._now())
                    self._queue_add(pipe, cid, sids)
                results = await pipe.execute()
            removed = results[0::3] if watching else []
            for cid, count in zip(watching, removed, strict=True):
                if count:
                    await changed(cid)

    async def forget_node(self) -> None:
        """Remove this node's entries (the node is stopping)."""
        if self._redis is None or not self._watching:
            return
        with self._tolerated("stop"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for cid, sids in self._watching.items():
                    pipe.zrem(_key(cid), *(self._member(s, u) for s, u in sids.items()))
                await pipe.execute()

    async def _add(self, consultation_id: str, sids: dict[str, str]) -> None:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            self._queue_add(pipe, consultation_id, sids)
            await pipe.execute()

    def _queue_add(
        self, pipe: redis.asyncio.client.Pipeline, cid: str, sids: dict[str, str]
    ) -> None:
        expires = self._now() + self._lifetime
        pipe.zadd(_key(cid), {self._member(s, u): expires for s, u in sids.items()})
        pipe.expire(_key(cid), int(self._lifetime) + 1)

    def _member(self, sid: str, user_id: str) -> str:
        return f"{user_id}|{self._node}|{sid}"

    def _now(self) -> float:
        return self._clock().timestamp()

    @contextlib.contextmanager
    def _tolerated(self, what: str) -> Iterator[None]:
        try:
            yield
        except (TimeoutError, RedisError, OSError):
            logger.warning("presence %s: redis unavailable", what)


def _key(consultation_id: str) -> str:
    return f"telemed:presence:{consultation_id}"


def _user_of(member: bytes | str) -> str:  # members come without scores
    text = member.decode() if isinstance(member, bytes) else member
    return text.split("|", 1)[0]
