"""Backups that restore (``telemed.backup``): a live installation backed up while it
takes writes, restored elsewhere, and read back through the API; damaged archives and
occupied targets refused with nothing written; an older schema migrated on restore.

Each test that takes ``settings`` runs on SQLite and on a real PostgreSQL server
(``pg_dump``, ``pg_restore`` and ``psql`` from the same installation as the server)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestServer
from alembic.script import ScriptDirectory
from sqlmodel import select

from telemed import db, keys
from telemed.accounts import consent
from telemed.app import create_app
from telemed.backup import (
    _DROPS,
    Written,
    _pipe_restore,
    _Postgres,
    _postgres_connect,
    create_backup,
    postgres_tool,
    restore_backup,
    verify_archive,
)
from telemed.backup_manifest import (
    DATABASE_MEMBER,
    FileEntry,
    Manifest,
    Reference,
    check_contents,
    dump_manifest,
    missing_references,
    parse_manifest,
    safe_relative,
    unreferenced_count,
)
from telemed.clock import FakeClock
from telemed.documents.models import Document
from telemed.errors import BackupFailed, InvalidBackup, InvalidValue, NotEmpty
from telemed.media.models import Recording
from telemed.media.recordings import RecordingLog
from telemed.settings import Settings
from tests import samples
from tests.conftest import TEST_SETTINGS, AppClient
from tests.factories import bearer
from tests.flows import api, ok, upload
from tests.realtime import Peer, connect, send
from tests.servers import PostgresServer
from tests.test_conclusions_and_jobs import completed_consultation, conclusion_body

M = TypeVar("M", Document, Recording)
MakeClient = Callable[..., Awaitable[AppClient]]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The writers below send far more than a person would in a minute of the fake clock.
    many = "100000/60"
    limits = {"write.user": many, "chat.send": many, "event.user": many}
    return {"rate_limits": {**TEST_SETTINGS["rate_limits"], **limits}}


# The manifest's rules (pure).


def _manifest(**fields: Any) -> Manifest:
    database = DATABASE_MEMBER["sqlite"]
    files = [
        FileEntry(path=database, size=3, sha256=hashlib.sha256(b"abc").hexdigest()),
        FileEntry(path="files/documents/ab/abcd", size=1, sha256=hashlib.sha256(b"x").hexdigest()),
    ]
    values: dict[str, Any] = {
        "telemed_version": "0.1.0",
        "created_at": datetime(2026, 12, 6, 9, 0, tzinfo=UTC),
        "database": {"backend": "sqlite", "path": database, "schema_revision": "0009"},
        "files": files,
    }
    return Manifest.model_validate(values | fields)


def test_a_manifest_reads_back_as_written() -> None:
    manifest = _manifest()
    assert parse_manifest(dump_manifest(manifest)) == manifest
    assert manifest.total_bytes == 4
    assert manifest.complete


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: "not json", "not JSON"),
        (lambda m: {**m, "format": "other"}, "Not a Telemed backup"),
        (lambda m: {**m, "format_version": 2}, "format version"),
        (lambda m: {**m, "created_at": "yesterday"}, "malformed"),
        (
            lambda m: {**m, "files": [*m["files"], {**m["files"][1], "path": "files/../x"}]},
            "unsafe",
        ),
        (
            lambda m: {**m, "files": [*m["files"], {**m["files"][1], "path": "/etc/passwd"}]},
            "unsafe",
        ),
        (lambda m: {**m, "files": [*m["files"], m["files"][1]]}, "twice"),
        (lambda m: {**m, "files": m["files"][1:]}, "no checksum for the database"),
        (lambda m: {**m, "files": [*m["files"], {**m["files"][1], "path": "etc/x"}]}, "outside"),
        (
            lambda m: {**m, "database": {**m["database"], "path": "files/documents/ab/abcd"}},
            "not where",
        ),
    ],
)
def test_a_bad_manifest_is_refused_with_a_reason(
    change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    data = json.loads(dump_manifest(_manifest()))
    changed = change(data)
    raw = changed.encode() if isinstance(changed, str) else json.dumps(changed).encode()
    with pytest.raises(InvalidBackup) as refused:
        parse_manifest(raw)
    assert message in refused.value.message
    assert refused.value.to_wire()["code"] == "invalid_backup"


def test_contents_are_checked_against_the_manifest() -> None:
    manifest = _manifest()
    whole = {entry.path: (entry.size, entry.sha256) for entry in manifest.files}
    assert check_contents(manifest, whole) == []
    database, document = (entry.path for entry in manifest.files)
    short = whole | {document: (0, whole[document][1])}
    assert check_contents(manifest, short) == [f"{document}: 0 bytes, the manifest says 1"]
    other = whole | {document: (1, "0" * 64)}
    assert check_contents(manifest, other) == [
        f"{document}: the SHA-256 differs from the manifest's"
    ]
    without = {database: whole[database]}
    assert check_contents(manifest, without) == [f"{document}: missing from the archive"]
    extra = whole | {"files/secret_key": (1, "0" * 64)}
    assert check_contents(manifest, extra) == ["files/secret_key: not in the manifest"]


def test_references_missing_and_unreferenced() -> None:
    refs = [
        Reference(path="documents/ab/ab01", kind="document", id="1"),
        Reference(path="recordings/c/u-1.webm", kind="recording", id="2"),
    ]
    present = ["documents/ab/ab01", "documents/cd/cd02", "secret_key"]
    assert missing_references(refs, present) == [refs[1]]
    assert unreferenced_count(refs, present) == 1  # the secret is not a referenced kind


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("documents/ab/abcd", True),
        ("secret_key", True),
        ("", False),
        ("/etc/passwd", False),
        ("documents/../../x", False),
        ("documents//x", False),
        ("./x", False),
        ("a\\b", False),
        ("a\x00b", False),
    ],
)
def test_safe_relative_paths(path: str, safe: bool) -> None:
    assert safe_relative(path) is safe


# A live installation, backed up under writes and restored elsewhere.


async def _empty_database(
    settings: Settings, root: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A database URL of the same kind as ``settings``', with nothing in it."""
    if settings.resolved_database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{root / 'telemed.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = "r_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(
        host="127.0.0.1", port=server.port, user="postgres", database="postgres"
    )
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield f"{server.url}/{name}"
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def elsewhere(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Settings]:
    """Settings of a second, empty installation on the same kind of database."""
    root = tmp_path / "elsewhere"
    databases = _empty_database(settings, root, request)
    url = await anext(databases)
    yield settings.model_copy(update={"data_dir": root, "database_url": url})
    await anext(databases, None)


