"""Backups that restore: ``telemed backup`` writes one tar file, ``telemed restore``
brings it back into an empty installation.

A backup is consistent in this order: the database first, as one snapshot (SQLite's
online backup API; ``pg_dump`` on a snapshot exported by a transaction that also reads
which files the database refers to), then the data directory's files. A document is
moved into place before its row commits and removed after its row's deletion commits,
and never changes in between: every document is hard-linked into the staging folder
(copied where a link is impossible) once before the snapshot and once after it (those
that arrived meanwhile), so every document the snapshot refers to is kept, even one
deleted while the backup runs. Recordings may still grow, and are copied after the
snapshot. A referenced file not found is listed in the manifest, with why
(``MissingFile``).

A restore reads the whole archive and checks every size and checksum against the
manifest before it writes anything, refuses an installation that holds data unless
forced, restores the database (SQLite: the file, swapped in by a rename; PostgreSQL:
``pg_restore``'s script run by ``psql`` in one transaction, with the tables there
before dropped in the same transaction), then the files, then applies the migrations
(a backup of an older schema comes back at the current one).

Logs carry counts, sizes and revisions only.
"""

from __future__ import annotations

import asyncio
import glob
import gzip
import hashlib
import io
import logging
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlmodel import col, select

import telemed
from telemed import db
from telemed.backup_manifest import (
    DATABASE_MEMBER,
    FILES,
    MANIFEST,
    MANIFEST_MAX_BYTES,
    Backend,
    DatabaseEntry,
    FileEntry,
    Manifest,
    MissingFile,
    Reference,
    archive_name,
    check_contents,
    data_path_of,
    dump_manifest,
    member_for,
    missing_references,
    parse_manifest,
    safe_relative,
    unreferenced_count,
)
from telemed.documents.models import Document
from telemed.documents.storage import DocumentStore
from telemed.errors import BackupFailed, InvalidBackup, InvalidValue, NotEmpty, Problem
from telemed.media.models import Recording
from telemed.settings import Settings

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
SECRET_KEY_FILE = "secret_key"  # noqa: S105  # a file name, not a secret
_DATA_FOLDERS = ("documents", "recordings")


@dataclass(frozen=True)
class Written:
    """A backup written: where, and its manifest."""

    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    schema_revision: str | None
    """The database's revision after the restore and the migrations."""
    files: int


# The database behind the settings.


def backend_of(settings: Settings) -> Backend:
    name = sa.make_url(settings.resolved_database_url).get_backend_name()
    if name == "sqlite":
        return "sqlite"
    if name == "postgresql":
        return "postgresql"
    raise InvalidValue(
        f"Backups know SQLite and PostgreSQL databases, not {name}",
        problem=Problem.NOT_ALLOWED,
        field="database_url",
    )


def sqlite_path(settings: Settings) -> Path:
    database = sa.make_url(settings.resolved_database_url).database
    if not database or database == ":memory:":
        raise InvalidValue(
            "An in-memory SQLite database cannot be backed up or restored",
            problem=Problem.NOT_ALLOWED,
            field="database_url",
        )
    return Path(database)


@dataclass(frozen=True)
class _Postgres:
    """A PostgreSQL URL as asyncpg's arguments and as libpq's environment (so that the
    password never shows in a process list)."""

    url: sa.URL

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self._host(),
            "port": self.url.port,
            "user": self.url.username,
            "password": self.url.password,
            "database": self.url.database,
            "ssl": self._query("ssl") or self._query("sslmode"),
        }
        return {k: v for k, v in kwargs.items() if v is not None}

    def env(self) -> dict[str, str]:
        """The environment with the URL's parts as libpq's variables; what the URL leaves
        out falls back to the environment's own, as it does for asyncpg."""
        given = {
            "PGHOST": self._host(),
            "PGPORT": str(self.url.port) if self.url.port else None,
            "PGUSER": self.url.username,
            "PGPASSWORD": self.url.password,
            "PGDATABASE": self.url.database,
            "PGSSLMODE": self._query("sslmode") or self._query("ssl"),
        }
        return dict(os.environ) | {k: v for k, v in given.items() if v}

    def _host(self) -> str | None:
        # A Unix socket's folder comes as ``?host=/run/postgresql``.
        return self.url.host or self._query("host")

    def _query(self, name: str) -> str | None:
        value = self.url.query.get(name)
        return value if isinstance(value, str) else None


