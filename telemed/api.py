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

import inspect
import logging
import re
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

import pydantic
from aiohttp import web
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema
from sqlmodel.ext.asyncio.session import AsyncSession

from telemed import keys, live
from telemed.accounts.models import AuthSession, Role, User
from telemed.db import begin_write
from telemed.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PasswordChangeRequired,
    TooLarge,
    Unauthenticated,
)
from telemed.settings import Settings

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Access(StrEnum):
    PUBLIC = "public"  # anyone; credentials are not looked at
    USER = "user"  # a signed-in user (optionally of given roles)


class RequestModel(BaseModel):
    """Base of every request body and query: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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


@dataclass
class Call:
    """One API call: the request, its transaction, its time and its caller."""

    request: web.Request
    session: AsyncSession
    now: datetime
    settings: Settings
    caller: User | None
    auth_session: AuthSession | None
    # Changes to the response the handler asks for (cookies), applied after the commit.
    response_hooks: list[Callable[[web.StreamResponse], None]] = field(default_factory=list)
    # Work that must happen only once the transaction is committed (removing files,
    # sending events), and clean-up for when it is rolled back (files written early).
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    on_rollback: list[Callable[[], None]] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def user(self) -> User:
        if self.caller is None:
            raise Unauthenticated("Sign in first")
        return self.caller

    @property
    def address(self) -> str | None:
        return self.request.remote

    def path_id(self, name: str = "id") -> uuid.UUID:
        """A UUID path parameter; one that is not a UUID names nothing, hence 404."""
        try:
            return uuid.UUID(self.request.match_info[name])
        except ValueError:
            raise NotFound("Not found") from None


Handler = Callable[..., Awaitable[Any]]
HandlerT = TypeVar("HandlerT", bound=Handler)


@dataclass(frozen=True)
class RawBody:
    """A request body that the handler reads itself (multipart uploads), for OpenAPI."""

    content_type: str
    schema: dict[str, Any]


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
    body_model: type[BaseModel] | None
    query_model: type[BaseModel] | None
    response_model: type[BaseModel] | None
    raw_body: RawBody | None
    raw_response: RawResponse | None
    errors: tuple[int, ...]
    writes: bool

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


@dataclass
class Routes:
    """A declarative table of endpoints of one domain (like aiohttp's RouteTableDef)."""

    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)

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
        raw_body: RawBody | None = None,
        raw_response: RawResponse | None = None,
        errors: tuple[int, ...] = (),
        writes: bool | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """``writes``: the call changes the database (default: unless it is a GET). A GET
        that writes (an audited read) says so, so that its transaction begins as a write.
        ``allow_join_token``: a join token (a session scoped to one consultation's room)
        may make the call; every other endpoint refuses it."""

        def decorate(handler: HandlerT) -> HandlerT:
            hints = typing.get_type_hints(handler)
            returned = hints.get("return")
            response_model = (
                returned if inspect.isclass(returned) and issubclass(returned, BaseModel) else None
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
                    body_model=hints.get("body"),
                    query_model=hints.get("query"),
                    response_model=response_model,
                    raw_body=raw_body,
                    raw_response=raw_response,
                    errors=errors,
                    writes=method != "GET" if writes is None else writes,
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


def validation_details(exc: pydantic.ValidationError) -> dict[str, Any]:
    """Field errors in a client-friendly list, without echoing the submitted values."""
    fields = []
    for err in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in err["loc"])
        fields.append({"field": location, "message": err["msg"], "type": err["type"]})
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
        from telemed.auth import ResolvedCaller, check_origin, resolve_caller

        async def handle(request: web.Request) -> web.StreamResponse:
            app = request.app
            settings = app[keys.SETTINGS]
            now = app[keys.CLOCK].now()
            kwargs: dict[str, Any] = {}
            call: Call | None = None
            async with app[keys.SESSION_FACTORY]() as session:
                try:
                    if endpoint.writes:
                        await begin_write(session)
                    if endpoint.access is Access.PUBLIC:
                        # Public endpoints ignore credentials: a stale cookie must not
                        # stand in the way of signing in again.
                        resolved = ResolvedCaller(None, None, via_cookie=False)
                    else:
                        resolved = await resolve_caller(request, session, now=now)
                    check_origin(request, settings, via_cookie=resolved.via_cookie)
                    caller = resolved.user
                    if endpoint.access is Access.USER:
                        if caller is None:
                            raise Unauthenticated("Sign in first")
                        check_join_token(resolved.auth_session, endpoint)
                        if caller.must_change_password and not endpoint.allow_pending_password:
                            raise PasswordChangeRequired(
                                "Change the temporary password before going on"
                            )
                        if (
                            endpoint.roles is not None
                            and caller.role not in endpoint.roles
                            and caller.role is not Role.ADMIN
                        ):
                            raise Forbidden("This action is not allowed for your role")
                    # Input is looked at only once the caller may make the call.
                    if endpoint.query_model is not None:
                        kwargs["query"] = parse_model(endpoint.query_model, _query_values(request))
                    if endpoint.body_model is not None:
                        kwargs["body"] = parse_model(endpoint.body_model, await _read_json(request))
                    call = Call(
                        request=request,
                        session=session,
                        now=now,
                        settings=settings,
                        caller=caller,
                        auth_session=resolved.auth_session,
                    )
                    result = await endpoint.handler(call, **kwargs)
                    await session.commit()
                except BaseException:
                    live.drop(session)
                    await session.rollback()
                    for undo in call.on_rollback if call is not None else ():
                        undo()
                    raise
            await live.publish(app.get(keys.EMIT), live.take(session))
            for done in call.after_commit:
                try:
                    done()
                except Exception:
                    # The change is committed: tell the client so, and log the clean-up.
                    logger.exception("after-commit step of %s failed", endpoint.operation_id)
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

        return handle

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
            list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}"
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
            if endpoint.access is Access.USER:
                error_statuses.update({401, 403})
            if "{" in endpoint.path:
                error_statuses.add(404)
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
    409: "Conflict with the current state",
    413: "Too large",
    415: "Unsupported type",
    429: "Too many attempts",
}


def _path_schema(name: str) -> dict[str, Any]:
    if name == "id" or name.endswith("_id"):
        return {"type": "string", "format": "uuid"}
    return {"type": "string"}


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidInput(
            "Some fields are missing or invalid", details=validation_details(exc)
        ) from None


def _query_values(request: web.Request) -> dict[str, str | list[str]]:
    """The query string as a dict; a repeated key (``?state=a&state=b``) gives a list."""
    values: dict[str, str | list[str]] = {}
    for key in request.query:
        found = request.query.getall(key)
        values[key] = found[0] if len(found) == 1 else list(found)
    return values


async def _read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise InvalidInput("Send the body as application/json")
    try:
        return await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge("The request body is too large") from None
    except ValueError:
        raise InvalidInput("The body is not valid JSON") from None
