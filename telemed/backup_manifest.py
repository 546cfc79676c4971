"""What a backup holds and how it is checked: the manifest and pure rules over it.

A backup is one tar file. Its first member is ``manifest.json``; then the database
(``database/telemed.sqlite3``, an SQLite file, or ``database/telemed.pgdump``, a
``pg_dump`` archive in its custom format), then the data directory's files under
``files/`` (``files/documents/…``, ``files/recordings/…``, ``files/secret_key``). The
manifest names every other member with its size and SHA-256, so a restore can check the
whole archive before it writes anything. Nothing here touches a file: ``telemed.backup``
does the reading and writing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import PurePosixPath
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from telemed.errors import InvalidBackup

FORMAT: Literal["telemed-backup"] = "telemed-backup"
FORMAT_VERSION: Literal[1] = 1
MANIFEST = "manifest.json"
FILES = "files"
"""The data directory's files sit under this folder of the archive."""
MANIFEST_MAX_BYTES = 64 * 1024 * 1024

Backend = Literal["sqlite", "postgresql"]
DATABASE_MEMBER: dict[Backend, str] = {
    "sqlite": "database/telemed.sqlite3",
    "postgresql": "database/telemed.pgdump",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One member of the archive (not the manifest itself)."""

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DatabaseEntry(_Strict):
    backend: Backend
    path: str
    schema_revision: str | None
    """The Alembic revision of the copied database (``None``: never migrated)."""


class MissingFile(_Strict):
    """A file that the copied database refers to and that the backup does not hold.

    ``deleted_after_snapshot``: its row was gone from the live database by the time the
    files were copied (a user deleted the document, or old recordings were purged, while
    the backup ran): the restored installation has the row without the file, as it would
    have had a moment later. ``missing``: the row is still there and the file is not,
    in the installation itself: the backup is as incomplete as the installation.
    """

    path: str
    kind: Literal["document", "recording"]
    id: str
    reason: Literal["deleted_after_snapshot", "missing"]


class Manifest(_Strict):
    format: Literal["telemed-backup"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    telemed_version: str
    created_at: AwareDatetime
    database: DatabaseEntry
    files: list[FileEntry]
    referenced: dict[str, int] = Field(default_factory=dict)
    """How many files of each kind the copied database refers to."""
    missing: list[MissingFile] = Field(default_factory=list)
    unreferenced: int = Field(default=0, ge=0)
    """Files copied that the database does not refer to (an upload whose row was not
    committed yet at the snapshot): harmless, kept as found."""

    @property
    def complete(self) -> bool:
        """Whether every file the database refers to is in the backup, or was deleted
        from the installation after the snapshot."""
        return all(m.reason != "missing" for m in self.missing)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)


class Reference(_Strict):
    """A file the database refers to: its path relative to the data directory."""

    path: str
    kind: Literal["document", "recording"]
    id: str


def member_for(data_path: str) -> str:
    """The archive member of a file at ``data_path`` (relative to the data directory)."""
    return f"{FILES}/{data_path}"


def data_path_of(member: str) -> str | None:
    """The data-directory path of an archive member, or ``None`` if it is not a file of
    the data directory (the database, the manifest)."""
    prefix = FILES + "/"
    return member[len(prefix) :] if member.startswith(prefix) else None


def safe_relative(path: str) -> bool:
    """Whether ``path`` is a plain relative POSIX path that stays inside the folder it is
    joined to: no absolute path, no ``..``, no empty or ``.`` parts, no backslash or NUL."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return False
    parts = path.split("/")
    return all(part not in ("", ".", "..") for part in parts) and bool(PurePosixPath(path).parts)


def dump_manifest(manifest: Manifest) -> bytes:
    return json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False).encode()


def parse_manifest(raw: bytes) -> Manifest:
    """The manifest of an archive. Raises ``InvalidBackup`` when it is not one this
    version reads, or names a member outside the archive's own folders."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidBackup("The backup's manifest.json is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidBackup("Not a Telemed backup (manifest.json has no telemed-backup format)")
    if data.get("format_version") != FORMAT_VERSION:
        raise InvalidBackup(
            "This backup's format version is not one this Telemed reads",
            details={"format_version": data.get("format_version"), "known": [FORMAT_VERSION]},
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in error["loc"]) for error in exc.errors()})
        raise InvalidBackup(
            "The backup's manifest.json is malformed", details={"fields": fields}
        ) from None
    paths = [entry.path for entry in manifest.files]
    bad = [p for p in paths if not safe_relative(p) or p == MANIFEST]
    if bad:
        raise InvalidBackup("The manifest names unsafe paths", details={"paths": bad[:10]})
    if len(set(paths)) != len(paths):
        raise InvalidBackup("The manifest names a file twice")
    if manifest.database.path != DATABASE_MEMBER[manifest.database.backend]:
        raise InvalidBackup(
            "The manifest's database file is not where this format keeps it",
            details={"path": manifest.database.path},
        )
    if manifest.database.path not in paths:
        raise InvalidBackup("The manifest lists no checksum for the database file")
    others = [p for p in paths if p != manifest.database.path and data_path_of(p) is None]
    if others:
        raise InvalidBackup(
            "The manifest names files outside the archive's folders",
            details={"paths": others[:10]},
        )
    return manifest


def check_contents(manifest: Manifest, found: Mapping[str, tuple[int, str]]) -> list[str]:
    """What differs between the manifest and the archive's members as read (path →
    size, SHA-256). Empty when the archive is whole: every listed file present with its
    size and checksum, nothing else in it."""
    problems = []
    listed = {entry.path: entry for entry in manifest.files}
    for path, entry in listed.items():
        if path not in found:
            problems.append(f"{path}: missing from the archive")
            continue
        size, digest = found[path]
        if size != entry.size:
            problems.append(f"{path}: {size} bytes, the manifest says {entry.size}")
        elif digest != entry.sha256:
            problems.append(f"{path}: the SHA-256 differs from the manifest's")
    problems.extend(f"{path}: not in the manifest" for path in found if path not in listed)
    return problems


def missing_references(references: Iterable[Reference], present: Iterable[str]) -> list[Reference]:
    """The references whose file is not among ``present`` (data-directory paths)."""
    have = set(present)
    return [ref for ref in references if ref.path not in have]


def unreferenced_count(references: Iterable[Reference], present: Iterable[str]) -> int:
    wanted = {ref.path for ref in references}
    return sum(1 for path in present if path not in wanted and path.startswith(_REFERENCED))


_REFERENCED = ("documents/", "recordings/")


def archive_name(now: datetime) -> str:
    """The file name of a backup made at ``now`` (UTC): sorts by time."""
    return f"telemed-backup-{now.strftime('%Y%m%dT%H%M%SZ')}.tar"
