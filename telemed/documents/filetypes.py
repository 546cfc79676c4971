"""What a file is, from its first bytes (never from its name or the client's claim)."""

from __future__ import annotations

# Enough bytes to see every signature below (DICOM's sits after a 128-byte preamble).
SNIFF_BYTES = 132

PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"
DICOM = "application/dicom"

EXTENSIONS = {PDF: ".pdf", JPEG: ".jpg", PNG: ".png", DICOM: ".dcm"}


def sniff(head: bytes) -> str | None:
    """The media type of a file that starts with ``head``, or None if it is not accepted."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    return None