def postgres_tool(name: str) -> str:
    """A PostgreSQL client program: on the PATH, or the newest under
    ``/usr/lib/postgresql/*/bin`` (Debian's layout). Raises ``BackupFailed`` if none."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
        reverse=True,
    )
    if candidates:
        return candidates[0]
    raise BackupFailed(
        f"{name} is not installed: install PostgreSQL's client programs (postgresql-client)"
    )


async def _run(args: Sequence[str], *, env: dict[str, str], what: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise BackupFailed(
            f"{what} failed (exit status {process.returncode})",
            details={"output": _tail(err)},
        )


def _tail(output: bytes) -> list[str]:
    return output.decode(errors="replace").strip().splitlines()[-5:]


# Writing a backup.


async def create_backup(settings: Settings, destination: Path, *, now: datetime) -> Written:
    """Write a backup of the installation that ``settings`` describe.

    ``destination`` is a directory (the backup is a new ``telemed-backup-<UTC time>.tar``
    in it) or the name of a new ``.tar`` file. The file appears whole or not at all
    (written under a temporary name, then renamed), readable by its owner only.

    Raises ``InvalidValue`` for a destination that is neither, or exists;
    ``BackupFailed`` when the database cannot be read or ``pg_dump`` fails.
    """
    backend = backend_of(settings)
    target = _target(destination, now)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # In the data directory: documents are hard-linked, which needs the same file system.
    staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=settings.data_dir))
    try:
        # Documents never change once in place: linked before the snapshot (and again
        # after it, for those that arrived meanwhile), a document the snapshot refers to
        # is kept even if it is deleted while the backup runs.
        data, files = settings.data_dir, staging / FILES
        linked = await asyncio.to_thread(_stage_files, data, files, ("documents",), secret=False)
        database_member = DATABASE_MEMBER[backend]
        database_file = staging / database_member
        database_file.parent.mkdir(parents=True)
        if backend == "sqlite":
            revision, references = await asyncio.to_thread(
                _sqlite_snapshot, sqlite_path(settings), database_file
            )
        else:
            revision, references = await _postgres_snapshot(settings, database_file)
        present = sorted(set(linked) | set(await asyncio.to_thread(_stage_files, data, files)))
        missing = await _explain_missing(settings, missing_references(references, present))
        members = [database_member, *(member_for(path) for path in present)]
        entries = await asyncio.to_thread(_entries, staging, members)
        referenced: dict[str, int] = {}
        for reference in references:
            referenced[reference.kind] = referenced.get(reference.kind, 0) + 1
        manifest = Manifest(
            telemed_version=telemed.__version__,
            created_at=now.astimezone(UTC),
            database=DatabaseEntry(backend=backend, path=database_member, schema_revision=revision),
            files=entries,
            referenced=referenced,
            missing=missing,
            unreferenced=unreferenced_count(references, present),
        )
        await asyncio.to_thread(_write_archive, target, manifest, staging)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    logger.info(
        "backup written: %d files, %d bytes, schema %s, %d referenced files missing",
        len(manifest.files),
        manifest.total_bytes,
        revision,
        len(manifest.missing),
    )
    return Written(path=target, manifest=manifest)


def _target(destination: Path, now: datetime) -> Path:
    if destination.is_dir():
        target = destination / archive_name(now.astimezone(UTC))
    elif destination.suffix == ".tar":
        if not destination.parent.is_dir():
            raise InvalidValue(
                "The backup's folder does not exist",
                problem=Problem.INVALID,
                field="destination",
                details={"path": str(destination.parent)},
            )
        target = destination
    else:
        raise InvalidValue(
            "Give an existing directory, or a new file name ending in .tar",
            problem=Problem.INVALID,
            field="destination",
            details={"path": str(destination)},
        )
    if target.exists():
        raise InvalidValue(
            "The backup file already exists",
            problem=Problem.INVALID,
            field="destination",
            details={"path": str(target)},
        )
    return target


def _sqlite_snapshot(source: Path, target: Path) -> tuple[str | None, list[Reference]]:
    """Copy the live database with SQLite's online backup API: one step, so one read
    transaction, so one consistent state while writers go on (WAL mode)."""
    if not source.is_file():
        raise BackupFailed("There is no SQLite database to back up", details={"path": str(source)})
    with (
        closing(sqlite3.connect(source, timeout=30)) as live,
        closing(sqlite3.connect(target)) as copy,
    ):
        live.backup(copy)
    with closing(sqlite3.connect(target, isolation_level=None)) as copy:
        # One self-contained file, whatever mode the live database is in.
        copy.execute("PRAGMA journal_mode=DELETE")
        (check,) = copy.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise BackupFailed("The database's copy failed SQLite's integrity check")
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master")}
        revision = None
        if "alembic_version" in tables:
            row = copy.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        documents = (
            [row[0] for row in copy.execute("SELECT id FROM document")]
            if "document" in tables
            else []
        )
        recordings = (
            [(row[0], row[1]) for row in copy.execute("SELECT id, path FROM recording")]
            if "recording" in tables
            else []
        )
    return revision, _references(documents, recordings)


async def _postgres_snapshot(
    settings: Settings, target: Path
) -> tuple[str | None, list[Reference]]:
    """``pg_dump`` of the snapshot of a transaction that reads, in the same snapshot,
    the schema's revision and the files the database refers to."""
    postgres = _Postgres(sa.make_url(settings.resolved_database_url))
    pg_dump = postgres_tool("pg_dump")
    try:
        connection = await asyncpg.connect(**postgres.connect_kwargs())
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupFailed(
            "Cannot connect to the database", details={"error": type(exc).__name__}
        ) from None
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await connection.fetchval("SELECT pg_export_snapshot()")
            revision, documents, recordings = await _postgres_facts(connection)
            await _run(
                [
                    pg_dump,
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={target}",
                ],
                env=postgres.env(),
                what="pg_dump",
            )
    finally:
        await connection.close()
    return revision, _references(documents, recordings)


