"""The regional referral table: read it and check it, row by row.

Attending doctors in the region send the service's manager a table of the patients they
refer: a CSV (UTF-8 or Windows-1251, ``;`` or ``,``) or an XLSX workbook, with a header
row whose columns may come in any order and under Russian or English names. This module
turns such a file into ``ReferralRow`` values, each carrying its own errors, so that the
import can report every bad cell at once and still let the good rows through.

Pure: no I/O and no database. Matching a row's profile to a centre, creating accounts and
consultations, and recognising rows imported before (by ``ReferralRow.key()``) is the
caller's work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Final

import phonenumbers
from openpyxl import load_workbook

from telemed.accounts.phones import normalise_phone
from telemed.errors import InvalidPhone, InvalidValue, Problem

# The canonical columns, in the order errors are listed.
COLUMNS: Final[tuple[str, ...]] = (
    "full_name",
    "birth_date",
    "phone",
    "email",
    "icd10",
    "diagnosis",
    "referring_organisation",
    "referring_doctor",
    "profile",
)
REQUIRED_COLUMNS: Final = frozenset(COLUMNS) - {"email", "icd10"}
# The names a manager knows the columns by (the Russian template's headers).
COLUMN_TITLES: Final = {
    "full_name": "ФИО",
    "birth_date": "Дата рождения",
    "phone": "Телефон",
    "email": "Email",
    "icd10": "Код МКБ-10",
    "diagnosis": "Диагноз",
    "referring_organisation": "Направившая организация",
    "referring_doctor": "Направивший врач",
    "profile": "Профиль",
}
# The longest values the consultation and account tables hold.
MAX_LENGTHS: Final = {
    "full_name": 200,
    "email": 254,
    "diagnosis": 1000,
    "referring_organisation": 300,
    "referring_doctor": 200,
    "profile": 200,
}
MAX_ROWS: Final = 5000
MAX_AGE_YEARS: Final = 130
# A title or a note may sit above the header; look this far down for it.
HEADER_SEARCH_ROWS: Final = 10

# Header spellings, matched after ``_header_key`` (case, spaces, punctuation, ё/е ignored).
_HEADER_ALIASES: Final = {
    "full_name": ("ФИО", "ФИО пациента", "Пациент", "full_name", "name", "patient"),
    "birth_date": ("Дата рождения", "birth_date", "date_of_birth", "dob"),
    "phone": (
        "Телефон",
        "Телефон пациента",
        "Мобильный телефон",
        "Номер телефона",
        "phone",
        "phone_number",
        "mobile",
    ),
    "email": ("Email", "Эл. почта", "Электронная почта", "email"),
    "icd10": ("Код МКБ-10", "МКБ-10", "МКБ", "Код МКБ", "Код по МКБ-10", "icd10", "icd"),
    "diagnosis": ("Диагноз", "diagnosis"),
    "referring_organisation": (
        "Направившая организация",
        "Направляющая организация",
        "referring_organisation",
        "referring_organization",
    ),
    "referring_doctor": (
        "Направивший врач",
        "Направляющий врач",
        "Лечащий врач",
        "referring_doctor",
        "attending_doctor",
    ),
    "profile": ("Профиль", "Профиль консультации", "Центр", "profile", "centre", "center"),
}

_KEY_VERSION: Final = "referral-v1"
_INVISIBLE: Final = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_PARENTHESES: Final = re.compile(r"\([^)]*\)|\[[^\]]*\]")
# Control characters never occur in a text table; they mean a binary file.
_BINARY: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_DAY_FIRST: Final = re.compile(r"(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})")
_YEAR_FIRST: Final = re.compile(r"(\d{4})[./-](\d{1,2})[./-](\d{1,2})")
_DATE_SEPARATOR: Final = re.compile(r"\s*([./-])\s*")
# "01.02.1960 г.", and dates exported with a time: "1960-02-01 00:00:00", "…T00:00".
_DATE_TAIL: Final = re.compile(r"(?:\s*г(?:ода|\.)?|[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)$")
_EMAIL: Final = re.compile(r"[^@\s]+@(?:[^@\s.]+\.)+[^@\s.]+")
_ICD10: Final = re.compile(r"[A-Z]\d{2}(?:\.\d{1,2})?")
# Cyrillic letters that look like the Latin ones of ICD-10 codes, as typed on a Russian
# keyboard layout ("І25.1" with a Cyrillic І or "С50" with a Cyrillic С).
_ICD10_LOOKALIKES: Final = str.maketrans("АВСЕНІКМОРТХ", "ABCEHIKMOPTX")
# Files a manager may upload by mistake, told apart to say what to do instead.
_FOREIGN_FORMATS: Final = {
    b"\xd0\xcf\x11\xe0": ("xls", "in the old Excel format (.xls) or another old Office format"),
    b"%PDF-": ("pdf", "a PDF document"),
    b"\x89PNG": ("png", "a PNG image"),
    b"\xff\xd8\xff": ("jpeg", "a JPEG image"),
}
_MOBILE_TYPES: Final = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}

Cell = str | date | None
"""A raw cell: text, a date (XLSX date cells) or nothing."""


@dataclass(frozen=True)
class CellError:
    """One problem with one cell, worded for the manager who fixes the table."""

    column: str  # a name from COLUMNS, "row" for the row as a whole, "file" for the file
    code: Problem
    message: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "code": str(self.code),
            "params": self.params,
            "message": self.message,
        }


@dataclass
class ReferralRow:
    """One patient row of the table: the values that could be read, and what is wrong.

    A value with an error is ``None``. Empty rows are skipped, so ``row`` numbers may
    jump; they are the numbers the manager sees in the spreadsheet (header is usually 1).
    """

    row: int
    full_name: str | None
    birth_date: date | None
    phone: str | None
    email: str | None
    icd10: str | None
    diagnosis: str | None
    referring_organisation: str | None
    referring_doctor: str | None
    profile: str | None
    errors: list[CellError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def key(self) -> str:
        """The referral's fingerprint (hex SHA-256), the same for the same referral typed
        again: phone, birth date, the ICD-10 code (or, without one, the diagnosis), the
        profile and the referring organisation, ignoring case, spacing, punctuation and
        ё/е. The name and doctor are left out: they are spelled too many ways.

        Stored by the importer to recognise a row imported before, so its recipe never
        changes without a new ``_KEY_VERSION``. Meaningful only for a row without errors.
        """
        parts = (
            _KEY_VERSION,
            self.phone or "",
            self.birth_date.isoformat() if self.birth_date else "",
            self.icd10 or _fold(self.diagnosis),
            _fold(self.profile),
            _fold(self.referring_organisation),
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def report(self) -> dict[str, Any]:
        """The row as the import report shows it:
        ``{row, ok, errors: [{column, code, params, message}]}``."""
        return {"row": self.row, "ok": self.ok, "errors": [e.to_wire() for e in self.errors]}


def parse_referral_table(
    data: bytes, *, file_name: str | None = None, today: date
) -> list[ReferralRow]:
    """Every non-empty row below the header, checked; a row repeating an earlier good
    row of the file (same ``key()``) gets the error ``row: duplicate of row N``.

    The format is told by the content (an XLSX is a ZIP; anything else must be a CSV
    text); ``file_name`` only sharpens the messages. Birth dates are checked against
    ``today``. Raises ``InvalidValue`` when the file as a whole cannot be used: not a
    table, empty, no header row, a required column missing or repeated, more than
    ``MAX_ROWS`` rows.
    """
    if not data.strip():
        raise InvalidValue("The file is empty", problem=Problem.FILE_EMPTY, field="file")
    table = _read_xlsx(data) if data.startswith(b"PK\x03\x04") else None
    if table is not None:
        header_at, columns = _find_header(table)
    else:
        header_at, columns, table = _read_csv(data, file_name)

    rows: list[ReferralRow] = []
    for number, cells in table[header_at + 1 :]:
        values = {name: cells[at] if at < len(cells) else None for name, at in columns.items()}
        # Templates often come with the "№" column numbered far below the last patient.
        if all(_is_blank(value) for value in values.values()):
            continue
        if len(rows) == MAX_ROWS:
            raise InvalidValue(
                f"The table has more than {MAX_ROWS} patients; split it into several files",
                problem=Problem.TOO_MANY_ROWS,
                field="file",
                params={"max": MAX_ROWS},
                details={"max_rows": MAX_ROWS},
            )
        rows.append(_parse_row(number, values, today))
    _mark_duplicates(rows)
    return rows


# Reading the file into (row number, cells) pairs.

Table = list[tuple[int, list[Cell]]]


def _read_xlsx(data: bytes) -> Table:
    try:
        # openpyxl warns about features it ignores (data validation, default styles);
        # they say nothing about the values, and the manager cannot act on them. (The
        # filter is process-wide: while a parse runs, other threads' warnings are hidden.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                if not workbook.worksheets:
                    return []
                sheet = workbook.worksheets[0]
                # Some writers store a wrong size (e.g. "A1"), which would cut the rows.
                sheet.reset_dimensions()
                rows = sheet.iter_rows(min_row=1, values_only=True)
                return _keep_nonempty(
                    (number, [_xlsx_cell(value) for value in values])
                    for number, values in enumerate(rows, start=1)
                )
            finally:
                workbook.close()
    except InvalidValue:
        raise
    # A damaged or foreign ZIP fails inside openpyxl with any of a dozen exception types
    # (BadZipFile, KeyError, XML errors, ValueError ...); all mean "not a workbook".
    except Exception:
        raise InvalidValue(
            "The file is not a readable XLSX workbook; save the table as XLSX or CSV",
            problem=Problem.FILE_UNREADABLE,
            field="file",
        ) from None


def _xlsx_cell(value: object) -> Cell:
    if value is None or isinstance(value, str | date):
        return value
    if isinstance(value, float) and value.is_integer():
        # A phone typed into a number cell: 79123456789 is read back as 79123456789.0.
        return str(int(value))
    if isinstance(value, time):
        return value.isoformat()
    return str(value)


def _read_csv(data: bytes, file_name: str | None) -> tuple[int, dict[str, int], Table]:
    text = _decode(data, file_name)
    first_line = next((line for line in io.StringIO(text) if line.strip(" ;,\t\r\n")), "")
    # Try the delimiter the header line uses most first; the other one may still fit.
    delimiters = sorted((";", ","), key=lambda d: -first_line.count(d))
    failure: InvalidValue | None = None
    for delimiter in delimiters:
        try:
            table = _keep_nonempty(
                enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), 1)
            )
        except csv.Error:
            raise InvalidValue(
                "The file is not a readable CSV table",
                problem=Problem.FILE_UNREADABLE,
                field="file",
            ) from None
        try:
            header_at, columns = _find_header(table)
        except InvalidValue as error:
            failure = failure or error
            continue
        return header_at, columns, table
    assert failure is not None
    raise failure


def _decode(data: bytes, file_name: str | None) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidValue(
            "The file is UTF-16 text; save the table as XLSX or as CSV (UTF-8 or Windows-1251)",
            problem=Problem.FILE_UTF16,
            field="file",
        )
    for magic, (kind, what) in _FOREIGN_FORMATS.items():
        if data.startswith(magic):
            raise InvalidValue(
                f"The file is {what}, not a table; save the table as XLSX or CSV",
                problem=Problem.FILE_NOT_TABLE,
                field="file",
                params={"format": kind},
            )
    for encoding in ("utf-8-sig", "cp1251"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if not _BINARY.search(text):
            return text
        break
    hint = ""
    if file_name and file_name.lower().endswith((".xlsx", ".xls")):
        hint = f" ({file_name} is named like a workbook, but is not one)"
    raise InvalidValue(
        f"The file is neither a CSV table nor an XLSX workbook{hint}",
        problem=Problem.FILE_NOT_TABLE,
        field="file",
        params={"format": "unknown"},
    )


def _keep_nonempty(rows: Iterable[tuple[int, Sequence[Cell]]]) -> Table:
    """The rows with something in them, numbered as in the file."""
    table: Table = []
    for number, cells in rows:
        if all(_is_blank(cell) for cell in cells):
            continue
        if len(table) > MAX_ROWS + HEADER_SEARCH_ROWS:
            raise InvalidValue(
                f"The table has more than {MAX_ROWS} patients; split it into several files",
                problem=Problem.TOO_MANY_ROWS,
                field="file",
                params={"max": MAX_ROWS},
                details={"max_rows": MAX_ROWS},
            )
        table.append((number, list(cells)))
    return table


# The header.


def _header_key(title: str) -> str:
    """``" Код  МКБ-10 (если есть)"`` → ``"кодмкб10"``: case, spaces, punctuation, ё/е and
    remarks in brackets do not count."""
    text = _PARENTHESES.sub(" ", title.translate(_INVISIBLE)).casefold().replace("ё", "е")
    return "".join(ch for ch in text if ch.isalnum())


_HEADER_INDEX: Final = {
    _header_key(alias): column for column, aliases in _HEADER_ALIASES.items() for alias in aliases
}


def _column_of(title: str) -> str | None:
    if column := _HEADER_INDEX.get(_header_key(title)):
        return column
    # A bilingual template: "ФИО / full_name".
    for part in title.split("/"):
        if column := _HEADER_INDEX.get(_header_key(part)):
            return column
    return None


def _find_header(table: Table) -> tuple[int, dict[str, int]]:
    """The index in ``table`` of the header row and where each known column is.

    The header is the first row naming every required column, among the first
    ``HEADER_SEARCH_ROWS`` rows (a title may stand above it).
    """
    if not table:
        raise InvalidValue(
            "The table has no header row: the file has no text in it",
            problem=Problem.NO_HEADER,
            field="file",
        )
    best: tuple[int, int, dict[str, int], list[str]] | None = None
    for index, (_, cells) in enumerate(table[:HEADER_SEARCH_ROWS]):
        columns: dict[str, int] = {}
        repeated: list[str] = []
        for at, cell in enumerate(cells):
            column = _column_of(cell) if isinstance(cell, str) else None
            if column is None:
                continue
            if column in columns:
                repeated.append(column)
            else:
                columns[column] = at
        if columns.keys() >= REQUIRED_COLUMNS:
            if repeated:
                raise InvalidValue(
                    "The table has a column more than once: " + _titles(repeated),
                    problem=Problem.DUPLICATE_COLUMNS,
                    field="file",
                    params={"columns": repeated},
                    details={"duplicate_columns": repeated, "found_columns": _found(cells)},
                )
            return index, columns
        if best is None or len(columns) > best[0]:
            best = (len(columns), index, columns, _found(cells))
    assert best is not None
    _, _, columns, found = best
    missing = [column for column in COLUMNS if column in REQUIRED_COLUMNS - columns.keys()]
    raise InvalidValue(
        "The table lacks required columns: " + _titles(missing),
        problem=Problem.MISSING_COLUMNS,
        field="file",
        params={"columns": missing, "found": found},
        details={"missing_columns": missing, "found_columns": found},
    )


def _titles(columns: Sequence[str]) -> str:
    return ", ".join(f"{COLUMN_TITLES[column]} ({column})" for column in columns)


def _found(cells: list[Cell]) -> list[str]:
    """The header as written, shortened: it goes back to the client in the error."""
    return [_text(cell)[:100] for cell in cells if not _is_blank(cell)][:50]


# The rows.


def _parse_row(number: int, values: dict[str, Cell], today: date) -> ReferralRow:
    errors: list[CellError] = []

    def check(column: str, parsed: Parsed) -> Any:
        value, problem = parsed
        if problem is not None:
            errors.append(CellError(column, *problem))
        return value

    full_name = check("full_name", _parse_name(values.get("full_name")))
    birth_date = check("birth_date", _parse_birth_date(values.get("birth_date"), today))
    phone = check("phone", _parse_phone(values.get("phone")))
    email = check("email", _parse_email(values.get("email")))
    icd10 = check("icd10", _parse_icd10(values.get("icd10")))
    diagnosis = check("diagnosis", _parse_text("diagnosis", values.get("diagnosis")))
    organisation = check(
        "referring_organisation",
        _parse_text("referring_organisation", values.get("referring_organisation")),
    )
    doctor = check(
        "referring_doctor", _parse_text("referring_doctor", values.get("referring_doctor"))
    )
    profile = check("profile", _parse_text("profile", values.get("profile")))
    return ReferralRow(
        row=number,
        full_name=full_name,
        birth_date=birth_date,
        phone=phone,
        email=email,
        icd10=icd10,
        diagnosis=diagnosis,
        referring_organisation=organisation,
        referring_doctor=doctor,
        profile=profile,
        errors=errors,
    )


_KEY_COLUMNS: Final = frozenset(
    {"phone", "birth_date", "icd10", "diagnosis", "profile", "referring_organisation"}
)


def _mark_duplicates(rows: list[ReferralRow]) -> None:
    """A row repeating an earlier good row is an error; the first good one goes through.

    Only good rows count as the original: if the first copy is bad and a later copy good,
    the later one is imported (and the first, once fixed, is recognised as imported).
    """
    first_good: dict[str, int] = {}
    for row in rows:
        if any(error.column in _KEY_COLUMNS for error in row.errors):
            continue
        key = row.key()
        if key in first_good:
            first = first_good[key]
            row.errors.append(
                CellError("row", Problem.DUPLICATE_ROW, f"duplicate of row {first}", {"row": first})
            )
        elif row.ok:
            first_good[key] = row.row


Failure = tuple[Problem, str, dict[str, Any]]
"""What is wrong with a cell: the problem, in English (logs, API clients), its parameters."""
Parsed = tuple[Any, Failure | None]
MISSING: Final[Failure] = (Problem.MISSING, "required value is missing", {})


def _parse_text(column: str, cell: Cell) -> Parsed:
    text = _text(cell)
    if not text:
        return None, (MISSING if column in REQUIRED_COLUMNS else None)
    limit = MAX_LENGTHS[column]
    if len(text) > limit:
        return None, (
            Problem.TOO_LONG,
            f"too long: {len(text)} characters, at most {limit}",
            {"n": len(text), "max": limit},
        )
    return text, None


def _parse_name(cell: Cell) -> Parsed:
    name, message = _parse_text("full_name", cell)
    if name is not None and not any(ch.isalpha() for ch in name):
        return None, (Problem.NOT_NAME, "not a name", {})
    return name, message


def _parse_birth_date(cell: Cell, today: date) -> Parsed:
    if isinstance(cell, date):
        born = cell.date() if isinstance(cell, datetime) else cell
    else:
        text = _text(cell)
        if not text:
            return None, MISSING
        parsed = _parse_date_text(text)
        if not isinstance(parsed, date):
            return None, parsed
        born = parsed
    if born > today:
        return None, (Problem.IN_FUTURE, "birth date is in the future", {})
    if born < _years_before(today, MAX_AGE_YEARS):
        return None, (
            Problem.TOO_OLD,
            f"birth date is more than {MAX_AGE_YEARS} years ago",
            {"years": MAX_AGE_YEARS},
        )
    return born, None


def _parse_date_text(text: str) -> date | Failure:
    """A date as Russian tables write it (day first), or what is wrong with it."""
    text = _DATE_TAIL.sub("", text.strip())
    text = _DATE_SEPARATOR.sub(r"\1", text)
    if match := _YEAR_FIRST.fullmatch(text):
        year, month, day = map(int, match.groups())
    elif match := _DAY_FIRST.fullmatch(text):
        if len(match.group(3)) == 2:
            return (
                Problem.TWO_DIGIT_YEAR,
                "the year has two digits, so the century is unknown: write DD.MM.YYYY",
                {},
            )
        day, month, year = map(int, match.groups())
    else:
        return (Problem.NOT_DATE, "not a date: write DD.MM.YYYY", {})
    try:
        return date(year, month, day)
    except ValueError:
        return (Problem.NO_SUCH_DATE, "no such date", {})


def _years_before(today: date, years: int) -> date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def _parse_phone(cell: Cell) -> Parsed:
    # Excel users prefix a number with ' to keep it text; a CSV export may keep the quote.
    text = _text(cell).lstrip("'")
    if not text:
        return None, MISSING
    try:
        phone = normalise_phone(text)
    except InvalidPhone:
        return None, (Problem.BAD_PHONE, "not a valid phone number", {})
    if phonenumbers.number_type(phonenumbers.parse(phone)) not in _MOBILE_TYPES:
        return None, (
            Problem.NOT_MOBILE,
            "not a mobile phone number: the login and password are sent by SMS",
            {},
        )
    return phone, None


def _parse_email(cell: Cell) -> Parsed:
    text = _text(cell).lower()
    if not text:
        return None, None
    if len(text) > MAX_LENGTHS["email"] or not _EMAIL.fullmatch(text):
        return None, (Problem.BAD_EMAIL, "not a valid e-mail address", {})
    return text, None


def _parse_icd10(cell: Cell) -> Parsed:
    text = _text(cell).upper().translate(_ICD10_LOOKALIKES).replace(" ", "").replace(",", ".")
    if not text:
        return None, None
    code = text.removesuffix(".")
    if not _ICD10.fullmatch(code):
        return None, (
            Problem.BAD_ICD10,
            "not an ICD-10 code: a letter and two digits, like I25 or I25.1",
            {},
        )
    return code, None


# Text.


def _text(cell: Cell) -> str:
    """The cell as one line of text: invisible characters dropped, spaces (non-breaking
    ones too) collapsed, no spaces at the ends."""
    if cell is None:
        return ""
    if isinstance(cell, date):
        return cell.isoformat()
    return " ".join(cell.translate(_INVISIBLE).split())


def _is_blank(cell: Cell) -> bool:
    return not _text(cell)


def _fold(text: str | None) -> str:
    """Text for comparison: case, ё/е, punctuation and spacing do not count."""
    if not text:
        return ""
    folded = text.casefold().replace("ё", "е")
    return " ".join("".join(ch if ch.isalnum() else " " for ch in folded).split())
