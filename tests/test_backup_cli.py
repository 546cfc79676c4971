"""``telemed backup`` and ``telemed restore``, the real command line in subprocesses, on
the embedded SQLite default: a backup taken while the server process runs and takes
uploads, restored into another data directory, served from there."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
from alembic.script import ScriptDirectory

from telemed import db
from telemed.accounts import consent
from tests import samples
from tests.documents_form import document_form
from tests.nodes import stop_node
from tests.servers import free_port, http, wait_until_healthy
from tests.test_cli import cli_env, query, run_cli

PASSWORD = "Patient-Pass-2026"


def _start(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "telemed", "serve", "--port", str(port)],
            env=cli_env(
                data,
                TELEMED_HOST="127.0.0.1",
                TELEMED_WORKER_INTERVAL_SECONDS="0",
                # This patient uploads far more than one a second.
                TELEMED_RATE_LIMITS='{"write.user": "100000/60"}',
            ),
            cwd=data.parent,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    wait_until_healthy(f"http://127.0.0.1:{port}", server, log)
    return server


async def _upload(session: aiohttp.ClientSession, base: str, token: str, n: int) -> dict[str, Any]:
    async with session.post(
        f"{base}/api/v1/documents",
        data=document_form(samples.pdf(f"Документ {n}"), f"doc-{n}.pdf"),
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status == 201, await response.text()
        return dict(await response.json())


async def _content(session: aiohttp.ClientSession, base: str, token: str, doc: str) -> bytes:
    async with session.get(
        f"{base}/api/v1/documents/{doc}/content", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200, doc
        return await response.read()


def _backup(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(data, "backup", *args)


async def test_backup_of_a_running_server_restores_and_serves(tmp_path: Path) -> None:
    source, target, backups = tmp_path / "source", tmp_path / "target", tmp_path / "backups"
    for folder in (source, target, backups):
        folder.mkdir()
    # The secret development mode generates into the data directory when it first needs it.
    (source / "secret_key").write_text("generated-secret-" + "s" * 40)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(source, port, tmp_path / "source.log")
    try:
        status, registered = http(
            "POST",
            f"{base}/api/v1/auth/register",
            {
                "full_name": "Сидорова Анна Петровна",
                "birth_date": "1975-03-04",
                "phone": "+79004445566",
                "password": PASSWORD,
                "consent_version": consent.CURRENT.version,
            },
        )
        assert status == 201, registered
        token = registered["token"]
        async with aiohttp.ClientSession() as session:
            documents = {}
            for n in range(3):
                document = await _upload(session, base, token, n)
                documents[document["id"]] = await _content(session, base, token, document["id"])
            # The backup runs while the server keeps taking uploads.
            backup = asyncio.create_task(asyncio.to_thread(_backup, source, str(backups)))
            n = 3
            while not backup.done():
                await _upload(session, base, token, n)
                n += 1
                await asyncio.sleep(0.02)  # a steady stream, not a flood
            done = await backup
    finally:
        stop_node(server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backup written: ")
    assert "sqlite database at schema" in done.stdout
    (archive,) = backups.iterdir()
    assert archive.name.startswith("telemed-backup-")
    assert archive.suffix == ".tar"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        first = tar.extractfile(names[0])
        assert first is not None
        manifest = json.loads(first.read())
    assert names[0] == "manifest.json"
    assert manifest["format"] == "telemed-backup"
    head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    assert manifest["database"]["schema_revision"] == head
    assert manifest["referenced"]["document"] >= 3
    assert manifest["missing"] == []
    listed = {entry["path"] for entry in manifest["files"]}
    assert listed == set(names[1:])
    assert "files/secret_key" in listed

    restored = run_cli(target, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert f"schema {head} → {head}" in restored.stdout
    rows = query(target, "SELECT id, sha256 FROM document")
    assert len(rows) == manifest["referenced"]["document"]
    for document_id, sha256 in rows:
        path = target / "documents" / document_id[:2] / document_id
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert (target / "secret_key").read_text() == (source / "secret_key").read_text()

    # Served from the restored data directory, the same sign-in reads the same bytes.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(target, port, tmp_path / "target.log")
    try:
        status, login = http(
            "POST", f"{base}/api/v1/auth/login", {"login": "+79004445566", "password": PASSWORD}
        )
        assert status == 200, login
        async with aiohttp.ClientSession() as session:
            for document_id, content in documents.items():
                assert await _content(session, base, login["token"], document_id) == content
    finally:
        stop_node(server)

    # Again into the same place: refused, in one line, and nothing changed.
    before = query(target, "SELECT id FROM document ORDER BY id")
    again = run_cli(target, "restore", str(archive))
    assert again.returncode == 2
    assert (
        again.stderr.strip()
        .splitlines()[-1]
        .startswith("telemed: The installation already holds data")
    )
    assert "Traceback" not in again.stderr
    assert query(target, "SELECT id FROM document ORDER BY id") == before
    forced = run_cli(target, "restore", "--force", str(archive))
    assert forced.returncode == 0, forced.stderr
    assert query(target, "SELECT id FROM document ORDER BY id") == before


def test_a_damaged_backup_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli(data, "demo").returncode == 0
    written = _backup(data, str(tmp_path / "good.tar"))
    assert written.returncode == 0, written.stderr
    damaged = tmp_path / "damaged.tar"
    raw = bytearray((tmp_path / "good.tar").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a byte of the database's copy, by far the largest member
    damaged.write_bytes(bytes(raw))
    empty = tmp_path / "empty"
    result = run_cli(empty, "restore", str(damaged))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("telemed: The backup is damaged"), result.stderr
    assert "database/telemed.sqlite3: the SHA-256 differs" in last
    assert "Traceback" not in result.stderr
    assert not (empty / "telemed.db").exists()


def test_a_referenced_file_missing_from_the_installation_fails_the_backup(tmp_path: Path) -> None:
    """The backup is written, reports the missing file, and exits 1 (for cron to mail)."""
    data = tmp_path / "data"
    assert run_cli(data, "demo").returncode == 0
    owner = query(data, "SELECT id FROM user_account WHERE role = 'patient'")[0]
    document_id = "0123456789abcdef0123456789abcdef"
    with closing(sqlite3.connect(data / "telemed.db")) as connection:
        connection.execute(
            "INSERT INTO document (id, owner_id, kind, title, file_name, content_type, size, "
            "sha256, created_at) VALUES (?, ?, 'other', 't', 'f.pdf', 'application/pdf', 1, "
            "?, '2026-12-06 09:00:00')",
            (document_id, owner[0], "0" * 64),
        )
        connection.commit()
    result = _backup(data, str(tmp_path))
    assert result.returncode == 1
    assert "MISSING from the installation" in result.stdout
    assert "lacks files its database refers to" in result.stderr
    (archive,) = tmp_path.glob("telemed-backup-*.tar")
    with tarfile.open(archive) as tar:
        first = tar.extractfile("manifest.json")
        assert first is not None
        manifest = json.loads(first.read())
    assert manifest["missing"] == [
        {
            "path": f"documents/01/{document_id}",
            "kind": "document",
            "id": "01234567-89ab-cdef-0123-456789abcdef",
            "reason": "missing",
        }
    ]
