"""Route 3: importing the attending doctors' referral tables.

Each good row becomes (or finds) a patient account and one ``requested`` referral
consultation at the centre its profile names; a new account gets a generated password
(to be changed at first sign-in) and an SMS with the login and password. Bad rows are
reported with their row number, column and reason while the good rows go through. A row
imported before (same fingerprint) creates nothing again. A dry run reports what would
happen and changes nothing but the kept report. A manager may later issue a referred
patient new credentials (``check_issue_credentials``, ``do_issue_credentials``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from telemed import audit
from telemed.accounts.models import Locale, Role, User
from telemed.accounts.passwords import TEMPORARY_HASHER, generate_password
from telemed.accounts.service import (
    check_new_account,
    do_create_user,
    do_set_temporary_password,
    get_user_by_phone,
    reserve_attempt,
)
from telemed.errors import Forbidden, InvalidValue, NotFound, Problem, TelemedError
from telemed.limits import Limit
from telemed.notify.service import do_mask_kept, do_notify
from telemed.notify.texts import NotificationKind
from telemed.scheduling.consultations import (
    age_on,
    centre_doctors,
    centre_scope,
    do_open,
    new_consultation,
)
from telemed.scheduling.models import Centre, Consultation, ReferralImport, Route
from telemed.scheduling.referral_table import CellError, ReferralRow, parse_referral_table
from telemed.settings import Settings


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("ё", "е").split())


class CentreIndex:
    """Finds the centre a referral's ``Профиль`` names: a profile exactly one live centre
    offers, or a centre's name."""

    def __init__(self, centres: list[Centre]) -> None:
        self.by_name = {_norm(c.name): c for c in centres}
        self.by_profile: dict[str, list[Centre]] = {}
        for centre in centres:
            for profile in centre.profiles:
                self.by_profile.setdefault(_norm(profile), []).append(centre)

    def find(self, profile: str) -> Centre | CellError:
        key = _norm(profile)
        if key in self.by_name:
            return self.by_name[key]
        offering = self.by_profile.get(key, [])
        if len(offering) == 1:
            return offering[0]
        if len(offering) > 1:
            names = ", ".join(sorted(c.name for c in offering))
            return CellError(
                "profile",
                Problem.SEVERAL_CENTRES,
                f"several centres offer this profile ({names}): write the centre's name",
                {"names": names},
            )
        return CellError(
            "profile", Problem.NO_CENTRE, "no medical centre offers this profile or has this name"
        )


def check_own_centre(
    rows: list[ReferralRow], *, centres: CentreIndex, centre_id: uuid.UUID
) -> None:
    """A manager bound to a centre imports referrals to that centre only: ``Forbidden``,
    naming the rows, when any row's profile names another centre (rows that name none
    are reported as usual)."""
    elsewhere = [
        row.row
        for row in rows
        if row.profile
        and isinstance(found := centres.find(row.profile), Centre)
        and found.id != centre_id
    ]
    if elsewhere:
        raise Forbidden(
            "A manager of a centre imports referrals to that centre only",
            details={"rows": elsewhere, "centre_id": str(centre_id)},
        )


def _params_of(error: TelemedError) -> dict[str, Any]:
    fields = error.details.get("fields") or [{}]
    params: dict[str, Any] = fields[0].get("params", {})
    return params


def _same_person(user: User, row: ReferralRow) -> bool:
    """An existing account is the row's patient only if the name and the birth date agree."""
    if row.full_name is None or _norm(user.full_name) != _norm(row.full_name):
        return False
    return user.birth_date is None or row.birth_date is None or user.birth_date == row.birth_date


Transaction = Callable[..., AbstractAsyncContextManager[AsyncSession]]
"""Opens one short transaction: ``transaction()`` writes, ``transaction(write=False)``
only reads (``telemed.api.Call.transaction``)."""

CHUNK_ROWS = 50
"""Rows whose accounts are looked up, and whose passwords are hashed, together."""
TRANSACTION_SECONDS = 0.1
"""How long one of the import's transactions may go on: other users' writes go in
between, so a large table never holds the write lock for long."""


