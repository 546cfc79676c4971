"""FHIR search parameters: which each resource type takes, and reading their values.

Pure: no I/O. ``SEARCH_PARAMS`` is the one table of what is supported; the searches
check a query against it (anything else is ``InvalidInput``, 400) and the
``CapabilityStatement`` is built from it, so the two cannot disagree.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from telemed.errors import InvalidInput
from telemed.fhir.resources import URI_IDENTIFIER, SearchParam

DEFAULT_COUNT = 20
MAX_COUNT = 100
MAX_OFFSET = 100_000

_ID = SearchParam("_id", "token", "The resource's id; several, comma-separated, match any")
_PATIENT = SearchParam("patient", "reference", "The patient: Patient/<id> or <id>")

SEARCH_PARAMS: Mapping[str, tuple[SearchParam, ...]] = {
    "Patient": (
        _ID,
        SearchParam(
            "identifier",
            "token",
            f"{URI_IDENTIFIER}|urn:uuid:<id>, or urn:uuid:<id> (the patient's id as a URI)",
        ),
        SearchParam("phone", "token", "The mobile phone number in E.164 (+7...)"),
    ),
    "Practitioner": (
        _ID,
        SearchParam("name", "string", "The start of any word of the name, ignoring case"),
        SearchParam("organization", "reference", "The doctor's centre: Organization/<id>"),
    ),
    "Organization": (
        _ID,
        SearchParam("name", "string", "The start of any word of the name, ignoring case"),
    ),
    "Appointment": (
        _ID,
        _PATIENT,
        SearchParam(
            "date",
            "date",
            "The start time, with prefixes eq, ne, gt, lt, ge, le; repeat for a range. "
            "A date without a time is a day in the caller's time zone",
        ),
        SearchParam(
            "status",
            "token",
            "proposed, booked, arrived, fulfilled, cancelled, noshow; comma-separated match any",
        ),
    ),
    "ServiceRequest": (_ID, _PATIENT),
    "DocumentReference": (_ID, _PATIENT),
    "Composition": (_ID, _PATIENT),
}

RESULT_PARAMS = {
    "_count": f"Page size, 0 to {MAX_COUNT} (default {DEFAULT_COUNT}); 0 answers the total only",
    "_offset": "Where the page starts (the next link carries it)",
    "_total": "accurate (the total is always counted)",
    "_format": "json or application/fhir+json (the only format)",
}
"""Parameters of the result, not of the match: every search takes them."""

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")

APPOINTMENT_STATUSES = frozenset(
    {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    }
)
"""Every ``Appointment.status`` code of R4: a search may name any (some match nothing)."""


@dataclass(frozen=True)
class DateRange:
    """One ``date`` parameter: the prefix and the value's range ``[start, end)``."""

    prefix: str
    start: datetime
    end: datetime

    def condition(self, instant: Any) -> sa.ColumnElement[bool]:
        """The parameter as a condition on an instant column (NULL matches nothing)."""
        column: sa.ColumnElement[datetime] = instant
        if self.prefix == "eq":
            return sa.and_(column >= self.start, column < self.end)
        if self.prefix == "ne":
            return sa.or_(column < self.start, column >= self.end)
        if self.prefix == "gt":
            return column >= self.end
        if self.prefix == "lt":
            return column < self.start
        if self.prefix == "ge":
            return column >= self.start
        assert self.prefix == "le"
        return column < self.end


@dataclass(frozen=True)
class Query:
    """A search, read and checked. ``ids`` None: any; an empty list: nothing matches
    (an id that is not one of ours names nothing)."""

    resource_type: str
    count: int = DEFAULT_COUNT
    offset: int = 0
    ids: list[uuid.UUID] | None = None
    patient: list[uuid.UUID] | None = None
    organization: list[uuid.UUID] | None = None
    phone: str | None = None
    name: str | None = None
    statuses: list[str] | None = None
    dates: list[DateRange] = field(default_factory=list)
    # The query as given, for the links of the result (minus paging).
    given: list[tuple[str, str]] = field(default_factory=list)


def _uuids(values: str) -> list[uuid.UUID]:
    found = []
    for value in values.split(","):
        try:
            found.append(uuid.UUID(value.strip()))
        except ValueError:
            continue  # names nothing
    return found


def _references(value: str, kind: str) -> list[uuid.UUID]:
    """``Patient/<id>``, ``<id>``, or an absolute URL ending so; comma-separated."""
    found = []
    for item in value.split(","):
        text = item.strip()
        prefix, _, last = text.rpartition("/")
        if prefix and not (prefix == kind or prefix.endswith("/" + kind)):
            continue  # another resource type: names nothing here
        found.extend(_uuids(last))
    return found


def _identifier(value: str) -> list[uuid.UUID]:
    system, bar, code = value.partition("|")
    if not bar:
        system, code = "", value
    if system not in ("", URI_IDENTIFIER) or not code.startswith("urn:uuid:"):
        return []
    return _uuids(code.removeprefix("urn:uuid:"))


