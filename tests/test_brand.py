"""The service's name is one setting (TELEMED_BRAND_NAME): the app's header and titles,
the installed app's name, every SMS and e-mail, and the conclusion PDF say the same."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from telemed.clock import FakeClock
from telemed.jobs import run_jobs_once
from tests.conftest import AppClient
from tests.factories import bearer, register
from tests.flows import manager_token, ok
from tests.test_conclusions_and_jobs import completed_consultation, conclusion_body, pdf_text

BRAND = "ЗдравЛинк <Урал>"  # with characters that must be escaped in HTML


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"brand_name": BRAND}


async def test_the_pages_and_the_installed_app_name_the_service(client: AppClient) -> None:
    page = await (await client.get("/")).text()
    assert "<title>ЗдравЛинк &lt;Урал&gt; — онлайн-консультации</title>" in page
    assert '<a class="brand" href="#/">ЗдравЛинк &lt;Урал&gt;</a>' in page
    assert "{{brand}}" not in page
    room = await (await client.get("/static/room.html")).text()
    assert '<meta name="application-name" content="ЗдравЛинк &lt;Урал&gt;">' in room
    response = await client.get("/manifest.webmanifest")
    assert response.headers["Content-Type"].startswith("application/manifest+json")
    manifest = json.loads(await response.text())
    assert manifest["short_name"] == BRAND
    assert manifest["name"] == f"{BRAND} — онлайн-консультации"


async def test_sms_e_mail_and_the_conclusion_name_the_service(
    client: AppClient, app: web.Application, clock: FakeClock
) -> None:
    manager = await manager_token(client)
    patient = await register(client, email="brand@example.ru")
    await client.post("/api/v1/auth/password-reset", json={"phone": patient["user"]["phone"]})
    await run_jobs_once(app)
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    [sms] = [m for m in outbox if m["kind"] == "password_reset_code"]
    assert sms["body"].startswith(f"{BRAND}: ")

    world = await completed_consultation(client, clock)
    path = f"/consultations/{world['id']}/conclusion"
    await ok(client, "POST", path, world["duty"]["token"], conclusion_body(), status=201)
    await run_jobs_once(app)
    outbox = (await ok(client, "GET", "/outbox", manager))["items"]
    mail = [m for m in outbox if m["kind"] == "conclusion_issued" and m["channel"] == "email"]
    assert mail
    assert f"Служба онлайн-консультаций «{BRAND}»." in mail[0]["body"]
    pdf = await client.get(f"/api/v1{path}.pdf", headers=bearer(world["patient"]["token"]))
    assert BRAND in pdf_text(await pdf.read())