async def import_referrals(
    transaction: Transaction,
    *,
    actor: User,
    now: datetime,
    settings: Settings,
    data: bytes,
    file_name: str,
    dry_run: bool,
    login_url: str,
) -> ReferralImport:
    """Import a referral table (CSV or XLSX) and keep the per-row report.

    Raises ``InvalidValue`` when the file as a whole cannot be read, and ``Forbidden``
    (before anything is made) when a manager bound to a centre sends rows for another
    centre (``check_own_centre``). The rows go in
    ``CHUNK_ROWS`` at a time, each chunk in a transaction of its own, and each row in a
    savepoint: a row that fails rolls back alone. A new patient's temporary password is
    made and hashed between transactions (``TEMPORARY_HASHER``). Importing the same rows
    again creates nothing (the referral's fingerprint is unique), so an import cut off
    half-way is finished by importing the table again.
    """
    # Parsing a large table takes a second or more: not on the event loop.
    rows = await asyncio.to_thread(
        parse_referral_table, data, file_name=file_name, today=now.date()
    )
    own = centre_scope(actor)
    if own is not None:
        async with transaction(write=False) as session:
            check_own_centre(rows, centres=await _centre_index(session), centre_id=own)
    async with transaction() as session:
        record = ReferralImport(
            created_by_id=actor.id,
            created_at=now,
            file_name=file_name,
            sha256=hashlib.sha256(data).hexdigest(),
            dry_run=dry_run,
            total_rows=len(rows),
            created=0,
        )
        session.add(record)
    report: list[dict[str, Any]] = []
    referred: Counter[uuid.UUID] = Counter()  # new referrals by centre
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        async with transaction(write=False) as session:
            centres = await _centre_index(session)
            known = await _patients_by_phone(session, [row.phone for row in chunk if row.phone])
        # Passwords for the rows whose phone has no account yet, hashed outside any
        # transaction (a race that creates the account meanwhile only wastes a hash).
        passwords = {
            row.row: generate_password()
            for row in chunk
            if not dry_run and row.phone and not row.errors and row.phone not in known
        }
        hashes = await asyncio.to_thread(_hash_all, passwords)
        waiting = deque(chunk)
        while waiting:
            # A transaction ends after TRANSACTION_SECONDS even mid-chunk: a write of
            # another user waits at most that long for the import.
            async with transaction(write=not dry_run) as session:
                ends = time.monotonic() + TRANSACTION_SECONDS
                while waiting and time.monotonic() < ends:
                    row = waiting.popleft()
                    entry, centre = await _import_row(
                        session,
                        row=row,
                        centres=centres,
                        record=record,
                        now=now,
                        settings=settings,
                        dry_run=dry_run,
                        login_url=login_url,
                        new_password=(passwords[row.row], hashes[row.row])
                        if row.row in passwords
                        else None,
                    )
                    report.append(entry)
                    if centre is not None:
                        referred[centre.id] += 1
    async with transaction() as session:
        stored = await session.get(ReferralImport, record.id)
        assert stored is not None
        stored.rows = report
        stored.created = sum(
            1 for entry in report if entry["status"] in ("created", "linked", "would_create")
        )
        session.add(stored)
        audit.record(
            session,
            now=now,
            actor_id=actor.id,
            action="referrals.imported",
            object_type="referral_import",
            object_id=stored.id,
            details={"dry_run": dry_run, "rows": len(rows), "created": stored.created},
        )
        for centre_id, count in referred.items():
            await _tell_centre(
                session, record=stored, centre_id=centre_id, count=count, now=now, settings=settings
            )
    return stored


async def _tell_centre(
    session: AsyncSession,
    *,
    record: ReferralImport,
    centre_id: uuid.UUID,
    count: int,
    now: datetime,
    settings: Settings,
) -> None:
    """One notice to each doctor of a centre for all of an import's new referrals there
    (not one per referral: a table may bring thousands)."""
    centre = await session.get(Centre, centre_id)
    if centre is None:
        return
    for doctor in await centre_doctors(session, centre_id):
        await do_notify(
            session,
            brand=settings.brand_name,
            now=now,
            user=doctor,
            kind=NotificationKind.NEW_REFERRALS,
            params={"centre": centre.name, "count": count, "due": now + settings.sla_referral},
            dedupe_key=f"referrals:{record.id}:{centre_id}:{doctor.id}",
        )


async def _centre_index(session: AsyncSession) -> CentreIndex:
    centres = await session.exec(select(Centre).where(col(Centre.archived_at).is_(None)))
    return CentreIndex(list(centres.all()))


async def _patients_by_phone(session: AsyncSession, phones: list[str]) -> set[str]:
    """Which of these phones already have an account."""
    if not phones:
        return set()
    found = await session.exec(select(User.phone).where(col(User.phone).in_(phones)))
    return set(found.all())


