"""Our rows as FHIR R4 resources (JSON dicts): pure functions, no I/O.

Each function takes what one resource needs, already read and already authorised, and
returns the resource as ``application/fhir+json`` has it. References between resources
are relative (``Patient/<id>``); ids are our own UUIDs, so a consultation is both
``Appointment/<id>`` and, for a referral, ``ServiceRequest/<id>``.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from telemed.accounts.models import Role, User
from telemed.documents.models import Document, DocumentKind
from telemed.scheduling.models import (
    Centre,
    Conclusion,
    Consultation,
    Doctor,
    DutyTopic,
    Route,
    State,
)

FHIR_VERSION = "4.0.1"
CONTENT_TYPE = "application/fhir+json"

Resource = dict[str, Any]

# Code systems. HL7's where one fits; our own, named by URN, where the code is ours.
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
URI_IDENTIFIER = "urn:ietf:rfc:3986"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
ROUTE_SYSTEM = "urn:telemed:consultation-route"
STATE_EXTENSION = "urn:telemed:fhir:consultation-state"
DOCUMENT_KIND_SYSTEM = "urn:telemed:document-kind"
ERROR_SYSTEM = "urn:telemed:error-code"
XHTML = "http://www.w3.org/1999/xhtml"

APPOINTMENT_STATUS: Mapping[State, str] = {
    State.REQUESTED: "proposed",
    State.SCHEDULED: "booked",
    State.IN_PROGRESS: "arrived",
    State.COMPLETED: "fulfilled",
    State.CONCLUDED: "fulfilled",
    State.CANCELLED: "cancelled",
    State.DECLINED: "cancelled",
    State.NO_SHOW: "noshow",
}
"""A consultation's state as ``Appointment.status`` (the table of the design)."""

SERVICE_REQUEST_STATUS: Mapping[State, str] = {
    State.REQUESTED: "active",
    State.SCHEDULED: "active",
    State.IN_PROGRESS: "active",
    State.COMPLETED: "completed",
    State.CONCLUDED: "completed",
    State.CANCELLED: "revoked",
    State.DECLINED: "revoked",
    State.NO_SHOW: "revoked",
}
"""A referral's state as ``ServiceRequest.status``: open while it may still lead to a
consultation, completed once the consultation took place, revoked when it never will."""


def states_with_status(status: str, mapping: Mapping[State, str]) -> list[State]:
    """Our states that a FHIR status stands for (``fulfilled``: completed, concluded)."""
    return [state for state, fhir_status in mapping.items() if fhir_status == status]


ROUTE_NAMES = {
    Route.INITIATIVE: "Request to a medical centre",
    Route.DUTY: "Duty doctor",
    Route.REFERRAL: "Referral by the attending doctor",
}

TOPIC_NAMES = {
    DutyTopic.CARDIOVASCULAR: "Cardiovascular diseases",
    DutyTopic.GYNAECOLOGICAL: "Gynaecological diseases",
    DutyTopic.HEALTHY_LIFESTYLE: "Healthy lifestyle",
    DutyTopic.OTHER: "Other",
}

DOCUMENT_KIND_NAMES = {
    DocumentKind.DISCHARGE_SUMMARY: "Discharge summary",
    DocumentKind.DOCTOR_CONCLUSION: "Doctor's conclusion",
    DocumentKind.ULTRASOUND: "Ultrasound",
    DocumentKind.MRI: "MRI",
    DocumentKind.CT: "CT",
    DocumentKind.LAB_RESULTS: "Laboratory results",
    DocumentKind.OTHER: "Other document",
}

# LOINC document types, where one says the same as our kind.
DOCUMENT_KIND_LOINC = {
    DocumentKind.DISCHARGE_SUMMARY: ("18842-5", "Discharge summary"),
    DocumentKind.DOCTOR_CONCLUSION: ("11488-4", "Consult note"),
}