async def _client_of(aiohttp_client: MakeClient, settings: Settings, clock: FakeClock) -> AppClient:
    return await aiohttp_client(TestServer(create_app(settings, clock=clock)))


async def _record(
    log: RecordingLog, data_dir: Path, consultation_id: str, user_id: str, content: bytes
) -> uuid.UUID:
    """A recording file written and closed, as a room records one."""
    cid, uid = uuid.UUID(consultation_id), uuid.UUID(user_id)
    path = data_dir / "recordings" / cid.hex / f"{uid.hex}-1.webm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    recording = await log.opened(consultation_id=cid, user_id=uid, segment=1, path=path)
    await log.closed(recording, path=path, duration=1.5, video_frames=30, audio_frames=50)
    return recording


class Writers:
    """Patients and doctors going on with their work: uploads, deletions, chat messages,
    and a recording that grows, each acked write noted with the time it was acked."""

    def __init__(self, client: AppClient, world: dict[str, Any], peers: tuple[Peer, Peer]):
        self.client, self.world, self.peers = client, world, peers
        self.stop = asyncio.Event()
        self.documents: dict[str, bytes] = {}
        self.deleted: set[str] = set()
        self.messages: dict[str, dict[str, Any]] = {}
        self.acked_at: dict[str, float] = {}
        self.growing: Path | None = None

    def acked(self, key: str) -> None:
        self.acked_at[key] = asyncio.get_running_loop().time()

    async def uploads(self) -> None:
        token = self.world["patient"]["token"]
        n = 0
        while not self.stop.is_set():
            n += 1
            content = samples.pdf(f"Churn {n}")
            document = await upload(self.client, token, content, name=f"churn-{n}.pdf")
            self.documents[document["id"]] = content
            self.acked(document["id"])
            if n % 3 == 0:  # every third, delete an earlier one
                victim = next(d for d in self.documents if d not in self.deleted)
                status, _ = await api(self.client, "DELETE", f"/documents/{victim}", token)
                assert status == 204
                self.deleted.add(victim)

    async def chat(self, peer: Peer, who: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            ack = await peer.call("chat:send", send(self.world["id"], f"{who}-{n}", f"{who} №{n}"))
            assert ack["ok"] is True, ack
            message = ack["data"]["message"]
            self.messages[message["id"]] = message
            self.acked(message["id"])

    async def recording(self) -> None:
        assert self.growing is not None
        with self.growing.open("ab") as handle:
            while not self.stop.is_set():
                handle.write(os.urandom(4096))
                handle.flush()
                await asyncio.sleep(0.005)  # a camera's pace: frames come over time

    async def run_during(self, work: Awaitable[Written]) -> tuple[Written, float, float]:
        """Run the writers, wait for some writes, then ``work`` while they go on."""
        tasks = [
            asyncio.create_task(self.uploads()),
            asyncio.create_task(self.chat(self.peers[0], "patient")),
            asyncio.create_task(self.chat(self.peers[1], "doctor")),
            asyncio.create_task(self.recording()),
        ]
        try:
            async with asyncio.timeout(20):
                # Polls what the writers noted: simpler than an Event per count.
                while len(self.acked_at) < 20:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            started = loop.time()
            written = await work
            finished = loop.time()
            written_during = [t for t in self.acked_at.values() if started < t < finished]
            # The writes went on while the backup ran (else this test proves nothing).
            assert written_during, "no write was acked while the backup ran"
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)
        return written, started, finished