async def _postgres_facts(
    connection: asyncpg.Connection,
) -> tuple[str | None, list[Any], list[tuple[Any, str]]]:
    async def exists(table: str) -> bool:
        return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table))

    revision = None
    if await exists("alembic_version"):
        revision = await connection.fetchval("SELECT version_num FROM alembic_version")
    documents: list[Any] = []
    if await exists("document"):
        documents = [row["id"] for row in await connection.fetch("SELECT id FROM document")]
    recordings: list[tuple[Any, str]] = []
    if await exists("recording"):
        rows = await connection.fetch("SELECT id, path FROM recording")
        recordings = [(row["id"], row["path"]) for row in rows]
    return revision, documents, recordings


def _references(documents: Iterable[Any], recordings: Iterable[tuple[Any, str]]) -> list[Reference]:
    layout = DocumentStore(Path("documents"))
    references = []
    for value in documents:
        document_id = uuid.UUID(str(value))
        references.append(
            Reference(
                path=layout.path_of(document_id).as_posix(),
                kind="document",
                id=str(document_id),
            )
        )
    for value, path in recordings:
        references.append(Reference(path=path, kind="recording", id=str(uuid.UUID(str(value)))))
    return references


def _stage_files(
    data_dir: Path, root: Path, folders: Sequence[str] = _DATA_FOLDERS, *, secret: bool = True
) -> list[str]:
    """Link or copy the data directory's documents, recordings and generated secret into
    ``root``; returns their paths relative to the data directory. Uploads still arriving
    (``documents/incoming``) are left out; a file deleted meanwhile is skipped; a
    document already staged (by the pass before the snapshot) is kept as it is."""
    present = []
    for folder in folders:
        base = data_dir / folder
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            if here == base and folder == "documents":
                dirnames[:] = [name for name in dirnames if name != "incoming"]
            dirnames.sort()
            for name in sorted(filenames):
                source = here / name
                relative = source.relative_to(data_dir).as_posix()
                if not safe_relative(relative):
                    logger.warning("backup: a file with an unusual name is left out")
                    continue
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    if folder != "documents":
                        shutil.copyfile(source, target)
                    elif not target.exists():
                        _link_or_copy(source, target)
                except FileNotFoundError:
                    continue  # deleted since the walk listed it
                present.append(relative)
    source = data_dir / SECRET_KEY_FILE
    if secret and source.is_file():
        shutil.copyfile(source, root / SECRET_KEY_FILE)
        present.append(SECRET_KEY_FILE)
    return present


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=True)
    except FileNotFoundError:
        raise
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