def instant(moment: datetime) -> str:
    """A FHIR ``instant``: UTC, with ``Z``."""
    if moment.tzinfo is None:
        raise ValueError("an instant needs a time zone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def reference(kind: str, id_: uuid.UUID, display: str | None = None) -> dict[str, str]:
    ref = {"reference": f"{kind}/{id_}"}
    if display:
        ref["display"] = display
    return ref


def _meta(updated: datetime, version: int | None = None) -> dict[str, str]:
    meta = {"lastUpdated": instant(updated)}
    if version is not None:
        meta["versionId"] = str(version)
    return meta


def human_name(full_name: str) -> dict[str, Any]:
    """A Russian full name («Петрова Мария Ивановна»: family name, given name,
    patronymic) as a ``HumanName``; the text is kept as written."""
    parts = full_name.split()
    name: dict[str, Any] = {"use": "official", "text": full_name}
    if parts:
        name["family"] = parts[0]
    if len(parts) > 1:
        name["given"] = parts[1:]
    return name


def narrative(text: str) -> dict[str, str]:
    """Plain text as a generated XHTML narrative (escaped; line breaks kept)."""
    lines = "<br/>".join(html.escape(line) for line in text.splitlines() or [""])
    return {"status": "generated", "div": f'<div xmlns="{XHTML}">{lines}</div>'}


def patient(user: User, *, updated: datetime) -> Resource:
    """A patient's account as ``Patient``."""
    telecom = [{"system": "phone", "value": user.phone, "use": "mobile"}]
    if user.email:
        telecom.append({"system": "email", "value": user.email})
    resource: Resource = {
        "resourceType": "Patient",
        "id": str(user.id),
        "meta": _meta(updated),
        "identifier": [{"system": URI_IDENTIFIER, "value": f"urn:uuid:{user.id}"}],
        "active": user.is_active,
        "name": [human_name(user.full_name)],
        "telecom": telecom,
        "communication": [
            {
                "language": {
                    "coding": [{"system": "urn:ietf:bcp:47", "code": user.locale.value}],
                },
                "preferred": True,
            }
        ],
    }
    if user.birth_date is not None:
        resource["birthDate"] = user.birth_date.isoformat()
    return resource


def practitioner(doctor: Doctor, user: User, centre: Centre) -> Resource:
    """A doctor's profile as ``Practitioner``: the name and the specialty (as a
    qualification issued at the doctor's centre). No phone: it is the doctor's login."""
    return {
        "resourceType": "Practitioner",
        "id": str(doctor.id),
        "meta": _meta(doctor.created_at),
        "identifier": [{"system": URI_IDENTIFIER, "value": f"urn:uuid:{doctor.id}"}],
        "active": doctor.archived_at is None and user.is_active,
        "name": [human_name(user.full_name)],
        "qualification": [
            {
                "code": {"text": doctor.specialty},
                "issuer": reference("Organization", centre.id, centre.name),
            }
        ],
    }


def organization(centre: Centre) -> Resource:
    """A medical centre as ``Organization`` (its profiles as its types)."""
    resource: Resource = {
        "resourceType": "Organization",
        "id": str(centre.id),
        "meta": _meta(centre.created_at),
        "identifier": [{"system": URI_IDENTIFIER, "value": f"urn:uuid:{centre.id}"}],
        "active": centre.archived_at is None,
        "type": [
            {
                "coding": [
                    {
                        "system": ORGANIZATION_TYPE,
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            },
            *({"text": profile} for profile in centre.profiles),
        ],
        "name": centre.name,
        "address": [{"state": centre.region}],
    }
    return resource


@dataclass(frozen=True)
class Names:
    """Display names of what a consultation refers to, by id (empty where unknown)."""

    people: Mapping[uuid.UUID, str]  # user id → full name
    centres: Mapping[uuid.UUID, str]  # centre id → name
    doctor_users: Mapping[uuid.UUID, uuid.UUID]  # doctor profile id → its user id

    def doctor(self, doctor_id: uuid.UUID | None) -> str | None:
        if doctor_id is None or doctor_id not in self.doctor_users:
            return None
        return self.people.get(self.doctor_users[doctor_id])


def _reason(consultation: Consultation) -> list[dict[str, Any]]:
    """What the consultation is about: the diagnosis (with its ICD-10 code) or, for a
    duty consultation, the topic."""
    if consultation.diagnosis:
        concept: dict[str, Any] = {"text": consultation.diagnosis}
        if consultation.icd10:
            concept["coding"] = [{"system": ICD10, "code": consultation.icd10}]
        return [concept]
    if consultation.topic is not None:
        return [{"text": TOPIC_NAMES[consultation.topic]}]
    return []


def appointment(consultation: Consultation, names: Names) -> Resource:
    """A consultation, whichever route it came by, as ``Appointment``.

    ``status`` follows ``APPOINTMENT_STATUS``; our exact state rides in an extension
    (``fulfilled`` alone cannot tell a concluded consultation from one awaiting its
    conclusion). A referral's appointment is ``basedOn`` its ``ServiceRequest``."""
    c = consultation
    doctor_name = names.doctor(c.doctor_id)
    participants: list[dict[str, Any]] = [
        {
            "actor": reference("Patient", c.patient_id, names.people.get(c.patient_id)),
            "required": "required",
            "status": "accepted",
        }
    ]
    if c.doctor_id is not None:
        participants.append(
            {
                "actor": reference("Practitioner", c.doctor_id, doctor_name),
                "required": "required",
                "status": "accepted",
            }
        )
    resource: Resource = {
        "resourceType": "Appointment",
        "id": str(c.id),
        "meta": _meta(c.updated_at, c.version),
        "extension": [{"url": STATE_EXTENSION, "valueCode": c.state.value}],
        "status": APPOINTMENT_STATUS[c.state],
        "serviceCategory": [
            {
                "coding": [
                    {"system": ROUTE_SYSTEM, "code": c.route.value, "display": ROUTE_NAMES[c.route]}
                ],
            }
        ],
        "created": instant(c.submitted_at),
        "participant": participants,
    }
    if c.state in (State.CANCELLED, State.DECLINED) and c.reason:
        resource["cancelationReason"] = {"text": c.reason}
    reason = _reason(c)
    if reason:
        resource["reasonCode"] = reason
    centre = names.centres.get(c.centre_id)
    if centre:
        resource["description"] = centre
    if c.starts_at is not None:
        ends = c.ends_at or c.starts_at + timedelta(minutes=c.duration_min or 0)
        resource["start"] = instant(c.starts_at)
        resource["end"] = instant(ends)
        resource["minutesDuration"] = max(1, round((ends - c.starts_at).total_seconds() / 60))
    if c.route is Route.REFERRAL:
        resource["basedOn"] = [reference("ServiceRequest", c.id)]
    return resource


def service_request(consultation: Consultation, names: Names) -> Resource:
    """A referral (a route 3 consultation) as ``ServiceRequest``: the referring doctor
    and organisation as the requester, the centre as the performer."""
    c = consultation
    requester = ", ".join(part for part in (c.referring_doctor, c.referring_organisation) if part)
    resource: Resource = {
        "resourceType": "ServiceRequest",
        "id": str(c.id),
        "meta": _meta(c.updated_at, c.version),
        "status": SERVICE_REQUEST_STATUS[c.state],
        "intent": "order",
        "category": [
            {"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}]}
        ],
        "code": {"text": "Telemedicine consultation"},
        "subject": reference("Patient", c.patient_id, names.people.get(c.patient_id)),
        "authoredOn": instant(c.submitted_at),
        "performer": [reference("Organization", c.centre_id, names.centres.get(c.centre_id))],
    }
    if requester:
        resource["requester"] = {"display": requester}
    reason = _reason(c)
    if reason:
        resource["reasonCode"] = reason
    if c.due_at is not None and c.notified_at is None and c.state is State.REQUESTED:
        resource["occurrencePeriod"] = {"end": instant(c.due_at)}
    return resource


def document_reference(document: Document, *, owner_role: Role, content_url: str) -> Resource:
    """A cabinet document as ``DocumentReference``. The content is not inlined: its URL
    is the API's own download (``GET /api/v1/documents/{id}/content``), which checks
    access and audits the read as any download does."""
    kind = document.kind
    coding = [{"system": DOCUMENT_KIND_SYSTEM, "code": kind.value}]
    if kind in DOCUMENT_KIND_LOINC:
        code, display = DOCUMENT_KIND_LOINC[kind]
        coding.insert(0, {"system": LOINC, "code": code, "display": display})
    owner_type = "Patient" if owner_role is Role.PATIENT else "Practitioner"
    return {
        "resourceType": "DocumentReference",
        "id": str(document.id),
        "meta": _meta(document.created_at),
        "identifier": [{"system": URI_IDENTIFIER, "value": f"urn:uuid:{document.id}"}],
        "status": "current",
        "type": {"coding": coding, "text": DOCUMENT_KIND_NAMES[kind]},
        "subject": {"reference": f"{owner_type}/{document.owner_id}"},
        "date": instant(document.created_at),
        "description": document.title,
        "content": [
            {
                "attachment": {
                    "contentType": document.content_type,
                    "url": content_url,
                    "size": document.size,
                    "title": document.file_name,
                    "creation": instant(document.created_at),
                }
            }
        ],
    }


def composition(
    conclusion: Conclusion,
    consultation: Consultation,
    names: Names,
    *,
    latest_version: int,
    previous_id: uuid.UUID | None,
) -> Resource:
    """One version of a doctor's conclusion as ``Composition`` (a LOINC consult note):
    the diagnosis, findings and recommendations as its sections. Version 1 is ``final``,
    an amendment ``amended`` and ``replaces`` the version before it."""
    c = conclusion
    diagnosis: dict[str, Any] = {
        "title": "Diagnosis",
        "code": {"coding": [{"system": LOINC, "code": "29548-5", "display": "Diagnosis"}]},
        "text": narrative(c.diagnosis + (f" ({c.icd10})" if c.icd10 else "")),
    }
    sections = [
        diagnosis,
        {
            "title": "Findings",
            "code": {"coding": [{"system": LOINC, "code": "59776-5", "display": "Findings"}]},
            "text": narrative(c.findings),
        },
        {
            "title": "Recommendations",
            "code": {
                "coding": [{"system": LOINC, "code": "18776-5", "display": "Plan of care note"}]
            },
            "text": narrative(c.recommendations),
        },
    ]
    if c.amendment_reason:
        sections.append(
            {"title": "Reason for the amendment", "text": narrative(c.amendment_reason)}
        )
    period: dict[str, str] = {}
    begun = consultation.started_at or consultation.starts_at
    if begun is not None:
        period["start"] = instant(begun)
    if consultation.ended_at is not None:
        period["end"] = instant(consultation.ended_at)
    event: dict[str, Any] = {"detail": [reference("Appointment", consultation.id)]}
    if period:
        event["period"] = period
    resource: Resource = {
        "resourceType": "Composition",
        "id": str(c.id),
        "meta": _meta(c.issued_at, c.version),
        "identifier": {"system": URI_IDENTIFIER, "value": f"urn:uuid:{c.id}"},
        "status": "final" if c.version == 1 else "amended",
        "type": {
            "coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}],
            "text": "Doctor's conclusion",
        },
        "subject": reference(
            "Patient", consultation.patient_id, names.people.get(consultation.patient_id)
        ),
        "date": instant(c.issued_at),
        "author": [reference("Practitioner", c.doctor_id, names.doctor(c.doctor_id))],
        "title": f"Doctor's conclusion, version {c.version}"
        + ("" if c.version == latest_version else " (superseded)"),
        "custodian": reference(
            "Organization", consultation.centre_id, names.centres.get(consultation.centre_id)
        ),
        "event": [event],
        "section": sections,
    }
    if previous_id is not None:
        resource["relatesTo"] = [
            {"code": "replaces", "targetReference": reference("Composition", previous_id)}
        ]
    return resource


def searchset(
    resources: Sequence[Resource],
    *,
    base: str,
    total: int,
    self_url: str,
    next_url: str | None,
    previous_url: str | None = None,
) -> Resource:
    """A search's answer: a ``searchset`` Bundle of one page, with the total and the
    links to this page and the next."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    if previous_url is not None:
        links.append({"relation": "previous", "url": previous_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
            for resource in resources
        ],
    }


ISSUE_TYPES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    408: "timeout",
    409: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "business-rule",
    429: "throttled",
    503: "transient",
}


def operation_outcome(
    status: int, code: str, message: str, details: Mapping[str, Any] | None = None
) -> Resource:
    """An error as FHIR clients expect it: ``OperationOutcome``, with our error code
    kept in ``details.coding`` (system ``urn:telemed:error-code``) and the message as
    the text. ``details`` (field names, never values a client sent) go to
    ``diagnostics`` as ``key=value`` pairs."""
    issue: dict[str, Any] = {
        "severity": "error" if status < 500 else "fatal",
        "code": ISSUE_TYPES.get(status, "exception"),
        "details": {"coding": [{"system": ERROR_SYSTEM, "code": code}], "text": message},
    }
    if details:
        issue["diagnostics"] = "; ".join(
            f"{key}={', '.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in details.items()
        )
    return {"resourceType": "OperationOutcome", "issue": [issue]}


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str  # FHIR search parameter type: token, reference, date, string
    documentation: str


def capability_statement(
    *,
    base: str,
    software_version: str,
    published: datetime,
    search_params: Mapping[str, Iterable[SearchParam]],
) -> Resource:
    """The server's ``CapabilityStatement``: read and search of each resource type, with
    the search parameters it takes (the same table the searches are checked against)."""
    resources = []
    for kind, params in search_params.items():
        resources.append(
            {
                "type": kind,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "versioning": "no-version",
                "readHistory": False,
                "searchParam": [
                    {"name": p.name, "type": p.type, "documentation": p.documentation}
                    for p in params
                ],
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(published),
        "publisher": "Telemed",
        "kind": "instance",
        "software": {"name": "Telemed", "version": software_version},
        "implementation": {"description": "Telemed FHIR R4 read interface", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Read-only. Authenticate as the rest of the API does, with "
                    "'Authorization: Bearer <token>'; each caller sees what the API shows them."
                ),
                "security": {
                    "service": [
                        {"text": "Bearer token of a Telemed session (POST /api/v1/auth/login)"}
                    ]
                },
                "resource": resources,
            }
        ],
    }