async def test_a_live_installation_backed_up_under_writes_restores_whole(
    client: AppClient,
    clock: FakeClock,
    settings: Settings,
    elsewhere: Settings,
    aiohttp_client: MakeClient,
    tmp_path: Path,
) -> None:
    world = await completed_consultation(client, clock)
    cid, patient, duty = world["id"], world["patient"], world["duty"]
    conclusion = await ok(
        client, "POST", f"/consultations/{cid}/conclusion", duty["token"], conclusion_body(), 201
    )
    kept = {}
    for n, content in enumerate([samples.pdf("Выписка"), samples.jpeg(), samples.png()]):
        document = await upload(client, patient["token"], content, name=f"kept-{n}")
        kept[document["id"]] = content
    app = client.app
    log = RecordingLog(
        session_factory=app[keys.SESSION_FACTORY], clock=clock, data_dir=settings.data_dir
    )
    # Large enough that copying it takes a while: the writes below go on meanwhile.
    recorded = os.urandom(32 * 1024 * 1024)
    recording = await _record(log, settings.data_dir, cid, duty["user_id"], recorded)
    growing = settings.data_dir / "recordings" / uuid.UUID(cid).hex / "growing.webm"
    growing.write_bytes(b"\x1a\x45\xdf\xa3")
    await log.opened(
        consultation_id=uuid.UUID(cid),
        user_id=uuid.UUID(patient["user"]["id"]),
        segment=1,
        path=growing,
    )

    url = str(client.make_url("/"))
    peers = (await connect(url, patient["token"]), await connect(url, duty["token"]))
    try:
        for peer in peers:
            assert (await peer.call("consultation:subscribe", {"consultation_id": cid}))["ok"]
        writers = Writers(client, world, peers)
        writers.growing = growing
        destination = tmp_path / "backups"
        destination.mkdir()
        written, started, _ = await writers.run_during(
            create_backup(settings, destination, now=clock.now())
        )
    finally:
        for peer in peers:
            await peer.close()

    manifest = written.manifest
    assert written.path.parent == destination
    assert written.path.stat().st_mode & 0o777 == 0o600
    # Every file the copied database refers to is in the backup: the documents deleted
    # while it ran too (they were uploaded before it began, and linked aside first).
    assert manifest.missing == []
    assert manifest.complete
    with tarfile.open(written.path) as tar:
        assert tar.getnames()[0] == "manifest.json"
    assert verify_archive(written.path) == manifest

    restored = await restore_backup(elsewhere, written.path)
    assert restored.schema_revision == manifest.database.schema_revision
    there = await _client_of(aiohttp_client, elsewhere, clock)

    # Every document acked before the backup began is there, byte for byte, through the
    # restored API (the same sign-in works: the sessions came back too).
    before = {d for d, t in writers.acked_at.items() if t < started and d in writers.documents}
    for document_id, content in kept.items() | {
        (d, writers.documents[d]) for d in before - writers.deleted
    }:
        response = await there.get(
            f"/api/v1/documents/{document_id}/content", headers=bearer(patient["token"])
        )
        assert response.status == 200, document_id
        assert await response.read() == content
    # Every document row that came back has its file, as its row describes it, unless
    # the manifest says it was deleted after the snapshot.
    rows = await _all(elsewhere, Document)
    recordings = await _all(elsewhere, Recording)
    gone = {m.id for m in manifest.missing}
    assert {str(row.id) for row in rows} >= set(kept) | (before - writers.deleted)
    for row in rows:
        path = elsewhere.documents_dir / row.id.hex[:2] / row.id.hex
        if str(row.id) in gone:
            assert not path.exists()
            continue
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
        assert path.stat().st_mode & 0o777 == 0o600  # patients' data: the server's user only
    # No document the backup holds was invented: each is one the users uploaded.
    assert {str(row.id) for row in rows} <= set(kept) | set(writers.documents)

    # The closed recording, whole; the growing one, as far as it had grown.
    closed = next(r for r in recordings if r.id == recording)
    assert (elsewhere.data_dir / closed.path).read_bytes() == recorded
    assert closed.sha256 == hashlib.sha256(recorded).hexdigest()
    open_one = next(r for r in recordings if r.id != recording)
    copied = (elsewhere.data_dir / open_one.path).read_bytes()
    assert len(copied) >= 4
    assert growing.read_bytes().startswith(copied)

    # The chat: a gapless prefix of what was sent, each message as it was acked, and
    # every message acked before the backup began.
    history = await ok(
        there, "GET", f"/consultations/{cid}/messages", patient["token"], params={"limit": "500"}
    )
    items = history["items"]
    assert [m["seq"] for m in items] == list(range(1, len(items) + 1))
    for message in items:
        sent = writers.messages[message["id"]]
        assert (message["seq"], message["body"], message["sender_id"]) == (
            sent["seq"],
            sent["body"],
            sent["sender_id"],
        )
    acked_before = {m for m, t in writers.acked_at.items() if t < started and m in writers.messages}
    assert acked_before <= {m["id"] for m in items}
    assert len(acked_before) > 0

    # The conclusion, as issued.
    got = await ok(there, "GET", f"/consultations/{cid}/conclusion", patient["token"])
    assert got["current"] == conclusion["current"]
    consultation = await ok(there, "GET", f"/consultations/{cid}", patient["token"])
    assert consultation["state"] == "concluded"


