"""The multipart form of a document upload."""

from __future__ import annotations

from aiohttp import FormData


def document_form(
    content: bytes,
    file_name: str,
    *,
    kind: str = "discharge_summary",
    title: str = "Выписка из стационара",
    declared: str = "application/octet-stream",
) -> FormData:
    data = FormData()
    data.add_field("kind", kind)
    data.add_field("title", title)
    data.add_field("file", content, filename=file_name, content_type=declared)
    return data
