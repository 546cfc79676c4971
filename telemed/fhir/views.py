"""HTTP routes of the FHIR R4 read interface, under ``/fhir/R4``.

Each route is an endpoint of the API layer (``telemed.api.Routes``): the caller is
identified as on ``/api/v1`` (bearer token or session cookie; a join token, a pending
temporary password are refused; a system client's token, refused on ``/api/v1``, is
taken here), counted against the ``fhir.user`` rate limit, and the
work runs in one transaction. Two things differ, deliberately, because FHIR clients
expect them: answers are ``application/fhir+json``, and errors are ``OperationOutcome``
resources (with our error code kept in them) instead of our error envelope. The
endpoints are not in the OpenAPI document of ``/api/v1``; the ``CapabilityStatement``
at ``/fhir/R4/metadata`` describes them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from telemed import __version__, keys
from telemed.api import Call, Endpoint, Routes
from telemed.errors import ErrorCode, MethodNotAllowed, NotFound, TelemedError
from telemed.fhir import resources, service
from telemed.fhir.resources import CONTENT_TYPE, Resource
from telemed.fhir.search import SEARCH_PARAMS, Query, read_query
from telemed.http import client_address

logger = logging.getLogger(__name__)

PREFIX = "/fhir/R4"
LIMIT = "fhir.user"

routes = Routes(tag="fhir", allow_system=True)


# --- Answers -------------------------------------------------------------------------


def fhir_response(resource: Resource, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(resource),
        status=status,
        content_type=CONTENT_TYPE,
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def outcome_response(error: TelemedError) -> web.Response:
    """An error as ``OperationOutcome``: the one deliberate exception to our error
    envelope (FHIR clients read nothing else), with the same status and code."""
    response = fhir_response(
        resources.operation_outcome(error.http_status, error.code, error.message, error.details),
        status=error.http_status,
    )
    response.headers.update(error.headers)
    if error.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="telemed"'
    return response


def base_url(request: web.Request) -> str:
    """The FHIR base as clients reach it: ``TELEMED_PUBLIC_URL`` if set (behind a
    proxy), else the request's own scheme and host."""
    public = request.app[keys.SETTINGS].public_url
    origin = public.rstrip("/") if public else f"{request.scheme}://{request.host}"
    return origin + PREFIX


def _reader(call: Call) -> service.Reader:
    return service.Reader(
        user=call.user,
        now=call.now,
        address=call.address,
        doctor_access_days=call.settings.doctor_document_access_days,
    )


def _query(call: Call, resource_type: str) -> Query:
    return read_query(
        resource_type,
        list(call.request.query.items()),
        zone=ZoneInfo(call.user.time_zone),
    )


def _bundle(call: Call, query: Query, found: list[Resource], total: int) -> Resource:
    base = base_url(call.request)

    def link(offset: int) -> str:
        params = [*query.given, ("_count", str(query.count)), ("_offset", str(offset))]
        return f"{base}/{query.resource_type}?{urlencode(params)}"

    after = query.offset + query.count
    has_next = query.count > 0 and after < total
    return resources.searchset(
        found,
        base=base,
        total=total,
        self_url=link(query.offset),
        next_url=link(after) if has_next else None,
        previous_url=link(max(0, query.offset - query.count))
        if query.offset > 0 and query.count > 0
        else None,
    )


# --- Patient -------------------------------------------------------------------------


@routes.get("/Patient/{id}", writes=True)
async def read_patient(call: Call) -> Resource:
    """GET /fhir/R4/Patient/{id}: a patient the caller may see."""
    user = await service.get_patient(call.session, reader=_reader(call), patient_id=call.path_id())
    return resources.patient(user, updated=user.created_at)


@routes.get("/Patient", writes=True)
async def search_patient(call: Call) -> Resource:
    """GET /fhir/R4/Patient: search patients (_id, identifier, phone)."""
    query = _query(call, "Patient")
    page = await service.search_patients(call.session, reader=_reader(call), query=query)
    found = [resources.patient(user, updated=user.created_at) for user in page.items]
    return _bundle(call, query, found, page.total)


