"""Uploads in flight survive another process starting on the same data directory, and
only uploads that are certainly abandoned are cleared."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import aiohttp

from telemed.documents.storage import DocumentStore
from tests import samples
from tests.nodes import start_node, stop_node, wait_until_ready
from tests.servers import free_port


def test_only_abandoned_uploads_are_cleared(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path / "documents", abandoned_after=timedelta(hours=1))
    store.prepare()
    host = socket.gethostname().replace(".", "_")[:60]
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        files = {
            "of a process that ended": f"{host}.{gone.pid}.a1",
            "of a live process": f"{host}.{alive.pid}.b2",
            "of this process": f"{host}.{os.getpid()}.c3",
            "of another machine": "elsewhere.4242.d4",
            "old, from before": "elsewhere.4243.e5",
            "named otherwise": "leftover-without-a-name",
        }
        for name in files.values():
            (store.incoming / name).write_bytes(b"partial")
        old = time.time() - 2 * 3600
        os.utime(store.incoming / files["old, from before"], (old, old))
        removed = store.prepare()
        kept = {p.name for p in store.incoming.iterdir()}
    finally:
        alive.kill()
        alive.wait()
    assert removed == 2
    assert kept == {
        files["of a live process"],
        files["of this process"],
        files["of another machine"],
        files["named otherwise"],
    }


async def test_an_upload_survives_a_second_process_starting(tmp_path: Path) -> None:
    """Two processes on one data directory (one SQLite file, one documents folder): the
    second starts while the first receives an upload, which then completes."""
    data = tmp_path / "data"
    env = {"TELEMED_WORKER_INTERVAL_SECONDS": "0"}
    first_port, second_port = free_port(), free_port()
    with (
        (tmp_path / "first.log").open("wb") as first_log,
        (tmp_path / "second.log").open("wb") as second_log,
    ):
        first = start_node(first_port, env=env, data_dir=data, log=first_log, demo=True)
        second = None
        try:
            async with aiohttp.ClientSession() as http:
                await wait_until_ready(http, first_port, first)
                async with http.post(
                    f"http://127.0.0.1:{first_port}/api/v1/auth/login",
                    json={"login": "+79000000001", "password": "Patient-2026"},
                ) as response:
                    token = (await response.json())["token"]
                content = samples.pdf("Направление", pages=40)
                boundary = "two-processes"
                body = (
                    (
                        f"--{boundary}\r\n"
                        'Content-Disposition: form-data; name="kind"\r\n\r\nother\r\n'
                        f"--{boundary}\r\n"
                        'Content-Disposition: form-data; name="title"\r\n\r\nНаправление\r\n'
                        f"--{boundary}\r\n"
                        'Content-Disposition: form-data; name="file"; filename="n.pdf"\r\n\r\n'
                    ).encode()
                    + content
                    + f"\r\n--{boundary}--\r\n".encode()
                )
                reader, writer = await asyncio.open_connection("127.0.0.1", first_port)
                writer.write(
                    (
                        f"POST /api/v1/documents HTTP/1.1\r\nHost: 127.0.0.1:{first_port}\r\n"
                        f"Authorization: Bearer {token}\r\nConnection: close\r\n"
                        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n"
                    ).encode()
                )
                # Piece by piece, until the file is being received into its temporary
                # place (the parser reads a piece ahead of what it hands on).
                incoming = data / "documents" / "incoming"
                sent = 0
                while not any(incoming.iterdir()):
                    assert sent < len(body) // 2, "the upload has not begun"
                    writer.write(body[sent : sent + 512])
                    await writer.drain()
                    sent += 512
                    await asyncio.sleep(0.02)
                # The second process starts, and clears what a crash would have left.
                second = start_node(second_port, env=env, data_dir=data, log=second_log)
                await wait_until_ready(http, second_port, second)
                writer.write(body[sent:])
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                answer = await reader.read()
                writer.close()
                assert status == 201, answer
                # Either process serves the stored document.
                async with http.get(
                    f"http://127.0.0.1:{second_port}/api/v1/documents",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    documents = (await response.json())["items"]
                assert [d["title"] for d in documents] == ["Направление"]
                async with http.get(
                    f"http://127.0.0.1:{second_port}/api/v1/documents/{documents[0]['id']}/content",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    assert await response.read() == content
        finally:
            stop_node(first)
            if second is not None:
                stop_node(second)
    for log in ("first.log", "second.log"):
        assert "Traceback" not in (tmp_path / log).read_text()
