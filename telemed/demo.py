"""Idempotent demo data: centres, doctors (two on duty, with free slots for a week),
a manager and a patient. Running it again adds nothing twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed.accounts.models import Locale, Role
from telemed.accounts.passwords import Passwords
from telemed.accounts.service import check_new_account, do_create_user, get_user_by_phone
from telemed.scheduling.models import Centre, Doctor, DutySlot
from telemed.scheduling.service import do_create_doctor

MOSCOW = ZoneInfo("Europe/Moscow")
REGION = "Свердловская область"


@dataclass(frozen=True)
class DemoLogin:
    role: str
    full_name: str
    phone: str
    password: str


CENTRES = [
    (
        "Областной кардиологический центр",
        ["кардиология", "ревматология"],
        "Консультации кардиологов: ишемическая болезнь сердца, гипертония, "
        "нарушения ритма, реабилитация после инфаркта.",
    ),
    (
        "Центр охраны здоровья семьи и репродукции",
        ["гинекология", "акушерство"],
        "Консультации гинекологов и акушеров: планирование беременности, женское здоровье.",
    ),
    (
        "Центр общей врачебной практики",
        ["терапия", "общая врачебная практика"],
        "Терапевты и врачи общей практики: профилактика, здоровый образ жизни, второе мнение.",
    ),
]

# (full name, phone, centre index, specialty, duty, bio)
DOCTORS = [
    (
        "Соколова Анна Викторовна",
        "+79000000011",
        0,
        "кардиолог",
        True,
        "Врач-кардиолог высшей категории, стаж 18 лет.",
    ),
    (
        "Ершов Пётр Алексеевич",
        "+79000000012",
        0,
        "кардиолог",
        False,
        "Кандидат медицинских наук, аритмолог.",
    ),
    (
        "Белова Марина Сергеевна",
        "+79000000013",
        1,
        "акушер-гинеколог",
        True,
        "Акушер-гинеколог, стаж 12 лет.",
    ),
    ("Киселёв Игорь Николаевич", "+79000000014", 2, "терапевт", False, "Врач общей практики."),
]
# Demo credentials are published on purpose (README); `telemed demo` refuses production.
DOCTOR_PASSWORD = "Doctor-2026"  # noqa: S105
MANAGER = ("Орлова Наталья Павловна", "+79000000002", "Manager-2026")
PATIENT = ("Иванов Сергей Петрович", "+79000000001", "Patient-2026", date(1962, 5, 14))

SLOT_DAYS = 7
SLOT_HOURS = (time(9, 0), time(13, 0))  # Moscow time
SLOT_MINUTES = 30


async def demo_password_hashes(passwords: Passwords) -> dict[str, str]:
    """The demo passwords' hashes, made before the transaction of ``load_demo``."""
    return {
        password: await passwords.hash(password)
        for password in (DOCTOR_PASSWORD, MANAGER[2], PATIENT[2])
    }


async def load_demo(
    session: AsyncSession, *, password_hashes: dict[str, str], now: datetime
) -> list[DemoLogin]:
    """Create what is missing of the demo data; return the demo logins.
    ``password_hashes`` come from ``demo_password_hashes``."""
    logins: list[DemoLogin] = []
    centres = []
    for name, profiles, description in CENTRES:
        centre = (await session.exec(select(Centre).where(Centre.name == name))).first()
        if centre is None:
            centre = Centre(
                name=name, region=REGION, profiles=profiles, description=description, created_at=now
            )
            session.add(centre)
            await session.flush()
        centres.append(centre)

    for full_name, phone, centre_index, specialty, duty, bio in DOCTORS:
        user = await get_user_by_phone(session, phone)
        if user is None:
            doctor, user, _ = await do_create_doctor(
                session,
                account=check_new_account(
                    full_name=full_name, phone=phone, password=DOCTOR_PASSWORD
                ),
                password_hash=password_hashes[DOCTOR_PASSWORD],
                actor=None,
                now=now,
                centre_id=centres[centre_index].id,
                specialty=specialty,
                is_duty=duty,
                bio=bio,
                locale=Locale.RU,
                time_zone=MOSCOW.key,
                must_change_password=False,
            )
        else:
            doctor = (await session.exec(select(Doctor).where(Doctor.user_id == user.id))).one()
        if duty:
            await _ensure_slots(session, doctor=doctor, now=now)
        logins.append(
            DemoLogin("doctor" + (" (duty)" if duty else ""), full_name, phone, DOCTOR_PASSWORD)
        )

    for role, (full_name, phone, password), birth in (
        (Role.MANAGER, MANAGER, None),
        (Role.PATIENT, PATIENT[:3], PATIENT[3]),
    ):
        if await get_user_by_phone(session, phone) is None:
            await do_create_user(
                session,
                account=check_new_account(
                    full_name=full_name, phone=phone, password=password, birth_date=birth
                ),
                password_hash=password_hashes[password],
                role=role,
                now=now,
                locale=Locale.RU,
                time_zone=MOSCOW.key,
            )
        logins.append(DemoLogin(role.value, full_name, phone, password))
    return logins


async def _ensure_slots(session: AsyncSession, *, doctor: Doctor, now: datetime) -> None:
    """Free slots on the next working days, skipping those that already exist."""
    existing = set(
        (
            await session.exec(select(DutySlot.starts_at).where(DutySlot.doctor_id == doctor.id))
        ).all()
    )
    today = now.astimezone(MOSCOW).date()
    for offset in range(1, SLOT_DAYS + 1):
        day = today + timedelta(days=offset)
        if day.weekday() >= 5:
            continue
        start = datetime.combine(day, SLOT_HOURS[0], MOSCOW)
        end = datetime.combine(day, SLOT_HOURS[1], MOSCOW)
        while start < end:
            starts_at = start.astimezone(now.tzinfo)
            if starts_at not in existing:
                session.add(
                    DutySlot(
                        doctor_id=doctor.id,
                        starts_at=starts_at,
                        ends_at=starts_at + timedelta(minutes=SLOT_MINUTES),
                    )
                )
            start += timedelta(minutes=SLOT_MINUTES)
