"""The one client-facing error hierarchy.

Only errors whose message and details are safe to show a client derive from
``TelemedError``. Anything else is a bug: it is logged with its traceback and the client
gets ``internal`` / 500. The wire shape everywhere is
``{"error": {"code": ..., "message": ..., "details": {...}}}``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    INVALID_INPUT = "invalid_input"
    INVALID_VALUE = "invalid_value"
    WEAK_PASSWORD = "weak_password"
    INVALID_PHONE = "invalid_phone"
    INVALID_CODE = "invalid_code"
    UNAUTHENTICATED = "unauthenticated"
    INVALID_CREDENTIALS = "invalid_credentials"
    PASSWORD_CHANGE_REQUIRED = "password_change_required"
    FORBIDDEN = "forbidden"
    ORIGIN_MISMATCH = "origin_mismatch"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    PHONE_TAKEN = "phone_taken"
    EMAIL_TAKEN = "email_taken"
    CENTRE_HAS_DOCTORS = "centre_has_doctors"
    INVALID_STATE = "invalid_state"
    SLOT_TAKEN = "slot_taken"
    OVERLAP = "overlap"
    TOO_LATE = "too_late"
    REQUEST_TIMEOUT = "request_timeout"
    TOO_LARGE = "too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    UNSUPPORTED_TYPE = "unsupported_type"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    INVALID_BACKUP = "invalid_backup"
    NOT_EMPTY = "not_empty"
    BACKUP_FAILED = "backup_failed"


class Problem(StrEnum):
    """What exactly is wrong with one value: the code a client words for its user, with
    the parameters (``params``) its text needs ("at most {max} characters").

    Field errors (``details.fields`` of ``invalid_input`` and ``invalid_value``) and the
    rows of a referral import report carry one each; the web app has a text for every
    member in Russian and English (tests/test_error_codes.py)."""

    # Any field (also from the schema: see telemed.api.validation_details).
    MISSING = "missing"
    INVALID = "invalid"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NOT_ALLOWED = "not_allowed"  # a value outside the listed choices
    TOO_SHORT = "too_short"  # {min}
    TOO_LONG = "too_long"  # {max}, and {n} where the length is known
    TOO_SMALL = "too_small"  # {min}
    TOO_LARGE = "too_large"  # {max}
    BAD_FORMAT = "bad_format"
    NOT_DATE = "not_date"
    NOT_NUMBER = "not_number"
    # Dates and times.
    IN_PAST = "in_past"
    IN_FUTURE = "in_future"
    BEYOND_HORIZON = "beyond_horizon"  # {days}
    END_BEFORE_START = "end_before_start"
    RANGE_TOO_LONG = "range_too_long"
    RANGE_TOO_SHORT = "range_too_short"
    SLOT_LENGTH = "slot_length"  # {min}, {max} minutes
    DURATION = "duration"  # {min}, {max} minutes
    TWO_DIGIT_YEAR = "two_digit_year"
    NO_SUCH_DATE = "no_such_date"
    TOO_OLD = "too_old"  # {years}
    # People, contacts, codes.
    NOT_NAME = "not_name"
    BAD_PHONE = "bad_phone"
    NOT_MOBILE = "not_mobile"
    BAD_EMAIL = "bad_email"
    BAD_ICD10 = "bad_icd10"
    FIRST_CONCLUSION_AMENDED = "first_conclusion_amended"
    CODE_INVALID = "code_invalid"
    # Passwords: ``weak_password`` lists each rule the password breaks.
    PASSWORD_TOO_SHORT = "password_too_short"  # {min}
    PASSWORD_TOO_LONG = "password_too_long"  # {max}
    PASSWORD_NO_LETTER = "password_no_letter"
    PASSWORD_NO_DIGIT = "password_no_digit"
    PASSWORD_COMMON = "password_common"
    PASSWORD_PERSONAL = "password_personal"
    PASSWORD_SAME = "password_same"
    CONSENT_OUTDATED = "consent_outdated"  # the consent's text changed: read it again
    # Referral import: the file as a whole.
    FILE_EMPTY = "file_empty"
    FILE_UNREADABLE = "file_unreadable"
    FILE_NOT_TABLE = "file_not_table"
    FILE_UTF16 = "file_utf16"
    TOO_MANY_ROWS = "too_many_rows"  # {max}
    NO_HEADER = "no_header"
    MISSING_COLUMNS = "missing_columns"  # {columns}, {found}
    DUPLICATE_COLUMNS = "duplicate_columns"  # {columns}
    # Referral import: one row.
    STAFF_PHONE = "staff_phone"
    OTHER_PATIENT = "other_patient"
    NO_CENTRE = "no_centre"
    SEVERAL_CENTRES = "several_centres"  # {names}
    DUPLICATE_ROW = "duplicate_row"  # {row}
    IMPORTED_BEFORE = "imported_before"
    IMPORTED_CONCURRENTLY = "imported_concurrently"


def field_problem(field: str, problem: Problem, **params: Any) -> dict[str, Any]:
    """One entry of ``details.fields``."""
    return {"field": field, "code": str(problem), "params": params}


class TelemedError(Exception):
    """An error whose message and details are safe to send to the client."""

    code: ClassVar[ErrorCode] = ErrorCode.INVALID_INPUT
    http_status: ClassVar[int] = 400

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def to_wire(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, "details": self.details}


class InvalidInput(TelemedError):
    """The request does not follow the API's schema (or is malformed): a client's bug."""

    code, http_status = ErrorCode.INVALID_INPUT, 400


class InvalidValue(TelemedError):
    """A request the schema allows, with a value that a rule refuses (a time in the
    past, a slot range longer than a day): the user's to correct. ``details.field``
    names the field, ``details.fields`` says what is wrong as a ``Problem`` with its
    parameters (more than one for a password that breaks several rules)."""

    code, http_status = ErrorCode.INVALID_VALUE, 422

    def __init__(
        self,
        message: str,
        *,
        problem: Problem,
        field: str | None = None,
        params: dict[str, Any] | None = None,
        problems: list[tuple[Problem, dict[str, Any]]] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        found = problems or [(problem, params or {})]
        entries = [field_problem(field or "", kind, **values) for kind, values in found]
        super().__init__(
            message,
            details={
                **({"field": field} if field else {}),
                **(details or {}),
                "fields": entries,
            },
        )
        self.problem = problem


class WeakPassword(InvalidValue):
    code, http_status = ErrorCode.WEAK_PASSWORD, 422


class InvalidPhone(InvalidValue):
    code, http_status = ErrorCode.INVALID_PHONE, 422


class InvalidCode(InvalidValue):
    """A password reset code that is wrong, expired, used, or for no account: one answer
    for all, so that it tells nothing about which phones have accounts."""

    code, http_status = ErrorCode.INVALID_CODE, 422


class Unauthenticated(TelemedError):
    code, http_status = ErrorCode.UNAUTHENTICATED, 401


class InvalidCredentials(TelemedError):
    code, http_status = ErrorCode.INVALID_CREDENTIALS, 401


class PasswordChangeRequired(TelemedError):
    code, http_status = ErrorCode.PASSWORD_CHANGE_REQUIRED, 403


class Forbidden(TelemedError):
    code, http_status = ErrorCode.FORBIDDEN, 403


class OriginMismatch(TelemedError):
    code, http_status = ErrorCode.ORIGIN_MISMATCH, 403


class NotFound(TelemedError):
    code, http_status = ErrorCode.NOT_FOUND, 404


class MethodNotAllowed(TelemedError):
    code, http_status = ErrorCode.METHOD_NOT_ALLOWED, 405


class Conflict(TelemedError):
    code, http_status = ErrorCode.CONFLICT, 409


class PhoneTaken(TelemedError):
    code, http_status = ErrorCode.PHONE_TAKEN, 409


class EmailTaken(TelemedError):
    code, http_status = ErrorCode.EMAIL_TAKEN, 409


class CentreHasDoctors(TelemedError):
    code, http_status = ErrorCode.CENTRE_HAS_DOCTORS, 409


class InvalidState(TelemedError):
    code, http_status = ErrorCode.INVALID_STATE, 409


class SlotTaken(TelemedError):
    code, http_status = ErrorCode.SLOT_TAKEN, 409


class Overlap(TelemedError):
    code, http_status = ErrorCode.OVERLAP, 409


class TooLate(TelemedError):
    code, http_status = ErrorCode.TOO_LATE, 409


class RequestTimeout(TelemedError):
    code, http_status = ErrorCode.REQUEST_TIMEOUT, 408


class TooLarge(TelemedError):
    code, http_status = ErrorCode.TOO_LARGE, 413


class QuotaExceeded(TelemedError):
    code, http_status = ErrorCode.QUOTA_EXCEEDED, 413


class UnsupportedType(TelemedError):
    code, http_status = ErrorCode.UNSUPPORTED_TYPE, 415


class RateLimited(TelemedError):
    code, http_status = ErrorCode.RATE_LIMITED, 429

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(
            message,
            details={"retry_after": retry_after_seconds},
            headers={"Retry-After": str(retry_after_seconds)},
        )


class Unavailable(TelemedError):
    code, http_status = ErrorCode.UNAVAILABLE, 503


class InvalidBackup(TelemedError):
    """A backup that cannot be restored as it is: not a Telemed backup, damaged (a
    checksum or size that differs from its manifest), or of a schema newer than this
    version knows. Found before anything is written."""

    code, http_status = ErrorCode.INVALID_BACKUP, 422


class NotEmpty(TelemedError):
    """A restore into an installation that already holds data (``--force`` replaces it)."""

    code, http_status = ErrorCode.NOT_EMPTY, 409


class BackupFailed(TelemedError):
    """A backup or restore step that failed outside Telemed (``pg_dump``, ``pg_restore``,
    the file system); ``details`` carries the tool's last lines."""

    code, http_status = ErrorCode.BACKUP_FAILED, 500


class Internal(TelemedError):
    """A failure of ours, told without its cause (which is logged where it happened)."""

    code, http_status = ErrorCode.INTERNAL, 500


def _by_code() -> dict[str, type[TelemedError]]:
    kinds: dict[str, type[TelemedError]] = {}
    pending = TelemedError.__subclasses__()
    while pending:
        kind = pending.pop(0)
        kinds.setdefault(str(kind.code), kind)
        pending.extend(kind.__subclasses__())
    return kinds


BY_CODE = _by_code()
"""Each error code's exception class: an error that crossed from another node is
raised again as what it was (``telemed.cluster``)."""


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one wire envelope, for the few places that have no ``TelemedError`` at hand."""
    return {"error": {"code": code, "message": message, "details": details or {}}}
