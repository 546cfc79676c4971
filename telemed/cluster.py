"""This process as one node among the processes and machines that share Redis: its
heartbeat and load, which nodes are alive, and requests from one node to another.

Each node keeps a record ``telemed:node:<id>`` (its load, JSON) that lives
``TELEMED_NODE_LOST_SECONDS`` and is written again every
``TELEMED_NODE_HEARTBEAT_SECONDS``: a node whose record is gone is dead (killed, or cut
off from Redis). ``telemed:nodes`` lists the nodes that registered; a dead one is
dropped from it by whichever node notices first.

A request goes to a node on its channel ``telemed:rpc:<id>`` (Redis pub/sub) with the
asking node's id and a request id; the answer comes back on the asking node's channel.
An error the handler raises (``TelemedError``) travels back in the wire's error shape
and is raised again on the asking side; a node that does not answer within
``TELEMED_NODE_REQUEST_TIMEOUT_SECONDS`` is ``Unavailable``. Pub/sub keeps nothing: a
request to a node that is not listening is simply not answered, which is what the
time-out is for.

Without Redis there is one node, this one, and a request to it is a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio
from redis.exceptions import RedisError

from telemed import errors
from telemed.errors import TelemedError, Unavailable
from telemed.settings import Settings

logger = logging.getLogger(__name__)

NODES = "telemed:nodes"

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Answers one kind of request (JSON data in, JSON data out)."""
Beat = Callable[[], Awaitable[None]]
"""Runs after each heartbeat, once the live nodes are known again."""


def node_key(node: str) -> str:
    return f"telemed:node:{node}"


def rpc_channel(node: str) -> str:
    return f"telemed:rpc:{node}"


@dataclass(frozen=True)
class Counts:
    """What a node carries, for placing rooms."""

    rooms: int = 0
    streams: int = 0
    sockets: int = 0


@dataclass(frozen=True)
class NodeLoad:
    """A node's record: what it carries, its recent CPU (a fraction of one core), and
    whether it takes new rooms."""

    rooms: int = 0
    streams: int = 0
    sockets: int = 0
    cpu: float = 0.0
    draining: bool = False
    max_rooms: int = 0
    max_streams: int = 0

    def takes_rooms(self) -> bool:
        """Not stopping, and below its limits (0: no limit)."""
        return (
            not self.draining
            and (self.max_rooms == 0 or self.rooms < self.max_rooms)
            and (self.max_streams == 0 or self.streams < self.max_streams)
        )


