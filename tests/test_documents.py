"""The medical document cabinet: typed uploads, limits, private access, audit."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
from aiohttp import FormData
from sqlmodel import select

from telemed import keys
from telemed.accounts.models import Role
from telemed.audit import AuditEvent
from tests import samples
from tests.conftest import AppClient
from tests.documents_form import document_form
from tests.factories import assert_error, bearer, register, staff

MAX_BYTES = 256 * 1024
QUOTA_BYTES = 600 * 1024


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"document_max_bytes": MAX_BYTES, "document_quota_bytes": QUOTA_BYTES}


async def upload(client: AppClient, token: str, content: bytes, file_name: str, **kw: Any) -> Any:
    return await client.post(
        "/api/v1/documents", data=document_form(content, file_name, **kw), headers=bearer(token)
    )


def stored_files(client: AppClient) -> list[Path]:
    assert client.app is not None
    root = client.app[keys.SETTINGS].documents_dir
    return sorted(p for p in root.rglob("*") if p.is_file())


async def audit_rows(client: AppClient) -> list[AuditEvent]:
    assert client.app is not None
    async with client.app[keys.SESSION_FACTORY]() as session:
        return list((await session.exec(select(AuditEvent).order_by(AuditEvent.id))).all())  # type: ignore[arg-type]  # int column


@pytest.mark.parametrize(
    ("make", "file_name", "content_type", "kind"),
    [
        (samples.pdf, "Выписка Иванова.pdf", "application/pdf", "discharge_summary"),
        (samples.jpeg, "УЗИ сердца.jpg", "image/jpeg", "ultrasound"),
        (samples.png, "анализ крови.png", "image/png", "lab_results"),
        (samples.dicom, "КТ грудной клетки.dcm", "application/dicom", "ct"),
    ],
)
async def test_upload_list_download_delete(
    client: AppClient, make: Any, file_name: str, content_type: str, kind: str
) -> None:
    content: bytes = make()
    auth = await register(client)
    headers = bearer(auth["token"])
    response = await upload(client, auth["token"], content, file_name, kind=kind)
    assert response.status == 201, await response.text()
    document = await response.json()
    assert document["content_type"] == content_type
    assert document["size"] == len(content)
    assert document["sha256"] == hashlib.sha256(content).hexdigest()
    assert document["file_name"] == file_name
    assert document["kind"] == kind
    assert document["owner_id"] == auth["user"]["id"]

    listed = await (await client.get("/api/v1/documents", headers=headers)).json()
    assert [d["id"] for d in listed["items"]] == [document["id"]]

    one = await client.get(f"/api/v1/documents/{document['id']}", headers=headers)
    assert (await one.json())["sha256"] == document["sha256"]

    download = await client.get(f"/api/v1/documents/{document['id']}/content", headers=headers)
    assert download.status == 200
    assert download.headers["Content-Type"] == content_type
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == file_name
    assert await download.read() == content

    inline = await client.get(
        f"/api/v1/documents/{document['id']}/content", params={"inline": "true"}, headers=headers
    )
    assert inline.headers["Content-Disposition"].startswith("inline;")

    assert len(stored_files(client)) == 1
    deleted = await client.delete(f"/api/v1/documents/{document['id']}", headers=headers)
    assert deleted.status == 204
    assert stored_files(client) == []
    gone = await client.get(f"/api/v1/documents/{document['id']}", headers=headers)
    await assert_error(gone, 404, "not_found")
    listed = await (await client.get("/api/v1/documents", headers=headers)).json()
    assert listed["items"] == []


async def test_type_comes_from_content_not_name(client: AppClient) -> None:
    auth = await register(client)
    # A PNG named .pdf and declared as PDF is stored as what it is.
    response = await upload(
        client, auth["token"], samples.png(), "scan.pdf", declared="application/pdf"
    )
    assert response.status == 201
    assert (await response.json())["content_type"] == "image/png"


@pytest.mark.parametrize(
    ("content", "file_name"),
    [
        (samples.executable(), "выписка.pdf"),
        (b"MZ\x90\x00" + b"\x00" * 4000, "scan.jpg"),
        (b"<html><script>alert(1)</script></html>", "report.png"),
        (b"%PD", "tiny.pdf"),
        (b"", "empty.pdf"),
    ],
)
async def test_other_types_are_415_and_leave_nothing(
    client: AppClient, content: bytes, file_name: str
) -> None:
    auth = await register(client)
    response = await upload(client, auth["token"], content, file_name, declared="application/pdf")
    await assert_error(response, 415, "unsupported_type")
    assert stored_files(client) == []
    listed = await (await client.get("/api/v1/documents", headers=bearer(auth["token"]))).json()
    assert listed["items"] == []


async def test_oversized_file_is_413_and_leaves_nothing(client: AppClient) -> None:
    auth = await register(client)
    big = samples.noisy_png(MAX_BYTES + 50_000)
    assert len(big) > MAX_BYTES
    response = await upload(client, auth["token"], big, "big.png")
    error = await assert_error(response, 413, "too_large")
    assert error["details"]["max_bytes"] == MAX_BYTES
    assert stored_files(client) == []


async def test_oversized_streamed_upload_without_length_is_413(client: AppClient) -> None:
    """A chunked upload (no Content-Length) is cut off while streaming."""
    auth = await register(client)
    big = samples.noisy_png(MAX_BYTES + 50_000)

    async def chunks() -> Any:
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    data = FormData()
    data.add_field("kind", "other")
    data.add_field("title", "Большой файл")
    data.add_field("file", chunks(), filename="big.png", content_type="image/png")
    response = await client.post("/api/v1/documents", data=data, headers=bearer(auth["token"]))
    await assert_error(response, 413, "too_large")
    assert stored_files(client) == []


async def test_quota_per_patient_is_413_and_leaves_nothing(client: AppClient) -> None:
    auth = await register(client)
    piece = samples.noisy_png(200_000)
    for _ in range(QUOTA_BYTES // len(piece)):
        assert (await upload(client, auth["token"], piece, "part.png")).status == 201
    kept = stored_files(client)
    response = await upload(client, auth["token"], piece, "one-too-many.png")
    error = await assert_error(response, 413, "quota_exceeded")
    assert error["details"]["quota_bytes"] == QUOTA_BYTES
    assert stored_files(client) == kept
    # Another patient has a quota of their own.
    other = await register(client)
    assert (await upload(client, other["token"], piece, "part.png")).status == 201


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"kind": "x-ray-of-soul", "title": "Снимок"}, "invalid_input"),
        ({"kind": "mri"}, "invalid_input"),
        ({"kind": "mri", "title": ""}, "invalid_input"),
        ({"kind": "mri", "title": "я" * 201}, "invalid_input"),
        ({"kind": "mri", "title": "МРТ", "owner_id": "someone"}, "invalid_input"),
    ],
)
async def test_bad_form_fields_are_400_and_leave_nothing(
    client: AppClient, fields: dict[str, str], code: str
) -> None:
    auth = await register(client)
    data = FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    data.add_field("file", samples.pdf(), filename="mri.pdf", content_type="application/pdf")
    response = await client.post("/api/v1/documents", data=data, headers=bearer(auth["token"]))
    await assert_error(response, 400, code)
    assert stored_files(client) == []


async def test_upload_without_file_or_as_json_is_400(client: AppClient) -> None:
    auth = await register(client)
    data = FormData()
    data.add_field("kind", "mri")
    data.add_field("title", "МРТ")
    response = await client.post("/api/v1/documents", data=data, headers=bearer(auth["token"]))
    await assert_error(response, 400, "invalid_input")
    response = await client.post(
        "/api/v1/documents", json={"kind": "mri"}, headers=bearer(auth["token"])
    )
    await assert_error(response, 400, "invalid_input")
    anonymous = await client.post("/api/v1/documents", data=document_form(samples.pdf(), "x.pdf"))
    await assert_error(anonymous, 401, "unauthenticated")
    assert stored_files(client) == []


async def test_another_patients_document_is_404(client: AppClient) -> None:
    owner = await register(client)
    intruder = await register(client)
    created = await (await upload(client, owner["token"], samples.pdf(), "выписка.pdf")).json()
    path = f"/api/v1/documents/{created['id']}"
    for response in (
        await client.get(path, headers=bearer(intruder["token"])),
        await client.get(path + "/content", headers=bearer(intruder["token"])),
        await client.delete(path, headers=bearer(intruder["token"])),
    ):
        error = await assert_error(response, 404, "not_found")
        # Exactly what a missing document answers: nothing tells that it exists.
        missing = await client.get(
            "/api/v1/documents/00000000-0000-4000-8000-000000000000",
            headers=bearer(intruder["token"]),
        )
        assert error == (await missing.json())["error"]
    listed = await (await client.get("/api/v1/documents", headers=bearer(intruder["token"]))).json()
    assert listed["items"] == []
    # Still there for the owner.
    assert (await client.get(path, headers=bearer(owner["token"]))).status == 200
    assert len(stored_files(client)) == 1
    assert [row for row in await audit_rows(client) if row.object_type == "document"] == []


async def test_a_non_uuid_id_is_404(client: AppClient) -> None:
    auth = await register(client)
    response = await client.get("/api/v1/documents/not-a-uuid", headers=bearer(auth["token"]))
    await assert_error(response, 404, "not_found")


async def test_reads_by_others_are_audited_and_owner_reads_are_not(client: AppClient) -> None:
    owner = await register(client)
    admin = await staff(client, Role.ADMIN)
    created = await (await upload(client, owner["token"], samples.jpeg(), "узи.jpg")).json()
    path = f"/api/v1/documents/{created['id']}"
    await client.get(path, headers=bearer(owner["token"]))
    await client.get(path + "/content", headers=bearer(owner["token"]))
    assert [r for r in await audit_rows(client) if r.object_type == "document"] == []

    assert (await client.get(path, headers=bearer(admin["token"]))).status == 200
    content = await client.get(path + "/content", headers=bearer(admin["token"]))
    assert await content.read() == samples.jpeg()
    rows = [r for r in await audit_rows(client) if r.object_type == "document"]
    assert [(r.action, r.object_id, str(r.actor_id), str(r.subject_id)) for r in rows] == [
        ("document.viewed", created["id"], admin["user"]["id"], owner["user"]["id"]),
        ("document.downloaded", created["id"], admin["user"]["id"], owner["user"]["id"]),
    ]
    # An admin may read, not delete, a patient's document.
    response = await client.delete(path, headers=bearer(admin["token"]))
    await assert_error(response, 404, "not_found")


async def test_the_audit_log_is_append_only(client: AppClient) -> None:
    owner = await register(client)
    admin = await staff(client, Role.ADMIN)
    created = await (await upload(client, owner["token"], samples.png(), "x.png")).json()
    await client.get(f"/api/v1/documents/{created['id']}", headers=bearer(admin["token"]))
    assert client.app is not None
    engine = client.app[keys.ENGINE]
    for statement in ("UPDATE audit_event SET action = 'nothing'", "DELETE FROM audit_event"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(sa.text(statement))
    assert any(r.action == "document.viewed" for r in await audit_rows(client))


async def test_file_name_is_cleaned_of_paths(client: AppClient) -> None:
    auth = await register(client)
    for raw in ("../../etc/Заключение.pdf", "C:\\Users\\Иван\\Заключение.pdf"):
        response = await upload(client, auth["token"], samples.pdf(), raw)
        assert (await response.json())["file_name"] == "Заключение.pdf"