# --- Practitioner, Organization ------------------------------------------------------


@routes.get("/Practitioner/{id}")
async def read_practitioner(call: Call) -> Resource:
    """GET /fhir/R4/Practitioner/{id}: a doctor of the directory (of the caller's centre,
    for an account bound to one)."""
    doctor, user, centre = await service.get_practitioner(
        call.session, reader=_reader(call), doctor_id=call.path_id()
    )
    return resources.practitioner(doctor, user, centre)


@routes.get("/Practitioner")
async def search_practitioner(call: Call) -> Resource:
    """GET /fhir/R4/Practitioner: search the doctors (_id, name, organization)."""
    query = _query(call, "Practitioner")
    page = await service.search_practitioners(call.session, reader=_reader(call), query=query)
    found = [resources.practitioner(*row) for row in page.items]
    return _bundle(call, query, found, page.total)


@routes.get("/Organization/{id}")
async def read_organization(call: Call) -> Resource:
    """GET /fhir/R4/Organization/{id}: a medical centre (the caller's own, for an account
    bound to one)."""
    centre = await service.get_organization(
        call.session, reader=_reader(call), centre_id=call.path_id()
    )
    return resources.organization(centre)


@routes.get("/Organization")
async def search_organization(call: Call) -> Resource:
    """GET /fhir/R4/Organization: search the medical centres (_id, name)."""
    query = _query(call, "Organization")
    page = await service.search_organizations(call.session, reader=_reader(call), query=query)
    return _bundle(call, query, [resources.organization(c) for c in page.items], page.total)


# --- Appointment, ServiceRequest -----------------------------------------------------


@routes.get("/Appointment/{id}", writes=True)
async def read_appointment(call: Call) -> Resource:
    """GET /fhir/R4/Appointment/{id}: a consultation the caller takes part in."""
    consultation, names = await service.get_consultation_as(
        call.session, reader=_reader(call), consultation_id=call.path_id(), referral=False
    )
    return resources.appointment(consultation, names)


@routes.get("/Appointment", writes=True)
async def search_appointment(call: Call) -> Resource:
    """GET /fhir/R4/Appointment: search consultations (_id, patient, date, status)."""
    query = _query(call, "Appointment")
    page, names = await service.search_consultations(
        call.session, reader=_reader(call), query=query, referral=False
    )
    found = [resources.appointment(c, names) for c in page.items]
    return _bundle(call, query, found, page.total)


@routes.get("/ServiceRequest/{id}", writes=True)
async def read_service_request(call: Call) -> Resource:
    """GET /fhir/R4/ServiceRequest/{id}: a referral the caller may see."""
    consultation, names = await service.get_consultation_as(
        call.session, reader=_reader(call), consultation_id=call.path_id(), referral=True
    )
    return resources.service_request(consultation, names)


@routes.get("/ServiceRequest", writes=True)
async def search_service_request(call: Call) -> Resource:
    """GET /fhir/R4/ServiceRequest: search referrals (_id, patient)."""
    query = _query(call, "ServiceRequest")
    page, names = await service.search_consultations(
        call.session, reader=_reader(call), query=query, referral=True
    )
    found = [resources.service_request(c, names) for c in page.items]
    return _bundle(call, query, found, page.total)


# --- DocumentReference ----------------------------------------------------------------


def _content_url(call: Call, document_id: object) -> str:
    origin = base_url(call.request).removesuffix(PREFIX)
    return f"{origin}/api/v1/documents/{document_id}/content"


@routes.get("/DocumentReference/{id}", writes=True)
async def read_document_reference(call: Call) -> Resource:
    """GET /fhir/R4/DocumentReference/{id}: a document the caller may read."""
    document = await service.get_document(
        call.session, reader=_reader(call), document_id=call.path_id()
    )
    roles = await service.owner_roles(call.session, [document])
    return resources.document_reference(
        document, owner_role=roles[document.owner_id], content_url=_content_url(call, document.id)
    )


