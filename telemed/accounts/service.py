"""Accounts: registration, sign-in with rate limits, sessions and password changes.

Functions take the caller's ``session`` and never commit: the caller owns the
transaction.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from collections.abc import Collection
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import audit
from telemed.accounts.models import AuthSession, Locale, LoginFailure, Role, User
from telemed.accounts.passwords import check_password, hash_password, verify_password
from telemed.accounts.phones import looks_like_phone, normalise_phone
from telemed.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    InvalidPhone,
    PhoneTaken,
    RateLimited,
)

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_email(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or " " in email or len(email) > 254:
        raise InvalidInput("This is not an e-mail address", details={"field": "email"})
    return email


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_phone(session: AsyncSession, phone: str) -> User | None:
    result = await session.exec(select(User).where(User.phone == phone))
    return result.first()


async def do_create_user(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    now: datetime,
    full_name: str,
    phone: str,
    password: str,
    role: Role,
    birth_date: date | None = None,
    email: str | None = None,
    must_change_password: bool = False,
    locale: Locale = Locale.RU,
    time_zone: str = "Europe/Moscow",
) -> User:
    """Create an account after checking phone, e-mail and the password policy.

    Raises ``InvalidPhone``, ``InvalidInput``, ``WeakPassword``, ``PhoneTaken`` or
    ``EmailTaken``. Uniqueness is settled by the database's constraints, so two
    concurrent registrations of one phone cannot both succeed.
    """
    phone = normalise_phone(phone)
    email = normalise_email(email)
    full_name = " ".join(full_name.split())
    if not full_name:
        raise InvalidInput("Enter the full name", details={"field": "full_name"})
    check_password(password, personal=(phone, full_name, *([email] if email else [])))
    user = User(
        full_name=full_name,
        birth_date=birth_date,
        phone=phone,
        email=email,
        password_hash=await hash_password(hasher, password),
        role=role,
        locale=locale,
        time_zone=time_zone,
        must_change_password=must_change_password,
        created_at=now,
        password_changed_at=now,
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


def _account_key(login: str) -> str:
    return "acct:" + hashlib.sha256(login.encode()).hexdigest()[:60]


def _normalise_login(login: str) -> str:
    login = login.strip()
    if looks_like_phone(login):
        try:
            return normalise_phone(login)
        except InvalidPhone:
            return login
    return login.lower()


async def _check_rate(
    session: AsyncSession, *, key: str, limit: int, window: timedelta, now: datetime
) -> None:
    since = now - window
    result = await session.exec(
        select(sa.func.count(), sa.func.min(LoginFailure.at)).where(
            LoginFailure.key == key, LoginFailure.at > since
        )
    )
    count, oldest = result.one()
    if count >= limit and oldest is not None:
        if oldest.tzinfo is None:  # aggregate results bypass the column type on SQLite
            oldest = oldest.replace(tzinfo=now.tzinfo)
        retry_after = max(1, math.ceil((oldest + window - now).total_seconds()))
        raise RateLimited(
            "Too many failed sign-in attempts; try again later",
            retry_after_seconds=retry_after,
        )


async def check_login(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    login: str,
    password: str,
    address: str | None,
    now: datetime,
    window: timedelta,
    max_per_account: int,
    max_per_address: int,
) -> User:
    """Verify credentials, under per-account and per-address limits on failures.

    On failure the attempt is recorded in ``session`` before ``InvalidCredentials`` is
    raised: the caller must commit it even though the call fails. Raises ``RateLimited``
    (with the seconds to wait) when a limit is reached, before checking the password.
    """
    normalised = _normalise_login(login)
    keys = [(_account_key(normalised), max_per_account)]
    if address:
        keys.append(("addr:" + address[:70], max_per_address))
    for key, limit in keys:
        await _check_rate(session, key=key, limit=limit, window=window, now=now)

    if looks_like_phone(normalised):
        statement = select(User).where(User.phone == normalised)
    else:
        statement = select(User).where(User.email == normalised)
    user = (await session.exec(statement)).first()
    # Verify against a real hash even for unknown logins, so timing tells nothing.
    stored = user.password_hash if user is not None else _DUMMY_HASH
    valid = await verify_password(hasher, stored, password)
    if user is None or not valid or not user.is_active:
        for key, _ in keys:
            session.add(LoginFailure(key=key, at=now))
        raise InvalidCredentials("Wrong login or password")
    # A success clears the account's failures (the address keeps its count).
    await session.exec(sa.delete(LoginFailure).where(col(LoginFailure.key) == keys[0][0]))
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(hasher, password)
        session.add(user)
    return user


async def check_change_password(
    session: AsyncSession,
    *,
    hasher: PasswordHasher,
    user: User,
    current_password: str,
    new_password: str,
    keep_session: uuid.UUID | None,
    now: datetime,
    address: str | None,
) -> None:
    """Change the password; every other session of the user is ended.

    Raises ``InvalidCredentials`` for a wrong current password and ``WeakPassword``.
    """
    if not await verify_password(hasher, user.password_hash, current_password):
        raise InvalidCredentials(
            "The current password is wrong", details={"field": "current_password"}
        )
    if new_password == current_password:
        raise InvalidInput(
            "The new password must differ from the current one", details={"field": "new_password"}
        )
    check_password(
        new_password,
        personal=(user.phone, user.full_name, *([user.email] if user.email else [])),
        field="new_password",
    )
    user.password_hash = await hash_password(hasher, new_password)
    user.must_change_password = False
    user.password_changed_at = now
    session.add(user)
    await do_revoke_user_sessions(session, user_id=user.id, now=now, keep=keep_session)
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


_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$"
    "oAGadQgJoCUnkcUbXOa9shs5al/hdEHy7XtcQku7QUI"
)
