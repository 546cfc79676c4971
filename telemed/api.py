"""The HTTP API layer: typed endpoints, one transaction per call, and the OpenAPI document.

An endpoint is an async function whose annotations are its contract::

    @routes.post("/auth/register", status=201, auth=Access.PUBLIC)
    async def register(call: Call, body: RegisterIn) -> AuthOut:
        '''POST /auth/register: create a patient account.'''

``body`` and ``query`` (pydantic models) are parsed and validated before the handler
runs; the return annotation is the response model. The OpenAPI document is generated
from these same annotations, so it cannot drift from the code.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Self, TypeVar
from zoneinfo import available_timezones

import orjson
import pydantic
from aiohttp import web
from pydantic import BaseModel, ConfigDict, PlainValidator, WithJsonSchema, model_validator
from pydantic.json_schema import models_json_schema
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import keys, live
from telemed.accounts.models import AuthSession, Role, User
from telemed.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PasswordChangeRequired,
    Problem,
    RequestTimeout,
    TooLarge,
    Unauthenticated,
)
from telemed.http import client_address
from telemed.settings import Settings

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Access(StrEnum):
    PUBLIC = "public"  # anyone; credentials are not looked at
    USER = "user"  # a signed-in user (optionally of given roles)


NONBLANK = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
"""The pattern of a string that must not be blank: it holds a character that is not a
space by any definition (Python's, JavaScript's, Unicode's), so that the OpenAPI
document and the server agree on every string."""


class RequestModel(BaseModel):
    """Base of every request body and query: unknown fields are an error, not ignored.

    Strings are validated as sent (their length, and ``pattern=NONBLANK`` for those that
    must hold something), exactly as the OpenAPI document describes them, and only then
    stripped of surrounding spaces."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _strip_strings(self) -> Self:
        for name in type(self).model_fields:
            value = getattr(self, name)
            # Exactly str: an enum member is a str too, and must stay what it is.
            if type(value) is str:
                setattr(self, name, value.strip())
            elif isinstance(value, list) and all(type(item) is str for item in value):
                setattr(self, name, [item.strip() for item in value])
        return self


class ListOf(BaseModel, Generic[T]):
    """Every list answers ``{items: [...]}`` (room for paging fields later)."""

    items: list[T]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    """The one error shape, on every endpoint."""

    error: ErrorDetail


INSTANT_PATTERN = (
    r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""What ``Instant`` accepts, also as a pattern for OpenAPI: RFC 3339 with an offset, in
the years 2000 to 2099 as written (a leap second is not taken). Nothing the service does
lies outside, and arithmetic on times near year 1 or 9999 overflows."""
_INSTANT = re.compile(INSTANT_PATTERN)


def _instant(value: object) -> datetime:
    if isinstance(value, datetime) and value.tzinfo is not None and 2000 <= value.year < 2100:
        return value
    if isinstance(value, str) and _INSTANT.match(value):
        # 2026-05-04T10:30:00 [.fraction] Z|±hh:mm; Python takes at most six digits.
        zulu = value[-1] in "Zz"
        offset = "+00:00" if zulu else value[-6:]
        fraction = value[19 : len(value) - (1 if zulu else 6)]
        try:
            return datetime.fromisoformat(value[:10] + "T" + value[11:19] + fraction[:7] + offset)
        except ValueError:
            raise ValueError("not a real date and time") from None
    raise ValueError(
        "an RFC 3339 date and time with an offset in 2000-2099, like 2026-05-04T10:30:00+03:00"
    )


Instant = Annotated[
    datetime,
    PlainValidator(_instant),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": INSTANT_PATTERN,
            "description": "RFC 3339 with an offset, in the years 2000 to 2099",
        },
        mode="validation",
    ),
]
"""A point in time as clients send it: an RFC 3339 string with an offset, in range (a
number is not taken for a Unix time)."""


def _flag(value: object) -> bool:
    if value is True or value == "true":
        return True
    if value is False or value == "false":
        return False
    raise ValueError("true or false")


QueryFlag = Annotated[
    bool, PlainValidator(_flag), WithJsonSchema({"type": "boolean"}, mode="validation")
]
"""A yes/no query parameter: ``true`` or ``false``, nothing else."""

ZONES = frozenset(available_timezones())


def _zone(value: object) -> str:
    if not isinstance(value, str) or value not in ZONES:
        raise ValueError("an IANA time zone, like Europe/Moscow")
    return value


TimeZoneName = Annotated[
    str,
    PlainValidator(_zone),
    WithJsonSchema({"type": "string", "enum": sorted(ZONES)}, mode="validation"),
]
"""An IANA time zone name (``Europe/Moscow``)."""


@dataclass
class Call:
    """One API call: the request, its time, its caller, and its transactions.

    Most endpoints run in one transaction that the API layer opens once the caller is
    known and the input is read (``session``). An endpoint declared with
    ``transaction=False`` opens short ones itself (``transaction()``), to do slow work
    (a password hash) between them instead of inside one.
    """

    request: web.Request
    endpoint: Endpoint
    now: datetime
    settings: Settings
    address: str | None
    caller: User | None = None
    auth_session: AuthSession | None = None
    via_cookie: bool = False
    # Changes to the response the handler asks for (cookies).
    response_hooks: list[Callable[[web.StreamResponse], None]] = field(default_factory=list)
    _session: AsyncSession | None = None

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def session(self) -> AsyncSession:
        """The open transaction's session."""
        if self._session is None:
            raise RuntimeError(f"{self.endpoint.operation_id}: no transaction is open")
        return self._session

    @property
    def user(self) -> User:
        if self.caller is None:
            raise Unauthenticated("Sign in first")
        return self.caller

    def path_id(self, name: str = "id") -> uuid.UUID:
        """A UUID path parameter; one that is not a UUID names nothing, hence 404."""
        try:
            return uuid.UUID(self.request.match_info[name])
        except ValueError:
            raise NotFound("Not found") from None

    async def identify(self, session: AsyncSession) -> None:
        """Who calls, read in ``session``, and whether they may make this call: signed
        in, not held by a temporary password, of an allowed role, not with a join token
        where it has no business, and from our own origin when a cookie speaks for them.
        """
        from telemed.auth import check_origin, resolve_caller

        resolved = await resolve_caller(self.request, session, now=self.now)
        check_origin(self.request, self.settings, via_cookie=resolved.via_cookie)
        caller = resolved.user
        if caller is None:
            raise Unauthenticated("Sign in first")
        check_join_token(resolved.auth_session, self.endpoint)
        check_system_client(caller, self.endpoint)
        if caller.must_change_password and not self.endpoint.allow_pending_password:
            raise PasswordChangeRequired("Change the temporary password before going on")
        roles = self.endpoint.roles
        if roles is not None and caller.role not in roles and caller.role is not Role.ADMIN:
            raise Forbidden("This action is not allowed for your role")
        self.caller, self.auth_session, self.via_cookie = (
            caller,
            resolved.auth_session,
            resolved.via_cookie,
        )

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """One unit of work (``live.unit_of_work``): committed when the block ends and
        rolled back on any error, what it queued sent after the commit. The caller is
        identified again inside it (so ``user`` belongs to this session, and a session
        ended meanwhile is refused). The block must not wait on the client: its input is
        read before."""
        async with live.unit_of_work(
            self.app[keys.SESSION_FACTORY], self.app[keys.PUBLISHER], write=write
        ) as session:
            try:
                if self.endpoint.access is Access.USER:
                    await self.identify(session)
                self._session = session
                yield session
            finally:
                self._session = None


Handler = Callable[..., Awaitable[Any]]
HandlerT = TypeVar("HandlerT", bound=Handler)


B = TypeVar("B")


def _keep(_body: Any) -> None:
    return None


@dataclass(frozen=True)
class RawBody(Generic[B]):
    """A request body that is not JSON (multipart uploads): ``read`` takes it in before
    any transaction begins (streaming a file to disk, say) and its result is the
    handler's ``body``; ``discard`` undoes what ``read`` left behind if the call then
    fails. ``content_type`` and ``schema`` describe it in OpenAPI."""

    content_type: str
    schema: dict[str, Any]
    read: Callable[[Call], Awaitable[B]]
    discard: Callable[[B], None] = _keep


@dataclass(frozen=True)
class RawResponse:
    """A response the handler writes itself (file downloads), for OpenAPI."""

    content_types: tuple[str, ...]
    description: str


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    description: str
    tag: str
    status: int
    access: Access
    roles: frozenset[Role] | None
    allow_pending_password: bool
    allow_join_token: bool
    allow_system: bool
    body_model: type[BaseModel] | None
    query_model: type[BaseModel] | None
    response_model: type[BaseModel] | None
    raw_body: RawBody[Any] | None
    raw_response: RawResponse | None
    errors: tuple[int, ...]
    writes: bool
    transaction: bool
    limit: str | None

    @property
    def reads_body(self) -> bool:
        return self.body_model is not None or self.raw_body is not None

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


@dataclass
class Routes:
    """A declarative table of endpoints of one domain (like aiohttp's RouteTableDef).
    ``allow_system``: its endpoints take a system client's token (the FHIR interface)."""

    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)
    allow_system: bool = False

    def route(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        access: Access = Access.USER,
        roles: Iterable[Role] | None = None,
        allow_pending_password: bool = False,
        allow_join_token: bool = False,
        allow_system: bool | None = None,
        raw_body: RawBody[Any] | None = None,
        raw_response: RawResponse | None = None,
        errors: tuple[int, ...] = (),
        writes: bool | None = None,
        transaction: bool = True,
        limit: str | None = "write",
    ) -> Callable[[HandlerT], HandlerT]:
        """``writes``: the call changes the database (default: unless it is a GET). A GET
        that writes (an audited read) says so, so that its transaction begins as a write.
        ``allow_join_token``: a join token (a session scoped to one consultation's room)
        may make the call; every other endpoint refuses it. ``allow_system``: a system
        client may make it (by default, if the table allows them). ``transaction=False``: the
        handler opens its own short transactions (``Call.transaction``). ``limit``: the
        rate limit a writing call counts against (``telemed.limits``): ``"write"`` is
        ``write.user``, or ``write.address`` for a call without signing in."""

        def decorate(handler: HandlerT) -> HandlerT:
            hints = typing.get_type_hints(handler)
            returned = hints.get("return")
            response_model = (
                returned if inspect.isclass(returned) and issubclass(returned, BaseModel) else None
            )
            body = hints.get("body")
            body_model = (
                body
                if raw_body is None and inspect.isclass(body) and issubclass(body, BaseModel)
                else None
            )
            doc = inspect.getdoc(handler) or handler.__name__
            first, _, rest = doc.partition("\n")
            summary = first.split(":", 1)[1].strip() if ":" in first else first
            self.endpoints.append(
                Endpoint(
                    method=method,
                    path=path,
                    handler=handler,
                    summary=summary,
                    description=rest.strip(),
                    tag=self.tag,
                    status=status,
                    access=access,
                    roles=frozenset(roles) if roles is not None else None,
                    allow_pending_password=allow_pending_password,
                    allow_join_token=allow_join_token,
                    allow_system=self.allow_system if allow_system is None else allow_system,
                    body_model=body_model,
                    query_model=hints.get("query"),
                    response_model=response_model,
                    raw_body=raw_body,
                    raw_response=raw_response,
                    errors=errors,
                    writes=(method != "GET" if writes is None else writes),
                    transaction=transaction,
                    limit=_limit_name(limit, access)
                    if (method != "GET" if writes is None else writes)
                    else None,
                )
            )
            return handler

        return decorate

    def get(self, path: str, **kwargs: Any) -> Callable[[HandlerT], HandlerT]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[HandlerT], HandlerT]:
        return self.route("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[HandlerT], HandlerT]:
        return self.route("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[HandlerT], HandlerT]:
        return self.route("DELETE", path, **kwargs)


def _limit_name(limit: str | None, access: Access) -> str | None:
    if limit == "write":
        return "write.user" if access is Access.USER else "write.address"
    return limit


def check_join_token(auth_session: AuthSession | None, endpoint: Endpoint) -> None:
    """Refuse a join token where it has no business: it is put in embed URLs and WebViews,
    so it opens its consultation's room (Socket.IO) and reads the account's language
    (``GET /me/preferences``), nothing else. Not 401: the token is valid, and a client told to sign
    in again would drop it for nothing."""
    if auth_session is None or auth_session.consultation_id is None:
        return
    if not endpoint.allow_join_token:
        raise Forbidden(
            "A join token opens its consultation's room only",
            details={"join_token_for": str(auth_session.consultation_id)},
        )


def system_client_refused() -> Forbidden:
    """What a system client's token gets outside the FHIR interface (HTTP and
    Socket.IO alike). Not 401: the token is valid, and signing in again changes nothing."""
    return Forbidden(
        "A system client's token is for the FHIR interface (/fhir/R4) only",
        details={"role": Role.SYSTEM.value},
    )


def check_system_client(caller: User, endpoint: Endpoint) -> None:
    """Refuse a system client where it has no business: a regional system reads its
    centre's data through the FHIR interface (and the document download its
    ``DocumentReference`` links to), nothing else."""
    if caller.role is Role.SYSTEM and not endpoint.allow_system:
        raise system_client_refused()


_PROBLEMS_BY_TYPE: dict[str, Problem] = {
    "missing": Problem.MISSING,
    "extra_forbidden": Problem.UNKNOWN_FIELD,
    "string_too_short": Problem.TOO_SHORT,
    "too_short": Problem.TOO_SHORT,
    "string_too_long": Problem.TOO_LONG,
    "too_long": Problem.TOO_LONG,
    "greater_than": Problem.TOO_SMALL,
    "greater_than_equal": Problem.TOO_SMALL,
    "less_than": Problem.TOO_LARGE,
    "less_than_equal": Problem.TOO_LARGE,
    "string_pattern_mismatch": Problem.BAD_FORMAT,
    "enum": Problem.NOT_ALLOWED,
    "literal_error": Problem.NOT_ALLOWED,
}
# Limits a problem's text names, under the names the texts use: {min} and {max}.
_LIMITS = {
    "min_length": "min",
    "gt": "min",
    "ge": "min",
    "max_length": "max",
    "lt": "max",
    "le": "max",
}
# Fields whose format has a problem of its own (its text shows the format).
_FORMAT_PROBLEMS = {"icd10": Problem.BAD_ICD10, "email": Problem.BAD_EMAIL}


def _problem(error_type: str, field: str) -> Problem:
    if error_type == "string_pattern_mismatch":
        return _FORMAT_PROBLEMS.get(field.rsplit(".", 1)[-1], Problem.BAD_FORMAT)
    if error_type in _PROBLEMS_BY_TYPE:
        return _PROBLEMS_BY_TYPE[error_type]
    if error_type.startswith(("date", "datetime", "time")):
        return Problem.NOT_DATE
    if error_type.startswith(("int_", "float_", "decimal_")):
        return Problem.NOT_NUMBER
    if error_type.endswith("_type"):
        return Problem.WRONG_TYPE
    return Problem.INVALID


def validation_details(exc: pydantic.ValidationError) -> dict[str, Any]:
    """Field errors in a client-friendly list, without echoing the submitted values: each
    with its ``Problem`` code and the limits its text names, and pydantic's own type and
    English message for API clients."""
    fields = []
    for err in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in err["loc"])
        context = err.get("ctx", {})
        params = {
            name: context[key]
            for key, name in _LIMITS.items()
            if isinstance(context.get(key), int | float)
        }
        fields.append(
            {
                "field": location,
                "code": str(_problem(err["type"], location)),
                "params": params,
                "message": err["msg"],
                "type": err["type"],
            }
        )
    return {"fields": fields}


class Api:
    """All endpoints of the app: mounts them on the router and describes them in OpenAPI."""

    def __init__(self, *, title: str, version: str) -> None:
        self.title = title
        self.version = version
        self.endpoints: list[Endpoint] = []

    def include(self, app: web.Application, routes: Routes) -> None:
        for endpoint in routes.endpoints:
            self.endpoints.append(endpoint)
            app.router.add_route(
                endpoint.method, PREFIX + endpoint.path, self._wrap(endpoint), name=None
            )

    def _wrap(self, endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(endpoint, request)

        return handle

    async def _handle(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        """One call, in three steps. No transaction is open while the client sends.

        1. Who calls: for a call that writes or sends a body, found in a short read of
           its own, so that nobody may make us read a body before they are known, and
           the call is counted against its rate limit.
        2. The input: the query, and the body read (bounded in size and time) and
           validated, or streamed to a temporary file (``RawBody``).
        3. The work: one transaction (or the handler's own short ones), in which the
           caller is identified again.
        """
        from telemed.auth import check_origin

        app = request.app
        settings = app[keys.SETTINGS]
        call = Call(
            request=request,
            endpoint=endpoint,
            now=app[keys.CLOCK].now(),
            settings=settings,
            address=client_address(request, settings.trusted_proxies),
        )
        if endpoint.access is Access.PUBLIC:
            # Public endpoints ignore credentials: a stale cookie must not stand in the
            # way of signing in again.
            check_origin(request, settings, via_cookie=False)
        elif endpoint.writes or endpoint.reads_body:
            async with app[keys.SESSION_FACTORY]() as session:
                await call.identify(session)
        if endpoint.limit is not None:
            who = f"user:{call.caller.id}" if call.caller is not None else f"addr:{call.address}"
            await app[keys.LIMITER].hit(endpoint.limit, who)

        kwargs: dict[str, Any] = {}
        if endpoint.query_model is not None:
            kwargs["query"] = parse_model(endpoint.query_model, _query_values(request))
        if endpoint.body_model is not None:
            raw = await _read_json(request, seconds=settings.request_body_timeout_seconds)
            kwargs["body"] = parse_json(endpoint.body_model, raw)
        elif endpoint.raw_body is not None:
            kwargs["body"] = await endpoint.raw_body.read(call)

        try:
            if endpoint.transaction:
                async with call.transaction(write=endpoint.writes):
                    result = await endpoint.handler(call, **kwargs)
            else:
                result = await endpoint.handler(call, **kwargs)
        except BaseException:
            if endpoint.raw_body is not None:
                endpoint.raw_body.discard(kwargs["body"])
            raise
        response: web.StreamResponse
        if isinstance(result, web.StreamResponse):
            response = result
        elif result is None:
            response = web.Response(status=204)
        elif isinstance(result, BaseModel):
            response = web.Response(
                text=result.model_dump_json(),
                status=endpoint.status,
                content_type="application/json",
            )
        else:
            raise TypeError(f"{endpoint.operation_id} returned {type(result).__name__}")
        for hook in call.response_hooks:
            hook(response)
        return response

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document, generated from the endpoints' models."""
        models: list[tuple[type[BaseModel], typing.Literal["validation", "serialization"]]] = [
            (ErrorEnvelope, "serialization")
        ]
        for endpoint in self.endpoints:
            for model in (endpoint.body_model, endpoint.query_model):
                if model is not None:
                    models.append((model, "validation"))
            if endpoint.response_model is not None:
                models.append((endpoint.response_model, "serialization"))
        refs, schema = models_json_schema(
            list(dict.fromkeys(models)),
            ref_template="#/components/schemas/{model}",
        )
        components = schema.get("$defs", {})
        error_ref = refs[(ErrorEnvelope, "serialization")]

        paths: dict[str, dict[str, Any]] = {}
        for endpoint in self.endpoints:
            operation: dict[str, Any] = {
                "operationId": endpoint.operation_id,
                "summary": endpoint.summary,
                "tags": [endpoint.tag],
            }
            if endpoint.description:
                operation["description"] = endpoint.description
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
                for name in re.findall(r"{(\w+)}", endpoint.path)
            ]
            if endpoint.query_model is not None:
                query_schema = endpoint.query_model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
                required = set(query_schema.get("required", []))
                for name, prop in query_schema.get("properties", {}).items():
                    parameters.append(
                        {"name": name, "in": "query", "required": name in required, "schema": prop}
                    )
            if parameters:
                operation["parameters"] = parameters
            if endpoint.body_model is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": refs[(endpoint.body_model, "validation")]}
                    },
                }
            elif endpoint.raw_body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        endpoint.raw_body.content_type: {"schema": endpoint.raw_body.schema}
                    },
                }
            responses: dict[str, Any] = {}
            if endpoint.response_model is not None:
                responses[str(endpoint.status)] = {
                    "description": endpoint.summary,
                    "content": {
                        "application/json": {
                            "schema": refs[(endpoint.response_model, "serialization")]
                        }
                    },
                }
            elif endpoint.raw_response is not None:
                responses[str(endpoint.status)] = {
                    "description": endpoint.raw_response.description,
                    "content": {
                        ct: {"schema": {"type": "string", "format": "binary"}}
                        for ct in endpoint.raw_response.content_types
                    },
                }
            else:
                responses["204"] = {"description": "Done; no content"}
            error_statuses = set(endpoint.errors)
            if endpoint.body_model or endpoint.query_model or endpoint.raw_body:
                error_statuses.add(400)
            if endpoint.reads_body:
                error_statuses.update({408, 413, 422})
            if endpoint.access is Access.USER:
                error_statuses.update({401, 403})
            elif endpoint.writes:
                error_statuses.add(403)  # a foreign Origin
            if "{" in endpoint.path:
                error_statuses.add(404)
            if endpoint.limit is not None:
                error_statuses.add(429)
            for status in sorted(error_statuses):
                responses[str(status)] = {
                    "description": _REASONS.get(status, "Error"),
                    "content": {"application/json": {"schema": error_ref}},
                }
            operation["responses"] = responses
            if endpoint.access is Access.USER:
                operation["security"] = [{"bearer": []}, {"cookie": []}]
            paths.setdefault(PREFIX + endpoint.path, {})[endpoint.method.lower()] = operation

        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version},
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "cookie": {"type": "apiKey", "in": "cookie", "name": "telemed_session"},
                },
            },
        }


