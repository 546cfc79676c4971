"""Accounts: registration, sign-in with rate limits, sessions, password changes, new
temporary passwords, and password reset by a code sent by SMS.

Functions take the caller's ``session`` and never commit: the caller owns the
transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit
from telemed.accounts.models import (
    CENTRE_BOUND,
    AuthSession,
    Locale,
    PasswordResetCode,
    RateEvent,
    Role,
    User,
)
from telemed.accounts.passwords import check_password
from telemed.accounts.phones import looks_like_phone, normalise_phone
from telemed.errors import (
    Conflict,
    EmailTaken,
    InvalidCode,
    InvalidCredentials,
    InvalidPhone,
    InvalidValue,
    PhoneTaken,
    Problem,
    RateLimited,
)
from telemed.limits import Limit
from telemed.notify.service import do_mask_kept, do_notify
from telemed.notify.texts import NotificationKind

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_email(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or " " in email or len(email) > 254:
        raise InvalidValue(
            "This is not an e-mail address", problem=Problem.BAD_EMAIL, field="email"
        )
    return email


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_phone(session: AsyncSession, phone: str) -> User | None:
    result = await session.exec(select(User).where(User.phone == phone))
    return result.first()


@dataclass(frozen=True)
class NewAccount:
    """An account's identity, normalised and checked, ready to be stored."""

    full_name: str
    phone: str
    email: str | None
    birth_date: date | None


def check_new_account(
    *,
    full_name: str,
    phone: str,
    password: str,
    email: str | None = None,
    birth_date: date | None = None,
) -> NewAccount:
    """Normalise the phone (E.164), the e-mail and the name, and check the password
    policy; pure, so that it runs before any transaction and any hash.

    Raises ``InvalidPhone``, ``InvalidInput`` or ``WeakPassword``.
    """
    phone = normalise_phone(phone)
    email = normalise_email(email)
    full_name = " ".join(full_name.split())
    if not full_name:
        raise InvalidValue("Enter the full name", problem=Problem.MISSING, field="full_name")
    check_password(password, personal=(phone, full_name, *([email] if email else [])))
    return NewAccount(full_name=full_name, phone=phone, email=email, birth_date=birth_date)


def check_centre_binding(role: Role, centre_id: uuid.UUID | None) -> None:
    """Which accounts are bound to a medical centre (``User.centre_id``): a system client
    always, a manager if given one (else it runs the whole service), no other role (a
    doctor's centre is on the doctor's profile). Raises ``InvalidValue`` (field
    ``centre_id``)."""
    if role is Role.SYSTEM and centre_id is None:
        raise InvalidValue(
            "A system client is bound to one medical centre: give its centre",
            problem=Problem.MISSING,
            field="centre_id",
        )
    if centre_id is not None and role not in CENTRE_BOUND:
        raise InvalidValue(
            f"Only a manager or a system client is bound to a centre, not a {role.value}",
            problem=Problem.NOT_ALLOWED,
            field="centre_id",
        )


async def do_create_user(
    session: AsyncSession,
    *,
    account: NewAccount,
    password_hash: str,
    role: Role,
    now: datetime,
    locale: Locale,
    time_zone: str,
    must_change_password: bool = False,
    consent_version: str | None = None,
    centre_id: uuid.UUID | None = None,
) -> User:
    """Store a checked account (``check_new_account``) with its password hashed beforehand
    (``hash_password``, outside the transaction: a hash must not hold the write lock),
    the personal data consent its owner gave (``consent_version``, given ``now``), and
    the centre a manager or system client is bound to (``check_centre_binding``; the
    caller checks that the centre exists).

    Raises ``InvalidValue``, ``PhoneTaken`` or ``EmailTaken``. Uniqueness is settled by
    the database's constraints, so two concurrent registrations of one phone cannot
    both succeed.
    """
    check_centre_binding(role, centre_id)
    user = User(
        full_name=account.full_name,
        birth_date=account.birth_date,
        phone=account.phone,
        email=account.email,
        password_hash=password_hash,
        role=role,
        locale=locale,
        time_zone=time_zone,
        must_change_password=must_change_password,
        created_at=now,
        password_changed_at=now,
        consent_version=consent_version,
        consent_at=now if consent_version else None,
        centre_id=centre_id,
    )
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        message = str(exc.orig).lower()
        if "email" in message:
            raise EmailTaken(
                "An account with this e-mail already exists", details={"field": "email"}
            ) from None
        raise PhoneTaken(
            "An account with this phone number already exists", details={"field": "phone"}
        ) from None
    return user