async def _explain_missing(settings: Settings, absent: list[Reference]) -> list[MissingFile]:
    """For each referenced file not found, whether its row is still in the live
    database (then the installation itself lacks the file) or was deleted after the
    snapshot."""
    if not absent:
        return []
    engine = db.create_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as connection:
            document_ids = [uuid.UUID(ref.id) for ref in absent if ref.kind == "document"]
            recording_ids = [uuid.UUID(ref.id) for ref in absent if ref.kind == "recording"]
            alive: set[str] = set()
            for start in range(0, len(document_ids), 500):
                rows = await connection.execute(
                    select(Document.id).where(col(Document.id).in_(document_ids[start:][:500]))
                )
                alive |= {str(row[0]) for row in rows}
            for start in range(0, len(recording_ids), 500):
                rows = await connection.execute(
                    select(Recording.id).where(col(Recording.id).in_(recording_ids[start:][:500]))
                )
                alive |= {str(row[0]) for row in rows}
    finally:
        await engine.dispose()
    return [
        MissingFile(
            path=ref.path,
            kind=ref.kind,
            id=ref.id,
            reason="missing" if ref.id in alive else "deleted_after_snapshot",
        )
        for ref in absent
    ]


def _digest(handle: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def _entries(staging: Path, members: list[str]) -> list[FileEntry]:
    entries = []
    for member in members:
        with (staging / member).open("rb") as handle:
            size, sha256 = _digest(handle)
        entries.append(FileEntry(path=member, size=size, sha256=sha256))
    return entries


def _write_archive(target: Path, manifest: Manifest, staging: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    mtime = int(manifest.created_at.timestamp())
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                text = dump_manifest(manifest)
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime, info.mode = len(text), mtime, 0o600
                tar.addfile(info, io.BytesIO(text))
                for entry in manifest.files:
                    info = tarfile.TarInfo(entry.path)
                    info.size, info.mtime, info.mode = entry.size, mtime, 0o600
                    with (staging / entry.path).open("rb") as handle:
                        tar.addfile(info, handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# Restoring.


async def restore_backup(settings: Settings, source: Path, *, force: bool = False) -> Restored:
    """Restore the backup at ``source`` into the installation that ``settings`` describe.

    Checks first, and writes nothing if any check fails: the archive is whole (every
    member's size and SHA-256 as the manifest says, nothing else in it), its database is
    of this installation's kind and of a schema this version knows, and the installation
    holds no data (no table with rows, no documents or recordings) unless ``force``.
    Stop the server before restoring.

    Raises ``InvalidBackup``, ``NotEmpty``, or ``BackupFailed`` (``psql`` failed: the
    database is left as it was, since the script runs in one transaction).
    """
    manifest = await asyncio.to_thread(verify_archive, source)
    backend = backend_of(settings)
    if manifest.database.backend != backend:
        raise InvalidBackup(
            f"This backup holds a {manifest.database.backend} database; "
            f"this installation uses {backend}",
            details={"backup": manifest.database.backend, "installation": backend},
        )
    _check_revision_known(manifest.database.schema_revision)
    if backend == "sqlite":
        occupied = await asyncio.to_thread(_sqlite_occupied, sqlite_path(settings))
    else:
        occupied = await _postgres_occupied(settings)
    occupied += await asyncio.to_thread(_files_occupied, settings.data_dir)
    if occupied and not force:
        raise NotEmpty(
            "The installation already holds data: restore into an empty one, "
            "or replace its data with --force",
            details={"found": occupied},
        )

    if backend == "sqlite":
        await asyncio.to_thread(_restore_sqlite, source, manifest, sqlite_path(settings))
    else:
        await _restore_postgres(settings, source, manifest)
    files = await asyncio.to_thread(_restore_files, source, manifest, settings.data_dir)

    engine = db.create_engine(settings.resolved_database_url)
    try:
        await db.upgrade(engine)
        async with engine.connect() as connection:
            revision = await connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()
    logger.info(
        "backup restored: %d files, schema %s → %s",
        files,
        manifest.database.schema_revision,
        revision,
    )
    return Restored(manifest=manifest, schema_revision=revision, files=files)


def verify_archive(source: Path) -> Manifest:
    """Read the whole archive: its manifest, and every member's size and SHA-256.
    Raises ``InvalidBackup`` unless it is whole."""
    if not source.is_file():
        raise InvalidBackup("There is no backup file there", details={"path": str(source)})
    found: dict[str, tuple[int, str]] = {}
    try:
        with tarfile.open(source, "r:*") as tar:
            manifest = _read_manifest(tar)
            while (member := tar.next()) is not None:
                if not member.isfile():
                    raise InvalidBackup(
                        "The archive holds something other than plain files",
                        details={"member": member.name},
                    )
                if member.name in found or member.name == MANIFEST:
                    raise InvalidBackup(
                        "The archive holds a file twice", details={"member": member.name}
                    )
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                found[member.name] = _digest(handle)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile):
        raise InvalidBackup("The backup is not a readable tar archive (cut short?)") from None
    problems = check_contents(manifest, found)
    if problems:
        raise InvalidBackup(
            "The backup is damaged: its files differ from its manifest",
            details={"problems": problems[:20], "count": len(problems)},
        )
    return manifest


def _read_manifest(tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise InvalidBackup("Not a Telemed backup: manifest.json is not its first file")
    if first.size > MANIFEST_MAX_BYTES:
        raise InvalidBackup("The backup's manifest.json is too large")
    handle = tar.extractfile(first)
    assert handle is not None  # a regular file
    return parse_manifest(handle.read())


def _check_revision_known(revision: str | None) -> None:
    if revision is None:
        return
    script = ScriptDirectory.from_config(db.alembic_config())
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise InvalidBackup(
            "The backup's database schema is newer than this Telemed: restore it with "
            "the version that wrote it (or a later one)",
            details={
                "schema_revision": revision,
                "latest_known": script.get_current_head(),
                "written_by": "telemed",
            },
        )


def _sqlite_occupied(path: Path) -> list[str]:
    if not path.is_file():
        return []
    with closing(sqlite3.connect(path, timeout=30)) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        with_rows = [
            table
            for table in tables
            if table != "alembic_version"
            and connection.execute(
                f'SELECT 1 FROM "{_quoted(table)}" LIMIT 1'  # noqa: S608  # a quoted name read from the catalogue
            ).fetchone()
        ]
    return [f"table {table} has rows" for table in sorted(with_rows)]


async def _postgres_tables(connection: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await connection.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' "
        "AND table_schema NOT IN ('pg_catalog', 'information_schema') "
        "AND table_schema NOT LIKE 'pg_toast%' ORDER BY 1, 2"
    )
    return [(row["table_schema"], row["table_name"]) for row in rows]


async def _postgres_connect(settings: Settings) -> asyncpg.Connection:
    postgres = _Postgres(sa.make_url(settings.resolved_database_url))
    try:
        return await asyncpg.connect(**postgres.connect_kwargs())
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupFailed(
            "Cannot connect to the database", details={"error": type(exc).__name__}
        ) from None


async def _postgres_occupied(settings: Settings) -> list[str]:
    connection = await _postgres_connect(settings)
    try:
        found = []
        for schema, table in await _postgres_tables(connection):
            if table == "alembic_version":
                continue
            name = f'"{_quoted(schema)}"."{_quoted(table)}"'
            # A quoted name read from the catalogue, not input.
            if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name})"):  # noqa: S608
                found.append(f"table {table} has rows")
        return found
    finally:
        await connection.close()


def _files_occupied(data_dir: Path) -> list[str]:
    found = []
    for folder in _DATA_FOLDERS:
        base = data_dir / folder
        count = 0
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == base:
                dirnames[:] = [name for name in dirnames if name != "incoming"]
            count += len(filenames)
        if count:
            found.append(f"{folder}/ holds {count} files")
    return found


def _quoted(identifier: str) -> str:
    return identifier.replace('"', '""')


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    while (member := tar.next()) is not None:
        if member.name == name:
            handle = tar.extractfile(member)
            assert handle is not None  # checked: a regular file
            return handle
    raise InvalidBackup("The backup changed while it was restored", details={"member": name})


def _extract(handle: IO[bytes], target: Path, entry: FileEntry) -> None:
    """Write a member under a temporary name, check it against its manifest entry as
    it is written (the archive was checked, but may have changed since), then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.restoring")
    digest = hashlib.sha256()
    size = 0
    try:
        # Patients' data, the database and the secret: for the server's user only.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := handle.read(CHUNK):
                size += len(chunk)
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if (size, digest.hexdigest()) != (entry.size, entry.sha256):
            raise InvalidBackup(
                "The backup changed while it was restored", details={"member": entry.path}
            )
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _entry(manifest: Manifest, path: str) -> FileEntry:
    return next(entry for entry in manifest.files if entry.path == path)


def _restore_sqlite(source: Path, manifest: Manifest, path: Path) -> None:
    with tarfile.open(source, "r:*") as tar:
        handle = _member(tar, manifest.database.path)
        _extract(handle, path, _entry(manifest, manifest.database.path))
    # The file replaced the old database whole; its journal files belonged to the old one.
    # (Extracted under a temporary name first, so these go only once the new one is in.)
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _restore_postgres(settings: Settings, source: Path, manifest: Manifest) -> None:
    postgres = _Postgres(sa.make_url(settings.resolved_database_url))
    pg_restore, psql = postgres_tool("pg_restore"), postgres_tool("psql")
    connection = await _postgres_connect(settings)
    try:
        # What is there now (nothing in an empty installation; a migrated schema without
        # data; or, forced, the data being replaced) is dropped in the same transaction
        # as the restore: if it fails, it is all still there.
        drops = "".join(row[0] for row in await connection.fetch(_DROPS))
    finally:
        await connection.close()
    with tempfile.TemporaryDirectory(prefix="telemed-restore-") as folder:
        dump = Path(folder) / "telemed.pgdump"
        await asyncio.to_thread(_extract_to, source, manifest, dump)
        await _pipe_restore(pg_restore, psql, dump, drops, env=postgres.env())


_USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
)
_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
    "AND d.objid = {oid} AND d.deptype = 'e')"
)
_DROPS = f"""
SELECT format('DROP %s IF EXISTS %s CASCADE;' || chr(10), kind, name) FROM (
    SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
           format('%I.%I', n.nspname, c.relname) AS name,
           CASE WHEN c.relkind IN ('v', 'm') THEN 1 WHEN c.relkind = 'S' THEN 3 ELSE 2 END AS rank
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND NOT c.relispartition AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION.format(catalog="pg_class", oid="c.oid")}
    UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
           format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
           4
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.prokind IN ('f', 'p') AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION.format(catalog="pg_proc", oid="p.oid")}
    UNION ALL
    SELECT 'TYPE', format('%I.%I', n.nspname, t.typname), 5
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd') AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION.format(catalog="pg_type", oid="t.oid")}
) AS objects ORDER BY rank, name
"""  # noqa: S608  # constants only
"""The statements that empty a database of what a restore would create again: tables,
views, sequences, functions and types outside the system's schemas (those of
extensions left alone)."""


_ABORT = b"\n;\nDO $$ BEGIN RAISE EXCEPTION 'pg_restore failed: nothing is restored'; END $$;\n"
"""Fails (as a statement, or as a row of a COPY cut short), so that psql rolls its one
transaction back."""


def _extract_to(source: Path, manifest: Manifest, target: Path) -> None:
    with tarfile.open(source, "r:*") as tar:
        handle = _member(tar, manifest.database.path)
        _extract(handle, target, _entry(manifest, manifest.database.path))


async def _pipe_restore(
    pg_restore: str, psql: str, dump: Path, drops: str, *, env: dict[str, str]
) -> None:
    """``pg_restore``'s SQL script, after ``drops``, into ``psql`` in one transaction
    that stops at the first error."""
    script = await asyncio.create_subprocess_exec(
        pg_restore,
        "--no-owner",
        "--no-privileges",
        "--file=-",
        str(dump),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    runner = await asyncio.create_subprocess_exec(
        psql,
        "--no-psqlrc",
        "--quiet",
        "--single-transaction",
        "--set=ON_ERROR_STOP=1",
        "--file=-",
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # All PIPE above.
    assert script.stdout is not None
    assert script.stderr is not None
    assert runner.stdin is not None
    assert runner.stderr is not None
    stdout, stdin = script.stdout, runner.stdin
    stopped: list[bool] = []

    async def feed() -> None:
        try:
            stdin.write(drops.encode())
            while chunk := await stdout.read(CHUNK):
                stdin.write(chunk)
                await stdin.drain()
            if await script.wait() != 0:
                # psql would commit what it was given (the drops, part of the script):
                # an error makes it roll the whole transaction back instead.
                stdin.write(_ABORT)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            # psql stopped at an error (its own output says which): pg_restore, writing
            # into a pipe no one reads, would wait forever.
            stopped.append(True)
            script.kill()
        finally:
            stdin.close()

    _, script_err, runner_err = await asyncio.gather(
        feed(), script.stderr.read(), runner.stderr.read()
    )
    await script.wait()
    await runner.wait()
    if script.returncode != 0 and not stopped:
        raise BackupFailed(
            f"pg_restore failed (exit status {script.returncode}); the database is unchanged",
            details={"output": _tail(script_err)},
        )
    if runner.returncode != 0:
        raise BackupFailed(
            f"psql failed (exit status {runner.returncode}); the database is unchanged",
            details={"output": _tail(runner_err)},
        )


def _restore_files(source: Path, manifest: Manifest, data_dir: Path) -> int:
    """Write the backup's files into the data directory; the folders it replaces (a
    forced restore) are emptied first, so no file of the data replaced stays behind."""
    for folder in _DATA_FOLDERS:
        shutil.rmtree(data_dir / folder, ignore_errors=True)
    entries = {entry.path: entry for entry in manifest.files}
    root = data_dir.resolve()
    written = 0
    with tarfile.open(source, "r:*") as tar:
        while (member := tar.next()) is not None:
            relative = data_path_of(member.name)
            if relative is None:
                continue
            target = root / relative
            if not target.resolve().is_relative_to(root):
                raise InvalidBackup(
                    "The backup names a file outside the data directory",
                    details={"member": member.name},
                )
            handle = tar.extractfile(member)
            assert handle is not None  # checked: a regular file
            _extract(handle, target, entries[member.name])
            written += 1
    return written
