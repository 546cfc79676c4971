"""iCalendar (RFC 5545) invitations for consultations: a pure wire-format module, no I/O.

One VCALENDAR with one VEVENT. An update of the same consultation keeps the ``uid`` and
raises ``sequence``; a cancellation is ``METHOD:CANCEL`` with ``STATUS:CANCELLED`` (RFC
5546), so calendar programs move or remove the event they already have.
"""

from __future__ import annotations

from datetime import UTC, datetime

from telemed import __version__

PRODID = f"-//Telemed//Telemed {__version__}//RU"
CONTENT_TYPE_REQUEST = "text/calendar; method=REQUEST; charset=UTF-8"
CONTENT_TYPE_CANCEL = "text/calendar; method=CANCEL; charset=UTF-8"
MAX_LINE_OCTETS = 75


def content_type(*, cancelled: bool) -> str:
    """The MIME type of an invitation, with its iTIP method (mail programs look at it)."""
    return CONTENT_TYPE_CANCEL if cancelled else CONTENT_TYPE_REQUEST


def escape_text(value: str) -> str:
    """A TEXT value (RFC 5545 §3.3.11): backslash, ``;``, ``,`` and line breaks escaped."""
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value.replace("\n", "\\n")


def format_utc(moment: datetime) -> str:
    """A DATE-TIME in UTC form: ``20261203T113000Z``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime in a calendar event")
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def fold(line: str) -> bytes:
    """One content line in UTF-8, folded so that no line passes 75 octets (§3.1).

    A continuation starts with one space, which counts towards its 75. Folds fall between
    characters, never inside a multi-byte UTF-8 sequence. Ends with CRLF.
    """
    out = bytearray()
    limit = MAX_LINE_OCTETS
    size = 0
    for char in line:
        encoded = char.encode("utf-8")
        if size + len(encoded) > limit:
            out += b"\r\n "
            size = 1
        out += encoded
        size += len(encoded)
    out += b"\r\n"
    return bytes(out)


def _uri(value: str) -> str:
    # A URI is written as is (no TEXT escaping); a line break would end the property.
    if any(ch in value for ch in "\r\n"):
        raise ValueError("line break in a URI")
    return value


def consultation_event(
    *,
    uid: str,
    starts_at: datetime,
    ends_at: datetime,
    summary: str,
    description: str,
    url: str | None,
    sequence: int,
    cancelled: bool = False,
    now: datetime,
    organizer: str | None = None,
) -> bytes:
    """The ``.ics`` of a consultation, as bytes ready to attach or serve.

    ``uid`` is stable for a consultation (its id and our domain); ``sequence`` counts its
    revisions (a new time, a cancellation). ``organizer`` is an e-mail address for the
    ORGANIZER property that RFC 5546 expects in invitations. Raises ``ValueError`` for
    naive datetimes, an end before the start, or a negative sequence.
    """
    if ends_at <= starts_at:
        raise ValueError("a calendar event must end after it starts")
    if sequence < 0:
        raise ValueError("sequence must not be negative")
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{escape_text(PRODID)}",
        "CALSCALE:GREGORIAN",
        f"METHOD:{'CANCEL' if cancelled else 'REQUEST'}",
        "BEGIN:VEVENT",
        f"UID:{escape_text(uid)}",
        f"DTSTAMP:{format_utc(now)}",
        f"DTSTART:{format_utc(starts_at)}",
        f"DTEND:{format_utc(ends_at)}",
        f"SEQUENCE:{sequence}",
        f"STATUS:{'CANCELLED' if cancelled else 'CONFIRMED'}",
        f"SUMMARY:{escape_text(summary)}",
        f"DESCRIPTION:{escape_text(description)}",
    ]
    if url:
        lines.append(f"URL:{_uri(url)}")
    if organizer:
        lines.append(f"ORGANIZER:mailto:{_uri(organizer)}")
    lines += ["TRANSP:OPAQUE", "END:VEVENT", "END:VCALENDAR"]
    return b"".join(fold(line) for line in lines)
