"""The baseline: a bare python-socketio broadcast server (no auth, no storage).

``python bench/bare_server.py PORT``. Same wire protocol as Telemed's chat for the bench:
``consultation:subscribe {consultation_id}`` joins a room, ``chat:send {...}`` is
acknowledged and broadcast to the room as ``chat:message_created``.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import socketio
from aiohttp import web


def main(port: int) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp", async_handlers=False)
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
    main(int(sys.argv[1]))
