"""Rate limits: how often one user (or, signed out, one client address) may do a thing
that costs the service something.

Every action that costs a password hash, a row in the append-only audit trail, or a
message to other people has a limit, answered with ``RateLimited`` (HTTP 429 with
``Retry-After``, or the error ack on Socket.IO). Two kinds of counters do the counting:

- ``Limiter`` counts in this process, or in Redis when one is configured, so that every
  process of a deployment shares the count. It guards the frequent actions: any call that
  writes, and every Socket.IO event.
- Attempts that cost a password hash or an SMS, or that guess a secret (sign-in,
  registration, a password change, new credentials, password reset codes), are counted
  in the database instead (``telemed.accounts.service``): those counts must hold across
  processes and restarts even without Redis.

The limits are named; ``DEFAULT_LIMITS`` lists them, and ``TELEMED_RATE_LIMITS`` (JSON,
``{"name": "count/seconds"}``) overrides any of them.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis.asyncio
from redis.exceptions import RedisError

from telemed.errors import RateLimited

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    """At most ``count`` actions in any ``seconds``."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``"30/60"``: 30 actions a minute."""
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*", text)
        if found is None or int(found[1]) < 1 or float(found[2]) <= 0:
            raise ValueError(f"a limit is written count/seconds, like 30/60, not {text!r}")
        return cls(int(found[1]), float(found[2]))

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}"


DEFAULT_LIMITS: dict[str, Limit] = {
    # Any HTTP call that writes (audited reads included), per user.
    "write.user": Limit(120, 60),
    # FHIR reads and searches (``/fhir/R4``), per user: most write audit rows.
    "fhir.user": Limit(300, 60),
    # Any HTTP call that writes without signing in (sign-in, registration), per address.
    "write.address": Limit(60, 60),
    # Registrations per client address (each costs a password hash).
    "register.address": Limit(10, 3600),
    # Wrong current passwords on a password change, per user (each costs a hash).
    "password.user": Limit(5, 900),
    # New credentials a manager issues to one referred patient (each an SMS to them).
    "credentials.patient": Limit(3, 3600),
    # Password reset codes asked for one phone, and from one address (each an SMS),
    # whether or not the phone has an account.
    "reset.phone": Limit(5, 3600),
    "reset.address": Limit(20, 3600),
    # Tries of a reset code, per phone and per address (a right code uncounts them).
    "reset_code.phone": Limit(10, 3600),
    "reset_code.address": Limit(30, 3600),
    # Socket.IO: any event, per user.
    "event.user": Limit(900, 60),
    # Chat messages per user (``TELEMED_CHAT_RATE_PER_MINUTE`` sets it too).
    "chat.send": Limit(30, 60),
    # Socket.IO events that reach other people or the audit trail, per user.
    "chat.typing": Limit(30, 60),
    "chat.read": Limit(120, 60),
    "consultation.subscribe": Limit(60, 60),
    "room.join": Limit(20, 60),
    "room.leave": Limit(20, 60),
    "rtc.offer": Limit(30, 60),
    "rtc.answer": Limit(60, 60),
    "rtc.candidate": Limit(600, 60),  # a connection trickles a few to a few dozen
    "media.report": Limit(60, 60),
    "media.audio_only": Limit(30, 60),
    "media.stats": Limit(60, 60),  # a page reports every 2 s
    "recording.consent": Limit(10, 60),
    "recording.start": Limit(10, 60),
    "recording.stop": Limit(10, 60),
    "consultation.end": Limit(10, 60),
}


def resolve_limits(overrides: Mapping[str, str]) -> dict[str, Limit]:
    """The defaults with the operator's overrides; an unknown name is an error."""
    unknown = sorted(set(overrides) - set(DEFAULT_LIMITS))
    if unknown:
        raise ValueError(
            f"unknown rate limits {', '.join(unknown)}; known: {', '.join(DEFAULT_LIMITS)}"
        )
    return {
        name: Limit.parse(overrides[name]) if name in overrides else default
        for name, default in DEFAULT_LIMITS.items()
    }


def _refuse(retry_after: float) -> RateLimited:
    return RateLimited(
        "Too many requests; wait a little and try again",
        retry_after_seconds=max(1, math.ceil(retry_after)),
    )


class Limiter:
    """Counts actions per ``(limit, who)`` and refuses those over the limit.

    In this process: a sliding window (the times of the last ``count`` actions). With
    Redis (``share``): a fixed window per limit, shared by every process; if Redis fails,
    this process counts on its own until it answers again, so a Redis outage neither
    opens the gates nor stops the service.
    """

    SWEEP_EVERY = 4096  # hits between sweeps of idle keys (bounds the memory)

    def __init__(self, limits: Mapping[str, Limit], *, now: Callable[[], float]) -> None:
        self.limits = dict(limits)
        self._now = now
        self._redis: redis.asyncio.Redis | None = None
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._since_sweep = 0
        self._redis_failed_at = -math.inf

    def share(self, client: redis.asyncio.Redis) -> None:
        """Count in Redis, for every process of the deployment."""
        self._redis = client

    async def hit(self, name: str, who: str) -> None:
        """Count one action of ``who`` under the limit ``name``; ``RateLimited`` if it is
        one too many (a refused action is not counted)."""
        limit = self.limits[name]
        now = self._now()
        if self._redis is not None:
            try:
                await self._hit_shared(name, who, limit, now)
                return
            except RedisError:
                if now - self._redis_failed_at > 60:
                    logger.warning("rate limits: Redis is unreachable, counting in-process")
                self._redis_failed_at = now
        self._hit_local(name, who, limit, now)

    def _hit_local(self, name: str, who: str, limit: Limit, now: float) -> None:
        window = self._hits.setdefault((name, who), deque(maxlen=limit.count))
        while window and window[0] <= now - limit.seconds:
            window.popleft()
        if len(window) >= limit.count:
            raise _refuse(window[0] + limit.seconds - now)
        window.append(now)
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        idle = [
            key
            for key, window in self._hits.items()
            if not window or window[-1] <= now - self.limits[key[0]].seconds
        ]
        for key in idle:
            del self._hits[key]

    async def _hit_shared(self, name: str, who: str, limit: Limit, now: float) -> None:
        assert self._redis is not None
        index = int(now // limit.seconds)
        key = f"telemed:rate:{name}:{who}:{index}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, math.ceil(limit.seconds) + 1)
            count, _ = await pipe.execute()
        if int(count) > limit.count:
            raise _refuse((index + 1) * limit.seconds - now)