async def _import_row(
    session: AsyncSession,
    *,
    row: ReferralRow,
    centres: CentreIndex,
    record: ReferralImport,
    now: datetime,
    settings: Settings,
    dry_run: bool,
    login_url: str,
    new_password: tuple[str, str] | None,
) -> tuple[dict[str, Any], Centre | None]:
    """One row: its report entry, and the centre it referred a patient to (None if it
    created nothing)."""
    errors = list(row.errors)
    centre: Centre | None = None
    if row.profile:
        found = centres.find(row.profile)
        if isinstance(found, CellError):
            errors.append(found)
        else:
            centre = found
    existing_user = await get_user_by_phone(session, row.phone) if row.phone else None
    if existing_user is not None and existing_user.role is not Role.PATIENT:
        errors.append(
            CellError(
                "phone", Problem.STAFF_PHONE, "this phone belongs to a staff account, not a patient"
            )
        )
    elif existing_user is not None and not _same_person(existing_user, row):
        # Never put one person's referral into another person's cabinet.
        errors.append(
            CellError(
                "phone",
                Problem.OTHER_PATIENT,
                "this phone belongs to another patient (name or birth date differ)",
            )
        )
    entry: dict[str, Any] = {
        "row": row.row,
        "ok": not errors,
        "errors": [error.to_wire() for error in errors],
    }
    if errors:
        entry["status"] = "invalid"
        return entry, None
    assert centre is not None
    assert row.phone is not None
    assert row.full_name is not None
    key = row.key()
    already = (
        await session.exec(select(Consultation.id).where(Consultation.referral_key == key))
    ).first()
    if already is not None:
        entry.update(
            status="exists",
            consultation_id=str(already),
            note="imported before: nothing created",
            note_code=str(Problem.IMPORTED_BEFORE),
        )
        return entry, None
    if dry_run:
        entry.update(
            status="would_create",
            centre_id=str(centre.id),
            account="existing" if existing_user else "new",
        )
        return entry, None
    try:
        async with session.begin_nested():
            password = None
            patient = existing_user
            if patient is None:
                # Made before the transaction; only an account deleted meanwhile is not.
                password, password_hash = new_password or _new_password()
                patient = await do_create_user(
                    session,
                    account=check_new_account(
                        full_name=row.full_name,
                        phone=row.phone,
                        password=password,
                        email=row.email,
                        birth_date=row.birth_date,
                    ),
                    password_hash=password_hash,
                    role=Role.PATIENT,
                    now=now,
                    must_change_password=True,
                    locale=Locale(settings.default_locale),
                    time_zone=settings.default_time_zone,
                )
            consultation = new_consultation(
                route=Route.REFERRAL,
                patient_id=patient.id,
                centre_id=centre.id,
                full_name=row.full_name,
                now=now,
                settings=settings,
                age=age_on(row.birth_date, now.date()),
                diagnosis=row.diagnosis or "",
                icd10=row.icd10,
                referring_organisation=row.referring_organisation or "",
                referring_doctor=row.referring_doctor or "",
                referral_import_id=record.id,
                referral_key=key,
            )
            await do_open(
                session,
                consultation,
                actor_id=record.created_by_id,
                now=now,
                action="consultation.referred",
                details={"import": str(record.id), "row": row.row},
            )
            params: dict[str, object] = {
                "centre": centre.name,
                "url": login_url,
                "login": patient.phone,
            }
            if password is not None:
                params["password"] = password
            await do_notify(
                session,
                brand=settings.brand_name,
                now=now,
                user=patient,
                kind=NotificationKind.REFERRAL_CREDENTIALS
                if password
                else NotificationKind.CONSULTATION_REQUESTED,
                params=params,
                consultation_id=consultation.id,
                sms=True,
                secrets=[password] if password else [],
                # No dedupe key: the consultation was made just now, in this transaction.
            )
    except TelemedError as exc:
        column = str(exc.details.get("field", "row"))
        problem = exc.problem if isinstance(exc, InvalidValue) else Problem.INVALID
        failure = CellError(column, problem, exc.message, _params_of(exc))
        entry.update(ok=False, status="invalid", errors=[failure.to_wire()])
        return entry, None
    except IntegrityError:
        # A parallel import of the same row got there first.
        entry.update(
            status="exists",
            note="imported at the same moment by another upload",
            note_code=str(Problem.IMPORTED_CONCURRENTLY),
        )
        return entry, None
    entry.update(
        status="created" if password else "linked",
        consultation_id=str(consultation.id),
        patient_id=str(patient.id),
    )
    if existing_user is not None:
        entry["status"] = "linked"
    return entry, centre


