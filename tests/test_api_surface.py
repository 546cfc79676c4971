"""What every client relies on: the OpenAPI document, the error shape, security headers,
health checks, migrations that match the models, and logs without patient data."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from openapi_spec_validator import validate

from telemed import db, keys
from telemed.accounts.models import Role
from telemed.app import create_app
from telemed.settings import Settings
from tests import samples
from tests.conftest import AppClient
from tests.documents_form import document_form
from tests.factories import assert_error, bearer, register, staff


async def test_openapi_lists_every_api_route_and_is_valid(client: AppClient) -> None:
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    spec = await response.json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert client.app is not None
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
        and route.resource.canonical != "/api/v1/openapi.json"
    }
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented
    assert len(routes) >= 20
    # Request and response schemas come from the models.
    register_op = spec["paths"]["/api/v1/auth/register"]["post"]
    body_ref = register_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body_schema = spec["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert set(body_schema["required"]) == {
        "full_name",
        "birth_date",
        "phone",
        "password",
        "consent_version",
    }
    assert body_schema["additionalProperties"] is False
    error_ref = register_op["responses"]["409"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref.endswith("/ErrorEnvelope")
    upload_op = spec["paths"]["/api/v1/documents"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    assert {"413", "415"} <= set(upload_op["responses"])
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            assert any(code.startswith("2") for code in op["responses"]), (method, path)


async def test_security_headers_on_every_kind_of_response(client: AppClient) -> None:
    auth = await register(client)
    responses = [
        await client.get("/healthz"),
        await client.get("/"),
        await client.get("/api/v1/centres"),
        await client.get("/api/v1/me", headers=bearer(auth["token"])),
        await client.get("/api/v1/me"),  # 401
        await client.get("/no/such/page"),  # 404
    ]
    created = await client.post(
        "/api/v1/documents",
        data=document_form(samples.png(), "x.png"),
        headers=bearer(auth["token"]),
    )
    document = await created.json()
    responses.append(
        await client.get(
            f"/api/v1/documents/{document['id']}/content", headers=bearer(auth["token"])
        )
    )
    for response in responses:
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"


async def test_api_responses_are_not_cached(client: AppClient) -> None:
    auth = await register(client)
    response = await client.get("/api/v1/me", headers=bearer(auth["token"]))
    assert response.headers["Cache-Control"] == "no-store"


async def test_the_web_apps_files_are_compressed_and_api_answers_are_not(
    client: AppClient,
) -> None:
    """A patient on a weak mobile link loads the room compressed; an API answer, which
    may hold a secret beside what the client sent, never is (BREACH)."""
    gzip = {"Accept-Encoding": "gzip, deflate"}
    for path in ("/", "/static/room.html", "/static/room.js", "/static/room.css",
                 "/static/i18n/room.ru.json", "/manifest.webmanifest", "/sw.js",
                 "/static/vendor/socket.io/socket.io.esm.min.js"):  # fmt: skip
        response = await client.get(path, headers=gzip, auto_decompress=False)
        assert response.status == 200, path
        assert response.headers.get("Content-Encoding") == "gzip", path
        assert "Accept-Encoding" in response.headers.getall("Vary", []), path
        packed = await response.read()
        plain = await (await client.get(path, headers={"Accept-Encoding": "identity"})).read()
        assert len(packed) < len(plain), path
        assert zlib.decompress(packed, wbits=31) == plain, path
        # A browser that holds the file asks whether it changed: "no", with no body.
        if "ETag" in response.headers:
            again = {**gzip, "If-None-Match": response.headers["ETag"]}
            cached = await client.get(path, headers=again, auto_decompress=False)
            assert cached.status == 304, path
            assert await cached.read() == b"", path
    png = await client.get("/static/icons/favicon-32.png", headers=gzip, auto_decompress=False)
    assert png.status == 200
    assert "Content-Encoding" not in png.headers
    auth = await register(client)
    me = await client.get("/api/v1/me", headers={**bearer(auth["token"]), **gzip})
    assert me.status == 200
    assert "Content-Encoding" not in me.headers


async def test_a_file_the_browser_has_is_answered_304_with_nothing_after_it(
    client: AppClient,
) -> None:
    """The browser (and the service worker) asks again with the file's ETag: the 304 has
    no body, so the next answer on the same connection reads whole (a compressor left
    on wrote an empty gzip stream there, and Chromium failed the next file)."""
    first = await client.get("/static/room/view.js", headers={"Accept-Encoding": "gzip"})
    etag = first.headers["ETag"]
    await first.read()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        asked = f"Host: x\r\nAccept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n\r\n"
        writer.write(f"GET /static/room/view.js HTTP/1.1\r\n{asked}".encode())
        writer.write(b"GET /static/room/state.js HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 304 "), head
        assert await reader.readuntil(b"\r\n") == b"HTTP/1.1 200 OK\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_unknown_routes_and_methods_answer_the_error_shape(client: AppClient) -> None:
    await assert_error(await client.get("/api/v1/nothing-here"), 404, "not_found")
    response = await client.put("/api/v1/centres", json={})
    await assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


async def test_too_large_json_body_is_413(client: AppClient) -> None:
    response = await client.post(
        "/api/v1/auth/login",
        data=io.BytesIO(b'{"login": "' + b"x" * 2_000_000 + b'"}'),
        headers={"Content-Type": "application/json"},
    )
    await assert_error(response, 413, "too_large")


async def test_health_and_readiness(client: AppClient) -> None:
    health = await client.get("/healthz")
    assert health.status == 200
    assert (await health.json())["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "ok", "storage": "ok", "nodes": "ok"}


async def test_readiness_reports_a_data_directory_that_takes_no_writes(
    client: AppClient, settings: Settings
) -> None:
    # The share holding the documents and recordings is gone (unmounted, moved away).
    settings.data_dir.rename(settings.data_dir.with_name("moved-away"))
    error = await assert_error(await client.get("/readyz"), 503, "unavailable")
    checks = error["details"]["checks"]
    assert checks["storage"] == "the data directory takes no writes (No such file or directory)"
    assert checks["database"] == "ok"


async def test_readiness_reports_an_unreachable_database(
    aiohttp_client: Callable[[web.Application], Awaitable[AppClient]], tmp_path: Path
) -> None:
    # A server whose database is gone (nothing listens on port 1): alive, not ready.
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        migrate_on_start=False,
    )
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/healthz")).status == 200
    await assert_error(await client.get("/readyz"), 503, "unavailable")


async def test_migrations_match_the_models(client: AppClient) -> None:
    assert client.app is not None

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, db.load_models()))

    async with client.app[keys.ENGINE].connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_logs_carry_no_patient_data(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name, phone, email, title = (
        "Секретова Тайна Ивановна",
        "+79125550123",
        "tayna@example.ru",
        "Онкомаркеры",
    )
    auth = await register(client, full_name=name, phone=phone, email=email)
    await client.post("/api/v1/auth/login", json={"login": phone, "password": "Wrong-pass-1"})
    await client.post(
        "/api/v1/documents",
        headers=bearer(auth["token"]),
        data=document_form(samples.pdf(), "Анализ Секретовой.pdf", title=title),
    )
    admin = await staff(client, Role.ADMIN)
    await client.get("/api/v1/documents", headers=bearer(admin["token"]))
    await client.get("/api/v1/centres", params={"region": f"{name} {phone}"})
    assert any(r.name == "aiohttp.access" for r in caplog.records)
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (name, "Секретов", phone, phone[2:], email, title, auth["token"]):
        assert secret not in text
    assert not re.search(r"\+7\d{10}", text)
