"""The real command line in a subprocess, on the embedded SQLite default (runs once, not per
database backend): demo data, accounts (a system client's token read against the app on
the same data), migrations and the server itself."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from telemed.app import create_app
from telemed.demo import CENTRES, DOCTOR_PASSWORD, DOCTORS, MANAGER, PATIENT
from telemed.settings import Settings
from tests.conftest import AppClient
from tests.nodes import stop_node
from tests.servers import free_port, http, wait_until_healthy

TABLES = ("user_account", "centre", "doctor", "duty_slot")
# "  patient        +79000000001  Patient-2026   Иванов Сергей Петрович"
LOGIN_LINE = re.compile(r"^\s+(?P<role>\S.*?)\s+(?P<phone>\+\d{11})\s+(?P<password>\S+)\s+\S")


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any TELEMED_* setting, on a data dir of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMED_")}
    return {**env, "TELEMED_DATA_DIR": str(data_dir), **extra}


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemed", *args],
        env=cli_env(data_dir),
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def query(data_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(data_dir / "telemed.db")) as connection:
        return list(connection.execute(sql, params).fetchall())


def counts(data_dir: Path) -> dict[str, int]:
    return {table: query(data_dir, f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}


def logins(stdout: str) -> dict[str, tuple[str, str]]:
    """The printed demo logins: phone → (role, password)."""
    found = {}
    for line in stdout.splitlines():
        match = LOGIN_LINE.match(line)
        if match:
            found[match["phone"]] = (match["role"], match["password"])
    return found


def as_utc(text: str) -> datetime:
    """A datetime as SQLite holds it (naive UTC text)."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def test_demo_prints_the_logins_and_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run_cli(data, "demo")
    assert first.returncode == 0, first.stderr
    printed = logins(first.stdout)
    expected = {phone: DOCTOR_PASSWORD for _, phone, *_ in DOCTORS}
    expected |= {MANAGER[1]: MANAGER[2], PATIENT[1]: PATIENT[2]}
    assert {phone: password for phone, (_, password) in printed.items()} == expected
    assert printed[PATIENT[1]][0] == "patient"
    assert printed[MANAGER[1]][0] == "manager"
    assert sum(role == "doctor (duty)" for role, _ in printed.values()) == 2
    after_first = counts(data)
    assert after_first["centre"] == len(CENTRES) == 3
    assert after_first["doctor"] == len(DOCTORS)
    assert after_first["user_account"] == len(DOCTORS) + 2

    now = datetime.now(UTC)
    slots = query(data, "SELECT doctor_id, starts_at, ends_at, status FROM duty_slot")
    upcoming = [s for s in slots if now <= as_utc(s[1]) < now + timedelta(days=7)]
    assert all(status == "free" and as_utc(end) > as_utc(start) for _, start, end, status in slots)
    with_slots = {doctor_id for doctor_id, *_ in upcoming}
    duty = {row[0] for row in query(data, "SELECT id FROM doctor WHERE is_duty")}
    assert len(duty) == 2
    assert with_slots == duty

    second = run_cli(data, "demo")
    assert second.returncode == 0, second.stderr
    assert logins(second.stdout) == printed
    assert counts(data) == after_first


