"""The baseline: a bare python-socketio broadcast server (no auth, no storage).

``python bench/bare_server.py PORT [--redis URL]`` (with Redis: python-socketio's Redis
manager, for several processes sharing rooms). Same wire protocol as Telemed's chat for the bench:
``consultation:subscribe {consultation_id}`` joins a room, ``chat:send {...}`` is
acknowledged and broadcast to the room as ``chat:message_created``.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import socketio
from aiohttp import web


def main(port: int, redis_url: str | None) -> None:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(async_mode="aiohttp", async_handlers=False, client_manager=manager)
    app = web.Application()
    sio.attach(app)
    counter = itertools.count(1)

    async def subscribe(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.enter_room(sid, data["consultation_id"])
        return {"ok": True, "data": {"messages": []}}

    async def send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        message = {**data, "seq": next(counter)}
        await sio.emit("chat:message_created", message, room=data["consultation_id"])
        return {"ok": True, "data": {"message": message}}

    sio.on("consultation:subscribe", handler=subscribe)
    sio.on("chat:send", handler=send)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    arguments = argparse.ArgumentParser()
    arguments.add_argument("port", type=int)
    arguments.add_argument("--redis")
    parsed = arguments.parse_args()
    main(parsed.port, parsed.redis)