@routes.get("/DocumentReference", writes=True)
async def search_document_reference(call: Call) -> Resource:
    """GET /fhir/R4/DocumentReference: search documents (_id, patient)."""
    query = _query(call, "DocumentReference")
    page = await service.search_documents(call.session, reader=_reader(call), query=query)
    roles = await service.owner_roles(call.session, page.items)
    found = [
        resources.document_reference(
            document,
            owner_role=roles[document.owner_id],
            content_url=_content_url(call, document.id),
        )
        for document in page.items
    ]
    return _bundle(call, query, found, page.total)


# --- Composition ----------------------------------------------------------------------


def _composition(item: service.ConclusionVersion, names: resources.Names) -> Resource:
    return resources.composition(
        item.conclusion,
        item.consultation,
        names,
        latest_version=item.latest_version,
        previous_id=item.previous_id,
    )


@routes.get("/Composition/{id}", writes=True)
async def read_composition(call: Call) -> Resource:
    """GET /fhir/R4/Composition/{id}: one version of a doctor's conclusion."""
    item, names = await service.get_conclusion(
        call.session, reader=_reader(call), conclusion_id=call.path_id()
    )
    return _composition(item, names)


@routes.get("/Composition", writes=True)
async def search_composition(call: Call) -> Resource:
    """GET /fhir/R4/Composition: search conclusions (_id, patient)."""
    query = _query(call, "Composition")
    page, names = await service.search_conclusions(call.session, reader=_reader(call), query=query)
    return _bundle(call, query, [_composition(item, names) for item in page.items], page.total)


# --- Wiring -----------------------------------------------------------------------------


async def _answer(endpoint: Endpoint, request: web.Request) -> web.Response:
    """One FHIR call: who calls (a short read), their rate limit, then the work in one
    transaction (a writing one where the read is audited)."""
    app = request.app
    settings = app[keys.SETTINGS]
    call = Call(
        request=request,
        endpoint=endpoint,
        now=app[keys.CLOCK].now(),
        settings=settings,
        address=client_address(request, settings.trusted_proxies),
    )
    async with app[keys.SESSION_FACTORY]() as session:
        await call.identify(session)
    await app[keys.LIMITER].hit(LIMIT, f"user:{call.user.id}")
    async with call.transaction(write=endpoint.writes):
        resource: Resource = await endpoint.handler(call)
    return fhir_response(resource)


def _guarded(
    work: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Every failure as ``OperationOutcome``; only what is not the client's is logged
    (with the route template, never the path or query: they may name patients)."""

    async def handle(request: web.Request) -> web.Response:
        try:
            return await work(request)
        except TelemedError as exc:
            return outcome_response(exc)
        except Exception:
            route = request.match_info.route.resource
            logger.exception(
                "unhandled error in %s %s", request.method, route.canonical if route else "?"
            )
            return fhir_response(
                resources.operation_outcome(
                    500, ErrorCode.INTERNAL, "Something went wrong on our side"
                ),
                status=500,
            )

    return handle


def _mounted(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def work(request: web.Request) -> web.Response:
        return await _answer(endpoint, request)

    return _guarded(work)


async def _metadata(request: web.Request) -> web.Response:
    """GET /fhir/R4/metadata: the CapabilityStatement (public, as FHIR clients expect)."""
    return fhir_response(
        resources.capability_statement(
            base=base_url(request),
            software_version=__version__,
            published=request.app[keys.CLOCK].now(),
            search_params=SEARCH_PARAMS,
        )
    )


async def _elsewhere(request: web.Request) -> web.Response:
    """Anything else under /fhir: a read-only server (405), and only these types (404)."""
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed("This FHIR interface is read-only", headers={"Allow": "GET"})
    raise NotFound(
        "Not a resource type or interaction of this server (see /fhir/R4/metadata)",
        details={"supported": sorted(SEARCH_PARAMS)},
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/metadata", _guarded(_metadata))
    for endpoint in routes.endpoints:
        app.router.add_get(PREFIX + endpoint.path, _mounted(endpoint))
    app.router.add_route("*", "/fhir/{tail:.*}", _guarded(_elsewhere))
