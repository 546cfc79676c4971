"""HTTP routes of accounts: register, sign in and out, the password (changed, or reset with
a code sent by SMS), the caller's profile."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from telemed import audit, keys
from telemed.accounts import consent, service
from telemed.accounts.models import AuthSession, Locale, Role, User, UserPublic
from telemed.accounts.passwords import check_password
from telemed.api import NONBLANK, Access, Call, RequestModel, Routes, TimeZoneName
from telemed.auth import clear_session_cookie, set_session_cookie
from telemed.errors import InvalidCode, InvalidCredentials, InvalidValue, NotFound, Problem

routes = Routes(tag="accounts")


def _from_1900(value: date) -> date:
    if not 1900 <= value.year < 2100:
        raise ValueError("a birth date from 1900 on")
    return value


BirthDate = Annotated[
    date,
    AfterValidator(_from_1900),
    WithJsonSchema(
        {"type": "string", "format": "date", "pattern": "^(19|20)[0-9]{2}-"},
        mode="validation",
    ),
]
"""A birth date from 1900 on (one in the future is refused by ``register``: 422)."""


class RegisterIn(RequestModel):
    full_name: str = Field(min_length=1, max_length=200, pattern=NONBLANK)
    birth_date: BirthDate
    phone: str = Field(min_length=1, max_length=32, pattern=NONBLANK)
    email: str | None = Field(default=None, max_length=254)
    password: str = Field(min_length=1, max_length=256, pattern=NONBLANK)
    locale: Locale | None = Field(
        default=None, description="The interface's language; by default the server's own"
    )
    consent_version: str = Field(
        min_length=1,
        max_length=32,
        description="The version of the personal data consent the patient read and agreed"
        " to (GET /consent): registering without it is refused",
    )


class ConsentOut(BaseModel):
    version: str
    text: str = Field(description="In the asked language (?lang=ru|en); the Russian binds")


class ConsentQuery(RequestModel):
    lang: Locale = Locale.RU
    version: str | None = Field(default=None, max_length=32)


@routes.get("/consent", access=Access.PUBLIC, errors=(404,))
async def get_consent(call: Call, query: ConsentQuery) -> ConsentOut:
    """GET /consent: the consent to the processing of personal data (152-FZ) that a
    registration agrees to, or an earlier ``version`` of it (a profile shows the one its
    owner agreed to)."""
    text = consent.TEXTS.get(query.version or consent.CURRENT.version)
    if text is None:
        raise NotFound("No such version of the consent")
    return ConsentOut(version=text.version, text=text.ru if query.lang is Locale.RU else text.en)


class LoginIn(RequestModel):
    login: str = Field(
        min_length=1, max_length=254, pattern=NONBLANK, description="Phone or e-mail"
    )
    password: str = Field(min_length=1, max_length=256, pattern=NONBLANK)


class PasswordChangeIn(RequestModel):
    current_password: str = Field(min_length=1, max_length=256, pattern=NONBLANK)
    new_password: str = Field(min_length=1, max_length=256, pattern=NONBLANK)


class PasswordResetIn(RequestModel):
    phone: str = Field(
        min_length=1, max_length=32, pattern=NONBLANK, description="The account's phone"
    )


class PasswordResetRequested(BaseModel):
    """The same answer whether or not the phone has an account."""

    code_digits: int = Field(description="How many digits the code has")
    code_valid_minutes: int = Field(description="How long a code is good for")


class PasswordResetConfirmIn(RequestModel):
    phone: str = Field(min_length=1, max_length=32, pattern=NONBLANK)
    code: str = Field(
        min_length=1, max_length=16, pattern=NONBLANK, description="The code from the SMS"
    )
    new_password: str = Field(min_length=1, max_length=256, pattern=NONBLANK)


class ProfileUpdateIn(RequestModel):
    locale: Locale | None = None
    time_zone: TimeZoneName | None = None


class AuthOut(BaseModel):
    token: str
    expires_at: datetime
    user: UserPublic


def _signed_in(call: Call, token: str, auth_session: AuthSession, user: User) -> AuthOut:
    """The answer to a sign-in: the token for apps, and the cookie for browsers."""
    max_age = int(call.settings.session_ttl.total_seconds())
    call.response_hooks.append(
        lambda response: set_session_cookie(
            response, token, settings=call.settings, max_age=max_age
        )
    )
    return AuthOut(
        token=token, expires_at=auth_session.expires_at, user=UserPublic.model_validate(user)
    )


@routes.post("/auth/register", status=201, access=Access.PUBLIC, errors=(409,), transaction=False)
async def register(call: Call, body: RegisterIn) -> AuthOut:
    """POST /auth/register: create a patient account and sign in.

    The phone is stored in E.164; the password must meet the policy. Answers the
    session token (for apps) and sets the session cookie (for browsers). Registrations
    are limited per client address (429 with ``Retry-After``).
    """
    if body.birth_date > call.now.date():
        raise InvalidValue(
            "The birth date is in the future", problem=Problem.IN_FUTURE, field="birth_date"
        )
    if body.consent_version != consent.CURRENT.version:
        raise InvalidValue(
            "The consent to the processing of personal data has changed: read it again",
            problem=Problem.CONSENT_OUTDATED,
            field="consent_version",
            details={"version": consent.CURRENT.version},
        )
    account = service.check_new_account(
        full_name=body.full_name,
        phone=body.phone,
        password=body.password,
        email=body.email,
        birth_date=body.birth_date,
    )
    limit = call.settings.limits["register.address"]
    async with call.transaction() as session:
        await service.reserve_attempt(
            session,
            key=f"register:addr:{call.address}",
            limit=limit.count,
            window=timedelta(seconds=limit.seconds),
            now=call.now,
        )
    password_hash = await call.app[keys.PASSWORDS].hash(body.password)
    async with call.transaction() as session:
        user = await service.do_create_user(
            session,
            account=account,
            password_hash=password_hash,
            role=Role.PATIENT,
            now=call.now,
            locale=body.locale or Locale(call.settings.default_locale),
            time_zone=call.settings.default_time_zone,
            consent_version=body.consent_version,
        )
        token, auth_session = await service.do_start_session(
            session,
            user=user,
            now=call.now,
            ttl=call.settings.session_ttl,
            user_agent=call.request.headers.get("User-Agent"),
        )
        audit.record(
            session,
            now=call.now,
            actor_id=user.id,
            action="user.registered",
            object_type="user",
            object_id=user.id,
            subject_id=user.id,
            address=call.address,
        )
    return _signed_in(call, token, auth_session, user)


@routes.post("/auth/login", access=Access.PUBLIC, errors=(401, 429), transaction=False)
async def login(call: Call, body: LoginIn) -> AuthOut:
    """POST /auth/login: sign in with phone or e-mail and password.

    Failed attempts are limited per account (its phone and its e-mail count together)
    and per address: past the limit the answer is 429 with ``Retry-After``.
    """
    settings = call.settings
    passwords = call.app[keys.PASSWORDS]
    dummy = await passwords.dummy_hash()
    async with call.transaction() as session:
        attempt = await service.check_login_attempt(
            session,
            login=body.login,
            address=call.address,
            now=call.now,
            window=settings.login_window,
            max_per_account=settings.login_max_failures_per_account,
            max_per_address=settings.login_max_failures_per_address,
            dummy_hash=dummy,
        )
    # The hash is checked between two short transactions, never inside one.
    password_ok = await passwords.verify(attempt.password_hash, body.password)
    if not password_ok or attempt.user_id is None:
        raise InvalidCredentials("Wrong login or password")
    new_hash = None
    if passwords.needs_rehash(attempt.password_hash):
        new_hash = await passwords.hash(body.password)
    async with call.transaction() as session:
        user = await service.do_finish_login(
            session, attempt=attempt, password_ok=password_ok, new_hash=new_hash
        )
        token, auth_session = await service.do_start_session(
            session,
            user=user,
            now=call.now,
            ttl=settings.session_ttl,
            user_agent=call.request.headers.get("User-Agent"),
        )
    return _signed_in(call, token, auth_session, user)


@routes.post("/auth/logout", allow_pending_password=True, allow_join_token=True)
async def logout(call: Call) -> None:
    """POST /auth/logout: end this session (the token stops working at once).

    With a join token, ends that token only: the browser's own session cookie is kept.
    """
    if call.auth_session is not None:
        await service.do_revoke_session(call.session, auth_session=call.auth_session, now=call.now)
        if call.auth_session.consultation_id is not None:
            return
    call.response_hooks.append(clear_session_cookie)


@routes.post("/auth/password", allow_pending_password=True, errors=(401, 409), transaction=False)
async def change_password(call: Call, body: PasswordChangeIn) -> None:
    """POST /auth/password: change the password; every other session is ended.

    This is also how a temporary password (referred patients) is replaced. Wrong current
    passwords are limited per user (429 with ``Retry-After``).
    """
    passwords = call.app[keys.PASSWORDS]
    limit = call.settings.limits["password.user"]
    user = call.user
    service.check_new_password(
        user, current_password=body.current_password, new_password=body.new_password
    )
    async with call.transaction() as session:
        checked_hash = call.user.password_hash
        await service.reserve_attempt(
            session,
            key=f"password:user:{call.user.id}",
            limit=limit.count,
            window=timedelta(seconds=limit.seconds),
            now=call.now,
        )
    if not await passwords.verify(checked_hash, body.current_password):
        raise InvalidCredentials(
            "The current password is wrong", details={"field": "current_password"}
        )
    new_hash = await passwords.hash(body.new_password)
    async with call.transaction() as session:
        await service.do_change_password(
            session,
            user=call.user,
            checked_hash=checked_hash,
            new_hash=new_hash,
            keep_session=call.auth_session.id if call.auth_session else None,
            now=call.now,
            address=call.address,
        )


@routes.post("/auth/password-reset", status=202, access=Access.PUBLIC, errors=(429,))
async def request_password_reset(call: Call, body: PasswordResetIn) -> PasswordResetRequested:
    """POST /auth/password-reset: send a code to set a new password by SMS to the phone.

    The answer is the same whether or not the phone has an account (only patients and
    doctors get a code). Requests are limited per phone and per address (429 with
    ``Retry-After``); a new code replaces the earlier one."""
    settings = call.settings
    await service.do_request_password_reset(
        call.session,
        brand=call.settings.brand_name,
        phone=body.phone,
        address=call.address,
        now=call.now,
        secret=settings.resolved_secret_key(),
        code_ttl=settings.password_reset_code_ttl,
        limits=settings.limits,
    )
    return PasswordResetRequested(
        code_digits=service.RESET_CODE_DIGITS,
        code_valid_minutes=settings.password_reset_code_minutes,
    )


@routes.post("/auth/password-reset/confirm", access=Access.PUBLIC, errors=(429,), transaction=False)
async def reset_password(call: Call, body: PasswordResetConfirmIn) -> AuthOut:
    """POST /auth/password-reset/confirm: set a new password with the code from the SMS,
    and sign in.

    A code is good once, for ``TELEMED_PASSWORD_RESET_CODE_MINUTES``, and dies after five
    wrong tries; a wrong, expired or used code, or a phone without an account, is 422
    ``invalid_code`` alike. Tries are limited per phone and per address (429). Every
    other session of the account ends."""
    settings = call.settings
    passwords = call.app[keys.PASSWORDS]
    check_password(body.new_password, field="new_password")
    async with call.transaction() as session:
        grant = await service.check_reset_code(
            session,
            phone=body.phone,
            code=body.code,
            address=call.address,
            now=call.now,
            secret=settings.resolved_secret_key(),
            limits=settings.limits,
        )
    # Refused after the commit, so that the try stays counted.
    if grant is None:
        raise InvalidCode(
            "The code is wrong or no longer valid: ask for a new one",
            problem=Problem.CODE_INVALID,
            field="code",
        )
    check_password(body.new_password, personal=grant.personal, field="new_password")
    new_hash = await passwords.hash(body.new_password)
    async with call.transaction() as session:
        user = await service.do_reset_password(
            session, grant=grant, new_hash=new_hash, now=call.now, address=call.address
        )
        token, auth_session = await service.do_start_session(
            session,
            user=user,
            now=call.now,
            ttl=settings.session_ttl,
            user_agent=call.request.headers.get("User-Agent"),
        )
    return _signed_in(call, token, auth_session, user)


@routes.get("/me", allow_pending_password=True)
async def me(call: Call) -> UserPublic:
    """GET /me: the signed-in user's own account."""
    return UserPublic.model_validate(call.user)


class UserPreferences(BaseModel):
    """What a page needs to speak to the user: who they are, in which language and time
    zone. No personal data: a join token (in an embed URL) may read it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    role: Role
    locale: Locale
    time_zone: str


@routes.get("/me/preferences", allow_pending_password=True, allow_join_token=True)
async def my_preferences(call: Call) -> UserPreferences:
    """GET /me/preferences: the user's id, role, language and time zone (also with a join
    token: the video room reads them)."""
    return UserPreferences.model_validate(call.user)


@routes.patch("/me", allow_pending_password=True)
async def update_me(call: Call, body: ProfileUpdateIn) -> UserPublic:
    """PATCH /me: the interface language and the time zone."""
    user = call.user
    if body.time_zone is not None:
        user.time_zone = body.time_zone
    if body.locale is not None:
        user.locale = body.locale
    call.session.add(user)
    return UserPublic.model_validate(user)


def setup_routes(app: web.Application) -> None:
    app[keys.API].include(app, routes)
