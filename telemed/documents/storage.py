"""Document bytes on disk: streamed in under a temporary name, hashed on the way, then
moved into place. A failed upload leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from telemed.documents.filetypes import SNIFF_BYTES, sniff
from telemed.errors import TooLarge, UnsupportedType


@dataclass
class StoredUpload:
    """A fully received upload waiting under a temporary name."""

    path: Path
    size: int
    sha256: str
    content_type: str

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class DocumentStore:
    """Files under ``root``: ``<root>/<first two hex digits>/<document id>``.

    Uploads arrive under ``<root>/incoming/<host>.<pid>.<random>``: several processes
    (on several machines, with shared storage) may receive uploads into one directory,
    and each must recognise the leftovers that are certainly abandoned.
    """

    def __init__(self, root: Path, *, abandoned_after: timedelta = timedelta(hours=24)) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.abandoned_after = abandoned_after
        self._prefix = f"{_host()}.{os.getpid()}."

    def prepare(self) -> int:
        """Create the directories and remove the uploads that a crash cut off: those of
        a process of this machine that is gone, and anyone's older than
        ``abandoned_after`` (no upload takes that long). Uploads in flight in other
        processes are left alone. Returns how many were removed."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        removed = 0
        oldest = time.time() - self.abandoned_after.total_seconds()
        for leftover in self.incoming.iterdir():
            try:
                if _abandoned(leftover.name) or leftover.stat().st_mtime < oldest:
                    leftover.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue  # finished (moved into place) meanwhile
        return removed

    def path_of(self, document_id: uuid.UUID) -> Path:
        return self.root / document_id.hex[:2] / document_id.hex

    async def receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredUpload:
        """Write ``chunks`` to a temporary file, checking type and size as they arrive.

        Raises ``UnsupportedType`` as soon as the first bytes are known not to be an
        accepted type, and ``TooLarge`` as soon as ``max_bytes`` is passed; in both
        cases the partial file is removed.
        """
        path = self.incoming / (self._prefix + uuid.uuid4().hex)
        digest = hashlib.sha256()
        size = 0
        head = b""
        content_type: str | None = None
        handle = await asyncio.to_thread(_open_for_write, path)
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(
                        "The file is larger than allowed",
                        details={"max_bytes": max_bytes},
                    )
                if content_type is None:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        content_type = _accepted(head)
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
            if content_type is None:
                content_type = _accepted(head)
            await asyncio.to_thread(_flush_and_close, handle)
        except BaseException:
            handle.close()
            path.unlink(missing_ok=True)
            raise
        return StoredUpload(
            path=path, size=size, sha256=digest.hexdigest(), content_type=content_type
        )

    def commit(self, upload: StoredUpload, document_id: uuid.UUID) -> Path:
        """Move a received upload to its place (same file system: an atomic rename)."""
        target = self.path_of(document_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload.path, target)
        return target

    def remove(self, document_id: uuid.UUID) -> None:
        self.path_of(document_id).unlink(missing_ok=True)


def _host() -> str:
    return socket.gethostname().replace(".", "_")[:60] or "host"


def _abandoned(name: str) -> bool:
    """Whether an incoming file belongs to a process of this machine that has ended."""
    host, _, rest = name.partition(".")
    pid_text, _, _ = rest.partition(".")
    if host != _host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


def _accepted(head: bytes) -> str:
    content_type = sniff(head)
    if content_type is None:
        raise UnsupportedType(
            "Only PDF, JPEG, PNG and DICOM files are accepted",
            details={
                "accepted": ["application/pdf", "image/jpeg", "image/png", "application/dicom"]
            },
        )
    return content_type


def _open_for_write(path: Path) -> BinaryIO:
    return path.open("wb")


def _flush_and_close(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