def _integer(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value) or not low <= int(value) <= high:
        raise InvalidInput(
            f"{name} takes a whole number from {low} to {high}",
            details={"parameter": name},
        )
    return int(value)


_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})"
)


def date_range(value: str, *, zone: ZoneInfo) -> DateRange:
    """A ``date`` parameter: an optional prefix, then a year, a month, a day (in
    ``zone``) or a date and time with an offset (to the second). Raises ``InvalidInput``."""
    prefix = value[:2] if value[:2].isalpha() else "eq"
    text = value[2:] if value[:2].isalpha() else value
    if prefix not in PREFIXES:
        raise InvalidInput(
            "date takes the prefixes " + ", ".join(PREFIXES), details={"parameter": "date"}
        )
    try:
        matched = _DATE.fullmatch(text)
        if matched is not None:
            year, month, day = matched.groups()
            first = date(int(year), int(month or 1), int(day or 1))
            if day is not None:
                after = first + timedelta(days=1)
            elif month is not None:
                after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            else:
                after = date(first.year + 1, 1, 1)
            start = datetime(first.year, first.month, first.day, tzinfo=zone)
            end = datetime(after.year, after.month, after.day, tzinfo=zone)
            return DateRange(prefix, start, end)
        if _DATETIME.fullmatch(text):
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            precision = timedelta(seconds=1) if text[16:17] == ":" else timedelta(minutes=1)
            return DateRange(prefix, moment, moment + precision)
    except ValueError:
        pass  # a month 13, a day 31 of a short month, a year 0: below
    raise InvalidInput(
        "date takes a date (2026-05-04, 2026-05, 2026) or a date and time with an offset "
        "(2026-05-04T10:30:00+03:00), with an optional prefix (ge2026-05-04)",
        details={"parameter": "date"},
    )


def read_query(resource_type: str, items: Sequence[tuple[str, str]], *, zone: ZoneInfo) -> Query:
    """A search's parameters checked against ``SEARCH_PARAMS``: an unknown parameter (or
    modifier), a repeated one (but ``date``), or a malformed value is ``InvalidInput``."""
    allowed = {param.name for param in SEARCH_PARAMS[resource_type]}
    seen: set[str] = set()
    values: dict[str, object] = {}
    dates: list[DateRange] = []
    given: list[tuple[str, str]] = []
    count, offset = DEFAULT_COUNT, 0
    for name, value in items:
        if name not in allowed and name not in RESULT_PARAMS:
            raise InvalidInput(
                f"{resource_type} cannot be searched by {name!r}",
                details={
                    "parameter": name,
                    "supported": sorted(allowed | set(RESULT_PARAMS)),
                },
            )
        if name in seen and name != "date":
            raise InvalidInput(f"Give {name} once", details={"parameter": name})
        seen.add(name)
        if name == "_count":
            count = _integer(name, value, 0, MAX_COUNT)
            continue
        if name == "_offset":
            offset = _integer(name, value, 0, MAX_OFFSET)
            continue
        if name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise InvalidInput(
                    "_total takes none, estimate or accurate", details={"parameter": name}
                )
        elif name == "_format":
            if value not in ("json", "application/json", "application/fhir+json"):
                raise InvalidInput("Only JSON is served", details={"parameter": name})
        elif name == "_id":
            values["ids"] = _uuids(value)
        elif name == "patient":
            values["patient"] = _references(value, "Patient")
        elif name == "organization":
            values["organization"] = _references(value, "Organization")
        elif name == "identifier":
            values["ids"] = _identifier(value)
        elif name == "phone":
            values["phone"] = value.strip()
        elif name == "name":
            values["name"] = value.strip().lower()
        elif name == "status":
            statuses = [status.strip() for status in value.split(",")]
            unknown = [status for status in statuses if status not in APPOINTMENT_STATUSES]
            if unknown:
                raise InvalidInput(
                    "status takes Appointment statuses: " + ", ".join(sorted(APPOINTMENT_STATUSES)),
                    details={"parameter": "status"},
                )
            values["statuses"] = statuses
        elif name == "date":
            dates.append(date_range(value, zone=zone))
        given.append((name, value))
    if "_id" in seen and "identifier" in seen:
        raise InvalidInput("Search by _id or by identifier, not both", details={"parameter": "_id"})
    return Query(
        resource_type=resource_type,
        count=count,
        offset=offset,
        dates=dates,
        given=given,
        **values,  # type: ignore[arg-type]  # each key is a field of Query, set above
    )


def words_start_with(text: str, wanted: str) -> bool:
    """FHIR's ``string`` match, by word: any word of ``text`` starts with ``wanted``
    (ignoring case), or the whole text does."""
    lowered = text.lower()
    return lowered.startswith(wanted) or any(word.startswith(wanted) for word in lowered.split())