async def do_start_session(
    session: AsyncSession,
    *,
    user: User,
    now: datetime,
    ttl: timedelta,
    user_agent: str | None = None,
    consultation_id: uuid.UUID | None = None,
) -> tuple[str, AuthSession]:
    """A new session for ``user``; returns the token (shown once) and its row.

    With ``consultation_id`` it is a join token: a session for that consultation's room
    only (see ``telemed.media.service.check_issue_join_token``)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    auth_session = AuthSession(
        user_id=user.id,
        token_hash=hash_token(token),
        created_at=now,
        expires_at=now + ttl,
        user_agent=(user_agent or "")[:300] or None,
        consultation_id=consultation_id,
    )
    session.add(auth_session)
    return token, auth_session


async def get_session_user(
    session: AsyncSession, *, token: str, now: datetime
) -> tuple[User, AuthSession] | None:
    """The user and session of a live token (not expired, not revoked, account active)."""
    if len(token) > 200:
        return None
    result = await session.exec(
        select(User, AuthSession)
        .join(AuthSession, col(AuthSession.user_id) == col(User.id))
        .where(
            AuthSession.token_hash == hash_token(token),
            col(AuthSession.revoked_at).is_(None),
            AuthSession.expires_at > now,
            col(User.is_active).is_(True),
        )
    )
    row = result.first()
    if row is None:
        return None
    return row[0], row[1]


def session_user_ids(
    connection: sa.Connection, *, tokens: Collection[str], now: datetime
) -> dict[str, uuid.UUID]:
    """The user ids of those ``tokens`` that are live, in one Core query (synchronous,
    for hot paths that run off the event loop: the chat writer)."""
    by_hash = {hash_token(token): token for token in tokens if len(token) <= 200}
    if not by_hash:
        return {}
    rows = connection.execute(_LIVE_SESSIONS, {"hashes": list(by_hash), "now": now})
    return {by_hash[row.token_hash]: row.user_id for row in rows}


def _live_sessions() -> sa.Select[tuple[str, uuid.UUID]]:
    sessions = AuthSession.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    users = User.__table__  # type: ignore[attr-defined]  # SQLModel sets it
    return (
        sa.select(sessions.c.token_hash, users.c.id.label("user_id"))
        .join(users, sessions.c.user_id == users.c.id)
        .where(
            sessions.c.token_hash.in_(sa.bindparam("hashes", expanding=True)),
            sessions.c.revoked_at.is_(None),
            sessions.c.expires_at > sa.bindparam("now"),
            users.c.is_active.is_(True),
        )
    )


_LIVE_SESSIONS = _live_sessions()


async def live_token_hashes(
    session: AsyncSession, *, token_hashes: set[str], now: datetime
) -> set[str]:
    """Which of these token hashes still belong to a live session of an active account."""
    if not token_hashes:
        return set()
    rows = await session.exec(
        select(AuthSession.token_hash)
        .join(User, col(User.id) == col(AuthSession.user_id))
        .where(
            col(AuthSession.token_hash).in_(token_hashes),
            col(AuthSession.revoked_at).is_(None),
            AuthSession.expires_at > now,
            col(User.is_active).is_(True),
        )
    )
    return set(rows.all())


async def do_revoke_session(
    session: AsyncSession, *, auth_session: AuthSession, now: datetime
) -> None:
    auth_session.revoked_at = now
    session.add(auth_session)


async def do_revoke_user_sessions(
    session: AsyncSession, *, user_id: uuid.UUID, now: datetime, keep: uuid.UUID | None = None
) -> None:
    """End every live session of a user (all but ``keep``)."""
    statement = (
        sa.update(AuthSession)
        .where(col(AuthSession.user_id) == user_id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    if keep is not None:
        statement = statement.where(col(AuthSession.id) != keep)
    await session.exec(statement)


async def reserve_attempt(
    session: AsyncSession, *, key: str, limit: int, window: timedelta, now: datetime
) -> RateEvent:
    """Count one attempt under ``key``, or raise ``RateLimited`` (with the seconds to
    wait) if ``limit`` attempts were counted in the last ``window``.

    The attempt is counted before the costly work it stands for (a password hash), and
    in a transaction of its own: concurrent attempts cannot all slip under the limit
    before any of them is counted, and a failure cannot be forgotten by a rollback.
    """
    since = now - window
    result = await session.exec(
        select(sa.func.count(), sa.func.min(RateEvent.at)).where(
            RateEvent.key == key, RateEvent.at > since
        )
    )
    count, oldest = result.one()
    if count >= limit and oldest is not None:
        if oldest.tzinfo is None:  # aggregate results bypass the column type on SQLite
            oldest = oldest.replace(tzinfo=now.tzinfo)
        retry_after = max(1, math.ceil((oldest + window - now).total_seconds()))
        raise RateLimited("Too many attempts; try again later", retry_after_seconds=retry_after)
    event = RateEvent(key=key, at=now)
    session.add(event)
    await session.flush()
    return event


async def do_forget_attempts(
    session: AsyncSession, *, keys: Collection[str] = (), ids: Collection[int] = ()
) -> None:
    """Uncount attempts: every one under ``keys``, and the single ones ``ids``."""
    if keys:
        await session.exec(sa.delete(RateEvent).where(col(RateEvent.key).in_(list(keys))))
    if ids:
        await session.exec(sa.delete(RateEvent).where(col(RateEvent.id).in_(list(ids))))


async def do_prune_attempts(session: AsyncSession, *, before: datetime) -> int:
    """Drop counted attempts older than any window (``before``)."""
    result = await session.exec(sa.delete(RateEvent).where(col(RateEvent.at) < before))
    return int(result.rowcount or 0)


def _normalise_login(login: str) -> str:
    login = login.strip()
    if looks_like_phone(login):
        try:
            return normalise_phone(login)
        except InvalidPhone:
            return login
    return login.lower()


@dataclass(frozen=True)
class LoginAttempt:
    """A sign-in between its two transactions: counted as failed until the password
    proves right (``do_finish_login`` uncounts it)."""

    user_id: uuid.UUID | None
    password_hash: str
    account_key: str
    counted: tuple[int, ...]


async def check_login_attempt(
    session: AsyncSession,
    *,
    login: str,
    address: str | None,
    now: datetime,
    window: timedelta,
    max_per_account: int,
    max_per_address: int,
    dummy_hash: str,
) -> LoginAttempt:
    """Find the account and count the attempt, per account and per address, before the
    password is checked. Raises ``RateLimited`` when a limit is reached.

    One account is one count, whether it is named by its phone or by its e-mail; an
    unknown login is counted under its own name. The caller commits this, then checks the
    password outside any transaction (``verify_password``), then calls
    ``do_finish_login``. For an unknown login the returned hash is ``dummy_hash``, so
    that the answer takes as long as for a real account.
    """
    normalised = _normalise_login(login)
    if looks_like_phone(normalised):
        statement = select(User).where(User.phone == normalised)
    else:
        statement = select(User).where(User.email == normalised)
    user = (await session.exec(statement)).first()
    if user is not None:
        account_key = f"login:acct:{user.id}"
    else:
        account_key = "login:acct:" + hashlib.sha256(normalised.encode()).hexdigest()[:64]
    limits = [(account_key, max_per_account)]
    if address:
        limits.append((f"login:addr:{address[:70]}", max_per_address))
    counted = []
    for key, limit in limits:
        event = await reserve_attempt(session, key=key, limit=limit, window=window, now=now)
        assert event.id is not None
        counted.append(event.id)
    return LoginAttempt(
        user_id=user.id if user is not None else None,
        password_hash=user.password_hash if user is not None else dummy_hash,
        account_key=account_key,
        counted=tuple(counted),
    )


async def do_finish_login(
    session: AsyncSession,
    *,
    attempt: LoginAttempt,
    password_ok: bool,
    new_hash: str | None = None,
) -> User:
    """The end of a sign-in whose password was checked: the account, if the password was
    right and the account is still active with that password. Its failures are then
    forgotten (the address keeps its earlier failures, but not this attempt) and, with
    ``new_hash``, the password is stored again with today's hashing parameters.

    Raises ``InvalidCredentials`` otherwise; the attempt then stays counted.
    """
    user = await session.get(User, attempt.user_id) if attempt.user_id is not None else None
    if (
        user is None
        or not password_ok
        or not user.is_active
        or user.password_hash != attempt.password_hash
    ):
        raise InvalidCredentials("Wrong login or password")
    await do_forget_attempts(session, keys=[attempt.account_key], ids=attempt.counted)
    if new_hash is not None:
        user.password_hash = new_hash
        session.add(user)
    return user


async def do_change_password(
    session: AsyncSession,
    *,
    user: User,
    checked_hash: str,
    new_hash: str,
    keep_session: uuid.UUID | None,
    now: datetime,
    address: str | None,
) -> None:
    """Store a new password hash (made outside the transaction) and end every other
    session of the user. ``checked_hash`` is the hash the current password was checked
    against: if the password changed in between, nothing is changed (``Conflict``).
    """
    if user.password_hash != checked_hash:
        raise Conflict("The password was changed meanwhile; sign in again")
    user.password_hash = new_hash
    user.must_change_password = False
    user.password_changed_at = now
    session.add(user)
    await do_revoke_user_sessions(session, user_id=user.id, now=now, keep=keep_session)
    await do_forget_attempts(session, keys=[f"password:user:{user.id}"])
    audit.record(
        session,
        now=now,
        actor_id=user.id,
        action="password.changed",
        object_type="user",
        object_id=user.id,
        subject_id=user.id,
        address=address,
    )


def check_new_password(user: User, *, current_password: str, new_password: str) -> None:
    """The new password differs from the current one and meets the policy (pure)."""
    if new_password == current_password:
        raise InvalidValue(
            "The new password must differ from the current one",
            problem=Problem.PASSWORD_SAME,
            field="new_password",
        )
    check_password(
        new_password,
        personal=(user.phone, user.full_name, *([user.email] if user.email else [])),
        field="new_password",
    )


async def do_set_temporary_password(
    session: AsyncSession, *, user: User, password_hash: str, now: datetime
) -> None:
    """Replace the user's password with a temporary one (hashed beforehand), to be changed
    at the next sign-in: the old password stops working and every session ends (join
    tokens too). The account's counted sign-in failures are forgotten, so that the new
    password works at once."""
    user.password_hash = password_hash
    user.must_change_password = True
    user.password_changed_at = now
    session.add(user)
    await do_revoke_user_sessions(session, user_id=user.id, now=now)
    await do_forget_attempts(session, keys=[f"login:acct:{user.id}", f"password:user:{user.id}"])


# ── password reset by a code sent by SMS ────────────────────────────────────────────

RESET_CODE_DIGITS = 6
MAX_CODE_FAILURES = 5
"""Wrong tries after which a code is dead, even for the right code."""
RESET_ROLES = frozenset({Role.PATIENT, Role.DOCTOR})
"""Who may reset a password by SMS. Managers and admins may not: a phone number (a SIM
card) is not enough to open the console that reads the outbox and manages accounts."""


def _phone_key(phone: str) -> str:
    """A phone as a rate-limit key: hashed, so that no phone is stored in the clear, and
    the same whether or not it has an account."""
    return hashlib.sha256(phone.encode()).hexdigest()[:64]


def reset_code_hash(secret: str, user_id: uuid.UUID, code: str) -> str:
    """What is stored of a code: an HMAC with the server's secret key, so that a copy of
    the database does not give the codes away (a six-digit hash alone would)."""
    return hmac.new(secret.encode(), f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()


async def _reserve(session: AsyncSession, *, key: str, limit: Limit, now: datetime) -> RateEvent:
    return await reserve_attempt(
        session, key=key, limit=limit.count, window=timedelta(seconds=limit.seconds), now=now
    )


async def do_request_password_reset(
    session: AsyncSession,
    *,
    phone: str,
    address: str | None,
    now: datetime,
    secret: str,
    code_ttl: timedelta,
    limits: Mapping[str, Limit],
    brand: str,
) -> None:
    """Send a reset code by SMS to the account with this phone, if there is one that may
    reset its password this way (``RESET_ROLES``, active).

    The caller learns nothing either way: the request is counted per phone and per
    address (``RateLimited`` past ``reset.phone`` or ``reset.address``) whether or not
    the phone has an account, and nothing is returned. A new code replaces the user's
    earlier ones. Raises ``InvalidPhone`` for what is not a phone number.
    """
    phone = normalise_phone(phone)
    await _reserve(
        session, key=f"reset:phone:{_phone_key(phone)}", limit=limits["reset.phone"], now=now
    )
    if address:
        await _reserve(
            session, key=f"reset:addr:{address[:70]}", limit=limits["reset.address"], now=now
        )
    user = await get_user_by_phone(session, phone)
    if user is None or user.role not in RESET_ROLES or not user.is_active:
        return
    await session.exec(
        sa.delete(PasswordResetCode).where(col(PasswordResetCode.user_id) == user.id)
    )
    code = f"{secrets.randbelow(10**RESET_CODE_DIGITS):0{RESET_CODE_DIGITS}d}"
    session.add(
        PasswordResetCode(
            user_id=user.id,
            code_hash=reset_code_hash(secret, user.id, code),
            created_at=now,
            expires_at=now + code_ttl,
        )
    )
    # Only the live code stays readable in a development outbox.
    await do_mask_kept(session, user_id=user.id, kinds=[NotificationKind.PASSWORD_RESET_CODE])
    await do_notify(
        session,
        brand=brand,
        now=now,
        user=user,
        kind=NotificationKind.PASSWORD_RESET_CODE,
        params={"code": code, "expires": now + code_ttl},
        sms=True,
        secrets=[code],
    )
    audit.record(
        session,
        now=now,
        actor_id=None,
        action="password.reset_requested",
        object_type="user",
        object_id=user.id,
        subject_id=user.id,
        address=address,
    )


@dataclass(frozen=True)
class ResetGrant:
    """A right, live reset code, checked: the password may be set (``do_reset_password``)."""

    user_id: uuid.UUID
    code_id: uuid.UUID
    personal: tuple[str, ...]  # the user's phone, name and e-mail, for the password policy
    counted: tuple[str, ...]  # the keys its tries were counted under


async def check_reset_code(
    session: AsyncSession,
    *,
    phone: str,
    code: str,
    address: str | None,
    now: datetime,
    secret: str,
    limits: Mapping[str, Limit],
) -> ResetGrant | None:
    """Count a try of a reset code (per phone and per address: ``RateLimited`` past
    ``reset_code.phone`` or ``reset_code.address``) and check it.

    Returns the grant, or None for a code that is wrong, expired, used, dead after
    ``MAX_CODE_FAILURES`` wrong tries, or for no account: one answer for all. A wrong
    code counts against the live code's tries. The caller commits before it answers, so
    that the counts stay, then refuses a None with ``InvalidCode``.
    """
    phone = normalise_phone(phone)
    code = "".join(code.split())  # "123 456" as read out from the SMS
    keys = [f"reset-code:phone:{_phone_key(phone)}"]
    await _reserve(session, key=keys[0], limit=limits["reset_code.phone"], now=now)
    if address:
        keys.append(f"reset-code:addr:{address[:70]}")
        await _reserve(session, key=keys[1], limit=limits["reset_code.address"], now=now)
    user = await get_user_by_phone(session, phone)
    if user is None or user.role not in RESET_ROLES or not user.is_active:
        return None
    live = (
        await session.exec(
            select(PasswordResetCode).where(
                PasswordResetCode.user_id == user.id,
                col(PasswordResetCode.used_at).is_(None),
                PasswordResetCode.expires_at > now,
                PasswordResetCode.failures < MAX_CODE_FAILURES,
            )
        )
    ).first()
    if live is None:
        return None
    if not hmac.compare_digest(live.code_hash, reset_code_hash(secret, user.id, code)):
        await session.exec(
            sa.update(PasswordResetCode)
            .where(col(PasswordResetCode.id) == live.id)
            .values(failures=PasswordResetCode.failures + 1)
        )
        return None
    return ResetGrant(
        user_id=user.id,
        code_id=live.id,
        personal=(user.phone, user.full_name, *([user.email] if user.email else [])),
        counted=tuple(keys),
    )


async def do_reset_password(
    session: AsyncSession,
    *,
    grant: ResetGrant,
    new_hash: str,
    now: datetime,
    address: str | None,
) -> User:
    """Use the code of ``grant`` (once: a code used meanwhile is ``InvalidCode``) to set
    the new password (hashed beforehand): the must-change flag goes, every session ends,
    the phone's and the account's counted failures are forgotten. Returns the user."""
    used = await session.exec(
        sa.update(PasswordResetCode)
        .where(
            col(PasswordResetCode.id) == grant.code_id,
            col(PasswordResetCode.used_at).is_(None),
            col(PasswordResetCode.expires_at) > now,
        )
        .values(used_at=now)
    )
    user = await session.get(User, grant.user_id)
    if used.rowcount != 1 or user is None or not user.is_active:
        raise InvalidCode(
            "The code is wrong or no longer valid: ask for a new one",
            problem=Problem.CODE_INVALID,
            field="code",
        )
    user.password_hash = new_hash
    user.must_change_password = False
    user.password_changed_at = now
    session.add(user)
    await do_revoke_user_sessions(session, user_id=user.id, now=now)
    await do_forget_attempts(
        session, keys=[*grant.counted, f"login:acct:{user.id}", f"password:user:{user.id}"]
    )
    audit.record(
        session,
        now=now,
        actor_id=user.id,
        action="password.reset",
        object_type="user",
        object_id=user.id,
        subject_id=user.id,
        address=address,
    )
    return user