def test_create_user_stores_the_account(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = run_cli(
        data,
        "create-user",
        "--role",
        "admin",
        "--phone",
        "+79005550001",
        "--password",
        "Admin-Pass-2026",
        "--name",
        "Главный  Администратор",
    )
    assert created.returncode == 0, created.stderr
    assert "+79005550001" in created.stdout
    assert "admin" in created.stdout
    manager = run_cli(
        data,
        "create-user",
        "--role",
        "manager",
        "--phone",
        "8 (900) 555-00-02",
        "--password",
        "Manager-Pass-2026",
        "--name",
        "Менеджер Центра",
    )
    assert manager.returncode == 0, manager.stderr

    rows = query(
        data,
        "SELECT role, phone, full_name, must_change_password, password_hash "
        "FROM user_account ORDER BY phone",
    )
    assert [row[:4] for row in rows] == [
        ("admin", "+79005550001", "Главный Администратор", 0),
        ("manager", "+79005550002", "Менеджер Центра", 0),
    ]
    assert all(row[4].startswith("$argon2id$") for row in rows)

    again = run_cli(
        data,
        "create-user",
        "--role",
        "patient",
        "--phone",
        "+7 900 555 00 01",
        "--password",
        "Other-Pass-2026",
        "--name",
        "Повтор",
    )
    assert again.returncode != 0
    assert "phone" in again.stderr.lower()
    assert len(query(data, "SELECT id FROM user_account")) == 2


def test_create_user_refuses_bad_input_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cases = [
        ("--role", "admin", "--phone", "+79005550003", "--password", "short", "--name", "Слабый"),
        ("--role", "admin", "--phone", "12", "--password", "Admin-Pass-2026", "--name", "Номер"),
        (
            "--role",
            "doctor",
            "--phone",
            "+79005550004",
            "--password",
            "Doctor-Pass-2026",
            "--name",
            "Без Центра",
        ),
    ]
    for args in cases:
        result = run_cli(data, "create-user", *args)
        assert result.returncode != 0, args
        assert result.stderr.strip().splitlines()[-1].startswith("telemed:"), result.stderr
        assert "Traceback" not in result.stderr
    weak = run_cli(data, "create-user", *cases[0])
    assert "password" in weak.stderr.lower()
    unknown_role = run_cli(
        data,
        "create-user",
        "--role",
        "root",
        "--phone",
        "+79005550005",
        "--password",
        "Admin-Pass-2026",
        "--name",
        "Корень",
    )
    assert unknown_role.returncode == 2
    assert "invalid choice" in unknown_role.stderr
    # Refused before the database is even opened: no file, or one with nothing in it.
    assert not (data / "telemed.db").exists() or counts(data) == dict.fromkeys(TABLES, 0)


def account(role: str, phone: str, password: str, name: str) -> tuple[str, ...]:
    """The arguments of ``create-user`` that every account has."""
    return ("--role", role, "--phone", phone, "--password", password, "--name", name)


SYSTEM_CLIENT = account("system", "+79005550010", "Rmis-Client-2026", "РМИС Свердловской области")
"""The system client of docs/fhir.md ("How a regional system gets its token")."""


async def test_a_system_client_made_by_the_cli_reads_its_centre_through_fhir(
    tmp_path: Path, aiohttp_client: Callable[[web.Application], Awaitable[AppClient]]
) -> None:
    data = tmp_path / "data"
    assert run_cli(data, "demo").returncode == 0
    centre_ids = {
        name: str(uuid.UUID(centre_id))
        for centre_id, name in query(data, "SELECT id, name FROM centre")
    }
    centre = centre_ids[CENTRES[0][0]]

    # Refused, with what to do, and nothing made: a system client without a centre, a
    # centre for a patient, a centre that does not exist.
    before = counts(data)
    for args, says in (
        (SYSTEM_CLIENT, "--centre"),
        (
            (
                *account("patient", "+79005550011", "Patient-Pass-2026", "Пациент"),
                "--centre",
                centre,
            ),
            "not a patient",
        ),
        ((*SYSTEM_CLIENT, "--centre", str(uuid.uuid4())), "not found"),
    ):
        refused = run_cli(data, "create-user", *args)
        assert refused.returncode != 0, args
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("telemed:"), refused.stderr
        assert says in last, last
    assert counts(data) == before

    created = run_cli(data, "create-user", *SYSTEM_CLIENT, "--centre", centre)
    assert created.returncode == 0, created.stderr
    assert "created system" in created.stdout
    manager = account("manager", "+79005550012", "Manager-Pass-2026", "Менеджер Кардиоцентра")
    manager_made = run_cli(data, "create-user", *manager, "--centre", centre)
    assert manager_made.returncode == 0, manager_made.stderr
    bound = query(
        data,
        "SELECT role, centre_id FROM user_account WHERE phone IN (?, ?) ORDER BY phone",
        "+79005550010",
        "+79005550012",
    )
    assert [(role, str(uuid.UUID(centre_id))) for role, centre_id in bound] == [
        ("system", centre),
        ("manager", centre),
    ]

    # The server on that data: the demo patient asks the centre, the system client signs
    # in as docs/fhir.md shows and finds the patient; the API refuses its token.
    client = await aiohttp_client(create_app(Settings(data_dir=data)))

    async def sign_in(login: str, password: str) -> Any:
        response = await client.post(
            "/api/v1/auth/login", json={"login": login, "password": password}
        )
        assert response.status == 200, await response.text()
        client.session.cookie_jar.clear()
        return await response.json()

    patient = await sign_in(PATIENT[1], PATIENT[2])
    response = await client.post(
        "/api/v1/consultations",
        json={
            "route": "initiative",
            "centre_id": centre,
            "diagnosis": "Гипертоническая болезнь",
            "complaints": "Головные боли",
        },
        headers={"Authorization": f"Bearer {patient['token']}"},
    )
    assert response.status == 201, await response.text()
    system = await sign_in("+79005550010", "Rmis-Client-2026")
    assert system["user"]["centre_id"] == centre
    headers = {"Authorization": f"Bearer {system['token']}"}
    response = await client.get("/fhir/R4/Patient", headers=headers)
    assert response.status == 200
    bundle = await response.json(content_type=None)
    assert bundle["resourceType"] == "Bundle"
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == [patient["user"]["id"]]
    response = await client.get("/api/v1/me", headers=headers)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for _ in range(2):
        result = run_cli(data, "db", "upgrade")
        assert result.returncode == 0, result.stderr
        assert "latest schema" in result.stdout
    assert len(query(data, "SELECT version_num FROM alembic_version")) == 1
    tables = {row[0] for row in query(data, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(TABLES) <= tables
    assert counts(data) == dict.fromkeys(TABLES, 0)


def test_serve_with_demo_data_answers_and_signs_in(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "telemed", "serve", "--demo", "--port", str(port)],
            env=cli_env(data, TELEMED_HOST="127.0.0.1"),
            cwd=tmp_path,
            stdout=out,
            stderr=err,
        )
        try:
            wait_until_healthy(base, server, err_path)
            stdout = out_path.read_text()
            assert f"Telemed on http://127.0.0.1:{port}/" in stdout
            # No SMS gateway by default: the first run says where the SMS are kept.
            assert f"reads them in full, passwords and codes included, at {base}/#/outbox" in (
                stdout
            )
            printed = logins(stdout)
            phone, (_, password) = next(
                (phone, login) for phone, login in printed.items() if login[0] == "patient"
            )

            status, body = http(
                "POST", f"{base}/api/v1/auth/login", {"login": phone, "password": password}
            )
            assert status == 200, body
            assert body["user"]["phone"] == phone
            assert body["user"]["role"] == "patient"
            status, me = http("GET", f"{base}/api/v1/me", token=body["token"])
            assert status == 200
            assert me["id"] == body["user"]["id"]

            status, wrong = http(
                "POST", f"{base}/api/v1/auth/login", {"login": phone, "password": password + "x"}
            )
            assert status == 401
            assert wrong["error"]["code"] == "invalid_credentials"
            assert http("GET", f"{base}/readyz") == (
                200,
                {"status": "ready", "checks": {"database": "ok", "storage": "ok", "nodes": "ok"}},
            )
            status, centres = http("GET", f"{base}/api/v1/centres")
            assert status == 200
            assert len(centres["items"]) == 3
        finally:
            stop_node(server)
    assert server.returncode is not None