_REASONS = {
    400: "Invalid input",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    408: "The body did not arrive in time",
    409: "Conflict with the current state",
    422: "A value breaks a rule",
    413: "Too large",
    415: "Unsupported type",
    429: "Too many attempts",
}


def _path_schema(name: str) -> dict[str, Any]:
    if name == "id" or name.endswith("_id"):
        return {"type": "string", "format": "uuid"}
    return {"type": "string"}


def parse_model(model: type[M], data: Any) -> M:
    """Validate decoded data (a query, a Socket.IO payload) against ``model``."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidInput(
            "Some fields are missing or invalid", details=validation_details(exc)
        ) from None
    except RecursionError:
        raise InvalidInput("The data is nested too deeply") from None


def parse_json(model: type[M], raw: bytes) -> M:
    """Validate a JSON body against ``model``, strictly: a JSON value must have the type
    the schema names (``0`` is not ``false``, ``"5"`` is not ``5``). As in JSON Schema,
    ``5.0`` is an integer."""
    try:
        data = _integral(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise InvalidInput("The body is not valid JSON") from None
    except RecursionError:
        raise InvalidInput("The body is nested too deeply") from None
    try:
        # The standard encoder: orjson refuses integers beyond 64 bits, JSON does not.
        return model.model_validate_json(json.dumps(data), strict=True)
    except pydantic.ValidationError as exc:
        raise InvalidInput(
            "Some fields are missing or invalid", details=validation_details(exc)
        ) from None


def _integral(value: Any) -> Any:
    """JSON numbers with no fractional part as integers (``5.0`` → ``5``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


def _query_values(request: web.Request) -> dict[str, str | list[str]]:
    """The query string as a dict; a repeated key (``?state=a&state=b``) gives a list."""
    values: dict[str, str | list[str]] = {}
    for key in request.query:
        found = request.query.getall(key)
        values[key] = found[0] if len(found) == 1 else list(found)
    return values


async def _read_json(request: web.Request, *, seconds: float) -> bytes:
    """The whole body of a JSON request: at most the app's ``client_max_size`` (413), and
    within ``seconds`` (408)."""
    if request.content_type != "application/json":
        raise InvalidInput("Send the body as application/json")
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge("The request body is too large") from None
    except TimeoutError:
        raise RequestTimeout(
            "The request body did not arrive in time", details={"seconds": seconds}
        ) from None
