"""Document bytes on disk: streamed in under a temporary name, hashed on the way, then
moved into place. A failed upload leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
    """Files under ``root``: ``<root>/<first two hex digits>/<document id>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"

    def prepare(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        # Uploads cut off by a crash are never referenced: clear them at start.
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)

    def path_of(self, document_id: uuid.UUID) -> Path:
        return self.root / document_id.hex[:2] / document_id.hex

    async def receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredUpload:
        """Write ``chunks`` to a temporary file, checking type and size as they arrive.

        Raises ``UnsupportedType`` as soon as the first bytes are known not to be an
        accepted type, and ``TooLarge`` as soon as ``max_bytes`` is passed; in both
        cases the partial file is removed.
        """
        path = self.incoming / uuid.uuid4().hex
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