async def _all(settings: Settings, model: type[M]) -> list[M]:
    engine = db.create_engine(settings.resolved_database_url)
    try:
        async with db.create_session_factory(engine)() as session:
            return list((await session.exec(select(model))).all())
    finally:
        await engine.dispose()


async def _small_installation(client: AppClient) -> dict[str, Any]:
    patient = await ok(
        client,
        "POST",
        "/auth/register",
        None,
        {
            "full_name": "Петров Пётр Петрович",
            "birth_date": "1980-01-02",
            "phone": "+79001112233",
            "password": "Patient-Pass-2026",
            "consent_version": consent.CURRENT.version,
        },
        status=201,
    )
    document = await upload(client, patient["token"], samples.pdf("Резервная копия"))
    return {"patient": patient, "document": document}


def _rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """A copy of an archive with each member's bytes passed through ``change`` (``None``
    leaves the member out)."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old.getmembers():
            handle = old.extractfile(member)
            assert handle is not None
            data = change(member.name, handle.read())
            if data is None:
                continue
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))


def _flip_document(name: str, data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1]) if name.startswith("files/documents/") else data


async def _tables_with_rows(settings: Settings) -> set[str]:
    engine = db.create_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
            found = set()
            for name in names:
                if name == "alembic_version":
                    continue
                if (await connection.execute(sa.text(f'SELECT 1 FROM "{name}" LIMIT 1'))).first():
                    found.add(name)
            return found
    finally:
        await engine.dispose()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_damaged_backups_and_occupied_targets_are_refused_and_change_nothing(
    client: AppClient, clock: FakeClock, settings: Settings, elsewhere: Settings, tmp_path: Path
) -> None:
    made = await _small_installation(client)
    written = await create_backup(settings, tmp_path / "copy.tar", now=clock.now())
    assert written.path == tmp_path / "copy.tar"
    assert written.manifest.referenced == {"document": 1}

    damaged = tmp_path / "damaged.tar"
    _rewrite(written.path, damaged, _flip_document)
    truncated = tmp_path / "truncated.tar"
    whole = written.path.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    headless = tmp_path / "headless.tar"
    _rewrite(written.path, headless, lambda name, data: None if name == "manifest.json" else data)
    smuggled = tmp_path / "smuggled.tar"
    with tarfile.open(written.path) as old, tarfile.open(smuggled, "w") as new:
        for member in old.getmembers():
            new.addfile(member, old.extractfile(member))
        extra = tarfile.TarInfo("files/documents/zz/extra")
        extra.size = 2
        new.addfile(extra, io.BytesIO(b"hi"))
    cases = {
        damaged: "damaged",
        truncated: "not a readable tar archive",
        headless: "manifest.json is not its first file",
        smuggled: "damaged",
        tmp_path / "nowhere.tar": "no backup file",
    }
    for archive, reason in cases.items():
        with pytest.raises(InvalidBackup) as refused:
            await restore_backup(elsewhere, archive)
        assert reason in refused.value.message, (archive.name, refused.value.message)
        # Nothing written: no database file (SQLite) or no table (PostgreSQL), no files.
        assert _files_under(elsewhere.data_dir) == []
        if elsewhere.resolved_database_url.startswith("postgresql"):
            assert await _tables_with_rows(elsewhere) == set()
    details = await _refusal_details(elsewhere, damaged)
    assert any("the SHA-256 differs" in p for p in details["problems"])

    # The source itself holds data: refused, and left as it was.
    before = await _tables_with_rows(settings)
    files_before = _files_under(settings.documents_dir)
    with pytest.raises(NotEmpty) as occupied:
        await restore_backup(settings, written.path)
    assert "table user_account has rows" in occupied.value.details["found"]
    assert await _tables_with_rows(settings) == before
    assert _files_under(settings.documents_dir) == files_before

    # Forced, it replaces the data: what came after the backup is gone.
    later = await upload(client, made["patient"]["token"], samples.png(), name="later.png")
    await client.close()  # the server stops before a restore
    restored = await restore_backup(settings, written.path, force=True)
    assert restored.files == 1
    ids = {str(d.id) for d in await _all(settings, Document)}
    assert ids == {made["document"]["id"]}
    later_id = uuid.UUID(later["id"]).hex
    assert not (settings.documents_dir / later_id[:2] / later_id).exists()
    assert (settings.documents_dir / uuid.UUID(made["document"]["id"]).hex[:2]).is_dir()


async def _refusal_details(settings: Settings, archive: Path) -> dict[str, Any]:
    with pytest.raises(InvalidBackup) as refused:
        await restore_backup(settings, archive)
    return refused.value.details


async def test_a_backup_of_an_older_schema_is_migrated_on_restore(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    old_databases = _empty_database(settings, old_root, request)
    new_databases = _empty_database(settings, new_root, request)
    old = settings.model_copy(
        update={"data_dir": old_root, "database_url": await anext(old_databases)}
    )
    new = settings.model_copy(
        update={"data_dir": new_root, "database_url": await anext(new_databases)}
    )
    try:
        engine = db.create_engine(old.resolved_database_url)
        try:
            await db.upgrade(engine, "0008")
        finally:
            await engine.dispose()
        written = await create_backup(old, tmp_path, now=datetime.now(UTC))
        assert written.manifest.database.schema_revision == "0008"
        # The target was migrated (a first start) but holds no rows: it counts as empty.
        engine = db.create_engine(new.resolved_database_url)
        try:
            await db.upgrade(engine)
        finally:
            await engine.dispose()
        # Compressed by the operator: read as well.
        compressed = tmp_path / "old.tar.gz"
        compressed.write_bytes(gzip.compress(written.path.read_bytes()))
        restored = await restore_backup(new, compressed)
        head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
        assert restored.schema_revision == head != "0008"
        engine = db.create_engine(new.resolved_database_url)
        try:
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
        finally:
            await engine.dispose()
        assert "password_reset_code" in tables
    finally:
        await anext(old_databases, None)
        await anext(new_databases, None)


async def test_a_backup_of_a_newer_schema_is_refused(
    client: AppClient, settings: Settings, elsewhere: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    written = await create_backup(settings, tmp_path, now=clock.now())
    newer = written.manifest.model_copy(
        update={
            "database": written.manifest.database.model_copy(update={"schema_revision": "9999"})
        }
    )
    future = tmp_path / "future.tar"
    _rewrite(
        written.path,
        future,
        lambda name, data: dump_manifest(newer) if name == "manifest.json" else data,
    )
    with pytest.raises(InvalidBackup) as refused:
        await restore_backup(elsewhere, future)
    assert "newer than this Telemed" in refused.value.message
    assert refused.value.details["schema_revision"] == "9999"
    assert _files_under(elsewhere.data_dir) == []


async def test_a_destination_must_be_a_folder_or_a_new_tar_file(
    client: AppClient, settings: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    cases = {
        tmp_path / "nowhere" / "x.tar": "folder does not exist",
        tmp_path / "x.zip": "a new file name ending in .tar",
    }
    (tmp_path / "taken.tar").write_bytes(b"")
    cases[tmp_path / "taken.tar"] = "already exists"
    for destination, message in cases.items():
        with pytest.raises(InvalidValue) as refused:
            await create_backup(settings, destination, now=clock.now())
        assert message in refused.value.message
    assert (tmp_path / "taken.tar").read_bytes() == b""
    assert not list(settings.data_dir.glob(".backup-*"))  # no staging left behind


def test_a_sqlite_copy_is_one_self_contained_file(tmp_path: Path) -> None:
    """The online backup's copy is in rollback-journal mode: no -wal file to carry."""
    live = tmp_path / "live.db"
    with closing(sqlite3.connect(live, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (1)")
        settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite+aiosqlite:///{live}")
        written = asyncio.run(create_backup(settings, tmp_path, now=datetime.now(UTC)))
    with tarfile.open(written.path) as tar:
        handle = tar.extractfile(DATABASE_MEMBER["sqlite"])
        assert handle is not None
        header = handle.read(100)
    # Bytes 18 and 19 of an SQLite header are 2 in WAL mode, 1 in rollback-journal mode.
    assert header[:16] == b"SQLite format 3\x00"
    assert header[18:20] == b"\x01\x01"
    assert written.manifest.database.schema_revision is None


@pytest.mark.parametrize("db_backend", ["postgresql"])
async def test_a_failed_pg_restore_leaves_the_database_as_it_was(
    client: AppClient, settings: Settings, tmp_path: Path
) -> None:
    """pg_restore failing (here: a program that fails at once) must not let psql commit
    the drops it was given first."""
    made = await _small_installation(client)
    await client.close()
    dump = tmp_path / "empty.pgdump"
    dump.write_bytes(b"")
    connection = await _postgres_connect(settings)
    try:
        drops = "".join(row[0] for row in await connection.fetch(_DROPS))
    finally:
        await connection.close()
    assert "user_account" in drops
    with pytest.raises(BackupFailed) as failed:
        await _pipe_restore(
            "/bin/false",
            postgres_tool("psql"),
            dump,
            drops,
            env=_Postgres(sa.make_url(settings.resolved_database_url)).env(),
        )
    assert failed.value.message.startswith("pg_restore failed")
    assert {str(d.id) for d in await _all(settings, Document)} == {made["document"]["id"]}
    assert "user_account" in await _tables_with_rows(settings)