class CpuMeter:
    """This process's CPU time (all threads) over wall time since the last reading."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()
        self.last = 0.0

    def read(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        if wall > self._wall:
            self.last = round((cpu - self._cpu) / (wall - self._wall), 3)
        self._cpu, self._wall = cpu, wall
        return self.last


STOP_WAIT_SECONDS = 5.0
"""How long a stopping node waits for its listener, heartbeat and requests it serves."""


class Cluster:
    """This node, the live nodes, and requests between them (``client`` None: alone)."""

    def __init__(
        self,
        *,
        node_id: str,
        settings: Settings,
        client: redis.asyncio.Redis | None,
        counts: Callable[[], Counts],
    ) -> None:
        self.node_id = node_id
        self.draining = False
        self._settings = settings
        self._client = client
        self._counts = counts
        self._cpu = CpuMeter()
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._beats: list[Beat] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self.live: dict[str, NodeLoad] = {node_id: NodeLoad()}
        """The live nodes as of the last heartbeat (this one always)."""

    @property
    def shared(self) -> bool:
        """Whether other nodes may exist (Redis is configured)."""
        return self._client is not None

    def handle(self, op: str, handler: Handler) -> None:
        """Answer requests named ``op`` with ``handler``."""
        self._handlers[op] = handler

    def on_beat(self, beat: Beat) -> None:
        self._beats.append(beat)

    def load(self) -> NodeLoad:
        counts = self._counts()
        return NodeLoad(
            rooms=counts.rooms,
            streams=counts.streams,
            sockets=counts.sockets,
            cpu=self._cpu.last,
            draining=self.draining,
            max_rooms=self._settings.node_max_rooms,
            max_streams=self._settings.node_max_streams,
        )

    def alive(self, node: str) -> bool:
        """Whether ``node`` was alive at the last heartbeat."""
        return node == self.node_id or node in self.live

    async def start(self) -> None:
        """Register, listen for requests, and beat until ``stop``."""
        if self._client is None:
            return
        self._tasks.append(asyncio.create_task(self._listen(), name="telemed-cluster-listen"))
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)
        await self.beat()
        self._tasks.append(asyncio.create_task(self._beat_forever(), name="telemed-cluster-beat"))

    async def stop(self) -> None:
        """Stop beating and listening, and leave: the other nodes see this one gone at
        once, instead of after ``TELEMED_NODE_LOST_SECONDS``."""
        for task in self._tasks:
            task.cancel()
        # Waited for, but not for ever: a task whose cancellation the Redis client
        # swallowed (seen once in CI: a node that went on beating after its stop) must
        # not hold up the node's stop, nor a test's.
        waiting = [*self._tasks, *self._serving]
        if waiting:
            done, stuck = await asyncio.wait(waiting, timeout=STOP_WAIT_SECONDS)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: it was logged where it happened
            if stuck:
                logger.warning("node stop: %d of its tasks did not end in time", len(stuck))
                for task in stuck:
                    task.cancel()  # again: a cancellation swallowed once lands at the next wait
        self._tasks.clear()
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.delete(node_key(self.node_id))
                    pipe.srem(NODES, self.node_id)
                    await pipe.execute()

    async def check(self) -> None:
        """For ``/readyz``: the request listener runs."""
        if self._client is None:
            return
        listener = self._tasks[0] if self._tasks else None
        if listener is None or listener.done() or not self._subscribed.is_set():
            raise RuntimeError("the node's request listener is not running")

    async def beat(self) -> None:
        """Write this node's record, read the others', then run the heartbeat's work."""
        if self._client is None:
            self._cpu.read()
            self.live = {self.node_id: self.load()}
        else:
            try:
                await self._write_record()
                await self.read_nodes()
            except (RedisError, OSError, TimeoutError, Unavailable):
                logger.warning("node heartbeat: redis unavailable")
                return
        for beat in self._beats:
            try:
                await beat()
            except Exception:
                logger.exception("node heartbeat work failed")

    async def read_nodes(self) -> dict[str, NodeLoad]:
        """The live nodes and their records, read now (and kept as ``live``); the dead
        ones are forgotten. ``Unavailable`` when Redis does not answer."""
        if self._client is None:
            return {self.node_id: self.load()}
        try:
            members = sorted(
                m.decode() if isinstance(m, bytes) else m
                for m in await self._client.smembers(NODES)
            )
            records = await self._client.mget([node_key(m) for m in members]) if members else []
            live: dict[str, NodeLoad] = {}
            dead = []
            for member, record in zip(members, records, strict=True):
                if record is None:
                    dead.append(member)
                else:
                    live[member] = NodeLoad(**orjson.loads(record))
            if dead:
                await self._client.srem(NODES, *dead)
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable("The nodes' registry cannot be reached now") from exc
        self.live = live | {self.node_id: self.load()}
        return live

    async def request(self, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Ask ``node`` to do ``op``; its answer, or its error raised here."""
        if node == self.node_id:
            return await self._handlers[op](args)
        if self._client is None:
            raise Unavailable("No such node", details={"node": node})
        request_id = uuid.uuid4().hex
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        message = {"id": request_id, "from": self.node_id, "op": op, "args": args}
        try:
            listeners = await self._client.publish(rpc_channel(node), orjson.dumps(message))
            if not listeners:
                raise Unavailable("The node holding this is gone", details={"node": node})
            async with asyncio.timeout(self._settings.node_request_timeout_seconds):
                return await answer
        except TimeoutError:
            raise Unavailable(
                "The node holding this did not answer in time", details={"node": node}
            ) from None
        except (RedisError, OSError) as exc:
            raise Unavailable("The nodes cannot reach each other now") from exc
        finally:
            self._pending.pop(request_id, None)

    async def _write_record(self) -> None:
        assert self._client is not None
        self._cpu.read()
        record = orjson.dumps(asdict(self.load()))
        lifetime = int(self._settings.node_lost_seconds * 1000)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.set(node_key(self.node_id), record, px=lifetime)
            pipe.sadd(NODES, self.node_id)
            await pipe.execute()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.node_heartbeat_seconds)
            await self.beat()

    async def _listen(self) -> None:
        """Take requests and answers from this node's channel; after a Redis outage,
        subscribe again."""
        assert self._client is not None
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(rpc_channel(self.node_id))
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._take(message["data"])
            except (RedisError, OSError, TimeoutError):
                self._subscribed.clear()
                logger.warning("node request listener: redis unavailable; subscribing again")
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_WAIT_SECONDS):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _take(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            logger.warning("node request listener: a message that is not JSON")
            return
        if "reply" in message:
            waiting = self._pending.get(message["reply"])
            if waiting is not None and not waiting.done():
                if message["ok"]:
                    waiting.set_result(message["data"])
                else:
                    waiting.set_exception(from_wire(message["error"]))
            return
        task = asyncio.create_task(self._serve(message))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, message: dict[str, Any]) -> None:
        assert self._client is not None
        reply: dict[str, Any] = {"reply": message["id"]}
        handler = self._handlers.get(message["op"])
        try:
            if handler is None:
                raise Unavailable("This node does not answer that", details={"op": message["op"]})
            reply |= {"ok": True, "data": await handler(message["args"])}
        except TelemedError as exc:
            reply |= {"ok": False, "error": exc.to_wire()}
        except Exception:
            logger.exception("node request %s failed", message["op"])
            reply |= {"ok": False, "error": errors.Internal("Something went wrong").to_wire()}
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._client.publish(rpc_channel(message["from"]), orjson.dumps(reply))


def from_wire(error: dict[str, Any]) -> TelemedError:
    """The error a node answered with, as the same kind of exception here."""
    kind = errors.BY_CODE.get(error.get("code", ""), errors.Internal)
    raised = TelemedError.__new__(kind)
    TelemedError.__init__(raised, error.get("message", ""), details=error.get("details") or {})
    return raised