def _hash_all(passwords: dict[int, str]) -> dict[int, str]:
    return {row: TEMPORARY_HASHER.hash(password) for row, password in passwords.items()}


def _new_password() -> tuple[str, str]:
    password = generate_password()
    return password, TEMPORARY_HASHER.hash(password)


# ── new credentials for a referred patient ──────────────────────────────────────────

CREDENTIAL_KINDS = (NotificationKind.REFERRAL_CREDENTIALS, NotificationKind.NEW_CREDENTIALS)


async def check_issue_credentials(
    session: AsyncSession, *, actor: User, patient_id: uuid.UUID, now: datetime, limit: Limit
) -> User:
    """The referred patient a manager may issue new credentials to, with the issue
    counted (``RateLimited`` past ``limit`` for this patient).

    Raises ``NotFound`` unless ``patient_id`` is an active patient with at least one
    referral (route 3; to the manager's centre, for a manager bound to one): the
    accounts the service made. Patients who registered themselves reset their password
    by SMS; staff accounts are not the manager's to reset here."""
    patient = await session.get(User, patient_id)
    referrals = select(Consultation.id).where(
        Consultation.patient_id == patient_id, Consultation.route == Route.REFERRAL
    )
    own = centre_scope(actor)
    if own is not None:
        referrals = referrals.where(Consultation.centre_id == own)
    referred = (await session.exec(referrals.limit(1))).first()
    if patient is None or patient.role is not Role.PATIENT or not patient.is_active or not referred:
        raise NotFound("No referred patient with this id")
    await reserve_attempt(
        session,
        key=f"credentials:user:{patient.id}",
        limit=limit.count,
        window=timedelta(seconds=limit.seconds),
        now=now,
    )
    return patient


async def do_issue_credentials(
    session: AsyncSession,
    *,
    patient_id: uuid.UUID,
    password: str,
    password_hash: str,
    actor: User,
    now: datetime,
    login_url: str,
    address: str | None,
    brand: str,
) -> User:
    """Give a referred patient (``check_issue_credentials``) a new temporary password,
    hashed beforehand: the old password dies, every session of the patient ends, the
    password must be changed at the next sign-in, and an SMS brings the login and the new
    password. Earlier credentials kept in a development outbox are masked, so that only
    the live password is readable there. Audited as ``credentials.issued``. Returns the
    patient."""
    patient = await session.get(User, patient_id)
    if patient is None:
        raise NotFound("No referred patient with this id")
    await do_set_temporary_password(session, user=patient, password_hash=password_hash, now=now)
    await do_mask_kept(session, user_id=patient.id, kinds=CREDENTIAL_KINDS)
    await do_notify(
        session,
        brand=brand,
        now=now,
        user=patient,
        kind=NotificationKind.NEW_CREDENTIALS,
        params={"url": login_url, "login": patient.phone, "password": password},
        sms=True,
        secrets=[password],
    )
    audit.record(
        session,
        now=now,
        actor_id=actor.id,
        action="credentials.issued",
        object_type="user",
        object_id=patient.id,
        subject_id=patient.id,
        address=address,
    )
    return patient


def new_temporary_password() -> tuple[str, str]:
    """A temporary password and its (light) hash: call it outside any transaction."""
    return _new_password()


def _imports_of(actor: User) -> SelectOfScalar[ReferralImport]:
    """The import reports a manager reads: all, or for a manager bound to a centre,
    those of the managers bound to that centre (a report names the patients' accounts
    and consultations it made)."""
    statement = select(ReferralImport)
    own = centre_scope(actor)
    if own is not None:
        statement = statement.join(User, col(User.id) == col(ReferralImport.created_by_id)).where(
            User.centre_id == own
        )
    return statement


async def get_import(session: AsyncSession, *, actor: User, import_id: uuid.UUID) -> ReferralImport:
    """One import report the actor reads (``_imports_of``); ``NotFound`` otherwise."""
    record = (await session.exec(_imports_of(actor).where(ReferralImport.id == import_id))).first()
    if record is None:
        raise NotFound("Import not found")
    return record


async def list_imports(
    session: AsyncSession, *, actor: User, limit: int = 50
) -> list[ReferralImport]:
    """The import reports the actor reads (``_imports_of``), newest first."""
    rows = await session.exec(
        _imports_of(actor).order_by(col(ReferralImport.created_at).desc()).limit(limit)
    )
    return list(rows.all())
