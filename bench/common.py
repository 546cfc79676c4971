"""What the benchmarks share: booked duty consultations made through the services, and
a process's CPU time."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher

from telemed import db
from telemed.accounts.models import Locale, Role
from telemed.accounts.service import check_new_account, do_create_user, do_start_session
from telemed.limits import DEFAULT_LIMITS
from telemed.scheduling.consultations import check_book_duty
from telemed.scheduling.models import Channel, DutyTopic
from telemed.scheduling.service import check_publish_slots, do_create_centre, do_create_doctor
from telemed.settings import Settings
from tests.servers import PostgresServer

PASSWORD = "Quiet-River-71"  # noqa: S105  (the bench's throw-away accounts)


@dataclass(frozen=True)
class Booked:
    consultation_id: str
    patient_token: str
    doctor_token: str


async def book_consultations(
    settings: Settings,
    count: int,
    *,
    starts_in: timedelta,
    minutes: int,
    doctor_each: bool,
) -> list[Booked]:
    """``count`` duty consultations starting ``starts_in`` from now, each with its own
    patient; one duty doctor for all of them (consecutive slots) or one each (the same
    slot), with sign-in tokens for a day."""
    engine = db.create_engine(settings.resolved_database_url)
    await db.upgrade(engine)
    factory = db.create_session_factory(engine)
    password_hash = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    now = datetime.now(UTC)
    start = (now + starts_in).replace(second=0, microsecond=0)
    day = timedelta(days=1)
    booked = []
    async with db.transaction(factory) as session:
        manager = await do_create_user(
            session,
            account=check_new_account(
                full_name="Bench Manager", phone="+79001000000", password=PASSWORD
            ),
            password_hash=password_hash,
            role=Role.MANAGER,
            now=now,
            locale=Locale(settings.default_locale),
            time_zone=settings.default_time_zone,
        )
        centre = await do_create_centre(
            session, actor=manager, now=now, name="Bench", region="Bench", profiles=["bench"]
        )
        doctors = []
        for n in range(count if doctor_each else 1):
            _, doctor_user, _ = await do_create_doctor(
                session,
                account=check_new_account(
                    full_name=f"Bench Doctor {n}", phone=f"+7900300{n:04d}", password=PASSWORD
                ),
                password_hash=password_hash,
                actor=manager,
                now=now,
                centre_id=centre.id,
                specialty="bench",
                is_duty=True,
                locale=Locale(settings.default_locale),
                time_zone=settings.default_time_zone,
                must_change_password=False,
            )
            slots = await check_publish_slots(
                session,
                actor=doctor_user,
                now=now,
                starts_at=start,
                ends_at=start + timedelta(minutes=minutes * (1 if doctor_each else count)),
                slot_minutes=minutes,
                horizon=settings.booking_horizon,
            )
            token, _ = await do_start_session(session, user=doctor_user, now=now, ttl=day)
            doctors.append((slots, token))
        for n in range(count):
            slots, doctor_token = doctors[n] if doctor_each else doctors[0]
            patient = await do_create_user(
                session,
                account=check_new_account(
                    full_name=f"Bench Patient {n}", phone=f"+7900200{n:04d}", password=PASSWORD
                ),
                password_hash=password_hash,
                role=Role.PATIENT,
                now=now,
                locale=Locale(settings.default_locale),
                time_zone=settings.default_time_zone,
            )
            consultation = await check_book_duty(
                session,
                actor=patient,
                now=now,
                settings=settings,
                slot_id=slots[0 if doctor_each else n].id,
                topic=DutyTopic.OTHER,
                channel=Channel.VIDEO,
                question="",
                document_ids=[],
            )
            token, _ = await do_start_session(session, user=patient, now=now, ttl=day)
            booked.append(Booked(str(consultation.id), token, doctor_token))
    await engine.dispose()
    return booked


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, alive now (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of ``pid`` and its live descendants (a supervisor and
    its workers)."""
    user = system = 0.0
    for member in process_tree(pid):
        try:
            u, s = cpu_times(member)
        except OSError:
            continue
        user, system = user + u, system + s
    return user, system


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    return sum(cpu_times(pid))


def unlimited() -> str:
    """``TELEMED_RATE_LIMITS`` that no benchmark reaches: a benchmark measures how much
    the server carries, not where its rate limits stop a client."""
    return json.dumps(dict.fromkeys(DEFAULT_LIMITS, "1000000/60"))


def server_env(data_dir: Path) -> dict[str, str]:
    """The settings a benchmark's ``telemed serve`` runs with: its own data, quiet logs,
    no background rounds, media on loopback, rate limits out of the way."""
    return {
        "TELEMED_DATA_DIR": str(data_dir),
        "TELEMED_LOG_LEVEL": "WARNING",
        "TELEMED_WORKER_INTERVAL_SECONDS": "0",
        "TELEMED_MEDIA_ADDRESSES": "127.0.0.1",
        "TELEMED_RATE_LIMITS": unlimited(),
    }


async def create_database(server: PostgresServer, name: str) -> None:
    """An empty database on a PostgreSQL server started for a benchmark."""
    import asyncpg

    connection = await asyncpg.connect(
        host="127.0.0.1", port=server.port, user="postgres", database="postgres"
    )
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
